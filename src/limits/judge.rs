//! The limits judgement, pure: which of the node's limits are running out, from one pass's
//! readings, with `now` passed in.
//!
//! Each condition raises when its share reaches the threshold and clears only
//! [`HYSTERESIS_POINTS`] below it (disk and inodes: above it), so a node hovering at the
//! line does not flap between cordoned and schedulable. A reading that failed keeps the
//! condition as it was: a failed read is not evidence that a limit cleared. The kernel's
//! own "table full" and "file-max reached" lines hold their condition for
//! `kernel_hit_hold` whatever the counters say: the counters are sampled, the line is the
//! kernel saying it already dropped a packet or refused a file.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::LimitsSection;
use crate::model::{Condition, ConditionKind};

/// Percentage points between raising and clearing.
pub(crate) const HYSTERESIS_POINTS: f64 = 5.0;
/// Zombies clear below this share of `zombies_max`.
pub(crate) const ZOMBIES_CLEAR_SHARE: f64 = 0.8;
/// The kubelet's hard eviction defaults the disk thresholds must stay ahead of
/// (k8s.io/kubernetes pkg/kubelet/eviction/defaults_linux.go); named in messages.
pub(crate) const KUBELET_EVICTION: &str =
    "the kubelet evicts pods at nodefs.available<10% and imagefs.available<15% (k3s: <5%)";
/// And its inode threshold.
pub(crate) const KUBELET_INODES: &str = "the kubelet evicts pods at nodefs.inodesFree<5%";

/// One filesystem's numbers (statvfs), in blocks of `frsize` bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FsStat {
    /// The device (st_dev): paths on one filesystem are judged once.
    pub(crate) dev: u64,
    pub(crate) frsize: u64,
    pub(crate) blocks: u64,
    /// Free blocks for unprivileged users (f_bavail), as the kubelet counts "available".
    pub(crate) bavail: u64,
    /// 0 on filesystems without a fixed inode table (btrfs): no inode check then.
    pub(crate) files: u64,
    pub(crate) ffree: u64,
}

/// One watched filesystem: its paths (the first names it) and what statvfs said.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FsReading {
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) stat: Result<FsStat, String>,
}

/// The pods' cgroup and its PID limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodsPids {
    pub(crate) cgroup: String,
    pub(crate) current: u64,
    /// None: `max` (no limit of its own).
    pub(crate) max: Option<u64>,
}

/// Zombie processes and the parent with the most of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Zombies {
    pub(crate) count: u64,
    /// (pid, comm, how many of the zombies are its children).
    pub(crate) top_parent: Option<(u32, String, u64)>,
}

/// Everything one pass read; `None` where the node does not have it (no conntrack module)
/// or it could not be read.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LimitReadings {
    pub(crate) now: Duration,
    pub(crate) threads: Option<u64>,
    pub(crate) pid_max: Option<u64>,
    pub(crate) threads_max: Option<u64>,
    pub(crate) pods_pids: Option<PodsPids>,
    /// (allocated, file-max).
    pub(crate) files: Option<(u64, u64)>,
    /// (nf_conntrack_count, nf_conntrack_max).
    pub(crate) conntrack: Option<(u64, u64)>,
    pub(crate) filesystems: Vec<FsReading>,
    pub(crate) zombies: Option<Zombies>,
    /// When the kernel last logged a full conntrack table / the file-max limit.
    pub(crate) conntrack_hit: Option<Duration>,
    pub(crate) file_max_hit: Option<Duration>,
}

/// Hysteresis state: which (kind, subject) is held, so clearing needs the lower line.
pub(crate) struct LimitsJudge {
    cfg: LimitsSection,
    held: BTreeSet<(ConditionKind, String)>,
    /// Conditions of the last pass, kept for subjects whose reading failed.
    last: Vec<Condition>,
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

fn gib(blocks: u64, frsize: u64) -> String {
    format!(
        "{:.1} GiB",
        (blocks as f64 * frsize as f64) / f64::from(1 << 30)
    )
}

impl LimitsJudge {
    pub(crate) fn new(cfg: LimitsSection) -> Self {
        LimitsJudge {
            cfg,
            held: BTreeSet::new(),
            last: Vec::new(),
        }
    }

