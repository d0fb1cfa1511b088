//! Post-boot verification: after a reboot nodemedic made, once `remedy.verify_after` has
//! passed, is the node healthy again (k3s active, Node Ready, critical DaemonSets running)?
//! The answer is written into the reboot record; a failed one raises NeedsHuman. When
//! it is due and what the findings mean is the engine's ([`crate::policy::boot`]).

use std::time::Duration;

use crate::audit::AuditOutcome;
use crate::kube::api::EventType;
use crate::kube::events::EventDraft;
use crate::kube::lease::LockWant;
use crate::policy::boot::{self, Verified, VerifyFacts, VerifyStep};
use crate::policy::engine::PolicyState;

use super::policy_loop::PolicyLoop;
use super::record::entry;

impl PolicyLoop {
    /// The post-boot check, when [`boot::verify_step`] says it is due: gathers the facts
    /// (systemd, the Node's readings), lets [`boot::verified`] judge them, records the
    /// outcome in the reboot record and the audit, and releases the reboot lease of a
    /// healthy node.
    pub(super) fn verify_after_reboot(
        &mut self,
        st: &mut PolicyState,
        now: u64,
        since_boot: Duration,
    ) {
        let r = self.act.cluster.readings();
        let step = boot::verify_step(
            st,
            since_boot,
            self.cfg.remedy.verify_after.get(),
            r.configured,
            r.api_up,
        );
        if step != VerifyStep::Judge {
            return;
        }
        let facts = VerifyFacts {
            k3s: self.cfg.k3s_unit.as_ref().map(|unit| {
                let active = self
                    .act
                    .services
                    .active_state(unit)
                    .map(|s| s.is_active())
                    .map_err(|e| e.to_string());
                (unit.clone(), active)
            }),
            api_configured: r.configured,
            api_up: r.api_up,
            node_ready: r.node_ready,
            critical_pods: r.critical_pods.clone(),
        };
        let Verified { healthy, text } = boot::verified(st, &facts);
        {
            let mut s = self.state();
            if let Some(last) = s.data.reboots.last_mut() {
                last.outcome = Some(text.clone());
            }
            if let Err(e) = s.save() {
                log::error!("cannot persist the post-boot verification: {e}");
            }
        }
        if healthy {
            self.act.cluster.want_lock(LockWant::Release);
        }
        self.record(
            entry(
                now,
                &self.cfg.boot_id,
                "post_boot_verify",
                "",
                "",
                if healthy {
                    AuditOutcome::Done
                } else {
                    AuditOutcome::Failed
                },
                format!("after nodemedic's reboot the node is {text}"),
            ),
            EventDraft::new(
                if healthy {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                if healthy {
                    "NodeMedicRebootVerified"
                } else {
                    "NodeMedicRebootDidNotHelp"
                },
                format!("after nodemedic's reboot the node is {text}"),
            ),
        );
    }
}
