//! Node conditions nodemedic publishes: from the desired set to the exact entries to write.
//!
//! Rules (pure; the caller supplies the Node's current conditions and `now`):
//! - Our types carry the [`CONDITION_PREFIX`] so they never clash with kubelet's
//!   (`Ready`, `MemoryPressure`, ...); entries without it are never written.
//! - `lastTransitionTime` moves only when the status changes; `lastHeartbeatTime` moves
//!   on every write, and a condition is re-written at least every [`HEARTBEAT_PERIOD`] so
//!   a reader can tell a live publisher from a stale one.
//! - The desired set is the whole truth (level, not edge). A prefixed condition on the Node
//!   that is not desired and not already `False` is set `False`: a restarted daemon clears
//!   what its predecessor left behind (node-problem-detector's most common complaint is
//!   conditions that never clear). Cleared conditions stay, `False`, as kubelet's do.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::api::{ConditionStatus, NodeCondition, format_time};

/// Prefix of every condition type nodemedic owns, e.g. `NodeMedicKernelRCUStall`.
pub(crate) const CONDITION_PREFIX: &str = "NodeMedic";

/// Re-assert unchanged conditions this often; node-problem-detector's default heartbeat
/// period, frequent enough for alerting on staleness, rare enough for a Pi's etcd.
pub(crate) const HEARTBEAT_PERIOD: Duration = Duration::from_secs(300);

/// Messages are cut to this many bytes: every Node write is a new etcd revision, and
/// `kubectl describe node` stays readable.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

/// Reason written when nodemedic no longer sees a problem.
pub(crate) const CLEARED_REASON: &str = "NodeMedicNotDetected";
pub(crate) const CLEARED_MESSAGE: &str = "nodemedic no longer detects this problem";

/// Separator when several subjects (mounts, sandboxes) of one type share a condition.
const SUBJECT_SEPARATOR: &str = "; ";

