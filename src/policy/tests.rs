//! Engine tests: rails one by one, whole scenarios, and properties over random histories.

use super::engine::*;
use super::policy_config;
use crate::config::{Config, RunMode};
use crate::model::Remedy;
use crate::model::{ConditionKind, EpisodeKey};
use proptest::prelude::*;
use std::time::Duration;

const T0: u64 = 1_800_000_000;

fn key(s: &str) -> EpisodeKey {
    EpisodeKey::parse(s).unwrap()
}
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

/// Node time runs with the wall clock in these tests unless one says otherwise.
fn at(unix: u64) -> At {
    At::new(unix, unix + 10_000_000 - T0)
}

/// Acted entries at these wall times.
fn acts(ts: &[u64]) -> Vec<Acted> {
    ts.iter()
        .map(|&t| Acted {
            at: at(t),
            subject: None,
        })
        .collect()
}

fn inputs(now: u64, held: Vec<((ConditionKind, String), u64)>) -> Inputs {
    Inputs {
        now: at(now),
        // Well past the boot grace unless a test says otherwise.
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
    assert_eq!(
        needs_human(&st)
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>(),
        vec!["KernelRCUStall".to_string()]
    );
    assert_eq!(
        st.last_reboot
            .as_ref()
            .map(|r| (r.at.unix, r.problem.as_str())),
        Some((T0 + 30 * MIN, "KernelRCUStall"))
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
        acts(&[T0 - 20 * 3600, T0 - 10 * 3600, T0 - 5 * 3600]),
    );
    assert_eq!(st.reboot_budget_remaining(&c, at(T0)), 0);
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
        acts(&[T0 - 25 * 3600, T0 - 24 * 3600, T0 - 3600 * 2]),
    );
    assert_eq!(st.reboot_budget_remaining(&c, at(T0)), 2);
}

#[test]
fn reboots_respect_the_minimum_interval_even_within_budget() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState::default();
    st.history.insert(Remedy::Reboot, acts(&[T0 - 600]));
    let inp = inputs(T0, vec![]);
    assert_eq!(
        verdict(&c, &st, &inp, Remedy::Reboot, ""),
        Verdict::Held(Hold::RebootMinInterval)
    );
    assert_eq!(
        verdict(&c, &st, &inputs(T0 + 3600, vec![]), Remedy::Reboot, ""),
        Verdict::Go
    );
}

#[test]
fn pause_dry_run_lease_clock_and_recovered_state_each_hold_a_reboot() {
    let mut c = cfg(RunMode::Act);
    let st = PolicyState::default();
    let base = inputs(T0, vec![]);
    let v = |c: &PolicyConfig, st: &PolicyState, i: &Inputs| verdict(c, st, i, Remedy::Reboot, "");
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
                lease: Lease::Pending,
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
                lease: Lease::NotNeeded,
                ..base.clone()
            }
        ),
        Verdict::Go,
        "a lease that is not needed (an unreachable API under when_permitted) must not stop a wedged control-plane node from healing"
    );
    let rec = PolicyState {
        recovered_at: Some(at(T0 - 100)),
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
        last_reboot: Some(LastReboot {
            at: at(T0 - 600),
            problem: "KernelRCUStall".into(),
            boot_id: None,
            rebooted_into: None,
        }),
        booted_after_reboot: Some(at(T0 - 300)),
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
    assert_eq!(st.episodes[&key("KernelRCUStall")].next_step, 2);
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
        st.episodes.contains_key(&key("NetworkMountHung:/mnt/a"))
            && st.episodes.contains_key(&key("NetworkMountHung:/mnt/b"))
    );
}

