//! `[power]`: the power and thermal detector (`power::judge` applies these) and how the
//! previous boot's end is read (`power::boot_end`).

use serde::{Deserialize, Serialize};

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PowerSection {
    pub(crate) enabled: bool,
    /// Thermal zones and the firmware's throttle flags are read this often.
    pub(crate) interval: ConfigDuration,
    /// How often the under-voltage alarm is read when it cannot be waited on with poll(2).
    pub(crate) alarm_fallback_interval: ConfigDuration,
    /// `UnderVoltage` stays held this long after the alarm last cleared.
    pub(crate) under_voltage_quiet: ConfigDuration,
    /// A zone above its first passive trip (or the firmware throttling) this long raises
    /// `ThermalThrottling`.
    pub(crate) thermal_sustain: ConfigDuration,
    /// Below the trip and not throttled this long clears it.
    pub(crate) thermal_calm: ConfigDuration,
    /// Read the firmware's throttle flags through `/dev/vcio` when it exists.
    pub(crate) mailbox: bool,
    /// Deadline of `journalctl` reading the previous boot's kernel lines at start.
    pub(crate) journal_timeout: ConfigDuration,
    /// How many of the previous boot's last kernel lines are read.
    pub(crate) journal_lines: u32,
}

impl Default for PowerSection {
    fn default() -> Self {
        PowerSection {
            enabled: true,
            // Temperatures move over tens of seconds; three reads a minute see a 60 s
            // sustain. Twice the mounts' 10 s, so on the shared periodic thread each read
            // lands on a wake-up that happens anyway (issue 21: no extra wake-ups).
            interval: ConfigDuration::secs(20),
            // The driver itself polls the firmware every 2 s (raspberrypi-hwmon.c): a
            // read every 5 s misses no episode longer than that.
            alarm_fallback_interval: ConfigDuration::secs(5),
            // Under-voltage comes in blips of a few seconds; a Node condition flapping
            // with each would be noise. Ten minutes is also the window in which it
            // explains a lockup (`policy.power_cause_window`).
            under_voltage_quiet: ConfigDuration::secs(600),
            thermal_sustain: ConfigDuration::secs(60),
            thermal_calm: ConfigDuration::secs(60),
            mailbox: true,
            // journalctl answers in well under a second on a Pi's journal; a start must
            // not wait on a corrupt one.
            journal_timeout: ConfigDuration::secs(5),
            // An RCU stall or hung-task splat with its traces is 50-200 lines.
            journal_lines: 300,
        }
    }
}

impl PowerSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        dur_range(v, "power.interval", self.interval, 1_000, 600_000);
        dur_range(
            v,
            "power.alarm_fallback_interval",
            self.alarm_fallback_interval,
            1_000,
            600_000,
        );
        dur_range(
            v,
            "power.under_voltage_quiet",
            self.under_voltage_quiet,
            0,
            86_400_000,
        );
        dur_range(
            v,
            "power.thermal_sustain",
            self.thermal_sustain,
            0,
            3_600_000,
        );
        dur_range(v, "power.thermal_calm", self.thermal_calm, 0, 3_600_000);
        dur_range(
            v,
            "power.journal_timeout",
            self.journal_timeout,
            100,
            60_000,
        );
        range(
            v,
            "power.journal_lines",
            self.journal_lines.into(),
            10,
            100_000,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_keys_are_named() {
        let s = PowerSection {
            interval: ConfigDuration::millis(10),
            journal_lines: 1,
            ..Default::default()
        };
        let mut v = Vec::new();
        s.validate(&mut v);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v[0].contains("`power.interval`") && v[0].contains("1s to 10m"),
            "{v:?}"
        );
        assert!(v[1].contains("`power.journal_lines` = 1"), "{v:?}");
        let mut ok = Vec::new();
        PowerSection::default().validate(&mut ok);
        assert!(ok.is_empty(), "{ok:?}");
    }
}
