//! The hung-mount detector: discovers network mounts from mountinfo, probes each on the
//! bounded prober (never on this thread, never twice at once), and raises
//! `NetworkMountHung` per mount. A mount is hung when its probe is stuck past the deadline;
//! it clears after `recover_probes` consecutive good probes (hysteresis, so a flapping
//! NAS does not flap the node). Evidence that never touches the mount goes into the
//! message and `/status`: D-state tasks waiting in NFS/FUSE code, and NFS servers the
//! kernel said are not responding.
//!
//! A `hard` NFS mount (the default) on a control-plane node raises the `HardNFSMount`
//! warning: a stalled server there freezes the API server with it (tasks in D state
//! hold kernel locks until the server answers).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::detached::DetachedMounts;
use super::dstate::{Census, ProcTaskSource, TaskSource, take_census};
use super::judge::{MountVerdict, ProbeOutcome, RpcSigns};
use super::metrics::{MountLabels, MountMetrics, PointLabels, WaitLabels};
use super::mountstats::{MountRpcStats, RpcGrowth, growth, parse_mountstats};
use super::prober::{
    NotProbedReason, ProbeKind, ProbeResult, ProbeState, ProbeSyscall, Prober, ProberConfig,
    ProberMonitor, RealProbeSyscall,
};
use super::watch::{WatchPolicy, WatchTarget};
use crate::config::MountsSection;
use crate::config::mounts::FsTypeSet;
use crate::config::mounts::{ControlPlane, ProbeChoice};
use crate::detect::{CheckNote, Detector, NoteLevel, Sample, WakeOn};
use crate::edge::HostFiles;
use crate::formats::mountinfo::{MountEntry, parse_mountinfo};
use crate::model::{Condition, ConditionKind, NfsServersDown};

/// Passes between two censuses while no watched mount is in trouble: keeps
/// `nodemedic_dstate_tasks` at most a minute old at the default 10 s interval, for a sixth
/// of the cost of walking every task of the node on every pass.
pub(crate) const CENSUS_IDLE_EVERY: u32 = 6;

/// The pass interval while no network mount is watched and nothing is in trouble, when the
/// mount table can be waited on: a ceiling only, since a mount or unmount wakes the
/// detector at once (issue 24: a node without network mounts pays no wake-ups for them).
pub(crate) const QUIET_CEILING: Duration = Duration::from_secs(600);

/// Called when the mount table changed since the last pass.
pub type OnTableChange = Box<dyn Fn() + Send>;

/// When the D-state census (a walk over every task's `/proc` files, the detector's main
/// cost) runs. Pure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CensusSchedule {
    /// Passes skipped since the last census; `None` before the first one.
    skipped: Option<u32>,
}

impl CensusSchedule {
    /// `trouble`: a mount is hung or stuck, its RPC counters show trouble, a detached mount
    /// may still hold tasks, or the kernel reports an NFS server down: run every pass.
    /// `watched`: there are network mounts to watch: run every [`CENSUS_IDLE_EVERY`] passes.
    /// Neither: tasks cannot be blocked on a mount this detector knows of; skip.
    pub(crate) fn due(&self, trouble: bool, watched: bool) -> bool {
        trouble || (watched && self.skipped.is_none_or(|n| n + 1 >= CENSUS_IDLE_EVERY))
    }

    pub(crate) fn ran(&mut self) {
        self.skipped = Some(0);
    }

    pub(crate) fn skipped(&mut self) {
        self.skipped = self.skipped.map(|n| n.saturating_add(1));
    }
}

#[derive(Clone, Debug, Default)]
struct MountHealth {
    fstype: String,
    verdict: MountVerdict,
    last: String,
    /// The previous mountstats sample of this mount (NFS only).
    rpc_prev: Option<MountRpcStats>,
    /// What the counters did in the last interval.
    rpc_growth: Option<RpcGrowth>,
    /// A probe of it ever returned or timed out (else its state was never known).
    probed: bool,
    /// No probe could run for it this pass (every thread taken): state unknown.
    unknown: bool,
    /// `last` of the last pass that probed it.
    last_known: String,
}

pub struct MountsDetector {
    cfg: MountsSection,
    files: Arc<dyn HostFiles>,
    policy: WatchPolicy,
    prober: Prober,
    health: BTreeMap<PathBuf, MountHealth>,
    metrics: Option<MountMetrics>,
    nfs: Option<NfsServersDown>,
    exported: BTreeSet<(String, String)>,
    detached: Arc<DetachedMounts>,
    tasks: Arc<dyn TaskSource + Send + Sync>,
    census_schedule: CensusSchedule,
    /// `/proc/self/mountinfo` held open for poll(2): the kernel reports POLLPRI|POLLERR
    /// once for each change of the mount namespace's table (proc(5), "/proc/pid/mounts"),
    /// and the poll itself re-arms it. None when it cannot be opened (fixture roots).
    table: Option<std::fs::File>,
    /// No watched mount and nothing in trouble at the last pass: wait for the table.
    quiet: bool,
    table_hash: Option<u64>,
    on_change: Option<OnTableChange>,
}

