//! Proof and memory of repairs through the loop (issue 17, point 9): a k3s restart that
//! did not help twice is skipped for that problem, NeedsHuman comes at once, and the
//! memory survives a reboot.

use std::sync::Arc;
use std::time::Duration;

use super::tests::*;
use crate::audit::AuditOutcome;
use crate::config::RunMode;
use crate::edge::{Clock, FakeClock};
use crate::model::{ConditionKind, Remedy};

fn restart_only(c: &mut crate::config::Config) {
    c.policy.ladders.container_runtime_down =
        vec![crate::config::ladder::Step::parse("restart_k3s@0s").unwrap()];
}

fn outcomes(c: &[super::policy_loop::Carried]) -> Vec<(Remedy, AuditOutcome)> {
    c.iter().map(|c| (c.decision.action, c.outcome)).collect()
}

/// The problem is held, the restart goes ahead, the problem clears; 11 minutes later.
fn episode(b: &mut Bed) -> Vec<(Remedy, AuditOutcome)> {
    b.hold(ConditionKind::ContainerRuntimeDown, "");
    let o = outcomes(&b.tick());
    b.clock.advance(MIN);
    b.clear();
    b.tick();
    b.clock.advance(MIN * 10);
    o
}

#[test]
fn a_k3s_restart_that_did_not_help_twice_is_skipped_and_needs_human_comes_at_once_even_after_a_reboot()
 {
    let cfg = config(RunMode::Act, restart_only);
    let mut b = bed(&cfg);
    let restarted = vec![(Remedy::RestartK3s, AuditOutcome::Done)];
    assert_eq!(episode(&mut b), restarted, "first: restart");
    assert_eq!(
        episode(&mut b),
        restarted,
        "back within 30 min: failure 1, restart again"
    );
    b.hold(ConditionKind::ContainerRuntimeDown, "");
    let o = outcomes(&b.tick());
    assert_eq!(
        o,
        vec![
            (Remedy::RestartK3s, AuditOutcome::Suppressed),
            (Remedy::NeedsHuman, AuditOutcome::Done)
        ],
        "back again: failure 2, the restart is skipped and a human asked at once"
    );
    let a = b.audit();
    assert!(
        a.iter()
            .any(|e| e.action == "restart_k3s" && e.reason.contains("held back: ineffective")),
        "{a:?}"
    );
    assert_eq!(
        b.services
            .calls()
            .iter()
            .filter(|c| matches!(c, crate::remedy::services::ServiceCall::Restart(_)))
            .count(),
        2
    );
    // It clears; a reboot later (new boot id, same state directory) it is back: still
    // remembered.
    b.clear();
    b.tick();
    let Bed { dir, clock, .. } = b;
    let clock2 = Arc::new(FakeClock::new(
        clock.unix_secs() + 3 * 3600,
        Duration::from_secs(3600),
    ));
    let mut b2 = bed_in(dir, &cfg, "boot-b", clock2);
    b2.hold(ConditionKind::ContainerRuntimeDown, "");
    let o = outcomes(&b2.tick());
    assert_eq!(
        o,
        vec![
            (Remedy::RestartK3s, AuditOutcome::Suppressed),
            (Remedy::NeedsHuman, AuditOutcome::Done)
        ],
        "the memory survives the reboot"
    );
    let state = std::fs::read_to_string(b2.dir.path().join("state.json")).unwrap();
    assert!(state.contains("\"ineffective\""), "{state}");
}

#[test]
fn a_repair_after_which_the_problem_stays_away_is_not_held_against_it() {
    let cfg = config(RunMode::Act, restart_only);
    let mut b = bed(&cfg);
    // Three: restart_k3s's daily cap.
    for _ in 0..3 {
        let o = episode(&mut b);
        let state = std::fs::read_to_string(b.dir.path().join("state.json")).unwrap();
        assert_eq!(o, vec![(Remedy::RestartK3s, AuditOutcome::Done)], "{state}");
        // Stays away beyond the verify window (30 min) before coming back.
        b.clock.advance(MIN * 31);
        b.tick();
    }
}

