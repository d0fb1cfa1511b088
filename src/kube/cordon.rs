//! Cordon ownership: nodemedic only ever undoes a cordon it made itself.
//!
//! kured's users rely on the same rule ("uncordons only what it cordoned"). Ownership is
//! recorded on the Node in annotations, so it survives a daemon restart and is visible to
//! `kubectl get node -o yaml`. The rules (pure; the caller passes the Node as read):
//! - Node schedulable, we want it cordoned: cordon and annotate.
//! - Node already cordoned by someone else: leave it, and do not annotate it; if we did,
//!   our later uncordon would remove an operator's cordon.
//! - We want it uncordoned: only if our annotation is there.
//! - Our annotation is there but the node is schedulable: an operator uncordoned our
//!   cordon on purpose. Drop the stale annotation and do not cordon again for this same
//!   request (the caller remembers that), or we would fight the operator every pass.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::api::{CordonChange, NodeView, format_time};

pub(crate) const ANNOTATION_CORDONED_BY: &str = "nodemedic.io/cordoned-by";
pub(crate) const ANNOTATION_CORDON_REASON: &str = "nodemedic.io/cordon-reason";
pub(crate) const ANNOTATION_CORDONED_AT: &str = "nodemedic.io/cordoned-at";
pub(crate) const CORDONED_BY_NODEMEDIC: &str = "nodemedic";

/// The reason annotation is cut to this many bytes; it is for humans reading the Node.
pub(crate) const MAX_REASON_BYTES: usize = 256;

/// Who holds the node's cordon right now (the `by` label of `nodemedic_node_cordoned`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CordonOwner {
    Nodemedic,
    Operator,
    None,
}

impl CordonOwner {
    pub(crate) const ALL: [CordonOwner; 3] = [
        CordonOwner::Nodemedic,
        CordonOwner::Operator,
        CordonOwner::None,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CordonOwner::Nodemedic => "nodemedic",
            CordonOwner::Operator => "operator",
            CordonOwner::None => "none",
        }
    }
}

/// What nodemedic wants for the node's schedulability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CordonWant {
    Cordoned {
        reason: String,
    },
    /// Our cordon, if any, removed. Never touches someone else's.
    Released,
}

/// What [`plan`] found and decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CordonOutcome {
    /// The node is (or will be, once `change` is applied) cordoned by nodemedic.
    CordonedByUs,
    /// Someone else cordoned the node; we leave it exactly as it is.
    CordonedByOperator,
    /// Schedulable and nothing of ours to undo.
    Schedulable,
    /// Our cordon was removed by someone else while we still wanted it: respect that.
    OperatorUncordonedUs,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CordonPlan {
    pub(crate) change: Option<CordonChange>,
    pub(crate) outcome: CordonOutcome,
}

/// Whether our ownership annotation is on the node.
pub(crate) fn annotated_by_us(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(ANNOTATION_CORDONED_BY)
        .is_some_and(|v| v == CORDONED_BY_NODEMEDIC)
}

pub(crate) fn owner(node: &NodeView) -> CordonOwner {
    match (node.unschedulable, annotated_by_us(&node.annotations)) {
        (true, true) => CordonOwner::Nodemedic,
        (true, false) => CordonOwner::Operator,
        (false, _) => CordonOwner::None,
    }
}

pub fn plan(node: &NodeView, want: &CordonWant, now: SystemTime) -> CordonPlan {
    let ours = annotated_by_us(&node.annotations);
    let (change, outcome) = match (want, node.unschedulable, ours) {
        (CordonWant::Cordoned { .. }, true, true) => (None, CordonOutcome::CordonedByUs),
        (CordonWant::Cordoned { .. }, true, false) => (None, CordonOutcome::CordonedByOperator),
        (CordonWant::Cordoned { .. }, false, true) => (
            Some(CordonChange::ForgetOwnership),
            CordonOutcome::OperatorUncordonedUs,
        ),
        (CordonWant::Cordoned { reason }, false, false) => (
            Some(CordonChange::Cordon {
                reason: truncate(reason, MAX_REASON_BYTES),
                at: now,
            }),
            CordonOutcome::CordonedByUs,
        ),
        (CordonWant::Released, true, true) => {
            (Some(CordonChange::Uncordon), CordonOutcome::Schedulable)
        }
        (CordonWant::Released, true, false) => (None, CordonOutcome::CordonedByOperator),
        (CordonWant::Released, false, true) => (
            Some(CordonChange::ForgetOwnership),
            CordonOutcome::Schedulable,
        ),
        (CordonWant::Released, false, false) => (None, CordonOutcome::Schedulable),
    };
    CordonPlan { change, outcome }
}

/// Merge patch for the Node. `metadata.resourceVersion` makes it conditional: if the Node
/// changed since we read it (say `kubectl cordon` ran in between), the API answers 409 and
/// the caller re-reads and re-plans instead of overwriting.
pub(crate) fn patch_body(change: &CordonChange, resource_version: &str) -> Value {
    match change {
        CordonChange::Cordon { reason, at } => json!({
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": {
                    ANNOTATION_CORDONED_BY: CORDONED_BY_NODEMEDIC,
                    ANNOTATION_CORDON_REASON: reason,
                    ANNOTATION_CORDONED_AT: format_time(*at),
                },
            },
            "spec": { "unschedulable": true },
        }),
        CordonChange::Uncordon => json!({
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": forget_annotations(),
            },
            "spec": { "unschedulable": null },
        }),
        CordonChange::ForgetOwnership => json!({
            "metadata": {
                "resourceVersion": resource_version,
                "annotations": forget_annotations(),
            },
        }),
    }
}

