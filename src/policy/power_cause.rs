//! The cause-aware rail. A lockup, hung-task, RCU-stall or storage problem that starts
//! within `policy.power_cause_window` of under-voltage or thermal throttling (or while one
//! is held) is attributed to it: `reason=PowerSupply` or `reason=Thermal` in its decisions,
//! its audit entries and, through the hub, its condition. For such an episode the ladder's
//! reboot step is replaced by NeedsHuman unless `policy.allow_reboot_on_power_cause`: a
//! reboot on a sagging supply adds load and SD-card wear and fixes nothing, and an
//! overheating board comes back just as hot.
//!
//! Pure, like the engine: `decide` calls [`observe`] once per tick, [`instead_of_reboot`]
//! before a step's rails, and [`annotate`] on its output. The memory it needs (when the
//! power conditions were last held, which episodes are attributed) lives in
//! `PolicyState::power` and changes only on transitions, so `state.json` is not rewritten
//! on every tick of a long under-voltage.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::engine::{Decision, PolicyConfig, episode_key};
use crate::config::RunMode;
use crate::model::{ConditionKey, ConditionKind, Remedy};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PowerCause {
    PowerSupply,
    Thermal,
}

impl PowerCause {
    /// The condition reason (CamelCase, as Kubernetes reasons are).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            PowerCause::PowerSupply => "PowerSupply",
            PowerCause::Thermal => "Thermal",
        }
    }

    fn what(self) -> &'static str {
        match self {
            PowerCause::PowerSupply => "under-voltage",
            PowerCause::Thermal => "thermal throttling",
        }
    }
}

/// When a power condition was held: `since` while it is, `until` (the first tick it was
/// not) after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct HeldSpan {
    pub(crate) since: Option<u64>,
    pub(crate) until: Option<u64>,
}

impl HeldSpan {
    fn update(&mut self, held_since: Option<u64>, now: u64) {
        match (held_since, self.since) {
            (Some(s), None) => self.since = Some(s.min(now)),
            (None, Some(_)) => {
                self.since = None;
                self.until = Some(now);
            }
            _ => {}
        }
    }

    /// Held at some time at or after `t`.
    fn active_since(&self, t: u64) -> bool {
        self.since.is_some() || self.until.is_some_and(|u| u >= t)
    }
}

/// The rail's persisted memory (`PolicyState::power`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PowerMemory {
    pub(crate) under_voltage: HeldSpan,
    pub(crate) thermal: HeldSpan,
    /// Attributed problems by episode key; kept while the problem is held.
    pub(crate) causes: BTreeMap<String, PowerCause>,
}

/// The problems a sagging supply or an overheating SoC brings: lockups, hung tasks and RCU
/// stalls (a CPU starved by throttling or stuck on a storage bus that browned out), and
/// storage errors. By name, so the storage conditions join as soon as they exist.
pub(crate) fn sensitive(k: ConditionKind) -> bool {
    matches!(
        k.name(),
        "KernelRCUStall"
            | "KernelSoftLockup"
            | "KernelHardLockup"
            | "KernelHungTasks"
            | "StorageErrors"
            | "ReadOnlyFilesystem"
    )
}

/// One tick: remembers when the power conditions were held and attributes every held
/// sensitive problem that began within the window of one. An attribution sticks until
/// the problem clears; under-voltage wins over heat when both apply (it also causes the
/// firmware to throttle).
pub(crate) fn observe(
    cfg: &PolicyConfig,
    mem: &mut PowerMemory,
    held: &[(ConditionKey, u64)],
    now: u64,
) {
    let since = |k: ConditionKind| held.iter().find(|(key, _)| key.0 == k).map(|(_, s)| *s);
    mem.under_voltage
        .update(since(ConditionKind::UnderVoltage), now);
    mem.thermal
        .update(since(ConditionKind::ThermalThrottling), now);
    let window = cfg.power_cause_window.as_secs();
    let mut keep = BTreeMap::new();
    for (key, since) in held.iter().filter(|(k, _)| sensitive(k.0)) {
        let ek = episode_key(key).to_string();
        let from = since.min(&now).saturating_sub(window);
        let cause = mem.causes.get(&ek).copied().or_else(|| {
            if mem.under_voltage.active_since(from) {
                Some(PowerCause::PowerSupply)
            } else if mem.thermal.active_since(from) {
                Some(PowerCause::Thermal)
            } else {
                None
            }
        });
        if let Some(c) = cause {
            keep.insert(ek, c);
        }
    }
    mem.causes = keep;
}

