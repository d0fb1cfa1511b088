//! Engine tests: rails one by one, whole scenarios, and properties over random histories.

use super::engine::*;
use super::policy_config;
use crate::config::{Config, RunMode};
use crate::model::ConditionKind;
use crate::model::Remedy;
use proptest::prelude::*;
use std::time::Duration;

const T0: u64 = 1_800_000_000;
const MIN: u64 = 60;

fn cfg(mode: RunMode) -> PolicyConfig {
    policy_config(&Config {
        mode,
        ..Default::default()
    })
}

fn stall() -> ((ConditionKind, String), u64) {
    ((ConditionKind::KernelRcuStall, String::new()), T0)
}

fn inputs(now: u64, held: Vec<((ConditionKind, String), u64)>) -> Inputs {
    Inputs {
        now_unix: now,
        // Well past the boot grace unless a test says otherwise.
        since_boot: Duration::from_secs(now - T0 + 3600),
        held,
        paused: false,
        clock_sane: true,
        lease: Lease::Available,
        servers: Default::default(),
    }
}

/// Runs ticks every `step` seconds from T0 to T0+`secs`, collecting all decisions.
fn run(
    c: &PolicyConfig,
    st: &mut PolicyState,
    secs: u64,
    step: u64,
    f: impl Fn(u64) -> Inputs,
) -> Vec<(u64, Decision)> {
    let mut out = Vec::new();
    let mut t = T0;
    while t <= T0 + secs {
        for d in decide(c, st, &f(t)) {
            out.push((t, d));
        }
        t += step;
    }
    out
}

fn gos(ds: &[(u64, Decision)]) -> Vec<(u64, Remedy)> {
    ds.iter()
        .filter(|(_, d)| d.verdict == Verdict::Go)
        .map(|(t, d)| (t - T0, d.action))
        .collect()
}

#[test]
fn a_recurring_long_stall_escalates_to_reboot_in_act_mode_then_asks_a_human() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState::default();
    let ds = run(&c, &mut st, 2 * 3600, 30, |t| inputs(t, vec![stall()]));
    assert_eq!(
        gos(&ds),
        vec![
            (0, Remedy::Cordon),
            (15 * MIN, Remedy::RestartK3s),
            (30 * MIN, Remedy::Reboot),
            (60 * MIN, Remedy::NeedsHuman),
        ]
    );
    assert_eq!(needs_human(&st), vec!["KernelRCUStall".to_string()]);
    assert_eq!(
        st.last_reboot,
        Some((T0 + 30 * MIN, "KernelRCUStall".into()))
    );
}

#[test]
fn observe_mode_records_the_whole_ladder_as_suppressed_and_does_nothing() {
    let c = cfg(RunMode::Observe);
    let mut st = PolicyState::default();
    let ds = run(&c, &mut st, 2 * 3600, 30, |t| inputs(t, vec![stall()]));
    assert!(gos(&ds).is_empty(), "{ds:?}");
    let held: Vec<_> = ds
        .iter()
        .map(|(t, d)| (t - T0, d.action, d.verdict))
        .collect();
    assert_eq!(
        held,
        vec![
            (0, Remedy::Cordon, Verdict::Held(Hold::ObserveMode)),
            (
                15 * MIN,
                Remedy::RestartK3s,
                Verdict::Held(Hold::ObserveMode)
            ),
            (30 * MIN, Remedy::Reboot, Verdict::Held(Hold::ObserveMode)),
        ],
        "each step once, and no NeedsHuman: nothing was tried"
    );
    assert!(!st.cordoned_by_us);
}

#[test]
fn disruptive_steps_wait_out_the_boot_grace_period_and_are_recorded_once() {
    let mut c = cfg(RunMode::Act);
    c.ladders.kernel_rcu_stall = vec![crate::config::ladder::Step::parse("reboot@0s").unwrap()];
    let mut st = PolicyState::default();
    // Booted 2 minutes before the stall; grace is 10 minutes.
    let ds = run(&c, &mut st, 20 * MIN, 10, |t| Inputs {
        since_boot: Duration::from_secs(t - T0 + 120),
        ..inputs(t, vec![stall()])
    });
    let holds: Vec<_> = ds
        .iter()
        .filter(|(_, d)| d.verdict == Verdict::Held(Hold::BootGrace))
        .collect();
    assert_eq!(holds.len(), 1, "waiting is audited once: {ds:?}");
    assert_eq!(gos(&ds), vec![(8 * MIN, Remedy::Reboot)]);
}

