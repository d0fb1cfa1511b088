//! Lazy unmount of a hung network mount: the `unmount` remedy of `NetworkMountHung`.
//!
//! Tasks touching a dead hard NFS mount or a dead FUSE daemon sleep in
//! D state and take every new caller with them. `umount2(MNT_DETACH)` takes the mount out of
//! the mount table at once, so new lookups of the path reach the directory underneath and
//! return instead of joining the pile. It does not free tasks already blocked: only the
//! server coming back (or a reboot) does, which is why the detector keeps the condition
//! raised for detached mounts (see [`super::detached`]).
//!
//! # API for the policy executor
//!
//! Build one [`MountDetacher`] at start-up and call it when the engine decides `unmount`
//! for a `NetworkMountHung` subject (the subject is the mount point, as the detector sets it):
//!
//! ```ignore
//! let detached = Arc::new(DetachedMounts::default());      // also given to the detector:
//! // MountsDetector::new(cfg.mounts.clone(), files.clone(), metrics, nfs)
//! //     .with_detached(detached.clone())
//! let detacher = MountDetacher::new(
//!     files.clone(),                                        // HostFiles rooted at host_root
//!     UnmountRules::from_config(&cfg.mounts),
//!     Arc::new(LinuxUnmounter::new()),
//!     detached,
//! );
//! // live action:   Ok(summary for the audit trail) or Err(what failed and what to do)
//! let r: Result<String, DetachError> = detacher.detach(&decision.subject);
//! // dry run / observe: the same checks, no syscall
//! let p: Result<String, DetachError> = detacher.plan(&decision.subject);
//! ```
//!
//! `detach` reads `/proc/self/mountinfo`, plans ([`plan_unmount`], pure: refuses `/`,
//! anything at/under/above `/var/lib/kubelet` unless `mounts.allow_kubelet_unmount`, any
//! path at/under/above a `mounts.protected` path, paths that are not mounted, and mounts
//! that are neither a watched network fstype nor a listed `mounts.paths` entry), then
//! runs `umount2` through the [`Unmounter`] (`MNT_FORCE` first for nfs/nfs4 when
//! `mounts.force_nfs`, then `MNT_DETACH`), each call bounded by `mounts.unmount_timeout`,
//! and records the mount in [`DetachedMounts`]. A mount that is gone and that nodemedic
//! detached earlier answers `Ok` ("already detached"): the ladder may retry.
//! The typed layer underneath is [`lazy_unmount`] / [`UnmountError`].
//!
//! Never hanging the caller: [`LinuxUnmounter`] makes each `umount2` on its own thread and
//! waits at most the deadline; a call that does not return is left running, and no second
//! call is made on that path until it does.

use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::detached::{DetachedMount, DetachedMounts};
use crate::config::MountsSection;
use crate::config::mounts::{DEFAULT_UNMOUNT_TIMEOUT, FsTypeSet};
use crate::edge::HostFiles;
use crate::formats::mountinfo::{MountEntry, parse_mountinfo};

/// Where kubelet (and k3s's embedded kubelet) mounts pod volumes. Detaching one of those
/// behind kubelet's back leaves pods with an empty directory where their volume was.
pub(crate) const KUBELET_ROOT: &str = "/var/lib/kubelet";

/// A `umount2` call needs a few hundred bytes of stack; keep a parked one cheap.
const UMOUNT_THREAD_STACK_BYTES: usize = 64 * 1024;

/// One `umount2` flag set, in the order the actuator uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum UmountMode {
    /// `MNT_FORCE`: NFS aborts outstanding RPCs (callers get EIO) and unmounts if nothing
    /// holds the mount; with busy callers it fails with EBUSY, which is expected.
    Force,
    /// `MNT_DETACH`: removes the mount from the namespace now, frees it when unused.
    Detach,
}

impl UmountMode {
    pub(crate) fn flag_name(self) -> &'static str {
        match self {
            UmountMode::Force => "MNT_FORCE",
            UmountMode::Detach => "MNT_DETACH",
        }
    }
}

/// Why one `umount2` call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UmountCallError {
    /// The kernel answered with an error.
    Os { errno: i32 },
    /// The call did not return within its deadline; it keeps running on its own thread.
    TimedOut { after: Duration },
    /// An earlier call on this path has not returned; no second one was started.
    Outstanding { since: Duration },
    /// No thread could be started for the call.
    Spawn { error: String },
}

/// The `umount2` edge. Implementations must return within about `deadline`.
pub trait Unmounter: Send + Sync {
    fn umount(
        &self,
        path: &Path,
        mode: UmountMode,
        deadline: Duration,
    ) -> Result<(), UmountCallError>;
}

type RawUmount = dyn Fn(&Path, UmountMode) -> Result<(), i32> + Send + Sync;

/// The real `umount2(2)`, one thread per call, never two outstanding calls on one path.
pub struct LinuxUnmounter {
    syscall: Arc<RawUmount>,
    /// Paths with a call outstanding, and since when.
    in_flight: Arc<Mutex<HashMap<PathBuf, Instant>>>,
}

impl Default for LinuxUnmounter {
    fn default() -> Self {
        LinuxUnmounter::new()
    }
}

impl LinuxUnmounter {
    pub fn new() -> LinuxUnmounter {
        LinuxUnmounter::with_raw(Arc::new(|path: &Path, mode: UmountMode| {
            let flags = match mode {
                UmountMode::Force => nix::mount::MntFlags::MNT_FORCE,
                UmountMode::Detach => nix::mount::MntFlags::MNT_DETACH,
            };
            nix::mount::umount2(path, flags).map_err(|e| e as i32)
        }))
    }

