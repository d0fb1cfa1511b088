//! The reboot actuator: runs [`crate::remedy::reboot::reboot_node`] on its own thread, so the
//! policy loop keeps beating (and the hardware watchdog keeps being fed) while a graceful
//! shutdown is given its minutes. The caller has already persisted the audit record and
//! the reboot record (fsynced) before calling [`Rebooter::start`]; the sequence's own
//! persist step only confirms that.

#[cfg(any(test, feature = "fakes"))]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{ActionError, Target};
use crate::edge::SystemClock;
use crate::remedy::reboot::{LinuxReboot, RebootError, RebootPlan, RebootSystem, reboot_node};
use crate::watchdog::FeederHandle;

pub(crate) trait Rebooter: Send + Sync {
    /// Starts the reboot sequence and returns at once.
    fn start(&self, reason: &str) -> Result<(), ActionError>;
    /// The sequence ended and this process still runs: why (taken once). A reboot that
    /// does not happen must not leave the loop silent for the rest of the boot.
    fn ended_without_reboot(&self) -> Option<String>;
}

pub(crate) struct SystemRebooter {
    pub(crate) argv: Vec<String>,
    pub(crate) plan: RebootPlan,
    pub(crate) syscall_fallback: bool,
    pub(crate) feeder: Option<FeederHandle>,
    /// Set by the reboot thread when the sequence returns.
    pub(crate) ended: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Ask logind for the reboot first (`remedy.reboot_via_logind`).
    pub(crate) via_logind: bool,
}

/// [`LinuxReboot`] that refuses the reboot(2) fallback when the operator switched it off.
struct NoForce(LinuxReboot);

impl RebootSystem for NoForce {
    fn sync(&mut self) {
        self.0.sync()
    }
    fn request_graceful_reboot(&mut self) -> Result<(), RebootError> {
        self.0.request_graceful_reboot()
    }
    fn watchdog_timeout(&self) -> Option<Duration> {
        self.0.watchdog_timeout()
    }
    fn stop_watchdog_feeding(&mut self) {
        self.0.stop_watchdog_feeding()
    }
    fn reboot_syscall(&mut self) -> Result<(), RebootError> {
        Err(RebootError::FallbackDisabled)
    }
}

/// Test interlock: with this variable set the reboot path refuses unless nodemedic is PID 1
/// of its own PID namespace, where reboot(2) only ends the namespace. Integration tests set
/// it so that a mistake can never reboot the machine running them.
pub const ONLY_AS_PIDNS_INIT_ENV: &str = "NODEMEDIC_TEST_REBOOT_ONLY_AS_PIDNS_INIT";

impl Rebooter for SystemRebooter {
    fn start(&self, reason: &str) -> Result<(), ActionError> {
        if std::env::var_os(ONLY_AS_PIDNS_INIT_ENV).is_some() && std::process::id() != 1 {
            return Err(ActionError::refused(
                Target::Node,
                format!(
                    "{ONLY_AS_PIDNS_INIT_ENV} is set and nodemedic is not PID 1 of a PID namespace"
                ),
            ));
        }
        let mut linux = LinuxReboot::new(self.argv.clone(), self.feeder.clone());
        if self.via_logind {
            linux = linux.with_logind(Box::new(super::logind_reboot::LogindReboot::system()));
        }
        let mut sys: Box<dyn RebootSystem + Send> = if self.syscall_fallback {
            Box::new(linux)
        } else {
            Box::new(NoForce(linux))
        };
        let plan = self.plan;
        let reason = reason.to_string();
        let ended = self.ended.clone();
        std::thread::Builder::new()
            .name("reboot".into())
            .spawn(move || {
                log::warn!("reboot sequence started: {reason}");
                let r = reboot_node(sys.as_mut(), &SystemClock, &plan, || Ok::<(), String>(()));
                let why = match r {
                    Err(e) => e.to_string(),
                    Ok(_) => "reboot(2) returned and the node is still up".to_string(),
                };
                log::error!("reboot sequence ended without a reboot: {why}");
                *ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            })
            .map(|_| ())
            .map_err(|e| {
                ActionError::unavailable(
                    Target::Node,
                    format!("cannot start the reboot thread: {e}"),
                )
            })
    }

    fn ended_without_reboot(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[cfg(any(test, feature = "fakes"))]
/// Records reboot requests instead of rebooting.
#[derive(Clone, Default)]
pub struct RecordingRebooter {
    calls: Arc<Mutex<Vec<String>>>,
    fail_start: Arc<Mutex<Option<String>>>,
    ended: Arc<Mutex<Option<String>>>,
}

#[cfg(any(test, feature = "fakes"))]
impl RecordingRebooter {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    /// The next start fails (the reboot thread cannot be spawned).
    pub fn fail_next_start(&self, why: &str) {
        *self.fail_start.lock().unwrap() = Some(why.into());
    }
    /// The sequence started earlier ends with the node still up.
    pub fn end_without_reboot(&self, why: &str) {
        *self.ended.lock().unwrap() = Some(why.into());
    }
}

#[cfg(any(test, feature = "fakes"))]
impl Rebooter for RecordingRebooter {
    fn start(&self, reason: &str) -> Result<(), ActionError> {
        self.calls.lock().unwrap().push(reason.to_string());
        if let Some(e) = self.fail_start.lock().unwrap().take() {
            return Err(ActionError::unavailable(Target::Node, e));
        }
        Ok(())
    }
    fn ended_without_reboot(&self) -> Option<String> {
        self.ended.lock().unwrap().take()
    }
}
