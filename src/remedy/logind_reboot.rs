//! The graceful reboot through logind (`org.freedesktop.login1.Manager.Reboot`), so delay
//! inhibitors are honoured: the kubelet's graceful node shutdown holds one for
//! `shutdown-grace-period`, and logind sends `PrepareForShutdown` and waits for it (up to
//! `InhibitDelayMaxSec`) before it starts `reboot.target`. The call returns as soon as
//! logind accepted the request. When logind is not on the bus, [`super::reboot`] falls back
//! to `remedy.reboot_command`.

use std::time::Duration;

use crate::edge::dbus::{Bus, DbusError};

use super::reboot::LogindPower;

/// logind answers a reboot request at once (the wait for inhibitors happens after the
/// reply); 10 s means it or the bus is wedged, as for `systemctl reboot`.
pub(crate) const LOGIND_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct LogindReboot {
    bus: Bus,
}

impl LogindReboot {
    pub(crate) fn system() -> Self {
        LogindReboot {
            bus: Bus::system(LOGIND_TIMEOUT),
        }
    }
}

impl LogindPower for LogindReboot {
    fn reboot(&mut self) -> Result<(), DbusError> {
        // interactive = false: no polkit prompt; root with CAP_SYS_BOOT is allowed.
        self.bus.call::<_, ()>(
            "org.freedesktop.login1",
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager",
            "Reboot",
            &(false,),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remedy::reboot::{LinuxReboot, RebootError, RebootSystem};
    use std::sync::{Arc, Mutex};

    /// Answers from a script and counts calls.
    struct ScriptedLogind {
        answer: Result<(), DbusError>,
        calls: Arc<Mutex<u32>>,
    }

    impl LogindPower for ScriptedLogind {
        fn reboot(&mut self) -> Result<(), DbusError> {
            *self.calls.lock().unwrap() += 1;
            self.answer.clone()
        }
    }

    fn linux(argv: &[&str], answer: Result<(), DbusError>) -> (LinuxReboot, Arc<Mutex<u32>>) {
        let calls = Arc::new(Mutex::new(0));
        let l = LinuxReboot::new(argv.iter().map(|s| s.to_string()).collect(), None).with_logind(
            Box::new(ScriptedLogind {
                answer,
                calls: calls.clone(),
            }),
        );
        (l, calls)
    }

    #[test]
    fn logind_taking_the_reboot_means_the_command_never_runs() {
        // `false` would fail the request if it ran.
        let (mut l, calls) = linux(&["false"], Ok(()));
        assert!(l.request_graceful_reboot().is_ok());
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[test]
    fn without_logind_the_existing_command_is_the_graceful_path() {
        let absent = Err(DbusError::NoService(
            "The name org.freedesktop.login1 was not provided by any .service files".into(),
        ));
        let (mut l, calls) = linux(&["true"], absent.clone());
        assert!(l.request_graceful_reboot().is_ok(), "fell back to `true`");
        assert_eq!(*calls.lock().unwrap(), 1);
        let (mut l, _) = linux(&["false"], absent);
        assert!(matches!(
            l.request_graceful_reboot(),
            Err(RebootError::Graceful { .. })
        ));
        // No bus at all, or logind refusing: the command too.
        let (mut l, _) = linux(&["true"], Err(DbusError::NoBus("ENOENT".into())));
        assert!(l.request_graceful_reboot().is_ok());
    }
}
