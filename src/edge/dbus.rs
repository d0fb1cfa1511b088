//! The system bus, synchronously and under a deadline: systemd's unit properties (the k3s
//! detector), logind's inhibitors and reboot (reboot readiness, the reboot path).
//!
//! zbus, trimmed to its tokio backend: no executor thread of its own, no async-io. Each
//! [`Bus`] owns a current-thread tokio runtime that runs only inside a call, so an idle bus
//! costs no wake-ups; every call is bounded by the bus's timeout, and a connection that
//! failed or timed out is dropped and made again on the next call (a restarted dbus-daemon
//! or a wedged PID 1 never leaves a half-dead connection behind).

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use zbus::zvariant::{DynamicType, OwnedValue, Type};

/// Where the system bus is when `DBUS_SYSTEM_BUS_ADDRESS` is not set (dbus(7)).
pub(crate) const SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

/// Why a call did not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbusError {
    /// No bus to talk to (socket missing or refused): no systemd here, or it is starting.
    NoBus(String),
    /// The bus has no one owning the destination name (logind not running).
    NoService(String),
    /// No answer within the deadline.
    Timeout(Duration),
    /// The service answered with an error (`org.freedesktop.DBus.Error.AccessDenied`...).
    Refused { name: String, message: String },
    /// Anything else (a reply of the wrong type, a broken connection).
    Other(String),
}

impl fmt::Display for DbusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbusError::NoBus(e) => write!(f, "no D-Bus system bus: {e}"),
            DbusError::NoService(e) => write!(f, "not on the bus: {e}"),
            DbusError::Timeout(d) => write!(f, "no D-Bus answer within {} ms", d.as_millis()),
            DbusError::Refused { name, message } => write!(f, "{name}: {message}"),
            DbusError::Other(e) => write!(f, "{e}"),
        }
    }
}

fn map_err(e: zbus::Error) -> DbusError {
    match e {
        zbus::Error::MethodError(name, message, _) => {
            let name = name.to_string();
            let message = message.unwrap_or_default();
            if name == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
            {
                DbusError::NoService(message)
            } else {
                DbusError::Refused { name, message }
            }
        }
        zbus::Error::FDO(e) => match *e {
            zbus::fdo::Error::ServiceUnknown(m) | zbus::fdo::Error::NameHasNoOwner(m) => {
                DbusError::NoService(m)
            }
            other => DbusError::Other(other.to_string()),
        },
        zbus::Error::InputOutput(e) => DbusError::NoBus(e.to_string()),
        e @ zbus::Error::Connection(..) => DbusError::NoBus(e.to_string()),
        zbus::Error::Address(e) => DbusError::NoBus(e),
        other => DbusError::Other(other.to_string()),
    }
}

/// One connection to a bus, made on first use.
pub struct Bus {
    address: String,
    timeout: Duration,
    rt: Option<tokio::runtime::Runtime>,
    conn: Option<zbus::Connection>,
}

