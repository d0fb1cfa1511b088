//! Power and heat: the Raspberry Pi firmware's under-voltage alarm
//! (drivers/hwmon/raspberrypi-hwmon.c; the older firmware driver's `Under-voltage
//! detected! (0x...)`; the mmc core's emergency stop on an under-voltage notifier), x86
//! thermal throttling (drivers/thermal/intel/therm_throt.c) and a thermal zone at its
//! critical trip (drivers/thermal/thermal_core.c). Each recovery line is the same kind with
//! `cleared`.

use super::oops::detail;
use super::*;

fn power_head(kind: EventKind, device: Option<&str>, cleared: bool, line: &str) -> Option<Head> {
    let f = Fields {
        device: device.map(str::to_string),
        cleared: Some(cleared),
        detail: Some(detail(line)),
        ..Fields::default()
    };
    Head::new(kind, Role::Single, f)
}

/// `(<message>, cleared)` after the `<driver> <device>: ` prefix.
const UNDERVOLTAGE: &[(&str, bool)] = &[
    ("Undervoltage detected!", false),
    ("Voltage normalised", true),
    ("Under-voltage detected! (0x%x)", false),
    ("Voltage normalised (0x%x)", true),
    (
        "%w: Undervoltage detected, initiating emergency stop",
        false,
    ),
];

pub(super) fn undervoltage_head(line: &str) -> Option<Head> {
    // Every wording says `oltage`; most lines of these first bytes are turned away here,
    // before the conversion-led `%w %w: %s` scans them.
    if !line.contains("oltage") {
        return None;
    }
    // With the device prefix (dev_crit: `raspberrypi-hwmon raspberrypi-hwmon: `,
    // `hwmon hwmon1: `), or bare (older firmware drivers' pr_*).
    let (device, msg) = match kmatch("%w %w: %s", line) {
        Some(c) if !c.get(0).ends_with(':') => (Some(c.get(1)), c.get(2)),
        _ => (None, line),
    };
    let cleared = UNDERVOLTAGE
        .iter()
        .find(|(f, _)| kmatch(f, msg).is_some())
        .map(|(_, c)| *c)?;
    power_head(EventKind::Undervoltage, device, cleared, line)
}

const THROTTLE: &[(&str, bool)] = &[
    // 4.x+
    (
        "CPU%u: %w temperature is above threshold, cpu clock is throttled (total events = %u)",
        false,
    ),
    (
        "CPU%u: %w temperature/speed normal (total events = %u)",
        true,
    ),
    // 2.6-3.x
    (
        "CPU%u: %w temperature above threshold, cpu clock throttled (total events = %u)",
        false,
    ),
    ("CPU%u: %w temperature/speed normal", true),
];

pub(super) fn thermal_head(line: &str) -> Option<Head> {
    if let Some((fmt, cleared)) = THROTTLE.iter().find(|(f, _)| kmatch(f, line).is_some()) {
        let c = kmatch(fmt, line)?;
        let mut h = power_head(EventKind::ThermalThrottle, None, *cleared, line)?;
        h.fields.cpu = c.u32(0);
        return Some(h);
    }
    // thermal_zone_device_critical()/_halt(): 6.1 `..., shutting down`, 6.12+ without;
    // 4.x-5.x `critical temperature reached (%d C), shutting down`.
    let (_, c) = kmatch_any(
        &[
            "thermal %w: %s: critical temperature reached, shutting down",
            "thermal %w: %s: critical temperature reached",
            "thermal %w: critical temperature reached (%d C), shutting down",
            "thermal %w: %s: critical temperature reached (%d C), shutting down",
        ],
        line,
    )?;
    power_head(EventKind::ThermalThrottle, Some(c.get(0)), false, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

    #[test]
    fn under_voltage_and_its_recovery() {
        for (line, cleared) in [
            (
                "raspberrypi-hwmon raspberrypi-hwmon: Undervoltage detected!",
                false,
            ),
            ("hwmon hwmon1: Undervoltage detected!", false),
            ("hwmon hwmon1: Voltage normalised", true),
            ("Under-voltage detected! (0x00050005)", false),
            (
                "raspberrypi-firmware soc:firmware: Voltage normalised (0x00000000)",
                true,
            ),
        ] {
            let v = verdict(line);
            assert_eq!(v.kind, Some(EventKind::Undervoltage), "{line:?}");
            assert_eq!(v.fields.cleared, Some(cleared), "{line:?}");
        }
    }

    #[test]
    fn throttling_and_the_critical_trip() {
        let v = verdict(
            "CPU3: Package temperature is above threshold, cpu clock is throttled (total events = 12)",
        );
        assert_eq!(
            (v.kind, v.fields.cpu, v.fields.cleared),
            (Some(EventKind::ThermalThrottle), Some(3), Some(false))
        );
        let v = verdict("CPU3: Core temperature/speed normal (total events = 12)");
        assert_eq!(v.fields.cleared, Some(true));
        let v = verdict("thermal thermal_zone0: cpu-thermal: critical temperature reached");
        assert_eq!(v.kind, Some(EventKind::ThermalThrottle));
        assert_eq!(v.fields.device.as_deref(), Some("thermal_zone0"));
    }
}