    /// With a stand-in for the raw syscall: tests block it to prove the deadline.
    fn with_raw(syscall: Arc<RawUmount>) -> LinuxUnmounter {
        LinuxUnmounter {
            syscall,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    #[cfg(test)]
    /// Paths whose `umount2` call has not returned yet.
    pub(crate) fn outstanding(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = lock(&self.in_flight).keys().cloned().collect();
        v.sort();
        v
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Unmounter for LinuxUnmounter {
    fn umount(
        &self,
        path: &Path,
        mode: UmountMode,
        deadline: Duration,
    ) -> Result<(), UmountCallError> {
        {
            let mut busy = lock(&self.in_flight);
            if let Some(since) = busy.get(path) {
                return Err(UmountCallError::Outstanding {
                    since: since.elapsed(),
                });
            }
            busy.insert(path.to_path_buf(), Instant::now());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let (syscall, in_flight, owned) = (
            Arc::clone(&self.syscall),
            Arc::clone(&self.in_flight),
            path.to_path_buf(),
        );
        let spawned = thread::Builder::new()
            .name("umount".into())
            .stack_size(UMOUNT_THREAD_STACK_BYTES)
            .spawn(move || {
                let r = syscall(&owned, mode);
                // Free the path before answering, so a caller that already gave up may
                // call again as soon as this one is back.
                lock(&in_flight).remove(&owned);
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            lock(&self.in_flight).remove(path);
            return Err(UmountCallError::Spawn {
                error: e.to_string(),
            });
        }
        match rx.recv_timeout(deadline) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(errno)) => Err(UmountCallError::Os { errno }),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(UmountCallError::TimedOut { after: deadline })
            }
            // The thread died without answering (a panic in the syscall wrapper).
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(UmountCallError::Spawn {
                error: "the umount thread ended without an answer".into(),
            }),
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
/// A fake [`Unmounter`]: records every call and answers `Ok` unless told otherwise.
#[derive(Debug, Default)]
pub struct RecordingUnmounter {
    calls: Mutex<Vec<(PathBuf, UmountMode)>>,
    answers: Mutex<HashMap<(PathBuf, UmountMode), UmountCallError>>,
}

#[cfg(any(test, feature = "fakes"))]
impl RecordingUnmounter {
    /// Calls on `path` with `mode` answer `error` from now on.
    pub fn answer(&self, path: impl Into<PathBuf>, mode: UmountMode, error: UmountCallError) {
        lock(&self.answers).insert((path.into(), mode), error);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<(PathBuf, UmountMode)> {
        lock(&self.calls).clone()
    }
}

#[cfg(any(test, feature = "fakes"))]
impl Unmounter for RecordingUnmounter {
    fn umount(
        &self,
        path: &Path,
        mode: UmountMode,
        _deadline: Duration,
    ) -> Result<(), UmountCallError> {
        lock(&self.calls).push((path.to_path_buf(), mode));
        match lock(&self.answers).get(&(path.to_path_buf(), mode)) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// What may be unmounted, from `[mounts]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmountRules {
    /// Watched network fstypes (`mounts.fstypes`): only these may be unmounted...
    pub(crate) fstypes: FsTypeSet,
    /// ...or mounts at paths the operator listed (`mounts.paths`).
    pub(crate) paths: Vec<PathBuf>,
    /// Never unmounted, nor anything under or above them (`mounts.protected`).
    pub(crate) protected: Vec<PathBuf>,
    /// `mounts.allow_kubelet_unmount`: lift the ban on [`KUBELET_ROOT`].
    pub(crate) allow_kubelet_unmount: bool,
    /// `mounts.force_nfs`: try `MNT_FORCE` before `MNT_DETACH` on nfs/nfs4.
    pub(crate) force_nfs: bool,
    /// Kubelet's root directory under other names, guarded like [`KUBELET_ROOT`]:
    /// `mounts.kubelet_root`, its canonical path (a symlink), a `root-dir=` kubelet
    /// argument in k3s's config. Bind-mount aliases are found in mountinfo at plan time.
    pub(crate) kubelet_roots: Vec<PathBuf>,
    /// `mounts.unmount_timeout`: deadline of each `umount2` call.
    pub(crate) timeout: Duration,
}

impl Default for UnmountRules {
    fn default() -> Self {
        UnmountRules {
            fstypes: FsTypeSet::default(),
            paths: Vec::new(),
            protected: Vec::new(),
            allow_kubelet_unmount: false,
            force_nfs: false,
            kubelet_roots: Vec::new(),
            timeout: DEFAULT_UNMOUNT_TIMEOUT,
        }
    }
}

impl UnmountRules {
    /// The rules of a validated `[mounts]` section.
    pub fn from_config(cfg: &MountsSection) -> UnmountRules {
        UnmountRules {
            fstypes: FsTypeSet::new(&cfg.fstypes).expect("validated by MountsSection::validate"),
            paths: cfg.paths.clone(),
            protected: cfg.protected.clone(),
            allow_kubelet_unmount: cfg.allow_kubelet_unmount,
            force_nfs: cfg.force_nfs,
            kubelet_roots: if cfg.kubelet_root == Path::new(KUBELET_ROOT) {
                Vec::new()
            } else {
                vec![cfg.kubelet_root.clone()]
            },
            timeout: cfg.unmount_timeout.get(),
        }
    }

    /// Adds kubelet's root as the host names it: the canonical path of every guarded
    /// root (a symlinked `/var/lib/kubelet`), and `root-dir=` kubelet arguments in k3s's
    /// config file and units (`--kubelet-arg=root-dir=/data/kubelet`). `host_root` is
    /// `/` on a node.
    pub(crate) fn with_host_kubelet_roots(mut self, host_root: &Path) -> Self {
        let on_host = |p: &Path| host_root.join(p.strip_prefix("/").unwrap_or(p));
        for f in [
            "/etc/rancher/k3s/config.yaml",
            "/etc/systemd/system/k3s.service",
            "/etc/systemd/system/k3s-agent.service",
        ] {
            if let Ok(text) = std::fs::read_to_string(on_host(Path::new(f))) {
                self.kubelet_roots.extend(kubelet_root_dirs(&text));
            }
        }
        let mut roots: Vec<PathBuf> = vec![PathBuf::from(KUBELET_ROOT)];
        roots.extend(self.kubelet_roots.iter().cloned());
        for r in roots {
            if let Ok(c) = std::fs::canonicalize(on_host(&r))
                && let Ok(rel) = c.strip_prefix(host_root)
            {
                let c = Path::new("/").join(rel);
                if c != r {
                    self.kubelet_roots.push(c);
                }
            }
        }
        self.kubelet_roots.sort();
        self.kubelet_roots.dedup();
        self
    }
}

/// `root-dir=PATH` kubelet arguments in a k3s config file or unit. Pure.
pub(crate) fn kubelet_root_dirs(text: &str) -> Vec<PathBuf> {
    text.match_indices("root-dir=")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ']'))
                .unwrap_or(rest.len());
            let p = PathBuf::from(&rest[..end]);
            p.is_absolute().then(|| p.components().collect())
        })
        .collect()
}

/// Other mount points that show kubelet's root when it is itself a bind mount: the
/// same filesystem, at a mount whose root contains kubelet's (`/data` for a
/// `/var/lib/kubelet` bound from `/data/kubelet`).
fn bind_aliases(table: &[MountEntry], root: &Path) -> Vec<PathBuf> {
    let Some(k) = table.iter().rev().find(|e| e.mount_point == root) else {
        return Vec::new();
    };
    table
        .iter()
        .filter(|o| o.mount_point != root && (o.major, o.minor) == (k.major, k.minor))
        .filter_map(|o| {
            let rel = k.root.strip_prefix(&o.root).ok()?;
            Some(o.mount_point.join(rel).components().collect())
        })
        .collect()
}

/// How a refused path relates to the guarded one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Relation {
    At,
    /// Inside the guarded tree.
    Under,
    /// An ancestor: detaching it would take the guarded tree with it.
    Above,
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Relation::At => "at",
            Relation::Under => "under",
            Relation::Above => "above (it contains)",
        })
    }
}

