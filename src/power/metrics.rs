//! The power detector's metrics, and the previous boot's cause (registered by the daemon at
//! start, where it is decided).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::mailbox::{FLAGS, Throttled};
use crate::metrics::GaugeF;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ZoneLabels {
    pub(crate) zone: String,
    pub(crate) r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FlagLabels {
    pub(crate) flag: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CauseLabels {
    pub(crate) cause: String,
}

#[derive(Clone)]
pub(crate) struct PowerMetrics {
    /// 1 while the firmware's under-voltage alarm is set, 0 when clear, -1 without sensor.
    pub(crate) under_voltage: Gauge,
    pub(crate) episodes_total: Counter,
    pub(crate) episodes_boot: Gauge,
    pub(crate) zone_temperature: Family<ZoneLabels, GaugeF>,
    pub(crate) zone_passive_trip: Family<ZoneLabels, GaugeF>,
    pub(crate) firmware: Family<FlagLabels, Gauge>,
}

impl PowerMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = PowerMetrics {
            under_voltage: Gauge::default(),
            episodes_total: Counter::default(),
            episodes_boot: Gauge::default(),
            zone_temperature: Family::default(),
            zone_passive_trip: Family::default(),
            firmware: Family::default(),
        };
        m.under_voltage.set(-1);
        reg.register(
            "nodemedic_under_voltage",
            "1 while the Raspberry Pi firmware reports under-voltage (hwmon rpi_volt in0_lcrit_alarm), 0 when not, -1 without that sensor",
            m.under_voltage.clone(),
        );
        reg.register(
            "nodemedic_under_voltage_episodes",
            "Under-voltage episodes (rises of the alarm), persisted across reboots",
            m.episodes_total.clone(),
        );
        reg.register(
            "nodemedic_under_voltage_episodes_this_boot",
            "Under-voltage episodes since this boot started",
            m.episodes_boot.clone(),
        );
        // Full names (no `Unit`): empty without zones, and named whole where they are used.
        reg.register(
            "nodemedic_thermal_zone_temperature_celsius",
            "Thermal zone temperature",
            m.zone_temperature.clone(),
        );
        reg.register(
            "nodemedic_thermal_zone_passive_trip_celsius",
            "The zone's first (lowest) passive trip point: where the kernel starts throttling",
            m.zone_passive_trip.clone(),
        );
        reg.register(
            "nodemedic_firmware_throttled",
            "The Raspberry Pi firmware's throttle flags (GET_THROTTLED through /dev/vcio): 1 when set; `*_occurred` are sticky since the last clear",
            m.firmware.clone(),
        );
        m
    }

    pub(crate) fn firmware_flags(&self, t: Throttled) {
        for (bit, name) in FLAGS {
            self.firmware
                .get_or_create(&FlagLabels { flag: name.into() })
                .set(i64::from(t.bit(bit)));
        }
    }
}

/// `nodemedic_previous_boot_end_total{cause}`: every cause has a series from the start.
#[derive(Clone)]
pub(crate) struct BootEndMetrics {
    pub(crate) ends: Family<CauseLabels, Counter>,
}

impl BootEndMetrics {
    pub fn register(reg: &mut Registry, causes: &[&str]) -> Self {
        let m = BootEndMetrics {
            ends: Family::default(),
        };
        reg.register(
            "nodemedic_previous_boot_end",
            "How previous boots ended, decided once at each start (persisted): clean, nodemedic_reboot, watchdog_after_hang, kernel_panic, thermal, power, unknown",
            m.ends.clone(),
        );
        for c in causes {
            let _ = m.ends.get_or_create(&CauseLabels { cause: (*c).into() });
        }
        m
    }
}