impl MountsDetector {
    pub fn new(
        cfg: MountsSection,
        files: Arc<dyn HostFiles>,
        metrics: Option<MountMetrics>,
        nfs: Option<NfsServersDown>,
    ) -> Self {
        Self::with_syscall(cfg, files, metrics, nfs, Arc::new(RealProbeSyscall))
    }

    pub(crate) fn with_syscall(
        cfg: MountsSection,
        files: Arc<dyn HostFiles>,
        metrics: Option<MountMetrics>,
        nfs: Option<NfsServersDown>,
        syscall: Arc<dyn ProbeSyscall>,
    ) -> Self {
        let fstypes = FsTypeSet::new(&cfg.fstypes).expect("validated by MountsSection::validate");
        let policy = WatchPolicy::new(fstypes, cfg.paths.clone())
            .expect("validated by MountsSection::validate");
        let prober = Prober::new(
            ProberConfig {
                max_threads: cfg.max_probe_threads as usize,
                kind: match cfg.probe {
                    ProbeChoice::Statfs => ProbeKind::Statfs,
                    ProbeChoice::Stat => ProbeKind::Stat,
                },
                ..ProberConfig::default()
            },
            syscall,
        );
        let tasks = Arc::new(ProcTaskSource::new(files.path("proc")));
        let table = open_table(&files.path("proc/self/mountinfo"));
        MountsDetector {
            cfg,
            files,
            policy,
            prober,
            health: BTreeMap::new(),
            metrics,
            nfs,
            exported: BTreeSet::new(),
            detached: Arc::new(DetachedMounts::default()),
            tasks,
            census_schedule: CensusSchedule::default(),
            table,
            quiet: false,
            table_hash: None,
            on_change: None,
        }
    }

    /// `f` runs after a pass that found the mount table changed (the storage detector is
    /// woken to watch a filesystem mounted since its last pass).
    pub fn on_table_change(mut self, f: OnTableChange) -> Self {
        self.on_change = Some(f);
        self
    }

    /// Shares the record of mounts the unmount remedy detached: while tasks are still
    /// blocked in their filesystem's waits, `NetworkMountHung` stays raised for them.
    pub fn with_detached(mut self, detached: Arc<DetachedMounts>) -> Self {
        self.detached = detached;
        self
    }

    #[cfg(test)]
    /// Replaces the `/proc` task walk (tests).
    pub(crate) fn with_task_source(mut self, tasks: Arc<dyn TaskSource + Send + Sync>) -> Self {
        self.tasks = tasks;
        self
    }

    pub fn prober_monitor(&self) -> ProberMonitor {
        self.prober.monitor()
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

/// The mount table to poll, if `path` is procfs's (a fixture file under a test root never
/// signals, so its detector keeps its interval).
fn open_table(path: &std::path::Path) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: statfs is plain old data; all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fills `st`, a live statfs, for an fd we own.
    let rc = unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) };
    (rc == 0 && st.f_type == libc::PROC_SUPER_MAGIC).then_some(f)
}

/// Tasks of a D-state census that can be blocked on a detached mount of `fstype`. The
/// census tells NFS/SUNRPC and FUSE waits apart, not which mount a task waits on; other
/// network filesystems (cifs, ceph, 9p) wait in functions it counts as `other`, next to
/// disk I/O, so for them only NFS and FUSE waits are counted.
fn blocked_for(fstype: &str, c: &Census) -> usize {
    if fstype == "nfs" || fstype == "nfs4" {
        c.nfs.count
    } else if fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.") {
        c.fuse.count
    } else {
        c.nfs.count + c.fuse.count
    }
}

fn rpc_text(g: &RpcGrowth) -> String {
    format!(
        "RPC in the last interval: {} sent, {} answered, {} retransmissions, {} major timeouts, backlog +{}",
        g.sends, g.recvs, g.retransmissions, g.major_timeouts, g.backlog_u
    )
}