/// Component-wise (never string-prefix) relation of `path` to `guard`.
fn relation(path: &Path, guard: &Path) -> Option<Relation> {
    if path == guard {
        Some(Relation::At)
    } else if path.starts_with(guard) {
        Some(Relation::Under)
    } else if guard.starts_with(path) {
        Some(Relation::Above)
    } else {
        None
    }
}

/// Why the planner will not unmount a path. Refusals never reach the [`Unmounter`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "refusing to unmount {:?}: not an absolute path without `..`; pass a mount point as \
         /proc/self/mountinfo shows it",
        .path
    )]
    NotCanonical { path: PathBuf },
    #[error(
        "refusing to unmount `/`: the root filesystem is never unmounted; a hung root needs a reboot"
    )]
    RootFilesystem,
    #[error(
        "refusing to unmount {}: it is {relation} {KUBELET_ROOT}, where kubelet mounts pod \
         volumes; set `mounts.allow_kubelet_unmount = true` to allow it",
        .path.display()
    )]
    Kubelet { path: PathBuf, relation: Relation },
    #[error(
        "refusing to unmount {}: it is {relation} {}, kubelet's root directory under another \
         name (mounts.kubelet_root, a symlink, a bind mount or --kubelet-arg=root-dir=), \
         where kubelet mounts pod volumes; set `mounts.allow_kubelet_unmount = true` to allow it",
        .path.display(), .root.display()
    )]
    KubeletAlias {
        path: PathBuf,
        root: PathBuf,
        relation: Relation,
    },
    #[error(
        "refusing to unmount {}: it is {relation} the protected path {} (`mounts.protected`); \
         remove that entry to allow it",
        .path.display(), .protected.display()
    )]
    Protected {
        path: PathBuf,
        protected: PathBuf,
        relation: Relation,
    },
    #[error(
        "{} is not mounted now (not in /proc/self/mountinfo): nothing to unmount",
        .path.display()
    )]
    NotMounted { path: PathBuf },
    #[error(
        "refusing to unmount {}: its mount is {fstype} ({device}), not a watched network \
         fstype (`mounts.fstypes`), and the path is not listed in `mounts.paths`",
        .path.display()
    )]
    NotNetwork {
        path: PathBuf,
        fstype: String,
        /// The mount source (`source` would make thiserror take it for the cause).
        device: String,
    },
}

/// What the actuator will do; built by [`plan_unmount`] without touching the system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct UnmountPlan {
    pub(crate) mount_point: PathBuf,
    /// The topmost mount at the path (the one `umount2` reaches).
    pub(crate) mount_id: u32,
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) fstype: String,
    pub(crate) source: String,
    /// `[Force, Detach]` for NFS with `force_nfs`, else `[Detach]`.
    pub(crate) modes: Vec<UmountMode>,
    /// Mounts below the path, which a lazy unmount detaches too.
    pub(crate) submounts: Vec<PathBuf>,
    /// Other mount points of the same filesystem (e.g. kubelet binds of one NFS share):
    /// they stay mounted, and stay hung.
    pub(crate) still_mounted_elsewhere: Vec<PathBuf>,
}

impl fmt::Display for UnmountPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let modes: Vec<&str> = self.modes.iter().map(|m| m.flag_name()).collect();
        write!(
            f,
            "umount2({}, {}) of {} {} (mount {})",
            self.mount_point.display(),
            modes.join(" then "),
            self.fstype,
            self.source,
            self.mount_id
        )?;
        if !self.submounts.is_empty() {
            write!(
                f,
                "; takes {} mount(s) below it along",
                self.submounts.len()
            )?;
        }
        if !self.still_mounted_elsewhere.is_empty() {
            write!(
                f,
                "; {} other mount(s) of the same filesystem stay: {}",
                self.still_mounted_elsewhere.len(),
                join_paths(&self.still_mounted_elsewhere)
            )?;
        }
        Ok(())
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decides whether `mount_point` may be lazily unmounted, given the current
/// `/proc/self/mountinfo` text. Pure.
///
/// Guards (each both ways, by path components: `/var/lib/kubelet-x` is not under
/// `/var/lib/kubelet`, but `/var/lib` is above it): `/` never; `/var/lib/kubelet` unless
/// allowed; every protected path. Then the path must be mounted now, and its topmost mount
/// must be a watched network fstype or a listed path.
pub(crate) fn plan_unmount(
    mountinfo: &[u8],
    mount_point: &Path,
    rules: &UnmountRules,
) -> Result<UnmountPlan, Refusal> {
    if !mount_point.is_absolute()
        || mount_point
            .components()
            .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(Refusal::NotCanonical {
            path: mount_point.to_path_buf(),
        });
    }
    // Drops `.`, repeated and trailing slashes.
    let path: PathBuf = mount_point.components().collect();
    if path == Path::new("/") {
        return Err(Refusal::RootFilesystem);
    }
    if !rules.allow_kubelet_unmount
        && let Some(r) = relation(&path, Path::new(KUBELET_ROOT))
    {
        return Err(Refusal::Kubelet { path, relation: r });
    }
    for guard in &rules.protected {
        let guard: PathBuf = guard.components().collect();
        if let Some(r) = relation(&path, &guard) {
            return Err(Refusal::Protected {
                path,
                protected: guard,
                relation: r,
            });
        }
    }

    let table = parse_mountinfo(mountinfo);
    if !rules.allow_kubelet_unmount {
        let mut roots = rules.kubelet_roots.clone();
        for r in [PathBuf::from(KUBELET_ROOT)]
            .iter()
            .chain(rules.kubelet_roots.iter())
        {
            roots.extend(bind_aliases(&table.entries, r));
        }
        for root in roots {
            if let Some(r) = relation(&path, &root) {
                return Err(Refusal::KubeletAlias {
                    path,
                    root,
                    relation: r,
                });
            }
        }
    }
    let here: Vec<&MountEntry> = table
        .entries
        .iter()
        .filter(|e| e.mount_point == path)
        .collect();
    // umount2 reaches the topmost of stacked mounts: the one no other mount here sits on.
    let Some(top) = here
        .iter()
        .rev()
        .find(|e| !here.iter().any(|o| o.parent_id == e.mount_id))
        .or(here.last())
    else {
        return Err(Refusal::NotMounted { path });
    };
    if !rules.fstypes.matches(&top.fstype) && !rules.paths.contains(&path) {
        return Err(Refusal::NotNetwork {
            path,
            fstype: top.fstype.clone(),
            device: top.source.clone(),
        });
    }
    let submounts = table
        .entries
        .iter()
        .filter(|e| e.mount_point != path && e.mount_point.starts_with(&path))
        .map(|e| e.mount_point.clone())
        .collect();
    let mut still_mounted_elsewhere: Vec<PathBuf> = table
        .entries
        .iter()
        .filter(|e| (e.major, e.minor) == (top.major, top.minor) && e.mount_point != path)
        .map(|e| e.mount_point.clone())
        .collect();
    still_mounted_elsewhere.dedup();
    let modes = if rules.force_nfs && top.is_nfs() {
        vec![UmountMode::Force, UmountMode::Detach]
    } else {
        vec![UmountMode::Detach]
    };
    Ok(UnmountPlan {
        mount_point: path,
        mount_id: top.mount_id,
        major: top.major,
        minor: top.minor,
        fstype: top.fstype.clone(),
        source: top.source.clone(),
        modes,
        submounts,
        still_mounted_elsewhere,
    })
}