#[test]
fn a_second_problem_shares_the_cordon_and_it_stays_until_that_problem_clears_too() {
    // MemoryPressure cordons; a hung mount starts a minute later (its cordon@0 used to be
    // held back by the cordon's cooldown); MemoryPressure clears while the mount is hung.
    let c = cfg(RunMode::Act);
    let mut st = PolicyState::default();
    let mem = ((ConditionKind::MemoryPressure, String::new()), T0);
    let mount = (
        (ConditionKind::NetworkMountHung, "/mnt/nas".to_string()),
        T0 + 60,
    );
    let d = decide(&c, &mut st, &inputs(T0, vec![mem.clone()]));
    assert_eq!(d[0].action, Remedy::Cordon);
    let d = decide(
        &c,
        &mut st,
        &inputs(T0 + 60, vec![mem.clone(), mount.clone()]),
    );
    let cordon: Vec<_> = d
        .iter()
        .filter(|d| d.kind == Some(ConditionKind::NetworkMountHung))
        .map(|d| (d.action, d.verdict))
        .collect();
    assert_eq!(
        cordon,
        vec![(Remedy::Cordon, Verdict::Go)],
        "the cordon is already nodemedic's: shared, no cooldown"
    );
    assert_eq!(
        st.count_last_day(Remedy::Cordon, at(T0 + 60)),
        1,
        "no second cordon counted"
    );
    let d = decide(&c, &mut st, &inputs(T0 + 120, vec![mount.clone()]));
    assert!(
        d.iter().all(|d| d.action != Remedy::Uncordon),
        "the mount still wants the cordon: {d:?}"
    );
    assert!(st.cordoned_by_us);
    let d = decide(&c, &mut st, &inputs(T0 + 180, vec![]));
    assert_eq!(d.iter().filter(|d| d.action == Remedy::Uncordon).count(), 1);
}

#[test]
fn each_subject_has_its_own_cooldown_and_cap_under_the_node_wide_cap() {
    let mut c = cfg(RunMode::Act);
    c.rules
        .get_mut(&Remedy::RemoveSandboxes)
        .unwrap()
        .max_per_day = 5;
    let sb = |n: u32| {
        (
            (
                ConditionKind::SandboxNameReserved,
                format!("web-{n}_default_uid{n}_1"),
            ),
            T0,
        )
    };
    let mut st = PolicyState::default();
    // Four pods blocked at once: all four freed in the same minute, not one per cooldown.
    let d = decide(&c, &mut st, &inputs(T0, (0..4).map(sb).collect()));
    assert_eq!(
        d.iter()
            .filter(|d| d.action == Remedy::RemoveSandboxes && d.verdict == Verdict::Go)
            .count(),
        4,
        "{d:?}"
    );
    // The same name blocked again at once: its own cooldown holds it.
    st.episodes.clear();
    let d = decide(&c, &mut st, &inputs(T0 + 60, vec![sb(0)]));
    assert_eq!(d[0].verdict, Verdict::Held(Hold::Cooldown), "{d:?}");
    // Two more names: one fits under the node-wide cap of 5, the next does not.
    let d = decide(&c, &mut st, &inputs(T0 + 120, vec![sb(7), sb(8)]));
    let v: Vec<_> = d
        .iter()
        .filter(|d| d.action == Remedy::RemoveSandboxes)
        .map(|d| d.verdict)
        .collect();
    assert_eq!(v, vec![Verdict::Go, Verdict::Held(Hold::Cap)], "{d:?}");
}

// ---- properties over random histories ----

type Decided = (Option<ConditionKind>, Remedy, Verdict, usize);

/// Decisions without their reasons (which quote ages and times).
fn strip(v: Vec<Vec<Decision>>) -> Vec<Vec<Decided>> {
    v.into_iter()
        .map(|ds| {
            ds.into_iter()
                .map(|d| (d.kind, d.action, d.verdict, d.step))
                .collect()
        })
        .collect()
}

#[derive(Clone, Debug)]
struct TickSpec {
    dt: u64,
    rcu: bool,
    hard: bool,
    mem: bool,
    paused: bool,
    clock_sane: bool,
    lease: u8,
    /// Bits: NetworkMountHung on /mnt/a, /mnt/b.
    mounts: u8,
    /// Bits: SandboxNameReserved on three sandbox names.
    sandboxes: u8,
}

const MOUNTS: [&str; 2] = ["/mnt/a", "/mnt/b"];
const SANDBOXES: [&str; 3] = ["a-0_ns_u1_1", "b-0_ns_u2_1", "c-0_ns_u3_1"];

