//! Power and heat: the Raspberry Pi's under-voltage lines (drivers/hwmon/raspberrypi-hwmon.c,
//! upstream and the older downstream wording), an SD host stopping for under-voltage
//! (drivers/mmc/host/sdhci.c, 7.x), x86 thermal throttling (drivers/thermal/intel/
//! therm_throt.c; arch/x86/kernel/cpu/mce/ before 5.6), a thermal zone's critical trip
//! (drivers/thermal/thermal_core.c; drivers/acpi/thermal.c and the 3.x thermal core's
//! wording without a zone) and the hardware-protection shutdown that follows
//! (kernel/reboot.c). Every one is a single
//! line; a recovery line is the same kind with `cleared`, a shutdown-level one has
//! `critical`. Heads are matched whole, anchored at both ends where the format allows, so
//! user text inside another message cannot pass for one.

use super::*;

/// The family's head matcher, in the first-byte table (`h r U V C t s m A`).
pub(super) fn power_head(line: &str) -> Option<Head> {
    match *line.as_bytes().first()? {
        b'h' => {
            // `hwmon hwmon1: Undervoltage detected!` (dev_crit on the hwmon device).
            let rest = line.strip_prefix("hwmon hwmon")?;
            let (num, text) = rest.split_once(": ")?;
            all_digits_u32(num)?;
            hwmon_text(text, &format!("hwmon{num}"))
        }
        b'r' => match line.strip_prefix("raspberrypi-hwmon raspberrypi-hwmon: ") {
            Some(text) => hwmon_text(text, "raspberrypi-hwmon"),
            None => hw_protection(line),
        },
        b'U' => old_firmware_wording(line, "Under-voltage detected! (", false),
        b'V' => old_firmware_wording(line, "Voltage normalised (", true),
        b'C' => therm_throt(line).or_else(|| zoneless_critical(line)),
        // 5.0-5.5 printed therm_throt's lines under the mce code's `pr_fmt`.
        b'm' => therm_throt(line.strip_prefix("mce: ")?),
        b'A' => zoneless_critical(line.strip_prefix("ACPI: ")?),
        b't' => critical_trip(line),
        // sdhci's platform drivers are all named `sdhci-*` (sdhci-iproc on a Pi 4,
        // sdhci-brcmstb on a Pi 5).
        b's' => mmc_emergency_stop(line),
        _ => None,
    }
}

fn event(kind: EventKind, sensor: &str, cleared: bool, critical: bool) -> Option<Head> {
    Head::new(
        kind,
        Role::Single,
        Fields {
            sensor: Some(sensor.to_string()),
            cleared: cleared.then_some(true),
            critical: critical.then_some(true),
            ..Fields::default()
        },
    )
}

fn hwmon_text(text: &str, sensor: &str) -> Option<Head> {
    match text {
        "Undervoltage detected!" => event(EventKind::Undervoltage, sensor, false, false),
        "Voltage normalised" => event(EventKind::Undervoltage, sensor, true, false),
        _ => None,
    }
}

/// `Under-voltage detected! (0x00050005)`, `Voltage normalised (0x00000000)`: the
/// downstream driver's pr_crit/pr_info with the firmware's flags in hex.
fn old_firmware_wording(line: &str, prefix: &str, cleared: bool) -> Option<Head> {
    let hex = line
        .strip_prefix(prefix)?
        .strip_prefix("0x")?
        .strip_suffix(')')?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    event(EventKind::Undervoltage, "rpi-firmware", cleared, false)
}

/// `<driver> <device>: mmc1: Undervoltage detected, initiating emergency stop`.
fn mmc_emergency_stop(line: &str) -> Option<Head> {
    let rest = line.strip_suffix(": Undervoltage detected, initiating emergency stop")?;
    let (prefix, host) = rest.rsplit_once(": ")?;
    let mut words = prefix.split(' ');
    let (Some(_driver), Some(_device), None) = (words.next(), words.next(), words.next()) else {
        return None;
    };
    all_digits_u32(host.strip_prefix("mmc")?)?;
    event(EventKind::Undervoltage, host, false, true)
}

