//! The k3s detector (`[k3s]`): each pass reads the unit's state from systemd, the lines
//! its journal gained, runs the liveness probes (each on its own thread, within its
//! deadline, never stacked), and hands it all to the judge ([`super::judge`]). Every few
//! minutes it also checks reboot readiness ([`super::readiness`]).
//!
//! A pass blocks for at most the D-Bus deadline per call plus one probe deadline: the
//! probes run in parallel, the journal is only drained.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use super::http_probe::HttpGetProbe;
use super::judge::{K3sJudge, K3sJudgeConfig, LivenessState, Observed, PassInput, ProbeInput};
use super::metrics::K3sMetrics;
use super::probe::{FlightOutcome, LivenessProbe, SingleFlight};
use super::readiness::{self, GraceSetting, Logind, LogindBus, Readiness};
use super::signals::LogLine;
use super::unit::{SystemdUnits, UnitProperties, UnitSource};
use crate::config::K3sSection;
use crate::config::k3s::K3sRole;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::dbus::Bus;
use crate::edge::journal::{FollowSpec, JournalctlFollow, UnitJournal};
use crate::edge::{Clock, HostFiles};
use crate::model::{Condition, ConditionKind, CriHealth};

/// Reboot readiness changes only with configuration: checked this often.
pub(crate) const READINESS_EVERY: Duration = Duration::from_secs(300);

/// Everything the detector runs on.
pub struct K3sDeps {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) files: Arc<dyn HostFiles>,
    pub(crate) units: Box<dyn UnitSource>,
    /// None: reboot readiness is off.
    pub(crate) logind: Option<Box<dyn Logind>>,
    /// None: the journal is not followed.
    pub(crate) journal: Option<Box<dyn UnitJournal>>,
    pub(crate) probes: Vec<Arc<dyn LivenessProbe>>,
    /// Probes that do not run here, and why (shown by `check`).
    pub(crate) skipped: Vec<(&'static str, String)>,
    pub(crate) cri: Option<CriHealth>,
    pub(crate) metrics: Option<K3sMetrics>,
}

/// What the wiring knows that the config does not.
pub struct K3sSetup {
    /// The unit watched (`remedy.k3s_unit`, resolved).
    pub unit: String,
    /// A k3s server (probes the apiserver, maybe etcd).
    pub server: bool,
    /// The apiserver probe, built by the wiring from the Kubernetes credentials, or why
    /// there is none.
    pub apiserver: Result<Arc<dyn LivenessProbe>, String>,
}

pub struct K3sDetector {
    cfg: K3sSection,
    unit: String,
    deps: K3sDeps,
    flights: Vec<SingleFlight>,
    judge: K3sJudge,
    /// Wall-clock start of the detector (µs): journal lines before it are backlog.
    started_usec: u64,
    readiness: Option<(Readiness, Option<GraceSetting>, Vec<String>)>,
    next_readiness: Duration,
    journal_error: Option<String>,
}

/// True when this k3s role runs the apiserver.
pub(crate) fn is_server(role: K3sRole, unit: &str) -> bool {
    match role {
        K3sRole::Server => true,
        K3sRole::Agent => false,
        K3sRole::Auto => unit == "k3s.service",
    }
}

impl K3sDetector {
    pub fn new(cfg: K3sSection, unit: String, deps: K3sDeps) -> Self {
        let timeout = cfg.probe_timeout.get();
        let flights = deps
            .probes
            .iter()
            .map(|p| SingleFlight::new(p.clone(), timeout))
            .collect();
        let judge = K3sJudge::new(K3sJudgeConfig {
            unit: unit.clone(),
            unresponsive_after: cfg.unresponsive_after.get(),
            crashloop_restarts: cfg.crashloop_restarts,
            crashloop_window: cfg.crashloop_window.get(),
            journal: deps.journal.is_some(),
        });
        let started_usec = deps
            .clock
            .wall()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        K3sDetector {
            cfg,
            unit,
            deps,
            flights,
            judge,
            started_usec,
            readiness: None,
            next_readiness: Duration::ZERO,
            journal_error: None,
        }
    }

