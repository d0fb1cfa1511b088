//! The runtime detector (`[runtime]`): while k3s runs, lists pod sandboxes over CRI every
//! interval and raises
//! - `ContainerRuntimeDown` after `down_after` failed passes in a row (a call past
//!   `call_timeout` is a failure: a stuck containerd is down, never a stuck detector);
//! - `SandboxNameReserved`, subject the sandbox name, while a NotReady sandbox holds a name
//!   the kubelet needs: two sandboxes with the same metadata in the listing
//!   ([`find_conflicts`]), or a RunPodSandbox failure in containerd's log that names a
//!   holder the listing confirms NotReady under that name ([`super::log_tail`]);
//!
//! and exports `nodemedic_sandboxes{state}` and `nodemedic_runtime_up`, and refreshes the
//! preflight metrics from preflight's totals file on a timer ([`RuntimeMetrics`]).
//!
//! # No runtime here
//! A missing socket is "runtime absent", not "down": a dev machine or a node without k3s
//! must not hold `ContainerRuntimeDown` forever. The socket lives in `/run` (a tmpfs), so
//! its presence means the runtime started in this boot; a missing socket counts as a
//! failure only after this detector has seen it. A containerd killed hard leaves its socket
//! file behind (connection refused: down); one stopped cleanly removes it: after a clean
//! `systemctl stop k3s`, the runtime is down once seen, absent after a daemon restart.
//!
//! # Deadlines
//! Each pass makes at most two calls (connect, ListPodSandbox), each under `call_timeout`
//! on the detector's own single-threaded async runtime; a timeout drops the connection, so
//! a SIGSTOPped containerd costs one `call_timeout` per pass and nothing else.

use super::cri::{CriError, CriRuntime, GrpcCri, SandboxInfo};
use super::judge::{Judge, PassFacts, RuntimeState};
use super::log_tail::{FileTail, LogSource, reserved_sandbox_in_line};
use super::metrics::RuntimeMetrics;
use crate::config::RuntimeSection;
#[cfg(any(test, feature = "fakes"))]
use crate::config::runtime::K3S_CRI_SOCKET;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::Clock;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often preflight's totals file is looked at (a stat; a read only when it changed).
pub(crate) const PREFLIGHT_REFRESH: Duration = Duration::from_secs(30);
/// NotReady sandboxes older than this are reported (issue 5: long-dead sandboxes).
pub(crate) const LONG_DEAD: Duration = Duration::from_secs(3600);

/// The CRI edge of the detector.
pub(crate) trait SandboxLister: Send {
    /// Whether the runtime's socket file exists.
    fn socket_present(&self) -> bool;
    /// Lists pod sandboxes, every call under the deadline.
    fn list(&mut self) -> Result<Vec<SandboxInfo>, CriError>;
}

/// CRI over the unix socket; the connection is kept between passes and dropped on error.
pub(crate) struct GrpcLister {
    socket: PathBuf,
    timeout: Duration,
    conn: Option<GrpcCri>,
}

impl GrpcLister {
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        GrpcLister {
            socket: socket.to_path_buf(),
            timeout,
            conn: None,
        }
    }
}

impl SandboxLister for GrpcLister {
    fn socket_present(&self) -> bool {
        self.socket.exists()
    }
    fn list(&mut self) -> Result<Vec<SandboxInfo>, CriError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self
                .conn
                .insert(GrpcCri::connect(&self.socket, self.timeout)?),
        };
        let r = conn.list_sandboxes();
        if r.is_err() {
            // A timed-out HTTP/2 connection may be wedged; start clean next pass.
            self.conn = None;
        }
        r
    }
}

#[cfg(any(test, feature = "fakes"))]
/// A scripted lister for tests; unscripted calls answer as the socket would (an empty
/// listing, or a refused connection when there is no socket).
pub struct FakeLister {
    pub present: bool,
    pub results: std::collections::VecDeque<Result<Vec<SandboxInfo>, CriError>>,
}

#[cfg(any(test, feature = "fakes"))]
impl SandboxLister for FakeLister {
    fn socket_present(&self) -> bool {
        self.present
    }
    fn list(&mut self) -> Result<Vec<SandboxInfo>, CriError> {
        self.results.pop_front().unwrap_or_else(|| {
            if self.present {
                Ok(vec![])
            } else {
                Err(CriError::Call {
                    socket: K3S_CRI_SOCKET.into(),
                    what: "connect".into(),
                    error: "No such file or directory (os error 2)".into(),
                })
            }
        })
    }
}

/// The edges the detector runs on.
pub struct RuntimeDeps {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) lister: Box<dyn SandboxLister>,
    /// containerd's log; None when `log_file` is "".
    pub(crate) log: Option<Box<dyn LogSource>>,
    pub(crate) metrics: Option<RuntimeMetrics>,
    /// Where preflight's totals file is (the daemon's state dir); None: not refreshed.
    pub(crate) state_dir: Option<PathBuf>,
}

