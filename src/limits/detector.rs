//! The limits detector: reads the node's limits through [`HostFiles`] and statvfs through
//! [`FsStats`], hands them to the pure [`super::judge`], exports the metrics. Every pass is
//! bounded (a statvfs that may reach a network goes through the deadline), so it shares the
//! periodic thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::judge::{FsReading, LimitReadings, LimitsJudge, PodsPids, Zombies};
use super::metrics::LimitsMetrics;
use super::procfs;
use super::statfs::{FsStats, LOCAL_FSTYPES};
use crate::config::LimitsSection;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::{Clock, HostFiles};
use crate::formats::mountinfo::{MountEntry, parse_mountinfo};
use crate::model::{LimitHit, LimitHits};

/// The pods' cgroup under the cgroup v2 root (systemd driver, then cgroupfs, k3s's
/// default), or under the v1 pids hierarchy.
const PODS_CGROUPS: [&str; 3] = ["kubepods.slice", "kubepods", "pids/kubepods"];

pub(crate) struct LimitsDetector {
    cfg: LimitsSection,
    files: Arc<dyn HostFiles>,
    clock: Arc<dyn Clock>,
    fs: Box<dyn FsStats>,
    hits: Option<LimitHits>,
    metrics: Option<LimitsMetrics>,
    judge: LimitsJudge,
    /// The pods' cgroup directory (host path), found once it exists.
    pods_cgroup: Option<String>,
}

pub(crate) struct LimitsDeps {
    pub(crate) files: Arc<dyn HostFiles>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) fs: Box<dyn FsStats>,
    /// The kernel's "limit reached" lines, from the kernel detector; None without it.
    pub(crate) hits: Option<LimitHits>,
    pub(crate) metrics: Option<LimitsMetrics>,
}

impl LimitsDetector {
    pub(crate) fn new(cfg: LimitsSection, d: LimitsDeps) -> Self {
        LimitsDetector {
            judge: LimitsJudge::new(cfg.clone()),
            cfg,
            files: d.files,
            clock: d.clock,
            fs: d.fs,
            hits: d.hits,
            metrics: d.metrics,
            pods_cgroup: None,
        }
    }

    fn sysctl(&self, rel: &str) -> Option<u64> {
        self.files
            .read_string(rel)
            .ok()
            .and_then(|t| procfs::sysctl_u64(&t))
    }

    fn pods_pids(&mut self, mounts: &[MountEntry]) -> Option<PodsPids> {
        if self.pods_cgroup.is_none() {
            let cgroup_root = mounts
                .iter()
                .find(|m| m.fstype == "cgroup2")
                .map(|m| m.mount_point.display().to_string())
                .unwrap_or_else(|| "/sys/fs/cgroup".into());
            self.pods_cgroup = PODS_CGROUPS
                .iter()
                .map(|c| {
                    if c.starts_with("pids/") {
                        format!("/sys/fs/cgroup/{c}")
                    } else {
                        format!("{}/{c}", cgroup_root.trim_end_matches('/'))
                    }
                })
                .find(|dir| self.files.read(&format!("{dir}/pids.current")).is_ok());
        }
        let dir = self.pods_cgroup.clone()?;
        let current = self.sysctl(&format!("{dir}/pids.current"))?;
        let max = self
            .files
            .read_string(&format!("{dir}/pids.max"))
            .ok()
            .and_then(|t| procfs::pids_max(&t))?;
        Some(PodsPids {
            cgroup: dir,
            current,
            max,
        })
    }

