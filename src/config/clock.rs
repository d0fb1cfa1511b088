//! `[clock]`: clock health while nodemedic runs (the kernel's NTP state, wall-clock steps).

use serde::{Deserialize, Serialize};

use super::checks::dur_range;
use super::duration::ConfigDuration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockSection {
    pub(crate) enabled: bool,
    pub(crate) interval: ConfigDuration,
    /// `ClockUnsynchronized` once the kernel has said "unsynchronised" this long.
    pub(crate) unsynced_after: ConfigDuration,
    /// A wall-clock jump against CLOCK_MONOTONIC at least this big between two passes is
    /// counted as a step.
    pub(crate) step_threshold: ConfigDuration,
}

impl Default for ClockSection {
    fn default() -> Self {
        ClockSection {
            enabled: true,
            // One adjtimex(2) and two clock reads: nothing; steps are seen within 30 s.
            interval: ConfigDuration::secs(30),
            // A Pi without RTC boots unsynchronised; NTP answers within a minute of the
            // network. 10 min leaves slow Wi-Fi and a DNS hiccup alone.
            unsynced_after: ConfigDuration::secs(600),
            // NTP daemons slew offsets under 128 ms (timesyncd) to 1 s (chrony's usual
            // makestep) and step above: a jump of 1 s or more is a step, not drift.
            step_threshold: ConfigDuration::secs(1),
        }
    }
}

impl ClockSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        dur_range(v, "clock.interval", self.interval, 1_000, 3_600_000);
        dur_range(
            v,
            "clock.unsynced_after",
            self.unsynced_after,
            0,
            7 * 86_400_000,
        );
        dur_range(
            v,
            "clock.step_threshold",
            self.step_threshold,
            10,
            3_600_000,
        );
    }
}
