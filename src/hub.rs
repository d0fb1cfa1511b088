//! The hub: where detectors publish, and where the HTTP endpoint, `check` and the policy
//! loop read. Detectors replace their whole condition set on every pass; the hub keeps
//! `since` for conditions that persist, emits a [`Change`] for each raised or cleared one,
//! and keeps the `nodemedic_condition` gauge in step. Every lock here is held only for a
//! copy, so a reader is never slowed by a detector stuck in a syscall.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::mpsc::Sender;

use crate::audit::AuditEntry;
use crate::metrics::{ConditionLabels, CoreMetrics};
use crate::model::{Condition, ConditionKey, ConditionKind};

/// Recent audit entries kept in memory for `/status`.
pub(crate) const RECENT_ACTIONS: usize = 50;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct HeldCondition {
    #[serde(flatten)]
    pub(crate) condition: Condition,
    pub(crate) detector: String,
    pub(crate) since_unix: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) enum Change {
    Raised(HeldCondition),
    Cleared(HeldCondition),
}

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct DetectorStatus {
    pub(crate) last_run_unix: Option<f64>,
    pub(crate) errors: u64,
    pub(crate) last_error: Option<String>,
    /// Detector-specific facts for `/status` and `check` (counts, sysctls, mounts...).
    pub(crate) info: serde_json::Value,
}

#[derive(Default)]
struct Inner {
    held: BTreeMap<String, BTreeMap<ConditionKey, HeldCondition>>,
    detectors: BTreeMap<String, DetectorStatus>,
    recent: VecDeque<AuditEntry>,
    persisted: serde_json::Value,
    /// Problems the policy attributed to power or heat: `Kind` or `Kind:subject` (the
    /// policy's episode key) -> (reason, what it coincided with).
    causes: BTreeMap<String, (&'static str, &'static str)>,
}

pub(crate) struct Hub {
    inner: Mutex<Inner>,
    metrics: CoreMetrics,
    /// Taken out (closed) at shutdown, which wakes the policy loop at once.
    changes: Mutex<Option<Sender<Change>>>,
}

impl Hub {
    pub fn new(metrics: CoreMetrics, changes: Option<Sender<Change>>) -> Self {
        Hub {
            inner: Mutex::default(),
            metrics,
            changes: Mutex::new(changes),
        }
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }

    /// Replaces `detector`'s conditions with `now`. Returns the changes (also sent to the
    /// policy channel).
    pub(crate) fn publish(
        &self,
        detector: &str,
        now: Vec<Condition>,
        now_unix: u64,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        {
            let mut g = self.inner.lock().unwrap();
            let old = g.held.remove(detector).unwrap_or_default();
            let mut new = BTreeMap::new();
            for c in now {
                let key = c.key();
                let held = match old.get(&key) {
                    Some(prev) => HeldCondition {
                        condition: c,
                        detector: detector.to_string(),
                        since_unix: prev.since_unix,
                    },
                    None => {
                        let h = HeldCondition {
                            condition: c,
                            detector: detector.to_string(),
                            since_unix: now_unix,
                        };
                        changes.push(Change::Raised(h.clone()));
                        h
                    }
                };
                new.insert(key, held);
            }
            for (key, prev) in old {
                if !new.contains_key(&key) {
                    changes.push(Change::Cleared(prev));
                }
            }
            g.held.insert(detector.to_string(), new);
            self.refresh_gauges(&g);
        }
        if let Some(tx) = &*self.changes.lock().unwrap() {
            for c in &changes {
                let _ = tx.send(c.clone());
            }
        }
        changes
    }

    /// Closes the change channel: its receiver sees it disconnected (the daemon is
    /// stopping) instead of waiting out its timeout.
    pub(crate) fn close_changes(&self) {
        self.changes.lock().unwrap().take();
    }

    fn refresh_gauges(&self, g: &Inner) {
        for k in ConditionKind::ALL {
            let on = g
                .held
                .values()
                .any(|m| m.keys().any(|(kind, _)| *kind == k));
            self.metrics
                .condition
                .get_or_create(&ConditionLabels {
                    condition: k.name().into(),
                })
                .set(i64::from(on));
        }
    }

    /// Every held condition, sorted by kind then subject. A problem the policy attributed
    /// to power or heat carries that reason (`PowerSupply`, `Thermal`), its detector's
    /// reason kept in the message.
    pub(crate) fn conditions(&self) -> Vec<HeldCondition> {
        let g = self.inner.lock().unwrap();
        let mut v: Vec<_> = g.held.values().flat_map(|m| m.values().cloned()).collect();
        v.sort_by_key(|h| h.condition.key());
        for h in &mut v {
            let c = &mut h.condition;
            let key = if c.subject.is_empty() {
                c.kind.name().to_string()
            } else {
                format!("{}:{}", c.kind.name(), c.subject)
            };
            if let Some((reason, what)) = g.causes.get(&key) {
                c.message = format!("during {what} ({}: {})", c.reason, c.message);
                c.reason = (*reason).to_string();
            }
        }
        v
    }

    /// The policy's attributions (`policy::power_cause::labels`), replaced on every tick.
    pub(crate) fn set_causes(&self, causes: BTreeMap<String, (&'static str, &'static str)>) {
        self.inner.lock().unwrap().causes = causes;
    }