#[test]
fn a_spent_reboot_budget_stops_automatic_action_and_asks_a_human() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState::default();
    st.history.insert(
        Remedy::Reboot,
        vec![T0 - 20 * 3600, T0 - 10 * 3600, T0 - 5 * 3600],
    );
    assert_eq!(st.reboot_budget_remaining(&c, T0), 0);
    let mut h = cfg(RunMode::Act);
    h.ladders.kernel_hard_lockup = vec![crate::config::ladder::Step::parse("reboot@0s").unwrap()];
    let ds = decide(
        &h,
        &mut st,
        &inputs(
            T0,
            vec![((ConditionKind::KernelHardLockup, String::new()), T0)],
        ),
    );
    assert_eq!(ds[0].verdict, Verdict::Held(Hold::Cap));
    assert_eq!(ds[1].action, Remedy::NeedsHuman);
    // Nothing more for that episode while it lasts.
    assert!(
        decide(
            &h,
            &mut st,
            &inputs(
                T0 + 7200,
                vec![((ConditionKind::KernelHardLockup, String::new()), T0)]
            )
        )
        .is_empty()
    );
    let _ = c;
}

#[test]
fn the_budget_window_rolls_so_old_reboots_stop_counting() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState::default();
    st.history.insert(
        Remedy::Reboot,
        vec![T0 - 25 * 3600, T0 - 24 * 3600, T0 - 3600 * 2],
    );
    assert_eq!(st.reboot_budget_remaining(&c, T0), 2);
}

#[test]
fn reboots_respect_the_minimum_interval_even_within_budget() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState::default();
    st.history.insert(Remedy::Reboot, vec![T0 - 600]);
    let inp = inputs(T0, vec![]);
    assert_eq!(
        verdict(&c, &st, &inp, Remedy::Reboot),
        Verdict::Held(Hold::RebootMinInterval)
    );
    assert_eq!(
        verdict(&c, &st, &inputs(T0 + 3600, vec![]), Remedy::Reboot),
        Verdict::Go
    );
}

#[test]
fn pause_dry_run_lease_clock_and_recovered_state_each_hold_a_reboot() {
    let mut c = cfg(RunMode::Act);
    let st = PolicyState::default();
    let base = inputs(T0, vec![]);
    let v = |c: &PolicyConfig, st: &PolicyState, i: &Inputs| verdict(c, st, i, Remedy::Reboot);
    assert_eq!(v(&c, &st, &base), Verdict::Go);
    assert_eq!(
        v(
            &c,
            &st,
            &Inputs {
                paused: true,
                ..base.clone()
            }
        ),
        Verdict::Held(Hold::Paused)
    );
    assert_eq!(
        v(
            &c,
            &st,
            &Inputs {
                clock_sane: false,
                ..base.clone()
            }
        ),
        Verdict::Held(Hold::ClockUnsynced)
    );
    assert_eq!(
        v(
            &c,
            &st,
            &Inputs {
                lease: Lease::HeldElsewhere,
                ..base.clone()
            }
        ),
        Verdict::Held(Hold::LeaseUnavailable)
    );
    assert_eq!(
        v(
            &c,
            &st,
            &Inputs {
                lease: Lease::ApiUnreachable,
                ..base.clone()
            }
        ),
        Verdict::Go,
        "an unreachable API must not stop a wedged control-plane node from healing"
    );
    let rec = PolicyState {
        recovered_at: Some(T0 - 100),
        ..Default::default()
    };
    assert_eq!(v(&c, &rec, &base), Verdict::Held(Hold::StateRecovered));
    c.rules.get_mut(&Remedy::Reboot).unwrap().dry_run = true;
    assert_eq!(v(&c, &st, &base), Verdict::DryRun);
    c.rules.get_mut(&Remedy::Reboot).unwrap().enabled = false;
    assert_eq!(v(&c, &st, &base), Verdict::Held(Hold::Disabled));
}

#[test]
fn memory_pressure_cordons_then_uncordons_only_its_own_cordon_when_it_clears() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState::default();
    let mem = ((ConditionKind::MemoryPressure, String::new()), T0);
    let d = decide(&c, &mut st, &inputs(T0, vec![mem.clone()]));
    assert_eq!(
        d.iter().map(|d| (d.action, d.verdict)).collect::<Vec<_>>(),
        vec![(Remedy::Cordon, Verdict::Go)]
    );
    assert!(st.cordoned_by_us);
    assert!(
        decide(&c, &mut st, &inputs(T0 + 60, vec![mem])).is_empty(),
        "stops at cordon"
    );
    let d = decide(&c, &mut st, &inputs(T0 + 120, vec![]));
    assert_eq!(
        d.iter().map(|d| (d.action, d.verdict)).collect::<Vec<_>>(),
        vec![(Remedy::Uncordon, Verdict::Go)]
    );
    assert!(!st.cordoned_by_us && st.episodes.is_empty());
    assert!(
        decide(&c, &mut st, &inputs(T0 + 180, vec![])).is_empty(),
        "uncordon once"
    );
}

