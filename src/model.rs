//! The vocabulary shared by detectors, the policy engine, actuators and the exporter.
//!
//! A detector publishes the full set of [`Condition`]s it holds on every pass (level, not
//! edge): a restarted daemon re-derives them, and a problem that stops being seen clears
//! itself. The [`crate::hub::Hub`] turns successive sets into raised/cleared changes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};

/// Every condition nodemedic can hold. The names are the Kubernetes condition types
/// (prefixed there to avoid clashing with kubelet's own) and the `condition` label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionKind {
    KernelRcuStall,
    KernelSoftLockup,
    KernelHardLockup,
    KernelHungTasks,
    /// `/dev/kmsg` cannot be read or the kernel stopped printing hung-task reports:
    /// log-based detection is blind.
    KernelLogBlind,
    NetworkMountHung,
    /// A `hard` NFS mount on a control-plane node: a stalled server freezes the node.
    HardNfsMount,
    MemoryPressure,
    SandboxNameReserved,
    ContainerRuntimeDown,
    /// Automatic remediation gave up on a problem: a human must look.
    NeedsHuman,
    /// Tasks near the node's PID limit (`pid_max`, `threads-max`) or the pods' `pids.max`.
    PidsLow,
    /// Open files near `fs.file-max`, or the kernel said it reached it.
    FileHandlesLow,
    /// The conntrack table near `nf_conntrack_max`, or the kernel dropping packets for it.
    ConntrackTableFull,
    /// A watched filesystem (subject: its first watched path) short of space.
    DiskSpaceLow,
    /// A watched filesystem (subject: its first watched path) short of inodes.
    InodesLow,
    /// More zombie processes than `limits.zombies_max`: a parent that never reaps.
    ZombieProcesses,
    /// A k3s liveness probe (kubelet, apiserver, etcd, PLEG) kept failing while the k3s
    /// process runs: alive but wedged (k3s issue 14479).
    K3sUnresponsive,
    /// systemd restarted k3s again and again (`NRestarts` rising).
    K3sCrashLooping,
    /// The k3s unit is `failed`: systemd gave up restarting it.
    K3sUnitFailed,
    /// The kernel says the clock is not synchronised (`STA_UNSYNC`).
    ClockUnsynchronized,
    /// The kubelet's graceful node shutdown is configured but would not work.
    GracefulShutdownIneffective,
    /// etcd's WAL fsync p99 above the threshold for the sustain time (a warning: restarting
    /// or rebooting a member for a slow disk only adds elections).
    EtcdSlowDisk,
    /// etcd's db at or above the share of its quota, or a NOSPACE alarm.
    EtcdNearQuota,
    /// kine (sqlite) logged many `Slow SQL` lines in a short time.
    KineSlowSql,
    /// A k3s certificate expires within the warning horizon.
    K3sCertificateExpiring,
    /// A k3s certificate is inside k3s's rotation window and the maintenance window is
    /// open: a k3s restart renews it.
    K3sCertificateRotationDue,
    /// Storage errors (filesystem, block, SD card, USB storage) on a device that backs a
    /// filesystem the node needs; subject: the device.
    StorageErrors,
    /// A filesystem the node needs cannot take a write: remounted read-only, a write probe
    /// failing with EROFS/EIO, or one that hangs; subject: the mount point.
    ReadOnlyFilesystem,
    /// The kernel oopsed, hit a BUG or WARNING, or panicked. A problem when the oops
    /// killed a kernel thread or names a kernel bug; a warning otherwise.
    KernelOops,
    /// The Raspberry Pi firmware reports under-voltage (hwmon `rpi_volt`), now or within
    /// `power.under_voltage_quiet`: a weak supply, which no reboot fixes.
    UnderVoltage,
    /// A thermal zone above its first passive trip point, or the firmware's throttle bit,
    /// for `power.thermal_sustain`: the CPU runs slowed down.
    ThermalThrottling,
    /// The state directory cannot be written (read-only, full): running degraded.
    StateDirUnusable,
    /// Some watched mounts could not be probed (every probe thread taken): unknown state.
    MountsUnprobed,
    /// A hung FUSE mount owned by an unprivileged user (`user_id=` != 0): anyone can make
    /// one, so its ladder may only cordon (validated), never restart, unmount or reboot.
    UserMountHung,
}