/// Issue 17, point 7: cordon wishes made while the API was down are not lost with a
/// daemon restart: the new process reconciles the Node with the persisted state.
#[test]
fn a_restart_reconciles_the_node_with_the_persisted_cordon() {
    let cfg = config(RunMode::Act, |_| {});
    let b = bed(&cfg);
    b.hold(ConditionKind::MemoryPressure, "");
    let mut b = b;
    let o = outcomes(&b.tick());
    assert_eq!(o, vec![(Remedy::Cordon, AuditOutcome::Done)]);
    // The API is down: the wish is queued in this process only, which now stops.
    let Bed { dir, clock, .. } = b;
    let b2 = bed_in(dir, &cfg, "boot-a", clock.clone());
    let w = b2.cluster.take();
    assert!(
        matches!(&w.cordon, Some(Some(r)) if r.contains("re-asserted at start")),
        "the cordon is asked for again at start: {:?}",
        w.cordon
    );
    // The problem cleared and the uncordon wish was lost with the process.
    b2.clear();
    let mut b2 = b2;
    // Past the restart grace (a restart keeps episodes while detectors re-raise).
    b2.clock.advance(MIN * 3);
    b2.tick();
    let Bed { dir, .. } = b2;
    let b3 = bed_in(dir, &cfg, "boot-a", clock);
    assert_eq!(
        b3.cluster.take().cordon,
        Some(None),
        "nodemedic's own cordon is asked off at start"
    );
}

/// Issue 17, point 7: `kubectl cordon` on a node nodemedic already cordoned changes
/// nothing on the Node, so it cannot be told apart; the documented way to keep a node
/// cordoned for maintenance is the pause annotation, and it keeps nodemedic's cordon on.
#[test]
fn the_pause_annotation_keeps_our_cordon_on_for_maintenance() {
    let cfg = config(RunMode::Act, |_| {});
    let mut b = bed(&cfg);
    b.cluster.update_readings(|r| r.api_up = Some(true));
    b.hold(ConditionKind::MemoryPressure, "");
    assert_eq!(
        outcomes(&b.tick()),
        vec![(Remedy::Cordon, AuditOutcome::Done)]
    );
    b.cluster.take();
    // The operator annotates the Node (kubectl annotate node pi1 nodemedic.io/pause=true),
    // then the problem clears.
    b.cluster.update_readings(|r| r.paused = true);
    b.clear();
    for _ in 0..10 {
        b.clock.advance(MIN);
        assert!(b.tick().is_empty());
    }
    assert_eq!(b.cluster.take().cordon, None, "no uncordon while paused");
    // Maintenance over: the annotation goes, nodemedic removes its own cordon.
    b.cluster.update_readings(|r| r.paused = false);
    assert_eq!(
        outcomes(&b.tick()),
        vec![(Remedy::Uncordon, AuditOutcome::Done)]
    );
    assert_eq!(b.cluster.take().cordon, Some(None));
}

/// Issue 17, point 7: drain cordons first, and the cordon is nodemedic's (removed when
/// the problem clears).
#[test]
fn a_drain_cordons_first_and_the_cordon_comes_off_when_the_problem_clears() {
    let cfg = config(RunMode::Act, |c| {
        c.actions.drain.enabled = true;
        c.policy.ladders.memory_pressure =
            vec![crate::config::ladder::Step::parse("drain@0s").unwrap()];
    });
    let mut b = bed(&cfg);
    b.hold(ConditionKind::MemoryPressure, "");
    assert_eq!(
        outcomes(&b.tick()),
        vec![(Remedy::Drain, AuditOutcome::Done)]
    );
    let w = b.cluster.take();
    assert!(
        matches!(w.cordon, Some(Some(_))),
        "cordon first: {:?}",
        w.cordon
    );
    assert!(w.drain);
    b.clear();
    assert_eq!(
        outcomes(&b.tick()),
        vec![(Remedy::Uncordon, AuditOutcome::Done)]
    );
}

