//! The k3s detector's metrics:
//!
//! | metric | source |
//! |---|---|
//! | `nodemedic_k3s_probe_up{probe}` | 1 answering, 0 failing (kubelet, apiserver, etcd, pleg, cri); no series while a probe is not run |
//! | `nodemedic_k3s_probe_failing_seconds{probe}` | how long the probe has failed on every pass (0 when it answers) |
//! | `nodemedic_k3s_probe_duration_seconds{probe}` | how long its last answer took |
//! | `nodemedic_k3s_unit_state{state}` | 1 for the unit's current ActiveState |
//! | `nodemedic_k3s_unit_restarts` | systemd's NRestarts for the unit |
//! | `nodemedic_k3s_log_events_total{kind}` | lines in the unit's journal: kubelet_pleg_unhealthy, etcd_slow, fatal, sandbox_name_reserved, container_name_reserved |
//! | `nodemedic_k3s_journal_entries_total` | journal entries read (trusted ones) |
//! | `nodemedic_k3s_journal_dropped_total` | entries dropped because the reader fell behind |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::judge::{LivenessState, ProbeView};
use super::signals::KINDS;
use crate::metrics::GaugeF;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProbeLabels {
    pub(crate) probe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UnitStateLabels {
    pub(crate) state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LogKindLabels {
    pub(crate) kind: String,
}

/// systemd's ActiveState values (systemd.unit(5)).
pub(crate) const ACTIVE_STATES: [&str; 7] = [
    "active",
    "reloading",
    "inactive",
    "failed",
    "activating",
    "deactivating",
    "maintenance",
];

#[derive(Clone)]
pub struct K3sMetrics {
    pub(crate) probe_up: Family<ProbeLabels, Gauge>,
    pub(crate) probe_failing: Family<ProbeLabels, Gauge>,
    pub(crate) probe_duration: Family<ProbeLabels, GaugeF>,
    pub(crate) unit_state: Family<UnitStateLabels, Gauge>,
    pub(crate) unit_restarts: Gauge,
    pub(crate) log_events: Family<LogKindLabels, Counter>,
    pub(crate) journal_entries: Counter,
    pub(crate) journal_dropped: Counter,
}

impl K3sMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = K3sMetrics {
            probe_up: Family::default(),
            probe_failing: Family::default(),
            probe_duration: Family::default(),
            unit_state: Family::default(),
            unit_restarts: Gauge::default(),
            log_events: Family::default(),
            journal_entries: Counter::default(),
            journal_dropped: Counter::default(),
        };
        reg.register(
            "nodemedic_k3s_probe_up",
            "1 when the k3s liveness probe answers, 0 when it fails (no series while not run)",
            m.probe_up.clone(),
        );
        reg.register_with_unit(
            "nodemedic_k3s_probe_failing",
            "How long the k3s liveness probe has failed on every pass (0 when it answers)",
            Unit::Seconds,
            m.probe_failing.clone(),
        );
        reg.register_with_unit(
            "nodemedic_k3s_probe_duration",
            "How long the probe's last answer took",
            Unit::Seconds,
            m.probe_duration.clone(),
        );
        reg.register(
            "nodemedic_k3s_unit_state",
            "1 for the k3s unit's current systemd ActiveState",
            m.unit_state.clone(),
        );
        reg.register(
            "nodemedic_k3s_unit_restarts",
            "systemd's NRestarts for the k3s unit (automatic restarts since the last manual start)",
            m.unit_restarts.clone(),
        );
        reg.register(
            "nodemedic_k3s_log_events",
            "Lines of the k3s unit's journal by kind (kubelet_pleg_unhealthy, etcd_slow, fatal, sandbox_name_reserved, container_name_reserved)",
            m.log_events.clone(),
        );
        reg.register(
            "nodemedic_k3s_journal_entries",
            "Entries of the k3s unit's journal read",
            m.journal_entries.clone(),
        );
        reg.register(
            "nodemedic_k3s_journal_dropped",
            "Entries of the k3s unit's journal dropped because the reader fell behind",
            m.journal_dropped.clone(),
        );
        for k in KINDS {
            let _ = m
                .log_events
                .get_or_create(&LogKindLabels { kind: k.into() });
        }
        m
    }

    pub(crate) fn set_probes(&self, views: &[ProbeView]) {
        for v in views {
            let l = ProbeLabels {
                probe: v.name.into(),
            };
            match v.state {
                LivenessState::Ok | LivenessState::Failing => {
                    self.probe_up
                        .get_or_create(&l)
                        .set(i64::from(v.state == LivenessState::Ok));
                    self.probe_failing
                        .get_or_create(&l)
                        .set(v.failing_for_secs.unwrap_or(0) as i64);
                }
                LivenessState::Starting | LivenessState::Stopping | LivenessState::NotProbed => {
                    self.probe_up.remove(&l);
                    self.probe_failing.remove(&l);
                }
            }
        }
    }

    pub(crate) fn set_probe_duration(&self, probe: &str, secs: f64) {
        self.probe_duration
            .get_or_create(&ProbeLabels {
                probe: probe.into(),
            })
            .set(secs);
    }

    pub(crate) fn set_unit(&self, active_state: Option<&str>, n_restarts: u32) {
        for s in ACTIVE_STATES {
            self.unit_state
                .get_or_create(&UnitStateLabels { state: s.into() })
                .set(i64::from(active_state == Some(s)));
        }
        self.unit_restarts.set(n_restarts.into());
    }

    pub(crate) fn count_log_events(&self, counts: &[u64; KINDS.len()]) {
        for (k, n) in KINDS.iter().zip(counts) {
            if *n > 0 {
                self.log_events
                    .get_or_create(&LogKindLabels { kind: (*k).into() })
                    .inc_by(*n);
            }
        }
    }
}