    /// The detector on the real machine: systemd and logind on the system bus, journalctl,
    /// HTTP probes on loopback.
    pub fn real(
        cfg: K3sSection,
        setup: K3sSetup,
        clock: Arc<dyn Clock>,
        files: Arc<dyn HostFiles>,
        cri: Option<CriHealth>,
        metrics: Option<K3sMetrics>,
    ) -> Self {
        let bus = Arc::new(Mutex::new(Bus::system(cfg.call_timeout.get())));
        let mut probes: Vec<Arc<dyn LivenessProbe>> = Vec::new();
        let mut skipped = Vec::new();
        let mut add =
            |name: &'static str, url: &str, make: fn(&str) -> Result<HttpGetProbe, String>| {
                if url.is_empty() {
                    skipped.push((name, format!("disabled (k3s.{name}_url = \"\")")));
                    return;
                }
                match make(url) {
                    Ok(p) => probes.push(Arc::new(p)),
                    Err(e) => skipped.push((name, e)),
                }
            };
        add("kubelet", &cfg.kubelet_url, HttpGetProbe::kubelet);
        if setup.server {
            if files.exists("var/lib/rancher/k3s/server/db/etcd") {
                add("etcd", &cfg.etcd_url, HttpGetProbe::etcd);
            } else {
                skipped.push((
                    "etcd",
                    "no embedded etcd here (/var/lib/rancher/k3s/server/db/etcd is absent: sqlite or an external datastore)".into(),
                ));
            }
        } else {
            skipped.push(("etcd", "an agent runs no etcd".into()));
        }
        let mut skipped_api = None;
        match (setup.server, &setup.apiserver, cfg.apiserver_url.is_empty()) {
            (false, _, _) => skipped_api = Some("an agent runs no apiserver".to_string()),
            (true, _, true) => {
                skipped_api = Some("disabled (k3s.apiserver_url = \"\")".to_string())
            }
            (true, Err(why), false) => skipped_api = Some(why.clone()),
            (true, Ok(p), false) => probes.push(p.clone()),
        }
        if let Some(why) = skipped_api {
            skipped.push(("apiserver", why));
        }
        let journal = cfg.journal.then(|| {
            Box::new(JournalctlFollow::new(FollowSpec {
                matches: vec![
                    format!("_SYSTEMD_UNIT={}", setup.unit),
                    "+".into(),
                    format!(
                        "SYSLOG_IDENTIFIER={}",
                        setup.unit.trim_end_matches(".service")
                    ),
                ],
                backlog: cfg.crashloop_window.get(),
                program: "journalctl".into(),
                grep: None,
            })) as Box<dyn UnitJournal>
        });
        let logind = cfg
            .reboot_readiness
            .then(|| Box::new(LogindBus { bus: bus.clone() }) as Box<dyn Logind>);
        K3sDetector::new(
            cfg,
            setup.unit,
            K3sDeps {
                clock,
                files,
                units: Box::new(SystemdUnits { bus }),
                logind,
                journal,
                probes,
                skipped,
                cri,
                metrics,
            },
        )
    }

    fn read_journal(&mut self, now: Duration) -> usize {
        let Some(j) = self.deps.journal.as_mut() else {
            return 0;
        };
        let batch = j.read_new();
        if batch.error != self.journal_error {
            if let Some(e) = &batch.error {
                log::warn!(detector = "k3s"; "{} journal: {e}", self.unit);
            }
            self.journal_error = batch.error.clone();
        }
        let trusted: Vec<_> = batch
            .entries
            .iter()
            .filter(|e| e.trusted_for(&self.unit))
            .collect();
        let counts = self.judge.logs.ingest(
            now,
            trusted.iter().map(|e| LogLine {
                text: &e.message,
                fresh: e.realtime_usec >= self.started_usec,
            }),
        );
        if let Some(m) = &self.deps.metrics {
            m.count_log_events(&counts);
            m.journal_entries.inc_by(trusted.len() as u64);
            m.journal_dropped.inc_by(batch.dropped);
        }
        trusted.len()
    }

    fn run_probes(&mut self, unit: &Result<UnitProperties, String>) -> Vec<ProbeInput> {
        let not_running = match unit {
            Ok(u) if !u.main_process() => Some(format!(
                "{} is not running (ActiveState={}, SubState={})",
                self.unit, u.active_state, u.sub_state
            )),
            _ => None,
        };
        if not_running.is_none() {
            for f in &self.flights {
                f.start();
            }
        }
        let mut out = Vec::new();
        for f in &self.flights {
            let observed = match (&not_running, f.collect()) {
                (_, Some(FlightOutcome::Answered { answer, took })) => {
                    if let Some(m) = &self.deps.metrics {
                        m.set_probe_duration(f.name(), took.as_secs_f64());
                    }
                    Observed::Answered(answer)
                }
                (_, Some(FlightOutcome::Stuck { out_for })) => Observed::Stuck(out_for),
                (Some(why), None) => Observed::NotRun(why.clone()),
                (None, None) => Observed::NotRun("not started".into()),
            };
            out.push(ProbeInput {
                name: f.name(),
                target: f.target(),
                observed,
            });
        }
        for (name, why) in &self.deps.skipped {
            out.push(ProbeInput {
                name,
                target: String::new(),
                observed: Observed::NotRun(why.clone()),
            });
        }
        out
    }

    fn check_readiness(&mut self, now: Duration, unit: Option<&UnitProperties>) {
        let Some(logind) = self.deps.logind.as_mut() else {
            return;
        };
        if now < self.next_readiness {
            return;
        }
        // The kubelet takes its inhibitor as it starts: judge only a settled k3s.
        let Some(u) = unit.filter(|u| u.active_state == "active") else {
            return;
        };
        let active_for = now.saturating_sub(Duration::from_micros(u.active_enter_mono_usec));
        if u.active_enter_mono_usec == 0 || active_for < self.cfg.readiness_after.get() {
            return;
        }
        self.next_readiness = now + READINESS_EVERY;
        let (grace, problems) = readiness::discover_grace(self.deps.files.as_ref(), Some(u));
        let verdict = if grace.as_ref().is_some_and(|g| g.grace_secs > 0) {
            let inhibitors = logind.inhibitors();
            let delay_max = logind.inhibit_delay_max();
            readiness::judge(grace.as_ref(), &inhibitors, &delay_max)
        } else {
            Readiness::NotConfigured
        };
        if self.readiness.as_ref().map(|r| &r.0) != Some(&verdict) {
            match &verdict {
                Readiness::Ineffective { problems, .. } => log::warn!(
                    detector = "k3s";
                    "graceful node shutdown is configured but would not work: {}",
                    problems.join("; ")
                ),
                Readiness::Effective { grace_secs, .. } => log::info!(
                    detector = "k3s";
                    "graceful node shutdown: {grace_secs} s, logind's delay inhibitor in place"
                ),
                Readiness::NotConfigured => {}
            }
        }
        self.readiness = Some((verdict, grace, problems));
    }

    fn notes(&self, v: &super::judge::K3sVerdict) -> Vec<CheckNote> {
        let mut notes = Vec::new();
        match (&v.unit, &v.unit_error) {
            (Some(u), err) => notes.push(CheckNote::new(
                if u.active_state == "failed" {
                    NoteLevel::Warn
                } else {
                    NoteLevel::Ok
                },
                format!("k3s unit {}", self.unit),
                format!(
                    "{}/{} (Result={}, MainPID={}, NRestarts={}, {} restart(s) in the last {} min){}",
                    u.active_state,
                    u.sub_state,
                    u.result,
                    u.main_pid,
                    u.n_restarts,
                    v.restarts_in_window,
                    self.cfg.crashloop_window.get().as_secs() / 60,
                    if u.stopped_by_operator() {
                        "; stopped by an operator: nodemedic never restarts it".to_string()
                    } else {
                        err.as_ref()
                            .map(|e| format!("; last known state, now unreadable: {e}"))
                            .unwrap_or_default()
                    }
                ),
            )),
            (None, Some(e)) => notes.push(CheckNote::new(
                NoteLevel::Info,
                format!("k3s unit {}", self.unit),
                format!("state unknown: {e}"),
            )),
            (None, None) => {}
        }
        for p in &v.probes {
            let level = match p.state {
                LivenessState::Ok => NoteLevel::Ok,
                LivenessState::Failing => NoteLevel::Warn,
                _ => NoteLevel::Info,
            };
            let state = serde_json::to_value(p.state)
                .ok()
                .and_then(|s| s.as_str().map(str::to_string))
                .unwrap_or_default();
            let target = if p.target.is_empty() {
                String::new()
            } else {
                format!(" {}", p.target)
            };
            notes.push(CheckNote::new(
                level,
                format!("k3s probe {}", p.name),
                format!(
                    "{state}{target}: {}{}",
                    p.detail,
                    p.failing_for_secs
                        .map(|s| format!(" (failing for {s} s)"))
                        .unwrap_or_default()
                ),
            ));
        }
        if let Some(e) = &self.journal_error {
            notes.push(CheckNote::new(NoteLevel::Warn, "k3s journal", e.clone()));
        }
        if let Some((r, _, problems)) = &self.readiness {
            let (level, detail) = match r {
                Readiness::NotConfigured => (
                    NoteLevel::Info,
                    "the kubelet's graceful node shutdown is not configured: a reboot stops pods without draining them (k3s: --kubelet-arg=shutdown-grace-period=30s)".to_string(),
                ),
                Readiness::Effective {
                    grace_secs,
                    delay_max_secs,
                } => (
                    NoteLevel::Ok,
                    format!("graceful node shutdown {grace_secs} s; logind delay inhibitor held, InhibitDelayMaxSec {delay_max_secs} s"),
                ),
                Readiness::Ineffective { problems, .. } => (NoteLevel::Warn, problems.join("; ")),
            };
            notes.push(CheckNote::new(level, "reboot readiness", detail));
            for p in problems {
                notes.push(CheckNote::new(NoteLevel::Warn, "k3s config", p.clone()));
            }
        }
        notes
    }
}

