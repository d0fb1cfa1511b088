//! The init-system edge: restart a unit, ask whether it is active.

#[cfg(any(test, feature = "fakes"))]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{ActionError, Target};
use crate::edge::command::{CommandError, run_with_deadline, stdout_with_deadline};

/// `systemctl` answers in milliseconds; 10 s means PID 1 or D-Bus is wedged, and the
/// policy loop must not wait on it longer.
pub(crate) const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(10);

/// A unit's `ActiveState` as systemd reports it (`systemctl show -p ActiveState`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UnitState {
    Active,
    Reloading,
    /// Starting: for k3s (`Type=notify`) until it reports READY, which a k3s hung before
    /// READY never does.
    Activating,
    Deactivating,
    /// Stopped: by an operator, or never started.
    Inactive,
    /// Ended in failure, or systemd's `Restart=` gave up.
    Failed,
    /// Anything newer systemd versions may add (`maintenance`, `refreshing`).
    Other(String),
}

impl UnitState {
    pub(crate) fn parse(s: &str) -> UnitState {
        match s.trim() {
            "active" => UnitState::Active,
            "reloading" => UnitState::Reloading,
            "activating" => UnitState::Activating,
            "deactivating" => UnitState::Deactivating,
            "inactive" => UnitState::Inactive,
            "failed" => UnitState::Failed,
            other => UnitState::Other(other.to_string()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            UnitState::Active => "active",
            UnitState::Reloading => "reloading",
            UnitState::Activating => "activating",
            UnitState::Deactivating => "deactivating",
            UnitState::Inactive => "inactive",
            UnitState::Failed => "failed",
            UnitState::Other(s) => s,
        }
    }

    /// Running as far as the post-boot check is concerned.
    pub(crate) fn is_active(&self) -> bool {
        matches!(self, UnitState::Active | UnitState::Reloading)
    }

    /// Stopped: by an operator, or systemd's own `Restart=` gave up. Restarting it behind
    /// their back is not a repair. Anything else may be restarted: a k3s hung before
    /// READY stays `activating` for ever.
    pub(crate) fn is_stopped(&self) -> bool {
        matches!(self, UnitState::Inactive | UnitState::Failed)
    }
}

pub(crate) trait ServiceManager: Send + Sync {
    /// Queues a restart of `unit` and returns once the job is accepted (`--no-block`: a k3s
    /// restart takes a minute on a Pi, and whether it helped is the detectors' call).
    fn restart(&self, unit: &str) -> Result<(), ActionError>;
    fn active_state(&self, unit: &str) -> Result<UnitState, ActionError>;
    /// `systemctl reset-failed` then a queued `start` (`--no-block`, as restart).
    fn reset_failed_start(&self, unit: &str) -> Result<(), ActionError>;
}

fn systemctl_argv(args: &[&str]) -> Vec<String> {
    std::iter::once("systemctl")
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

/// A systemctl that could not be run or did not answer means PID 1 is out of reach; one
/// that answered non-zero said no.
fn systemctl_error(unit: &str, e: CommandError) -> ActionError {
    let target = Target::Unit(unit.to_string());
    match e {
        CommandError::Exit { .. } => ActionError::failed(target, format!("systemctl: {e}")),
        _ => ActionError::unavailable(target, format!("systemctl: {e}")),
    }
}

/// The real thing: `systemctl`, each call bounded by [`SYSTEMCTL_TIMEOUT`].
pub(crate) struct Systemctl;

impl ServiceManager for Systemctl {
    fn restart(&self, unit: &str) -> Result<(), ActionError> {
        run_with_deadline(
            &systemctl_argv(&["restart", "--no-block", unit]),
            SYSTEMCTL_TIMEOUT,
        )
        .map_err(|e| systemctl_error(unit, e))
    }

    fn active_state(&self, unit: &str) -> Result<UnitState, ActionError> {
        // `show` exits 0 for any unit name, known or not (an unknown one is "inactive"),
        // so a non-zero exit means systemctl could not ask PID 1 (no systemd, no bus).
        stdout_with_deadline(
            &systemctl_argv(&["show", "-p", "ActiveState", "--value", unit]),
            SYSTEMCTL_TIMEOUT,
        )
        .map(|out| UnitState::parse(&out))
        .map_err(|e| {
            ActionError::unavailable(
                Target::Unit(unit.to_string()),
                format!("cannot ask systemd: {e}"),
            )
        })
    }

    fn reset_failed_start(&self, unit: &str) -> Result<(), ActionError> {
        run_with_deadline(&systemctl_argv(&["reset-failed", unit]), SYSTEMCTL_TIMEOUT)
            .map_err(|e| systemctl_error(unit, e))?;
        run_with_deadline(
            &systemctl_argv(&["start", "--no-block", unit]),
            SYSTEMCTL_TIMEOUT,
        )
        .map_err(|e| systemctl_error(unit, e))
    }
}

#[cfg(any(test, feature = "fakes"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceCall {
    Restart(String),
    ActiveState(String),
    ResetFailedStart(String),
}

#[cfg(any(test, feature = "fakes"))]
/// Records calls; answers from a script.
#[derive(Clone)]
pub struct RecordingServices {
    calls: Arc<Mutex<Vec<ServiceCall>>>,
    state: Arc<Mutex<UnitState>>,
    fail_restart: Arc<Mutex<Option<ActionError>>>,
}

#[cfg(any(test, feature = "fakes"))]
impl RecordingServices {
    pub fn new(active: bool) -> Self {
        RecordingServices {
            calls: Arc::default(),
            state: Arc::new(Mutex::new(if active {
                UnitState::Active
            } else {
                UnitState::Inactive
            })),
            fail_restart: Arc::default(),
        }
    }
    pub fn calls(&self) -> Vec<ServiceCall> {
        self.calls.lock().unwrap().clone()
    }
    pub fn set_active(&self, a: bool) {
        self.set_state(if a {
            UnitState::Active
        } else {
            UnitState::Inactive
        });
    }
    pub(crate) fn set_state(&self, s: UnitState) {
        *self.state.lock().unwrap() = s;
    }
    /// `failed`, or (false) running again.
    pub fn set_failed(&self, f: bool) {
        self.set_state(if f {
            UnitState::Failed
        } else {
            UnitState::Active
        });
    }
    #[cfg(test)]
    pub(crate) fn fail_restart_with(&self, e: ActionError) {
        *self.fail_restart.lock().unwrap() = Some(e);
    }
}

#[cfg(any(test, feature = "fakes"))]
impl ServiceManager for RecordingServices {
    fn restart(&self, unit: &str) -> Result<(), ActionError> {
        self.calls
            .lock()
            .unwrap()
            .push(ServiceCall::Restart(unit.into()));
        match self.fail_restart.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    fn active_state(&self, unit: &str) -> Result<UnitState, ActionError> {
        self.calls
            .lock()
            .unwrap()
            .push(ServiceCall::ActiveState(unit.into()));
        Ok(self.state.lock().unwrap().clone())
    }
    fn reset_failed_start(&self, unit: &str) -> Result<(), ActionError> {
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
    fn unit_states_parse_as_systemd_spells_them() {
        for s in [
            "active",
            "reloading",
            "activating",
            "deactivating",
            "inactive",
            "failed",
            "maintenance",
        ] {
            assert_eq!(UnitState::parse(&format!("{s}\n")).as_str(), s);
        }
        assert!(UnitState::Active.is_active() && UnitState::Reloading.is_active());
        assert!(!UnitState::Activating.is_active());
    }

    #[test]
    fn systemctl_without_a_reachable_pid1_is_unavailable_not_a_unit_state() {
        if std::process::Command::new("systemctl")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIP: no systemctl on this machine");
            return;
        }
        // This machine has no systemd as PID 1 (the CI machine neither): `show` cannot
        // reach it and that is "unavailable", never "inactive". Under systemd an unknown
        // unit is "inactive".
        match Systemctl.active_state("nodemedic-no-such-unit-4711.service") {
            Ok(s) => assert_eq!(s, UnitState::Inactive),
            Err(e) => {
                assert!(e.retryable(), "{e}");
                assert!(e.to_string().contains("nodemedic-no-such-unit-4711"), "{e}");
            }
        }
    }
}
