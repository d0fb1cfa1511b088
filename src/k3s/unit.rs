//! The k3s unit's own state, from systemd over D-Bus (`org.freedesktop.systemd1`): the
//! properties `systemctl show` prints, two `GetAll` calls under the bus deadline.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use zbus::zvariant::{Type, as_value};

use crate::edge::dbus::Bus;

const SYSTEMD: &str = "org.freedesktop.systemd1";
const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";

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

/// The unit's `org.freedesktop.systemd1.Unit` properties the detector uses, out of the
/// ~150 that `GetAll` returns (the others are skipped unread).
#[derive(Debug, Default, Deserialize, Type)]
#[zvariant(signature = "dict", crate = "zbus::zvariant")]
#[serde(default)]
struct UnitDict {
    #[serde(rename = "LoadState", with = "as_value::optional")]
    load_state: Option<String>,
    #[serde(rename = "ActiveState", with = "as_value::optional")]
    active_state: Option<String>,
    #[serde(rename = "SubState", with = "as_value::optional")]
    sub_state: Option<String>,
    #[serde(rename = "FragmentPath", with = "as_value::optional")]
    fragment_path: Option<String>,
    #[serde(rename = "ActiveEnterTimestampMonotonic", with = "as_value::optional")]
    active_enter_mono_usec: Option<u64>,
    #[serde(rename = "DropInPaths", with = "as_value::optional")]
    drop_in_paths: Option<Vec<String>>,
}

/// Its `org.freedesktop.systemd1.Service` properties the detector uses.
#[derive(Debug, Default, Deserialize, Type)]
#[zvariant(signature = "dict", crate = "zbus::zvariant")]
#[serde(default)]
struct ServiceDict {
    #[serde(rename = "Result", with = "as_value::optional")]
    result: Option<String>,
    #[serde(rename = "MainPID", with = "as_value::optional")]
    main_pid: Option<u32>,
    #[serde(rename = "NRestarts", with = "as_value::optional")]
    n_restarts: Option<u32>,
}

/// A property systemd did not send: an older systemd, or not a service unit.
fn required<T>(v: Option<T>, iface: &str, name: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("systemd sent no {iface}.{name}"))
}

impl UnitSource for SystemdUnits {
    /// Two `GetAll` calls (one per interface) rather than a `Get` per property: each call
    /// is a round trip through dbus-daemon and PID 1, two wake-ups of this process, and
    /// this runs every pass (nine `Get`s were ~100 of the daemon's ~140 wake-ups a minute
    /// with k3s; BENCHMARKS.md, "Stop 30").
    fn read(&mut self, unit: &str) -> Result<UnitProperties, String> {
        let path = unit_object_path(unit);
        let mut bus = self.bus.lock().unwrap_or_else(|p| p.into_inner());
        let what = |e: String| format!("systemd's state of {unit}: {e}");
        let u: UnitDict = bus
            .call(SYSTEMD, &path, PROPERTIES_IFACE, "GetAll", &(UNIT_IFACE,))
            .map_err(|e| what(e.to_string()))?;
        let s: ServiceDict = bus
            .call(
                SYSTEMD,
                &path,
                PROPERTIES_IFACE,
                "GetAll",
                &(SERVICE_IFACE,),
            )
            .map_err(|e| what(e.to_string()))?;
        drop(bus);
        properties(u, s).map_err(what)
    }
}

/// The two replies as one [`UnitProperties`].
fn properties(u: UnitDict, s: ServiceDict) -> Result<UnitProperties, String> {
    Ok(UnitProperties {
        load_state: required(u.load_state, UNIT_IFACE, "LoadState")?,
        active_state: required(u.active_state, UNIT_IFACE, "ActiveState")?,
        sub_state: required(u.sub_state, UNIT_IFACE, "SubState")?,
        result: required(s.result, SERVICE_IFACE, "Result")?,
        main_pid: required(s.main_pid, SERVICE_IFACE, "MainPID")?,
        n_restarts: required(s.n_restarts, SERVICE_IFACE, "NRestarts")?,
        active_enter_mono_usec: required(
            u.active_enter_mono_usec,
            UNIT_IFACE,
            "ActiveEnterTimestampMonotonic",
        )?,
        fragment_path: required(u.fragment_path, UNIT_IFACE, "FragmentPath")?,
        drop_in_paths: u.drop_in_paths.unwrap_or_default(),
    })
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

    /// An `a{sv}` body as systemd sends it, decoded as the detector decodes replies.
    fn decode<T: serde::de::DeserializeOwned + Type>(
        props: &[(&str, zbus::zvariant::Value<'_>)],
    ) -> T {
        use zbus::zvariant::serialized::Context;
        let map: std::collections::HashMap<&str, &zbus::zvariant::Value<'_>> =
            props.iter().map(|(k, v)| (*k, v)).collect();
        let ctxt = Context::new_dbus(zbus::zvariant::LE, 0);
        let bytes = zbus::zvariant::to_bytes(ctxt, &map).unwrap();
        bytes.deserialize::<T>().unwrap().0
    }

    #[test]
    fn get_all_replies_keep_the_properties_used_and_skip_the_rest() {
        use zbus::zvariant::Value;
        let u: UnitDict = decode(&[
            ("Id", Value::from("k3s.service")),
            ("LoadState", Value::from("loaded")),
            ("ActiveState", Value::from("active")),
            ("SubState", Value::from("running")),
            ("Names", Value::from(vec!["k3s.service"])),
            (
                "FragmentPath",
                Value::from("/etc/systemd/system/k3s.service"),
            ),
            ("ActiveEnterTimestampMonotonic", Value::from(123_456_789u64)),
            (
                "DropInPaths",
                Value::from(vec!["/run/a.conf", "/etc/b.conf"]),
            ),
            ("CanStart", Value::from(true)),
            (
                "Conditions",
                Value::from(vec![("x", false, true, "y", 3i32)]),
            ),
        ]);
        assert_eq!(u.load_state.as_deref(), Some("loaded"));
        assert_eq!(u.active_state.as_deref(), Some("active"));
        assert_eq!(u.sub_state.as_deref(), Some("running"));
        assert_eq!(u.active_enter_mono_usec, Some(123_456_789));
        assert_eq!(
            u.drop_in_paths,
            Some(vec!["/run/a.conf".to_string(), "/etc/b.conf".to_string()])
        );
        let s: ServiceDict = decode(&[
            ("Type", Value::from("notify")),
            ("Result", Value::from("exit-code")),
            ("MainPID", Value::from(812u32)),
            ("NRestarts", Value::from(7u32)),
            ("ExecMainStatus", Value::from(1i32)),
        ]);
        assert_eq!(s.result.as_deref(), Some("exit-code"));
        assert_eq!((s.main_pid, s.n_restarts), (Some(812), Some(7)));
        // What systemd did not send is missing, and named when required.
        let s: ServiceDict = decode(&[("Result", Value::from("success"))]);
        assert_eq!(s.main_pid, None);
        assert_eq!(
            required(s.main_pid, SERVICE_IFACE, "MainPID").unwrap_err(),
            "systemd sent no org.freedesktop.systemd1.Service.MainPID"
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
