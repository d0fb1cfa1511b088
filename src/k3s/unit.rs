//! The k3s unit's own state, from systemd over D-Bus (`org.freedesktop.systemd1`): the
//! properties `systemctl show` prints, read one by one under the bus deadline.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::edge::dbus::{Bus, DbusError};

const SYSTEMD: &str = "org.freedesktop.systemd1";
const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";

/// What systemd says about the unit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnitProperties {
    /// `loaded`, `not-found`, `masked`...
    pub load_state: String,
    /// `active`, `reloading`, `inactive`, `failed`, `activating`, `deactivating`.
    pub active_state: String,
    pub sub_state: String,
    /// Why it last stopped: `success`, `exit-code`, `signal`, `core-dump`, `watchdog`,
    /// `start-limit-hit`, `timeout`...
    pub result: String,
    /// 0 when no main process runs.
    pub main_pid: u32,
    /// Automatic restarts since the last manual start (a manual start resets it).
    pub n_restarts: u32,
    /// CLOCK_MONOTONIC when the unit last became active, microseconds (0: never).
    pub active_enter_mono_usec: u64,
    /// The unit file and its drop-ins (for the reboot-readiness check).
    pub fragment_path: String,
    pub drop_in_paths: Vec<String>,
}

impl UnitProperties {
    /// The main process runs (k3s is up, starting, or wedged).
    pub(crate) fn main_process(&self) -> bool {
        self.main_pid != 0
    }

    /// Stopped on purpose: `systemctl stop` leaves `inactive` with `Result=success`
    /// (a failure leaves `failed`).
    pub(crate) fn stopped_by_operator(&self) -> bool {
        self.active_state == "inactive" && self.result == "success"
    }
}

/// Where the unit's state comes from.
pub trait UnitSource: Send {
    fn read(&mut self, unit: &str) -> Result<UnitProperties, String>;
}

/// The D-Bus object path of a unit: sd_bus_path_encode(), every byte outside
/// `[A-Za-z0-9]` (and a leading digit) as `_xx`.
pub(crate) fn unit_object_path(unit: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            p.push(b as char);
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

/// systemd over the system bus, shared with the logind reader (one connection).
pub(crate) struct SystemdUnits {
    pub(crate) bus: Arc<Mutex<Bus>>,
}

impl UnitSource for SystemdUnits {
    fn read(&mut self, unit: &str) -> Result<UnitProperties, String> {
        let path = unit_object_path(unit);
        let mut bus = self.bus.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = |iface: &str, name: &str| -> Result<String, DbusError> {
            bus.property::<String>(SYSTEMD, &path, iface, name)
        };
        let what = |e: DbusError| format!("systemd's state of {unit}: {e}");
        let load_state = s(UNIT_IFACE, "LoadState").map_err(what)?;
        let active_state = s(UNIT_IFACE, "ActiveState").map_err(what)?;
        let sub_state = s(UNIT_IFACE, "SubState").map_err(what)?;
        let result = s(SERVICE_IFACE, "Result").map_err(what)?;
        let fragment_path = s(UNIT_IFACE, "FragmentPath").map_err(what)?;
        let main_pid = bus
            .property::<u32>(SYSTEMD, &path, SERVICE_IFACE, "MainPID")
            .map_err(what)?;
        let n_restarts = bus
            .property::<u32>(SYSTEMD, &path, SERVICE_IFACE, "NRestarts")
            .map_err(what)?;
        let active_enter_mono_usec = bus
            .property::<u64>(SYSTEMD, &path, UNIT_IFACE, "ActiveEnterTimestampMonotonic")
            .map_err(what)?;
        let drop_in_paths = bus
            .property::<Vec<String>>(SYSTEMD, &path, UNIT_IFACE, "DropInPaths")
            .map_err(what)?;
        Ok(UnitProperties {
            load_state,
            active_state,
            sub_state,
            result,
            main_pid,
            n_restarts,
            active_enter_mono_usec,
            fragment_path,
            drop_in_paths,
        })
    }
}

#[cfg(any(test, feature = "fakes"))]
/// Answers the state tests set; records the units asked about.
#[derive(Clone)]
pub struct FakeUnits {
    pub state: Arc<Mutex<Result<UnitProperties, String>>>,
    pub asked: Arc<Mutex<Vec<String>>>,
}

#[cfg(any(test, feature = "fakes"))]
impl FakeUnits {
    pub fn new(s: UnitProperties) -> Self {
        FakeUnits {
            state: Arc::new(Mutex::new(Ok(s))),
            asked: Arc::default(),
        }
    }
    pub fn set(&self, s: Result<UnitProperties, String>) {
        *self.state.lock().unwrap() = s;
    }
    pub fn update(&self, f: impl FnOnce(&mut UnitProperties)) {
        if let Ok(s) = &mut *self.state.lock().unwrap() {
            f(s);
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
impl UnitSource for FakeUnits {
    fn read(&mut self, unit: &str) -> Result<UnitProperties, String> {
        self.asked.lock().unwrap().push(unit.to_string());
        self.state.lock().unwrap().clone()
    }
}

#[cfg(any(test, feature = "fakes"))]
/// A running unit with a main process, as a test's starting point.
pub fn running_unit() -> UnitProperties {
    UnitProperties {
        load_state: "loaded".into(),
        active_state: "active".into(),
        sub_state: "running".into(),
        result: "success".into(),
        main_pid: 812,
        n_restarts: 0,
        active_enter_mono_usec: 1,
        fragment_path: "/etc/systemd/system/k3s.service".into(),
        drop_in_paths: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_become_systemds_object_paths() {
        assert_eq!(
            unit_object_path("k3s.service"),
            "/org/freedesktop/systemd1/unit/k3s_2eservice"
        );
        assert_eq!(
            unit_object_path("k3s-agent.service"),
            "/org/freedesktop/systemd1/unit/k3s_2dagent_2eservice"
        );
        assert_eq!(
            unit_object_path("1x.service"),
            "/org/freedesktop/systemd1/unit/_31x_2eservice"
        );
    }

    #[test]
    fn an_operators_stop_is_inactive_with_success_and_a_failure_is_failed() {
        let mut s = running_unit();
        assert!(s.main_process() && !s.stopped_by_operator());
        s.active_state = "inactive".into();
        s.main_pid = 0;
        assert!(s.stopped_by_operator());
        s.active_state = "failed".into();
        s.result = "exit-code".into();
        assert!(!s.stopped_by_operator());
    }
}
