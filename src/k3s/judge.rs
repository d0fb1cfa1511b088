//! The k3s judge (pure): probe answers, the unit's state and the journal's signals in,
//! conditions and per-probe views out. Time is the pass's monotonic `now`.
//!
//! | condition | held while |
//! |---|---|
//! | `K3sUnresponsive` | a probe (kubelet, apiserver, etcd, PLEG) has failed on every pass for `unresponsive_after`, and k3s's main process exists |
//! | `K3sCrashLooping` | `NRestarts` rose `crashloop_restarts` times within `crashloop_window` |
//! | `K3sUnitFailed` | `ActiveState=failed` |
//!
//! A refused connection while the unit is `activating` is "starting", while
//! `deactivating` every probe is "stopping": neither is a failure, and either ends a
//! failing streak (k3s restarting is not k3s wedged). An operator's `systemctl stop`
//! (`inactive`, `Result=success`) raises nothing, so nothing is ever restarted against it.
//! The CRI probe is the runtime detector's verdict, shown here; it does not raise
//! `K3sUnresponsive`, because `ContainerRuntimeDown` already escalates exactly that.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::probe::ProbeAnswer;
use super::signals::LogSignals;
use super::unit::UnitProperties;
use crate::model::{Condition, ConditionKind, CriStatus};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct K3sJudgeConfig {
    pub(crate) unit: String,
    pub(crate) unresponsive_after: Duration,
    pub(crate) crashloop_restarts: u32,
    pub(crate) crashloop_window: Duration,
    /// The journal is followed (the PLEG pseudo-probe exists).
    pub(crate) journal: bool,
}

/// What became of one probe this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    Answered(ProbeAnswer),
    /// Still out past its deadline, this long.
    Stuck(Duration),
    /// Not probed, and why (k3s not running, an agent has no apiserver...).
    NotRun(String),
}

pub(crate) struct ProbeInput {
    pub(crate) name: &'static str,
    pub(crate) target: String,
    pub(crate) observed: Observed,
}

/// One pass's facts.
pub(crate) struct PassInput {
    pub(crate) now: Duration,
    /// Err: systemd could not be asked (the error says why).
    pub(crate) unit: Result<UnitProperties, String>,
    pub(crate) probes: Vec<ProbeInput>,
    /// The runtime detector's last verdict (None: no runtime detector, or no pass yet).
    pub(crate) cri: Option<CriStatus>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LivenessState {
    Ok,
    Failing,
    /// Refused while the unit is activating.
    Starting,
    /// The unit is deactivating.
    Stopping,
    NotProbed,
}

/// A probe as `nodemedic check` and `/status` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ProbeView {
    pub(crate) name: &'static str,
    pub(crate) target: String,
    pub(crate) state: LivenessState,
    pub(crate) detail: String,
    /// How long it has failed on every pass (failing only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failing_for_secs: Option<u64>,
}

/// One pass's verdict.
#[derive(Debug)]
pub(crate) struct K3sVerdict {
    pub(crate) conditions: Vec<Condition>,
    pub(crate) probes: Vec<ProbeView>,
    /// The unit as judged (the last known state when this pass could not read it).
    pub(crate) unit: Option<UnitProperties>,
    /// Restarts counted in the crash-loop window.
    pub(crate) restarts_in_window: usize,
    /// Why the unit's state is unknown or stale, if it is.
    pub(crate) unit_error: Option<String>,
}

pub(crate) struct K3sJudge {
    cfg: K3sJudgeConfig,
    /// Probe name -> first pass of its current failing streak.
    failing_since: BTreeMap<&'static str, Duration>,
    /// Monotonic times of the NRestarts increments seen, within the window.
    restarts: VecDeque<Duration>,
    last_n_restarts: Option<u32>,
    last_unit: Option<UnitProperties>,
    pub(crate) logs: LogSignals,
}

impl K3sJudge {
    pub fn new(cfg: K3sJudgeConfig) -> Self {
        K3sJudge {
            cfg,
            failing_since: BTreeMap::new(),
            restarts: VecDeque::new(),
            last_n_restarts: None,
            last_unit: None,
            logs: LogSignals::default(),
        }
    }