/// The NeedsHuman reason that replaces the reboot step of an attributed episode, or None
/// when the step stays (not a reboot, not attributed, observe mode, or the operator's
/// opt-in).
pub(crate) fn instead_of_reboot(
    cfg: &PolicyConfig,
    mem: &PowerMemory,
    key: &ConditionKey,
    action: Remedy,
) -> Option<String> {
    if action != Remedy::Reboot || cfg.mode != RunMode::Act || cfg.allow_reboot_on_power_cause {
        return None;
    }
    let c = mem.causes.get(&episode_key(key).to_string())?;
    Some(format!(
        "{} coincides with {} (reason={}): a reboot would not fix it, so the reboot step is replaced by NeedsHuman; fix the {}, then `nodemedic reset` (or set policy.allow_reboot_on_power_cause)",
        key.0,
        c.what(),
        c.reason(),
        match c {
            PowerCause::PowerSupply => "power supply",
            PowerCause::Thermal => "cooling",
        }
    ))
}

/// Adds `reason=...` to every decision about an attributed problem.
pub(crate) fn annotate(mem: &PowerMemory, out: &mut [Decision]) {
    for d in out {
        let Some(kind) = d.kind else { continue };
        if let Some(c) = mem
            .causes
            .get(&episode_key(&(kind, d.subject.clone())).to_string())
            && !d.reason.contains("reason=")
        {
            d.reason = format!(
                "{}; reason={} ({} within the window)",
                d.reason,
                c.reason(),
                c.what()
            );
        }
    }
}

