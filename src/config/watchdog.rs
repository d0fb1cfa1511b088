//! `[watchdog]`: who holds the hardware watchdog device, and its timeout.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::checks::dur_range;
use super::duration::ConfigDuration;

/// The kernel's first watchdog; `/dev/watchdog0` is the same device on current kernels.
pub(crate) const DEFAULT_DEVICE: &str = "/dev/watchdog";
/// The Pi's hardware maximum, so the default is what a Pi really runs with.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Opt-in: holding the device means a crashed nodemedic resets the board, and systemd may
/// already own it; the operator chooses who holds it.
pub(crate) const DEFAULT_OWNER: Owner = Owner::None;
/// A clean `systemctl stop nodemedic` (upgrades, maintenance) disarms the timer by default.
pub(crate) const DEFAULT_NO_WAY_OUT: bool = false;
/// Below 3 s a single late wake-up of the feeder thread on a loaded Pi resets the board.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Who holds the hardware watchdog device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Owner {
    /// nodemedic opens and feeds it while its loops are alive.
    Nodemedic,
    /// systemd's `RuntimeWatchdogSec=` holds it; nodemedic never opens it.
    Systemd,
    /// Nobody (or something else); nodemedic never opens it.
    None,
}

/// `[watchdog]` in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WatchdogSection {
    pub(crate) owner: Owner,
    pub(crate) device: String,
    pub(crate) timeout: ConfigDuration,
    pub(crate) no_way_out: bool,
}

impl Default for WatchdogSection {
    fn default() -> Self {
        WatchdogSection {
            owner: DEFAULT_OWNER,
            device: DEFAULT_DEVICE.into(),
            timeout: ConfigDuration(DEFAULT_TIMEOUT),
            no_way_out: DEFAULT_NO_WAY_OUT,
        }
    }
}

impl WatchdogSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        if !self.device.starts_with('/') {
            v.push(format!(
                "key `watchdog.device` = \"{}\" must be an absolute path such as \"{DEFAULT_DEVICE}\"",
                self.device
            ));
        }
        // Longer than a few minutes is no watchdog at all; the driver clamps further.
        dur_range(
            v,
            "watchdog.timeout",
            self.timeout,
            MIN_TIMEOUT.as_millis() as u64,
            600_000,
        );
    }
}
