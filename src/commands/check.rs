//! `nodemedic check`: one pass of every detector, right now, as a table or JSON.
//! Exit 0 when healthy, 1 when a problem condition holds. Every probe (setting up the
//! detectors, which reads /proc and /boot; each detector's pass; the eviction check) runs
//! on its own thread under one shared deadline, so `check` on a node with a dead NFS mount
//! or a hung SD card still answers, within the deadline, and says which probe timed out.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::exit;
use crate::config::{Config, ConfigOrigin, RunMode};
use crate::daemon::wiring::{self, Edges};
use crate::detect::{NoteLevel, sample_once};
use crate::edge::deadline::{self, Waited};
use crate::model::{Severity, mib};
use crate::remedy::actuators::PodMemory;

/// `nodemedic check [--json]`: a bad config is a usage error here (exit 2, the
/// monitoring-plugin convention), not 78.
pub(crate) fn command(explicit: Option<&Path>, json: bool) -> u8 {
    let (cfg, origin) = match crate::config::load(explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nodemedic: {e}");
            return exit::USAGE;
        }
    };
    crate::logging::init(log::LevelFilter::Warn, true);
    let edges = Edges::real(&cfg);
    let report = build_report(&cfg, &origin, &edges);
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::other)
            .and_then(|_| std::io::Write::write_all(&mut out, b"\n"))
    } else {
        render_table(&report, &mut out)
    };
    if written.is_err() {
        return exit::PROBLEM;
    }
    if report.healthy {
        exit::OK
    } else {
        exit::PROBLEM
    }
}

/// A probe that has not answered by then is reported, not waited for. One deadline for the
/// whole of `check`, not one per probe in turn: ten stuck probes still cost 10 s, not 100.
pub(crate) const DETECTOR_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RowStatus {
    Ok,
    Info,
    Warn,
    Problem,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) status: RowStatus,
    pub(crate) area: String,
    pub(crate) item: String,
    pub(crate) detail: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct CheckReport {
    pub(crate) node: String,
    pub(crate) mode: String,
    pub(crate) config: String,
    pub(crate) healthy: bool,
    pub(crate) rows: Vec<Row>,
}

pub(crate) fn build_report(cfg: &Config, origin: &ConfigOrigin, edges: &Edges) -> CheckReport {
    build_report_within(cfg, origin, edges, DETECTOR_DEADLINE)
}