impl Detector for MountsDetector {
    fn name(&self) -> &'static str {
        "mounts"
    }

    fn interval(&self) -> Duration {
        if self.quiet && self.table.is_some() {
            QUIET_CEILING.max(self.cfg.interval.get())
        } else {
            self.cfg.interval.get()
        }
    }

    /// Probes and calls run under deadlines: the pass is bounded (shared periodic thread).
    fn shares_timer(&self) -> bool {
        true
    }

    fn wake_fd(&self) -> Option<(std::os::fd::RawFd, WakeOn)> {
        use std::os::fd::AsRawFd;
        self.table.as_ref().map(|f| (f.as_raw_fd(), WakeOn::Notify))
    }

    /// Pods starting on a busy node change the mount table many times a second: a pass
    /// at most every `interval`, as without the wait.
    fn wake_gap(&self) -> Duration {
        self.cfg.interval.get()
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let mi = self
            .files
            .read("proc/self/mountinfo")
            .map_err(|e| format!("reading mountinfo: {e}"))?;
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            mi.hash(&mut h);
            h.finish()
        };
        if self.table_hash.replace(hash).is_some_and(|old| old != hash)
            && let Some(f) = &self.on_change
        {
            f();
        }
        let table = parse_mountinfo(&mi);
        let targets = self.policy.targets(&table.entries);
        let paths: Vec<PathBuf> = targets.iter().map(|t| t.path.clone()).collect();
        // Returns within the deadline whatever the mounts do.
        let results = self.prober.probe_all(&paths, self.cfg.probe_timeout.get());
        // Only NFS prints RPC statistics; do not read the file without an NFS mount.
        let stats = targets
            .iter()
            .any(|t| t.mount.as_ref().is_some_and(MountEntry::is_nfs))
            .then(|| self.files.read("proc/self/mountstats").ok())
            .flatten()
            .map(|text| parse_mountstats(&text));
        let nfs_down: Vec<String> = self
            .nfs
            .as_ref()
            .map(NfsServersDown::get)
            .unwrap_or_default();
        let control_plane = self.control_plane();

        // Verdicts first: they decide whether the census is worth its cost.
        let mut trouble = !nfs_down.is_empty() || !self.detached.is_empty();
        for (t, r) in targets.iter().zip(&results) {
            let fstype = t
                .mount
                .as_ref()
                .map(|m| m.fstype.clone())
                .unwrap_or_default();
            let h = self.health.entry(t.path.clone()).or_default();
            h.fstype = fstype;
            let cur = stats
                .as_ref()
                .and_then(|s| s.find(&t.path))
                .and_then(|m| m.rpc.clone());
            h.rpc_growth = match (&h.rpc_prev, &cur) {
                (Some(prev), Some(cur)) => Some(growth(prev, cur)),
                _ => None,
            };
            h.rpc_prev = cur;
            let signs = h.rpc_growth.as_ref().map(RpcSigns::from_growth);
            let outcome = match &r.state {
                ProbeState::Ok => ProbeOutcome::Ok,
                ProbeState::Stuck => ProbeOutcome::Stuck,
                ProbeState::Failed { .. } => ProbeOutcome::Failed,
                ProbeState::NotProbed(_) => ProbeOutcome::NotProbed,
            };
            h.verdict.step(outcome, signs, self.cfg.recover_probes);
            h.unknown = outcome == ProbeOutcome::NotProbed;
            h.probed |= !h.unknown;
            let probed_text = match &r.state {
                ProbeState::Stuck => format!(
                    "{} probe outstanding for {:.1}s",
                    self.cfg.probe.name(),
                    r.duration.as_secs_f64()
                ),
                ProbeState::Ok => format!("ok in {:.3}s", r.duration.as_secs_f64()),
                // An error answer (ESTALE, ENOTCONN) is fast: not hung, but worth showing.
                ProbeState::Failed { error, .. } => format!("probe failed: {error}"),
                ProbeState::NotProbed(why) => format!("unknown: {}", not_probed_text(why)),
            };
            h.last = if h.unknown && h.probed {
                format!("{probed_text}; last known: {}", h.last_known)
            } else {
                probed_text
            };
            if !h.unknown {
                h.last_known = h.last.clone();
            }
            trouble |=
                h.verdict.hung || outcome == ProbeOutcome::Stuck || signs.is_some_and(|s| s.any());
        }
        // Mounts that went away: forget them (a detached one lives on in `detached`).
        self.health.retain(|k, _| paths.contains(k));

        self.quiet = targets.is_empty() && !trouble;
        let census = if self.census_schedule.due(trouble, !targets.is_empty()) {
            self.census_schedule.ran();
            Some(take_census(self.tasks.as_ref(), 16).map_err(|e| e.to_string()))
        } else {
            self.census_schedule.skipped();
            None
        };
        let counted = census.as_ref().and_then(|c| c.as_ref().ok());

        let mut conditions = Vec::new();
        let mut notes = Vec::new();
        let mut seen = BTreeSet::new();
        for (t, r) in targets.iter().zip(&results) {
            let h = &self.health[&t.path];
            let fstype = h.fstype.clone();
            let p = t.path.display().to_string();
            if h.verdict.hung {
                let mut msg = format!("{p} ({fstype}): {}", h.last);
                if let Some(g) = &h.rpc_growth {
                    msg.push_str(&format!("; {}", rpc_text(g)));
                }
                if let Some(c) = counted
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
                // A mount an unprivileged user owns can be stalled on purpose by that user:
                // its own kind, whose ladder may only cordon (checked at config load).
                let kind = match t.user_owner {
                    Some(uid) => {
                        msg.push_str(&format!(
                            "; owned by unprivileged uid {uid} (user_id={uid}): reported and cordoned only, never restarted, unmounted or rebooted for"
                        ));
                        ConditionKind::UserMountHung
                    }
                    None => ConditionKind::NetworkMountHung,
                };
                conditions.push(Condition::new(
                    kind,
                    p.clone(),
                    h.verdict.reason.name(),
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
                m.unknown.get_or_create(&l).set(i64::from(h.unknown));
                // Unknown is neither down nor fine: up and stuck keep the last probe's
                // result (absent if it never had one).
                if !h.unknown {
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
                }
                m.hard_nfs
                    .get_or_create(&PointLabels {
                        mountpoint: p.clone(),
                    })
                    .set(i64::from(t.hard_nfs));
            }
            seen.insert((p, fstype));
        }

        // Detached by the unmount remedy: gone from the table, but tasks that were blocked
        // in them stay blocked until the server answers or the node reboots.
        let mut detached_info = Vec::new();
        for d in self.detached.list() {
            let p = d.mount_point.display().to_string();
            if conditions
                .iter()
                .any(|c| c.kind == ConditionKind::NetworkMountHung && c.subject == p)
            {
                // Mounted again at the same path and hung itself: that evidence speaks.
                continue;
            }
            let blocked = match &census {
                Some(Ok(c)) => Ok(blocked_for(&d.fstype, c)),
                Some(Err(e)) => Err(format!("the D-state census failed: {e}")),
                // The schedule runs the census every pass while anything is detached.
                None => Err("no D-state census this pass".to_string()),
            };
            detached_info.push(serde_json::json!({
                "path": p, "fstype": d.fstype, "source": d.source,
                "blocked_tasks": blocked.as_ref().ok(),
            }));
            let msg = match blocked {
                Ok(0) => {
                    log::info!(
                        "no task is blocked on the detached mount {p} ({}) any more",
                        d.fstype
                    );
                    self.detached.forget(&d.mount_point);
                    continue;
                }
                Ok(n) => format!(
                    "{p} ({} {}) was lazily unmounted by nodemedic; new accesses no longer hang, but {n} task(s) are still blocked in {} waits until the server answers or the node reboots",
                    d.fstype,
                    d.source,
                    if d.fstype.starts_with("nfs") {
                        "NFS"
                    } else if d.fstype.starts_with("fuse") {
                        "FUSE"
                    } else {
                        "NFS/FUSE"
                    },
                ),
                Err(e) => format!(
                    "{p} ({} {}) was lazily unmounted by nodemedic; whether tasks are still blocked is unknown ({e})",
                    d.fstype, d.source
                ),
            };
            conditions.push(Condition::new(
                ConditionKind::NetworkMountHung,
                p,
                "DetachedTasksBlocked",
                msg,
            ));
        }

        if let Some(m) = &self.metrics {
            for (p, f) in self.exported.difference(&seen) {
                let l = MountLabels {
                    mountpoint: p.clone(),
                    fstype: f.clone(),
                };
                m.up.remove(&l);
                m.stuck.remove(&l);
                m.unknown.remove(&l);
                m.probe_seconds.remove(&PointLabels {
                    mountpoint: p.clone(),
                });
                m.hard_nfs.remove(&PointLabels {
                    mountpoint: p.clone(),
                });
            }
            match counted {
                Some(c) => {
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
                // Nothing watched and no census: no series rather than stale ones.
                None if targets.is_empty() => m.dstate.clear(),
                // Skipped while all is well: the last census (at most a minute old) stands.
                None => {}
            }
            let stats = self.prober.stats();
            m.threads_stuck.set(stats.threads_stuck as i64);
            m.threads.set(stats.threads_total as i64);
        }
        self.exported = seen;
        if let Some(c) = self.unprobed_condition(&targets, &results) {
            conditions.push(c);
        }
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
                    "path": p, "fstype": h.fstype,
                    "probe": if h.unknown { "unknown" } else { "probed" },
                    // Never probed: whether it hangs is not known.
                    "hung": (h.probed || h.verdict.hung).then_some(h.verdict.hung),
                    "reason": h.verdict.hung.then_some(h.verdict.reason.name()),
                    "last": h.last, "rpc": h.rpc_growth,
                })).collect::<Vec<_>>(),
                "dstate": counted.map(|c| serde_json::json!({"nfs": c.nfs.count, "fuse": c.fuse.count, "other": c.other.count})),
                "census": match &census {
                    Some(Ok(_)) => "this pass".to_string(),
                    Some(Err(e)) => format!("failed: {e}"),
                    None if targets.is_empty() => "not needed: no network mount watched".to_string(),
                    None => "skipped: no mount in trouble".to_string(),
                },
                "detached": detached_info,
                "nfs_servers_down": nfs_down,
                "probe_threads_stuck": self.prober.stats().threads_stuck,
                "control_plane": control_plane,
            }),
            notes,
        })
    }
}