/// Problems drive the escalation policy; warnings are reported only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    Warning,
    Problem,
}

impl ConditionKind {
    pub(crate) const ALL: [ConditionKind; 35] = [
        ConditionKind::KernelRcuStall,
        ConditionKind::KernelSoftLockup,
        ConditionKind::KernelHardLockup,
        ConditionKind::KernelHungTasks,
        ConditionKind::KernelLogBlind,
        ConditionKind::NetworkMountHung,
        ConditionKind::HardNfsMount,
        ConditionKind::MemoryPressure,
        ConditionKind::SandboxNameReserved,
        ConditionKind::ContainerRuntimeDown,
        ConditionKind::NeedsHuman,
        ConditionKind::PidsLow,
        ConditionKind::FileHandlesLow,
        ConditionKind::ConntrackTableFull,
        ConditionKind::DiskSpaceLow,
        ConditionKind::InodesLow,
        ConditionKind::ZombieProcesses,
        ConditionKind::K3sUnresponsive,
        ConditionKind::K3sCrashLooping,
        ConditionKind::K3sUnitFailed,
        ConditionKind::ClockUnsynchronized,
        ConditionKind::GracefulShutdownIneffective,
        ConditionKind::EtcdSlowDisk,
        ConditionKind::EtcdNearQuota,
        ConditionKind::KineSlowSql,
        ConditionKind::K3sCertificateExpiring,
        ConditionKind::K3sCertificateRotationDue,
        ConditionKind::StorageErrors,
        ConditionKind::ReadOnlyFilesystem,
        ConditionKind::KernelOops,
        ConditionKind::UnderVoltage,
        ConditionKind::ThermalThrottling,
        ConditionKind::StateDirUnusable,
        ConditionKind::MountsUnprobed,
        ConditionKind::UserMountHung,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConditionKind::KernelRcuStall => "KernelRCUStall",
            ConditionKind::KernelSoftLockup => "KernelSoftLockup",
            ConditionKind::KernelHardLockup => "KernelHardLockup",
            ConditionKind::KernelHungTasks => "KernelHungTasks",
            ConditionKind::KernelLogBlind => "KernelLogBlind",
            ConditionKind::NetworkMountHung => "NetworkMountHung",
            ConditionKind::HardNfsMount => "HardNFSMount",
            ConditionKind::MemoryPressure => "MemoryPressure",
            ConditionKind::SandboxNameReserved => "SandboxNameReserved",
            ConditionKind::ContainerRuntimeDown => "ContainerRuntimeDown",
            ConditionKind::NeedsHuman => "NeedsHuman",
            ConditionKind::PidsLow => "PIDsLow",
            ConditionKind::FileHandlesLow => "FileHandlesLow",
            ConditionKind::ConntrackTableFull => "ConntrackTableFull",
            ConditionKind::DiskSpaceLow => "DiskSpaceLow",
            ConditionKind::InodesLow => "InodesLow",
            ConditionKind::ZombieProcesses => "ZombieProcesses",
            ConditionKind::K3sUnresponsive => "K3sUnresponsive",
            ConditionKind::K3sCrashLooping => "K3sCrashLooping",
            ConditionKind::K3sUnitFailed => "K3sUnitFailed",
            ConditionKind::ClockUnsynchronized => "ClockUnsynchronized",
            ConditionKind::GracefulShutdownIneffective => "GracefulShutdownIneffective",
            ConditionKind::EtcdSlowDisk => "EtcdSlowDisk",
            ConditionKind::EtcdNearQuota => "EtcdNearQuota",
            ConditionKind::KineSlowSql => "KineSlowSQL",
            ConditionKind::K3sCertificateExpiring => "K3sCertificateExpiring",
            ConditionKind::K3sCertificateRotationDue => "K3sCertificateRotationDue",
            ConditionKind::StorageErrors => "StorageErrors",
            ConditionKind::ReadOnlyFilesystem => "ReadOnlyFilesystem",
            ConditionKind::KernelOops => "KernelOops",
            ConditionKind::UnderVoltage => "UnderVoltage",
            ConditionKind::ThermalThrottling => "ThermalThrottling",
            ConditionKind::StateDirUnusable => "StateDirUnusable",
            ConditionKind::MountsUnprobed => "MountsUnprobed",
            ConditionKind::UserMountHung => "UserMountHung",
        }
    }

    pub(crate) fn severity(self) -> Severity {
        match self {
            ConditionKind::KernelLogBlind
            | ConditionKind::HardNfsMount
            | ConditionKind::ClockUnsynchronized
            | ConditionKind::GracefulShutdownIneffective
            | ConditionKind::StateDirUnusable
            | ConditionKind::MountsUnprobed => Severity::Warning,
            // Reported, never remedied: nothing nodemedic can do fixes a supply or a
            // heat sink; they explain other problems instead (`policy::power_cause`).
            ConditionKind::UnderVoltage | ConditionKind::ThermalThrottling => Severity::Warning,
            // Reported, never remedied: see each kind's doc.
            ConditionKind::EtcdSlowDisk
            | ConditionKind::KineSlowSql
            | ConditionKind::K3sCertificateExpiring => Severity::Warning,
            // The node's limits: reported, and acted on only through their own ladders
            // (cordon for PIDs and conntrack, the opt-in disk reclaim).
            ConditionKind::PidsLow
            | ConditionKind::FileHandlesLow
            | ConditionKind::ConntrackTableFull
            | ConditionKind::DiskSpaceLow
            | ConditionKind::InodesLow
            | ConditionKind::ZombieProcesses => Severity::Warning,
            _ => Severity::Problem,
        }
    }
}