    fn track_restarts(&mut self, now: Duration, n: u32) {
        match self.last_n_restarts {
            // A manual start resets NRestarts (systemd: flush_n_restarts): a new baseline.
            Some(last) if n > last => {
                let rose = (n - last).min(self.cfg.crashloop_restarts.max(1));
                for _ in 0..rose {
                    self.restarts.push_back(now);
                }
            }
            _ => {}
        }
        self.last_n_restarts = Some(n);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= self.cfg.crashloop_window)
        {
            self.restarts.pop_front();
        }
    }

    pub(crate) fn observe(&mut self, input: PassInput) -> K3sVerdict {
        let now = input.now;
        let (unit, unit_error) = match input.unit {
            Ok(u) => {
                self.last_unit = Some(u.clone());
                (Some(u), None)
            }
            // A failed read is no evidence that anything changed: judge the last state.
            Err(e) => (self.last_unit.clone(), Some(e)),
        };
        if let Some(u) = &unit
            && unit_error.is_none()
        {
            self.track_restarts(now, u.n_restarts);
        }
        let active = unit.as_ref().map(|u| u.active_state.as_str());
        let stopping = active == Some("deactivating");
        let starting = active == Some("activating");

        let mut views = Vec::new();
        let mut probes = input.probes;
        if self.cfg.journal {
            let pleg = match (&unit, self.logs.pleg_unhealthy(now)) {
                (Some(u), _) if !u.main_process() => Observed::NotRun("k3s is not running".into()),
                (_, Some(ago)) => Observed::Answered(ProbeAnswer::Failed(format!(
                    "the kubelet logged `PLEG is not healthy` {} s ago",
                    ago.as_secs()
                ))),
                _ => Observed::Answered(ProbeAnswer::Ok(
                    "no `PLEG is not healthy` in the journal".into(),
                )),
            };
            probes.push(ProbeInput {
                name: "pleg",
                target: format!("{} journal", self.cfg.unit),
                observed: pleg,
            });
        }
        for p in probes {
            let (state, detail) = match p.observed {
                Observed::NotRun(why) => (LivenessState::NotProbed, why),
                _ if stopping => (
                    LivenessState::Stopping,
                    format!("{} is stopping", self.cfg.unit),
                ),
                Observed::Answered(ProbeAnswer::Ok(d)) => (LivenessState::Ok, d),
                Observed::Answered(ProbeAnswer::Refused(d)) if starting => (
                    LivenessState::Starting,
                    format!("{d} ({} is starting)", self.cfg.unit),
                ),
                Observed::Answered(ProbeAnswer::Refused(d) | ProbeAnswer::Failed(d)) => {
                    (LivenessState::Failing, d)
                }
                Observed::Stuck(out) => (
                    LivenessState::Failing,
                    format!(
                        "no answer for {} s; the probe is still out (not repeated until it returns)",
                        out.as_secs()
                    ),
                ),
            };
            let failing_for = if state == LivenessState::Failing {
                let since = *self.failing_since.entry(p.name).or_insert(now);
                Some(now.saturating_sub(since).as_secs())
            } else {
                self.failing_since.remove(p.name);
                None
            };
            views.push(ProbeView {
                name: p.name,
                target: p.target,
                state,
                detail,
                failing_for_secs: failing_for,
            });
        }
        views.push(match &input.cri {
            Some(CriStatus::Up) => cri_view(
                LivenessState::Ok,
                "the runtime detector's CRI check answers",
            ),
            Some(CriStatus::Down(d)) => cri_view(
                LivenessState::Failing,
                &format!("{d} (ContainerRuntimeDown escalates this)"),
            ),
            Some(CriStatus::Absent) => {
                cri_view(LivenessState::NotProbed, "no container runtime socket")
            }
            None => cri_view(
                LivenessState::NotProbed,
                "the runtime detector is off or has not run",
            ),
        });

        let mut conditions = Vec::new();
        if let Some(u) = &unit {
            self.unit_conditions(u, now, &views, &mut conditions);
        }
        K3sVerdict {
            conditions,
            probes: views,
            unit,
            restarts_in_window: self.restarts.len(),
            unit_error,
        }
    }

    fn unit_conditions(
        &self,
        u: &UnitProperties,
        now: Duration,
        views: &[ProbeView],
        out: &mut Vec<Condition>,
    ) {
        let unit = &self.cfg.unit;
        let fatal = self.logs.last_fatal.as_deref();
        if u.main_process() {
            let after = self.cfg.unresponsive_after;
            let wedged: Vec<&ProbeView> = views
                .iter()
                .filter(|v| v.name != "cri")
                .filter(|v| {
                    self.failing_since
                        .get(v.name)
                        .is_some_and(|since| now.saturating_sub(*since) >= after)
                })
                .collect();
            if let Some(first) = wedged.first() {
                let mut msg: Vec<String> = wedged
                    .iter()
                    .map(|v| {
                        format!(
                            "{} ({}) failing for {} s: {}",
                            v.name,
                            v.target,
                            v.failing_for_secs.unwrap_or(0),
                            v.detail
                        )
                    })
                    .collect();
                msg.push(format!("{unit} main process {} is running", u.main_pid));
                if let Some(e) = self.logs.etcd_summary() {
                    msg.push(e);
                }
                out.push(Condition::new(
                    ConditionKind::K3sUnresponsive,
                    "",
                    reason_for(first.name),
                    msg.join("; "),
                ));
            }
        }
        if self.restarts.len() >= self.cfg.crashloop_restarts as usize {
            let message = match fatal {
                Some(line) => line.to_string(),
                None => format!(
                    "{unit} restarted {} times in the last {} min (NRestarts={}, last result {}); no fatal line in its journal, see journalctl -u {unit}",
                    self.restarts.len(),
                    self.cfg.crashloop_window.as_secs() / 60,
                    u.n_restarts,
                    u.result
                ),
            };
            out.push(Condition::new(
                ConditionKind::K3sCrashLooping,
                "",
                "RepeatedRestarts",
                message,
            ));
        }
        if u.active_state == "failed" {
            out.push(Condition::new(
                ConditionKind::K3sUnitFailed,
                "",
                "UnitFailed",
                format!(
                    "{unit} is failed (Result={}){}",
                    u.result,
                    fatal
                        .map(|l| format!("; last fatal line: {l}"))
                        .unwrap_or_default()
                ),
            ));
        }
    }
}

