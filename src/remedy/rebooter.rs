//! The reboot actuator: runs [`crate::remedy::reboot::reboot_node`] on its own thread, so the
//! policy loop keeps beating (and the hardware watchdog keeps being fed) while a graceful
//! shutdown is given its minutes. The caller has already persisted the audit record and
//! the reboot record (fsynced) before calling [`Rebooter::start`]; the sequence's own
//! persist step only confirms that.

#[cfg(any(test, feature = "fakes"))]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::edge::SystemClock;
use crate::remedy::reboot::{LinuxReboot, RebootError, RebootPlan, RebootSystem, reboot_node};
use crate::watchdog::FeederHandle;

pub(crate) trait Rebooter: Send + Sync {
    /// Starts the reboot sequence and returns at once.
    fn start(&self, reason: &str) -> Result<(), String>;
}

pub(crate) struct SystemRebooter {
    pub(crate) argv: Vec<String>,
    pub(crate) plan: RebootPlan,
    pub(crate) syscall_fallback: bool,
    pub(crate) feeder: Option<FeederHandle>,
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
    fn start(&self, reason: &str) -> Result<(), String> {
        if std::env::var_os(ONLY_AS_PIDNS_INIT_ENV).is_some() && std::process::id() != 1 {
            return Err(format!(
                "refusing to reboot: {ONLY_AS_PIDNS_INIT_ENV} is set and nodemedic is not PID 1 of a PID namespace"
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
        std::thread::Builder::new()
            .name("reboot".into())
            .spawn(move || {
                log::warn!("reboot sequence started: {reason}");
                let r = reboot_node(sys.as_mut(), &SystemClock, &plan, || Ok::<(), String>(()));
                if let Err(e) = r {
                    log::error!("reboot sequence ended without a reboot: {e}");
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start the reboot thread: {e}"))
    }
}

#[cfg(any(test, feature = "fakes"))]
/// Records reboot requests instead of rebooting.
#[derive(Clone, Default)]
pub struct RecordingRebooter {
    calls: Arc<Mutex<Vec<String>>>,
}

#[cfg(any(test, feature = "fakes"))]
impl RecordingRebooter {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[cfg(any(test, feature = "fakes"))]
impl Rebooter for RecordingRebooter {
    fn start(&self, reason: &str) -> Result<(), String> {
        self.calls.lock().unwrap().push(reason.to_string());
        Ok(())
    }
}