impl ConditionKind {
    pub(crate) fn from_name(s: &str) -> Option<ConditionKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Serialised by its condition name (`KernelRCUStall`), as everywhere else.
impl Serialize for ConditionKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ConditionKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ConditionKind::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown condition {s}")))
    }
}

impl fmt::Display for ConditionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One held condition. `subject` tells instances apart (a mount point, an NFS server, a
/// sandbox name); it is empty for node-wide conditions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Condition {
    pub kind: ConditionKind,
    pub subject: String,
    /// CamelCase, as Kubernetes condition reasons are.
    pub reason: String,
    pub message: String,
    /// This instance of a problem kind is only a warning (a `KernelOops` that killed a
    /// user task): reported, never escalated. None: the kind's severity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) severity: Option<Severity>,
}

impl Condition {
    pub fn new(
        kind: ConditionKind,
        subject: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            kind,
            subject: subject.into(),
            reason: reason.into(),
            message: message.into(),
            severity: None,
        }
    }

    /// The same condition, reported as a warning only.
    pub(crate) fn into_warning(mut self) -> Self {
        self.severity = Some(Severity::Warning);
        self
    }

    /// This instance's severity: problems drive the escalation policy.
    pub(crate) fn severity(&self) -> Severity {
        self.severity.unwrap_or(self.kind.severity())
    }

    pub(crate) fn key(&self) -> ConditionKey {
        (self.kind, self.subject.clone())
    }
}

pub(crate) type ConditionKey = (ConditionKind, String);

/// What the policy can ask actuators to do, least disruptive first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Remedy {
    Cordon,
    Uncordon,
    Drain,
    Unmount,
    RemoveSandboxes,
    RestartK3s,
    Reboot,
    /// Evict the BestEffort pod using the most memory (MemoryPressure only).
    EvictBestEffort,
    /// Raise `NeedsHuman` and stop acting on the problem.
    NeedsHuman,
    /// Vacuum the journal and remove unused images (DiskSpaceLow only).
    ReclaimDisk,
    /// `systemctl reset-failed` then `start` of a failed k3s unit (K3sUnitFailed only).
    ResetFailedK3s,
}

