//! The memory detector's metrics: PSI stall ratios and totals by scope, MemAvailable,
//! SwapFree, and OOM kills by cgroup class (counted from the kernel log, handed in at the
//! daemon's wiring).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use super::judge::{OomKillCounts, OomScope};
use crate::metrics::GaugeF;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PressureLabels {
    pub(crate) scope: String,
    pub(crate) kind: String,
    pub(crate) window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StallLabels {
    pub(crate) scope: String,
    pub(crate) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OomLabels {
    pub(crate) cgroup: String,
}

#[derive(Clone)]
pub(crate) struct MemoryMetrics {
    pub(crate) pressure_ratio: Family<PressureLabels, GaugeF>,
    pub(crate) stall_seconds: Family<StallLabels, Counter<f64, AtomicU64>>,
    pub(crate) available_bytes: Gauge,
    pub(crate) swap_free_bytes: Gauge,
    pub(crate) oom_kills: Family<OomLabels, Counter>,
}

impl MemoryMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = MemoryMetrics {
            pressure_ratio: Family::default(),
            stall_seconds: Family::default(),
            available_bytes: Gauge::default(),
            swap_free_bytes: Gauge::default(),
            oom_kills: Family::default(),
        };
        reg.register(
            "nodemedic_memory_pressure_ratio",
            "Memory PSI stall share (0-1) by scope (system, pods, watched), kind (some, full) and the kernel's averaging window",
            m.pressure_ratio.clone(),
        );
        reg.register_with_unit(
            "nodemedic_memory_stall",
            "Memory PSI stall time by scope and kind, from the kernel's total= counters",
            Unit::Seconds,
            m.stall_seconds.clone(),
        );
        reg.register_with_unit(
            "nodemedic_memory_available",
            "MemAvailable from /proc/meminfo",
            Unit::Bytes,
            m.available_bytes.clone(),
        );
        reg.register_with_unit(
            "nodemedic_swap_free",
            "SwapFree from /proc/meminfo",
            Unit::Bytes,
            m.swap_free_bytes.clone(),
        );
        reg.register(
            "nodemedic_oom_kills",
            "Kernel OOM kills by cgroup class (bounded: kubepods QoS classes, system, user, other)",
            m.oom_kills.clone(),
        );
        for s in OomScope::ALL {
            let _ = m.oom_kills.get_or_create(&OomLabels {
                cgroup: s.label().into(),
            });
        }
        m
    }

    /// Counts one kernel OOM kill, with the killed task's cgroup (`task_memcg=`).
    pub(crate) fn record_oom(&self, counts: &mut OomKillCounts, cgroup: &str) {
        let scope = counts.record_oom(cgroup);
        self.oom_kills
            .get_or_create(&OomLabels {
                cgroup: scope.label().into(),
            })
            .inc();
    }
}