    /// Decides a "used share" condition: raise at `threshold`, clear below it minus the
    /// hysteresis. `None` share: unknown, keep as it was.
    fn used(
        &mut self,
        kind: ConditionKind,
        subject: &str,
        share: Option<f64>,
        threshold: u32,
    ) -> Option<bool> {
        let key = (kind, subject.to_string());
        let held = self.held.contains(&key);
        let share = share?;
        let on = if held {
            share >= f64::from(threshold) - HYSTERESIS_POINTS
        } else {
            share >= f64::from(threshold)
        };
        self.set(key, on);
        Some(on)
    }

    /// Decides a "free share" condition (disk, inodes): raise below `threshold`, clear at
    /// or above it plus the hysteresis.
    fn free(&mut self, kind: ConditionKind, subject: &str, share: f64, threshold: u32) -> bool {
        let key = (kind, subject.to_string());
        let on = if self.held.contains(&key) {
            share < f64::from(threshold) + HYSTERESIS_POINTS
        } else {
            share < f64::from(threshold)
        };
        self.set(key, on);
        on
    }

    fn set(&mut self, key: (ConditionKind, String), on: bool) {
        if on {
            self.held.insert(key);
        } else {
            self.held.remove(&key);
        }
    }

    /// Keeps last pass's condition for (kind, subject), if it had one.
    fn keep(&self, out: &mut Vec<Condition>, kind: ConditionKind, subject: &str) {
        out.extend(
            self.last
                .iter()
                .filter(|c| c.kind == kind && c.subject == subject)
                .cloned(),
        );
    }

    fn recent(&self, hit: Option<Duration>, now: Duration) -> Option<Duration> {
        hit.map(|t| now.saturating_sub(t))
            .filter(|ago| *ago < self.cfg.kernel_hit_hold.get())
    }

    pub(crate) fn judge(&mut self, r: &LimitReadings) -> Vec<Condition> {
        let mut out = Vec::new();
        self.pids(r, &mut out);
        self.files(r, &mut out);
        self.conntrack(r, &mut out);
        for fs in &r.filesystems {
            self.filesystem(fs, &mut out);
        }
        self.zombies(r, &mut out);
        self.last = out.clone();
        out
    }