impl Remedy {
    pub(crate) const LADDER_ACTIONS: [Remedy; 9] = [
        Remedy::Cordon,
        Remedy::Drain,
        Remedy::Unmount,
        Remedy::RemoveSandboxes,
        Remedy::RestartK3s,
        Remedy::Reboot,
        Remedy::EvictBestEffort,
        Remedy::ReclaimDisk,
        Remedy::ResetFailedK3s,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Remedy::Cordon => "cordon",
            Remedy::Uncordon => "uncordon",
            Remedy::Drain => "drain",
            Remedy::Unmount => "unmount",
            Remedy::RemoveSandboxes => "remove_sandboxes",
            Remedy::RestartK3s => "restart_k3s",
            Remedy::Reboot => "reboot",
            Remedy::EvictBestEffort => "evict_besteffort",
            Remedy::NeedsHuman => "needs_human",
            Remedy::ReclaimDisk => "reclaim_disk",
            Remedy::ResetFailedK3s => "reset_failed_k3s",
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<Remedy> {
        Self::LADDER_ACTIONS.into_iter().find(|a| a.name() == s)
    }

    /// Actions on one subject each (a mount point, a sandbox name): cooled down and capped
    /// per subject, under the node-wide cap.
    pub(crate) fn per_subject(self) -> bool {
        matches!(self, Remedy::Unmount | Remedy::RemoveSandboxes)
    }

    /// Actions that interrupt workloads: held back during the post-boot grace period.
    pub(crate) fn disruptive(self) -> bool {
        matches!(
            self,
            Remedy::Drain
                | Remedy::Unmount
                | Remedy::RestartK3s
                | Remedy::Reboot
                | Remedy::EvictBestEffort
                | Remedy::ReclaimDisk
        )
    }
}

impl fmt::Display for Remedy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One BestEffort pod's memory, by pod UID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUsage {
    /// `metadata.uid` of the pod, with dashes, as the API spells it.
    pub(crate) uid: String,
    /// Usage minus inactive file cache, bytes.
    pub(crate) working_set: u64,
}

/// Bytes as MiB with one decimal, for messages about working sets.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// A storage or power event the kernel reported, handed from the kernel detector to the
/// storage detector (the daemon's wiring shares one [`StorageEvents`] between them).
#[derive(Clone, Debug, PartialEq)]
pub struct StorageEvent {
    /// The classifier's kind: `fs_error`, `fs_readonly`, `block_io_error`, `mmc_error`,
    /// `usb_storage_reset`, `undervoltage`.
    pub(crate) kind: &'static str,
    /// The device the kernel named (`mmcblk0p2`, `sda`, `mmc0`, `2-1`, `0000:01:00.0`).
    pub(crate) device: Option<String>,
    /// `undervoltage`: the recovery line.
    pub(crate) cleared: bool,
    /// What the kernel said, short, for condition messages.
    pub(crate) detail: String,
    /// Kernel (monotonic) time of the event.
    pub(crate) mono: std::time::Duration,
}

/// Storage events waiting for the storage detector; bounded: a storm of errors keeps the
/// newest and counts what it dropped. `wait` blocks until an event comes.
#[derive(Clone, Debug, Default)]
pub struct StorageEvents(Arc<(Mutex<StorageQueue>, Condvar)>);

#[derive(Debug, Default)]
struct StorageQueue {
    events: VecDeque<StorageEvent>,
    dropped: u64,
    woken: bool,
}

/// Enough for a burst of errors between two passes of the storage detector (seconds).
const STORAGE_QUEUE_MAX: usize = 4096;

impl StorageEvents {
    pub(crate) fn push(&self, e: StorageEvent) {
        let (m, cv) = &*self.0;
        let mut q = m.lock().unwrap_or_else(|p| p.into_inner());
        if q.events.len() >= STORAGE_QUEUE_MAX {
            q.events.pop_front();
            q.dropped += 1;
        }
        q.events.push_back(e);
        q.woken = true;
        cv.notify_all();
    }

    /// Takes every waiting event, and how many were dropped since the last call.
    pub(crate) fn drain(&self) -> (Vec<StorageEvent>, u64) {
        let (m, _) = &*self.0;
        let mut q = m.lock().unwrap_or_else(|p| p.into_inner());
        q.woken = false;
        (q.events.drain(..).collect(), std::mem::take(&mut q.dropped))
    }

    /// Ends a [`Self::wait`] now (the daemon is stopping).
    pub(crate) fn wake(&self) {
        let (m, cv) = &*self.0;
        m.lock().unwrap_or_else(|p| p.into_inner()).woken = true;
        cv.notify_all();
    }

