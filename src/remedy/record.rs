//! How the policy loop leaves a trace: every decision, condition change, eviction,
//! verification and reset goes to the fsynced audit trail, the journal, `/status` and (when
//! the API is reachable) an Event on the Node; NeedsHuman is published to the hub and the
//! hub's conditions to the Node.

use crate::audit::{AuditEntry, AuditOutcome};
use crate::hub::{Change, HeldCondition};
use crate::kube::api::{ConditionStatus, EventType};
use crate::kube::conditions::DesiredCondition;
use crate::kube::events::EventDraft;
use crate::kube::evict_besteffort::EvictResult;
use crate::model::{Condition, ConditionKind, Remedy};
use crate::policy::engine::{self, Decision, PolicyState};

use super::policy_loop::{POLICY_DETECTOR, PolicyLoop};

impl PolicyLoop {
    /// Audits what the Kubernetes task did with the eviction requests: which pod went,
    /// which a PDB protected, or why none was evicted.
    pub(super) fn record_evictions(&mut self, now: u64) {
        for done in self.act.cluster.take_evictions() {
            let (outcome, label, text, subject) = match &done {
                Ok(r @ EvictResult::Evicted { pod, .. }) => {
                    (AuditOutcome::Done, r.label(), r.describe(), pod.clone())
                }
                Ok(r) => (AuditOutcome::Failed, r.label(), r.describe(), String::new()),
                Err(e) => (
                    AuditOutcome::Failed,
                    "failed",
                    format!("eviction failed: {e}"),
                    String::new(),
                ),
            };
            self.metrics
                .pod_evictions
                .get_or_create(&super::metrics::ResultLabels {
                    result: label.into(),
                })
                .inc();
            self.record(
                entry(
                    now,
                    &self.cfg.boot_id,
                    "evict_besteffort",
                    ConditionKind::MemoryPressure.name(),
                    &subject,
                    outcome,
                    text.clone(),
                ),
                EventDraft::new(
                    if outcome == AuditOutcome::Done {
                        EventType::Normal
                    } else {
                        EventType::Warning
                    },
                    if outcome == AuditOutcome::Done {
                        "NodeMedicEvictedBestEffortPod"
                    } else {
                        "NodeMedicEvictionNotDone"
                    },
                    text,
                ),
            );
        }
    }

    pub(super) fn publish_needs_human(&self, st: &PolicyState, now: u64) {
        let mut conds: Vec<Condition> = engine::needs_human(st)
            .into_iter()
            .map(|ep| {
                Condition::new(
                    ConditionKind::NeedsHuman,
                    ep.to_string(),
                    "RemediationExhausted",
                    format!("automatic remediation of {ep} gave up; see the audit trail, fix the cause, then `nodemedic reset`"),
                )
            })
            .collect();
        if let Some(why) = &st.verification_failed {
            conds.push(Condition::new(
                ConditionKind::NeedsHuman,
                "post-boot",
                "RebootDidNotHelp",
                format!("after nodemedic's reboot: {why}; then `nodemedic reset`"),
            ));
        }
        self.hub.publish(POLICY_DETECTOR, conds, now);
    }

    pub(super) fn sync_conditions(&mut self) {
        if !self.cfg.publish_conditions {
            return;
        }
        let desired = desired_conditions(&self.hub.conditions());
        if self.last_conditions.as_ref() != Some(&desired) {
            self.act.cluster.set_conditions(desired.clone());
            self.last_conditions = Some(desired);
        }
    }