/// `CPU3: Core temperature is above threshold, cpu clock is throttled (total events = 1)`,
/// `CPU3: Package temperature/speed normal (total events = 1)`; before 5.6 the first said
/// `temperature above threshold, cpu clock throttled (total events = 1)` and the second
/// had no count.
fn therm_throt(line: &str) -> Option<Head> {
    let rest = line.strip_prefix("CPU")?;
    let (cpu, text) = rest.split_once(": ")?;
    let cpu = all_digits_u32(cpu)?;
    let text = text
        .strip_prefix("Core ")
        .or_else(|| text.strip_prefix("Package "))?;
    let (cleared, count) = if let Some(t) = text
        .strip_prefix("temperature is above threshold, cpu clock is throttled")
        .or_else(|| text.strip_prefix("temperature above threshold, cpu clock throttled"))
    {
        (false, Some(t))
    } else {
        let t = text.strip_prefix("temperature/speed normal")?;
        (true, (!t.is_empty()).then_some(t))
    };
    if let Some(t) = count {
        all_digits_u32(t.strip_prefix(" (total events = ")?.strip_suffix(')')?)?;
    }
    let mut h = event(EventKind::ThermalThrottle, "cpu", cleared, false)?;
    h.fields.cpu = Some(cpu);
    Some(h)
}

/// `Critical temperature reached (100 C), shutting down.`: the ACPI thermal driver (also
/// under its `ACPI: ` prefix) and the 3.x thermal core, which name no zone.
fn zoneless_critical(line: &str) -> Option<Head> {
    let t = line.strip_prefix("Critical temperature reached (")?;
    matches!(after_degrees(t)?, ", shutting down." | ", shutting down")
        .then(|| event(EventKind::ThermalThrottle, "acpi", false, true))
        .flatten()
}

/// `thermal thermal_zone0: cpu-thermal: critical temperature reached, shutting down`
/// (6.1), without `, shutting down` (6.12+), and the 5.x
/// `thermal thermal_zone0: critical temperature reached (110 C), shutting down`.
fn critical_trip(line: &str) -> Option<Head> {
    let rest = line.strip_prefix("thermal thermal_zone")?;
    let (num, text) = rest.split_once(": ")?;
    all_digits_u32(num)?;
    let zone = format!("thermal_zone{num}");
    if let Some(t) = text.strip_prefix("critical temperature reached (") {
        return (after_degrees(t)? == ", shutting down")
            .then(|| event(EventKind::ThermalThrottle, &zone, false, true))
            .flatten();
    }
    let (kind, tail) = text.split_once(": ")?;
    if kind.is_empty() || kind.contains(' ') {
        return None;
    }
    matches!(
        tail,
        "critical temperature reached" | "critical temperature reached, shutting down"
    )
    .then(|| event(EventKind::ThermalThrottle, kind, false, true))
    .flatten()
}

/// What follows `<degrees> C)` in a critical-trip line.
fn after_degrees(t: &str) -> Option<&str> {
    let (deg, tail) = t.split_once(" C)")?;
    deg.parse::<i64>().ok()?;
    Some(tail)
}

