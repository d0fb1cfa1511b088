//! The reboot and the cluster reboot lease (issue 17, point 1): a lease held elsewhere or
//! not yet granted is a transient hold that spends nothing and is retried; an identity
//! that cannot take the lease follows `kubernetes.reboot_lease`.

use std::time::Duration;

use super::tests::*;
use crate::audit::AuditOutcome;
use crate::config::RunMode;
use crate::kube::lease::LockWant;
use crate::kube::sync::LockStatus;
use crate::model::{ConditionKind, Remedy};

fn reboot_at_once(c: &mut crate::config::Config) {
    c.policy.ladders.kernel_rcu_stall =
        vec![crate::config::ladder::Step::parse("reboot@0s").unwrap()];
    c.remedy.lease_wait = crate::config::ConfigDuration::millis(200);
}

fn outcomes(c: &[super::policy_loop::Carried]) -> Vec<(Remedy, AuditOutcome, String)> {
    c.iter()
        .map(|c| (c.decision.action, c.outcome, c.detail.clone()))
        .collect()
}

#[test]
fn a_reboot_waiting_for_the_lease_spends_nothing_and_goes_once_the_lease_is_granted() {
    let mut b = bed(&config(RunMode::Act, reboot_at_once));
    b.cluster.update_readings(|r| r.api_up = Some(true));
    b.hold(ConditionKind::KernelRcuStall, "");
    // Not granted yet (the Kubernetes task has not taken it): wait, audited once.
    let mut all = Vec::new();
    for _ in 0..5 {
        all.extend(b.tick());
        b.clock.advance(Duration::from_secs(2));
    }
    let o = outcomes(&all);
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!((o[0].0, o[0].1), (Remedy::Reboot, AuditOutcome::Suppressed));
    assert!(o[0].2.contains("lease_unavailable"), "{o:?}");
    assert_eq!(
        b.cluster.take().lock,
        Some(LockWant::Hold),
        "the lease is asked for"
    );
    assert!(b.rebooter.inner.calls().is_empty());
    assert!(
        b.metrics().contains("nodemedic_reboot_budget_remaining 3"),
        "no budget spent while waiting"
    );
    // Another node holds it for a while: still waiting, nothing spent, nothing re-audited.
    b.cluster.update_readings(|r| {
        r.lock = Some(LockStatus::Waiting {
            holders: vec!["pi2".into()],
            retry_in: Duration::from_secs(60),
        })
    });
    b.clock.advance(MIN * 20);
    assert!(b.tick().is_empty());
    // Granted: the reboot goes ahead, holding the lease.
    b.cluster.update_readings(|r| {
        r.lock = Some(LockStatus::Held {
            slot: "nodemedic-reboot".into(),
        })
    });
    let o = outcomes(&b.tick());
    assert_eq!(
        (o[0].0, o[0].1),
        (Remedy::Reboot, AuditOutcome::Done),
        "{o:?}"
    );
    assert!(o[0].2.contains("holding the cluster reboot lease"), "{o:?}");
    assert_eq!(b.rebooter.inner.calls().len(), 1);
    assert!(b.metrics().contains("nodemedic_reboot_budget_remaining 2"));
}

#[test]
fn an_agent_whose_kubelet_identity_cannot_lease_reboots_without_it_when_permitted() {
    let mut b = bed(&config(RunMode::Act, reboot_at_once));
    b.cluster.update_readings(|r| {
        r.api_up = Some(true);
        r.lock = Some(LockStatus::NotPermitted);
    });
    b.hold(ConditionKind::KernelRcuStall, "");
    let o = outcomes(&b.tick());
    assert_eq!(
        (o[0].0, o[0].1),
        (Remedy::Reboot, AuditOutcome::Done),
        "{o:?}"
    );
    assert!(o[0].2.contains("may not take the cluster lease"), "{o:?}");
    assert!(o[0].2.contains("when_permitted"), "{o:?}");
    assert_eq!(b.rebooter.inner.calls().len(), 1);
}