/// Issue 17, point 3: a daemon restart mid-episode (same boot) whose detector has not
/// re-raised the problem yet neither uncordons nor resets the ladder.
#[test]
fn a_daemon_restart_mid_episode_keeps_the_cordon_and_the_ladder() {
    let cfg = config(RunMode::Act, |_| {});
    let mut b = bed(&cfg);
    b.hold(ConditionKind::MemoryPressure, "");
    assert_eq!(
        outcomes(&b.tick()),
        vec![(Remedy::Cordon, AuditOutcome::Done)]
    );
    b.clock.advance(MIN);
    b.tick();
    let Bed { dir, clock, .. } = b;
    // The new process: its memory detector needs ~40 s to raise MemoryPressure again.
    let mut b2 = bed_in(dir, &cfg, "boot-a", clock);
    for _ in 0..4 {
        assert!(b2.tick().is_empty(), "no uncordon during the restart grace");
        b2.clock.advance(Duration::from_secs(10));
    }
    b2.hold(ConditionKind::MemoryPressure, "");
    assert!(
        b2.tick().is_empty(),
        "the same episode goes on: no second cordon"
    );
    let state = std::fs::read_to_string(b2.dir.path().join("state.json")).unwrap();
    let st: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(st["policy"]["cordoned_by_us"], true, "{state}");
    assert_eq!(
        st["policy"]["episodes"]["MemoryPressure"]["next_step"], 1,
        "the ladder goes on where it was: {state}"
    );
}

/// A sandbox remover that takes 40 s (a CRI repair: 10 s per call), unless released.
struct SlowSandboxRemover(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl super::actuators::SandboxRemedy for SlowSandboxRemover {
    fn remove_conflicting(&self, name: &str) -> Result<String, crate::remedy::error::ActionError> {
        let _ = self.0.lock().unwrap().recv_timeout(Duration::from_secs(40));
        Ok(format!("removed {name}"))
    }
}

/// Issue 17, point 6: an actuator that takes 40 s is reported at `action_deadline`
/// while the loop keeps beating; it is not fatal, and the step is retried after the
/// cooldown.
#[test]
fn a_slow_actuator_is_reported_at_the_deadline_while_the_loop_keeps_beating() {
    let cfg = config(RunMode::Act, |c| {
        c.remedy.action_deadline = crate::config::ConfigDuration::millis(1500);
        c.policy.ladders.sandbox_name_reserved =
            vec![crate::config::ladder::Step::parse("remove_sandboxes@0s").unwrap()];
    });
    let mut b = bed(&cfg);
    let (release, rx) = std::sync::mpsc::channel();
    b.lp.act.sandboxes = Some(Arc::new(SlowSandboxRemover(std::sync::Mutex::new(rx))));
    b.hold(
        ConditionKind::SandboxNameReserved,
        "k8s_POD_web-0_default_1",
    );
    let beats = std::sync::atomic::AtomicUsize::new(0);
    let t = std::time::Instant::now();
    let done = b.lp.tick(&|| {
        beats.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the tick waited for the 40 s actuator: {took:?}"
    );
    assert_eq!(
        outcomes(&done),
        vec![(Remedy::RemoveSandboxes, AuditOutcome::Failed)]
    );
    assert!(
        done[0]
            .detail
            .contains("still running after remedy.action_deadline")
            && done[0].detail.contains("tried again after the cooldown"),
        "{}",
        done[0].detail
    );
    assert!(
        beats.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "the loop beat while it waited"
    );
    // The loop goes on; the slow call finishes in the background.
    release.send(()).unwrap();
    b.clock.advance(MIN);
    b.tick();
}
