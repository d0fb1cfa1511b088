//! Prometheus metrics (OpenMetrics text via prometheus-client). Core metrics live here;
//! each subsystem registers its own struct into the same [`Registry`] at startup. The
//! registry is read-only after startup, so a scrape only takes the short per-family locks
//! and can never wait on a detector.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::model::ConditionKind;

pub(crate) type GaugeF = Gauge<f64, AtomicU64>;

/// Bytes written to files in the state directory (state.json, the audit trail, cursors,
/// markers): the SD card's wear from nodemedic itself (issue 24: at most 256 KiB a day at
/// idle). Process-wide, because every writer of the state dir adds to it.
static STATE_BYTES_WRITTEN: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(Counter::default);

/// Counts `n` bytes written to a file in the state directory.
pub(crate) fn state_bytes_written(n: usize) {
    STATE_BYTES_WRITTEN.inc_by(n as u64);
}

#[cfg(test)]
/// The process-wide count so far (each test runs in its own process under nextest).
pub(crate) fn state_bytes_for_tests() -> u64 {
    STATE_BYTES_WRITTEN.get()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DetectorLabels {
    pub(crate) detector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConditionLabels {
    pub(crate) condition: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ActionResult {
    done,
    failed,
    dry_run,
    suppressed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ActionLabels {
    pub(crate) action: String,
    pub(crate) result: ActionResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SuppressedLabels {
    pub(crate) action: String,
    pub(crate) reason: String,
}

#[derive(Clone)]
pub(crate) struct CoreMetrics {
    pub(crate) up: Gauge,
    pub(crate) detector_last_run: Family<DetectorLabels, GaugeF>,
    pub(crate) detector_errors: Family<DetectorLabels, Counter>,
    pub(crate) actions: Family<ActionLabels, Counter>,
    pub(crate) actions_suppressed: Family<SuppressedLabels, Counter>,
    pub(crate) condition: Family<ConditionLabels, Gauge>,
    /// Persisted: starts at the count from the state file.
    pub(crate) unclean_shutdowns: Counter,
}

impl CoreMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = CoreMetrics {
            up: Gauge::default(),
            detector_last_run: Family::default(),
            detector_errors: Family::default(),
            actions: Family::default(),
            actions_suppressed: Family::default(),
            condition: Family::default(),
            unclean_shutdowns: Counter::default(),
        };
        reg.register(
            "nodemedic_unclean_shutdowns",
            "Boots that ended without a clean shutdown (persisted across reboots)",
            m.unclean_shutdowns.clone(),
        );
        reg.register(
            "nodemedic_state_bytes_written",
            "Bytes nodemedic wrote to files in its state directory (the SD card's wear)",
            STATE_BYTES_WRITTEN.clone(),
        );
        reg.register(
            "nodemedic_build",
            "nodemedic build information",
            Info::new(vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]),
        );
        reg.register(
            "nodemedic_up",
            "1 while every daemon loop is alive, 0 while one is stuck (as /healthz)",
            m.up.clone(),
        );
        reg.register_with_unit(
            "nodemedic_detector_last_run_timestamp",
            "Unix time of each detector's last completed pass",
            Unit::Seconds,
            m.detector_last_run.clone(),
        );
        reg.register(
            "nodemedic_detector_errors",
            "Detector passes that failed",
            m.detector_errors.clone(),
        );
        reg.register(
            "nodemedic_remediation_actions",
            "Remediation decisions by action and result (done, failed, dry_run, suppressed)",
            m.actions.clone(),
        );
        reg.register(
            "nodemedic_actions_suppressed",
            "Remediations not carried out, by action and the reason they were held back",
            m.actions_suppressed.clone(),
        );
        reg.register(
            "nodemedic_condition",
            "1 while nodemedic holds the condition (any subject), else 0",
            m.condition.clone(),
        );
        m.up.set(1);
        // Every condition series exists from the start, so alerts can use `== 1` and absent
        // series mean "daemon down", not "healthy".
        for k in ConditionKind::ALL {
            m.condition
                .get_or_create(&ConditionLabels {
                    condition: k.name().into(),
                })
                .set(0);
        }
        m
    }

    pub(crate) fn detector_ran(&self, detector: &str, unix: f64) {
        self.detector_last_run
            .get_or_create(&DetectorLabels {
                detector: detector.into(),
            })
            .set(unix);
    }

    pub(crate) fn detector_failed(&self, detector: &str) {
        self.detector_errors
            .get_or_create(&DetectorLabels {
                detector: detector.into(),
            })
            .inc();
    }

    /// Ensures a detector's series exist before its first pass (errors at 0).
    pub(crate) fn detector_known(&self, detector: &str) {
        let _ = self.detector_errors.get_or_create(&DetectorLabels {
            detector: detector.into(),
        });
    }

    pub(crate) fn action(&self, action: &str, result: ActionResult) {
        self.actions
            .get_or_create(&ActionLabels {
                action: action.into(),
                result,
            })
            .inc();
    }

    pub(crate) fn suppressed(&self, action: &str, reason: &str) {
        self.action(action, ActionResult::suppressed);
        self.actions_suppressed
            .get_or_create(&SuppressedLabels {
                action: action.into(),
                reason: reason.into(),
            })
            .inc();
    }
}

/// Encodes the registry as OpenMetrics text.
pub fn encode(reg: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_metrics_encode_with_conventional_names() {
        let mut reg = Registry::default();
        let m = CoreMetrics::register(&mut reg);
        m.detector_ran("kernel", 1700000000.5);
        m.detector_failed("kernel");
        m.suppressed("reboot", "observe_mode");
        let text = encode(&reg);
        for want in [
            "nodemedic_build_info{version=\"",
            "nodemedic_up 1",
            "nodemedic_detector_last_run_timestamp_seconds{detector=\"kernel\"} 1700000000.5",
            "nodemedic_detector_errors_total{detector=\"kernel\"} 1",
            "nodemedic_remediation_actions_total{action=\"reboot\",result=\"suppressed\"} 1",
            "nodemedic_actions_suppressed_total{action=\"reboot\",reason=\"observe_mode\"} 1",
            "nodemedic_condition{condition=\"KernelRCUStall\"} 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