/// [`build_report`] with every probe answered, or reported as unanswered, by `limit`.
pub(crate) fn build_report_within(
    cfg: &Config,
    origin: &ConfigOrigin,
    edges: &Edges,
    limit: Duration,
) -> CheckReport {
    let until = Instant::now() + limit;
    let mut rows = vec![Row {
        status: RowStatus::Info,
        area: "config".into(),
        item: "mode".into(),
        detail: match cfg.mode {
            RunMode::Observe => "observe: detect and report only".into(),
            RunMode::Act => "act: remediations enabled per [actions.*]".into(),
        },
    }];
    rows.push(Row {
        status: RowStatus::Info,
        area: "config".into(),
        item: "reboot lease".into(),
        detail: wiring::reboot_lease_summary(cfg, wiring::kube_source(cfg).as_ref()),
    });
    // Read from the state dir, which sits on the SD card that may be the thing that hangs.
    let previous_boot = {
        let dir = cfg.state_dir.clone();
        deadline::spawn("check-boot", move || previous_boot_row(&dir))
    };
    let eviction = cfg.actions.evict_besteffort.enabled.then(|| {
        let pm = crate::memory::pod_usage::CgroupPodMemory {
            files: edges.files.clone(),
        };
        let min_mib = cfg.memory.evict_min_working_set_mib;
        deadline::spawn("check-eviction", move || eviction_row(&pm, min_mib))
    });
    // Setting up reads host files too (the kernel detector reads /proc/config.gz).
    let setup = {
        let cfg = cfg.clone();
        let edges = Edges {
            clock: edges.clock.clone(),
            files: edges.files.clone(),
            notifier: edges.notifier.clone(),
        };
        deadline::spawn("check-setup", move || {
            wiring::build_detectors(
                &cfg,
                wiring::DetectorEnv {
                    boot_id: wiring::boot_id(edges.files.as_ref()),
                    edges: &edges,
                    state_dir: None,
                    registry: None,
                    detached: None,
                    runtime_metrics: None,
                    links: Default::default(),
                },
            )
        })
    };
    let (detectors, set_up) = match setup.wait_until(until) {
        Waited::Done(d) => (d, true),
        other => {
            rows.extend(unanswered("detectors", "setup", other, limit));
            (Vec::new(), false)
        }
    };
    if set_up && detectors.is_empty() {
        rows.push(Row {
            status: RowStatus::Warn,
            area: "detectors".into(),
            item: "enabled".into(),
            detail: "no detector is enabled in the config".into(),
        });
    }
    let mut handles = Vec::new();
    for mut d in detectors {
        let name = d.name();
        // Detached: a detector stuck in the kernel must not hold `check` hostage.
        let p = deadline::spawn(&format!("check-{name}"), move || sample_once(d.as_mut()));
        handles.push((name, p));
    }
    for (name, p) in handles {
        match p.wait_until(until) {
            Waited::Done(Ok(sample)) => {
                for c in &sample.conditions {
                    rows.push(Row {
                        status: match c.severity() {
                            Severity::Problem => RowStatus::Problem,
                            Severity::Warning => RowStatus::Warn,
                        },
                        area: name.into(),
                        item: if c.subject.is_empty() {
                            c.kind.name().into()
                        } else {
                            format!("{} {}", c.kind.name(), c.subject)
                        },
                        detail: format!("{}: {}", c.reason, c.message),
                    });
                }
                for n in sample.notes {
                    rows.push(Row {
                        status: match n.level {
                            NoteLevel::Ok => RowStatus::Ok,
                            NoteLevel::Info => RowStatus::Info,
                            NoteLevel::Warn => RowStatus::Warn,
                        },
                        area: name.into(),
                        item: n.item,
                        detail: n.detail,
                    });
                }
            }
            Waited::Done(Err(e)) => rows.push(Row {
                status: RowStatus::Warn,
                area: name.into(),
                item: "detector".into(),
                detail: format!("failed: {e}"),
            }),
            other => rows.extend(unanswered(name, "detector", other, limit)),
        }
    }
    match previous_boot.wait_until(until) {
        Waited::Done(r) => rows.push(r),
        other => rows.extend(unanswered("boot", "previous boot", other, limit)),
    }
    if let Some(p) = eviction {
        match p.wait_until(until) {
            Waited::Done(r) => rows.push(r),
            other => rows.extend(unanswered("memory", "eviction", other, limit)),
        }
    }
    let healthy = !rows.iter().any(|r| r.status == RowStatus::Problem);
    CheckReport {
        node: wiring::node_name(cfg),
        mode: format!("{:?}", cfg.mode).to_lowercase(),
        config: origin.to_string(),
        healthy,
        rows,
    }
}

/// The row of a probe that did not answer by the deadline, or ended without a result.
fn unanswered<T>(area: &str, item: &str, o: Waited<T>, limit: Duration) -> Option<Row> {
    let detail = match o {
        Waited::Done(_) => return None,
        Waited::TimedOut => {
            format!("timed out: no answer within {limit:?} (blocked in the kernel?)")
        }
        Waited::Failed(e) => format!("failed: {e}"),
    };
    Some(Row {
        status: RowStatus::Warn,
        area: area.into(),
        item: item.into(),
        detail,
    })
}

/// How the previous boot ended, as the daemon decided at its first start in this boot.
fn previous_boot_row(state_dir: &Path) -> Row {
    use crate::power::boot_end::decide::Cause;
    let (status, detail) = match crate::daemon::boot_end::check_detail(state_dir) {
        Some((Cause::Clean | Cause::NodemedicReboot, d)) => (RowStatus::Ok, d),
        Some((_, d)) => (RowStatus::Warn, d),
        None => (
            RowStatus::Info,
            "not decided: the daemon decides it at its first start in a boot".into(),
        ),
    };
    Row {
        status,
        area: "boot".into(),
        item: "previous boot".into(),
        detail,
    }
}

/// With the eviction step enabled: can it measure BestEffort pods on this node?
fn eviction_row(pm: &dyn PodMemory, min_mib: u32) -> Row {
    let (status, detail) = match pm.besteffort_usage() {
        Ok(u) => {
            let min = u64::from(min_mib) << 20;
            let big = u.iter().filter(|p| p.working_set >= min).count();
            (
                RowStatus::Ok,
                format!(
                    "{} BestEffort pod cgroup(s) measured, {big} at or above {}{}",
                    u.len(),
                    mib(min),
                    u.iter()
                        .map(|p| p.working_set)
                        .max()
                        .map(|b| format!("; largest working set {}", mib(b)))
                        .unwrap_or_default()
                ),
            )
        }
        Err(e) => (
            RowStatus::Warn,
            format!("{e}; the MemoryPressure eviction step would fail until this is fixed"),
        ),
    };
    Row {
        status,
        area: "memory".into(),
        item: "eviction".into(),
        detail,
    }
}