#[test]
fn a_required_lease_holds_the_reboot_while_the_api_is_unreachable_and_a_cleared_problem_gives_it_back()
 {
    let mut b = bed(&config(RunMode::Act, |c| {
        reboot_at_once(c);
        c.kubernetes.reboot_lease = crate::config::kubernetes::RebootLease::Required;
    }));
    b.cluster.update_readings(|r| r.api_up = Some(false));
    b.hold(ConditionKind::KernelRcuStall, "");
    let o = outcomes(&b.tick());
    assert_eq!(
        (o[0].0, o[0].1),
        (Remedy::Reboot, AuditOutcome::Suppressed),
        "{o:?}"
    );
    assert!(o[0].2.contains("lease_unavailable"), "{o:?}");
    assert_eq!(b.cluster.take().lock, Some(LockWant::Hold));
    b.clock.advance(MIN * 30);
    assert!(b.tick().is_empty());
    assert!(b.rebooter.inner.calls().is_empty());
    // The problem clears: the lease wish is given back.
    b.clear();
    b.tick();
    assert_eq!(b.cluster.take().lock, Some(LockWant::Release));
}

#[test]
fn a_reboot_right_after_start_waits_for_the_first_pass_of_the_kubernetes_task() {
    let mut b = bed(&config(RunMode::Act, reboot_at_once));
    // Credentials found, no pass yet: whether the API answers is not known.
    b.cluster.update_readings(|r| r.api_up = None);
    b.hold(ConditionKind::KernelRcuStall, "");
    let o = outcomes(&b.tick());
    assert_eq!(
        (o[0].0, o[0].1),
        (Remedy::Reboot, AuditOutcome::Suppressed),
        "{o:?}"
    );
    assert!(b.rebooter.inner.calls().is_empty());
    // The first pass finds the API and the lease free.
    b.cluster.update_readings(|r| {
        r.api_up = Some(true);
        r.lock = Some(LockStatus::Held {
            slot: "nodemedic-reboot".into(),
        });
    });
    let o = outcomes(&b.tick());
    assert_eq!(
        (o[0].0, o[0].1),
        (Remedy::Reboot, AuditOutcome::Done),
        "{o:?}"
    );
    assert!(o[0].2.contains("holding the cluster reboot lease"), "{o:?}");
}

fn needs_human_held(b: &Bed) -> bool {
    b.hub
        .conditions()
        .iter()
        .any(|h| h.condition.kind == ConditionKind::NeedsHuman)
}

/// Issue 17, point 7: a reboot that cannot start must not leave the loop silent.
#[test]
fn a_reboot_that_cannot_start_raises_needs_human_at_once() {
    let mut b = bed(&config(RunMode::Act, reboot_at_once));
    b.rebooter
        .inner
        .fail_next_start("cannot start the reboot thread: EAGAIN");
    b.hold(ConditionKind::KernelRcuStall, "");
    let o = outcomes(&b.tick());
    assert_eq!(
        o.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        vec![
            (Remedy::Reboot, AuditOutcome::Failed),
            (Remedy::NeedsHuman, AuditOutcome::Done)
        ],
        "{o:?}"
    );
    assert!(needs_human_held(&b));
    // The loop goes on deciding (it is not stuck "rebooting").
    b.hold(ConditionKind::MemoryPressure, "");
    assert!(!b.tick().is_empty(), "later problems are still handled");
}

/// Issue 17, point 7: the reboot sequence ends with the node still up.
#[test]
fn a_reboot_sequence_that_ends_without_a_reboot_raises_needs_human() {
    let mut b = bed(&config(RunMode::Act, reboot_at_once));
    b.hold(ConditionKind::KernelRcuStall, "");
    let o = outcomes(&b.tick());
    assert_eq!(
        (o[0].0, o[0].1),
        (Remedy::Reboot, AuditOutcome::Done),
        "{o:?}"
    );
    b.clock.advance(MIN);
    assert!(b.tick().is_empty(), "the reboot is under way");
    b.rebooter
        .inner
        .end_without_reboot("the graceful reboot did not finish and the fallback is off");
    let o = outcomes(&b.tick());
    assert_eq!(
        o.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        vec![(Remedy::NeedsHuman, AuditOutcome::Done)],
        "{o:?}"
    );
    assert!(o[0].2.contains("NeedsHuman raised"), "{o:?}");
    assert!(needs_human_held(&b));
    let audit = b.audit();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "needs_human" && e.reason.contains("the reboot did not happen")),
        "{audit:?}"
    );
}