#[test]
fn no_uncordon_is_ever_decided_when_nodemedic_did_not_cordon() {
    // An operator's cordon: nodemedic's cordon step was dry-run, so the flag never set.
    let mut c = cfg(RunMode::Act);
    c.rules.get_mut(&Remedy::Cordon).unwrap().dry_run = true;
    let mut st = PolicyState::default();
    let mem = ((ConditionKind::MemoryPressure, String::new()), T0);
    let d = decide(&c, &mut st, &inputs(T0, vec![mem]));
    assert_eq!(d[0].verdict, Verdict::DryRun);
    assert!(decide(&c, &mut st, &inputs(T0 + 60, vec![])).is_empty());
}

#[test]
fn uncordon_waits_while_paused_but_happens_after() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState {
        cordoned_by_us: true,
        ..Default::default()
    };
    assert!(
        decide(
            &c,
            &mut st,
            &Inputs {
                paused: true,
                ..inputs(T0, vec![])
            }
        )
        .is_empty()
    );
    assert_eq!(
        decide(&c, &mut st, &inputs(T0 + 1, vec![]))[0].action,
        Remedy::Uncordon
    );
}

#[test]
fn a_problem_back_soon_after_our_reboot_means_the_reboot_did_not_help() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState {
        last_reboot: Some((T0 - 600, "KernelRCUStall".into())),
        booted_after_reboot: Some(T0 - 300),
        ..Default::default()
    };
    let d = decide(&c, &mut st, &inputs(T0, vec![stall()]));
    assert_eq!(d[0].action, Remedy::NeedsHuman);
    assert!(d[0].reason.contains("did not help"), "{}", d[0].reason);
    assert!(
        d.iter().all(|d| d.action == Remedy::NeedsHuman),
        "no ladder step: {d:?}"
    );
    // A different problem is not affected.
    let mem = ((ConditionKind::MemoryPressure, String::new()), T0);
    let d = decide(&c, &mut st, &inputs(T0 + 1, vec![stall(), mem]));
    assert!(
        d.iter()
            .any(|d| d.action == Remedy::Cordon && d.kind == Some(ConditionKind::MemoryPressure))
    );
}

#[test]
fn an_episode_that_clears_resets_its_escalation() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState::default();
    run(&c, &mut st, 16 * MIN, 60, |t| inputs(t, vec![stall()]));
    assert_eq!(st.episodes["KernelRCUStall"].next_step, 2);
    decide(&c, &mut st, &inputs(T0 + 17 * MIN, vec![]));
    assert!(st.episodes.is_empty());
    // A new episode starts from the first step (the cordon cooldown has passed by then).
    let later = T0 + 40 * MIN;
    let d = decide(
        &c,
        &mut st,
        &inputs(
            later,
            vec![((ConditionKind::KernelRcuStall, String::new()), later)],
        ),
    );
    assert_eq!(d[0].action, Remedy::Cordon);
    assert_eq!(d[0].step, 0);
}

#[test]
fn mounts_are_separate_episodes_and_a_dead_nas_never_earns_a_reboot_by_default() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState::default();
    let m = |s: &str| ((ConditionKind::NetworkMountHung, s.to_string()), T0);
    let ds = run(&c, &mut st, 4 * 3600, 60, |t| {
        inputs(t, vec![m("/mnt/a"), m("/mnt/b")])
    });
    assert!(!ds.iter().any(|(_, d)| d.action == Remedy::Reboot));
    assert!(
        st.episodes.contains_key("NetworkMountHung:/mnt/a")
            && st.episodes.contains_key("NetworkMountHung:/mnt/b")
    );
}

// ---- properties over random histories ----

#[derive(Clone, Debug)]
struct TickSpec {
    dt: u64,
    rcu: bool,
    hard: bool,
    mem: bool,
    paused: bool,
    clock_sane: bool,
    lease: u8,
}

fn tick() -> impl Strategy<Value = TickSpec> {
    (
        0u64..900,
        any::<bool>(),
        prop::bool::weighted(0.4),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
        0u8..3,
    )
        .prop_map(|(dt, rcu, hard, mem, paused, clock_sane, lease)| TickSpec {
            dt,
            rcu,
            hard,
            mem,
            paused,
            clock_sane,
            lease,
        })
}