fn tick() -> impl Strategy<Value = TickSpec> {
    (
        0u64..900,
        any::<bool>(),
        prop::bool::weighted(0.4),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
        0u8..3,
        0u8..4,
        0u8..8,
    )
        .prop_map(
            |(dt, rcu, hard, mem, paused, clock_sane, lease, mounts, sandboxes)| TickSpec {
                dt,
                rcu,
                hard,
                mem,
                paused,
                clock_sane,
                lease,
                mounts,
                sandboxes,
            },
        )
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
            // Per-subject actions on, with caps small enough to be reached.
            c.rules.get_mut(&Remedy::Unmount).unwrap().enabled = true;
            let sb = c.rules.get_mut(&Remedy::RemoveSandboxes).unwrap();
            sb.max_per_day = 4;
            sb.max_per_subject = 2;
            let st = PolicyState {
                recovered_at: recovered.map(|ago| at(T0 - ago)),
                ..Default::default()
            };
            (c, st, boot_offset, ticks)
        })
}

thread_local! {
    /// What the other Nodes say during [`replay`] (set by the cluster properties).
    static CLUSTER: std::cell::RefCell<Option<super::engine::ClusterView>> = const { std::cell::RefCell::new(None) };
}

fn replay(
    c: &PolicyConfig,
    st: &mut PolicyState,
    boot_offset: u64,
    ticks: &[TickSpec],
    check: impl FnMut(&PolicyState, &Inputs, &[Decision], &PolicyState),
) {
    replay_stepped(c, st, boot_offset, ticks, &[], check)
}

