//! Thermal zones (`/sys/class/thermal/thermal_zone*`): the temperature in millidegrees
//! Celsius and the trip points the kernel acts on. A zone above its first passive trip is
//! being throttled by the kernel (drivers/thermal/thermal_core.c steps the cooling devices
//! down from there); the critical trip is where it shuts the machine down
//! (`critical temperature reached`, then `HARDWARE PROTECTION shutdown`).
//!
//! A Raspberry Pi 4 or 5 has no passive trip at all: its firmware throttles the clocks on
//! its own at 80-85 °C without a kernel line, which only the firmware's flags show
//! (`power::mailbox`).

use crate::edge::HostFiles;

pub(crate) const THERMAL_DIR: &str = "sys/class/thermal";
/// Bound on zones watched (and metric series): boards have a few.
pub(crate) const MAX_ZONES: usize = 16;
/// Bound on trip points read per zone.
const MAX_TRIPS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Trip {
    /// `passive`, `active`, `hot` or `critical`.
    pub(crate) kind: String,
    pub(crate) millicelsius: i64,
}

/// A zone's fixed facts, read once when the detector looks for sensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Zone {
    /// `thermal_zone0`.
    pub(crate) name: String,
    /// The zone's `type`: `cpu-thermal`, `x86_pkg_temp`...
    pub(crate) kind: String,
    pub(crate) trips: Vec<Trip>,
}

impl Zone {
    /// The first (lowest) passive trip: where the kernel starts throttling. A trip at or
    /// below 0 °C is a disabled placeholder some drivers register.
    pub(crate) fn first_passive(&self) -> Option<i64> {
        self.lowest("passive")
    }

    pub(crate) fn critical(&self) -> Option<i64> {
        self.lowest("critical")
    }

    fn lowest(&self, kind: &str) -> Option<i64> {
        self.trips
            .iter()
            .filter(|t| t.kind == kind && t.millicelsius > 0)
            .map(|t| t.millicelsius)
            .min()
    }

    pub(crate) fn temp_path(&self) -> String {
        format!("{THERMAL_DIR}/{}/temp", self.name)
    }
}

/// The zones under the host root, sorted by name; zones whose `type` cannot be read are
/// skipped (a zone being removed).
pub(crate) fn scan(files: &dyn HostFiles) -> Vec<Zone> {
    let Ok(names) = files.list(THERMAL_DIR) else {
        return Vec::new();
    };
    let mut zones: Vec<Zone> = names
        .into_iter()
        .filter(|n| n.starts_with("thermal_zone"))
        .filter_map(|name| {
            let dir = format!("{THERMAL_DIR}/{name}");
            let kind = files.read_string(&format!("{dir}/type")).ok()?;
            let trips = (0..MAX_TRIPS)
                .map_while(|i| {
                    let kind = files
                        .read_string(&format!("{dir}/trip_point_{i}_type"))
                        .ok()?;
                    let temp = files
                        .read_string(&format!("{dir}/trip_point_{i}_temp"))
                        .ok()?;
                    Some((kind, temp))
                })
                .filter_map(|(kind, temp)| {
                    Some(Trip {
                        kind: kind.trim().to_string(),
                        millicelsius: temp.trim().parse().ok()?,
                    })
                })
                .collect();
            Some(Zone {
                name,
                kind: kind.trim().to_string(),
                trips,
            })
        })
        .collect();
    zones.sort_by_key(|z| zone_number(&z.name));
    zones.truncate(MAX_ZONES);
    zones
}

fn zone_number(name: &str) -> u32 {
    name.trim_start_matches("thermal_zone")
        .parse()
        .unwrap_or(u32::MAX)
}

/// A zone's `temp`: millidegrees Celsius.
pub(crate) fn parse_temp(text: &str) -> Result<i64, String> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| format!("temp reads {:?}, expected millidegrees", text.trim()))
}

pub(crate) fn celsius(millicelsius: i64) -> f64 {
    millicelsius as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeFiles;

    #[test]
    fn zones_are_read_with_their_trip_points_in_number_order() {
        let f = FakeFiles::with(&[
            ("sys/class/thermal/thermal_zone10/type", "gpu\n"),
            ("sys/class/thermal/thermal_zone2/type", "cpu-thermal\n"),
            (
                "sys/class/thermal/thermal_zone2/trip_point_0_type",
                "critical\n",
            ),
            (
                "sys/class/thermal/thermal_zone2/trip_point_0_temp",
                "110000\n",
            ),
            (
                "sys/class/thermal/thermal_zone2/trip_point_1_type",
                "passive\n",
            ),
            (
                "sys/class/thermal/thermal_zone2/trip_point_1_temp",
                "85000\n",
            ),
            (
                "sys/class/thermal/thermal_zone2/trip_point_2_type",
                "passive\n",
            ),
            (
                "sys/class/thermal/thermal_zone2/trip_point_2_temp",
                "80000\n",
            ),
            (
                "sys/class/thermal/thermal_zone2/trip_point_3_type",
                "passive\n",
            ),
            ("sys/class/thermal/thermal_zone2/trip_point_3_temp", "0\n"),
            ("sys/class/thermal/cooling_device0/type", "fan\n"),
        ]);
        let z = scan(&f);
        assert_eq!(z.len(), 2);
        assert_eq!(
            (z[0].name.as_str(), z[0].kind.as_str()),
            ("thermal_zone2", "cpu-thermal")
        );
        assert_eq!(
            z[0].first_passive(),
            Some(80_000),
            "lowest enabled passive trip"
        );
        assert_eq!(z[0].critical(), Some(110_000));
        assert_eq!(z[1].name, "thermal_zone10");
        assert_eq!(z[1].first_passive(), None);
        assert_eq!(parse_temp("48312\n"), Ok(48_312));
        assert!(parse_temp("x").is_err());
    }
}