pub struct RuntimeDetector {
    cfg: RuntimeSection,
    deps: RuntimeDeps,
    judge: Judge,
    next_refresh: Duration,
    log_error: Option<String>,
    /// Where the k3s detector reads this detector's verdict (its `cri` probe).
    health: Option<crate::model::CriHealth>,
    /// The last pass found no runtime socket.
    absent: bool,
}

/// While there is no runtime socket (no k3s running here), passes are this many intervals
/// apart: 30 s at the default 10 s, the clock and limits detectors' pace, so the shared
/// thread wakes once for all of them (issue 24). A k3s that starts is listed within it;
/// the runtime-down ladder waits 5 minutes anyway.
pub(crate) const ABSENT_SLOWDOWN: u32 = 3;

impl RuntimeDetector {
    pub fn new(cfg: RuntimeSection, deps: RuntimeDeps) -> Self {
        let judge = Judge::new(cfg.down_after, cfg.conflict_forget.get(), &cfg.socket);
        RuntimeDetector {
            cfg,
            deps,
            judge,
            next_refresh: Duration::ZERO,
            log_error: None,
            health: None,
            absent: false,
        }
    }

    /// Publishes every pass's verdict to `h` as well (see [`crate::model::CriHealth`]).
    pub(crate) fn with_health(mut self, h: crate::model::CriHealth) -> Self {
        self.health = Some(h);
        self
    }

    /// The detector on the real CRI socket and log file of `cfg`.
    pub fn real(
        cfg: RuntimeSection,
        clock: Arc<dyn Clock>,
        metrics: Option<RuntimeMetrics>,
        state_dir: Option<PathBuf>,
    ) -> Self {
        let lister = Box::new(GrpcLister::new(&cfg.socket, cfg.call_timeout.get()));
        let log = (!cfg.log_file.as_os_str().is_empty())
            .then(|| Box::new(FileTail::new(&cfg.log_file)) as Box<dyn LogSource>);
        RuntimeDetector::new(
            cfg,
            RuntimeDeps {
                clock,
                lister,
                log,
                metrics,
                state_dir,
            },
        )
    }

    fn refresh_preflight(&mut self, now: Duration) {
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + PREFLIGHT_REFRESH;
        if let (Some(m), Some(dir)) = (&self.deps.metrics, &self.deps.state_dir)
            && let Err(e) = m.refresh_preflight(dir)
        {
            log::warn!(detector = "runtime"; "preflight metrics not refreshed: {e}");
        }
    }
}