impl MountsDetector {
    /// `MountsUnprobed` when some watched mount got no probe this pass. Their
    /// `NetworkMountHung` stays as last known (no evidence either way), so the warning
    /// says that the picture is incomplete and why.
    fn unprobed_condition(
        &self,
        targets: &[WatchTarget],
        results: &[ProbeResult],
    ) -> Option<Condition> {
        let unknown: Vec<(&WatchTarget, &NotProbedReason)> = targets
            .iter()
            .zip(results)
            .filter_map(|(t, r)| match &r.state {
                ProbeState::NotProbed(why) => Some((t, why)),
                _ => None,
            })
            .collect();
        let (_, why) = unknown.first()?;
        let reason = match why {
            NotProbedReason::ThreadCapReached { .. } => "ProbeThreadsExhausted",
            NotProbedReason::SpawnFailed { .. } => "ProbeThreadSpawnFailed",
        };
        let names: Vec<String> = unknown
            .iter()
            .take(5)
            .map(|(t, _)| t.path.display().to_string())
            .collect();
        let more = unknown.len().saturating_sub(names.len());
        Some(Condition::new(
            ConditionKind::MountsUnprobed,
            "",
            reason,
            format!(
                "{} of {} watched mount(s) could not be probed ({}): their state is unknown, and NetworkMountHung keeps what was last known for them: {}{}; {} probe thread(s) are parked on hung mounts; fix those mounts or raise mounts.max_probe_threads",
                unknown.len(),
                targets.len(),
                not_probed_text(why),
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                self.prober.stats().threads_stuck,
            ),
        ))
    }
}