pub(crate) fn render_table(r: &CheckReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "nodemedic check on {} ({} mode; config: {})",
        r.node, r.mode, r.config
    )?;
    let area_w = r
        .rows
        .iter()
        .map(|x| x.area.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let item_w = r
        .rows
        .iter()
        .map(|x| x.item.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 40);
    writeln!(
        out,
        "{:<8} {:<area_w$} {:<item_w$} DETAIL",
        "STATUS", "AREA", "ITEM"
    )?;
    for x in &r.rows {
        let s = match x.status {
            RowStatus::Ok => "ok",
            RowStatus::Info => "info",
            RowStatus::Warn => "WARN",
            RowStatus::Problem => "PROBLEM",
        };
        writeln!(
            out,
            "{s:<8} {:<area_w$} {:<item_w$} {}",
            x.area, x.item, x.detail
        )?;
    }
    writeln!(
        out,
        "{}",
        if r.healthy {
            "result: healthy"
        } else {
            "result: PROBLEM detected"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::clock::FakeClock;
    use crate::edge::host_files::{FakeFiles, HostFiles};
    use crate::edge::notify::RecordingNotifier;
    use std::sync::{Arc, Mutex, mpsc};

    /// Host files where reading `stuck` blocks until the test drops the sender, as a read
    /// from a hung SD card or a wedged driver does.
    struct StuckFiles {
        inner: FakeFiles,
        stuck: &'static str,
        gate: Mutex<mpsc::Receiver<()>>,
    }

    impl HostFiles for StuckFiles {
        fn read(&self, rel: &str) -> std::io::Result<Vec<u8>> {
            if rel.trim_start_matches('/') == self.stuck {
                let _ = self.gate.lock().unwrap().recv();
                return Err(std::io::Error::other("released"));
            }
            self.inner.read(rel)
        }
        fn list(&self, rel: &str) -> std::io::Result<Vec<String>> {
            self.inner.list(rel)
        }
        fn path(&self, rel: &str) -> std::path::PathBuf {
            self.inner.path(rel)
        }
    }

    /// A report over fake host files where reading `stuck` never returns (until the test
    /// ends), with the detectors named in `enabled` (kernel, mounts, memory).
    fn report_with_stuck_read(
        stuck: &'static str,
        enabled: &[&str],
        limit: Duration,
    ) -> CheckReport {
        let (release, gate) = mpsc::channel();
        let files = StuckFiles {
            inner: FakeFiles::with(&[
                ("proc/meminfo", "MemTotal: 1000 kB\nMemAvailable: 900 kB\n"),
                ("proc/sys/kernel/random/boot_id", "b0\n"),
                (
                    "proc/self/mountinfo",
                    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
                ),
            ]),
            stuck,
            gate: Mutex::new(gate),
        };
        let edges = Edges {
            clock: Arc::new(FakeClock::new(1_700_000_000, Duration::from_secs(100))),
            files: Arc::new(files),
            notifier: Arc::new(RecordingNotifier::default()),
        };
        let mut cfg = Config::default();
        cfg.kernel.enabled = enabled.contains(&"kernel");
        cfg.mounts.enabled = enabled.contains(&"mounts");
        cfg.memory.enabled = enabled.contains(&"memory");
        cfg.runtime.enabled = false;
        cfg.power.enabled = false;
        cfg.state_dir = "/nonexistent/nodemedic-check-test".into();
        let r = build_report_within(&cfg, &ConfigOrigin::BuiltIn, &edges, limit);
        drop(release);
        r
    }

    #[test]
    fn a_detector_blocked_forever_is_reported_as_timed_out_and_the_others_still_answer() {
        // The memory detector's pass reads /proc/meminfo: it never answers.
        let r = report_with_stuck_read(
            "proc/meminfo",
            &["mounts", "memory"],
            Duration::from_secs(2),
        );
        let memory: Vec<_> = r.rows.iter().filter(|x| x.area == "memory").collect();
        assert_eq!(memory.len(), 1, "{:#?}", r.rows);
        assert_eq!(memory[0].status, RowStatus::Warn);
        assert_eq!(memory[0].item, "detector");
        assert_eq!(
            memory[0].detail,
            "timed out: no answer within 2s (blocked in the kernel?)"
        );
        // The mounts detector answered.
        assert!(
            r.rows
                .iter()
                .any(|x| x.area == "mounts" && x.detail == "none to watch"),
            "{:#?}",
            r.rows
        );
        assert!(r.healthy, "a timed-out probe is a warning, not a problem");
    }

    #[test]
    fn setting_up_the_detectors_is_under_the_deadline_too() {
        // The kernel detector reads /proc/config.gz while it is set up.
        let r = report_with_stuck_read("proc/config.gz", &["kernel"], Duration::from_millis(500));
        let rest: Vec<_> = r
            .rows
            .iter()
            .filter(|x| x.area != "config" && x.area != "boot")
            .collect();
        assert_eq!(rest.len(), 1, "{:#?}", r.rows);
        assert_eq!(
            (rest[0].status, rest[0].area.as_str(), rest[0].item.as_str()),
            (RowStatus::Warn, "detectors", "setup")
        );
        assert!(
            rest[0].detail.starts_with("timed out"),
            "{}",
            rest[0].detail
        );
    }

    #[test]
    fn with_nothing_stuck_every_enabled_detector_answers() {
        let all = ["kernel", "mounts", "memory"];
        let r = report_with_stuck_read("nothing/reads/this", &all, Duration::from_secs(30));
        assert!(
            !r.rows.iter().any(|x| x.detail.starts_with("timed out")),
            "{:#?}",
            r.rows
        );
        for area in all {
            assert!(
                r.rows.iter().any(|x| x.area == area),
                "{area}: {:#?}",
                r.rows
            );
        }
    }

    #[test]
    fn the_eviction_row_says_what_it_can_measure_or_what_is_missing() {
        use crate::model::PodUsage;
        use crate::remedy::actuators::FixedPodMemory;
        let ok = FixedPodMemory(Ok(vec![
            PodUsage {
                uid: "a".into(),
                working_set: 100 << 20,
            },
            PodUsage {
                uid: "b".into(),
                working_set: 1 << 20,
            },
        ]));
        let r = eviction_row(&ok, 32);
        assert_eq!(r.status, RowStatus::Ok);
        assert_eq!(
            r.detail,
            "2 BestEffort pod cgroup(s) measured, 1 at or above 32.0 MiB; largest working set 100.0 MiB"
        );
        let bad = FixedPodMemory(Err("no BestEffort QoS memory cgroup found".into()));
        let r = eviction_row(&bad, 32);
        assert_eq!(r.status, RowStatus::Warn);
        assert!(r.detail.contains("would fail"), "{}", r.detail);
    }

    #[test]
    fn the_previous_boot_row_shows_the_daemons_verdict_or_says_there_is_none() {
        use crate::power::boot_end::decide::{BootVerdict, Cause};
        use crate::power::boot_end::{BootEndRecord, write_record};
        let d = tempfile::tempdir().unwrap();
        let r = previous_boot_row(d.path());
        assert_eq!((r.status, r.area.as_str()), (RowStatus::Info, "boot"));
        assert!(r.detail.starts_with("not decided"), "{}", r.detail);
        write_record(
            d.path(),
            &BootEndRecord {
                boot_id: "b2".into(),
                previous_boot_id: Some("b1".into()),
                decided_unix: 1_700_000_000,
                verdict: Some(BootVerdict {
                    cause: Cause::Power,
                    why: "the supply sagged".into(),
                }),
                seen_pstore: Vec::new(),
            },
        )
        .unwrap();
        let r = previous_boot_row(d.path());
        assert_eq!(r.status, RowStatus::Warn);
        assert_eq!(
            r.detail,
            "power: the supply sagged (decided at 2023-11-14T22:13:20.000Z, boot b1)"
        );
    }

    #[test]
    fn table_lists_every_row_and_the_verdict() {
        let r = CheckReport {
            node: "pi-1".into(),
            mode: "observe".into(),
            config: "built-in".into(),
            healthy: false,
            rows: vec![Row {
                status: RowStatus::Problem,
                area: "kernel".into(),
                item: "KernelRCUStall".into(),
                detail: "LongStall: 21 s".into(),
            }],
        };
        let mut out = Vec::new();
        render_table(&r, &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("PROBLEM  kernel KernelRCUStall LongStall: 21 s"),
            "{s}"
        );
        assert!(s.ends_with("result: PROBLEM detected\n"), "{s}");
    }
}