    /// Blocks until an event or a [`Self::wake`], at most `timeout`.
    pub(crate) fn wait(&self, timeout: std::time::Duration) {
        let (m, cv) = &*self.0;
        let q = m.lock().unwrap_or_else(|p| p.into_inner());
        let _ = cv
            .wait_timeout_while(q, timeout, |q| !q.woken)
            .map_err(|p| p.into_inner());
    }
}

/// The NFS servers the kernel said are not responding (and has not said are back), as the
/// kernel detector last saw them. The mounts detector reads them to explain a hung mount;
/// the daemon's wiring hands the one view from the first to the second.
#[derive(Clone, Debug, Default)]
pub struct NfsServersDown(Arc<Mutex<Vec<String>>>);

impl NfsServersDown {
    /// Replaces the list (sorted, unique server names).
    pub(crate) fn set(&self, servers: Vec<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = servers;
    }

    pub(crate) fn get(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A node limit the kernel said it hit, from its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum LimitHit {
    /// `nf_conntrack: table full, dropping packet`.
    ConntrackTableFull,
    /// `VFS: file-max limit N reached`.
    FileMax,
}

/// When the kernel last said it hit a node limit (monotonic time of its record), as the
/// kernel detector saw it. The limits detector reads it; the daemon's wiring hands the one
/// view from the first to the second.
#[derive(Clone, Debug, Default)]
pub struct LimitHits(Arc<Mutex<Vec<(LimitHit, std::time::Duration)>>>);

impl LimitHits {
    /// Notes a hit logged at `at` (the newest per kind is kept).
    pub(crate) fn record(&self, hit: LimitHit, at: std::time::Duration) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match g.iter_mut().find(|(h, _)| *h == hit) {
            Some((_, t)) => *t = (*t).max(at),
            None => g.push((hit, at)),
        }
    }

    /// When `hit` was last logged, if ever.
    pub(crate) fn last(&self, hit: LimitHit) -> Option<std::time::Duration> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.iter().find(|(h, _)| *h == hit).map(|(_, t)| *t)
    }
}

/// The container runtime's health as the runtime detector last saw it, for the k3s
/// detector's `cri` probe; the daemon's wiring hands the one view from the first to the
/// second. None until the runtime detector's first pass.
#[derive(Clone, Debug, Default)]
pub struct CriHealth(Arc<Mutex<Option<CriStatus>>>);

/// One CRI check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum CriStatus {
    Up,
    /// No runtime socket: no runtime on this node (or not started yet this boot).
    Absent,
    /// The runtime did not answer: what failed, and how many checks in a row.
    Down(String),
}

impl CriHealth {
    pub(crate) fn set(&self, s: CriStatus) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    pub(crate) fn get(&self) -> Option<CriStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What this node's own etcd member says about its cluster, from its metrics: the etcd
/// detector writes it, the policy loop reads it (handed over at the daemon's wiring) as the
/// quorum view of last resort when the Kubernetes API cannot be asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEtcd {
    /// Unix time of the scrape this comes from.
    pub(crate) at_unix: u64,
    /// The local member answered its metrics endpoint then.
    pub(crate) answering: bool,
    /// Other members this one has exchanged raft messages with since it started.
    pub(crate) peers_known: u32,
    /// Other members it has an open peer connection to now.
    pub(crate) peers_active: u32,
}

/// The shared [`LocalEtcd`] slot; None until the detector's first scrape.
#[derive(Clone, Debug, Default)]
pub struct LocalEtcdView(Arc<Mutex<Option<LocalEtcd>>>);

impl LocalEtcdView {
    pub(crate) fn set(&self, v: LocalEtcd) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    pub(crate) fn get(&self) -> Option<LocalEtcd> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An Event a detector asks for on the Node (a fact worth telling, not a condition to
/// hold): the policy loop posts it, audited and journaled like its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectorEvent {
    /// CamelCase, as Kubernetes Event reasons are.
    pub(crate) reason: String,
    pub(crate) message: String,
}

/// Detectors push, the policy loop takes; handed over at the daemon's wiring.
#[derive(Clone, Debug, Default)]
pub struct EventOutbox(Arc<Mutex<Vec<DetectorEvent>>>);

/// Events waiting beyond this are dropped: the loop takes them every tick (seconds).
const OUTBOX_CAP: usize = 32;

impl EventOutbox {
    pub(crate) fn push(&self, e: DetectorEvent) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < OUTBOX_CAP {
            v.push(e);
        }
    }