    /// A condition change: audit, journal, `/status`, and an Event on the Node.
    pub(crate) fn on_change(&mut self, change: &Change) {
        let (held, verb) = match change {
            Change::Raised(h) => (h, "raised"),
            Change::Cleared(h) => (h, "cleared"),
        };
        let c = &held.condition;
        let now = self.clock.unix_secs();
        let level = if verb == "raised" {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            condition = c.kind.name(), subject = c.subject.as_str(), reason = c.reason.as_str(), detector = held.detector.as_str();
            "condition {} {verb}{}: {}",
            c.kind,
            if c.subject.is_empty() { String::new() } else { format!(" for {}", c.subject) },
            c.message
        );
        let e = entry(
            now,
            &self.cfg.boot_id,
            "condition",
            c.kind.name(),
            &c.subject,
            AuditOutcome::Recorded,
            format!("{verb}: {} ({})", c.reason, c.message),
        );
        let ev = EventDraft::new(
            if verb == "raised" {
                EventType::Warning
            } else {
                EventType::Normal
            },
            if verb == "raised" {
                c.kind.name().to_string()
            } else {
                format!("{}Cleared", c.kind.name())
            },
            if c.subject.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.subject, c.message)
            },
        );
        self.publish(e, ev, true);
    }

    /// The `started` record of an action that goes ahead, fsynced before it runs. Err (why,
    /// for the audit and the journal) when the trail cannot take it: then the action must
    /// not run. `needs_human` changes nothing on the node; a reboot writes its own record
    /// (and its reboot record) first and refuses without them (`reboot`).
    pub(super) fn record_intent(&mut self, d: &Decision, now: u64) -> Result<(), String> {
        if matches!(d.action, Remedy::NeedsHuman | Remedy::Reboot) {
            return Ok(());
        }
        let e = entry(
            now,
            &self.cfg.boot_id,
            d.action.name(),
            d.kind.map(|k| k.name()).unwrap_or(""),
            &d.subject,
            AuditOutcome::Started,
            format!("starting: {}", d.reason),
        );
        self.audit.append(&e).map_err(|err| {
            format!(
                "its audit record could not be written first ({err}), so it was not carried out"
            )
        })
    }

    pub(super) fn event(&self, ev: EventDraft) {
        if self.cfg.post_events {
            self.act.cluster.event(ev);
        }
    }

    /// Audit (fsynced, unless already written), `/status` and the Node Event.
    pub(super) fn publish(&mut self, e: AuditEntry, ev: EventDraft, append: bool) {
        if append && let Err(err) = self.audit.append(&e) {
            log::error!("cannot write the audit trail: {err}");
        }
        self.hub.record_action(e);
        self.event(ev);
    }

    /// Journal, then [`Self::publish`], for a decision, a verification or a reset.
    pub(super) fn record(&mut self, e: AuditEntry, ev: EventDraft) {
        let level = match e.outcome {
            AuditOutcome::Failed => log::Level::Error,
            AuditOutcome::Done => log::Level::Warn,
            _ => log::Level::Info,
        };
        log::log!(
            level,
            action = e.action.as_str(), problem = e.problem.as_str(), subject = e.subject.as_str(), outcome = e.outcome.as_str();
            "{} {}{}: {}",
            e.action,
            e.outcome.as_str(),
            if e.subject.is_empty() { String::new() } else { format!(" ({})", e.subject) },
            e.reason
        );
        self.publish(e, ev, true);
    }
}

pub(super) fn entry(
    now: u64,
    boot: &str,
    action: &str,
    problem: &str,
    subject: &str,
    outcome: AuditOutcome,
    reason: String,
) -> AuditEntry {
    AuditEntry {
        time: crate::timefmt::rfc3339_utc(now as f64),
        unix: now as f64,
        boot_id: boot.to_string(),
        action: action.into(),
        problem: problem.into(),
        subject: subject.into(),
        outcome,
        reason,
        evidence: serde_json::Value::Null,
    }
}

/// `restart_k3s` -> `RestartK3s`, `dry_run` -> `DryRun`.
pub(super) fn camel(s: &str) -> String {
    s.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The Node conditions for what the hub holds (True); the conditions module sets every
/// other nodemedic condition on the Node False.
pub(crate) fn desired_conditions(held: &[HeldCondition]) -> Vec<DesiredCondition> {
    held.iter()
        .map(|h| {
            let c = &h.condition;
            DesiredCondition::new(
                c.kind.name(),
                ConditionStatus::True,
                c.reason.clone(),
                if c.subject.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.subject, c.message)
                },
            )
        })
        .collect()
}