impl Bus {
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else [`SYSTEM_BUS`]).
    pub fn system(timeout: Duration) -> Bus {
        let address =
            std::env::var("DBUS_SYSTEM_BUS_ADDRESS").unwrap_or_else(|_| SYSTEM_BUS.to_string());
        Bus::at(&address, timeout)
    }

    /// A bus at a D-Bus address (`unix:path=...`); tests run their own dbus-daemon.
    pub fn at(address: &str, timeout: Duration) -> Bus {
        Bus {
            address: address.to_string(),
            timeout,
            rt: None,
            conn: None,
        }
    }

    fn runtime(&mut self) -> Result<&tokio::runtime::Runtime, DbusError> {
        if self.rt.is_none() {
            self.rt = Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| DbusError::Other(format!("cannot build a runtime: {e}")))?,
            );
        }
        Ok(self.rt.as_ref().expect("just built"))
    }

    /// Calls `method` and decodes the reply body as `R`, within the bus's timeout
    /// (connecting included).
    pub fn call<B, R>(
        &mut self,
        dest: &str,
        path: &str,
        iface: &str,
        method: &str,
        body: &B,
    ) -> Result<R, DbusError>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + Type,
    {
        let timeout = self.timeout;
        let address = self.address.clone();
        let conn = self.conn.clone();
        let rt = self.runtime()?;
        let result = rt.block_on(async {
            tokio::time::timeout(timeout, async {
                let conn = match conn {
                    Some(c) => c,
                    None => zbus::connection::Builder::address(address.as_str())
                        .map_err(map_err)?
                        .build()
                        .await
                        .map_err(map_err)?,
                };
                let reply = conn
                    .call_method(Some(dest), path, Some(iface), method, body)
                    .await
                    .map_err(map_err)?;
                let value: R = reply
                    .body()
                    .deserialize()
                    .map_err(|e| DbusError::Other(format!("{iface}.{method}: {e}")))?;
                Ok::<_, DbusError>((conn, value))
            })
            .await
            .unwrap_or(Err(DbusError::Timeout(timeout)))
        });
        match result {
            Ok((conn, v)) => {
                self.conn = Some(conn);
                Ok(v)
            }
            Err(e) => {
                // A refusal is an answer: the connection is fine. Anything else: start over.
                if !matches!(e, DbusError::Refused { .. } | DbusError::NoService(_)) {
                    self.conn = None;
                }
                Err(e)
            }
        }
    }

    /// `org.freedesktop.DBus.Properties.Get`, converted to `T`.
    pub fn property<T>(
        &mut self,
        dest: &str,
        path: &str,
        iface: &str,
        name: &str,
    ) -> Result<T, DbusError>
    where
        T: TryFrom<OwnedValue>,
        T::Error: fmt::Display,
    {
        let v: OwnedValue = self.call(
            dest,
            path,
            "org.freedesktop.DBus.Properties",
            "Get",
            &(iface, name),
        )?;
        T::try_from(v).map_err(|e| DbusError::Other(format!("{iface}.{name}: {e}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    /// A private dbus-daemon on a socket in `dir`; None (with a note) where dbus-daemon is
    /// not installed.
    pub(crate) fn private_bus(dir: &Path) -> Option<(Child, String)> {
        let sock = dir.join("bus");
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                sock.display()
            ),
        )
        .unwrap();
        let child = match Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                crate::edge::dbus::tests::skip(&format!("no dbus-daemon ({e})"));
                return None;
            }
        };
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(std::time::Instant::now() < end, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some((child, format!("unix:path={}", sock.display())))
    }

    pub(crate) fn skip(why: &str) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why}: scripts/deps.sh installs the dbus package"
        );
        eprintln!("SKIP: {why}");
    }

    #[test]
    fn a_real_bus_answers_calls_and_properties_and_names_missing_services() {
        let d = tempfile::tempdir().unwrap();
        let Some((mut daemon, addr)) = private_bus(d.path()) else {
            return;
        };
        let mut bus = Bus::at(&addr, Duration::from_secs(5));
        let id: String = bus
            .call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "GetId",
                &(),
            )
            .unwrap();
        assert_eq!(id.len(), 32, "{id}");
        let features: Vec<String> = bus
            .property(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "Features",
            )
            .unwrap();
        let _ = features;
        let e = bus
            .property::<u32>(
                "org.freedesktop.login1",
                "/org/freedesktop/login1",
                "org.freedesktop.login1.Manager",
                "InhibitDelayMaxUSec",
            )
            .unwrap_err();
        assert!(matches!(e, DbusError::NoService(_)), "{e:?}");
        let _ = daemon.kill();
        let _ = daemon.wait();
        let e = bus
            .call::<_, String>(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "GetId",
                &(),
            )
            .unwrap_err();
        assert!(
            matches!(e, DbusError::NoBus(_) | DbusError::Other(_)),
            "a dead bus is an error, not a hang: {e:?}"
        );
    }

    #[test]
    fn no_bus_at_all_is_an_error_at_once() {
        let mut bus = Bus::at("unix:path=/nonexistent/bus", Duration::from_secs(5));
        let t = std::time::Instant::now();
        let e = bus
            .call::<_, String>("a.b", "/", "a.b", "C", &())
            .unwrap_err();
        assert!(matches!(e, DbusError::NoBus(_)), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