fn setup() -> impl Strategy<Value = (PolicyConfig, PolicyState, u64, Vec<TickSpec>)> {
    // Weighted towards act mode, live reboots and early ticks, where the rails matter.
    (
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.2),
        0u32..4,
        0u64..900,
        prop::option::weighted(0.2, 0u64..200_000),
        prop::collection::vec(tick(), 1..60),
    )
        .prop_map(|(act, dry, cap, boot_offset, recovered, ticks)| {
            let mut c = cfg(if act { RunMode::Act } else { RunMode::Observe });
            let r = c.rules.get_mut(&Remedy::Reboot).unwrap();
            r.dry_run = dry;
            r.max_per_day = cap;
            let st = PolicyState {
                recovered_at: recovered.map(|ago| T0 - ago),
                ..Default::default()
            };
            (c, st, boot_offset, ticks)
        })
}

fn replay(
    c: &PolicyConfig,
    st: &mut PolicyState,
    boot_offset: u64,
    ticks: &[TickSpec],
    mut check: impl FnMut(&PolicyState, &Inputs, &[Decision], &PolicyState),
) {
    let mut now = T0;
    let mut since = std::collections::BTreeMap::new();
    for tk in ticks {
        now += tk.dt;
        let mut held = Vec::new();
        for (on, kind) in [
            (tk.rcu, ConditionKind::KernelRcuStall),
            (tk.hard, ConditionKind::KernelHardLockup),
            (tk.mem, ConditionKind::MemoryPressure),
        ] {
            if on {
                let s = *since.entry(kind).or_insert(now);
                held.push(((kind, String::new()), s));
            } else {
                since.remove(&kind);
            }
        }
        let inp = Inputs {
            now_unix: now,
            since_boot: Duration::from_secs(now - T0 + boot_offset),
            held,
            paused: tk.paused,
            clock_sane: tk.clock_sane,
            lease: [
                Lease::Available,
                Lease::HeldElsewhere,
                Lease::ApiUnreachable,
            ][tk.lease as usize],
            servers: Default::default(),
        };
        let before = st.clone();
        let ds = decide(c, st, &inp);
        check(&before, &inp, &ds, st);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn never_a_reboot_while_budget_spent_in_grace_paused_dry_run_or_observing((c, mut st, boot, ticks) in setup()) {
        replay(&c, &mut st, boot, &ticks, |before, inp, ds, _| {
            for d in ds.iter().filter(|d| d.action == Remedy::Reboot && d.verdict == Verdict::Go) {
                assert_eq!(c.mode, RunMode::Act, "{d:?}");
                assert!(!c.rules[&Remedy::Reboot].dry_run, "{d:?}");
                assert!(!inp.paused, "{d:?}");
                assert!(inp.since_boot >= c.boot_grace, "{d:?}");
                assert!(inp.clock_sane, "{d:?}");
                assert!(before.reboot_budget_remaining(&c, inp.now_unix) > 0, "budget spent: {d:?}");
                assert!(inp.lease != Lease::HeldElsewhere, "{d:?}");
            }
        });
    }

    #[test]
    fn the_same_inputs_always_give_the_same_decisions((c, st, boot, ticks) in setup()) {
        let (mut a, mut b) = (st.clone(), st);
        let mut da = Vec::new();
        let mut db = Vec::new();
        replay(&c, &mut a, boot, &ticks, |_, _, ds, _| da.push(ds.to_vec()));
        replay(&c, &mut b, boot, &ticks, |_, _, ds, _| db.push(ds.to_vec()));
        prop_assert_eq!(da, db);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn steps_only_escalate_within_an_episode_and_a_cleared_episode_resets((c, mut st, boot, ticks) in setup()) {
        replay(&c, &mut st, boot, &ticks, |before, inp, ds, after| {
            let held: Vec<String> = inp.held.iter().map(|(k, _)| episode_key(k)).collect();
            for (k, e) in &after.episodes {
                assert!(held.contains(k), "episode {k} outlived its condition");
                if let Some(b) = before.episodes.get(k) {
                    assert!(e.next_step >= b.next_step, "{k} went back from {} to {}", b.next_step, e.next_step);
                    assert!(e.needs_human || !b.needs_human, "{k} forgot NeedsHuman while held");
                }
            }
            for d in ds.iter().filter(|d| d.action != Remedy::NeedsHuman) {
                if let Some(kind) = d.kind
                    && let Some(b) = before.episodes.get(&episode_key(&(kind, d.subject.clone()))) {
                        assert!(d.step >= b.next_step, "{kind}: decided step {} after {}", d.step, b.next_step);
                    }
            }
        });
        // After a tick with nothing held, nothing is remembered.
        let inp = Inputs { now_unix: T0 + 10_000_000, since_boot: Duration::from_secs(10_000_000), held: vec![], paused: false, clock_sane: true, lease: Lease::Available, servers: Default::default() };
        decide(&c, &mut st, &inp);
        prop_assert!(st.episodes.is_empty());
    }
}
