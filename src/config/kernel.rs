//! `[kernel]`: the kernel-log detector's thresholds (see `kernel::judge` for how they are
//! applied).

use serde::{Deserialize, Serialize};

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KernelSection {
    pub(crate) enabled: bool,
    /// FOR TESTS ONLY: also classify records userspace wrote to /dev/kmsg.
    pub(crate) accept_non_kernel_facilities: bool,
    /// Kernel tick rate to convert jiffies; 0 learns it from /proc/config.gz or /boot.
    pub(crate) hz: u32,
    pub(crate) long_stall: ConfigDuration,
    pub(crate) short_stall_burst: u32,
    pub(crate) short_stall_window: ConfigDuration,
    pub(crate) quiet: ConfigDuration,
}

impl Default for KernelSection {
    fn default() -> Self {
        KernelSection {
            enabled: true,
            accept_non_kernel_facilities: false,
            hz: 0,
            // The Pi's benign expedited stalls last ~21 jiffies (84 ms at HZ=250); a
            // second of a CPU refusing to pass a grace period is not benign.
            long_stall: ConfigDuration::secs(1),
            // Dozens per hour is normal on a Pi; 30 in 10 minutes (180/h) is a storm.
            short_stall_burst: 30,
            short_stall_window: ConfigDuration::secs(600),
            // A kernel condition holds this long after its last event.
            quiet: ConfigDuration::secs(900),
        }
    }
}

impl KernelSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        if self.hz != 0 {
            range(v, "kernel.hz", self.hz.into(), 24, 10_000);
        }
        dur_range(v, "kernel.long_stall", self.long_stall, 10, 600_000);
        range(
            v,
            "kernel.short_stall_burst",
            self.short_stall_burst.into(),
            1,
            100_000,
        );
        dur_range(
            v,
            "kernel.short_stall_window",
            self.short_stall_window,
            10_000,
            86_400_000,
        );
        dur_range(v, "kernel.quiet", self.quiet, 10_000, 86_400_000);
    }
}