    /// Every process's state from `/proc/<pid>/stat`: the zombies and their parents.
    fn zombies(&self) -> Option<Zombies> {
        let pids = self.files.list("proc").ok()?;
        let mut count = 0u64;
        let mut parents: HashMap<u32, u64> = HashMap::new();
        for pid in pids
            .iter()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            // A process may exit between the listing and the read: skipped.
            let Ok(stat) = self.files.read_string(&format!("proc/{pid}/stat")) else {
                continue;
            };
            if let Some(('Z', ppid)) = procfs::stat_state_ppid(&stat) {
                count += 1;
                *parents.entry(ppid).or_default() += 1;
            }
        }
        let top_parent = parents
            .into_iter()
            .max_by_key(|(pid, n)| (*n, std::cmp::Reverse(*pid)))
            .map(|(pid, n)| {
                let comm = self
                    .files
                    .read_string(&format!("proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| procfs::stat_comm(&s).map(str::to_string))
                    .unwrap_or_else(|| "?".into());
                (pid, comm, n)
            });
        Some(Zombies { count, top_parent })
    }

    /// The watched paths grouped by filesystem (st_dev), each asked once per pass.
    fn filesystems(&mut self, mounts: &[MountEntry]) -> (Vec<FsReading>, Vec<CheckNote>) {
        let timeout = self.cfg.statfs_timeout.get();
        let mut groups: Vec<FsReading> = Vec::new();
        let mut notes = Vec::new();
        for path in &self.cfg.disk_paths {
            let real = self.files.path(&path.to_string_lossy());
            let local =
                mount_of(mounts, path).is_some_and(|m| LOCAL_FSTYPES.contains(&m.fstype.as_str()));
            match self.fs.stat(&real, local, timeout) {
                Ok(s) => match groups
                    .iter_mut()
                    .find(|g| g.stat.as_ref().is_ok_and(|o| o.dev == s.dev))
                {
                    Some(g) => g.paths.push(path.clone()),
                    None => groups.push(FsReading {
                        paths: vec![path.clone()],
                        stat: Ok(s),
                    }),
                },
                Err(e) if is_missing(&e) => {
                    // No k3s here, or a layout without a separate data dir: not watched.
                }
                Err(e) => {
                    notes.push(CheckNote::new(
                        NoteLevel::Warn,
                        path.display().to_string(),
                        e.clone(),
                    ));
                    groups.push(FsReading {
                        paths: vec![path.clone()],
                        stat: Err(e),
                    });
                }
            }
        }
        (groups, notes)
    }

    fn export(&self, r: &LimitReadings) {
        let Some(m) = &self.metrics else { return };
        let limit = match (r.pid_max, r.threads_max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        m.set("pids", "node", r.threads, limit);
        if let Some(p) = &r.pods_pids {
            m.set("pids", "kubepods", Some(p.current), p.max);
        }
        m.set(
            "file_handles",
            "node",
            r.files.map(|f| f.0),
            r.files.map(|f| f.1),
        );
        m.set(
            "conntrack",
            "node",
            r.conntrack.map(|c| c.0),
            r.conntrack.map(|c| c.1),
        );
        if let Some(z) = &r.zombies {
            m.zombies.set(z.count as i64);
        }
        for fs in &r.filesystems {
            if let Ok(s) = &fs.stat {
                let path = fs.paths[0].display().to_string();
                m.set_fs(&path, s);
            }
        }
    }
}

/// The mount a path lives on: the longest mount point that is a prefix of it.
fn mount_of<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
}

fn is_missing(e: &str) -> bool {
    e.contains("ENOENT") || e.contains("No such file")
}

impl Detector for LimitsDetector {
    fn name(&self) -> &'static str {
        "limits"
    }

    fn interval(&self) -> Duration {
        self.cfg.interval.get()
    }