/// One `umount2` call that was made and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct StepOutcome {
    pub(crate) mode: UmountMode,
    /// `None` on success, else the error text (e.g. `EBUSY` from `MNT_FORCE`).
    pub(crate) error: Option<String>,
}

/// A successful lazy unmount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct UnmountDone {
    pub(crate) plan: UnmountPlan,
    pub(crate) steps: Vec<StepOutcome>,
}

impl fmt::Display for UnmountDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.plan;
        write!(
            f,
            "unmounted {} ({} {}):",
            p.mount_point.display(),
            p.fstype,
            p.source
        )?;
        for s in &self.steps {
            match &s.error {
                None => write!(f, " {} ok;", s.mode.flag_name())?,
                Some(e) => write!(f, " {} failed ({e});", s.mode.flag_name())?,
            }
        }
        write!(
            f,
            " new accesses of the path no longer reach the dead filesystem; tasks already \
             blocked in it stay blocked until the server answers or the node reboots"
        )?;
        if !p.still_mounted_elsewhere.is_empty() {
            write!(
                f,
                "; still mounted (and hung) at: {}",
                join_paths(&p.still_mounted_elsewhere)
            )?;
        }
        Ok(())
    }
}

/// Why a lazy unmount did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UnmountError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("umount2({}, {}) failed: {error}; {hint}", .path.display(), .mode.flag_name())]
    Failed {
        path: PathBuf,
        mode: UmountMode,
        errno: Option<i32>,
        error: String,
        hint: &'static str,
    },
    #[error(
        "umount2({}, {}) did not return within {after:?}; it keeps running on its own thread \
         and no second call is made on this path until it returns. The kernel is stuck on \
         this mount: check `dmesg` and plan a reboot",
        .path.display(), .mode.flag_name()
    )]
    TimedOut {
        path: PathBuf,
        mode: UmountMode,
        after: Duration,
    },
    #[error(
        "an earlier umount2 call on {} has not returned for {since:?}; not stacking another. \
         The kernel is stuck on this mount: check `dmesg` and plan a reboot",
        .path.display()
    )]
    Outstanding { path: PathBuf, since: Duration },
}

fn errno_text(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    format!("{e:?}: {}", e.desc())
}

fn hint(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => {
            "nodemedic needs CAP_SYS_ADMIN in the host's mount namespace (run it as root, not in an unprivileged container)"
        }
        libc::EINVAL => {
            "the path is no longer a mount point (unmounted meanwhile, or hidden by a mount above it); check /proc/self/mountinfo"
        }
        libc::ENOENT => "the mount point path no longer exists",
        _ => "see umount2(2); the mount was left as it was",
    }
}

/// Plans ([`plan_unmount`]) and, if allowed, unmounts through `unmounter`, then records the
/// mount in `detached`. Refusals make no call at all.
pub(crate) fn lazy_unmount(
    mountinfo: &[u8],
    mount_point: &Path,
    rules: &UnmountRules,
    unmounter: &dyn Unmounter,
    detached: &DetachedMounts,
) -> Result<UnmountDone, UnmountError> {
    let plan = plan_unmount(mountinfo, mount_point, rules)?;
    let path = plan.mount_point.clone();
    let mut steps = Vec::new();
    for &mode in &plan.modes {
        let r = unmounter.umount(&path, mode, rules.timeout);
        match (mode, r) {
            (_, Ok(())) => {
                steps.push(StepOutcome { mode, error: None });
                // A forced unmount that succeeds leaves nothing to detach.
                break;
            }
            // EBUSY is the expected answer while tasks hold the mount; the detach follows.
            (UmountMode::Force, Err(UmountCallError::Os { errno })) => steps.push(StepOutcome {
                mode,
                error: Some(errno_text(errno)),
            }),
            (_, Err(UmountCallError::Os { errno })) => {
                return Err(UnmountError::Failed {
                    path,
                    mode,
                    errno: Some(errno),
                    error: errno_text(errno),
                    hint: hint(errno),
                });
            }
            (_, Err(UmountCallError::Spawn { error })) => {
                return Err(UnmountError::Failed {
                    path,
                    mode,
                    errno: None,
                    error,
                    hint: "the process may be out of threads or memory; try again later",
                });
            }
            (_, Err(UmountCallError::TimedOut { after })) => {
                return Err(UnmountError::TimedOut { path, mode, after });
            }
            (_, Err(UmountCallError::Outstanding { since })) => {
                return Err(UnmountError::Outstanding { path, since });
            }
        }
    }
    detached.record(DetachedMount {
        mount_point: path,
        fstype: plan.fstype.clone(),
        source: plan.source.clone(),
    });
    Ok(UnmountDone { plan, steps })
}

/// The `unmount` remedy as the policy executor calls it: reads the mount table itself and
/// answers in sentences. See the module docs.
pub struct MountDetacher {
    files: Arc<dyn HostFiles>,
    rules: UnmountRules,
    unmounter: Arc<dyn Unmounter>,
    detached: Arc<DetachedMounts>,
}

impl MountDetacher {
    pub fn new(
        files: Arc<dyn HostFiles>,
        rules: UnmountRules,
        unmounter: Arc<dyn Unmounter>,
        detached: Arc<DetachedMounts>,
    ) -> MountDetacher {
        MountDetacher {
            files,
            rules,
            unmounter,
            detached,
        }
    }

    fn mountinfo(&self) -> Result<Vec<u8>, DetachError> {
        self.files
            .read("proc/self/mountinfo")
            .map_err(|e| DetachError::Mountinfo(e.to_string()))
    }