fn not_probed_text(why: &NotProbedReason) -> String {
    match why {
        NotProbedReason::ThreadCapReached { cap } => {
            format!("every one of the {cap} probe threads is taken")
        }
        NotProbedReason::SpawnFailed { error } => {
            format!("no probe thread could be started: {error}")
        }
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
    use crate::config::ConfigDuration;
    use crate::edge::FakeFiles;
    use crate::mounts::dstate::{FakeTaskSource, RawTask};
    use crate::mounts::prober::FakeProbeSyscall;
    use prometheus_client::registry::Registry;
    use std::path::Path;

    const MI: &str = "36 25 0:32 / /mnt/nas rw,relatime - nfs4 nas:/export rw,vers=4.2,hard,proto=tcp\n37 25 0:33 / /mnt/soft rw - nfs4 nas:/b rw,soft,timeo=50\n38 25 8:1 / /data rw - ext4 /dev/sda1 rw\n";

    fn det(files: Arc<FakeFiles>, fake: Arc<FakeProbeSyscall>, cp: ControlPlane) -> MountsDetector {
        let cfg = MountsSection {
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

    fn fuse_task(id: u32) -> RawTask {
        RawTask {
            id,
            stat: format!("{id} (stat) D 1 {id}"),
            wchan: "fuse_get_req".into(),
        }
    }

    fn hung_conditions(s: &Sample) -> Vec<(String, String)> {
        s.conditions
            .iter()
            .filter(|c| c.kind == ConditionKind::NetworkMountHung)
            .map(|c| (c.subject.clone(), c.reason.clone()))
            .collect()
    }

    const FUSE_MI: &str = "38 25 8:1 / / rw - ext4 /dev/sda1 rw\n60 38 0:70 / /mnt/hang rw - fuse.nodemedic-hang nodemedic-hang rw,user_id=0\n";

    #[test]
    fn a_hung_fuse_mount_of_an_unprivileged_user_raises_user_mount_hung_not_network_mount_hung() {
        // Issue 18.1: before, any user's dead FUSE mount raised NetworkMountHung, whose
        // ladder unmounts (and may reboot).
        let table = "38 25 8:1 / / rw - ext4 /dev/sda1 rw\n\
            60 38 0:70 / /mnt/user rw - fuse.evil evil rw,user_id=65534,group_id=65534\n\
            61 38 0:71 / /mnt/root rw - fuse.sshfs root@nas:/ rw,user_id=0,group_id=0\n\
            62 38 0:72 / /tmp/x rw,nosuid - fuse lure rw,user_id=1000\n";
        let files = Arc::new(FakeFiles::with(&[("proc/self/mountinfo", table)]));
        let fake = Arc::new(FakeProbeSyscall::default());
        for p in ["/mnt/user", "/mnt/root", "/tmp/x/deep"] {
            fake.hang(Path::new(p));
        }
        let mut d = MountsDetector::with_syscall(
            MountsSection {
                probe_timeout: ConfigDuration::millis(100),
                control_plane: ControlPlane::No,
                // A listed path inside a user's mount is the user's too.
                paths: vec!["/tmp/x/deep".into()],
                ..Default::default()
            },
            files,
            None,
            None,
            fake.clone(),
        )
        .with_task_source(Arc::new(FakeTaskSource::default()));
        let s = d.sample().unwrap();
        let mut got: Vec<(ConditionKind, String)> = s
            .conditions
            .iter()
            .map(|c| (c.kind, c.subject.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (ConditionKind::NetworkMountHung, "/mnt/root".to_string()),
                (ConditionKind::UserMountHung, "/mnt/user".to_string()),
                (ConditionKind::UserMountHung, "/tmp/x/deep".to_string()),
            ]
        );
        let user = s
            .conditions
            .iter()
            .find(|c| c.subject == "/mnt/user")
            .unwrap();
        assert!(user.message.contains("uid 65534"), "{}", user.message);
        for p in ["/mnt/user", "/mnt/root", "/tmp/x/deep"] {
            fake.release(Path::new(p));
        }
    }

    #[test]
    fn a_detached_mount_stays_hung_while_the_census_shows_blocked_tasks_then_clears() {
        let files = Arc::new(FakeFiles::with(&[("proc/self/mountinfo", FUSE_MI)]));
        let fake = Arc::new(FakeProbeSyscall::default());
        fake.hang(Path::new("/mnt/hang"));
        let tasks = Arc::new(FakeTaskSource::new(vec![fuse_task(500), fuse_task(501)]));
        let detached = Arc::new(DetachedMounts::default());
        let mut d = det(files.clone(), fake.clone(), ControlPlane::No)
            .with_detached(detached.clone())
            .with_task_source(tasks.clone());
        assert_eq!(
            hung_conditions(&d.sample().unwrap()),
            vec![("/mnt/hang".into(), "ProbeTimeout".into())]
        );

        // The remedy detaches it: gone from the table, two tasks still blocked.
        let rules = crate::mounts::unmount::UnmountRules::default();
        let um = crate::mounts::unmount::RecordingUnmounter::default();
        crate::mounts::unmount::lazy_unmount(
            FUSE_MI.as_bytes(),
            Path::new("/mnt/hang"),
            &rules,
            &um,
            &detached,
        )
        .unwrap();
        files.put(
            "proc/self/mountinfo",
            "38 25 8:1 / / rw - ext4 /dev/sda1 rw\n",
        );
        for _ in 0..3 {
            let s = d.sample().unwrap();
            assert_eq!(
                hung_conditions(&s),
                vec![("/mnt/hang".into(), "DetachedTasksBlocked".into())]
            );
            assert!(
                s.conditions[0].message.contains("2 task(s)"),
                "{:?}",
                s.conditions
            );
            assert_eq!(s.info["detached"][0]["blocked_tasks"], 2);
        }
        // NFS waits do not hold a FUSE mount.
        tasks.set(vec![RawTask {
            id: 9,
            stat: "9 (cp) D 1 9".into(),
            wchan: "rpc_wait_bit_killable".into(),
        }]);
        assert!(hung_conditions(&d.sample().unwrap()).is_empty());
        assert!(detached.is_empty(), "forgotten once nothing is blocked");
        fake.release(Path::new("/mnt/hang"));
    }

    #[test]
    fn a_detached_mount_is_kept_while_the_census_cannot_be_taken() {
        let files = Arc::new(FakeFiles::with(&[(
            "proc/self/mountinfo",
            "38 25 8:1 / / rw - ext4 /dev/sda1 rw\n",
        )]));
        let detached = Arc::new(DetachedMounts::default());
        detached.record(crate::mounts::detached::DetachedMount {
            mount_point: "/mnt/nas".into(),
            fstype: "nfs4".into(),
            source: "nas:/x".into(),
        });
        // FakeFiles has no real /proc behind it: the walk fails.
        let mut d = det(
            files,
            Arc::new(FakeProbeSyscall::default()),
            ControlPlane::No,
        )
        .with_detached(detached.clone());
        let s = d.sample().unwrap();
        assert_eq!(
            hung_conditions(&s),
            vec![("/mnt/nas".into(), "DetachedTasksBlocked".into())]
        );
        assert!(
            s.conditions[0].message.contains("unknown"),
            "{:?}",
            s.conditions
        );
        assert!(!detached.is_empty());
    }

    fn nfs_stats(sends: u64, recvs: u64, retrans: u64) -> String {
        format!(
            "device nas:/export mounted on /mnt/nas with fstype nfs4 statvers=1.1\n\tage:\t100\n\txprt:\ttcp 900 0 1 0 0 {sends} {recvs} 0 0 0 65536 0 0\n\tper-op statistics\n\t     GETATTR: 100 {} 0 0 0 0 0 0 0\n",
            100 + retrans
        )
    }

    #[test]
    fn a_server_that_stops_answering_rpcs_raises_even_with_probes_answering_and_clears_when_quiet()
    {
        let files = Arc::new(FakeFiles::with(&[
            ("proc/self/mountinfo", MI),
            ("proc/self/mountstats", &nfs_stats(1000, 1000, 0)),
        ]));
        let tasks = Arc::new(FakeTaskSource::default());
        let mut d = det(
            files.clone(),
            Arc::new(FakeProbeSyscall::default()),
            ControlPlane::No,
        )
        .with_task_source(tasks);
        assert!(
            hung_conditions(&d.sample().unwrap()).is_empty(),
            "first sample: no growth yet"
        );
        files.put("proc/self/mountstats", &nfs_stats(1006, 1000, 0));
        assert!(
            hung_conditions(&d.sample().unwrap()).is_empty(),
            "one silent interval"
        );
        files.put("proc/self/mountstats", &nfs_stats(1012, 1000, 0));
        let s = d.sample().unwrap();
        assert_eq!(
            hung_conditions(&s),
            vec![("/mnt/nas".into(), "RpcNotAnswering".into())]
        );
        assert!(
            s.conditions[0].message.contains("6 sent, 0 answered"),
            "{:?}",
            s.conditions
        );
        // Answers again but with retransmissions: held.
        files.put("proc/self/mountstats", &nfs_stats(1050, 1050, 4));
        assert_eq!(hung_conditions(&d.sample().unwrap()).len(), 1);
        files.put("proc/self/mountstats", &nfs_stats(1060, 1060, 4));
        assert_eq!(
            hung_conditions(&d.sample().unwrap()).len(),
            1,
            "one quiet pass"
        );
        files.put("proc/self/mountstats", &nfs_stats(1070, 1070, 4));
        assert!(hung_conditions(&d.sample().unwrap()).is_empty());
    }

    #[test]
    fn the_census_runs_only_when_it_can_say_something_about_a_watched_mount() {
        // No network mount, nothing detached: never.
        let files = Arc::new(FakeFiles::with(&[(
            "proc/self/mountinfo",
            "38 25 8:1 / / rw - ext4 /dev/sda1 rw\n",
        )]));
        let tasks = Arc::new(FakeTaskSource::default());
        let mut d = det(
            files,
            Arc::new(FakeProbeSyscall::default()),
            ControlPlane::No,
        )
        .with_task_source(tasks.clone());
        for _ in 0..20 {
            d.sample().unwrap();
        }
        assert_eq!(tasks.reads(), 0);

        // Healthy network mounts: once every CENSUS_IDLE_EVERY passes, the first at once.
        let files = Arc::new(FakeFiles::with(&[("proc/self/mountinfo", MI)]));
        let fake = Arc::new(FakeProbeSyscall::default());
        let tasks = Arc::new(FakeTaskSource::default());
        let mut d = det(files, fake.clone(), ControlPlane::No).with_task_source(tasks.clone());
        d.sample().unwrap();
        assert_eq!(tasks.reads(), 1);
        for _ in 0..CENSUS_IDLE_EVERY {
            d.sample().unwrap();
        }
        assert_eq!(tasks.reads(), 2);

        // A stuck mount: every pass, until it has cleared.
        fake.hang(Path::new("/mnt/soft"));
        for i in 0..3 {
            d.sample().unwrap();
            assert_eq!(tasks.reads(), 3 + i);
        }
        fake.release(Path::new("/mnt/soft"));
        assert!(d.prober.monitor().wait_idle(Duration::from_secs(5)));
        d.sample().unwrap(); // ok, still held (1 of 2 good probes)
        d.sample().unwrap(); // two good probes: cleared, nothing in trouble any more
        let after = tasks.reads();
        d.sample().unwrap();
        assert_eq!(
            tasks.reads(),
            after,
            "all well again: back to the slow refresh"
        );
    }

    #[test]
    fn dstate_gauges_disappear_when_no_network_mount_is_watched_any_more() {
        let mut reg = Registry::default();
        let metrics = MountMetrics::register(&mut reg);
        let files = Arc::new(FakeFiles::with(&[("proc/self/mountinfo", MI)]));
        let tasks = Arc::new(FakeTaskSource::new(vec![fuse_task(7)]));
        let mut d = MountsDetector::with_syscall(
            MountsSection {
                control_plane: ControlPlane::No,
                ..Default::default()
            },
            files.clone(),
            Some(metrics),
            None,
            Arc::new(FakeProbeSyscall::default()),
        )
        .with_task_source(tasks);
        let text = |reg: &Registry| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, reg).unwrap();
            out
        };
        d.sample().unwrap();
        assert!(
            text(&reg).contains("nodemedic_dstate_tasks{wait=\"fuse\"} 1"),
            "{}",
            text(&reg)
        );
        files.put(
            "proc/self/mountinfo",
            "38 25 8:1 / / rw - ext4 /dev/sda1 rw\n",
        );
        d.sample().unwrap();
        assert!(
            !text(&reg).contains("nodemedic_dstate_tasks{"),
            "{}",
            text(&reg)
        );
    }

    fn fuse_table(names: &[&str]) -> String {
        let mut t = String::from("38 25 8:1 / / rw - ext4 /dev/sda1 rw\n");
        for (i, n) in names.iter().enumerate() {
            t.push_str(&format!(
                "{} 38 0:{} / /mnt/{n} rw - fuse.x x rw,user_id=0\n",
                60 + i,
                80 + i
            ));
        }
        t
    }

    fn series(reg: &Registry, name: &str, mount: &str) -> Option<String> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, reg).unwrap();
        let prefix = format!("{name}{{mountpoint=\"/mnt/{mount}\"");
        out.lines()
            .find(|l| l.starts_with(&prefix))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    }

    #[test]
    fn mounts_beyond_the_thread_cap_are_unknown_never_down_and_never_silently_fine() {
        let mut reg = Registry::default();
        let metrics = MountMetrics::register(&mut reg);
        let files = Arc::new(FakeFiles::with(&[(
            "proc/self/mountinfo",
            &fuse_table(&["ok"]),
        )]));
        let fake = Arc::new(FakeProbeSyscall::default());
        let mut d = MountsDetector::with_syscall(
            MountsSection {
                probe_timeout: ConfigDuration::millis(200),
                control_plane: ControlPlane::No,
                max_probe_threads: 2,
                ..Default::default()
            },
            files.clone(),
            Some(metrics),
            None,
            fake.clone(),
        )
        .with_task_source(Arc::new(FakeTaskSource::default()));
        assert!(d.sample().unwrap().conditions.is_empty());
        assert_eq!(
            series(&reg, "nodemedic_mount_up", "ok").as_deref(),
            Some("1")
        );

        // Three dead mounts appear before it in the table; two threads exist.
        for n in ["d1", "d2", "d3"] {
            fake.hang(format!("/mnt/{n}"));
        }
        files.put(
            "proc/self/mountinfo",
            &fuse_table(&["d1", "d2", "d3", "ok"]),
        );
        let s = d.sample().unwrap();
        let hung = hung_conditions(&s);
        assert_eq!(hung.len(), 2, "the two probed ones: {hung:?}");
        let warn: Vec<_> = s
            .conditions
            .iter()
            .filter(|c| c.kind == ConditionKind::MountsUnprobed)
            .collect();
        assert_eq!(warn.len(), 1, "{:?}", s.conditions);
        assert_eq!(warn[0].reason, "ProbeThreadsExhausted");
        assert!(
            warn[0].message.contains("2 of 4") && warn[0].message.contains("/mnt/d3, /mnt/ok"),
            "{}",
            warn[0].message
        );
        // The healthy one is unknown, not down; the never-probed dead one has no up at all.
        assert_eq!(
            series(&reg, "nodemedic_mount_unknown", "ok").as_deref(),
            Some("1")
        );
        assert_eq!(
            series(&reg, "nodemedic_mount_up", "ok").as_deref(),
            Some("1")
        );
        assert_eq!(
            series(&reg, "nodemedic_mount_unknown", "d3").as_deref(),
            Some("1")
        );
        assert_eq!(series(&reg, "nodemedic_mount_up", "d3"), None);
        assert_eq!(
            series(&reg, "nodemedic_mount_unknown", "d1").as_deref(),
            Some("0")
        );
        let info = &s.info["mounts"];
        let entry = |p: &str| {
            info.as_array()
                .unwrap()
                .iter()
                .find(|m| m["path"] == p)
                .cloned()
                .unwrap()
        };
        assert_eq!(entry("/mnt/d3")["probe"], "unknown");
        assert!(
            entry("/mnt/d3")["hung"].is_null(),
            "never probed: not known"
        );
        assert_eq!(entry("/mnt/ok")["hung"], false, "last known");
        assert!(
            entry("/mnt/ok")["last"]
                .as_str()
                .unwrap()
                .contains("last known: ok in"),
            "{}",
            entry("/mnt/ok")
        );

        // The outage ends: every mount is probed again, the warning clears.
        for n in ["d1", "d2", "d3"] {
            fake.release(Path::new(&format!("/mnt/{n}")));
        }
        assert!(d.prober.monitor().wait_idle(Duration::from_secs(5)));
        let s = d.sample().unwrap();
        assert!(
            !s.conditions
                .iter()
                .any(|c| c.kind == ConditionKind::MountsUnprobed),
            "{:?}",
            s.conditions
        );
        assert_eq!(
            series(&reg, "nodemedic_mount_unknown", "ok").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn census_schedule_runs_on_trouble_every_pass_and_otherwise_every_sixth_watched_pass() {
        let mut s = CensusSchedule::default();
        assert!(!s.due(false, false));
        s.skipped();
        assert!(s.due(false, true), "the first watched pass");
        s.ran();
        let mut runs = 0;
        for _ in 0..CENSUS_IDLE_EVERY * 3 {
            if s.due(false, true) {
                s.ran();
                runs += 1;
            } else {
                s.skipped();
            }
        }
        assert_eq!(runs, 3);
        assert!(s.due(true, false));
    }

    /// POLLPRI|POLLERR on `fd` now (the poll re-arms a mount table's notice).
    fn table_signalled(fd: std::os::fd::RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLPRI | libc::POLLERR,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn without_network_mounts_it_waits_on_the_real_mount_table_and_a_mount_wakes_it() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must not skip: mounting a tmpfs needs root"
            );
            eprintln!("\n*** SKIP: not root; this test did NOT run ***\n");
            return;
        }
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        let cfg = MountsSection {
            fstypes: vec!["nodemedic-no-such-fs".into()],
            ..Default::default()
        };
        let mut d = MountsDetector::new(
            cfg.clone(),
            Arc::new(crate::edge::RootedFiles::new("/")),
            None,
            None,
        )
        .on_table_change(Box::new(move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        assert_eq!(d.interval(), cfg.interval.get(), "before its first pass");
        d.sample().unwrap();
        assert_eq!(
            d.interval(),
            QUIET_CEILING,
            "nothing to watch: a ceiling only"
        );
        let (fd, on) = d.wake_fd().expect("procfs's mountinfo is pollable");
        assert_eq!(on, WakeOn::Notify);
        while table_signalled(fd) {} // other tests' mounts, before this one's
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "nodemedic-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success());
        let woke = table_signalled(fd);
        d.sample().unwrap();
        let _ = std::process::Command::new("umount")
            .arg(dir.path())
            .status();
        assert!(woke, "a mount signals the table");
        assert!(
            calls.load(std::sync::atomic::Ordering::SeqCst) >= 1,
            "the hook ran"
        );
    }

    #[test]
    fn a_fixture_mount_table_is_not_waited_on() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
        std::fs::write(
            root.path().join("proc/self/mountinfo"),
            "22 1 8:2 / / rw - ext4 /dev/sda2 rw\n",
        )
        .unwrap();
        let cfg = MountsSection::default();
        let mut d = MountsDetector::new(
            cfg.clone(),
            Arc::new(crate::edge::RootedFiles::new(root.path())),
            None,
            None,
        );
        d.sample().unwrap();
        assert!(d.wake_fd().is_none());
        assert_eq!(d.interval(), cfg.interval.get());
    }

    #[test]
    fn unmount_keys_are_validated_with_the_key_named() {
        let mut v = Vec::new();
        MountsSection {
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
        MountsSection::default().validate(&mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn bad_fstype_patterns_and_relative_paths_are_config_errors() {
        let mut v = Vec::new();
        MountsSection {
            paths: vec!["mnt/x".into()],
            ..Default::default()
        }
        .validate(&mut v);
        assert!(v.iter().any(|e| e.contains("mounts.paths")), "{v:?}");
    }
}
