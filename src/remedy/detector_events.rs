//! Events detectors ask for (model::EventOutbox): posted on the Node, written to the audit
//! trail and the journal like the loop's own, once per tick at most.

use crate::audit::AuditOutcome;
use crate::kube::api::EventType;
use crate::kube::events::EventDraft;

use super::policy_loop::PolicyLoop;
use super::record::entry;

impl PolicyLoop {
    pub(super) fn post_detector_events(&mut self, now: u64) {
        for e in self.cfg.detector_events.take() {
            let audit = entry(
                now,
                &self.cfg.boot_id,
                "event",
                &e.reason,
                "",
                AuditOutcome::Recorded,
                e.message.clone(),
            );
            self.publish(
                audit,
                EventDraft::new(EventType::Warning, e.reason, e.message),
                true,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{bed, config};
    use crate::config::RunMode;
    use crate::model::DetectorEvent;

    #[test]
    fn a_detector_event_is_audited_and_sent_to_the_node() {
        let mut b = bed(&config(RunMode::Observe, |_| {}));
        b.lp.cfg.detector_events.push(DetectorEvent {
            reason: "EtcdLeaderChanges".into(),
            message: "etcd saw 5 leader changes".into(),
        });
        b.lp.tick(&|| {});
        let w = b.cluster.take();
        assert_eq!(w.events.len(), 1);
        assert_eq!(w.events[0].reason, "EtcdLeaderChanges");
        let recent = b.hub.recent_actions();
        assert!(
            recent
                .iter()
                .any(|e| e.action == "event" && e.problem == "EtcdLeaderChanges"),
            "{recent:?}"
        );
        b.lp.tick(&|| {});
        assert!(b.cluster.take().events.is_empty(), "posted once");
    }
}
