//! `nodemedic check`: one pass of every detector, right now, as a table or JSON.
//! Exit 0 when healthy, 1 when a problem condition holds. Each detector gets a deadline and
//! its own thread, so `check` on a node with a dead NFS mount still answers.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::cli::exit;
use crate::config::{Config, ConfigOrigin, RunMode};
use crate::daemon::wiring::{self, Edges};
use crate::detect::{NoteLevel, sample_once};
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

/// A detector that has not answered by then is reported, not waited for.
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
    let mut rows = vec![Row {
        status: RowStatus::Info,
        area: "config".into(),
        item: "mode".into(),
        detail: match cfg.mode {
            RunMode::Observe => "observe: detect and report only".into(),
            RunMode::Act => "act: remediations enabled per [actions.*]".into(),
        },
    }];
    let detectors = wiring::build_detectors(
        cfg,
        wiring::DetectorEnv {
            edges,
            boot_id: wiring::boot_id(edges.files.as_ref()),
            state_dir: None,
            registry: None,
            detached: None,
            runtime_metrics: None,
        },
    );
    if detectors.is_empty() {
        rows.push(Row {
            status: RowStatus::Warn,
            area: "detectors".into(),
            item: "enabled".into(),
            detail: "no detector is enabled in the config".into(),
        });
    }
    let mut handles = Vec::new();
    for mut d in detectors {
        let (tx, rx) = mpsc::channel();
        let name = d.name();
        // Detached: a detector stuck in the kernel must not hold `check` hostage.
        let _ = std::thread::Builder::new()
            .name(format!("check-{name}"))
            .spawn(move || {
                let _ = tx.send(sample_once(d.as_mut()));
            });
        handles.push((name, rx));
    }
    for (name, rx) in handles {
        match rx.recv_timeout(DETECTOR_DEADLINE) {
            Ok(Ok(sample)) => {
                for c in &sample.conditions {
                    rows.push(Row {
                        status: match c.kind.severity() {
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
            Ok(Err(e)) => rows.push(Row {
                status: RowStatus::Warn,
                area: name.into(),
                item: "detector".into(),
                detail: format!("failed: {e}"),
            }),
            Err(_) => rows.push(Row {
                status: RowStatus::Warn,
                area: name.into(),
                item: "detector".into(),
                detail: format!(
                    "no answer within {}s (blocked in the kernel?)",
                    DETECTOR_DEADLINE.as_secs()
                ),
            }),
        }
    }
    if cfg.actions.evict_besteffort.enabled {
        let pm = crate::memory::pod_usage::CgroupPodMemory {
            files: edges.files.clone(),
        };
        rows.push(eviction_row(&pm, cfg.memory.evict_min_working_set_mib));
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