impl Detector for RuntimeDetector {
    fn name(&self) -> &'static str {
        "runtime"
    }

    fn interval(&self) -> Duration {
        if self.absent {
            self.cfg.interval.get() * ABSENT_SLOWDOWN
        } else {
            self.cfg.interval.get()
        }
    }

    /// Probes and calls run under deadlines: the pass is bounded (shared periodic thread).
    fn shares_timer(&self) -> bool {
        true
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let now = self.deps.clock.monotonic();
        self.refresh_preflight(now);
        let log_reports = match self.deps.log.as_mut().map(|l| l.read_new()) {
            Some(Ok(lines)) => {
                self.log_error = None;
                lines
                    .iter()
                    .filter_map(|l| reserved_sandbox_in_line(l))
                    .collect()
            }
            Some(Err(e)) => {
                if self.log_error.as_ref() != Some(&e) {
                    log::warn!(detector = "runtime"; "{e}");
                }
                self.log_error = Some(e);
                vec![]
            }
            None => vec![],
        };
        let socket_present = self.deps.lister.socket_present();
        let listing = self.deps.lister.list();
        let wall_nanos = self
            .deps
            .clock
            .wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let long_dead = listing.as_ref().map_or(0, |l| {
            l.iter()
                .filter(|s| {
                    !s.ready
                        && s.created_at_nanos > 0
                        && wall_nanos - s.created_at_nanos > LONG_DEAD.as_nanos() as i64
                })
                .count()
        });
        let j = self.judge.observe(PassFacts {
            now,
            socket_present,
            listing: listing.map_err(|e| e.to_string()),
            log_reports,
        });
        if let Some(m) = &self.deps.metrics {
            m.set_up(j.state == RuntimeState::Up);
            if let Some((ready, notready)) = j.counts {
                m.set_sandboxes(ready, notready);
            }
        }
        if let Some(h) = &self.health {
            use crate::model::CriStatus;
            h.set(match &j.state {
                RuntimeState::Up => CriStatus::Up,
                RuntimeState::Absent => CriStatus::Absent,
                RuntimeState::Down { failures, error } => {
                    CriStatus::Down(format!("{failures} failed check(s) in a row: {error}"))
                }
            });
        }
        self.absent = j.state == RuntimeState::Absent;
        let mut notes = Vec::new();
        match &j.state {
            RuntimeState::Up => notes.push(CheckNote::new(
                NoteLevel::Ok,
                "CRI",
                format!("{} answers", self.cfg.socket.display()),
            )),
            RuntimeState::Absent => notes.push(CheckNote::new(
                NoteLevel::Info,
                "CRI",
                format!(
                    "no runtime socket at {}: no k3s running here (set runtime.socket for another runtime)",
                    self.cfg.socket.display()
                ),
            )),
            RuntimeState::Down { failures, error } => notes.push(CheckNote::new(
                NoteLevel::Warn,
                "CRI",
                format!("{failures} failed check(s) in a row: {error}"),
            )),
        }
        if long_dead > 0 {
            notes.push(CheckNote::new(
                NoteLevel::Info,
                "dead sandboxes",
                format!(
                    "{long_dead} NotReady sandbox(es) older than {} h; the kubelet removes them once their pod is gone",
                    LONG_DEAD.as_secs() / 3600
                ),
            ));
        }
        if let Some(e) = &self.log_error {
            notes.push(CheckNote::new(NoteLevel::Warn, "containerd log", e.clone()));
        }
        Ok(Sample {
            conditions: j.conditions,
            info: serde_json::json!({
                "socket": self.cfg.socket,
                "runtime": j.state,
                "sandboxes": j.counts.map(|(r, n)| serde_json::json!({"ready": r, "notready": n})),
                "conflicts": j.conflicts,
                "notready_older_than_1h": long_dead,
            }),
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigDuration;
    use crate::edge::FakeClock;
    use crate::runtime::judge::tests::sb;
    use crate::runtime::log_tail::FakeLog;
    use prometheus_client::registry::Registry;

    const SOCK: &str = "/run/k3s/containerd/containerd.sock";

    fn detector(
        lister: FakeLister,
        log: FakeLog,
        clock: Arc<FakeClock>,
        reg: &mut Registry,
        state_dir: Option<PathBuf>,
    ) -> RuntimeDetector {
        RuntimeDetector::new(
            RuntimeSection::default(),
            RuntimeDeps {
                clock,
                lister: Box::new(lister),
                log: Some(Box::new(log)),
                metrics: Some(RuntimeMetrics::register(reg)),
                state_dir,
            },
        )
    }

    #[test]
    fn the_detector_feeds_log_lines_and_listing_to_the_judge_and_exports_metrics() {
        let mut reg = Registry::default();
        let clock = Arc::new(FakeClock::new(1_763_700_000, Duration::from_secs(100)));
        let holder = "a".repeat(64);
        let line = format!(
            r#"time="x" level=error msg="RunPodSandbox for &PodSandboxMetadata{{Name:web-0,}} failed, error" error="failed to reserve sandbox name \"web-0_default_uid-web-0_0\": name \"web-0_default_uid-web-0_0\" is reserved for \"{holder}\"""#
        );
        let lister = FakeLister {
            present: true,
            results: [
                Ok(vec![sb('a', "web-0", 0, false), sb('b', "db-0", 0, true)]),
                Err(CriError::Timeout {
                    socket: SOCK.into(),
                    what: "ListPodSandbox".into(),
                    timeout: Duration::from_secs(2),
                }),
            ]
            .into(),
        };
        let log = FakeLog {
            batches: [vec!["unrelated".to_string(), line]].into(),
        };
        let mut d = detector(lister, log, clock.clone(), &mut reg, None);
        let s = d.sample().unwrap();
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].subject, "web-0_default_uid-web-0_0");
        assert_eq!(s.info["sandboxes"]["notready"], 1);
        let text = crate::metrics::encode(&reg);
        assert!(text.contains("nodemedic_runtime_up 1"), "{text}");
        assert!(text.contains("nodemedic_sandboxes{state=\"ready\"} 1"));
        clock.advance(Duration::from_secs(10));
        let s = d.sample().unwrap();
        assert_eq!(
            s.conditions.len(),
            1,
            "conflict kept; down not yet (1 of 3)"
        );
        assert!(
            s.notes
                .iter()
                .any(|n| n.level == NoteLevel::Warn && n.detail.contains("did not answer"))
        );
        assert!(crate::metrics::encode(&reg).contains("nodemedic_runtime_up 0"));
    }

    #[test]
    fn without_a_runtime_socket_the_detector_slows_to_the_absent_pace_until_one_appears() {
        let mut reg = Registry::default();
        let clock = Arc::new(FakeClock::new(1_763_700_000, Duration::from_secs(100)));
        let lister = FakeLister {
            present: false,
            results: Default::default(),
        };
        let log = FakeLog {
            batches: Default::default(),
        };
        let mut d = detector(lister, log, clock, &mut reg, None);
        let every = RuntimeSection::default().interval.get();
        assert_eq!(d.interval(), every, "before its first pass");
        assert_eq!(d.sample().unwrap().info["runtime"]["state"], "absent");
        assert_eq!(d.interval(), every * 3);
        d.deps.lister = Box::new(FakeLister {
            present: true,
            results: [Ok(vec![])].into(),
        });
        assert_eq!(d.sample().unwrap().info["runtime"]["state"], "up");
        assert_eq!(
            d.interval(),
            every,
            "a running k3s is listed at its own pace"
        );
    }

    #[test]
    fn notready_sandboxes_older_than_an_hour_are_reported_and_ready_or_young_ones_are_not() {
        let mut reg = Registry::default();
        let now_s = 1_763_700_000u64;
        let clock = Arc::new(FakeClock::new(now_s, Duration::from_secs(100)));
        let at = |secs_ago: u64| ((now_s - secs_ago) as i64) * 1_000_000_000;
        let mut old_dead = sb('a', "web-0", 0, false);
        old_dead.created_at_nanos = at(2 * 3600);
        let mut old_ready = sb('b', "db-0", 0, true);
        old_ready.created_at_nanos = at(2 * 3600);
        let mut young_dead = sb('c', "job-1", 0, false);
        young_dead.created_at_nanos = at(600);
        let lister = FakeLister {
            present: true,
            results: [Ok(vec![old_dead, old_ready, young_dead])].into(),
        };
        let log = FakeLog {
            batches: Default::default(),
        };
        let mut d = detector(lister, log, clock, &mut reg, None);
        let s = d.sample().unwrap();
        assert_eq!(s.info["notready_older_than_1h"], 1, "{}", s.info);
        let note = s
            .notes
            .iter()
            .find(|n| n.item == "dead sandboxes")
            .expect("a note in `nodemedic check`");
        assert!(note.detail.starts_with("1 NotReady"), "{}", note.detail);
        assert!(s.conditions.is_empty(), "reported, not a problem to act on");
    }

    #[test]
    fn preflight_totals_are_refreshed_on_a_timer_not_every_pass() {
        let d = tempfile::tempdir().unwrap();
        let mut reg = Registry::default();
        let clock = Arc::new(FakeClock::new(1_763_700_000, Duration::from_secs(100)));
        let lister = FakeLister {
            present: false,
            results: Default::default(),
        };
        let mut det = detector(
            lister,
            FakeLog::default(),
            clock.clone(),
            &mut reg,
            Some(d.path().into()),
        );
        let t = crate::state::preflight_totals::Totals {
            runs: 1,
            sandboxes_removed: [("dead_after_reboot".to_string(), 7)].into(),
            ..Default::default()
        };
        crate::state::preflight_totals::write(d.path(), &t).unwrap();
        det.sample().unwrap();
        let want = "nodemedic_sandboxes_removed_total{reason=\"dead_after_reboot\"} 7";
        assert!(crate::metrics::encode(&reg).contains(want));
        let t2 = crate::state::preflight_totals::Totals {
            runs: 2,
            sandboxes_removed: [("dead_after_reboot".to_string(), 9)].into(),
            ..Default::default()
        };
        crate::state::preflight_totals::write(d.path(), &t2).unwrap();
        clock.advance(Duration::from_secs(10));
        det.sample().unwrap();
        assert!(
            crate::metrics::encode(&reg).contains(want),
            "not re-read within 30 s"
        );
        clock.advance(PREFLIGHT_REFRESH);
        let s = det.sample().unwrap();
        assert!(
            crate::metrics::encode(&reg)
                .contains("nodemedic_sandboxes_removed_total{reason=\"dead_after_reboot\"} 9")
        );
        assert!(
            s.conditions.is_empty(),
            "no socket here: absent, never down"
        );
        assert_eq!(s.info["runtime"]["state"], "absent");
    }

    #[test]
    fn runtime_config_is_validated_with_the_key_and_the_allowed_range() {
        let mut v = Vec::new();
        RuntimeSection::default().validate(&mut v);
        assert!(v.is_empty(), "{v:?}");
        let c = RuntimeSection {
            call_timeout: ConfigDuration::secs(60),
            down_after: 0,
            socket: "relative.sock".into(),
            log_file: "".into(),
            ..Default::default()
        };
        c.validate(&mut v);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(
            v[0].contains("runtime.call_timeout") && v[0].contains("allowed 100ms to 10s"),
            "{v:?}"
        );
        assert!(v[1].contains("runtime.down_after"));
        assert!(v[2].contains("runtime.socket"));
    }
}