    fn pids(&mut self, r: &LimitReadings, out: &mut Vec<Condition>) {
        let limit = match (r.pid_max, r.threads_max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let share = r.threads.zip(limit).and_then(|(t, l)| pct(t, l));
        match self.used(ConditionKind::PidsLow, "", share, self.cfg.pids_percent) {
            Some(true) => {
                let (t, l) = (r.threads.unwrap_or(0), limit.unwrap_or(0));
                let which = if r.threads_max.is_some_and(|m| Some(m) == limit) {
                    "kernel.threads-max"
                } else {
                    "kernel.pid_max"
                };
                out.push(Condition::new(
                    ConditionKind::PidsLow,
                    "",
                    "NodePidsNearLimit",
                    format!(
                        "{t} tasks of at most {l} ({which}): {:.0}%, at or over {}%; at the limit fork() fails and no container can start",
                        share.unwrap_or(0.0),
                        self.cfg.pids_percent
                    ),
                ));
            }
            Some(false) => {}
            None => self.keep(out, ConditionKind::PidsLow, ""),
        }
        let pods = r.pods_pids.as_ref();
        let share = pods.and_then(|p| p.max.and_then(|m| pct(p.current, m)));
        let known = pods.is_some_and(|p| p.max.is_none());
        let share = if known { Some(0.0) } else { share };
        match self.used(
            ConditionKind::PidsLow,
            "kubepods",
            share,
            self.cfg.pids_percent,
        ) {
            Some(true) => {
                let p = pods.expect("a share needs a reading");
                out.push(Condition::new(
                    ConditionKind::PidsLow,
                    "kubepods",
                    "PodPidsNearLimit",
                    format!(
                        "the pods' cgroup {} holds {} tasks of its pids.max {}: {:.0}%, at or over {}%",
                        p.cgroup,
                        p.current,
                        p.max.unwrap_or(0),
                        share.unwrap_or(0.0),
                        self.cfg.pids_percent
                    ),
                ));
            }
            Some(false) => {}
            None => self.keep(out, ConditionKind::PidsLow, "kubepods"),
        }
    }

    fn files(&mut self, r: &LimitReadings, out: &mut Vec<Condition>) {
        let share = r.files.and_then(|(n, max)| pct(n, max));
        let over = self.used(
            ConditionKind::FileHandlesLow,
            "",
            share,
            self.cfg.file_handles_percent,
        );
        if let Some(ago) = self.recent(r.file_max_hit, r.now) {
            out.push(Condition::new(
                ConditionKind::FileHandlesLow,
                "",
                "FileMaxReached",
                format!(
                    "the kernel logged \"VFS: file-max limit reached\" {}s ago: opening a file failed with ENFILE{}",
                    ago.as_secs(),
                    r.files
                        .map(|(n, m)| format!("; {n} of {m} handles in use now"))
                        .unwrap_or_default()
                ),
            ));
            return;
        }
        match over {
            Some(true) => {
                let (n, m) = r.files.unwrap_or_default();
                out.push(Condition::new(
                    ConditionKind::FileHandlesLow,
                    "",
                    "FileHandlesNearLimit",
                    format!(
                        "{n} file handles of fs.file-max {m}: {:.0}%, at or over {}%",
                        share.unwrap_or(0.0),
                        self.cfg.file_handles_percent
                    ),
                ));
            }
            Some(false) => {}
            None => self.keep(out, ConditionKind::FileHandlesLow, ""),
        }
    }

    fn conntrack(&mut self, r: &LimitReadings, out: &mut Vec<Condition>) {
        let share = r.conntrack.and_then(|(n, max)| pct(n, max));
        let over = self.used(
            ConditionKind::ConntrackTableFull,
            "",
            share,
            self.cfg.conntrack_percent,
        );
        if let Some(ago) = self.recent(r.conntrack_hit, r.now) {
            out.push(Condition::new(
                ConditionKind::ConntrackTableFull,
                "",
                "DroppingPackets",
                format!(
                    "the kernel logged \"nf_conntrack: table full, dropping packet\" {}s ago: new connections are dropped{}",
                    ago.as_secs(),
                    r.conntrack
                        .map(|(n, m)| format!("; {n} of nf_conntrack_max {m} entries now"))
                        .unwrap_or_default()
                ),
            ));
            return;
        }
        match over {
            Some(true) => {
                let (n, m) = r.conntrack.unwrap_or_default();
                out.push(Condition::new(
                    ConditionKind::ConntrackTableFull,
                    "",
                    "ConntrackNearLimit",
                    format!(
                        "{n} conntrack entries of nf_conntrack_max {m}: {:.0}%, at or over {}%; when full the kernel drops new flows",
                        share.unwrap_or(0.0),
                        self.cfg.conntrack_percent
                    ),
                ));
            }
            Some(false) => {}
            None => self.keep(out, ConditionKind::ConntrackTableFull, ""),
        }
    }

    fn filesystem(&mut self, fs: &FsReading, out: &mut Vec<Condition>) {
        let subject = fs.paths[0].display().to_string();
        let also = if fs.paths.len() > 1 {
            let rest: Vec<String> = fs.paths[1..]
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!(" (also {})", rest.join(", "))
        } else {
            String::new()
        };
        let s = match &fs.stat {
            Ok(s) => *s,
            Err(_) => {
                self.keep(out, ConditionKind::DiskSpaceLow, &subject);
                self.keep(out, ConditionKind::InodesLow, &subject);
                return;
            }
        };
        if let Some(avail) = pct(s.bavail, s.blocks) {
            let threshold = self.cfg.disk_available_percent;
            if self.free(ConditionKind::DiskSpaceLow, &subject, avail, threshold) {
                out.push(Condition::new(
                    ConditionKind::DiskSpaceLow,
                    subject.clone(),
                    "DiskSpaceLow",
                    format!(
                        "{subject}{also}: {avail:.1}% available ({} of {}), below {threshold}%; {KUBELET_EVICTION}",
                        gib(s.bavail, s.frsize),
                        gib(s.blocks, s.frsize)
                    ),
                ));
            }
        }
        if let Some(free) = pct(s.ffree, s.files) {
            let threshold = self.cfg.inodes_free_percent;
            if self.free(ConditionKind::InodesLow, &subject, free, threshold) {
                out.push(Condition::new(
                    ConditionKind::InodesLow,
                    subject.clone(),
                    "InodesLow",
                    format!(
                        "{subject}{also}: {free:.1}% of inodes free ({} of {}), below {threshold}%; {KUBELET_INODES}",
                        s.ffree, s.files
                    ),
                ));
            }
        }
    }

    fn zombies(&mut self, r: &LimitReadings, out: &mut Vec<Condition>) {
        let Some(z) = &r.zombies else {
            self.keep(out, ConditionKind::ZombieProcesses, "");
            return;
        };
        let key = (ConditionKind::ZombieProcesses, String::new());
        let max = u64::from(self.cfg.zombies_max);
        let on = if self.held.contains(&key) {
            z.count as f64 >= max as f64 * ZOMBIES_CLEAR_SHARE
        } else {
            z.count > max
        };
        self.set(key, on);
        if on {
            let parent = z
                .top_parent
                .as_ref()
                .map(|(pid, comm, n)| {
                    format!("; {n} are children of pid {pid} ({comm}), which does not reap them")
                })
                .unwrap_or_default();
            out.push(Condition::new(
                ConditionKind::ZombieProcesses,
                "",
                "ZombiesAccumulating",
                format!(
                    "{} zombie processes, more than {max}{parent}; each holds a PID until reaped",
                    z.count
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge() -> LimitsJudge {
        LimitsJudge::new(LimitsSection::default())
    }

    fn kinds(c: &[Condition]) -> Vec<(ConditionKind, &str, &str)> {
        c.iter()
            .map(|c| (c.kind, c.subject.as_str(), c.reason.as_str()))
            .collect()
    }

    fn base() -> LimitReadings {
        LimitReadings {
            now: Duration::from_secs(10_000),
            threads: Some(500),
            pid_max: Some(32768),
            threads_max: Some(60_000),
            files: Some((2000, 100_000)),
            conntrack: Some((100, 65536)),
            ..Default::default()
        }
    }

    #[test]
    fn a_healthy_node_holds_nothing() {
        assert!(judge().judge(&base()).is_empty());
    }

    #[test]
    fn pids_raise_at_70_percent_of_the_smaller_limit_and_clear_5_points_lower() {
        let mut j = judge();
        let mut r = base();
        r.threads = Some(22_937); // 69.99% of 32768
        assert!(j.judge(&r).is_empty());
        r.threads = Some(22_938); // 70.0%
        let c = j.judge(&r);
        assert_eq!(
            kinds(&c),
            vec![(ConditionKind::PidsLow, "", "NodePidsNearLimit")]
        );
        assert!(c[0].message.contains("kernel.pid_max"), "{}", c[0].message);
        r.threads = Some(21_500); // 65.6%: between the lines, still held
        assert_eq!(j.judge(&r).len(), 1);
        r.threads = Some(21_000); // 64.1%
        assert!(j.judge(&r).is_empty());
        // threads-max the smaller one.
        r.threads_max = Some(10_000);
        r.threads = Some(7_500);
        let c = j.judge(&r);
        assert!(
            c[0].message.contains("kernel.threads-max"),
            "{}",
            c[0].message
        );
    }

    #[test]
    fn the_pods_cgroup_pid_limit_is_its_own_subject() {
        let mut j = judge();
        let mut r = base();
        r.pods_pids = Some(PodsPids {
            cgroup: "/sys/fs/cgroup/kubepods.slice".into(),
            current: 800,
            max: Some(1000),
        });
        let c = j.judge(&r);
        assert_eq!(
            kinds(&c),
            vec![(ConditionKind::PidsLow, "kubepods", "PodPidsNearLimit")]
        );
        r.pods_pids.as_mut().unwrap().max = None;
        assert!(
            j.judge(&r).is_empty(),
            "pids.max = max: no limit of its own"
        );
    }

    #[test]
    fn file_handles_raise_on_the_share_or_the_kernel_line() {
        let mut j = judge();
        let mut r = base();
        r.files = Some((70_000, 100_000));
        assert_eq!(
            kinds(&j.judge(&r)),
            vec![(ConditionKind::FileHandlesLow, "", "FileHandlesNearLimit")]
        );
        let mut j = judge();
        let mut r = base();
        r.file_max_hit = Some(r.now - Duration::from_secs(30));
        let c = j.judge(&r);
        assert_eq!(
            kinds(&c),
            vec![(ConditionKind::FileHandlesLow, "", "FileMaxReached")]
        );
        assert!(c[0].message.contains("30s ago"), "{}", c[0].message);
        r.now += Duration::from_secs(600);
        assert!(
            j.judge(&r).is_empty(),
            "the line holds for kernel_hit_hold only"
        );
    }

    #[test]
    fn conntrack_raises_at_80_percent_or_when_the_kernel_drops_packets() {
        let mut j = judge();
        let mut r = base();
        r.conntrack = Some((52_429, 65_536));
        assert_eq!(
            kinds(&j.judge(&r)),
            vec![(ConditionKind::ConntrackTableFull, "", "ConntrackNearLimit")]
        );
        let mut j = judge();
        let mut r = base();
        r.conntrack = None; // module not loaded: no counters, but the line still counts
        r.conntrack_hit = Some(r.now);
        assert_eq!(
            kinds(&j.judge(&r)),
            vec![(ConditionKind::ConntrackTableFull, "", "DroppingPackets")]
        );
    }

    fn fs(paths: &[&str], blocks: u64, bavail: u64, files: u64, ffree: u64) -> FsReading {
        FsReading {
            paths: paths.iter().map(PathBuf::from).collect(),
            stat: Ok(FsStat {
                dev: 1,
                frsize: 4096,
                blocks,
                bavail,
                files,
                ffree,
            }),
        }
    }

    #[test]
    fn disk_raises_below_20_percent_available_ahead_of_the_kubelet_and_clears_at_25() {
        let mut j = judge();
        let mut r = base();
        r.filesystems = vec![fs(&["/", "/var/log"], 1000, 190, 1000, 900)];
        let c = j.judge(&r);
        assert_eq!(
            kinds(&c),
            vec![(ConditionKind::DiskSpaceLow, "/", "DiskSpaceLow")]
        );
        assert!(
            c[0].message.contains("(also /var/log)")
                && c[0].message.contains("nodefs.available<10%"),
            "{}",
            c[0].message
        );
        r.filesystems = vec![fs(&["/", "/var/log"], 1000, 240, 1000, 900)];
        assert_eq!(j.judge(&r).len(), 1, "24% is between the lines");
        r.filesystems = vec![fs(&["/", "/var/log"], 1000, 250, 1000, 900)];
        assert!(j.judge(&r).is_empty());
    }

    #[test]
    fn inodes_raise_below_10_percent_free_and_a_filesystem_without_inodes_is_skipped() {
        let mut j = judge();
        let mut r = base();
        r.filesystems = vec![fs(&["/var/lib/rancher/k3s"], 1000, 900, 1000, 99)];
        let c = j.judge(&r);
        assert_eq!(
            kinds(&c),
            vec![(
                ConditionKind::InodesLow,
                "/var/lib/rancher/k3s",
                "InodesLow"
            )]
        );
        assert!(c[0].message.contains("nodefs.inodesFree<5%"));
        r.filesystems = vec![fs(&["/var/lib/rancher/k3s"], 1000, 900, 0, 0)];
        assert!(j.judge(&r).is_empty(), "btrfs reports no inode table");
    }

    #[test]
    fn a_failed_statfs_keeps_what_was_held() {
        let mut j = judge();
        let mut r = base();
        r.filesystems = vec![fs(&["/data"], 1000, 10, 1000, 900)];
        assert_eq!(j.judge(&r).len(), 1);
        r.filesystems = vec![FsReading {
            paths: vec!["/data".into()],
            stat: Err("statfs did not answer within 2s".into()),
        }];
        assert_eq!(
            kinds(&j.judge(&r)),
            vec![(ConditionKind::DiskSpaceLow, "/data", "DiskSpaceLow")]
        );
    }

    #[test]
    fn zombies_beyond_the_threshold_name_their_parent() {
        let mut j = judge();
        let mut r = base();
        r.zombies = Some(Zombies {
            count: 100,
            top_parent: None,
        });
        assert!(j.judge(&r).is_empty(), "100 is not more than 100");
        r.zombies = Some(Zombies {
            count: 150,
            top_parent: Some((4242, "node".into(), 140)),
        });
        let c = j.judge(&r);
        assert_eq!(
            kinds(&c),
            vec![(ConditionKind::ZombieProcesses, "", "ZombiesAccumulating")]
        );
        assert!(
            c[0].message.contains("140 are children of pid 4242 (node)"),
            "{}",
            c[0].message
        );
        r.zombies = Some(Zombies {
            count: 85,
            top_parent: None,
        });
        assert_eq!(j.judge(&r).len(), 1, "clears below 80");
        r.zombies = Some(Zombies {
            count: 79,
            top_parent: None,
        });
        assert!(j.judge(&r).is_empty());
    }
}