    /// Lazily unmounts `mount_point` (a `NetworkMountHung` subject). `Ok` carries a summary
    /// for the audit trail; `Err` says what failed and what to do.
    pub fn detach(&self, mount_point: &str) -> Result<String, DetachError> {
        let mi = self.mountinfo()?;
        match lazy_unmount(
            &mi,
            Path::new(mount_point),
            &self.rules,
            self.unmounter.as_ref(),
            &self.detached,
        ) {
            Ok(done) => Ok(done.to_string()),
            Err(UnmountError::Refused(Refusal::NotMounted { path }))
                if self.detached.contains(&path) =>
            {
                Ok(format!(
                    "{} was already detached by nodemedic; nothing more to do",
                    path.display()
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What [`MountDetacher::detach`] would do, without any syscall (dry run, observe mode).
    pub fn plan(&self, mount_point: &str) -> Result<String, DetachError> {
        let mi = self.mountinfo()?;
        plan_unmount(&mi, Path::new(mount_point), &self.rules)
            .map(|p| format!("would run {p}"))
            .map_err(|e| UnmountError::Refused(e).into())
    }
}

/// Why [`MountDetacher`] did not detach a mount, by what it means for the caller; the
/// text says what and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DetachError {
    /// The mount table could not be read: nothing was attempted.
    #[error("cannot read /proc/self/mountinfo ({0}); no unmount was attempted")]
    Mountinfo(String),
    /// A guard said no (root, kubelet's volumes, protected, not mounted, not a network fs).
    #[error("{0}")]
    Refused(String),
    /// `umount2` answered with an error.
    #[error("{0}")]
    Failed(String),
    /// `umount2` did not return in time, or an earlier call still has not.
    #[error("{0}")]
    Stuck(String),
}

impl From<UnmountError> for DetachError {
    fn from(e: UnmountError) -> Self {
        let text = e.to_string();
        match e {
            UnmountError::Refused(_) => DetachError::Refused(text),
            UnmountError::Failed { .. } => DetachError::Failed(text),
            UnmountError::TimedOut { .. } | UnmountError::Outstanding { .. } => {
                DetachError::Stuck(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeFiles;
    use std::sync::Condvar;

    const ROOT: &str = "27 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw";
    const VAR_LIB: &str = "28 27 179:3 / /var/lib rw shared:2 - ext4 /dev/sda1 rw";
    const NAS: &str = "812 27 0:61 / /mnt/nas rw,relatime shared:410 - nfs4 nas.lan:/volume1/backup rw,vers=4.2,hard,proto=tcp";
    const SSHFS: &str = "140 27 0:52 / /home/pi/remote\\040files rw,nosuid shared:77 - fuse.sshfs pi@builder:/srv rw,user_id=1000";
    const DATA: &str = "500 27 8:17 / /data rw - ext4 /dev/sdb1 rw";
    const KUBELET_NFS: &str = "1203 28 0:61 /pods /var/lib/kubelet/pods/8f1c/volumes/kubernetes.io~nfs/data rw shared:410 - nfs4 nas.lan:/volume1/backup rw,vers=4.2,hard";
    const KUBELET_LOOKALIKE: &str =
        "1300 28 0:70 / /var/lib/kubelet-backup rw - nfs4 nas.lan:/kb rw,hard";
    const NAS_SUB: &str = "813 812 0:80 / /mnt/nas/cache rw - tmpfs tmpfs rw";
    const NFS_BIND_ELSEWHERE: &str =
        "900 27 0:61 /volume1/backup/x /srv/x rw - nfs4 nas.lan:/volume1/backup rw,hard";

    fn mi(lines: &[&str]) -> Vec<u8> {
        lines.join("\n").into_bytes()
    }

    fn all() -> Vec<u8> {
        mi(&[
            ROOT,
            VAR_LIB,
            NAS,
            SSHFS,
            DATA,
            KUBELET_NFS,
            KUBELET_LOOKALIKE,
        ])
    }

    fn plan(p: &str, rules: &UnmountRules) -> Result<UnmountPlan, Refusal> {
        plan_unmount(&all(), Path::new(p), rules)
    }

    fn unmount(
        p: &str,
        rules: &UnmountRules,
        fake: &RecordingUnmounter,
        detached: &DetachedMounts,
    ) -> Result<UnmountDone, UnmountError> {
        lazy_unmount(&all(), Path::new(p), rules, fake, detached)
    }

    #[test]
    fn a_watched_nfs_mount_is_planned_as_a_single_detach() {
        let p = plan("/mnt/nas", &UnmountRules::default()).unwrap();
        assert_eq!(p.mount_point, PathBuf::from("/mnt/nas"));
        assert_eq!((p.mount_id, p.major, p.minor), (812, 0, 61));
        assert_eq!(p.fstype, "nfs4");
        assert_eq!(p.source, "nas.lan:/volume1/backup");
        assert_eq!(p.modes, vec![UmountMode::Detach]);
        assert!(p.submounts.is_empty());
        assert_eq!(
            p.still_mounted_elsewhere,
            vec![PathBuf::from(
                "/var/lib/kubelet/pods/8f1c/volumes/kubernetes.io~nfs/data"
            )],
            "the kubelet bind of the same share stays"
        );
        assert!(p.to_string().contains("MNT_DETACH"), "{p}");
    }

    #[test]
    fn force_nfs_puts_mnt_force_first_for_nfs_only() {
        let rules = UnmountRules {
            force_nfs: true,
            ..Default::default()
        };
        assert_eq!(
            plan("/mnt/nas", &rules).unwrap().modes,
            vec![UmountMode::Force, UmountMode::Detach]
        );
        assert_eq!(
            plan("/home/pi/remote files", &rules).unwrap().modes,
            vec![UmountMode::Detach],
            "MNT_FORCE means nothing useful for FUSE"
        );
    }

    #[test]
    fn the_root_filesystem_is_never_unmounted_in_any_spelling() {
        for p in ["/", "//", "/.", "/./"] {
            assert_eq!(
                plan(p, &UnmountRules::default()),
                Err(Refusal::RootFilesystem),
                "{p}"
            );
        }
        // Not even when listed or when `/` were a network fs.
        let rules = UnmountRules {
            paths: vec!["/".into()],
            fstypes: FsTypeSet::new(["ext4"]).unwrap(),
            ..Default::default()
        };
        assert_eq!(plan("/", &rules), Err(Refusal::RootFilesystem));
    }

    #[test]
    fn relative_paths_and_dot_dot_are_refused() {
        for p in [
            "mnt/nas",
            "/mnt/../mnt/nas",
            "/var/lib/kubelet/../../../mnt/nas",
            "",
        ] {
            assert!(
                matches!(
                    plan(p, &UnmountRules::default()),
                    Err(Refusal::NotCanonical { .. })
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn kubelet_volumes_are_refused_unless_allowed_and_lookalike_names_are_not_kubelet() {
        let bind = "/var/lib/kubelet/pods/8f1c/volumes/kubernetes.io~nfs/data";
        let r = plan(bind, &UnmountRules::default()).unwrap_err();
        assert_eq!(
            r,
            Refusal::Kubelet {
                path: bind.into(),
                relation: Relation::Under
            }
        );
        assert!(
            r.to_string().contains("mounts.allow_kubelet_unmount"),
            "{r}"
        );
        // Above kubelet's root: detaching /var/lib would take every pod volume along.
        assert!(matches!(
            plan("/var/lib", &UnmountRules::default()),
            Err(Refusal::Kubelet {
                relation: Relation::Above,
                ..
            })
        ));
        // Components, not strings.
        assert!(plan("/var/lib/kubelet-backup", &UnmountRules::default()).is_ok());
        let allowed = UnmountRules {
            allow_kubelet_unmount: true,
            ..Default::default()
        };
        let p = plan(bind, &allowed).unwrap();
        assert_eq!(p.mount_id, 1203);
        assert_eq!(p.still_mounted_elsewhere, vec![PathBuf::from("/mnt/nas")]);
    }

    /// Issue 17, point 7: kubelet's root under another name is guarded too.
    #[test]
    fn kubelet_roots_under_other_names_are_guarded_configured_bound_symlinked_and_root_dir() {
        // A k3s with --kubelet-arg=root-dir=/data/kubelet, its NFS pod volume.
        let mi = "25 1 179:2 / / rw - ext4 /dev/mmcblk0p2 rw\n\
                  30 25 8:1 / /data rw - ext4 /dev/sda1 rw\n\
                  31 25 8:1 /kubelet /var/lib/kubelet rw - ext4 /dev/sda1 rw\n\
                  40 30 0:61 / /data/kubelet/pods/9a/volumes/kubernetes.io~nfs/v rw - nfs4 nas:/v rw,hard\n\
                  41 25 0:62 / /mnt/nas rw - nfs4 nas:/n rw,hard\n";
        let vol = Path::new("/data/kubelet/pods/9a/volumes/kubernetes.io~nfs/v");
        // The literal guard alone let it through (the bug).
        let none = UnmountRules {
            kubelet_roots: vec![],
            ..Default::default()
        };
        // /var/lib/kubelet is a bind of /data/kubelet: found in mountinfo.
        let r = plan_unmount(mi.as_bytes(), vol, &none).unwrap_err();
        assert!(
            matches!(&r, Refusal::KubeletAlias { root, relation: Relation::Under, .. } if root == Path::new("/data/kubelet")),
            "{r:?}"
        );
        assert!(
            r.to_string()
                .contains("kubelet's root directory under another name"),
            "{r}"
        );
        // Configured (mounts.kubelet_root), with no bind mount in sight.
        let mi2 = "25 1 179:2 / / rw - ext4 /dev/mmcblk0p2 rw\n\
                   40 25 0:61 / /data/kubelet/pods/9a/volumes/kubernetes.io~nfs/v rw - nfs4 nas:/v rw,hard\n";
        assert!(
            plan_unmount(mi2.as_bytes(), vol, &none).is_ok(),
            "unguarded before"
        );
        let configured = UnmountRules {
            kubelet_roots: vec!["/data/kubelet".into()],
            ..Default::default()
        };
        assert!(matches!(
            plan_unmount(mi2.as_bytes(), vol, &configured),
            Err(Refusal::KubeletAlias { .. })
        ));
        // Other network mounts still may go.
        assert!(plan_unmount(mi.as_bytes(), Path::new("/mnt/nas"), &none).is_ok());
        // root-dir= in k3s's config or unit.
        assert_eq!(
            kubelet_root_dirs("kubelet-arg:\n  - \"root-dir=/data/kubelet\"\n  - max-pods=50\n"),
            vec![PathBuf::from("/data/kubelet")]
        );
        assert_eq!(
            kubelet_root_dirs(
                "ExecStart=/usr/local/bin/k3s agent --kubelet-arg=root-dir=/srv/kl/ \\\n"
            ),
            vec![PathBuf::from("/srv/kl")]
        );
        // A symlinked /var/lib/kubelet and root-dir= from a config file, on a fixture host.
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(host.path().join("data/kubelet")).unwrap();
        std::fs::create_dir_all(host.path().join("var/lib")).unwrap();
        std::fs::create_dir_all(host.path().join("etc/rancher/k3s")).unwrap();
        std::os::unix::fs::symlink("/data/kubelet", host.path().join("var/lib/kubelet")).ok();
        std::os::unix::fs::symlink(
            host.path().join("data/kubelet"),
            host.path().join("var/lib/kubelet2"),
        )
        .unwrap();
        std::fs::write(
            host.path().join("etc/rancher/k3s/config.yaml"),
            "kubelet-arg: [\"root-dir=/var/lib/kubelet2\"]\n",
        )
        .unwrap();
        let found = UnmountRules::default().with_host_kubelet_roots(host.path());
        assert!(
            found
                .kubelet_roots
                .contains(&PathBuf::from("/var/lib/kubelet2")),
            "{:?}",
            found.kubelet_roots
        );
        assert!(
            found
                .kubelet_roots
                .contains(&PathBuf::from("/data/kubelet")),
            "the canonical path of the symlinked root: {:?}",
            found.kubelet_roots
        );
    }

    #[test]
    fn protected_paths_are_refused_at_under_and_above_by_components() {
        let rules = UnmountRules {
            protected: vec!["/mnt/nas/".into(), "/home/pi/remote files/db".into()],
            ..Default::default()
        };
        assert_eq!(
            plan("/mnt/nas", &rules),
            Err(Refusal::Protected {
                path: "/mnt/nas".into(),
                protected: "/mnt/nas".into(),
                relation: Relation::At
            })
        );
        assert!(matches!(
            plan("/mnt/nas/cache", &rules),
            Err(Refusal::Protected {
                relation: Relation::Under,
                ..
            })
        ));
        let r = plan("/home/pi/remote files", &rules).unwrap_err();
        assert!(
            matches!(
                r,
                Refusal::Protected {
                    relation: Relation::Above,
                    ..
                }
            ),
            "{r}"
        );
        assert!(r.to_string().contains("mounts.protected"), "{r}");
        // "/mnt/nas2" merely starts with the same characters.
        let text = mi(&[ROOT, "820 27 0:90 / /mnt/nas2 rw - nfs4 b:/x rw"]);
        assert!(plan_unmount(&text, Path::new("/mnt/nas2"), &rules).is_ok());
    }

    #[test]
    fn a_path_that_is_not_mounted_is_refused() {
        for p in ["/mnt/gone", "/mnt/nas/sub", "/home/pi/remote\\040files"] {
            assert_eq!(
                plan(p, &UnmountRules::default()),
                Err(Refusal::NotMounted { path: p.into() }),
                "{p}"
            );
        }
    }

    #[test]
    fn a_local_mount_is_refused_unless_its_path_is_listed() {
        let r = plan("/data", &UnmountRules::default()).unwrap_err();
        assert_eq!(
            r,
            Refusal::NotNetwork {
                path: "/data".into(),
                fstype: "ext4".into(),
                device: "/dev/sdb1".into()
            }
        );
        assert!(r.to_string().contains("mounts.paths"), "{r}");
        let listed = UnmountRules {
            paths: vec!["/data".into()],
            ..Default::default()
        };
        assert_eq!(plan("/data", &listed).unwrap().fstype, "ext4");
    }

    #[test]
    fn an_escaped_mount_point_matches_its_unescaped_path() {
        let p = plan("/home/pi/remote files", &UnmountRules::default()).unwrap();
        assert_eq!(p.fstype, "fuse.sshfs");
        assert_eq!(p.mount_point, PathBuf::from("/home/pi/remote files"));
    }

    #[test]
    fn trailing_slashes_and_dots_name_the_same_mount() {
        for p in ["/mnt/nas/", "/mnt//nas", "/mnt/./nas"] {
            assert_eq!(
                plan(p, &UnmountRules::default()).unwrap().mount_point,
                PathBuf::from("/mnt/nas"),
                "{p}"
            );
        }
    }

    #[test]
    fn a_bind_of_a_subtree_is_judged_by_its_own_fstype_and_listed_as_sharing_the_filesystem() {
        let text = mi(&[ROOT, NAS, NFS_BIND_ELSEWHERE]);
        let p = plan_unmount(&text, Path::new("/srv/x"), &UnmountRules::default()).unwrap();
        assert_eq!(p.mount_id, 900);
        assert_eq!(p.still_mounted_elsewhere, vec![PathBuf::from("/mnt/nas")]);
    }

    #[test]
    fn the_topmost_of_stacked_mounts_decides_and_submounts_are_reported() {
        // tmpfs mounted over the NFS mount: umount2 would hit the tmpfs.
        let over = "900 812 0:90 / /mnt/nas rw - tmpfs tmpfs rw";
        let text = mi(&[ROOT, NAS, over]);
        assert!(matches!(
            plan_unmount(&text, Path::new("/mnt/nas"), &UnmountRules::default()),
            Err(Refusal::NotNetwork { fstype, .. }) if fstype == "tmpfs"
        ));
        // The other way round (the NFS mount on top; listed first to show order is not used).
        let nfs_on_top = "950 901 0:61 / /mnt/nas rw - nfs4 nas.lan:/v rw";
        let tmpfs_below = "901 27 0:91 / /mnt/nas rw - tmpfs tmpfs rw";
        let text = mi(&[ROOT, nfs_on_top, tmpfs_below, NAS_SUB]);
        let p = plan_unmount(&text, Path::new("/mnt/nas"), &UnmountRules::default()).unwrap();
        assert_eq!((p.mount_id, p.fstype.as_str()), (950, "nfs4"));
        assert_eq!(p.submounts, vec![PathBuf::from("/mnt/nas/cache")]);
    }

    #[test]
    fn refusals_never_call_the_unmounter_nor_record_a_detached_mount() {
        let rules = UnmountRules {
            protected: vec!["/srv".into()],
            ..Default::default()
        };
        let text = mi(&[
            ROOT,
            VAR_LIB,
            KUBELET_NFS,
            DATA,
            "901 27 0:92 / /srv/share rw - cifs //pc/s rw",
        ]);
        let fake = RecordingUnmounter::default();
        let detached = DetachedMounts::default();
        for p in [
            "/",
            "relative",
            "/var/lib/kubelet/pods/8f1c/volumes/kubernetes.io~nfs/data",
            "/srv/share",
            "/mnt/gone",
            "/data",
        ] {
            let r = lazy_unmount(&text, Path::new(p), &rules, &fake, &detached);
            assert!(matches!(r, Err(UnmountError::Refused(_))), "{p}: {r:?}");
        }
        assert_eq!(fake.calls(), vec![]);
        assert!(detached.is_empty());
    }

    #[test]
    fn a_detach_is_one_call_and_records_the_mount_as_detached() {
        let fake = RecordingUnmounter::default();
        let detached = DetachedMounts::default();
        let done = unmount("/mnt/nas", &UnmountRules::default(), &fake, &detached).unwrap();
        assert_eq!(
            fake.calls(),
            vec![(PathBuf::from("/mnt/nas"), UmountMode::Detach)]
        );
        assert_eq!(
            done.steps,
            vec![StepOutcome {
                mode: UmountMode::Detach,
                error: None
            }]
        );
        assert_eq!(
            detached.list(),
            vec![DetachedMount {
                mount_point: "/mnt/nas".into(),
                fstype: "nfs4".into(),
                source: "nas.lan:/volume1/backup".into()
            }]
        );
        let s = done.to_string();
        assert!(
            s.contains("MNT_DETACH ok") && s.contains("stay blocked"),
            "{s}"
        );
    }

    #[test]
    fn a_busy_forced_unmount_is_followed_by_a_detach_and_a_successful_one_is_not() {
        let rules = UnmountRules {
            force_nfs: true,
            ..Default::default()
        };
        let fake = RecordingUnmounter::default();
        fake.answer(
            "/mnt/nas",
            UmountMode::Force,
            UmountCallError::Os { errno: libc::EBUSY },
        );
        let d = DetachedMounts::default();
        let done = unmount("/mnt/nas", &rules, &fake, &d).unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                (PathBuf::from("/mnt/nas"), UmountMode::Force),
                (PathBuf::from("/mnt/nas"), UmountMode::Detach)
            ]
        );
        assert!(done.steps[0].error.as_deref().unwrap().contains("EBUSY"));
        assert_eq!(done.steps[1].error, None);

        let fake = RecordingUnmounter::default();
        unmount("/mnt/nas", &rules, &fake, &d).unwrap();
        assert_eq!(
            fake.calls(),
            vec![(PathBuf::from("/mnt/nas"), UmountMode::Force)]
        );
    }

    #[test]
    fn failures_name_the_call_the_errno_and_what_to_do_and_record_nothing() {
        let d = DetachedMounts::default();
        let fake = RecordingUnmounter::default();
        fake.answer(
            "/mnt/nas",
            UmountMode::Detach,
            UmountCallError::Os { errno: libc::EPERM },
        );
        let e = unmount("/mnt/nas", &UnmountRules::default(), &fake, &d).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("umount2(/mnt/nas, MNT_DETACH) failed"), "{s}");
        assert!(s.contains("EPERM") && s.contains("CAP_SYS_ADMIN"), "{s}");

        fake.answer(
            "/mnt/nas",
            UmountMode::Detach,
            UmountCallError::TimedOut {
                after: Duration::from_secs(5),
            },
        );
        let e = unmount("/mnt/nas", &UnmountRules::default(), &fake, &d).unwrap_err();
        assert!(matches!(e, UnmountError::TimedOut { .. }));
        assert!(e.to_string().contains("plan a reboot"), "{e}");
        assert!(d.is_empty());
    }

    #[test]
    fn a_timed_out_forced_unmount_stops_without_stacking_a_detach() {
        let rules = UnmountRules {
            force_nfs: true,
            ..Default::default()
        };
        let fake = RecordingUnmounter::default();
        fake.answer(
            "/mnt/nas",
            UmountMode::Force,
            UmountCallError::TimedOut {
                after: Duration::from_secs(5),
            },
        );
        let d = DetachedMounts::default();
        assert!(matches!(
            unmount("/mnt/nas", &rules, &fake, &d),
            Err(UnmountError::TimedOut {
                mode: UmountMode::Force,
                ..
            })
        ));
        assert_eq!(fake.calls().len(), 1);
    }

    /// A raw umount2 stand-in that blocks calls on a gate until it is opened.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        cv: Condvar,
        calls: Mutex<Vec<(PathBuf, UmountMode)>>,
    }

    impl Gate {
        fn raw(self: &Arc<Self>, errno: Option<i32>) -> Arc<RawUmount> {
            let g = Arc::clone(self);
            Arc::new(move |p: &Path, m: UmountMode| {
                lock(&g.calls).push((p.to_path_buf(), m));
                let mut open = lock(&g.open);
                while !*open {
                    open = g.cv.wait(open).unwrap_or_else(PoisonError::into_inner);
                }
                errno.map_or(Ok(()), Err)
            })
        }
        fn release(&self) {
            *lock(&self.open) = true;
            self.cv.notify_all();
        }
    }

    /// Bound on waits for a released call to come back; never reached when correct.
    const SETTLE: Duration = Duration::from_secs(10);
    const SHORT: Duration = Duration::from_millis(50);
    /// Scheduling latency allowed on top of a deadline before the caller counts as blocked.
    const SCHED_SLACK: Duration = Duration::from_millis(500);

    fn wait_outstanding_empty(u: &LinuxUnmounter) {
        let until = Instant::now() + SETTLE;
        while !u.outstanding().is_empty() {
            assert!(Instant::now() < until, "the released call never returned");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_stuck_umount_returns_at_its_deadline_and_is_never_stacked_on_the_same_path() {
        let gate = Arc::new(Gate::default());
        let u = LinuxUnmounter::with_raw(gate.raw(None));
        let p = Path::new("/mnt/dead");
        let t0 = Instant::now();
        assert_eq!(
            u.umount(p, UmountMode::Detach, SHORT),
            Err(UmountCallError::TimedOut { after: SHORT })
        );
        assert!(t0.elapsed() < SHORT + SCHED_SLACK, "{:?}", t0.elapsed());
        assert_eq!(u.outstanding(), vec![PathBuf::from("/mnt/dead")]);
        assert!(matches!(
            u.umount(p, UmountMode::Detach, SHORT),
            Err(UmountCallError::Outstanding { .. })
        ));
        assert_eq!(lock(&gate.calls).len(), 1, "no second call on the path");

        gate.release();
        wait_outstanding_empty(&u);
        assert_eq!(u.umount(p, UmountMode::Detach, SETTLE), Ok(()));
        assert_eq!(lock(&gate.calls).len(), 2);
    }

    #[test]
    fn an_errno_from_the_kernel_is_passed_through() {
        let gate = Arc::new(Gate::default());
        gate.release();
        let u = LinuxUnmounter::with_raw(gate.raw(Some(libc::EINVAL)));
        assert_eq!(
            u.umount(Path::new("/mnt/x"), UmountMode::Force, SETTLE),
            Err(UmountCallError::Os {
                errno: libc::EINVAL
            })
        );
        assert!(u.outstanding().is_empty());
    }

    #[test]
    fn the_real_umount2_of_a_path_that_is_no_mount_point_fails_fast_with_einval_or_eperm() {
        let dir = std::env::temp_dir();
        let r = LinuxUnmounter::new().umount(&dir, UmountMode::Detach, SETTLE);
        // Root gets EINVAL (not a mount point); without CAP_SYS_ADMIN the answer is EPERM.
        assert!(
            matches!(r, Err(UmountCallError::Os { errno }) if errno == libc::EINVAL || errno == libc::EPERM),
            "{r:?}"
        );
    }

    #[test]
    fn the_detacher_reads_mountinfo_plans_without_calls_and_treats_our_own_detach_as_done() {
        let files = Arc::new(FakeFiles::with(&[(
            "proc/self/mountinfo",
            &String::from_utf8(all()).unwrap(),
        )]));
        let fake = Arc::new(RecordingUnmounter::default());
        let detached = Arc::new(DetachedMounts::default());
        let d = MountDetacher::new(
            files.clone(),
            UnmountRules::default(),
            fake.clone(),
            detached.clone(),
        );
        let p = d.plan("/mnt/nas").unwrap();
        assert!(
            p.starts_with("would run umount2(/mnt/nas, MNT_DETACH)"),
            "{p}"
        );
        assert!(
            d.plan("/data")
                .unwrap_err()
                .to_string()
                .contains("not a watched network")
        );
        assert!(fake.calls().is_empty());

        let s = d.detach("/mnt/nas").unwrap();
        assert!(s.starts_with("unmounted /mnt/nas"), "{s}");
        // The mount is gone from the table now.
        files.put("proc/self/mountinfo", ROOT);
        let again = d.detach("/mnt/nas").unwrap();
        assert!(again.contains("already detached"), "{again}");
        assert!(
            d.detach("/mnt/other")
                .unwrap_err()
                .to_string()
                .contains("not mounted")
        );
        assert_eq!(fake.calls().len(), 1);

        files.remove("proc/self/mountinfo");
        let e = d.detach("/mnt/nas").unwrap_err();
        assert!(matches!(e, DetachError::Mountinfo(_)), "{e}");
        assert!(e.to_string().contains("no unmount was attempted"), "{e}");
    }
}
