//! The hung-mount detector's metrics: per mount up, stuck, unknown, probe duration and hard
//! NFS; tasks in D state by what they wait on; probe threads, and those parked on dead
//! mounts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::GaugeF;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MountLabels {
    pub(crate) mountpoint: String,
    pub(crate) fstype: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PointLabels {
    pub(crate) mountpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WaitLabels {
    pub(crate) wait: String,
}

#[derive(Clone)]
pub struct MountMetrics {
    pub(crate) up: Family<MountLabels, Gauge>,
    pub(crate) stuck: Family<MountLabels, Gauge>,
    pub(crate) probe_seconds: Family<PointLabels, GaugeF>,
    pub(crate) hard_nfs: Family<PointLabels, Gauge>,
    pub(crate) dstate: Family<WaitLabels, Gauge>,
    pub(crate) threads_stuck: Gauge,
    pub(crate) unknown: Family<MountLabels, Gauge>,
    pub(crate) threads: Gauge,
}

impl MountMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = MountMetrics {
            up: Family::default(),
            stuck: Family::default(),
            probe_seconds: Family::default(),
            hard_nfs: Family::default(),
            dstate: Family::default(),
            threads_stuck: Gauge::default(),
            unknown: Family::default(),
            threads: Gauge::default(),
        };
        reg.register(
            "nodemedic_mount_up",
            "1 when the last probe of the mount succeeded",
            m.up.clone(),
        );
        reg.register(
            "nodemedic_mount_stuck",
            "1 while a probe of the mount is stuck past its deadline",
            m.stuck.clone(),
        );
        reg.register_with_unit(
            "nodemedic_mount_probe_duration",
            "Duration of the last probe (for a stuck one: how long it has been outstanding)",
            Unit::Seconds,
            m.probe_seconds.clone(),
        );
        reg.register(
            "nodemedic_mount_hard_nfs",
            "1 for a hard NFS mount (never gives up on a dead server)",
            m.hard_nfs.clone(),
        );
        reg.register(
            "nodemedic_dstate_tasks",
            "Tasks in uninterruptible sleep by what they wait on (nfs, fuse, other)",
            m.dstate.clone(),
        );
        reg.register(
            "nodemedic_probe_threads_stuck",
            "Probe threads parked in a syscall on a dead mount (at most one per mount)",
            m.threads_stuck.clone(),
        );
        reg.register(
            "nodemedic_mount_unknown",
            "1 while the mount could not be probed (every probe thread is taken): its state is unknown; up and stuck hold the last probe's result",
            m.unknown.clone(),
        );
        reg.register(
            "nodemedic_probe_threads",
            "Threads in the mount probe pool (parked ones included)",
            m.threads.clone(),
        );
        m
    }
}
