//! The vocabulary shared by detectors, the policy engine, actuators and the exporter.
//!
//! A detector publishes the full set of [`Condition`]s it holds on every pass (level, not
//! edge): a restarted daemon re-derives them, and a problem that stops being seen clears
//! itself. The [`crate::hub::Hub`] turns successive sets into raised/cleared changes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::{Arc, Mutex};

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
    pub(crate) const ALL: [ConditionKind; 26] = [
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
        }
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
    /// `systemctl reset-failed` then `start` of a failed k3s unit (K3sUnitFailed only).
    ResetFailedK3s,
}

impl Remedy {
    pub(crate) const LADDER_ACTIONS: [Remedy; 8] = [
        Remedy::Cordon,
        Remedy::Drain,
        Remedy::Unmount,
        Remedy::RemoveSandboxes,
        Remedy::RestartK3s,
        Remedy::Reboot,
        Remedy::EvictBestEffort,
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
            Remedy::ResetFailedK3s => "reset_failed_k3s",
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<Remedy> {
        Self::LADDER_ACTIONS.into_iter().find(|a| a.name() == s)
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
