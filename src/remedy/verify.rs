//! Post-boot verification: after a reboot nodemedic made, once `remedy.verify_after` has
//! passed, is the node healthy again (k3s active, Node Ready, critical DaemonSets running)?
//! The answer is written into the reboot record; a failed one raises NeedsHuman.

use std::time::Duration;

use crate::audit::AuditOutcome;
use crate::kube::api::EventType;
use crate::kube::events::EventDraft;
use crate::kube::lease::LockWant;
use crate::policy::engine::PolicyState;

use super::policy_loop::PolicyLoop;
use super::record::entry;

impl PolicyLoop {
    pub(super) fn verify_after_reboot(
        &mut self,
        st: &mut PolicyState,
        now: u64,
        since_boot: Duration,
    ) {
        if !self.verify_pending || since_boot < self.cfg.remedy.verify_after.get() {
            return;
        }
        let r = self.act.cluster.readings();
        // Give the API a second verify period to answer before judging without it.
        let api_wait = r.configured
            && r.api_up != Some(true)
            && since_boot < self.cfg.remedy.verify_after.get() * 2;
        if api_wait {
            return;
        }
        let mut problems = Vec::new();
        let mut checked = Vec::new();
        if let Some(unit) = &self.cfg.k3s_unit {
            match self.act.services.active_state(unit) {
                Ok(s) if s.is_active() => checked.push(format!("{unit} active")),
                Ok(s) => problems.push(format!("{unit} is not active ({})", s.as_str())),
                Err(e) => problems.push(format!("cannot ask systemd about {unit}: {e}")),
            }
        }
        if r.configured {
            match (r.api_up, r.node_ready) {
                (Some(true), Some(true)) => checked.push("node Ready".into()),
                (Some(true), Some(false)) => problems.push("the node is not Ready".into()),
                _ => checked.push("node Ready unknown (API unreachable)".into()),
            }
            match &r.critical_pods {
                Some(Ok(())) => checked.push("critical DaemonSets running".into()),
                Some(Err(e)) => problems.push(format!("critical DaemonSet pods not running: {e}")),
                None => checked.push("critical DaemonSets unknown".into()),
            }
        }
        self.verify_pending = false;
        let healthy = problems.is_empty();
        let outcome_text = if healthy {
            format!("healthy ({})", checked.join(", "))
        } else {
            format!("NOT healthy: {}", problems.join("; "))
        };
        {
            let mut s = self.state();
            if let Some(last) = s.data.reboots.last_mut() {
                last.outcome = Some(outcome_text.clone());
            }
            if let Err(e) = s.save() {
                log::error!("cannot persist the post-boot verification: {e}");
            }
        }
        if healthy {
            self.act.cluster.want_lock(LockWant::Release);
        } else {
            st.verification_failed = Some(outcome_text.clone());
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
                format!("after nodemedic's reboot the node is {outcome_text}"),
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
                format!("after nodemedic's reboot the node is {outcome_text}"),
            ),
        );
    }
}
