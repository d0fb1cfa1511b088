//! Metrics of the policy loop. Action counts (`nodemedic_remediation_actions_total`,
//! `nodemedic_actions_suppressed_total`) live in [`crate::metrics::CoreMetrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProblemLabels {
    pub(crate) problem: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RebootReasonLabels {
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: String,
}

#[derive(Clone)]
pub(crate) struct PolicyMetrics {
    pub(crate) escalation_step: Family<ProblemLabels, Gauge>,
    /// Persisted: starts from the counters in the state file.
    pub(crate) reboots: Family<RebootReasonLabels, Counter>,
    pub(crate) reboot_budget_remaining: Gauge,
    pub(crate) paused: Gauge,
    /// Outcomes of the eviction step: evicted, blocked, no_candidate, failed.
    pub(crate) pod_evictions: Family<ResultLabels, Counter>,
}

impl PolicyMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = PolicyMetrics {
            escalation_step: Family::default(),
            reboots: Family::default(),
            reboot_budget_remaining: Gauge::default(),
            paused: Gauge::default(),
            pod_evictions: Family::default(),
        };
        reg.register(
            "nodemedic_escalation_step",
            "Ladder steps taken in the current episode of each problem (0: none)",
            m.escalation_step.clone(),
        );
        reg.register(
            "nodemedic_reboots",
            "Reboots nodemedic initiated, by problem (persisted across reboots)",
            m.reboots.clone(),
        );
        reg.register(
            "nodemedic_reboot_budget_remaining",
            "Automatic reboots still allowed in the rolling 24 h window",
            m.reboot_budget_remaining.clone(),
        );
        reg.register(
            "nodemedic_paused",
            "1 while automatic actions are paused (pause file or node annotation)",
            m.paused.clone(),
        );
        reg.register(
            "nodemedic_pod_evictions",
            "Outcomes of the MemoryPressure eviction step (evicted, blocked by a PodDisruptionBudget, no_candidate, failed)",
            m.pod_evictions.clone(),
        );
        m
    }

    pub(crate) fn set_steps(&self, steps: &std::collections::BTreeMap<String, usize>) {
        for k in crate::model::ConditionKind::ALL {
            if k.severity() != crate::model::Severity::Problem
                || k == crate::model::ConditionKind::NeedsHuman
            {
                continue;
            }
            let v = steps.get(k.name()).copied().unwrap_or(0);
            self.escalation_step
                .get_or_create(&ProblemLabels {
                    problem: k.name().into(),
                })
                .set(v as i64);
        }
    }
}

/// Registered only when nodemedic owns the hardware watchdog.
#[derive(Clone)]
pub(crate) struct WatchdogMetrics {
    pub(crate) last_keepalive: crate::metrics::GaugeF,
    pub(crate) timeout: Gauge,
}

impl WatchdogMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = WatchdogMetrics {
            last_keepalive: Default::default(),
            timeout: Gauge::default(),
        };
        reg.register(
            crate::watchdog::METRIC_LAST_KEEPALIVE,
            "Unix time of the last hardware watchdog keep-alive",
            m.last_keepalive.clone(),
        );
        reg.register(
            crate::watchdog::METRIC_TIMEOUT,
            "Hardware watchdog timeout the device runs with",
            m.timeout.clone(),
        );
        m
    }

    pub(crate) fn update(&self, h: &crate::watchdog::FeederHandle) {
        self.timeout.set(h.timeout().as_secs() as i64);
        if let Some(t) = h.last_keepalive_unix() {
            self.last_keepalive.set(t as f64);
        }
    }
}