/// `reboot: HARDWARE PROTECTION shutdown (Temperature too high)`; 6.12+ may say `reboot`
/// instead of `shutdown`. Heat and voltage reasons only; other reasons are not this family.
fn hw_protection(line: &str) -> Option<Head> {
    let rest = line.strip_prefix("reboot: HARDWARE PROTECTION ")?;
    let (_action, reason) = rest.split_once(" (")?;
    let reason = reason.strip_suffix(')')?;
    let lower = reason.to_ascii_lowercase();
    if lower.contains("temperature") || lower.contains("thermal") {
        event(EventKind::ThermalThrottle, "hw-protection", false, true)
    } else if lower.contains("voltage") {
        event(EventKind::Undervoltage, "hw-protection", false, true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Option<Event> {
        let mut c = Classifier::new();
        c.feed(line, Some(1));
        c.flush();
        c.pop_event()
    }

    #[test]
    fn both_under_voltage_wordings_and_their_recovery_lines_are_recognised() {
        for (line, cleared) in [
            ("hwmon hwmon1: Undervoltage detected!", false),
            ("hwmon hwmon12: Voltage normalised", true),
            (
                "raspberrypi-hwmon raspberrypi-hwmon: Undervoltage detected!",
                false,
            ),
            ("Under-voltage detected! (0x00050005)", false),
            ("Voltage normalised (0x00000000)", true),
        ] {
            let e = one(line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(e.kind, EventKind::Undervoltage, "{line}");
            assert_eq!(e.fields.cleared, cleared.then_some(true), "{line}");
        }
        let e =
            one("sdhci-iproc fe340000.mmc: mmc1: Undervoltage detected, initiating emergency stop")
                .unwrap();
        assert_eq!(
            (e.kind, e.fields.sensor.as_deref(), e.fields.critical),
            (EventKind::Undervoltage, Some("mmc1"), Some(true))
        );
    }

    #[test]
    fn heat_lines_are_thermal_throttle_and_the_shutdown_ones_are_critical() {
        let e = one(
            "CPU3: Core temperature is above threshold, cpu clock is throttled (total events = 17)",
        )
        .unwrap();
        assert_eq!(
            (e.kind, e.fields.cpu, e.fields.cleared),
            (EventKind::ThermalThrottle, Some(3), None)
        );
        let e = one("CPU0: Package temperature/speed normal (total events = 2)").unwrap();
        assert_eq!(e.fields.cleared, Some(true));
        // Before 5.6, and under the mce code's prefix in 5.0-5.5.
        for (line, cpu, cleared) in [
            (
                "CPU1: Core temperature above threshold, cpu clock throttled (total events = 1)",
                1,
                None,
            ),
            (
                "mce: CPU4: Package temperature above threshold, cpu clock throttled (total events = 3)",
                4,
                None,
            ),
            ("CPU1: Core temperature/speed normal", 1, Some(true)),
            ("mce: CPU4: Package temperature/speed normal", 4, Some(true)),
        ] {
            let e = one(line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(
                (e.kind, e.fields.cpu, e.fields.cleared),
                (EventKind::ThermalThrottle, Some(cpu), cleared),
                "{line}"
            );
        }
        for line in [
            "thermal thermal_zone0: cpu-thermal: critical temperature reached, shutting down",
            "thermal thermal_zone0: cpu-thermal: critical temperature reached",
            "thermal thermal_zone1: critical temperature reached (110 C), shutting down",
            "reboot: HARDWARE PROTECTION shutdown (Temperature too high)",
            "Critical temperature reached (100 C), shutting down.",
            "ACPI: Critical temperature reached (98 C), shutting down",
        ] {
            let e = one(line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(
                (e.kind, e.fields.critical),
                (EventKind::ThermalThrottle, Some(true)),
                "{line}"
            );
        }
    }

    #[test]
    fn near_misses_and_user_text_are_not_power_events() {
        for line in [
            "hwmon hwmon1: Undervoltage detected! (forged)",
            "hwmonx: Undervoltage detected!",
            "Under-voltage detected!",
            "Under-voltage detected! (0x5)",
            "myapp[12]: Under-voltage detected! (0x00050005)",
            "CPU3: Core temperature is above threshold, cpu clock is throttled (total events = x)",
            "thermal thermal_zone0: my zone: critical temperature reached",
            "reboot: HARDWARE PROTECTION shutdown (Regulator failure)",
            "a b c: mmc1: Undervoltage detected, initiating emergency stop",
            "Voltage normalised",
            "CPU1: Core temperature/speed normal (total events = )",
            "CPU1: Core temperature above threshold, cpu clock throttled",
            "mce: [Hardware Error]: CPU 1: Machine Check: 0 Bank 5: be00000000800400",
            "Critical temperature reached (hot C), shutting down.",
            "Critical temperature reached (100 C), shutting down. (myapp)",
            "ACPI: thermal: Critical temperature reached",
        ] {
            assert_eq!(one(line).map(|e| e.kind), None, "{line}");
        }
    }
}
