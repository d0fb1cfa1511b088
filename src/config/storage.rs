//! `[storage]`: storage health (issue 19): which filesystems the node needs, the write
//! probe, and the StorageErrors rate. The judgement that applies them is `storage::judge`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub(crate) enabled: bool,
    /// The k3s data directory (`--data-dir`); the filesystem behind it is watched.
    pub(crate) k3s_data_dir: PathBuf,
    /// kubelet's directory: every mount under it is a pod volume, watched.
    pub(crate) kubelet_dir: PathBuf,
    /// Write-probe `/`, the k3s data dir and the state dir.
    pub(crate) probe: bool,
    /// Between two write probes of one filesystem (an error on it probes at once).
    pub(crate) probe_interval: ConfigDuration,
    /// A probe not done within this marks the filesystem stuck.
    pub(crate) probe_deadline: ConfigDuration,
    /// This many storage errors on one device within `error_window` raise StorageErrors;
    /// a filesystem error or read-only remount raises at once.
    pub(crate) error_burst: u32,
    pub(crate) error_window: ConfigDuration,
    /// StorageErrors clears after this long without an error on the device.
    pub(crate) quiet: ConfigDuration,
    /// An under-voltage this long before a storage error is named as its likely cause.
    pub(crate) undervoltage_window: ConfigDuration,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            enabled: true,
            k3s_data_dir: "/var/lib/rancher/k3s".into(),
            kubelet_dir: "/var/lib/kubelet".into(),
            probe: true,
            // One create+fsync+unlink costs ~19 KiB of writes (measured on ext4: the data
            // block and the journal commit): every 30 s that was ~55 MB a day on the card,
            // against issue 24's 256 KiB a day. Every 2 h it is ~230 KiB a day per
            // filesystem. A storage error the kernel reports probes at once, and an ext4
            // emergency read-only always comes with one; the interval only bounds how late
            // a silent failure is confirmed.
            probe_interval: ConfigDuration::secs(2 * 3600),
            // An SD card's fsync under load takes a second or two; five is a hang.
            probe_deadline: ConfigDuration::secs(5),
            // One I/O error is a retry the kernel survived; three in ten minutes is a
            // device going bad.
            error_burst: 3,
            error_window: ConfigDuration::secs(600),
            quiet: ConfigDuration::secs(1800),
            undervoltage_window: ConfigDuration::secs(600),
        }
    }
}

impl StorageSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        for (key, p) in [
            ("storage.k3s_data_dir", &self.k3s_data_dir),
            ("storage.kubelet_dir", &self.kubelet_dir),
        ] {
            if !p.is_absolute() {
                v.push(format!(
                    "key `{key}` = \"{}\" must be an absolute path",
                    p.display()
                ));
            }
        }
        dur_range(
            v,
            "storage.probe_interval",
            self.probe_interval,
            1_000,
            86_400_000,
        );
        dur_range(
            v,
            "storage.probe_deadline",
            self.probe_deadline,
            100,
            600_000,
        );
        range(v, "storage.error_burst", self.error_burst.into(), 1, 10_000);
        dur_range(
            v,
            "storage.error_window",
            self.error_window,
            1_000,
            86_400_000,
        );
        dur_range(v, "storage.quiet", self.quiet, 0, 7 * 86_400_000);
        dur_range(
            v,
            "storage.undervoltage_window",
            self.undervoltage_window,
            0,
            86_400_000,
        );
    }
}