    pub(crate) fn detector_ran(
        &self,
        detector: &str,
        unix: f64,
        result: Result<serde_json::Value, String>,
    ) {
        let mut g = self.inner.lock().unwrap();
        let s = g.detectors.entry(detector.to_string()).or_default();
        s.last_run_unix = Some(unix);
        match result {
            Ok(info) => {
                s.last_error = None;
                s.info = info;
                self.metrics.detector_ran(detector, unix);
            }
            Err(e) => {
                s.errors += 1;
                s.last_error = Some(e);
                self.metrics.detector_failed(detector);
            }
        }
    }

    pub(crate) fn detectors(&self) -> BTreeMap<String, DetectorStatus> {
        self.inner.lock().unwrap().detectors.clone()
    }

    pub(crate) fn record_action(&self, e: AuditEntry) {
        let mut g = self.inner.lock().unwrap();
        if g.recent.len() == RECENT_ACTIONS {
            g.recent.pop_front();
        }
        g.recent.push_back(e);
    }

    pub(crate) fn recent_actions(&self) -> Vec<AuditEntry> {
        self.inner.lock().unwrap().recent.iter().cloned().collect()
    }

    pub(crate) fn set_persisted(&self, v: serde_json::Value) {
        self.inner.lock().unwrap().persisted = v;
    }

    pub(crate) fn persisted(&self) -> serde_json::Value {
        self.inner.lock().unwrap().persisted.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn hub() -> (Hub, Registry) {
        let mut reg = Registry::default();
        let m = CoreMetrics::register(&mut reg);
        (Hub::new(m, None), reg)
    }

    fn stall() -> Condition {
        Condition::new(
            ConditionKind::KernelRcuStall,
            "",
            "LongStall",
            "stall of 21 s",
        )
    }

    #[test]
    fn a_condition_is_raised_once_keeps_its_since_and_clears_when_no_longer_published() {
        let (h, reg) = hub();
        let c = h.publish("kernel", vec![stall()], 100);
        assert!(matches!(&c[..], [Change::Raised(x)] if x.since_unix == 100));
        assert!(
            h.publish("kernel", vec![stall()], 160).is_empty(),
            "still held: no change"
        );
        assert_eq!(h.conditions()[0].since_unix, 100);
        assert!(
            crate::metrics::encode(&reg)
                .contains("nodemedic_condition{condition=\"KernelRCUStall\"} 1")
        );
        let c = h.publish("kernel", vec![], 200);
        assert!(
            matches!(&c[..], [Change::Cleared(x)] if x.condition.kind == ConditionKind::KernelRcuStall)
        );
        assert!(h.conditions().is_empty());
        assert!(
            crate::metrics::encode(&reg)
                .contains("nodemedic_condition{condition=\"KernelRCUStall\"} 0")
        );
    }

    #[test]
    fn closing_the_change_channel_wakes_its_receiver_at_once() {
        let mut reg = Registry::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = Hub::new(CoreMetrics::register(&mut reg), Some(tx));
        h.publish("kernel", vec![stall()], 1);
        assert!(matches!(rx.try_recv(), Ok(Change::Raised(_))));
        let t = std::thread::spawn(move || rx.recv_timeout(std::time::Duration::from_secs(3600)));
        h.close_changes();
        assert_eq!(
            t.join().unwrap().unwrap_err(),
            std::sync::mpsc::RecvTimeoutError::Disconnected
        );
        // Publishing after the close still updates the hub; nothing is sent.
        assert_eq!(h.publish("kernel", vec![], 2).len(), 1);
    }

    #[test]
    fn detectors_only_replace_their_own_conditions() {
        let (h, _) = hub();
        h.publish("kernel", vec![stall()], 1);
        h.publish(
            "mounts",
            vec![Condition::new(
                ConditionKind::NetworkMountHung,
                "/mnt/nas",
                "ProbeTimeout",
                "stat timed out",
            )],
            2,
        );
        h.publish("mounts", vec![], 3);
        let held = h.conditions();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].detector, "kernel");
    }

    #[test]
    fn an_attributed_condition_carries_the_cause_as_its_reason() {
        let (h, _) = hub();
        h.publish("kernel", vec![stall()], 1);
        h.set_causes(BTreeMap::from([(
            "KernelRCUStall".to_string(),
            ("PowerSupply", "under-voltage"),
        )]));
        let c = &h.conditions()[0].condition;
        assert_eq!(c.reason, "PowerSupply");
        assert_eq!(c.message, "during under-voltage (LongStall: stall of 21 s)");
        h.set_causes(BTreeMap::new());
        assert_eq!(h.conditions()[0].condition.reason, "LongStall");
    }

    #[test]
    fn subjects_are_separate_instances_of_a_kind() {
        let (h, _) = hub();
        let m = |s: &str| Condition::new(ConditionKind::NetworkMountHung, s, "ProbeTimeout", "x");
        h.publish("mounts", vec![m("/a"), m("/b")], 1);
        let c = h.publish("mounts", vec![m("/b")], 2);
        assert!(matches!(&c[..], [Change::Cleared(x)] if x.condition.subject == "/a"));
    }
}