fn cri_view(state: LivenessState, detail: &str) -> ProbeView {
    ProbeView {
        name: "cri",
        target: "the container runtime (runtime detector)".into(),
        state,
        detail: detail.to_string(),
        failing_for_secs: None,
    }
}

fn reason_for(probe: &str) -> &'static str {
    match probe {
        "kubelet" => "KubeletUnresponsive",
        "apiserver" => "ApiserverNotReady",
        "etcd" => "EtcdUnhealthy",
        "pleg" => "PlegUnhealthy",
        _ => "ProbeFailing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k3s::signals::LogLine;
    use crate::k3s::unit::running_unit;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn cfg() -> K3sJudgeConfig {
        K3sJudgeConfig {
            unit: "k3s.service".into(),
            unresponsive_after: S(90),
            crashloop_restarts: 5,
            crashloop_window: S(1200),
            journal: true,
        }
    }

    fn kubelet(o: Observed) -> Vec<ProbeInput> {
        vec![ProbeInput {
            name: "kubelet",
            target: "http://127.0.0.1:10248/healthz".into(),
            observed: o,
        }]
    }

    fn pass(j: &mut K3sJudge, t: u64, unit: &UnitProperties, o: Observed) -> K3sVerdict {
        j.observe(PassInput {
            now: S(t),
            unit: Ok(unit.clone()),
            probes: kubelet(o),
            cri: Some(CriStatus::Up),
        })
    }

    fn kinds(v: &K3sVerdict) -> Vec<ConditionKind> {
        v.conditions.iter().map(|c| c.kind).collect()
    }

    fn failed() -> Observed {
        Observed::Answered(ProbeAnswer::Failed("no answer within 5000 ms".into()))
    }

    #[test]
    fn a_probe_failing_on_every_pass_for_90_s_raises_unresponsive_while_k3s_runs() {
        let mut j = K3sJudge::new(cfg());
        let u = running_unit();
        for t in [0, 10, 50, 89] {
            let v = pass(&mut j, t, &u, failed());
            assert!(v.conditions.is_empty(), "at {t} s");
        }
        let v = pass(&mut j, 90, &u, Observed::Stuck(S(6)));
        assert_eq!(kinds(&v), [ConditionKind::K3sUnresponsive]);
        let c = &v.conditions[0];
        assert_eq!(c.reason, "KubeletUnresponsive");
        assert!(
            c.message.contains("failing for 90 s") && c.message.contains("still out"),
            "{}",
            c.message
        );
        assert!(c.message.contains("main process 812"), "{}", c.message);
        let kv = v.probes.iter().find(|p| p.name == "kubelet").unwrap();
        assert_eq!(
            (kv.state, kv.failing_for_secs),
            (LivenessState::Failing, Some(90))
        );
    }

    #[test]
    fn a_probe_that_recovers_before_the_deadline_raises_nothing_and_starts_over() {
        let mut j = K3sJudge::new(cfg());
        let u = running_unit();
        pass(&mut j, 0, &u, failed());
        pass(&mut j, 80, &u, failed());
        let v = pass(
            &mut j,
            85,
            &u,
            Observed::Answered(ProbeAnswer::Ok("HTTP 200 ok".into())),
        );
        assert!(v.conditions.is_empty());
        // A new streak counts from its own start.
        pass(&mut j, 95, &u, failed());
        assert!(pass(&mut j, 180, &u, failed()).conditions.is_empty());
        assert_eq!(
            kinds(&pass(&mut j, 185, &u, failed())),
            [ConditionKind::K3sUnresponsive]
        );
    }

    #[test]
    fn refused_while_starting_and_anything_while_stopping_is_not_a_failure() {
        let mut j = K3sJudge::new(cfg());
        let mut u = running_unit();
        pass(&mut j, 0, &u, failed());
        u.active_state = "activating".into();
        let v = pass(
            &mut j,
            50,
            &u,
            Observed::Answered(ProbeAnswer::Refused("connection refused".into())),
        );
        let kv = &v.probes[0];
        assert_eq!(kv.state, LivenessState::Starting);
        // The streak ended: 100 s after its start is no condition.
        let v = pass(&mut j, 100, &u, failed());
        assert!(
            v.conditions.is_empty(),
            "a non-refusal while starting counts, from now"
        );
        assert_eq!(v.probes[0].failing_for_secs, Some(0));
        u.active_state = "deactivating".into();
        let v = pass(&mut j, 300, &u, failed());
        assert_eq!(v.probes[0].state, LivenessState::Stopping);
        assert!(v.conditions.is_empty());
        // Refused while active is a failure like any other.
        u.active_state = "active".into();
        let refused = || Observed::Answered(ProbeAnswer::Refused("connection refused".into()));
        pass(&mut j, 400, &u, refused());
        assert_eq!(
            kinds(&pass(&mut j, 490, &u, refused())),
            [ConditionKind::K3sUnresponsive]
        );
    }

    #[test]
    fn no_main_process_means_no_unresponsive_condition() {
        let mut j = K3sJudge::new(cfg());
        let mut u = running_unit();
        u.main_pid = 0;
        pass(&mut j, 0, &u, failed());
        assert!(pass(&mut j, 200, &u, failed()).conditions.is_empty());
    }

    #[test]
    fn five_restarts_in_twenty_minutes_raise_crash_looping_with_the_last_fatal_line() {
        let mut j = K3sJudge::new(cfg());
        let mut u = running_unit();
        let fatal = r#"time="2025-11-21T17:35:41Z" level=fatal msg="starting kubernetes: preparing server: bootstrap data already found and encrypted with different token""#;
        let not_run = || Observed::NotRun("k3s is not running".into());
        pass(&mut j, 0, &u, not_run());
        j.logs.ingest(
            S(5),
            [LogLine {
                text: fatal,
                fresh: true,
            }],
        );
        for (i, t) in [60u64, 120, 180, 240].iter().enumerate() {
            u.n_restarts = i as u32 + 1;
            assert!(pass(&mut j, *t, &u, not_run()).conditions.is_empty());
        }
        u.n_restarts = 5;
        let v = pass(&mut j, 300, &u, not_run());
        assert_eq!(kinds(&v), [ConditionKind::K3sCrashLooping]);
        assert_eq!(v.conditions[0].message, fatal);
        assert_eq!(v.restarts_in_window, 5);
        // 20 min after the first restart only 4 are left in the window: cleared.
        assert!(pass(&mut j, 60 + 1200, &u, not_run()).conditions.is_empty());
    }

    #[test]
    fn a_manual_start_resets_nrestarts_without_counting_a_restart() {
        let mut j = K3sJudge::new(cfg());
        let mut u = running_unit();
        u.n_restarts = 4;
        pass(&mut j, 0, &u, failed());
        assert_eq!(
            pass(&mut j, 10, &u, failed()).restarts_in_window,
            0,
            "the first reading is a baseline"
        );
        u.n_restarts = 0;
        assert_eq!(pass(&mut j, 20, &u, failed()).restarts_in_window, 0);
        u.n_restarts = 2;
        assert_eq!(pass(&mut j, 30, &u, failed()).restarts_in_window, 2);
    }

    #[test]
    fn a_failed_unit_is_a_condition_and_an_operators_stop_is_not() {
        let mut j = K3sJudge::new(cfg());
        let mut u = running_unit();
        u.main_pid = 0;
        u.active_state = "failed".into();
        u.sub_state = "failed".into();
        u.result = "exit-code".into();
        let v = pass(&mut j, 0, &u, Observed::NotRun("k3s is not running".into()));
        assert_eq!(kinds(&v), [ConditionKind::K3sUnitFailed]);
        assert!(v.conditions[0].message.contains("Result=exit-code"));
        u.active_state = "inactive".into();
        u.sub_state = "dead".into();
        u.result = "success".into();
        assert!(
            pass(
                &mut j,
                10,
                &u,
                Observed::NotRun("k3s is not running".into())
            )
            .conditions
            .is_empty()
        );
    }

    #[test]
    fn an_unreadable_unit_is_judged_by_its_last_known_state() {
        let mut j = K3sJudge::new(cfg());
        let mut u = running_unit();
        u.active_state = "failed".into();
        u.main_pid = 0;
        pass(&mut j, 0, &u, Observed::NotRun("x".into()));
        let v = j.observe(PassInput {
            now: S(10),
            unit: Err("no D-Bus answer within 2000 ms".into()),
            probes: vec![],
            cri: None,
        });
        assert_eq!(kinds(&v), [ConditionKind::K3sUnitFailed]);
        assert!(v.unit_error.is_some());
    }

    #[test]
    fn pleg_unhealthy_lines_are_a_failing_probe_and_cri_is_shown_but_never_raises() {
        let mut j = K3sJudge::new(cfg());
        let u = running_unit();
        let pleg = r#"E1121 17:35:41.123456     812 kubelet.go:2412] "Skipping pod synchronization" err="PLEG is not healthy: pleg was last seen active 3m5s ago; threshold is 3m0s""#;
        let ok = || Observed::Answered(ProbeAnswer::Ok("HTTP 200 ok".into()));
        for t in (0..=90).step_by(10) {
            j.logs.ingest(
                S(t),
                [LogLine {
                    text: pleg,
                    fresh: true,
                }],
            );
            let v = j.observe(PassInput {
                now: S(t),
                unit: Ok(u.clone()),
                probes: kubelet(ok()),
                cri: Some(CriStatus::Down("3 failed check(s) in a row".into())),
            });
            if t < 90 {
                assert!(v.conditions.is_empty(), "at {t}");
            } else {
                assert_eq!(kinds(&v), [ConditionKind::K3sUnresponsive]);
                assert_eq!(v.conditions[0].reason, "PlegUnhealthy");
                let cri = v.probes.iter().find(|p| p.name == "cri").unwrap();
                assert_eq!(cri.state, LivenessState::Failing);
                assert!(!v.conditions[0].message.contains("cri ("));
            }
        }
    }
}