impl Detector for K3sDetector {
    fn name(&self) -> &'static str {
        "k3s"
    }

    fn interval(&self) -> Duration {
        self.cfg.interval.get()
    }

    /// Bounded: the unit's properties stop at the first D-Bus call that misses
    /// `call_timeout` (2 s), the probes run on their own threads and are only collected,
    /// the journal is drained without waiting. So it rides the shared periodic thread,
    /// whose 10 s ticks the runtime detector makes anyway while k3s runs (issue 24).
    fn shares_timer(&self) -> bool {
        true
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let now = self.deps.clock.monotonic();
        let unit = self.deps.units.read(&self.unit);
        let read = self.read_journal(now);
        let probes = self.run_probes(&unit);
        let not_installed = unit.as_ref().is_ok_and(|u| u.load_state == "not-found");
        let v = self.judge.observe(PassInput {
            now,
            unit,
            probes,
            cri: self.deps.cri.as_ref().and_then(|c| c.get()),
        });
        if !not_installed {
            let u = v.unit.clone();
            self.check_readiness(now, u.as_ref());
        }
        if let Some(m) = &self.deps.metrics {
            m.set_probes(&v.probes);
            m.set_unit(
                v.unit.as_ref().map(|u| u.active_state.as_str()),
                v.unit.as_ref().map_or(0, |u| u.n_restarts),
            );
        }
        let mut conditions = v.conditions.clone();
        if let Some((
            Readiness::Ineffective {
                grace_secs,
                problems,
            },
            _,
            _,
        )) = &self.readiness
        {
            conditions.push(Condition::new(
                ConditionKind::GracefulShutdownIneffective,
                "",
                "InhibitorNotEffective",
                format!(
                    "shutdown-grace-period is {grace_secs} s but a reboot would not wait for it: {}",
                    problems.join("; ")
                ),
            ));
        }
        let notes = self.notes(&v);
        Ok(Sample {
            conditions,
            info: serde_json::json!({
                "unit": self.unit,
                "state": v.unit,
                "unit_error": v.unit_error,
                "probes": v.probes,
                "restarts_in_window": v.restarts_in_window,
                "journal_entries_read": read,
                "last_fatal_line": self.judge.logs.last_fatal,
                "reboot_readiness": self.readiness.as_ref().map(|r| &r.0),
                "shutdown_grace": self.readiness.as_ref().and_then(|r| r.1.as_ref()),
            }),
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::journal::{FakeJournal, JournalEntry};
    use crate::edge::{FakeClock, FakeFiles};
    use crate::k3s::probe::{ProbeAnswer, ScriptedProbe};
    use crate::k3s::readiness::{FakeLogind, Inhibitor};
    use crate::k3s::unit::{FakeUnits, running_unit};
    use prometheus_client::registry::Registry;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const START: u64 = 1_763_700_000;

    struct K3sBed {
        det: K3sDetector,
        clock: Arc<FakeClock>,
        units: FakeUnits,
        kubelet: Arc<ScriptedProbe>,
        reg: Registry,
    }

    fn bed(
        journal: Vec<Vec<JournalEntry>>,
        logind: Option<FakeLogind>,
        files: FakeFiles,
    ) -> K3sBed {
        let mut reg = Registry::default();
        let clock = Arc::new(FakeClock::new(START, S(1000)));
        let units = FakeUnits::new(running_unit());
        let kubelet = Arc::new(ScriptedProbe::new(
            "kubelet",
            vec![ProbeAnswer::Ok("HTTP 200 ok".into())],
        ));
        let det = K3sDetector::new(
            K3sSection::default(),
            "k3s.service".into(),
            K3sDeps {
                clock: clock.clone(),
                files: Arc::new(files),
                units: Box::new(units.clone()),
                logind: logind.map(|l| Box::new(l) as Box<dyn Logind>),
                journal: Some(Box::new(FakeJournal {
                    batches: journal.into(),
                })),
                probes: vec![kubelet.clone()],
                skipped: vec![("apiserver", "an agent runs no apiserver".into())],
                cri: None,
                metrics: Some(K3sMetrics::register(&mut reg)),
            },
        );
        K3sBed {
            det,
            clock,
            units,
            kubelet,
            reg,
        }
    }

    fn entry(msg: &str, uid: u32, unit: Option<&str>, usec: u64) -> JournalEntry {
        JournalEntry {
            message: msg.into(),
            realtime_usec: usec,
            uid: Some(uid),
            unit: unit.map(str::to_string),
            identifier: Some("k3s".into()),
            priority: Some(6),
            cursor: None,
        }
    }

    #[test]
    fn a_pass_probes_judges_and_shows_every_probe_in_check_and_metrics() {
        let mut b = bed(vec![], None, FakeFiles::with(&[]));
        let s = b.det.sample().unwrap();
        assert!(s.conditions.is_empty());
        let items: Vec<&str> = s.notes.iter().map(|n| n.item.as_str()).collect();
        for want in [
            "k3s unit k3s.service",
            "k3s probe kubelet",
            "k3s probe apiserver",
            "k3s probe pleg",
            "k3s probe cri",
        ] {
            assert!(items.contains(&want), "{want} missing from {items:?}");
        }
        let kubelet = s
            .notes
            .iter()
            .find(|n| n.item == "k3s probe kubelet")
            .unwrap();
        assert_eq!(kubelet.level, NoteLevel::Ok);
        assert!(kubelet.detail.contains("HTTP 200 ok"), "{}", kubelet.detail);
        let text = crate::metrics::encode(&b.reg);
        assert!(
            text.contains("nodemedic_k3s_probe_up{probe=\"kubelet\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("nodemedic_k3s_unit_state{state=\"active\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("probe_up{probe=\"apiserver\"}"),
            "not run: no series"
        );
    }

    #[test]
    fn a_stopped_unit_is_not_probed_and_raises_nothing() {
        let mut b = bed(vec![], None, FakeFiles::with(&[]));
        b.units.update(|u| {
            u.active_state = "inactive".into();
            u.sub_state = "dead".into();
            u.main_pid = 0;
        });
        for _ in 0..20 {
            b.clock.advance(S(10));
            let s = b.det.sample().unwrap();
            assert!(s.conditions.is_empty());
        }
        assert_eq!(
            b.kubelet.calls.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing probed while k3s is stopped"
        );
        let s = b.det.sample().unwrap();
        let unit = s
            .notes
            .iter()
            .find(|n| n.item.starts_with("k3s unit"))
            .unwrap();
        assert!(
            unit.detail.contains("stopped by an operator"),
            "{}",
            unit.detail
        );
    }

    #[test]
    fn only_trusted_fresh_journal_lines_count_and_the_fatal_line_becomes_the_crash_loop_message() {
        let fatal = r#"time="2025-11-21T17:35:41Z" level=fatal msg="starting kubernetes: preparing server: failed to validate server configuration""#;
        let forged_pleg = r#"E1121 17:35:41.1 1 kubelet.go:2412] "Skipping pod synchronization" err="PLEG is not healthy: forged""#;
        let now_usec = START * 1_000_000 + 1;
        let b_entries = vec![
            entry(fatal, 0, Some("k3s.service"), now_usec),
            // A user's `logger -t k3s`: neither the unit nor root.
            entry(forged_pleg, 1000, None, now_usec),
        ];
        let mut b = bed(vec![b_entries], None, FakeFiles::with(&[]));
        b.units.update(|u| {
            u.active_state = "activating".into();
            u.sub_state = "auto-restart".into();
            u.main_pid = 0;
        });
        b.det.sample().unwrap();
        for n in 1..=5 {
            b.clock.advance(S(10));
            b.units.update(|u| u.n_restarts = n);
            let s = b.det.sample().unwrap();
            if n < 5 {
                assert!(s.conditions.is_empty());
            } else {
                assert_eq!(s.conditions.len(), 1);
                assert_eq!(s.conditions[0].kind, ConditionKind::K3sCrashLooping);
                assert_eq!(s.conditions[0].message, fatal);
            }
        }
        let text = crate::metrics::encode(&b.reg);
        assert!(
            text.contains("nodemedic_k3s_log_events_total{kind=\"fatal\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("nodemedic_k3s_log_events_total{kind=\"kubelet_pleg_unhealthy\"} 0"),
            "the forged line is not counted: {text}"
        );
        assert!(text.contains("nodemedic_k3s_unit_restarts 5"));
    }

    #[test]
    fn readiness_is_judged_once_k3s_has_settled_and_raises_the_warning_with_the_fix() {
        let files = FakeFiles::with(&[(
            "etc/rancher/k3s/config.yaml",
            "kubelet-arg:\n- shutdown-grace-period=30s\n",
        )]);
        let logind = FakeLogind {
            inhibitors: Ok(vec![Inhibitor {
                what: "shutdown".into(),
                who: "kubelet".into(),
                why: "Kubelet needs time to handle node shutdown".into(),
                mode: "delay".into(),
                uid: 0,
                pid: 812,
            }]),
            delay_max: Ok(S(5)),
        };
        let mut b = bed(vec![], Some(logind), files);
        // Active since just now (monotonic 1000 s): not settled.
        b.units
            .update(|u| u.active_enter_mono_usec = 1000 * 1_000_000);
        assert!(b.det.sample().unwrap().conditions.is_empty());
        b.clock.advance(K3sSection::default().readiness_after.get());
        let s = b.det.sample().unwrap();
        assert_eq!(s.conditions.len(), 1, "{:?}", s.conditions);
        let c = &s.conditions[0];
        assert_eq!(c.kind, ConditionKind::GracefulShutdownIneffective);
        assert!(
            c.message.contains("InhibitDelayMaxSec=30s"),
            "{}",
            c.message
        );
        let note = s
            .notes
            .iter()
            .find(|n| n.item == "reboot readiness")
            .unwrap();
        assert_eq!(note.level, NoteLevel::Warn);
    }
}
