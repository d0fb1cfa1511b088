//! The Raspberry Pi's under-voltage sensor: the hwmon chip whose `name` is `rpi_volt`
//! (drivers/hwmon/raspberrypi-hwmon.c), attribute `in0_lcrit_alarm`. Found by name, never
//! by number: hwmon numbers follow probe order, which changes between kernels and boots.
//!
//! The driver asks the firmware every 2 s for the sticky under-voltage bit (and clears it),
//! and calls `sysfs_notify` on the attribute when the bit changes, so the alarm can be
//! waited on with poll(2) instead of read in a loop (`power::alarm`).

use crate::edge::HostFiles;

pub(crate) const HWMON_DIR: &str = "sys/class/hwmon";
pub(crate) const CHIP_NAME: &str = "rpi_volt";
pub(crate) const ALARM_ATTR: &str = "in0_lcrit_alarm";

/// Deprecated, and never opened by nodemedic: reading it makes the kernel log a WARNING
/// with a backtrace (`get_throttled_show` in drivers/firmware/raspberrypi.c). A test runs
/// the detector over a tree where this path is a trap and asserts it was never opened.
#[cfg(test)]
pub(crate) const DEPRECATED_GET_THROTTLED: &str =
    "sys/devices/platform/soc/soc:firmware/get_throttled";

/// Bound on hwmon chips looked at: a board has a handful.
const MAX_CHIPS: usize = 64;

/// The alarm attribute of the `rpi_volt` chip (path relative to the host root), if the
/// driver is loaded.
pub(crate) fn find_alarm(files: &dyn HostFiles) -> Option<String> {
    let chips = files.list(HWMON_DIR).ok()?;
    chips
        .iter()
        .filter(|c| c.starts_with("hwmon"))
        .take(MAX_CHIPS)
        .find(|c| {
            files
                .read_string(&format!("{HWMON_DIR}/{c}/name"))
                .is_ok_and(|n| n.trim() == CHIP_NAME)
        })
        .map(|c| format!("{HWMON_DIR}/{c}/{ALARM_ATTR}"))
}

/// `0` or `1` (the driver prints `!!(sticky bit)`), with its newline.
pub(crate) fn parse_alarm(text: &str) -> Result<bool, String> {
    match text.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(format!("{ALARM_ATTR} reads {other:?}, expected 0 or 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeFiles;

    #[test]
    fn the_chip_is_found_by_name_whatever_its_number() {
        let f = FakeFiles::with(&[
            ("sys/class/hwmon/hwmon0/name", "cpu_thermal\n"),
            ("sys/class/hwmon/hwmon3/name", "rpi_volt\n"),
            ("sys/class/hwmon/hwmon3/in0_lcrit_alarm", "0\n"),
        ]);
        assert_eq!(
            find_alarm(&f).as_deref(),
            Some("sys/class/hwmon/hwmon3/in0_lcrit_alarm")
        );
        assert_eq!(
            find_alarm(&FakeFiles::with(&[("sys/class/hwmon/hwmon0/name", "x\n")])),
            None
        );
        assert_eq!(find_alarm(&FakeFiles::default()), None);
    }

    #[test]
    fn the_alarm_is_zero_or_one() {
        assert_eq!(parse_alarm("1\n"), Ok(true));
        assert_eq!(parse_alarm("0\n"), Ok(false));
        assert!(parse_alarm("").unwrap_err().contains("expected 0 or 1"));
    }
}
