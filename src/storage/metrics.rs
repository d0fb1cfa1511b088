//! The storage detector's metrics. Per-kind counts are the kernel's
//! `nodemedic_kernel_events_total{kind}`; here: storage errors per device (at most
//! [`MAX_DEVICE_LABELS`] device names, then `other`), and per watched filesystem whether
//! it takes a write and how long the last probe took.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::metrics::GaugeF;

/// Device names get their own label value up to this many; the rest count as `other`.
pub const MAX_DEVICE_LABELS: usize = 16;
/// Watched filesystems with their own series (pod volumes come and go).
const MAX_MOUNT_LABELS: usize = 32;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeviceLabels {
    pub(crate) device: String,
    /// `true` when the device backs a watched filesystem.
    pub(crate) watched: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FsLabels {
    pub(crate) mount: String,
}

#[derive(Clone)]
pub struct StorageMetrics {
    pub(crate) errors: Family<DeviceLabels, Counter>,
    pub(crate) writable: Family<FsLabels, Gauge>,
    pub(crate) probe_seconds: Family<FsLabels, GaugeF>,
    devices: Arc<Mutex<BTreeSet<String>>>,
    mounts: Arc<Mutex<BTreeSet<String>>>,
}

impl StorageMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = StorageMetrics {
            errors: Family::default(),
            writable: Family::default(),
            probe_seconds: Family::default(),
            devices: Default::default(),
            mounts: Default::default(),
        };
        reg.register(
            "nodemedic_storage_errors",
            "Kernel storage errors (fs, block, mmc, usb-storage) by device (at most 16 names, then other) and whether it backs a watched filesystem",
            m.errors.clone(),
        );
        reg.register(
            "nodemedic_storage_writable",
            "1 when a watched filesystem takes writes, 0 when read-only, failing or stuck",
            m.writable.clone(),
        );
        reg.register_with_unit(
            "nodemedic_storage_probe_duration",
            "How long the last write probe (create, fsync, unlink) of a watched filesystem took",
            Unit::Seconds,
            m.probe_seconds.clone(),
        );
        m
    }

    pub(crate) fn error(&self, device: &str, watched: bool) {
        let mut seen = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let device = if seen.contains(device) || seen.len() < MAX_DEVICE_LABELS {
            seen.insert(device.to_string());
            device
        } else {
            "other"
        };
        self.errors
            .get_or_create(&DeviceLabels {
                device: device.to_string(),
                watched: watched.to_string(),
            })
            .inc();
    }

    /// The watched filesystems now: series of ones gone are removed.
    pub(crate) fn mounts(&self, now: &[(String, bool, Option<f64>)]) {
        let mut seen = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
        let keep: BTreeSet<String> = now
            .iter()
            .take(MAX_MOUNT_LABELS)
            .map(|(m, _, _)| m.clone())
            .collect();
        for gone in seen.difference(&keep) {
            let l = FsLabels {
                mount: gone.clone(),
            };
            self.writable.remove(&l);
            self.probe_seconds.remove(&l);
        }
        for (m, writable, secs) in now.iter().take(MAX_MOUNT_LABELS) {
            let l = FsLabels { mount: m.clone() };
            self.writable.get_or_create(&l).set(i64::from(*writable));
            if let Some(s) = secs {
                self.probe_seconds.get_or_create(&l).set(*s);
            }
        }
        *seen = keep;
    }
}
