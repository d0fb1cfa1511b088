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
