//! Remediation: the daemon's policy loop and the actuators it drives.
//!
//! The pure engine ([`crate::policy::engine`]) says what to do; this module does it and
//! leaves a trace of every decision (taken, dry-run, suppressed, failed) in four places:
//! the fsynced audit trail, the journal, the metrics and `/status` (plus a Kubernetes
//! Event when the API is reachable).
//!
//! | file | edge |
//! |---|---|
//! | [`policy_loop`] | ties hub, engine, state, audit and actuators together, one tick at a time |
//! | [`services`] | `systemctl` (restart k3s, is-active) behind [`services::ServiceManager`] |
//! | [`rebooter`] | the watchdog-backed reboot path behind [`rebooter::Rebooter`] |
//! | [`logind_reboot`] | the graceful reboot through logind (delay inhibitors honoured) |
//! | [`cluster`] | the wish board between the policy thread and the async Kubernetes task |
//! | [`metrics`] | escalation step, reboots, budget, pause |
//!
//! Every actuator is a small trait with a real implementation and a recording fake, so the
//! loop is tested with fakes step by step and the real edges are tested one by one.

pub mod actuators;
pub(crate) mod cluster;
pub(crate) mod detector_events;
pub(crate) mod error;
pub(crate) mod logind_reboot;
pub mod metrics;
pub(crate) mod policy_loop;
pub mod reboot;
pub mod rebooter;
pub(crate) mod record;
pub(crate) mod servers;
pub mod services;
pub(crate) mod verify;

#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod k3s_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod repair_tests;
#[cfg(test)]
pub(crate) mod tests;

/// The policy loop's wait while nothing is held, no reboot is under way and no post-boot
/// check is owed: a condition change wakes it at once anyway, so this only bounds how late
/// a reset request, the pause file and the watchdog gauges are read: twice a minute
/// (issue 24: at most 30 wake-ups a minute for the whole daemon).
pub(crate) const IDLE_TICK: std::time::Duration = std::time::Duration::from_secs(30);