    fn shares_timer(&self) -> bool {
        true
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let mounts =
            parse_mountinfo(&self.files.read("proc/self/mountinfo").unwrap_or_default()).entries;
        let files = self
            .files
            .read_string("proc/sys/fs/file-nr")
            .ok()
            .and_then(|t| procfs::file_nr(&t));
        let conntrack = self
            .sysctl("proc/sys/net/netfilter/nf_conntrack_count")
            .zip(self.sysctl("proc/sys/net/netfilter/nf_conntrack_max"));
        let (filesystems, mut notes) = self.filesystems(&mounts);
        let r = LimitReadings {
            now: self.clock.monotonic(),
            threads: self
                .files
                .read_string("proc/loadavg")
                .ok()
                .and_then(|t| procfs::loadavg_threads(&t)),
            pid_max: self.sysctl("proc/sys/kernel/pid_max"),
            threads_max: self.sysctl("proc/sys/kernel/threads-max"),
            pods_pids: self.pods_pids(&mounts),
            files,
            conntrack,
            filesystems,
            zombies: self.zombies(),
            conntrack_hit: self
                .hits
                .as_ref()
                .and_then(|h| h.last(LimitHit::ConntrackTableFull)),
            file_max_hit: self.hits.as_ref().and_then(|h| h.last(LimitHit::FileMax)),
        };
        if r.threads.is_none() && r.files.is_none() && r.filesystems.is_empty() {
            return Err(
                "none of /proc/loadavg, /proc/sys/fs/file-nr or the watched paths could be read"
                    .into(),
            );
        }
        self.export(&r);
        let conditions = self.judge.judge(&r);
        if r.conntrack.is_none() {
            notes.push(CheckNote::new(
                NoteLevel::Info,
                "conntrack",
                "nf_conntrack is not loaded: only the kernel's \"table full\" line is watched",
            ));
        }
        let fs_info: Vec<serde_json::Value> = r
            .filesystems
            .iter()
            .map(|f| match &f.stat {
                Ok(s) => serde_json::json!({
                    "paths": f.paths,
                    "available_percent": (s.blocks > 0).then(|| s.bavail as f64 * 100.0 / s.blocks as f64),
                    "inodes_free_percent": (s.files > 0).then(|| s.ffree as f64 * 100.0 / s.files as f64),
                }),
                Err(e) => serde_json::json!({"paths": f.paths, "error": e}),
            })
            .collect();
        Ok(Sample {
            conditions,
            info: serde_json::json!({
                "threads": r.threads,
                "pid_max": r.pid_max,
                "threads_max": r.threads_max,
                "pods_pids": r.pods_pids.as_ref().map(|p| serde_json::json!({"cgroup": p.cgroup, "current": p.current, "max": p.max})),
                "file_handles": r.files,
                "conntrack": r.conntrack,
                "filesystems": fs_info,
                "zombies": r.zombies.as_ref().map(|z| z.count),
            }),
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{FakeClock, FakeFiles};
    use crate::limits::judge::FsStat;
    use crate::limits::statfs::FakeFsStats;
    use crate::model::ConditionKind;
    use std::path::PathBuf;

    fn paths(p: &[&str]) -> Vec<PathBuf> {
        p.iter().map(PathBuf::from).collect()
    }

    const MOUNTINFO: &str = "22 1 8:2 / / rw,relatime - ext4 /dev/root rw\n\
        30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
        40 22 0:50 / /mnt/nas rw - nfs4 nas:/export rw,hard\n";

    fn fixture() -> Arc<FakeFiles> {
        Arc::new(FakeFiles::with(&[
            ("proc/self/mountinfo", MOUNTINFO),
            ("proc/loadavg", "0.10 0.20 0.30 2/600 999\n"),
            ("proc/sys/kernel/pid_max", "32768\n"),
            ("proc/sys/kernel/threads-max", "60000\n"),
            ("proc/sys/fs/file-nr", "3000\t0\t100000\n"),
            ("proc/sys/net/netfilter/nf_conntrack_count", "100\n"),
            ("proc/sys/net/netfilter/nf_conntrack_max", "65536\n"),
            ("sys/fs/cgroup/kubepods/pids.current", "120\n"),
            ("sys/fs/cgroup/kubepods/pids.max", "max\n"),
            ("proc/1/stat", "1 (systemd) S 0 1 1 0 -1 4194560 0 0"),
            (
                "proc/4242/stat",
                "4242 (node app) S 1 4242 4242 0 -1 4194560 0 0",
            ),
        ]))
    }

    fn stat(dev: u64, bavail: u64) -> Result<FsStat, String> {
        Ok(FsStat {
            dev,
            frsize: 4096,
            blocks: 1000,
            bavail,
            files: 1000,
            ffree: 800,
        })
    }

    fn detector(
        files: Arc<FakeFiles>,
        fs: FakeFsStats,
        hits: Option<LimitHits>,
    ) -> (LimitsDetector, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::new(1_800_000_000, Duration::from_secs(5000)));
        let cfg = LimitsSection {
            disk_paths: paths(&["/", "/var/log", "/var/lib/rancher/k3s", "/mnt/nas/data"]),
            ..Default::default()
        };
        let d = LimitsDetector::new(
            cfg,
            LimitsDeps {
                files,
                clock: clock.clone(),
                fs: Box::new(fs),
                hits,
                metrics: None,
            },
        );
        (d, clock)
    }

    fn fake_fs(answers: &[(&str, Result<FsStat, String>)]) -> FakeFsStats {
        let f = FakeFsStats::default();
        for (p, a) in answers {
            f.answers.lock().unwrap().insert(
                PathBuf::from("/fake").join(p.trim_start_matches('/')),
                a.clone(),
            );
        }
        f
    }

    #[test]
    fn a_healthy_fixture_node_holds_nothing_and_reports_its_readings() {
        let fs = fake_fs(&[
            ("/", stat(1, 800)),
            ("/var/log", stat(1, 800)),
            ("/mnt/nas/data", stat(2, 900)),
        ]);
        let asked = fs.asked.clone();
        let (mut d, _) = detector(fixture(), fs, None);
        let s = d.sample().unwrap();
        assert!(s.conditions.is_empty(), "{:?}", s.conditions);
        assert_eq!(s.info["threads"], 600);
        assert_eq!(s.info["pods_pids"]["cgroup"], "/sys/fs/cgroup/kubepods");
        let fs = s.info["filesystems"].as_array().unwrap();
        assert_eq!(
            fs.len(),
            2,
            "/ and /var/log are one filesystem; k3s's dir is absent: {fs:?}"
        );
        assert_eq!(fs[0]["paths"], serde_json::json!(["/", "/var/log"]));
        let asked = asked.lock().unwrap();
        assert!(
            asked.contains(&(PathBuf::from("/fake/"), true)),
            "{asked:?}"
        );
        assert!(
            asked.contains(&(PathBuf::from("/fake/mnt/nas/data"), false)),
            "a path on NFS goes through the deadline: {asked:?}"
        );
    }

    #[test]
    fn each_limit_of_a_fixture_node_raises_its_condition() {
        let files = fixture();
        files.put("proc/loadavg", "5.0 5.0 5.0 3/23000 999\n");
        files.put("proc/sys/fs/file-nr", "71000 0 100000\n");
        files.put("proc/sys/net/netfilter/nf_conntrack_count", "60000\n");
        files.put("sys/fs/cgroup/kubepods/pids.max", "150\n");
        for pid in 100..250 {
            files.put(
                &format!("proc/{pid}/stat"),
                &format!("{pid} (worker) Z 4242 1 1 0 -1 0 0 0"),
            );
        }
        let fs = fake_fs(&[
            (
                "/",
                Ok(FsStat {
                    dev: 1,
                    frsize: 4096,
                    blocks: 1000,
                    bavail: 100,
                    files: 1000,
                    ffree: 50,
                }),
            ),
            ("/var/log", stat(1, 100)),
            (
                "/mnt/nas/data",
                Err("statvfs /fake/mnt/nas/data did not answer within 2000 ms".into()),
            ),
        ]);
        let (mut d, _) = detector(files, fs, None);
        let s = d.sample().unwrap();
        let got: Vec<(ConditionKind, &str)> = s
            .conditions
            .iter()
            .map(|c| (c.kind, c.subject.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (ConditionKind::PidsLow, ""),
                (ConditionKind::PidsLow, "kubepods"),
                (ConditionKind::FileHandlesLow, ""),
                (ConditionKind::ConntrackTableFull, ""),
                (ConditionKind::DiskSpaceLow, "/"),
                (ConditionKind::InodesLow, "/"),
                (ConditionKind::ZombieProcesses, ""),
            ]
        );
        let z = s.conditions.last().unwrap();
        assert!(
            z.message
                .contains("150 are children of pid 4242 (node app)"),
            "{}",
            z.message
        );
        assert!(
            s.notes
                .iter()
                .any(|n| n.level == NoteLevel::Warn && n.detail.contains("did not answer")),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn the_kernel_lines_raise_their_conditions_through_the_shared_view() {
        let hits = LimitHits::default();
        let fs = fake_fs(&[("/", stat(1, 800))]);
        let (mut d, clock) = detector(fixture(), fs, Some(hits.clone()));
        assert!(d.sample().unwrap().conditions.is_empty());
        hits.record(
            LimitHit::ConntrackTableFull,
            clock.monotonic() - Duration::from_secs(5),
        );
        hits.record(LimitHit::FileMax, clock.monotonic());
        let s = d.sample().unwrap();
        let reasons: Vec<&str> = s.conditions.iter().map(|c| c.reason.as_str()).collect();
        assert_eq!(reasons, vec!["FileMaxReached", "DroppingPackets"]);
        clock.advance(Duration::from_secs(601));
        assert!(
            d.sample().unwrap().conditions.is_empty(),
            "held for kernel_hit_hold"
        );
    }
}
