//! The limits detector's metrics: each limit's use and its maximum (so alerts and dashboards
//! can compute their own shares), filesystems' space and inodes, zombies.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::judge::FsStat;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitLabels {
    /// `pids`, `file_handles`, `conntrack`.
    pub(crate) limit: String,
    /// `node`, or `kubepods` for the pods' cgroup.
    pub(crate) scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PathLabels {
    /// The first watched path on the filesystem.
    pub(crate) path: String,
}

#[derive(Clone)]
pub(crate) struct LimitsMetrics {
    used: Family<LimitLabels, Gauge>,
    max: Family<LimitLabels, Gauge>,
    fs_avail_bytes: Family<PathLabels, Gauge>,
    fs_size_bytes: Family<PathLabels, Gauge>,
    fs_inodes_free: Family<PathLabels, Gauge>,
    fs_inodes: Family<PathLabels, Gauge>,
    pub(crate) zombies: Gauge,
}

impl LimitsMetrics {
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = LimitsMetrics {
            used: Family::default(),
            max: Family::default(),
            fs_avail_bytes: Family::default(),
            fs_size_bytes: Family::default(),
            fs_inodes_free: Family::default(),
            fs_inodes: Family::default(),
            zombies: Gauge::default(),
        };
        reg.register(
            "nodemedic_limit_used",
            "Use of a node limit: tasks (pids), allocated file handles, conntrack entries",
            m.used.clone(),
        );
        reg.register(
            "nodemedic_limit_max",
            "The limit itself: min(pid_max, threads-max) or pids.max, fs.file-max, nf_conntrack_max (-1: none)",
            m.max.clone(),
        );
        reg.register(
            "nodemedic_filesystem_avail_bytes",
            "Bytes available to unprivileged users on a watched filesystem (statvfs f_bavail)",
            m.fs_avail_bytes.clone(),
        );
        reg.register(
            "nodemedic_filesystem_size_bytes",
            "Size of a watched filesystem",
            m.fs_size_bytes.clone(),
        );
        reg.register(
            "nodemedic_filesystem_inodes_free",
            "Free inodes on a watched filesystem (0 inodes: it has no fixed inode table)",
            m.fs_inodes_free.clone(),
        );
        reg.register(
            "nodemedic_filesystem_inodes",
            "Inodes of a watched filesystem",
            m.fs_inodes.clone(),
        );
        reg.register(
            "nodemedic_zombie_processes",
            "Processes in state Z (exited, not reaped by their parent)",
            m.zombies.clone(),
        );
        m
    }

    /// One limit's use and maximum; `None` leaves the series unset (not on this node).
    pub(crate) fn set(&self, limit: &str, scope: &str, used: Option<u64>, max: Option<u64>) {
        let Some(used) = used else { return };
        let l = LimitLabels {
            limit: limit.into(),
            scope: scope.into(),
        };
        self.used.get_or_create(&l).set(clamp(used));
        self.max.get_or_create(&l).set(max.map_or(-1, clamp));
    }

    pub(crate) fn set_fs(&self, path: &str, s: &FsStat) {
        let l = PathLabels { path: path.into() };
        self.fs_avail_bytes
            .get_or_create(&l)
            .set(clamp(s.bavail.saturating_mul(s.frsize)));
        self.fs_size_bytes
            .get_or_create(&l)
            .set(clamp(s.blocks.saturating_mul(s.frsize)));
        self.fs_inodes_free.get_or_create(&l).set(clamp(s.ffree));
        self.fs_inodes.get_or_create(&l).set(clamp(s.files));
    }
}

/// file-max is i64::MAX on 64-bit kernels: gauges are i64.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
