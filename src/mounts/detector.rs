//! The hung-mount detector: discovers network mounts from mountinfo, probes each on the
//! bounded prober (never on this thread, never twice at once), and raises
//! `NetworkMountHung` per mount. A mount is hung when its probe is stuck past the deadline;
//! it clears after `recover_probes` consecutive good probes (hysteresis, so a flapping
//! NAS does not flap the node). Evidence that never touches the mount goes into the
//! message and `/status`: D-state tasks waiting in NFS/FUSE code, and NFS servers the
//! kernel said are not responding.
//!
//! A `hard` NFS mount (the default) on a control-plane node raises the `HardNFSMount`
//! warning: a stalled server there freezes the API server with it (field notes §1).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::dstate::{ProcTaskSource, take_census};
use super::mountinfo::{DEFAULT_NETWORK_FSTYPES, FsTypeSet, WatchPolicy, parse_mountinfo};
use super::prober::{
    DEFAULT_MAX_PROBE_THREADS, ProbeKind, ProbeState, ProbeSyscall, Prober, ProberConfig,
    RealProbeSyscall,
};
use super::unmount::DEFAULT_UNMOUNT_TIMEOUT;
use crate::config::{ConfigDuration, dur_range, range};
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::HostFiles;
use crate::kernel::detector::NfsDown;
use crate::metrics::GaugeF;
use crate::model::{Condition, ConditionKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeChoice {
    Statfs,
    Stat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlPlane {
    Auto,
    Yes,
    No,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountsConfig {
    pub enabled: bool,
    pub interval: ConfigDuration,
    pub probe_timeout: ConfigDuration,
    pub probe: ProbeChoice,
    pub fstypes: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub max_probe_threads: u32,
    pub recover_probes: u32,
    pub control_plane: ControlPlane,
    /// Never lazily unmounted, nor anything under or above them.
    pub protected: Vec<PathBuf>,
    pub allow_kubelet_unmount: bool,
    pub force_nfs: bool,
    pub unmount_timeout: ConfigDuration,
}

impl Default for MountsConfig {
    fn default() -> Self {
        MountsConfig {
            enabled: true,
            interval: ConfigDuration::secs(10),
            // A healthy NFS statfs answers in milliseconds; 2 s is generous on Wi-Fi.
            probe_timeout: ConfigDuration::secs(2),
            // statfs always reaches the server; stat may be answered from cache.
            probe: ProbeChoice::Statfs,
            fstypes: DEFAULT_NETWORK_FSTYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            paths: Vec::new(),
            max_probe_threads: DEFAULT_MAX_PROBE_THREADS as u32,
            recover_probes: 2,
            control_plane: ControlPlane::Auto,
            protected: Vec::new(),
            // Pod volumes belong to kubelet; detaching them behind its back breaks pods.
            allow_kubelet_unmount: false,
            // MNT_FORCE fails every outstanding NFS request with EIO: data loss for
            // writers, so only on request.
            force_nfs: false,
            unmount_timeout: ConfigDuration(DEFAULT_UNMOUNT_TIMEOUT),
        }
    }
}

impl MountsConfig {
    pub fn validate(&self, v: &mut Vec<String>) {
        dur_range(v, "mounts.interval", self.interval, 1_000, 3_600_000);
        dur_range(v, "mounts.probe_timeout", self.probe_timeout, 100, 60_000);
        range(
            v,
            "mounts.max_probe_threads",
            self.max_probe_threads.into(),
            1,
            256,
        );
        range(
            v,
            "mounts.recover_probes",
            self.recover_probes.into(),
            1,
            100,
        );
        if let Err(e) = FsTypeSet::new(&self.fstypes) {
            v.push(format!("key `mounts.fstypes`: {e}"));
        }
        if let Some(p) = self.paths.iter().find(|p| !p.is_absolute()) {
            v.push(format!(
                "key `mounts.paths`: \"{}\" must be an absolute path",
                p.display()
            ));
        }
        dur_range(
            v,
            "mounts.unmount_timeout",
            self.unmount_timeout,
            100,
            60_000,
        );
        for p in &self.protected {
            let dotdot = p.components().any(|c| c == Component::ParentDir);
            if !p.is_absolute() || dotdot {
                v.push(format!(
                    "key `mounts.protected`: \"{}\" must be an absolute path without `..`, such as \"/mnt/backup\"",
                    p.display()
                ));
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MountLabels {
    pub mountpoint: String,
    pub fstype: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PointLabels {
    pub mountpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaitLabels {
    pub wait: String,
}

#[derive(Clone)]
pub struct MountMetrics {
    pub up: Family<MountLabels, Gauge>,
    pub stuck: Family<MountLabels, Gauge>,
    pub probe_seconds: Family<PointLabels, GaugeF>,
    pub hard_nfs: Family<PointLabels, Gauge>,
    pub dstate: Family<WaitLabels, Gauge>,
    pub threads_stuck: Gauge,
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
        m
    }
}

#[derive(Clone, Debug, Default)]
struct MountHealth {
    fstype: String,
    hung: bool,
    good_streak: u32,
    last: String,
}

pub struct MountsDetector {
    cfg: MountsConfig,
    files: Arc<dyn HostFiles>,
    policy: WatchPolicy,
    prober: Prober,
    health: BTreeMap<PathBuf, MountHealth>,
    metrics: Option<MountMetrics>,
    nfs: Option<NfsDown>,
    exported: BTreeSet<(String, String)>,
}

impl MountsDetector {
    pub fn new(
        cfg: MountsConfig,
        files: Arc<dyn HostFiles>,
        metrics: Option<MountMetrics>,
        nfs: Option<NfsDown>,
    ) -> Self {
        Self::with_syscall(cfg, files, metrics, nfs, Arc::new(RealProbeSyscall))
    }

    pub fn with_syscall(
        cfg: MountsConfig,
        files: Arc<dyn HostFiles>,
        metrics: Option<MountMetrics>,
        nfs: Option<NfsDown>,
        syscall: Arc<dyn ProbeSyscall>,
    ) -> Self {
        let fstypes = FsTypeSet::new(&cfg.fstypes).expect("validated by MountsConfig::validate");
        let policy = WatchPolicy::new(fstypes, cfg.paths.clone())
            .expect("validated by MountsConfig::validate");
        let prober = Prober::new(
            ProberConfig {
                max_threads: cfg.max_probe_threads as usize,
                kind: match cfg.probe {
                    ProbeChoice::Statfs => ProbeKind::Statfs,
                    ProbeChoice::Stat => ProbeKind::Stat,
                },
            },
            syscall,
        );
        MountsDetector {
            cfg,
            files,
            policy,
            prober,
            health: BTreeMap::new(),
            metrics,
            nfs,
            exported: BTreeSet::new(),
        }
    }

    fn control_plane(&self) -> bool {
        match self.cfg.control_plane {
            ControlPlane::Yes => true,
            ControlPlane::No => false,
            // k3s servers keep their data here; agents do not have it.
            ControlPlane::Auto => self.files.list("var/lib/rancher/k3s/server").is_ok(),
        }
    }
}

impl Detector for MountsDetector {
    fn name(&self) -> &'static str {
        "mounts"
    }

    fn interval(&self) -> Duration {
        self.cfg.interval.get()
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let mi = self
            .files
            .read("proc/self/mountinfo")
            .map_err(|e| format!("reading mountinfo: {e}"))?;
        let table = parse_mountinfo(&mi);
        let targets = self.policy.targets(&table.entries);
        let paths: Vec<PathBuf> = targets.iter().map(|t| t.path.clone()).collect();
        // Returns within the deadline whatever the mounts do.
        let results = self.prober.probe_all(&paths, self.cfg.probe_timeout.get());
        let census = take_census(&ProcTaskSource::new(self.files.path("proc")), 16).ok();
        let nfs_down: Vec<String> = self
            .nfs
            .as_ref()
            .map(|n| {
                n.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .down_servers()
                    .into_iter()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let control_plane = self.control_plane();

        let mut conditions = Vec::new();
        let mut notes = Vec::new();
        let mut seen = BTreeSet::new();
        for (t, r) in targets.iter().zip(&results) {
            let fstype = t
                .mount
                .as_ref()
                .map(|m| m.fstype.clone())
                .unwrap_or_default();
            let h = self.health.entry(t.path.clone()).or_default();
            h.fstype = fstype.clone();
            match &r.state {
                ProbeState::Stuck => {
                    h.hung = true;
                    h.good_streak = 0;
                    h.last = format!(
                        "{} probe outstanding for {:.1}s",
                        self.cfg.probe.name(),
                        r.duration.as_secs_f64()
                    );
                }
                ProbeState::Ok => {
                    h.good_streak += 1;
                    if h.good_streak >= self.cfg.recover_probes {
                        h.hung = false;
                    }
                    h.last = format!("ok in {:.3}s", r.duration.as_secs_f64());
                }
                ProbeState::Failed { error, .. } => {
                    // An error answer (ESTALE, ENOTCONN) is fast: not hung, but worth showing.
                    h.good_streak = 0;
                    h.last = format!("probe failed: {error}");
                }
                ProbeState::NotProbed(why) => h.last = format!("not probed: {why:?}"),
            }
            let p = t.path.display().to_string();
            if h.hung {
                let mut msg = format!("{p} ({fstype}): {}", h.last);
                if let Some(c) = &census
                    && c.nfs.count + c.fuse.count > 0
                {
                    msg.push_str(&format!(
                        "; {} tasks in D state waiting on NFS, {} on FUSE",
                        c.nfs.count, c.fuse.count
                    ));
                }
                if !nfs_down.is_empty() {
                    msg.push_str(&format!(
                        "; kernel reports NFS server(s) not responding: {}",
                        nfs_down.join(", ")
                    ));
                }
                conditions.push(Condition::new(
                    ConditionKind::NetworkMountHung,
                    p.clone(),
                    "ProbeTimeout",
                    msg,
                ));
            }
            if t.hard_nfs {
                let level = if control_plane {
                    NoteLevel::Warn
                } else {
                    NoteLevel::Info
                };
                notes.push(CheckNote::new(
                    level,
                    format!("hard NFS {p}"),
                    "a stalled server leaves every task touching it in D state until a reboot; prefer `soft,timeo=...` or not mounting NFS on a control-plane node",
                ));
                if control_plane {
                    conditions.push(Condition::new(
                        ConditionKind::HardNfsMount,
                        p.clone(),
                        "HardMountOnControlPlane",
                        format!("{p} is a hard NFS mount on a control-plane node: a stalled server can freeze the API server"),
                    ));
                }
            }
            if let Some(m) = &self.metrics {
                let l = MountLabels {
                    mountpoint: p.clone(),
                    fstype: fstype.clone(),
                };
                m.up.get_or_create(&l)
                    .set(i64::from(r.state == ProbeState::Ok));
                m.stuck
                    .get_or_create(&l)
                    .set(i64::from(r.state == ProbeState::Stuck));
                m.probe_seconds
                    .get_or_create(&PointLabels {
                        mountpoint: p.clone(),
                    })
                    .set(r.duration.as_secs_f64());
                m.hard_nfs
                    .get_or_create(&PointLabels {
                        mountpoint: p.clone(),
                    })
                    .set(i64::from(t.hard_nfs));
            }
            seen.insert((p, fstype));
        }
        // Mounts that went away: forget them and their series.
        self.health.retain(|k, _| paths.contains(k));
        if let Some(m) = &self.metrics {
            for (p, f) in self.exported.difference(&seen) {
                let l = MountLabels {
                    mountpoint: p.clone(),
                    fstype: f.clone(),
                };
                m.up.remove(&l);
                m.stuck.remove(&l);
                m.probe_seconds.remove(&PointLabels {
                    mountpoint: p.clone(),
                });
                m.hard_nfs.remove(&PointLabels {
                    mountpoint: p.clone(),
                });
            }
            if let Some(c) = &census {
                for (w, n) in [
                    ("nfs", c.nfs.count),
                    ("fuse", c.fuse.count),
                    ("other", c.other.count),
                ] {
                    m.dstate
                        .get_or_create(&WaitLabels { wait: w.into() })
                        .set(n as i64);
                }
            }
            m.threads_stuck
                .set(self.prober.stats().threads_stuck as i64);
        }
        self.exported = seen;
        if targets.is_empty() {
            notes.push(CheckNote::new(
                NoteLevel::Ok,
                "network mounts",
                "none to watch",
            ));
        }
        Ok(Sample {
            conditions,
            info: serde_json::json!({
                "mounts": self.health.iter().map(|(p, h)| serde_json::json!({
                    "path": p, "fstype": h.fstype, "hung": h.hung, "last": h.last,
                })).collect::<Vec<_>>(),
                "dstate": census.as_ref().map(|c| serde_json::json!({"nfs": c.nfs.count, "fuse": c.fuse.count, "other": c.other.count})),
                "nfs_servers_down": nfs_down,
                "probe_threads_stuck": self.prober.stats().threads_stuck,
                "control_plane": control_plane,
            }),
            notes,
        })
    }
}

impl ProbeChoice {
    fn name(self) -> &'static str {
        match self {
            ProbeChoice::Statfs => "statfs",
            ProbeChoice::Stat => "stat",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeFiles;
    use crate::mounts::prober::FakeProbeSyscall;
    use std::path::Path;

    const MI: &str = "36 25 0:32 / /mnt/nas rw,relatime - nfs4 nas:/export rw,vers=4.2,hard,proto=tcp\n37 25 0:33 / /mnt/soft rw - nfs4 nas:/b rw,soft,timeo=50\n38 25 8:1 / /data rw - ext4 /dev/sda1 rw\n";

    fn det(files: Arc<FakeFiles>, fake: Arc<FakeProbeSyscall>, cp: ControlPlane) -> MountsDetector {
        let cfg = MountsConfig {
            probe_timeout: ConfigDuration::millis(200),
            control_plane: cp,
            ..Default::default()
        };
        MountsDetector::with_syscall(cfg, files, None, None, fake)
    }

    #[test]
    fn a_stuck_probe_raises_per_mount_and_clears_after_two_good_probes() {
        let files = Arc::new(FakeFiles::with(&[("proc/self/mountinfo", MI)]));
        let fake = Arc::new(FakeProbeSyscall::default());
        fake.hang(Path::new("/mnt/nas"));
        let mut d = det(files, fake.clone(), ControlPlane::No);
        let s = d.sample().unwrap();
        let hung: Vec<_> = s
            .conditions
            .iter()
            .filter(|c| c.kind == ConditionKind::NetworkMountHung)
            .collect();
        assert_eq!(hung.len(), 1, "{:?}", s.conditions);
        assert_eq!(hung[0].subject, "/mnt/nas");
        assert!(
            d.sample()
                .unwrap()
                .conditions
                .iter()
                .any(|c| c.subject == "/mnt/nas"),
            "still stuck"
        );
        fake.release(Path::new("/mnt/nas"));
        assert!(d.prober.monitor().wait_idle(Duration::from_secs(5)));
        assert!(
            d.sample()
                .unwrap()
                .conditions
                .iter()
                .any(|c| c.kind == ConditionKind::NetworkMountHung),
            "one good probe is not enough"
        );
        assert!(
            d.sample().unwrap().conditions.is_empty(),
            "two good probes clear it"
        );
    }

    #[test]
    fn a_hard_nfs_mount_is_a_warning_condition_only_on_a_control_plane_node() {
        let files = Arc::new(FakeFiles::with(&[("proc/self/mountinfo", MI)]));
        let mut d = det(
            files.clone(),
            Arc::new(FakeProbeSyscall::default()),
            ControlPlane::No,
        );
        let s = d.sample().unwrap();
        assert!(s.conditions.is_empty());
        assert!(
            s.notes
                .iter()
                .any(|n| n.item == "hard NFS /mnt/nas" && n.level == NoteLevel::Info)
        );
        files.put("var/lib/rancher/k3s/server/token", "x");
        let mut d = det(
            files,
            Arc::new(FakeProbeSyscall::default()),
            ControlPlane::Auto,
        );
        let s = d.sample().unwrap();
        let w: Vec<_> = s
            .conditions
            .iter()
            .map(|c| (c.kind, c.subject.as_str()))
            .collect();
        assert_eq!(
            w,
            vec![(ConditionKind::HardNfsMount, "/mnt/nas")],
            "the soft mount is fine"
        );
    }

    #[test]
    fn unmount_keys_are_validated_with_the_key_named() {
        let mut v = Vec::new();
        MountsConfig {
            protected: vec!["/ok".into(), "rel/x".into(), "/a/../b".into()],
            unmount_timeout: ConfigDuration::millis(10),
            ..Default::default()
        }
        .validate(&mut v);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(
            v[0].contains("`mounts.unmount_timeout`") && v[0].contains("100ms to 1m"),
            "{v:?}"
        );
        assert!(
            v[1].contains("`mounts.protected`") && v[1].contains("rel/x"),
            "{v:?}"
        );
        assert!(v[2].contains("/a/../b"), "{v:?}");
        let mut v = Vec::new();
        MountsConfig::default().validate(&mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn bad_fstype_patterns_and_relative_paths_are_config_errors() {
        let mut v = Vec::new();
        MountsConfig {
            paths: vec!["mnt/x".into()],
            ..Default::default()
        }
        .validate(&mut v);
        assert!(v.iter().any(|e| e.contains("mounts.paths")), "{v:?}");
    }
}