    pub(crate) fn take(&self) -> Vec<DetectorEvent> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A kernel log line read from elsewhere than `/dev/kmsg`: a pstore record, the previous
/// boot's journal. `ts_usec` when the source gave the kernel timestamp apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLine {
    pub ts_usec: Option<u64>,
    pub text: String,
}

/// One event the kernel classifier found in such lines, as plain facts: the power
/// subsystem reads how the previous boot ended from these without importing the kernel
/// subsystem (the daemon's wiring runs the classifier and hands them over).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelEventSummary {
    /// The classifier's kind name (`hung_task`, `undervoltage`...).
    pub kind: &'static str,
    /// The kernel panicked for it (`Kernel panic - not syncing`).
    pub panic: bool,
    /// A recovery line (`Voltage normalised`).
    pub cleared: bool,
    /// Shutdown-level (a critical trip, a hardware-protection shutdown).
    pub critical: bool,
    /// A hang a watchdog reset would follow: a hung task, a soft, hard or workqueue lockup,
    /// an RCU stall other than a brief expedited one.
    pub hang: bool,
    pub ts_usec: Option<u64>,
    /// Everything the classifier extracted, as `nodemedic classify` prints it.
    pub fields: serde_json::Value,
}

/// Whether a task the kernel reported hung is blocked on FUSE mounts that unprivileged users
/// own (issue 18.1): the kernel detector asks, the mounts subsystem answers; the daemon's
/// wiring hands one to the other. Such a report raises `UserMountHung` (cordon only) instead
/// of `KernelHungTasks` (restart, reboot).
pub trait HungTaskWaits: Send + Sync {
    /// `Some` only when task `pid` waits in FUSE now and every FUSE connection with requests
    /// waiting belongs to a mount an unprivileged user owns; `None` when anything is unknown.
    fn user_fuse_wait(&self, pid: u32) -> Option<UserFuseWait>;
}

/// The user-owned FUSE mounts a hung task may be waiting on, as [`HungTaskWaits`] found them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserFuseWait {
    /// `(mount point, owner uid)` of every FUSE mount with requests waiting.
    pub mounts: Vec<(String, u32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_names_are_unique_camel_case_identifiers() {
        let mut names: Vec<_> = ConditionKind::ALL.iter().map(|k| k.name()).collect();
        for n in &names {
            assert!(
                n.chars().next().unwrap().is_ascii_uppercase()
                    && n.chars().all(|c| c.is_ascii_alphanumeric()),
                "{n}"
            );
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ConditionKind::ALL.len());
    }
}

/// The key of one escalation episode: a held problem and its subject. It is spelt
/// `Kind` (node-wide) or `Kind:subject` everywhere it is written down (`state.json`, the
/// `NeedsHuman` subject, `nodemedic reset <episode>`), exactly as before it was a type, so
/// state files written by older releases still load. Kind names never contain `:`; a
/// subject may (the first `:` separates them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct EpisodeKey {
    pub(crate) kind: ConditionKind,
    pub(crate) subject: String,
}

impl EpisodeKey {
    pub(crate) fn new(kind: ConditionKind, subject: impl Into<String>) -> Self {
        EpisodeKey {
            kind,
            subject: subject.into(),
        }
    }

    /// Parses `Kind` or `Kind:subject`; None for an unknown kind.
    pub(crate) fn parse(s: &str) -> Option<EpisodeKey> {
        let (kind, subject) = s.split_once(':').unwrap_or((s, ""));
        Some(EpisodeKey::new(ConditionKind::from_name(kind)?, subject))
    }

    /// Bytes of the written form, without building it.
    fn spelt(&self) -> impl Iterator<Item = u8> + '_ {
        let sep: &[u8] = if self.subject.is_empty() { b"" } else { b":" };
        self.kind
            .name()
            .bytes()
            .chain(sep.iter().copied())
            .chain(self.subject.bytes())
    }
}

