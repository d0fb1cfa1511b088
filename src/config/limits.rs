//! `[limits]`: the node's own limits (PIDs, file handles, conntrack, disk, inodes, zombies)
//! and the opt-in disk reclaim. How the thresholds are applied is `limits::judge`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsSection {
    pub(crate) enabled: bool,
    pub(crate) interval: ConfigDuration,
    /// Tasks at this share of min(pid_max, threads-max), or of the pods' pids.max.
    pub(crate) pids_percent: u32,
    /// Allocated file handles at this share of fs.file-max.
    pub(crate) file_handles_percent: u32,
    /// nf_conntrack_count at this share of nf_conntrack_max.
    pub(crate) conntrack_percent: u32,
    /// Filesystems watched for space and inodes (one condition per filesystem).
    pub(crate) disk_paths: Vec<PathBuf>,
    /// Raise below this share of blocks available to unprivileged users.
    pub(crate) disk_available_percent: u32,
    /// Raise below this share of inodes free.
    pub(crate) inodes_free_percent: u32,
    /// More zombie processes than this raise ZombieProcesses.
    pub(crate) zombies_max: u32,
    /// A kernel line that a limit was hit holds its condition this long.
    pub(crate) kernel_hit_hold: ConfigDuration,
    /// Deadline of one statfs of a watched path (a path may be on a network mount).
    pub(crate) statfs_timeout: ConfigDuration,
    /// `journalctl --vacuum-size=` target of the reclaim step; "" skips the journal.
    pub(crate) reclaim_journal_size: String,
    /// The reclaim step removes images no container uses, through CRI.
    pub(crate) reclaim_images: bool,
    /// Deadline of the whole reclaim step (the journal vacuum and every CRI call).
    pub(crate) reclaim_timeout: ConfigDuration,
}

/// Where k3s keeps its data, images and logs: the filesystems whose filling breaks a node.
pub(crate) const DEFAULT_DISK_PATHS: [&str; 4] = [
    "/",
    "/var/lib/rancher/k3s",
    "/var/lib/rancher/k3s/agent/containerd",
    "/var/log",
];

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            enabled: true,
            // Limits fill over minutes (a leak, a log); the kernel's own "table full" and
            // "file-max reached" lines arrive at once through the kernel detector.
            interval: ConfigDuration::secs(30),
            // 70%: room to react before fork() fails; a node's task count moves by
            // hundreds when pods start, far from its limit when healthy.
            pids_percent: 70,
            file_handles_percent: 70,
            // 80%: conntrack churns with traffic (entries expire), so it runs higher than
            // PIDs on a healthy NAT-ing node; near the top new flows start being dropped.
            conntrack_percent: 80,
            disk_paths: DEFAULT_DISK_PATHS.iter().map(PathBuf::from).collect(),
            // Ahead of the kubelet: its hard eviction defaults are nodefs.available<10%,
            // imagefs.available<15% (k3s lowers both to 5%), and image GC starts at 85%
            // used. 20% warns before any of them acts.
            disk_available_percent: 20,
            // Ahead of the kubelet's nodefs.inodesFree<5% eviction threshold.
            inodes_free_percent: 10,
            // A healthy node has a few transient zombies; a hundred is a parent that never
            // reaps (a container whose PID 1 is no init), and it only grows.
            zombies_max: 100,
            // The kernel prints these lines rate-limited or once per new high: an hour
            // without one does not prove the limit is clear, but 10 min without one and
            // the counters below the threshold do.
            kernel_hit_hold: ConfigDuration::secs(600),
            statfs_timeout: ConfigDuration::secs(2),
            reclaim_journal_size: "100M".into(),
            reclaim_images: true,
            reclaim_timeout: ConfigDuration::secs(120),
        }
    }
}

impl LimitsSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        dur_range(v, "limits.interval", self.interval, 1_000, 3_600_000);
        for (key, value) in [
            ("limits.pids_percent", self.pids_percent),
            ("limits.file_handles_percent", self.file_handles_percent),
            ("limits.conntrack_percent", self.conntrack_percent),
        ] {
            range(v, key, value.into(), 10, 99);
        }
        range(
            v,
            "limits.disk_available_percent",
            self.disk_available_percent.into(),
            1,
            90,
        );
        range(
            v,
            "limits.inodes_free_percent",
            self.inodes_free_percent.into(),
            1,
            90,
        );
        range(
            v,
            "limits.zombies_max",
            self.zombies_max.into(),
            1,
            1_000_000,
        );
        dur_range(
            v,
            "limits.kernel_hit_hold",
            self.kernel_hit_hold,
            10_000,
            86_400_000,
        );
        dur_range(v, "limits.statfs_timeout", self.statfs_timeout, 100, 60_000);
        dur_range(
            v,
            "limits.reclaim_timeout",
            self.reclaim_timeout,
            1_000,
            3_600_000,
        );
        for p in &self.disk_paths {
            if !p.is_absolute() {
                v.push(format!(
                    "key `limits.disk_paths`: \"{}\" must be an absolute path",
                    p.display()
                ));
            }
        }
        if !self.reclaim_journal_size.is_empty() && !journal_size_ok(&self.reclaim_journal_size) {
            v.push(format!(
                "key `limits.reclaim_journal_size` = \"{}\" is not a size; write a number with K, M or G (e.g. \"100M\"), or \"\" to leave the journal alone",
                self.reclaim_journal_size
            ));
        }
    }
}

/// What `journalctl --vacuum-size=` accepts, restricted to the plain forms: digits and one
/// of K, M, G (no spaces, nothing that could read as another option).
fn journal_size_ok(s: &str) -> bool {
    let Some(num) = s.strip_suffix(['K', 'M', 'G']) else {
        return false;
    };
    !num.is_empty() && num.len() <= 12 && num.bytes().all(|b| b.is_ascii_digit()) && num != "0"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        let mut v = Vec::new();
        LimitsSection::default().validate(&mut v);
        assert!(v.is_empty(), "{v:?}");
        let bad = LimitsSection {
            pids_percent: 100,
            disk_paths: vec!["var/log".into()],
            reclaim_journal_size: "--rotate".into(),
            ..Default::default()
        };
        let mut v = Vec::new();
        bad.validate(&mut v);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].contains("limits.pids_percent"), "{v:?}");
        assert!(v[1].contains("limits.disk_paths") && v[1].contains("var/log"));
        assert!(v[2].contains("limits.reclaim_journal_size") && v[2].contains("100M"));
    }

    #[test]
    fn journal_sizes_are_plain_numbers_with_a_unit() {
        for ok in ["100M", "1G", "512K"] {
            assert!(journal_size_ok(ok), "{ok}");
        }
        for bad in ["M", "0M", "100", "10 M", "-5M", "100MB", "1e3M"] {
            assert!(!journal_size_ok(bad), "{bad}");
        }
    }
}
