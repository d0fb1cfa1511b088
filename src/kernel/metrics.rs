//! The kernel detector's metrics: events by kind, stall lengths, `/dev/kmsg` records read,
//! ignored and lost, detection delay, and the kernel's own counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::classify::EventKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EventKindLabels {
    pub(crate) kind: String,
}

#[derive(Clone)]
pub(crate) struct KernelMetrics {
    pub(crate) events: Family<EventKindLabels, Counter>,
    pub(crate) rcu_stall_seconds: Histogram,
    pub(crate) records: Counter,
    pub(crate) ignored_records: Counter,
    pub(crate) lost_records: Counter,
    pub(crate) cursor_rebased: Counter,
    pub(crate) detect_delay: Histogram,
    pub(crate) rcu_stall_count: Gauge,
    pub(crate) hung_task_detect_count: Gauge,
    pub(crate) hung_task_warnings: Gauge,
}

impl KernelMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = KernelMetrics {
            events: Family::default(),
            rcu_stall_seconds: Histogram::new([
                0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 21.0, 60.0, 300.0,
            ]),
            records: Counter::default(),
            ignored_records: Counter::default(),
            lost_records: Counter::default(),
            cursor_rebased: Counter::default(),
            detect_delay: Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]),
            rcu_stall_count: Gauge::default(),
            hung_task_detect_count: Gauge::default(),
            hung_task_warnings: Gauge::default(),
        };
        reg.register(
            "nodemedic_kernel_events",
            "Kernel events by kind (one per splat)",
            m.events.clone(),
        );
        reg.register_with_unit(
            "nodemedic_rcu_stall",
            "Lengths of RCU stalls the kernel reported",
            Unit::Seconds,
            m.rcu_stall_seconds.clone(),
        );
        reg.register(
            "nodemedic_kmsg_records",
            "Kernel (facility 0) /dev/kmsg records read",
            m.records.clone(),
        );
        reg.register(
            "nodemedic_kmsg_ignored_records",
            "/dev/kmsg records ignored because userspace wrote them (facility != 0)",
            m.ignored_records.clone(),
        );
        reg.register(
            "nodemedic_kmsg_lost_records",
            "/dev/kmsg records overwritten before they could be read: the gap in sequence numbers, also across a restart",
            m.lost_records.clone(),
        );
        reg.register(
            "nodemedic_kmsg_cursor_rebased",
            "Saved kmsg cursors found not to match the kernel log (ahead of its newest record, or another record's timestamp) and discarded",
            m.cursor_rebased.clone(),
        );
        reg.register_with_unit(
            "nodemedic_kernel_event_detect_delay",
            "From the kernel's record timestamp to detection, for records logged while the daemon runs",
            Unit::Seconds,
            m.detect_delay.clone(),
        );
        reg.register(
            "nodemedic_kernel_rcu_stalls_reported",
            "The kernel's /sys/kernel/rcu_stall_count (6.16+); -1 when the kernel lacks it",
            m.rcu_stall_count.clone(),
        );
        reg.register(
            "nodemedic_kernel_hung_tasks_detected",
            "The kernel's hung_task_detect_count (6.13+); -1 when the kernel lacks it",
            m.hung_task_detect_count.clone(),
        );
        reg.register(
            "nodemedic_kernel_hung_task_warnings_remaining",
            "kernel.hung_task_warnings: reports left before the kernel goes quiet (-1 unlimited)",
            m.hung_task_warnings.clone(),
        );
        for k in EventKind::ALL {
            let _ = m.events.get_or_create(&EventKindLabels {
                kind: k.as_str().into(),
            });
        }
        m
    }
}
