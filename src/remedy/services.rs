//! The init-system edge: restart a unit, ask whether it is active.

#[cfg(any(test, feature = "fakes"))]
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `systemctl` answers in milliseconds; 10 s means PID 1 or D-Bus is wedged, and the
/// policy loop must not wait on it longer.
pub(crate) const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) trait ServiceManager: Send + Sync {
    /// Queues a restart of `unit` and returns once the job is accepted (`--no-block`: a k3s
    /// restart takes a minute on a Pi, and whether it helped is the detectors' call).
    fn restart(&self, unit: &str) -> Result<(), String>;
    fn is_active(&self, unit: &str) -> Result<bool, String>;
    /// Whether `unit` is in the `failed` state right now.
    fn is_failed(&self, unit: &str) -> Result<bool, String>;
    /// `systemctl reset-failed` then a queued `start` (`--no-block`, as restart).
    fn reset_failed_start(&self, unit: &str) -> Result<(), String>;
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let argv: Vec<String> = std::iter::once("systemctl")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    crate::edge::command::run_with_deadline(&argv, SYSTEMCTL_TIMEOUT)
}

/// The real thing: `systemctl`, each call bounded by [`SYSTEMCTL_TIMEOUT`].
pub(crate) struct Systemctl;

impl ServiceManager for Systemctl {
    fn restart(&self, unit: &str) -> Result<(), String> {
        systemctl(&["restart", "--no-block", unit])
    }

    fn is_active(&self, unit: &str) -> Result<bool, String> {
        // is-active exits 0 when active and non-zero otherwise; only a timeout or a spawn
        // failure is an error.
        match systemctl(&["is-active", "--quiet", unit]) {
            Ok(()) => Ok(true),
            Err(e) if e.contains("exit") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn is_failed(&self, unit: &str) -> Result<bool, String> {
        // is-failed: exit 0 only when failed.
        match systemctl(&["is-failed", "--quiet", unit]) {
            Ok(()) => Ok(true),
            Err(e) if e.contains("exit") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn reset_failed_start(&self, unit: &str) -> Result<(), String> {
        systemctl(&["reset-failed", unit]).map_err(|e| format!("reset-failed: {e}"))?;
        systemctl(&["start", "--no-block", unit]).map_err(|e| format!("start: {e}"))
    }
}

#[cfg(any(test, feature = "fakes"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceCall {
    Restart(String),
    IsActive(String),
    IsFailed(String),
    ResetFailedStart(String),
}

#[cfg(any(test, feature = "fakes"))]
/// Records calls; answers from a script.
#[derive(Clone, Default)]
pub struct RecordingServices {
    calls: Arc<Mutex<Vec<ServiceCall>>>,
    active: Arc<Mutex<bool>>,
    failed: Arc<Mutex<bool>>,
    fail_restart: Arc<Mutex<Option<String>>>,
}

#[cfg(any(test, feature = "fakes"))]
impl RecordingServices {
    pub fn new(active: bool) -> Self {
        let s = RecordingServices::default();
        *s.active.lock().unwrap() = active;
        s
    }
    pub fn calls(&self) -> Vec<ServiceCall> {
        self.calls.lock().unwrap().clone()
    }
    pub fn set_active(&self, a: bool) {
        *self.active.lock().unwrap() = a;
    }
    pub fn set_failed(&self, f: bool) {
        *self.failed.lock().unwrap() = f;
    }
    pub fn fail_restart_with(&self, e: &str) {
        *self.fail_restart.lock().unwrap() = Some(e.into());
    }
}

#[cfg(any(test, feature = "fakes"))]
impl ServiceManager for RecordingServices {
    fn restart(&self, unit: &str) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push(ServiceCall::Restart(unit.into()));
        match self.fail_restart.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    fn is_active(&self, unit: &str) -> Result<bool, String> {
        self.calls
            .lock()
            .unwrap()
            .push(ServiceCall::IsActive(unit.into()));
        Ok(*self.active.lock().unwrap())
    }
    fn is_failed(&self, unit: &str) -> Result<bool, String> {
        self.calls
            .lock()
            .unwrap()
            .push(ServiceCall::IsFailed(unit.into()));
        Ok(*self.failed.lock().unwrap())
    }
    fn reset_failed_start(&self, unit: &str) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push(ServiceCall::ResetFailedStart(unit.into()));
        Ok(())
    }
}

/// Resolves `k3s_unit = "auto"`: the server unit if installed, else the agent's.
pub(crate) fn resolve_k3s_unit(
    configured: &str,
    files: &dyn crate::edge::HostFiles,
) -> Option<String> {
    if configured != "auto" {
        return Some(configured.to_string());
    }
    for unit in ["k3s.service", "k3s-agent.service"] {
        for dir in [
            "etc/systemd/system",
            "lib/systemd/system",
            "usr/lib/systemd/system",
        ] {
            if files.read(&format!("{dir}/{unit}")).is_ok() {
                return Some(unit.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeFiles;

    #[test]
    fn auto_unit_prefers_the_server_and_falls_back_to_the_agent() {
        let both = FakeFiles::with(&[
            ("etc/systemd/system/k3s.service", "[Unit]"),
            ("etc/systemd/system/k3s-agent.service", "[Unit]"),
        ]);
        assert_eq!(
            resolve_k3s_unit("auto", &both).as_deref(),
            Some("k3s.service")
        );
        let agent = FakeFiles::with(&[("lib/systemd/system/k3s-agent.service", "[Unit]")]);
        assert_eq!(
            resolve_k3s_unit("auto", &agent).as_deref(),
            Some("k3s-agent.service")
        );
        assert_eq!(resolve_k3s_unit("auto", &FakeFiles::with(&[])), None);
        assert_eq!(
            resolve_k3s_unit("kubelet.service", &FakeFiles::with(&[])).as_deref(),
            Some("kubelet.service")
        );
    }

    #[test]
    fn systemctl_is_active_on_an_unknown_unit_is_false_not_an_error() {
        if std::process::Command::new("systemctl")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIP: no systemctl on this machine");
            return;
        }
        // Without systemd as PID 1 systemctl fails too; either way "not active".
        assert_eq!(
            Systemctl.is_active("nodemedic-no-such-unit-4711.service"),
            Ok(false)
        );
    }
}