/// The attributed problems, for the hub to relabel their conditions.
pub(crate) fn labels(mem: &PowerMemory) -> BTreeMap<String, (&'static str, &'static str)> {
    mem.causes
        .iter()
        .map(|(k, c)| (k.clone(), (c.reason(), c.what())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::engine::*;
    use super::super::policy_config;
    use super::*;
    use crate::config::Config;
    use proptest::prelude::*;
    use std::time::Duration;

    const T0: u64 = 1_800_000_000;

    fn cfg(allow: bool) -> PolicyConfig {
        let mut c = Config {
            mode: RunMode::Act,
            ..Default::default()
        };
        c.policy.allow_reboot_on_power_cause = allow;
        policy_config(&c)
    }

    fn key(k: ConditionKind) -> ConditionKey {
        (k, String::new())
    }

    fn inputs(now: u64, held: Vec<(ConditionKey, u64)>) -> Inputs {
        Inputs {
            now: crate::policy::clock::At::new(now, now),
            since_boot: Duration::from_secs(now - T0 + 3600),
            held: held.into_iter().map(|(k, _)| k).collect(),
            paused: false,
            clock_sane: true,
            lease: Lease::Held,
            restarting: false,
            cluster: None,
            servers: Default::default(),
        }
    }

    /// Ticks every 30 s for `secs`; `held(t)` says what is held at t.
    fn run(
        c: &PolicyConfig,
        secs: u64,
        held: impl Fn(u64) -> Vec<(ConditionKey, u64)>,
    ) -> (Vec<(u64, Decision)>, PolicyState) {
        let mut st = PolicyState::default();
        let mut out = Vec::new();
        let mut t = T0;
        while t <= T0 + secs {
            for d in decide(c, &mut st, &inputs(t, held(t))) {
                out.push((t, d));
            }
            t += 30;
        }
        (out, st)
    }

    #[test]
    fn a_soft_lockup_during_under_voltage_asks_a_human_instead_of_rebooting() {
        let c = cfg(false);
        let (ds, st) = run(&c, 3600, |t| {
            let mut h = vec![(key(ConditionKind::KernelSoftLockup), T0)];
            if t < T0 + 120 {
                h.push((key(ConditionKind::UnderVoltage), T0 - 30));
            }
            h
        });
        let gos: Vec<_> = ds
            .iter()
            .filter(|(_, d)| d.verdict == Verdict::Go)
            .map(|(t, d)| (t - T0, d.action))
            .collect();
        assert_eq!(gos, [(0, Remedy::Cordon), (600, Remedy::NeedsHuman)]);
        let nh = &ds
            .iter()
            .find(|(_, d)| d.action == Remedy::NeedsHuman)
            .unwrap()
            .1;
        assert!(
            nh.reason.contains("reason=PowerSupply")
                && nh.reason.contains("replaced by NeedsHuman"),
            "{}",
            nh.reason
        );
        assert!(
            ds[0].1.reason.contains("reason=PowerSupply"),
            "the cordon is attributed too: {}",
            ds[0].1.reason
        );
        assert!(
            st.history.get(&Remedy::Reboot).is_none_or(|v| v.is_empty()),
            "no reboot budget spent"
        );
        assert_eq!(labels(&st.power)["KernelSoftLockup"].0, "PowerSupply");
    }

    #[test]
    fn heat_ten_minutes_before_counts_eleven_minutes_before_does_not() {
        for (gap, attributed) in [(600, true), (660, false)] {
            let c = cfg(false);
            let (ds, _) = run(&c, 3600, |t| {
                let mut h = Vec::new();
                if t < T0 + 30 {
                    h.push((key(ConditionKind::ThermalThrottling), T0));
                }
                if t >= T0 + 30 + gap {
                    h.push((key(ConditionKind::KernelSoftLockup), T0 + 30 + gap));
                }
                h
            });
            let rebooted = ds
                .iter()
                .any(|(_, d)| d.action == Remedy::Reboot && d.verdict == Verdict::Go);
            assert_eq!(rebooted, !attributed, "gap {gap}s");
            assert_eq!(
                ds.iter().any(|(_, d)| d.reason.contains("reason=Thermal")),
                attributed,
                "gap {gap}s"
            );
        }
    }

    #[test]
    fn the_opt_in_keeps_the_reboot_and_still_names_the_cause() {
        let (ds, _) = run(&cfg(true), 3600, |_| {
            vec![
                (key(ConditionKind::KernelHardLockup), T0),
                (key(ConditionKind::UnderVoltage), T0),
            ]
        });
        let r = ds.iter().find(|(_, d)| d.action == Remedy::Reboot).unwrap();
        assert_eq!(r.1.verdict, Verdict::Go);
        assert!(r.1.reason.contains("reason=PowerSupply"), "{}", r.1.reason);
    }

    #[test]
    fn problems_a_supply_does_not_cause_are_not_attributed() {
        let (ds, st) = run(&cfg(false), 600, |_| {
            vec![
                (key(ConditionKind::MemoryPressure), T0),
                (key(ConditionKind::UnderVoltage), T0),
            ]
        });
        assert!(st.power.causes.is_empty());
        assert!(!ds.iter().any(|(_, d)| d.reason.contains("reason=")));
    }

    /// A random node life: per 30 s tick, whether under-voltage, heat and a problem of
    /// `kind` are held.
    fn life() -> impl Strategy<Value = (Vec<(bool, bool, bool)>, usize, bool)> {
        (
            prop::collection::vec(
                (
                    prop::bool::weighted(0.1),
                    prop::bool::weighted(0.1),
                    prop::bool::weighted(0.7),
                ),
                1..240,
            ),
            0usize..6,
            any::<bool>(),
        )
    }

    const KINDS: [ConditionKind; 6] = [
        ConditionKind::KernelRcuStall,
        ConditionKind::KernelSoftLockup,
        ConditionKind::KernelHardLockup,
        ConditionKind::KernelHungTasks,
        ConditionKind::MemoryPressure,
        ConditionKind::NetworkMountHung,
    ];

    type Timed = Vec<(u64, Decision)>;

    /// Replays a life; returns the decisions with and without the power conditions, and
    /// the ticks with power trouble.
    fn replay(
        c: &PolicyConfig,
        ticks: &[(bool, bool, bool)],
        kind: ConditionKind,
    ) -> (Timed, Timed, Vec<u64>) {
        let held_at = |i: usize, with_power: bool| {
            let mut h = Vec::new();
            let (uv, heat, problem) = ticks[i];
            if problem {
                // Since: the start of this run of held ticks.
                let start = (0..=i).rev().take_while(|j| ticks[*j].2).last().unwrap();
                h.push((key(kind), T0 + 30 * start as u64));
            }
            if with_power && uv {
                h.push((key(ConditionKind::UnderVoltage), T0 + 30 * i as u64));
            }
            if with_power && heat {
                h.push((key(ConditionKind::ThermalThrottling), T0 + 30 * i as u64));
            }
            h
        };
        let (mut a, mut b) = (PolicyState::default(), PolicyState::default());
        let (mut with, mut without) = (Vec::new(), Vec::new());
        let mut power_ticks = Vec::new();
        for (i, (uv, heat, _)) in ticks.iter().enumerate() {
            let t = T0 + 30 * i as u64;
            if *uv || *heat {
                power_ticks.push(t);
            }
            with.extend(
                decide(c, &mut a, &inputs(t, held_at(i, true)))
                    .into_iter()
                    .map(|d| (t, d)),
            );
            without.extend(
                decide(c, &mut b, &inputs(t, held_at(i, false)))
                    .into_iter()
                    .map(|d| (t, d)),
            );
        }
        (with, without, power_ticks)
    }

    fn strip(ds: &[(u64, Decision)]) -> Vec<(u64, Remedy, Verdict)> {
        ds.iter().map(|(t, d)| (*t, d.action, d.verdict)).collect()
    }

    proptest! {
        /// Without the opt-in, no reboot ever goes ahead for a sensitive problem whose
        /// episode began within the window of a power condition (or while one was held).
        #[test]
        fn no_reboot_for_a_problem_that_coincides_with_power_trouble((ticks, k, _) in life()) {
            let c = cfg(false);
            let kind = KINDS[k];
            let (with, _, power) = replay(&c, &ticks, kind);
            let window = c.power_cause_window.as_secs();
            for (t, d) in &with {
                if d.action == Remedy::Reboot && d.verdict == Verdict::Go && sensitive(kind) {
                    let i = ((t - T0) / 30) as usize;
                    let start = T0 + 30 * (0..=i).rev().take_while(|j| ticks[*j].2).last().unwrap() as u64;
                    prop_assert!(
                        !power.iter().any(|p| *p + window >= start && *p <= *t),
                        "rebooted at {t} for an episode from {start} with power trouble at {power:?}"
                    );
                }
            }
        }

        /// With the opt-in, or for problems a supply does not cause, the rail changes no
        /// decision: the same actions at the same times as without any power condition.
        #[test]
        fn the_rail_changes_nothing_it_is_not_asked_to((ticks, k, allow) in life()) {
            let kind = KINDS[k];
            let c = cfg(allow);
            let (with, without, _) = replay(&c, &ticks, kind);
            if allow || !sensitive(kind) {
                prop_assert_eq!(strip(&with), strip(&without));
            }
            // Never more actions than without power trouble: it only ever holds a reboot.
            let acted = |ds: &[(u64, Decision)]| ds.iter().filter(|(_, d)| d.verdict == Verdict::Go && d.action != Remedy::NeedsHuman).count();
            prop_assert!(acted(&with) <= acted(&without));
        }
    }
}
