//! The loop under wall-clock steps (issue 17, point 4): a Pi without RTC boots hours
//! behind and NTP steps its clock mid-episode. Ages, cooldowns and the reboot interval run
//! on node time (monotonic within a boot); only the rolling 24 h budget looks at the wall.

use std::sync::Arc;
use std::time::Duration;

use super::tests::*;
use crate::audit::AuditOutcome;
use crate::config::RunMode;
use crate::edge::{Clock, FakeClock};
use crate::model::{ConditionKind, Remedy};

const H: u64 = 3600;

/// Ticks every minute for `mins` minutes; returns (minutes since the first tick, action)
/// of each action that went ahead, measured on the monotonic clock.
fn gos_by_minute(b: &mut Bed, mins: u64, jump: impl Fn(u64, &FakeClock)) -> Vec<(u64, Remedy)> {
    let t0 = b.clock.monotonic();
    let mut out = Vec::new();
    for m in 0..=mins {
        jump(m, &b.clock);
        for c in b.tick() {
            if c.outcome == AuditOutcome::Done {
                out.push(((b.clock.monotonic() - t0).as_secs() / 60, c.decision.action));
            }
        }
        b.clock.advance(MIN);
    }
    out
}

#[test]
fn a_forward_wall_clock_step_mid_episode_does_not_compress_the_ladder() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.hold(ConditionKind::KernelRcuStall, "");
    // NTP steps the clock 2 h forward 3 minutes into the episode.
    let got = gos_by_minute(&mut b, 40, |m, c| {
        if m == 3 {
            c.set_wall(c.unix_secs() + 2 * H);
        }
    });
    assert_eq!(
        got,
        vec![
            (0, Remedy::Cordon),
            (15, Remedy::RestartK3s),
            (30, Remedy::Reboot)
        ]
    );
}

#[test]
fn a_backward_wall_clock_step_mid_episode_does_not_freeze_the_ladder() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.hold(ConditionKind::KernelRcuStall, "");
    let got = gos_by_minute(&mut b, 20, |m, c| {
        if m == 3 {
            c.set_wall(c.unix_secs() - 24 * H);
        }
    });
    assert_eq!(got, vec![(0, Remedy::Cordon), (15, Remedy::RestartK3s)]);
}

#[test]
fn the_last_seen_time_is_persisted_every_few_minutes_while_nothing_happens() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.run_for(12);
    let text = std::fs::read_to_string(b.dir.path().join(crate::state::STATE_FILE))
        .unwrap_or_else(|e| panic!("no state file after 12 idle minutes: {e}"));
    let st: serde_json::Value = serde_json::from_str(&text).unwrap();
    let seen = st["last_seen_unix"].as_u64().unwrap();
    let now = b.clock.unix_secs();
    assert!(
        now - seen <= 5 * 60,
        "last_seen_unix {seen} is {} s behind the clock after 12 idle minutes",
        now - seen
    );
}

#[test]
fn the_corrupt_state_rail_survives_a_forward_ntp_step() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(crate::state::STATE_FILE),
        b"{\"schema\":1,\"reb",
    )
    .unwrap();
    let cfg = config(RunMode::Act, |c| {
        c.policy.ladders.kernel_hard_lockup =
            vec![crate::config::ladder::Step::parse("reboot@0s").unwrap()];
    });
    let clock = Arc::new(FakeClock::new(T0, Duration::from_secs(3600)));
    let mut b = bed_in(dir, &cfg, "boot-a", clock);
    b.run_for(60);
    // An hour after the corrupt state was replaced, NTP steps the clock a day forward;
    // then the board locks up. The lost budget still counts as spent.
    b.clock.set_wall(b.clock.unix_secs() + 25 * H);
    b.hold(ConditionKind::KernelHardLockup, "");
    let first = b.tick();
    assert_eq!(first[0].decision.action, Remedy::Reboot);
    assert_eq!(first[0].outcome, AuditOutcome::Suppressed, "{first:?}");
    assert!(first[0].detail.contains("state_recovered"), "{first:?}");
    assert!(b.rebooter.inner.calls().is_empty());
}

#[test]
fn a_bogus_future_last_seen_is_rebased_once_the_kernel_says_the_clock_is_synchronised() {
    let dir = tempfile::tempdir().unwrap();
    // A previous run saw a clock ten years ahead (an RTC set wrong, a bad NTP answer).
    let bogus = T0 + 10 * 365 * 24 * H;
    std::fs::write(
        dir.path().join(crate::state::STATE_FILE),
        format!("{{\"schema\":1,\"last_seen_unix\":{bogus}}}"),
    )
    .unwrap();
    let cfg = config(RunMode::Act, |c| {
        c.policy.ladders.kernel_hard_lockup =
            vec![crate::config::ladder::Step::parse("reboot@0s").unwrap()];
    });
    let clock = Arc::new(FakeClock::new(T0, Duration::from_secs(3600)));
    let mut b = bed_in(dir, &cfg, "boot-a", clock);
    b.hold(ConditionKind::KernelHardLockup, "");
    let held = b.run_for(5);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].detail.contains("clock_unsynced"), "{held:?}");
    assert!(b.rebooter.inner.calls().is_empty());
    // NTP reaches the board: the kernel clears STA_UNSYNC.
    b.clock.set_synchronized(true);
    let done = b.tick();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(
        (done[0].decision.action, done[0].outcome),
        (Remedy::Reboot, AuditOutcome::Done)
    );
    let rebased: Vec<_> = b
        .audit()
        .into_iter()
        .filter(|e| e.action == "clock_rebased")
        .collect();
    assert_eq!(rebased.len(), 1, "audited once");
    assert!(rebased[0].reason.contains("re-based"), "{rebased:?}");
    let st: serde_json::Value = serde_json::from_slice(
        &std::fs::read(b.dir.path().join(crate::state::STATE_FILE)).unwrap(),
    )
    .unwrap();
    let seen = st["last_seen_unix"].as_u64().unwrap();
    assert!(seen < bogus && seen >= b.clock.unix_secs() - 60, "{seen}");
}