fn forget_annotations() -> Value {
    json!({
        ANNOTATION_CORDONED_BY: null,
        ANNOTATION_CORDON_REASON: null,
        ANNOTATION_CORDONED_AT: null,
    })
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn node(unschedulable: bool, ours: bool) -> NodeView {
        let mut annotations =
            BTreeMap::from([("k3s.io/node-args".to_string(), "[\"server\"]".to_string())]);
        if ours {
            annotations.insert(ANNOTATION_CORDONED_BY.into(), CORDONED_BY_NODEMEDIC.into());
            annotations.insert(ANNOTATION_CORDON_REASON.into(), "MemoryPressure".into());
        }
        NodeView {
            name: "pi5".into(),
            resource_version: "4711".into(),
            unschedulable,
            annotations,
            conditions: vec![],
        }
    }

    fn want_cordon() -> CordonWant {
        CordonWant::Cordoned {
            reason: "NodeMedicMemoryPressure: MemAvailable 6% for 60s".into(),
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_000_000)
    }

    #[test]
    fn a_schedulable_node_is_cordoned_and_annotated() {
        let p = plan(&node(false, false), &want_cordon(), now());
        assert_eq!(p.outcome, CordonOutcome::CordonedByUs);
        assert_eq!(
            p.change,
            Some(CordonChange::Cordon {
                reason: "NodeMedicMemoryPressure: MemAvailable 6% for 60s".into(),
                at: now()
            })
        );
    }

    #[test]
    fn an_operator_cordon_is_neither_annotated_nor_removed() {
        let n = node(true, false);
        let p = plan(&n, &want_cordon(), now());
        assert_eq!(
            (p.change, p.outcome),
            (None, CordonOutcome::CordonedByOperator)
        );
        let p = plan(&n, &CordonWant::Released, now());
        assert_eq!(
            (p.change, p.outcome),
            (None, CordonOutcome::CordonedByOperator)
        );
        assert_eq!(owner(&n), CordonOwner::Operator);
    }

    #[test]
    fn our_cordon_is_removed_when_released() {
        let n = node(true, true);
        assert_eq!(owner(&n), CordonOwner::Nodemedic);
        let p = plan(&n, &CordonWant::Released, now());
        assert_eq!(p.change, Some(CordonChange::Uncordon));
        assert_eq!(p.outcome, CordonOutcome::Schedulable);
    }

    #[test]
    fn our_existing_cordon_needs_no_write() {
        let p = plan(&node(true, true), &want_cordon(), now());
        assert_eq!((p.change, p.outcome), (None, CordonOutcome::CordonedByUs));
    }

    #[test]
    fn an_operator_uncordoning_our_cordon_is_respected() {
        let p = plan(&node(false, true), &want_cordon(), now());
        assert_eq!(p.change, Some(CordonChange::ForgetOwnership));
        assert_eq!(p.outcome, CordonOutcome::OperatorUncordonedUs);
    }

    #[test]
    fn a_stale_annotation_is_dropped_on_release_without_touching_spec() {
        let p = plan(&node(false, true), &CordonWant::Released, now());
        assert_eq!(p.change, Some(CordonChange::ForgetOwnership));
        let body = patch_body(&CordonChange::ForgetOwnership, "9");
        assert!(body.get("spec").is_none(), "{body}");
    }

    #[test]
    fn nothing_to_do_on_a_schedulable_unowned_node() {
        let p = plan(&node(false, false), &CordonWant::Released, now());
        assert_eq!((p.change, p.outcome), (None, CordonOutcome::Schedulable));
        assert_eq!(owner(&node(false, false)), CordonOwner::None);
    }

    #[test]
    fn a_foreign_cordoned_by_value_is_not_ours() {
        let mut n = node(true, false);
        n.annotations
            .insert(ANNOTATION_CORDONED_BY.into(), "kured".into());
        assert_eq!(owner(&n), CordonOwner::Operator);
    }

    #[test]
    fn cordon_patch_is_conditional_and_carries_ownership() {
        let body = patch_body(
            &CordonChange::Cordon {
                reason: "NodeMedicKernelRCUStall".into(),
                at: now(),
            },
            "4711",
        );
        assert_eq!(
            body,
            json!({
                "metadata": {
                    "resourceVersion": "4711",
                    "annotations": {
                        "nodemedic.io/cordoned-by": "nodemedic",
                        "nodemedic.io/cordon-reason": "NodeMedicKernelRCUStall",
                        "nodemedic.io/cordoned-at": "2025-11-24T16:00:00Z",
                    },
                },
                "spec": {"unschedulable": true},
            })
        );
    }

    #[test]
    fn uncordon_patch_clears_spec_and_our_annotations_only() {
        let body = patch_body(&CordonChange::Uncordon, "12");
        assert_eq!(body["spec"]["unschedulable"], Value::Null);
        assert_eq!(body["metadata"]["resourceVersion"], "12");
        let ann = body["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(ann.len(), 3);
        assert!(ann.keys().all(|k| k.starts_with("nodemedic.io/")));
        assert!(ann.values().all(Value::is_null));
    }

    #[test]
    fn long_reasons_are_cut() {
        let p = plan(
            &node(false, false),
            &CordonWant::Cordoned {
                reason: "é".repeat(400),
            },
            now(),
        );
        let Some(CordonChange::Cordon { reason, .. }) = p.change else {
            panic!("expected a cordon")
        };
        assert!(reason.len() <= MAX_REASON_BYTES && reason.starts_with('é'));
    }
}