/// What nodemedic wants one of its conditions to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Type without the prefix, e.g. `KernelRCUStall`. Anything other than ASCII letters
    /// and digits is dropped when the type is built.
    pub(crate) type_suffix: String,
    pub(crate) status: ConditionStatus,
    /// CamelCase, as Kubernetes reasons are.
    pub(crate) reason: String,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(
        type_suffix: impl Into<String>,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        DesiredCondition {
            type_suffix: type_suffix.into(),
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// The full condition type on the Node.
    pub(crate) fn type_name(&self) -> String {
        full_type(&self.type_suffix)
    }
}

/// `NodeMedic` + the suffix with everything but ASCII alphanumerics removed.
pub(crate) fn full_type(suffix: &str) -> String {
    let clean: String = suffix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("{CONDITION_PREFIX}{clean}")
}

/// Whether a Node condition type is one of ours.
pub(crate) fn is_ours(type_: &str) -> bool {
    type_.starts_with(CONDITION_PREFIX) && type_.len() > CONDITION_PREFIX.len()
}

/// Folds entries of the same type into one (a Node has one condition per type): the
/// worst status wins (`True` over `Unknown` over `False`), reasons come from the first
/// entry with that status, messages are joined in order.
pub(crate) fn merge_same_type(items: Vec<DesiredCondition>) -> Vec<DesiredCondition> {
    let rank = |s: ConditionStatus| match s {
        ConditionStatus::True => 2,
        ConditionStatus::Unknown => 1,
        ConditionStatus::False => 0,
    };
    let mut by_type: BTreeMap<String, DesiredCondition> = BTreeMap::new();
    for item in items {
        match by_type.get_mut(&item.type_name()) {
            None => {
                by_type.insert(item.type_name(), item);
            }
            Some(held) => {
                if rank(item.status) > rank(held.status) {
                    held.status = item.status;
                    held.reason = item.reason;
                }
                if !item.message.is_empty() && !held.message.contains(&item.message) {
                    if !held.message.is_empty() {
                        held.message.push_str(SUBJECT_SEPARATOR);
                    }
                    held.message.push_str(&item.message);
                }
            }
        }
    }
    by_type.into_values().collect()
}

/// The conditions to write now (full entries, sorted by type), or empty when the Node
/// already says what we want and no heartbeat is due.
pub fn plan(
    current: &[NodeCondition],
    desired: &[DesiredCondition],
    now: SystemTime,
) -> Vec<NodeCondition> {
    let desired = merge_same_type(desired.to_vec());
    let find = |t: &str| current.iter().find(|c| c.type_ == t);
    let mut out = Vec::new();

    for d in &desired {
        let type_ = d.type_name();
        if !is_ours(&type_) {
            continue;
        }
        let message = truncate(&d.message, MAX_MESSAGE_BYTES);
        let existing = find(&type_);
        let changed = existing
            .is_none_or(|e| e.status != d.status || e.reason != d.reason || e.message != message);
        if changed || existing.is_some_and(|e| heartbeat_due(e.last_heartbeat_time, now)) {
            out.push(NodeCondition {
                last_transition_time: Some(transition_time(existing, d.status, now)),
                type_,
                status: d.status,
                reason: d.reason.clone(),
                message,
                last_heartbeat_time: Some(now),
            });
        }
    }

    let wanted: Vec<String> = desired.iter().map(|d| d.type_name()).collect();
    for c in current {
        if is_ours(&c.type_) && !wanted.contains(&c.type_) && c.status != ConditionStatus::False {
            out.push(NodeCondition {
                type_: c.type_.clone(),
                status: ConditionStatus::False,
                reason: CLEARED_REASON.into(),
                message: CLEARED_MESSAGE.into(),
                last_transition_time: Some(now),
                last_heartbeat_time: Some(now),
            });
        }
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Strategic-merge patch body for the `nodes/status` subresource. `status.conditions`
/// has merge key `type`, so the API server merges these entries into the list and leaves
/// every other condition alone.
pub(crate) fn status_patch(conditions: &[NodeCondition]) -> Value {
    let entries: Vec<Value> = conditions
        .iter()
        .map(|c| {
            let mut e = json!({
                "type": c.type_,
                "status": c.status.as_str(),
                "reason": c.reason,
                "message": c.message,
            });
            if let Some(t) = c.last_transition_time {
                e["lastTransitionTime"] = Value::String(format_time(t));
            }
            if let Some(t) = c.last_heartbeat_time {
                e["lastHeartbeatTime"] = Value::String(format_time(t));
            }
            e
        })
        .collect();
    json!({ "status": { "conditions": entries } })
}

fn transition_time(
    existing: Option<&NodeCondition>,
    status: ConditionStatus,
    now: SystemTime,
) -> SystemTime {
    match existing {
        Some(e) if e.status == status => e.last_transition_time.unwrap_or(now),
        _ => now,
    }
}

/// Due when missing, older than the period, or in the future by more than the period
/// (the wall clock jumped back, as it does on boards without RTC).
fn heartbeat_due(last: Option<SystemTime>, now: SystemTime) -> bool {
    match last {
        None => true,
        Some(t) => match now.duration_since(t) {
            Ok(age) => age >= HEARTBEAT_PERIOD,
            Err(ahead) => ahead.duration() >= HEARTBEAT_PERIOD,
        },
    }
}

/// Cuts at a char boundary at most `max` bytes long, marking the cut with an ellipsis.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let ellipsis = "…";
    let mut end = max - ellipsis.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn kubelet_ready(t: u64) -> NodeCondition {
        NodeCondition {
            type_: "Ready".into(),
            status: ConditionStatus::True,
            reason: "KubeletReady".into(),
            message: "kubelet is posting ready status".into(),
            last_transition_time: Some(at(t)),
            last_heartbeat_time: Some(at(t)),
        }
    }

    fn ours(
        suffix: &str,
        status: ConditionStatus,
        transition: u64,
        heartbeat: u64,
    ) -> NodeCondition {
        NodeCondition {
            type_: full_type(suffix),
            status,
            reason: "RCUStallDetected".into(),
            message: "rcu_preempt detected expedited stalls on CPUs/tasks: { P4121 } 21 jiffies"
                .into(),
            last_transition_time: Some(at(transition)),
            last_heartbeat_time: Some(at(heartbeat)),
        }
    }

    fn rcu_true() -> DesiredCondition {
        DesiredCondition::new(
            "KernelRCUStall",
            ConditionStatus::True,
            "RCUStallDetected",
            "rcu_preempt detected expedited stalls on CPUs/tasks: { P4121 } 21 jiffies",
        )
    }

    #[test]
    fn a_new_problem_is_written_with_transition_and_heartbeat_now() {
        let out = plan(&[kubelet_ready(100)], &[rcu_true()], at(1000));
        assert_eq!(out.len(), 1);
        let c = &out[0];
        assert_eq!(c.type_, "NodeMedicKernelRCUStall");
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.reason, "RCUStallDetected");
        assert!(c.message.contains("{ P4121 } 21 jiffies"));
        assert_eq!(c.last_transition_time, Some(at(1000)));
        assert_eq!(c.last_heartbeat_time, Some(at(1000)));
    }

    #[test]
    fn an_unchanged_condition_is_not_rewritten_until_its_heartbeat_is_due() {
        let cur = [
            kubelet_ready(100),
            ours("KernelRCUStall", ConditionStatus::True, 500, 900),
        ];
        assert!(plan(&cur, &[rcu_true()], at(1000)).is_empty());
        let out = plan(&cur, &[rcu_true()], at(900 + 300));
        assert_eq!(out.len(), 1, "heartbeat due after {HEARTBEAT_PERIOD:?}");
        assert_eq!(
            out[0].last_transition_time,
            Some(at(500)),
            "status did not change"
        );
        assert_eq!(out[0].last_heartbeat_time, Some(at(1200)));
    }

    #[test]
    fn a_new_message_rewrites_but_keeps_the_transition_time() {
        let cur = [ours("KernelRCUStall", ConditionStatus::True, 500, 990)];
        let mut d = rcu_true();
        d.message = "rcu: INFO: rcu_sched self-detected stall on CPU".into();
        let out = plan(&cur, &[d], at(1000));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].message,
            "rcu: INFO: rcu_sched self-detected stall on CPU"
        );
        assert_eq!(out[0].last_transition_time, Some(at(500)));
    }

    #[test]
    fn a_status_change_moves_the_transition_time() {
        let cur = [ours("KernelRCUStall", ConditionStatus::Unknown, 500, 990)];
        let out = plan(&cur, &[rcu_true()], at(1000));
        assert_eq!(out[0].last_transition_time, Some(at(1000)));
    }

    #[test]
    fn an_undesired_true_condition_is_cleared_and_kubelets_are_left_alone() {
        let cur = [
            kubelet_ready(100),
            ours("KernelRCUStall", ConditionStatus::True, 500, 990),
        ];
        let out = plan(&cur, &[], at(1000));
        assert_eq!(out.len(), 1, "only ours: {out:?}");
        assert_eq!(out[0].type_, "NodeMedicKernelRCUStall");
        assert_eq!(out[0].status, ConditionStatus::False);
        assert_eq!(out[0].reason, CLEARED_REASON);
        assert_eq!(out[0].message, CLEARED_MESSAGE);
        assert_eq!(out[0].last_transition_time, Some(at(1000)));
    }

    #[test]
    fn an_already_false_undesired_condition_needs_no_write() {
        let cur = [ours("NetworkMountHung", ConditionStatus::False, 500, 600)];
        assert!(plan(&cur, &[], at(10_000)).is_empty());
    }

    #[test]
    fn kubelet_types_are_never_written_even_if_desired_by_mistake() {
        // A suffix cannot produce a kubelet type: the prefix is always added.
        let d = DesiredCondition::new("", ConditionStatus::True, "X", "y");
        assert!(plan(&[kubelet_ready(1)], &[d], at(2)).is_empty());
        assert_eq!(full_type("Ready"), "NodeMedicReady");
        assert!(!is_ours("Ready") && !is_ours("NodeMedic") && is_ours("NodeMedicX"));
    }

    #[test]
    fn type_suffixes_lose_characters_the_api_would_reject() {
        assert_eq!(full_type("Kernel RCU/Stall!"), "NodeMedicKernelRCUStall");
    }

    #[test]
    fn subjects_of_one_type_become_one_condition_with_the_worst_status() {
        let a = DesiredCondition::new(
            "NetworkMountHung",
            ConditionStatus::Unknown,
            "MountProbeSlow",
            "/mnt/backup: statfs pending 12s",
        );
        let b = DesiredCondition::new(
            "NetworkMountHung",
            ConditionStatus::True,
            "MountHung",
            "/srv/nfs: statfs blocked 95s",
        );
        let merged = merge_same_type(vec![a, b, rcu_true()]);
        assert_eq!(merged.len(), 2);
        let m = merged
            .iter()
            .find(|d| d.type_suffix == "NetworkMountHung")
            .unwrap();
        assert_eq!(m.status, ConditionStatus::True);
        assert_eq!(m.reason, "MountHung");
        assert_eq!(
            m.message,
            "/mnt/backup: statfs pending 12s; /srv/nfs: statfs blocked 95s"
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let mut d = rcu_true();
        d.message = "ü".repeat(2000);
        let out = plan(&[], &[d], at(1));
        assert!(out[0].message.len() <= MAX_MESSAGE_BYTES);
        assert!(out[0].message.ends_with('…'));
    }

    #[test]
    fn a_heartbeat_far_in_the_future_counts_as_due() {
        let cur = [ours(
            "KernelRCUStall",
            ConditionStatus::True,
            500,
            1_000_000,
        )];
        assert_eq!(plan(&cur, &[rcu_true()], at(1000)).len(), 1);
    }

    #[test]
    fn the_patch_body_merges_conditions_by_type_with_wire_times() {
        let out = plan(&[], &[rcu_true()], at(1_764_000_000));
        let body = status_patch(&out);
        assert_eq!(
            body,
            json!({"status": {"conditions": [{
                "type": "NodeMedicKernelRCUStall",
                "status": "True",
                "reason": "RCUStallDetected",
                "message": "rcu_preempt detected expedited stalls on CPUs/tasks: { P4121 } 21 jiffies",
                "lastTransitionTime": "2025-11-24T16:00:00Z",
                "lastHeartbeatTime": "2025-11-24T16:00:00Z",
            }]}})
        );
    }

    proptest! {
        #[test]
        fn plan_never_writes_foreign_types_and_never_panics(
            suffixes in proptest::collection::vec("[ -~]{0,12}", 0..6),
            msg in "\\PC{0,1500}",
            now in 0u64..4_000_000_000,
        ) {
            let desired: Vec<_> = suffixes
                .iter()
                .map(|s| DesiredCondition::new(s.clone(), ConditionStatus::True, "R", msg.clone()))
                .collect();
            let out = plan(&[kubelet_ready(5)], &desired, at(now));
            for c in &out {
                prop_assert!(is_ours(&c.type_));
                prop_assert!(c.message.len() <= MAX_MESSAGE_BYTES);
            }
        }
    }
}