impl From<&ConditionKey> for EpisodeKey {
    fn from(k: &ConditionKey) -> Self {
        EpisodeKey::new(k.0, k.1.clone())
    }
}

/// Ordered as the written form, so maps keyed by it serialise in the same order as when
/// the key was that string.
impl Ord for EpisodeKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.spelt().cmp(other.spelt())
    }
}

impl PartialOrd for EpisodeKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for EpisodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subject.is_empty() {
            f.write_str(self.kind.name())
        } else {
            write!(f, "{}:{}", self.kind.name(), self.subject)
        }
    }
}

impl Serialize for EpisodeKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EpisodeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EpisodeKey::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "episode key {s:?} does not start with a known condition name"
            ))
        })
    }
}

/// A counter that survives restarts and reboots (`state.json` `counters`), spelt as before
/// it was a type: `unclean_shutdowns`, `reboots:<problem>`. Keys this release does not know
/// (written by a newer one, or by another part of nodemedic) are kept as they are.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CounterKey {
    /// Boots that ended without the clean-shutdown marker.
    UncleanShutdowns,
    /// Reboots nodemedic made, by the problem they were for (a condition name).
    Reboots(String),
    Other(String),
}

impl CounterKey {
    pub(crate) fn parse(s: &str) -> CounterKey {
        match s.split_once(':') {
            _ if s == "unclean_shutdowns" => CounterKey::UncleanShutdowns,
            Some(("reboots", problem)) => CounterKey::Reboots(problem.to_string()),
            _ => CounterKey::Other(s.to_string()),
        }
    }
}

impl From<&str> for CounterKey {
    fn from(s: &str) -> Self {
        CounterKey::parse(s)
    }
}

impl From<&String> for CounterKey {
    fn from(s: &String) -> Self {
        CounterKey::parse(s)
    }
}

impl fmt::Display for CounterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CounterKey::UncleanShutdowns => f.write_str("unclean_shutdowns"),
            CounterKey::Reboots(p) => write!(f, "reboots:{p}"),
            CounterKey::Other(s) => f.write_str(s),
        }
    }
}

impl Serialize for CounterKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CounterKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(CounterKey::parse(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn episode_keys_are_spelt_as_before_and_parse_back() {
        for s in [
            "KernelRCUStall",
            "NetworkMountHung:/mnt/nas",
            "NetworkMountHung:/srv/a:b",
            "SandboxNameReserved:web-0_default_uid_1",
        ] {
            let k = EpisodeKey::parse(s).unwrap();
            assert_eq!(k.to_string(), s);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("{s:?}"));
        }
        assert_eq!(
            EpisodeKey::parse("NetworkMountHung:/srv/a:b")
                .unwrap()
                .subject,
            "/srv/a:b"
        );
        assert!(EpisodeKey::parse("NoSuchKind:x").is_none());
        assert!(serde_json::from_str::<EpisodeKey>("\"Bogus\"").is_err());
    }

    #[test]
    fn episode_keys_order_as_their_spelling() {
        let mut keys: Vec<EpisodeKey> = [
            "NetworkMountHung:/mnt/b",
            "KernelRCUStall",
            "NetworkMountHung",
            "NetworkMountHung:/mnt/a",
            "MemoryPressure",
        ]
        .iter()
        .map(|s| EpisodeKey::parse(s).unwrap())
        .collect();
        keys.sort();
        let mut spelt: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let by_string = {
            let mut v = spelt.clone();
            v.sort();
            v
        };
        assert_eq!(spelt, by_string);
        spelt.dedup();
        assert_eq!(spelt.len(), 5);
    }

    #[test]
    fn counter_keys_are_spelt_as_before_and_unknown_ones_are_kept() {
        for s in [
            "unclean_shutdowns",
            "reboots:KernelRCUStall",
            "someone_elses:x",
        ] {
            let k = CounterKey::parse(s);
            assert_eq!(k.to_string(), s);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("{s:?}"));
        }
        assert_eq!(
            CounterKey::parse("unclean_shutdowns"),
            CounterKey::UncleanShutdowns
        );
        assert_eq!(
            CounterKey::parse("reboots:MemoryPressure"),
            CounterKey::Reboots("MemoryPressure".into())
        );
    }
}