/// [`replay`] with the wall clock stepped by `steps[i]` seconds (cumulatively) before
/// tick `i`, as NTP does; node time runs on undisturbed.
fn replay_stepped(
    c: &PolicyConfig,
    st: &mut PolicyState,
    boot_offset: u64,
    ticks: &[TickSpec],
    steps: &[i64],
    mut check: impl FnMut(&PolicyState, &Inputs, &[Decision], &PolicyState),
) {
    let mut now = T0;
    let mut wall_step: i64 = 0;
    let mut since = std::collections::BTreeMap::new();
    for (i, tk) in ticks.iter().enumerate() {
        now += tk.dt;
        wall_step += steps.get(i).copied().unwrap_or(0);
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
        for (i, m) in MOUNTS.iter().enumerate() {
            if tk.mounts & (1 << i) != 0 {
                held.push(((ConditionKind::NetworkMountHung, m.to_string()), now));
            }
        }
        for (i, n) in SANDBOXES.iter().enumerate() {
            if tk.sandboxes & (1 << i) != 0 {
                held.push(((ConditionKind::SandboxNameReserved, n.to_string()), now));
            }
        }
        let inp = Inputs {
            now: At::new(now.saturating_add_signed(wall_step), at(now).node),
            since_boot: Duration::from_secs(now - T0 + boot_offset),
            held: held.into_iter().map(|(k, _)| k).collect(),
            paused: tk.paused,
            clock_sane: tk.clock_sane,
            lease: [Lease::Held, Lease::Pending, Lease::NotNeeded][tk.lease as usize],
            restarting: false,
            cluster: CLUSTER.with(|c| c.borrow().clone()),
            servers: Default::default(),
        };
        let before = st.clone();
        let ds = decide(c, st, &inp);
        check(&before, &inp, &ds, st);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The loop sleeps until `wake::next_wake` (issue 24): sleeping that long must never
    /// miss a decision. With the same conditions held, any moment before the wake gives
    /// no decision at all, and "nothing owed" stays true a day later.
    #[test]
    fn nothing_is_decided_before_the_next_wake((c, mut st, boot, ticks) in setup(), frac in 0.0f64..1.0) {
        replay(&c, &mut st, boot, &ticks, |_, inp, _, after| {
            let wait = super::wake::next_wake(&c, after, inp.now);
            let probes: Vec<u64> = match wait {
                Some(w) if w.is_zero() => return,
                Some(w) => {
                    let w = w.as_secs();
                    vec![0, ((w as f64) * frac) as u64 % w.max(1), w.saturating_sub(1)]
                }
                None => vec![3600, 86_400],
            };
            for d in probes {
                let mut later = inp.clone();
                later.now = At::new(inp.now.unix + d, inp.now.node + d);
                later.since_boot = inp.since_boot + Duration::from_secs(d);
                let mut st2 = after.clone();
                let ds = decide(&c, &mut st2, &later);
                assert!(ds.is_empty(), "wake {wait:?}, {d} s later: {ds:?}\n{after:?}");
            }
        });
    }

    #[test]
    fn never_a_reboot_while_budget_spent_in_grace_paused_dry_run_or_observing((c, mut st, boot, ticks) in setup()) {
        replay(&c, &mut st, boot, &ticks, |before, inp, ds, _| {
            for d in ds.iter().filter(|d| d.action == Remedy::Reboot && d.verdict == Verdict::Go) {
                assert_eq!(c.mode, RunMode::Act, "{d:?}");
                assert!(!c.rules[&Remedy::Reboot].dry_run, "{d:?}");
                assert!(!inp.paused, "{d:?}");
                assert!(inp.since_boot >= c.boot_grace, "{d:?}");
                assert!(inp.clock_sane, "{d:?}");
                assert!(before.reboot_budget_remaining(&c, inp.now) > 0, "budget spent: {d:?}");
                assert!(inp.lease != Lease::Pending, "{d:?}");
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
            let held: Vec<EpisodeKey> = inp.held.iter().map(episode_key).collect();
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
        let inp = Inputs { now: at(T0 + 10_000_000), since_boot: Duration::from_secs(10_000_000), held: vec![], paused: false, clock_sane: true, lease: Lease::Held, restarting: false, cluster: None, servers: Default::default() };
        decide(&c, &mut st, &inp);
        prop_assert!(st.episodes.is_empty());
    }

    /// NTP stepping the wall clock forward (hours or years) changes no decision: ages,
    /// cooldowns and the reboot interval run on node time, and a rolling-day window stays
    /// open while node time says so. (A +2 h step once ran restart_k3s and reboot 4 s
    /// apart.)
    #[test]
    fn forward_wall_clock_steps_never_change_a_decision(
        (c, st, boot, ticks) in setup(),
        steps in prop::collection::vec(prop_oneof![
            6 => Just(0i64),
            1 => Just(2 * 3600i64),
            1 => 0i64..400_000_000,
        ], 60),
    ) {
        let (mut a, mut b) = (st.clone(), st);
        let (mut da, mut db) = (Vec::new(), Vec::new());
        replay(&c, &mut a, boot, &ticks, |_, _, ds, _| da.push(ds.to_vec()));
        replay_stepped(&c, &mut b, boot, &ticks, &steps, |_, _, ds, _| db.push(ds.to_vec()));
        prop_assert_eq!(strip(da), strip(db));
    }

    /// Whatever the wall clock does (a -1 day step once froze the ladder), no step goes
    /// ahead before its delay, no action before its cooldown, no reboot before the
    /// minimum interval, all measured in node time.
    #[test]
    fn no_wall_clock_step_brings_an_action_forward(
        (c, mut st, boot, ticks) in setup(),
        steps in prop::collection::vec(prop_oneof![
            4 => Just(0i64),
            1 => Just(2 * 3600i64),
            1 => Just(-86_400i64),
            1 => -400_000_000i64..400_000_000,
        ], 60),
    ) {
        let mut last_go: std::collections::BTreeMap<(Remedy, String), u64> = Default::default();
        replay_stepped(&c, &mut st, boot, &ticks, &steps, |before, inp, ds, after| {
            // Uncordon undoes nodemedic's own cordon: restorative, not a rail-checked step.
            // A shared cordon adds nothing: not a new run.
            for d in ds.iter().filter(|d| d.verdict == Verdict::Go && d.kind.is_some() && !d.shared && d.action != Remedy::NeedsHuman) {
                let node = inp.now.node;
                if let Some(k) = d.kind {
                    let ek = EpisodeKey::new(k, d.subject.clone());
                    let started = before.episodes.get(&ek).or(after.episodes.get(&ek)).unwrap().started;
                    let delay = c.ladders.for_kind(k)[d.step].after.as_secs();
                    assert!(started.age(inp.now) >= delay, "{d:?} before its delay");
                }
                // Per-subject actions cool down per subject.
                let what = (d.action, if d.action.per_subject() { d.subject.clone() } else { String::new() });
                if let Some(prev) = last_go.get(&what) {
                    assert!(node - prev >= c.cooldown.as_secs(), "{d:?} within its cooldown");
                    if d.action == Remedy::Reboot {
                        assert!(node - prev >= c.reboot_min_interval.as_secs(), "{d:?}");
                    }
                }
                last_go.insert(what, node);
            }
        });
    }

    /// nodemedic's cordon comes off only when no held problem wants it: none whose cordon
    /// step has come due (in act mode, with the cordon live). A second problem shares the
    /// cordon instead of waiting out its cooldown. (MemoryPressure cordoned, a hung mount's
    /// cordon was held back by the cooldown, MemoryPressure cleared: uncordoned under the
    /// hung mount.)
    #[test]
    fn never_an_uncordon_while_a_held_problem_wants_the_cordon((c, mut st, boot, ticks) in setup()) {
        let cordon = c.rules[&Remedy::Cordon];
        replay(&c, &mut st, boot, &ticks, |_, inp, ds, after| {
            if !ds.iter().any(|d| d.action == Remedy::Uncordon) {
                return;
            }
            assert!(!after.cordoned_by_us);
            if c.mode != RunMode::Act || !cordon.enabled || cordon.dry_run {
                return;
            }
            for (k, e) in &after.episodes {
                let age = Duration::from_secs(e.started.age(inp.now));
                let due = c.ladders.for_kind(k.kind).iter().any(|s| s.action == Remedy::Cordon && age >= s.after);
                assert!(!due, "uncordoned while {k} wants the cordon: {ds:?}");
            }
        });
    }

    /// Per-subject actions: each subject cools down and is capped on its own, and the
    /// node-wide cap bounds them all.
    #[test]
    fn per_subject_actions_keep_each_subject_s_cooldown_and_cap_and_the_node_cap((c, mut st, boot, ticks) in setup()) {
        let mut runs: Vec<(Remedy, String, u64)> = Vec::new();
        replay(&c, &mut st, boot, &ticks, |_, inp, ds, _| {
            for d in ds.iter().filter(|d| d.verdict == Verdict::Go && d.action.per_subject()) {
                let node = inp.now.node;
                let rule = c.rules[&d.action];
                let same: Vec<u64> = runs.iter().filter(|(a, s, _)| *a == d.action && *s == d.subject).map(|r| r.2).collect();
                if let Some(prev) = same.last() {
                    assert!(node - prev >= c.cooldown.as_secs(), "{d:?} within its subject's cooldown");
                }
                let day = |t: &u64| node - t < 86_400;
                assert!((same.iter().filter(|t| day(t)).count() as u32) < rule.max_per_subject, "{d:?} over its subject cap");
                let all = runs.iter().filter(|(a, _, t)| *a == d.action && day(t)).count() as u32;
                assert!(all < rule.max_per_day, "{d:?} over the node-wide cap");
                runs.push((d.action, d.subject.clone(), node));
            }
        });
    }

    /// A reboot waiting for the cluster lease spends nothing (no budget, no ladder step),
    /// asks for the lease, and goes ahead only once the lease is held or not needed.
    #[test]
    fn a_reboot_waiting_for_the_lease_spends_nothing_and_asks_for_it((c, mut st, boot, ticks) in setup()) {
        replay(&c, &mut st, boot, &ticks, |before, inp, ds, after| {
            for d in ds.iter().filter(|d| d.action == Remedy::Reboot) {
                if d.verdict == Verdict::Go {
                    assert!(matches!(inp.lease, Lease::Held | Lease::NotNeeded), "{d:?}");
                }
                if d.verdict == Verdict::Held(Hold::LeaseUnavailable) {
                    assert_eq!(inp.lease, Lease::Pending);
                    assert!(after.lease_wanted, "the lease is asked for");
                }
            }
            if inp.lease == Lease::Pending {
                assert_eq!(before.history.get(&Remedy::Reboot), after.history.get(&Remedy::Reboot));
                assert_eq!(before.last_reboot, after.last_reboot);
            }
            for (k, e) in &after.episodes {
                if e.last_hold == Some(Hold::LeaseUnavailable) && inp.lease == Lease::Pending && !e.needs_human {
                    // Already waiting at the last tick: the wait spent no step. (Steps
                    // skipped on the way to the reboot in the same tick are not the wait.)
                    if let Some(b) = before.episodes.get(k).filter(|b| b.last_hold == Some(Hold::LeaseUnavailable)) {
                        assert_eq!(b.next_step, e.next_step, "{k} moved on while waiting for the lease");
                    }
                    assert!(after.lease_wanted);
                }
            }
        });
    }

    /// A reboot that did not happen (could not start, or ended with the node up) makes its
    /// episode need a human at once, and from then on nothing but a NeedsHuman is decided
    /// for it while it stays held.
    #[test]
    fn a_reboot_that_did_not_happen_needs_a_human_and_nothing_more_is_tried_for_it(
        (c, mut st, boot, ticks) in setup(),
        split in 0usize..60,
    ) {
        let split = split.min(ticks.len());
        replay(&c, &mut st, boot, &ticks[..split], |_, _, _, _| {});
        let keys: Vec<_> = st.episodes.keys().cloned().collect();
        for k in &keys {
            let was = st.episodes[k].needs_human;
            let d = super::engine::reboot_did_not_happen(&c, &mut st, k, "test");
            prop_assert!(st.episodes[k].needs_human);
            prop_assert_eq!(d.as_ref().map(|d| d.action), (!was).then_some(Remedy::NeedsHuman));
        }
        let mut alive: std::collections::BTreeSet<_> = keys.into_iter().collect();
        replay(&c, &mut st, boot, &ticks[split..], |_, _, ds, after| {
            alive.retain(|k| after.episodes.contains_key(k));
            for k in &alive {
                assert!(after.episodes[k].needs_human, "{k} forgot it needs a human");
                for d in ds.iter().filter(|d| d.kind == Some(k.kind) && d.subject == k.subject) {
                    assert!(d.verdict != Verdict::Go, "{d:?}");
                }
            }
        });
    }

    /// Proof and memory of repairs (issue 17, point 9): a failure is remembered only when
    /// the problem starts afresh within the verify window of clearing after that repair;
    /// the memory never shrinks; an action remembered `max_ineffective_repairs` times for
    /// a problem never goes ahead for it again, and a ladder that runs out by skipping it
    /// asks a human at once.
    #[test]
    fn a_repair_that_did_not_help_often_enough_is_never_run_again_for_that_problem(
        (mut c, mut st, boot, ticks) in setup(),
        max in 1u32..3,
    ) {
        use super::repairs::{failures, is_repair};
        c.max_ineffective_repairs = max;
        let mut remembered = 0;
        replay(&c, &mut st, boot, &ticks, |before, _inp, ds, after| {
            for d in ds.iter().filter(|d| d.verdict == Verdict::Go && is_repair(d.action)) {
                let k = d.kind.unwrap();
                assert!(failures(before, k, d.action) < max, "{d:?} ran though it did not help {max} times");
            }
            for m in &before.ineffective {
                let k = ConditionKind::from_name(&m.problem).unwrap();
                let a = Remedy::from_name(&m.action).unwrap();
                assert!(failures(after, k, a) >= m.failures, "memory shrank");
            }
            for m in &after.ineffective {
                let k = ConditionKind::from_name(&m.problem).unwrap();
                let a = Remedy::from_name(&m.action).unwrap();
                if failures(after, k, a) > failures(before, k, a) {
                    remembered += 1;
                    assert!(
                        after.episodes.iter().any(|(ek, _)| ek.kind == k && !before.episodes.contains_key(ek)),
                        "a failure of {a} for {k} remembered without the problem starting afresh"
                    );
                }
            }
            for d in ds.iter().filter(|d| d.verdict == Verdict::Held(Hold::Ineffective)) {
                let k = d.kind.unwrap();
                assert!(failures(after, k, d.action) >= max);
                let ladder = c.ladders.for_kind(k);
                if d.step + 1 == ladder.len() {
                    assert!(
                        ds.iter().any(|n| n.action == Remedy::NeedsHuman && n.kind == Some(k) && n.subject == d.subject),
                        "the ladder ran out by skipping {d:?}: NeedsHuman at once"
                    );
                }
            }
        });
        let _ = remembered;
    }

    /// Issue 17, point 3: a daemon restart within the boot (a package upgrade) changes
    /// nothing while the detectors re-raise what they held: no episode ends, no ladder
    /// resets, no uncordon, whatever the state before and whatever is (not yet) held.
    #[test]
    fn a_daemon_restart_within_the_boot_ends_no_episode_and_never_uncordons(
        (c, mut st, boot, ticks) in setup(),
        split in 0usize..60,
        reheld in prop::collection::vec(any::<bool>(), 6),
    ) {
        let split = split.min(ticks.len());
        replay(&c, &mut st, boot, &ticks[..split], |_, _, _, _| {});
        let before = st.clone();
        for (i, again) in reheld.iter().enumerate() {
            let t = T0 + 100_000 + 10 * i as u64;
            // Some problems are re-raised at once, the others not yet.
            let held = if *again {
                before.episodes.keys().take(1).map(|k| (k.kind, k.subject.clone())).collect()
            } else {
                vec![]
            };
            let inp = Inputs {
                now: at(t),
                since_boot: Duration::from_secs(t - T0 + boot),
                held,
                paused: false,
                clock_sane: true,
                lease: Lease::Held,
                restarting: true,
                cluster: None,
                servers: Default::default(),
            };
            let ds = decide(&c, &mut st, &inp);
            prop_assert!(ds.iter().all(|d| d.action != Remedy::Uncordon), "{ds:?}");
            prop_assert!(st.cordoned_by_us || !before.cordoned_by_us, "our cordon dropped");
            for (k, e) in &before.episodes {
                let now = st.episodes.get(k);
                prop_assert!(now.is_some(), "{} ended during the restart grace", k);
                prop_assert!(now.unwrap().next_step >= e.next_step, "{} ladder reset", k);
            }
        }
    }

    /// Issue 17, point 8: never a cordon or drain that would leave fewer schedulable
    /// Nodes than the minimum, and never a disruptive action for a problem held on at
    /// least half of the Nodes; both are transient holds (nothing spent). A cluster too small
    /// for a cordon ever to be allowed skips it instead.
    #[test]
    fn no_cordon_below_the_schedulable_minimum_and_no_disruption_for_a_correlated_problem(
        (mut c, mut st, boot, ticks) in setup(),
        nodes in 1u32..6,
        cordoned in 0u32..6,
        this_schedulable in any::<bool>(),
        min in 0u32..3,
        elsewhere in prop::collection::vec(0u32..6, 3),
    ) {
        use super::cluster::{below_min_schedulable, correlated, held_when_correlated};
        c.min_schedulable_nodes = min;
        let schedulable = nodes.saturating_sub(cordoned).max(u32::from(this_schedulable));
        let kinds = [ConditionKind::KernelRcuStall, ConditionKind::KernelHardLockup, ConditionKind::NetworkMountHung];
        let view = super::engine::ClusterView {
            nodes,
            schedulable,
            this_schedulable,
            held_elsewhere: kinds.iter().zip(&elsewhere).map(|(k, n)| (*k, (*n).min(nodes.saturating_sub(1)))).collect(),
        };
        CLUSTER.with(|x| *x.borrow_mut() = Some(view.clone()));
        replay(&c, &mut st, boot, &ticks, |before, _inp, ds, after| {
            for d in ds.iter().filter(|d| d.verdict == Verdict::Go && !d.shared) {
                let k = d.kind.unwrap_or(ConditionKind::NeedsHuman);
                assert!(!below_min_schedulable(&c, &view, d.action), "{d:?} with {view:?}");
                assert!(!(held_when_correlated(d.action) && correlated(&view, k)), "{d:?} with {view:?}");
            }
            // Both are transient: the episode waits at that step (a cordon skipped as
            // too_few_nodes lets the ladder go on; checked above: never a Go).
            for d in ds.iter().filter(|d| matches!(d.verdict, Verdict::Held(Hold::MinSchedulable | Hold::Correlated))) {
                let k = super::super::model::EpisodeKey::new(d.kind.unwrap(), &d.subject);
                if let (Some(b), Some(a)) = (before.episodes.get(&k), after.episodes.get(&k)) {
                    assert!(a.next_step <= b.next_step + 1, "{d:?}");
                }
                if let Some(a) = after.episodes.get(&k) {
                    assert!(!a.needs_human || before.episodes.get(&k).is_some_and(|b| b.needs_human), "a transient hold asked a human: {d:?}");
                }
            }
        });
        CLUSTER.with(|x| *x.borrow_mut() = None);
    }
}

#[test]
fn while_the_root_is_read_only_k3s_is_never_restarted_and_the_node_reboots_once_per_episode() {
    let c = cfg(RunMode::Act);
    let mut st = PolicyState::default();
    let ro = |since| ((ConditionKind::ReadOnlyFilesystem, "/".to_string()), since);
    let runtime = ((ConditionKind::ContainerRuntimeDown, String::new()), T0);
    // Boot 1: the root goes read-only and containerd stops answering.
    let ds = run(&c, &mut st, 20 * MIN, 30, |t| {
        inputs(t, vec![ro(T0), runtime.clone()])
    });
    assert_eq!(
        gos(&ds),
        vec![(0, Remedy::Cordon), (10 * MIN, Remedy::Reboot)],
        "{ds:?}"
    );
    assert!(
        ds.iter().any(|(_, d)| d.action == Remedy::RestartK3s
            && d.verdict == Verdict::Held(Hold::RootReadOnly)),
        "{ds:?}"
    );
    // Boot 2, past the reboot interval: the root is read-only again and the kernel hard
    // locks up. Its ladder's reboot is held back (this episode had its reboot) and the
    // engine asks a human instead of rebooting in a loop.
    let t2 = T0 + 2 * 3600;
    let lockup = ((ConditionKind::KernelHardLockup, String::new()), t2);
    let mut out = Vec::new();
    for t in (t2..t2 + 10 * MIN).step_by(30) {
        out.extend(decide(
            &c,
            &mut st,
            &inputs(t, vec![ro(t2), lockup.clone()]),
        ));
    }
    assert!(
        !out.iter()
            .any(|d| d.action == Remedy::Reboot && d.verdict == Verdict::Go),
        "{out:?}"
    );
    assert!(
        out.iter().any(|d| d.action == Remedy::Reboot
            && d.verdict == Verdict::Held(Hold::RootReadOnlyRebooted)),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|d| d.action == Remedy::NeedsHuman && d.verdict == Verdict::Go),
        "{out:?}"
    );
}

/// On a one-Node cluster a cordon helps nobody and can never be allowed: the
/// `too_few_nodes` rail skips it and the steps behind it still run (the transient
/// `min_schedulable` hold there would block the whole ladder for good).
#[test]
fn on_a_one_node_cluster_the_cordon_is_skipped_and_the_ladder_goes_on() {
    let mut c = cfg(RunMode::Act);
    let step = |s: &str| crate::config::ladder::Step::parse(s).unwrap();
    c.ladders.kernel_rcu_stall = vec![step("cordon@0s"), step("restart_k3s@0s")];
    let mut st = PolicyState::default();
    let inp = Inputs {
        now: at(T0 + 100_000),
        since_boot: Duration::from_secs(100_000),
        held: vec![(ConditionKind::KernelRcuStall, String::new())],
        paused: false,
        clock_sane: true,
        lease: Lease::Held,
        restarting: false,
        cluster: Some(ClusterView {
            nodes: 1,
            schedulable: 1,
            this_schedulable: true,
            held_elsewhere: Default::default(),
        }),
        servers: Default::default(),
    };
    let got: Vec<(Remedy, Verdict)> = decide(&c, &mut st, &inp)
        .iter()
        .map(|d| (d.action, d.verdict))
        .collect();
    assert_eq!(
        got,
        vec![
            (Remedy::Cordon, Verdict::Held(Hold::TooFewNodes)),
            (Remedy::RestartK3s, Verdict::Go)
        ]
    );
}
