//! Clock health metrics:
//!
//! | metric | source |
//! |---|---|
//! | `nodemedic_clock_synchronized` | 1 when the kernel says synchronised (no `STA_UNSYNC`), 0 when not |
//! | `nodemedic_clock_maxerror_seconds` | the kernel's maximum error estimate |
//! | `nodemedic_clock_esterror_seconds` | the kernel's estimated error |
//! | `nodemedic_clock_offset_seconds` | the kernel PLL's remaining offset |
//! | `nodemedic_clock_steps_total` | wall-clock steps against CLOCK_MONOTONIC seen |
//! | `nodemedic_clock_last_step_seconds` | size of the last step (negative: backwards) |

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::edge::timex::NtpReading;
use crate::metrics::GaugeF;

#[derive(Clone)]
pub struct ClockMetrics {
    pub(crate) synchronized: Gauge,
    pub(crate) maxerror: GaugeF,
    pub(crate) esterror: GaugeF,
    pub(crate) offset: GaugeF,
    pub(crate) steps: Counter,
    pub(crate) last_step: GaugeF,
}

impl ClockMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = ClockMetrics {
            synchronized: Gauge::default(),
            maxerror: GaugeF::default(),
            esterror: GaugeF::default(),
            offset: GaugeF::default(),
            steps: Counter::default(),
            last_step: GaugeF::default(),
        };
        reg.register(
            "nodemedic_clock_synchronized",
            "1 when the kernel says the clock is synchronised (adjtimex without STA_UNSYNC)",
            m.synchronized.clone(),
        );
        reg.register_with_unit(
            "nodemedic_clock_maxerror",
            "The kernel's maximum clock error estimate (adjtimex maxerror)",
            Unit::Seconds,
            m.maxerror.clone(),
        );
        reg.register_with_unit(
            "nodemedic_clock_esterror",
            "The kernel's estimated clock error (adjtimex esterror)",
            Unit::Seconds,
            m.esterror.clone(),
        );
        reg.register_with_unit(
            "nodemedic_clock_offset",
            "The kernel PLL's remaining clock offset (adjtimex offset)",
            Unit::Seconds,
            m.offset.clone(),
        );
        reg.register(
            "nodemedic_clock_steps",
            "Steps of the wall clock against CLOCK_MONOTONIC",
            m.steps.clone(),
        );
        reg.register_with_unit(
            "nodemedic_clock_last_step",
            "Size of the last wall-clock step (negative: backwards)",
            Unit::Seconds,
            m.last_step.clone(),
        );
        m
    }

    pub(crate) fn set_reading(&self, r: &NtpReading) {
        self.synchronized.set(i64::from(r.synced));
        self.maxerror.set(r.maxerror_secs);
        self.esterror.set(r.esterror_secs);
        self.offset.set(r.offset_secs);
    }
}
