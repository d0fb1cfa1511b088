//! The policy loop with recording fakes, for the k3s conditions: `reset_failed_k3s` on a
//! failed unit (once per failure, capped per day, held by a pause, never for a unit that
//! is no longer failed), and `restart_k3s` for a wedged k3s.

use super::tests::{MIN, bed, config};
use crate::audit::AuditOutcome;
use crate::config::RunMode;
use crate::model::{ConditionKind, Remedy};
use crate::remedy::policy_loop::Carried;
use crate::remedy::services::ServiceCall;

fn actions(c: &[Carried]) -> Vec<(Remedy, AuditOutcome)> {
    c.iter().map(|c| (c.decision.action, c.outcome)).collect()
}

fn starts(calls: &[ServiceCall]) -> usize {
    calls
        .iter()
        .filter(|c| **c == ServiceCall::ResetFailedStart("k3s.service".into()))
        .count()
}

#[test]
fn a_failed_k3s_gets_one_reset_failed_and_start_per_failure_and_at_most_three_a_day() {
    // The daily cap alone: the memory of repairs that did not help (which would give up
    // after two failures back within `repair_verify_window`) is off here.
    let mut b = bed(&config(RunMode::Act, |c| {
        c.policy.max_ineffective_repairs = 0
    }));
    b.services.set_failed(true);
    for failure in 1..=3 {
        b.hold(ConditionKind::K3sUnitFailed, "");
        let done = b.run_for(3);
        assert_eq!(
            actions(&done),
            vec![(Remedy::ResetFailedK3s, AuditOutcome::Done)],
            "failure {failure}"
        );
        assert_eq!(starts(&b.services.calls()), failure);
        // It started, then failed again after the cooldown.
        b.clear();
        b.run_for(15);
    }
    b.hold(ConditionKind::K3sUnitFailed, "");
    let done = b.run_for(3);
    assert_eq!(
        actions(&done),
        vec![
            (Remedy::ResetFailedK3s, AuditOutcome::Suppressed),
            (Remedy::NeedsHuman, AuditOutcome::Done)
        ],
        "the daily cap (3) is spent"
    );
    assert_eq!(starts(&b.services.calls()), 3);
    let audit = b.audit();
    let last = audit
        .iter()
        .rev()
        .find(|e| e.action == "reset_failed_k3s")
        .unwrap();
    assert!(last.reason.contains("held back: cap"), "{}", last.reason);
}

#[test]
fn a_unit_no_longer_failed_when_the_action_runs_is_not_started() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    // The detector saw it failed; an operator stopped it (inactive) before the tick.
    b.services.set_failed(false);
    b.hold(ConditionKind::K3sUnitFailed, "");
    let done = b.tick();
    assert_eq!(
        actions(&done),
        vec![(Remedy::ResetFailedK3s, AuditOutcome::Failed)]
    );
    assert!(
        done[0].detail.contains("no longer failed"),
        "{}",
        done[0].detail
    );
    assert_eq!(starts(&b.services.calls()), 0);
}

#[test]
fn the_pause_annotation_and_the_pause_file_hold_the_start_of_a_failed_k3s() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.services.set_failed(true);
    b.cluster.update_readings(|r| r.paused = true);
    b.hold(ConditionKind::K3sUnitFailed, "");
    let done = b.run_for(5);
    assert_eq!(
        actions(&done),
        vec![(Remedy::ResetFailedK3s, AuditOutcome::Suppressed)]
    );
    assert!(done[0].detail.contains("paused"), "{}", done[0].detail);
    // The annotation goes, the file comes: still held.
    b.cluster.update_readings(|r| r.paused = false);
    std::fs::write(b.dir.path().join("pause"), "").unwrap();
    assert!(b.run_for(5).is_empty(), "a hold is recorded once");
    assert_eq!(starts(&b.services.calls()), 0);
    std::fs::remove_file(b.dir.path().join("pause")).unwrap();
    b.clock.advance(MIN);
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::ResetFailedK3s, AuditOutcome::Done)]
    );
    assert_eq!(starts(&b.services.calls()), 1);
}

#[test]
fn dry_run_and_observe_mode_record_the_start_without_making_it() {
    let mut b = bed(&config(RunMode::Act, |c| {
        c.actions.reset_failed_k3s.dry_run = true;
    }));
    b.services.set_failed(true);
    b.hold(ConditionKind::K3sUnitFailed, "");
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::ResetFailedK3s, AuditOutcome::DryRun)]
    );
    let mut o = bed(&config(RunMode::Observe, |_| {}));
    o.services.set_failed(true);
    o.hold(ConditionKind::K3sUnitFailed, "");
    assert_eq!(
        actions(&o.tick()),
        vec![(Remedy::ResetFailedK3s, AuditOutcome::Suppressed)]
    );
    assert_eq!(starts(&b.services.calls()) + starts(&o.services.calls()), 0);
}

#[test]
fn a_wedged_k3s_is_restarted_two_minutes_into_k3s_unresponsive_by_default() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.hold(ConditionKind::K3sUnresponsive, "");
    assert!(b.run_for(1).is_empty(), "not before 2 min");
    let done = b.run_for(1);
    assert_eq!(
        actions(&done),
        vec![(Remedy::RestartK3s, AuditOutcome::Done)]
    );
    assert!(
        b.services
            .calls()
            .contains(&ServiceCall::Restart("k3s.service".into()))
    );
}
