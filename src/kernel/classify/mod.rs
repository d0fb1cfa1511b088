//! Pure classifier for kernel and container-runtime distress messages.
//!
//! Feed it message text one line at a time (prefixes already stripped by
//! `line_format`, or straight from a `/dev/kmsg` record) together with the kernel
//! timestamp when known. It answers each line with a [`LineVerdict`] and groups
//! multi-line "splats" (an RCU stall with its per-CPU lines, stack dumps and NMI
//! backtraces; a hung-task report with its call trace; an OOM report with its memory
//! dump) into one [`Event`] each. No I/O, no clock: time is the `ts_usec` argument.
//!
//! Why grouping matters: one RCU stall prints dozens of lines; counting lines would
//! turn one stall into dozens of alarms, and the stall length (`t=5252 jiffies`) and
//! the CPUs involved arrive on follow-up lines, not on the head line.
//!
//! Grouping rules:
//! - A *head* line (the first line of a known splat) always starts a new event, even
//!   inside another splat: one splat after another gives one event each.
//! - While a splat is open, a line that has the shape of that splat's follow-ups
//!   (per-CPU stall lines, `Call Trace:`, frames, register dumps, `task:` lines...) is a
//!   continuation. Any other line closes the splat. So does a timestamp gap above
//!   [`SPLAT_MAX_GAP_USEC`], and [`SPLAT_MAX_LINES`].
//! - Single-line events (NFS, containerd name reservations, "hung task reports
//!   suppressed") are emitted at once and leave an open splat alone, because other
//!   CPUs' messages interleave with splats.
//! - An OOM report starts at `invoked oom-killer:` and swallows everything up to the
//!   `Killed process` line (the memory and task tables have too many shapes to list);
//!   the `oom-kill:constraint=...` line that precedes `Out of memory: Killed process`
//!   joins the same event, so one kill is one event carrying pid, comm and cgroup.
//! - `Kernel panic - not syncing: <reason>` joins an open splat of its own kind
//!   (sets `panic`); alone it is an event of its own.
//!
//! Speed: almost every kernel line matches nothing, so the head check dispatches on
//! the first byte (kernel heads are anchored at the start of the message; [`HEADS`]).
//! Only the OOM report's head, which starts with a comm, is looked for in the first
//! 36 bytes, and containerd's name reservations anywhere in a saved log's line (never in
//! a kernel record). Follow-up shapes are only tried while a splat is open.
//!
//! Trust: the classifier judges text only. Kernel kinds should be acted on only for
//! lines the kernel wrote (`/dev/kmsg` facility 0, see `kmsg_record`), or a root user
//! could forge a "stall" with `echo > /dev/kmsg`. The kernel itself prints text a user
//! chooses (a comm, a file name; issue 18), so:
//! - a head is matched against the kernel's whole format, anchored at both ends, each
//!   conversion in its shape (`pattern`): the kernel's text after a user-chosen part
//!   fails a head's format;
//! - a record is fed whole ([`Classifier::feed_record`]): only its first line can be a
//!   head; lines after an embedded newline only continue what the first line started;
//! - records that carry user-chosen text (segfault and signal reports, the exec-stack
//!   warning, audit records: `carriers`) are neither heads nor follow-ups.
//!
//! Severity: [`Event::severity`] gives a default reading. Notably a short expedited RCU
//! stall (the Raspberry Pi's routine ~21 jiffies during container start) is
//! [`EventSeverity::Info`]: harmless alone, a problem only when it repeats or is long.

mod block;
mod carriers;
mod fs;
mod k3s_log;
mod limits;
mod lockup;
mod mmc;
mod name_reservation;
mod netdev;
mod nfs;
mod oom;
mod oops;
mod pattern;
mod power;
mod rcu;
mod shapes;
#[cfg(test)]
mod tests;
mod usb;

use block::*;
use carriers::is_user_text_carrier;
use fs::*;
use k3s_log::*;
use limits::*;
use lockup::*;
use mmc::*;
use name_reservation::*;
use netdev::*;
pub(crate) use nfs::NfsServerTracker;
use nfs::*;
use oom::*;
use oops::*;
use pattern::{kmatch, kmatch_any};
use power::*;
use rcu::*;
use shapes::*;
use usb::*;

use serde::Serialize;
use std::collections::VecDeque;

/// A splat is printed in one burst, but the legacy console path prints from inside
/// printk, so on a 115200-baud serial console a 500-line OOM task table takes ~3.5 s.
/// Lines further apart than this do not belong to the same splat.
pub(crate) const SPLAT_MAX_GAP_USEC: u64 = 10_000_000;

/// An RCU stall with NMI backtraces from 64 CPUs is ~2,600 lines; an OOM task table on
/// a busy node a few hundred. Beyond this the splat is closed so one event can never
/// swallow an endless stream.
pub(crate) const SPLAT_MAX_LINES: u32 = 4096;

/// Bound on CPUs and pids kept per event (a 64-CPU stall lists at most 64 CPUs).
const MAX_LIST_LEN: usize = 64;

/// HZ to assume when the kernel config is unknown: CONFIG_HZ is 100..=1000, and the
/// smallest value never understates how long a stall lasted.
pub(crate) const FALLBACK_HZ: u32 = 100;

#[cfg(test)]
/// Expedited stalls shorter than this are routine on Raspberry Pi kernels during
/// container start (~21 jiffies, at most 0.21 s even at HZ=100), while a
/// normal RCU stall is only reported after 21 s (CONFIG_RCU_CPU_STALL_TIMEOUT).
pub(crate) const BRIEF_EXPEDITED_STALL_SECS: f64 = 1.0;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventKind {
    /// RCU CPU stall (normal, expedited, self-detected) or RCU-tasks stall.
    RcuStall,
    /// `INFO: task X:pid blocked for more than N seconds.`
    HungTask,
    /// `Future hung task reports are suppressed, see sysctl kernel.hung_task_warnings`:
    /// the kernel prints no more hung-task reports, so log-based detection is now blind
    /// and the caller should switch to `/proc/sys/kernel/hung_task_detect_count`.
    HungTaskReportsSuppressed,
    /// `BUG: soft lockup - CPU#N stuck for Ns! [comm:pid]`.
    SoftLockup,
    /// `Watchdog detected hard LOCKUP on cpu N`.
    HardLockup,
    /// `BUG: workqueue lockup - pool cpus=... stuck for Ns!`.
    WorkqueueLockup,
    /// `nfs: server X not responding, still trying|timed out` (also lockd, statd...).
    NfsNotResponding,
    /// `nfs: server X OK`.
    NfsRecovered,
    /// `NFS: state manager[: stage] failed on NFSv4 server X with error N`.
    NfsStateRecoveryFailed,
    /// `NFS: __nfs4_reclaim_open_state: Lock reclaim failed!` or `NFS: X: lost N locks`.
    NfsLockReclaimFailed,
    /// `lockd: cannot monitor X` (rpc.statd unreachable; NFSv3 locking broken).
    NfsLockdError,
    /// `xs_tcp_setup_socket: connect returned unhandled error -N`.
    NfsRpcTransportError,
    /// OOM killer killed a process.
    OomKill,
    /// containerd: `failed to reserve sandbox name "<pod>_<ns>_<uid>_<n>": name ... is
    /// reserved for "<id>"`, a leaked sandbox that blocks the pod until removed.
    SandboxNameReserved,
    /// containerd: `failed to reserve container name ...`. Transient during a slow
    /// CreateContainer (slow SD cards) and clears itself: never a reason to clean up.
    ContainerNameReserved,
    /// `nf_conntrack: table full, dropping packet`: new flows are being dropped.
    ConntrackTableFull,
    /// `VFS: file-max limit N reached`: opening a file fails with ENFILE.
    FileMaxReached,
    /// ext4, jbd2, XFS or btrfs reports damage or an I/O failure, or an XFS shutdown.
    FsError,
    /// A filesystem was remounted read-only after an error.
    FsReadonly,
    /// The block layer failed a request: `I/O error, dev sda, sector N`,
    /// `Buffer I/O error on dev sda2`, an access beyond the end of a device.
    BlockIoError,
    /// An oops, a BUG, a WARNING, or a panic (x86, arm64, arm): one splat, one event.
    KernelOops,
    /// SD/MMC timeouts and transfer errors (mmc core, sdhci, bcm2835 sdhost).
    MmcError,
    /// UAS aborts and resets, USB device resets, a dying xHCI controller.
    UsbStorageReset,
    /// k3s's kubelet: `PLEG is not healthy` (pod lifecycle relist stalled for 3 min).
    KubeletPlegUnhealthy,
    /// k3s's etcd: `apply request took too long`, `slow fdatasync`, `leader failed to send
    /// out heartbeat on time` (a slow disk, usually).
    EtcdSlow,
    /// The Pi's firmware reports under-voltage; `cleared` on `Voltage normalised`.
    Undervoltage,
    /// A CPU throttled for heat, or a thermal zone at its critical trip; `cleared` on
    /// `temperature/speed normal`.
    ThermalThrottle,
    /// `unregister_netdevice: waiting for X to become free`: a leaked reference keeps a
    /// network device (a pod's veth) from going away, and network setup waits behind it.
    NetdevUnregisterStuck,
}

impl EventKind {
    pub(crate) const ALL: [EventKind; 28] = [
        EventKind::RcuStall,
        EventKind::HungTask,
        EventKind::HungTaskReportsSuppressed,
        EventKind::SoftLockup,
        EventKind::HardLockup,
        EventKind::WorkqueueLockup,
        EventKind::NfsNotResponding,
        EventKind::NfsRecovered,
        EventKind::NfsStateRecoveryFailed,
        EventKind::NfsLockReclaimFailed,
        EventKind::NfsLockdError,
        EventKind::NfsRpcTransportError,
        EventKind::OomKill,
        EventKind::SandboxNameReserved,
        EventKind::ContainerNameReserved,
        EventKind::ConntrackTableFull,
        EventKind::FileMaxReached,
        EventKind::FsError,
        EventKind::FsReadonly,
        EventKind::BlockIoError,
        EventKind::KernelOops,
        EventKind::MmcError,
        EventKind::UsbStorageReset,
        EventKind::KubeletPlegUnhealthy,
        EventKind::EtcdSlow,
        EventKind::Undervoltage,
        EventKind::ThermalThrottle,
        EventKind::NetdevUnregisterStuck,
    ];

    /// The snake_case name, as serialised (for metric labels).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::RcuStall => "rcu_stall",
            EventKind::HungTask => "hung_task",
            EventKind::HungTaskReportsSuppressed => "hung_task_reports_suppressed",
            EventKind::SoftLockup => "soft_lockup",
            EventKind::HardLockup => "hard_lockup",
            EventKind::WorkqueueLockup => "workqueue_lockup",
            EventKind::NfsNotResponding => "nfs_not_responding",
            EventKind::NfsRecovered => "nfs_recovered",
            EventKind::NfsStateRecoveryFailed => "nfs_state_recovery_failed",
            EventKind::NfsLockReclaimFailed => "nfs_lock_reclaim_failed",
            EventKind::NfsLockdError => "nfs_lockd_error",
            EventKind::NfsRpcTransportError => "nfs_rpc_transport_error",
            EventKind::OomKill => "oom_kill",
            EventKind::SandboxNameReserved => "sandbox_name_reserved",
            EventKind::ContainerNameReserved => "container_name_reserved",
            EventKind::ConntrackTableFull => "conntrack_table_full",
            EventKind::FileMaxReached => "file_max_reached",
            EventKind::FsError => "fs_error",
            EventKind::FsReadonly => "fs_readonly",
            EventKind::BlockIoError => "block_io_error",
            EventKind::KernelOops => "kernel_oops",
            EventKind::MmcError => "mmc_error",
            EventKind::UsbStorageReset => "usb_storage_reset",
            EventKind::KubeletPlegUnhealthy => "kubelet_pleg_unhealthy",
            EventKind::EtcdSlow => "etcd_slow",
            EventKind::Undervoltage => "undervoltage",
            EventKind::ThermalThrottle => "thermal_throttle",
            EventKind::NetdevUnregisterStuck => "netdev_unregister_stuck",
        }
    }
}

/// NFS mount semantics revealed by the "not responding" message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MountKind {
    /// `still trying`: a hard mount; callers sit in D state until the server returns.
    Hard,
    /// `timed out`: a soft mount; calls fail with EIO.
    Soft,
}

/// Everything extracted from a line or a whole splat. Unset fields are left out of JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Fields {
    /// RCU flavor: `rcu_preempt`, `rcu_sched`, `rcu_bh`, `rcu_tasks`, `rcu_tasks_trace`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) flavor: Option<String>,
    /// RCU: an expedited grace period stalled (`detected expedited stalls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) expedited: Option<bool>,
    /// RCU: the stalled CPU reported itself (`self-detected stall`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) self_detected: Option<bool>,
    /// RCU: stall length, from `} N jiffies` or `t=N jiffies`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jiffies: Option<u64>,
    /// RCU: the CPU that noticed the stall (`detected by N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detected_by: Option<u32>,
    /// RCU: `kthread starved for N jiffies`; the grace-period kthread got no CPU, the
    /// kernel warns that OOM is then expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kthread_starved_jiffies: Option<u64>,
    /// RCU / workqueue: CPUs involved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) cpus: Vec<u32>,
    /// RCU: pids of blocked tasks (`P1234`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) pids: Vec<u32>,
    /// Lockups: the stuck CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cpu: Option<u32>,
    /// Hung task / soft lockup / OOM victim command name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
    /// Hung task: blocked for more than; lockups: stuck for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seconds: Option<u64>,
    /// The kernel panicked for this (`Kernel panic - not syncing: ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) panic: Option<bool>,
    /// NFS: RPC program that reported (`nfs`, `lockd`, `statd`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rpc_program: Option<String>,
    /// NFS: server host name or address as the kernel printed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mount_kind: Option<MountKind>,
    /// NFS: state-manager stage that failed (`lease expired`, `reclaim reboot`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stage: Option<String>,
    /// NFS/RPC: error number as printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<i32>,
    /// NFS: `lost N locks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lost_locks: Option<u32>,
    /// OOM: memory cgroup of the victim (`task_memcg=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cgroup: Option<String>,
    /// OOM: memory cgroup whose limit was hit (`oom_memcg=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) oom_cgroup: Option<String>,
    /// OOM: `CONSTRAINT_NONE`, `CONSTRAINT_MEMCG`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) constraint: Option<String>,
    /// OOM: a cgroup limit, not the whole machine, ran out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) memcg: Option<bool>,
    /// containerd: the reserved sandbox name `<pod>_<namespace>_<uid>_<attempt>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sandbox_name: Option<String>,
    /// containerd: the reserved container name `<container>_<pod>_<ns>_<uid>_<attempt>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) container_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) attempt: Option<u32>,
    /// containerd: id of the sandbox/container holding the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) holder_id: Option<String>,
    /// containerd: reported by `failed to recover state:`, i.e. fatal at containerd
    /// start (the CRI never comes up), not a runtime RunPodSandbox retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) recover_state: Option<bool>,
    /// Storage, USB, MMC, network, hwmon or thermal: the device the kernel named
    /// (`mmcblk0p2`, `sda`, `mmc0`, `2-1`, `0000:01:00.0`, `veth3c2a1b9`, `thermal_zone0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) device: Option<String>,
    /// Filesystem errors: `ext4`, `jbd2`, `xfs`, `btrfs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fs: Option<String>,
    /// The kernel function that reported (ext4 and btrfs errors name it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) inode: Option<u64>,
    /// Block errors: the sector (or filesystem block) that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sector: Option<u64>,
    /// Block errors: the request, `READ`, `WRITE`, `FLUSH`, `DISCARD`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) op: Option<String>,
    /// The kernel's message after its prefix (at most 200 bytes), for condition messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
    /// Under-voltage and thermal: the recovery line (the state cleared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cleared: Option<bool>,
    /// Oopses: `oops`, `bug`, `warning`, `panic`, `serror`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) oops: Option<String>,
    /// Oopses: the task that hit it was a kernel thread (or the idle task, or a
    /// workqueue worker): nothing restarts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kernel_thread: Option<bool>,
    /// Oopses: the kernel's taint flags as the report printed them (`GDW`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) taint: Option<String>,
    /// etcd: which slow-disk warning (`apply`, `fdatasync`, `heartbeat`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) etcd_warning: Option<&'static str>,
    /// Power/heat: the sensor that spoke (`hwmon1`, a thermal zone's type, `mmc1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sensor: Option<String>,
    /// Shutdown-level: a critical trip, a hardware-protection shutdown, an emergency stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) critical: Option<bool>,
}

macro_rules! fill_if_none {
    ($dst:expr, $src:expr, $($field:ident),+) => {
        $( if $dst.$field.is_none() { $dst.$field.clone_from(&$src.$field); } )+
    };
}

impl Fields {
    /// Adds what `other` knows and `self` does not; lists are merged without duplicates.
    fn absorb(&mut self, other: &Fields) {
        fill_if_none!(
            self,
            other,
            flavor,
            expedited,
            self_detected,
            jiffies,
            detected_by,
            kthread_starved_jiffies,
            cpu,
            comm,
            pid,
            seconds,
            rpc_program,
            server,
            mount_kind,
            stage,
            error,
            lost_locks,
            cgroup,
            oom_cgroup,
            constraint,
            memcg,
            sandbox_name,
            container_name,
            container,
            pod,
            namespace,
            pod_uid,
            attempt,
            holder_id,
            recover_state,
            device,
            fs,
            function,
            inode,
            sector,
            op,
            detail,
            etcd_warning,
            cleared,
            oops,
            kernel_thread,
            taint,
            sensor,
            critical
        );
        if other.panic == Some(true) {
            self.panic = Some(true);
        }
        for &c in &other.cpus {
            push_unique(&mut self.cpus, c);
        }
        for &p in &other.pids {
            push_unique(&mut self.pids, p);
        }
    }
}

fn push_unique(list: &mut Vec<u32>, value: u32) {
    if list.len() < MAX_LIST_LEN && !list.contains(&value) {
        list.push(value);
    }
}

/// The answer for one input line; serialises as
/// `{"kind": <kind or null>, "continuation": bool, ...fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineVerdict {
    pub(crate) kind: Option<EventKind>,
    /// The line belongs to a splat whose head came earlier.
    pub(crate) continuation: bool,
    /// What this line alone told (not the whole splat; see [`Event`]).
    #[serde(flatten)]
    pub(crate) fields: Fields,
}

impl LineVerdict {
    fn none() -> LineVerdict {
        LineVerdict {
            kind: None,
            continuation: false,
            fields: Fields::default(),
        }
    }
}

/// One complete event: a splat's head and all its continuations merged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Event {
    pub(crate) kind: EventKind,
    #[serde(flatten)]
    pub(crate) fields: Fields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_ts_usec: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_ts_usec: Option<u64>,
    /// Input lines that made up the event.
    pub(crate) lines: u32,
}

#[cfg(test)]
/// Default reading of how bad an event is; policy may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventSeverity {
    /// Routine or good news: brief expedited stall, NFS server back, transient
    /// container-name reservation.
    Info,
    /// Worth counting and acting on when it repeats or lasts.
    Warning,
    /// The node is, or is about to be, unable to make progress.
    Critical,
}

impl Event {
    /// RCU stall length in seconds, when the splat said how many jiffies.
    pub(crate) fn stall_secs(&self, hz: u32) -> Option<f64> {
        self.fields.jiffies.map(|j| jiffies_to_secs(j, hz))
    }

    #[cfg(test)]
    /// Default severity; `hz` converts stall jiffies (use [`FALLBACK_HZ`] if unknown).
    pub(crate) fn severity(&self, hz: u32) -> EventSeverity {
        if self.fields.panic == Some(true) {
            return EventSeverity::Critical;
        }
        match self.kind {
            EventKind::RcuStall => {
                if self.fields.kthread_starved_jiffies.is_some() {
                    EventSeverity::Critical
                } else if self.fields.expedited == Some(true) {
                    match self.stall_secs(hz) {
                        Some(s) if s < BRIEF_EXPEDITED_STALL_SECS => EventSeverity::Info,
                        _ => EventSeverity::Warning,
                    }
                } else {
                    EventSeverity::Critical
                }
            }
            EventKind::SoftLockup | EventKind::HardLockup => EventSeverity::Critical,
            EventKind::NfsRecovered | EventKind::ContainerNameReserved => EventSeverity::Info,
            EventKind::Undervoltage | EventKind::ThermalThrottle => match self.fields {
                Fields {
                    critical: Some(true),
                    ..
                } => EventSeverity::Critical,
                Fields {
                    cleared: Some(true),
                    ..
                } => EventSeverity::Info,
                _ => EventSeverity::Warning,
            },
            EventKind::FsReadonly => EventSeverity::Critical,
            EventKind::KernelOops if self.fields.oops.as_deref() == Some("warning") => {
                EventSeverity::Warning
            }
            EventKind::KernelOops => EventSeverity::Critical,
            EventKind::HungTask
            | EventKind::HungTaskReportsSuppressed
            | EventKind::WorkqueueLockup
            | EventKind::NfsNotResponding
            | EventKind::NfsStateRecoveryFailed
            | EventKind::NfsLockReclaimFailed
            | EventKind::NfsLockdError
            | EventKind::NfsRpcTransportError
            | EventKind::OomKill
            | EventKind::SandboxNameReserved
            | EventKind::ConntrackTableFull
            | EventKind::FileMaxReached => EventSeverity::Warning,
            EventKind::FsError
            | EventKind::BlockIoError
            | EventKind::MmcError
            | EventKind::UsbStorageReset
            | EventKind::NetdevUnregisterStuck => EventSeverity::Warning,
            EventKind::KubeletPlegUnhealthy | EventKind::EtcdSlow => EventSeverity::Warning,
        }
    }
}

/// Converts jiffies to seconds. `hz` of 0 is treated as 1 (never divides by zero).
pub(crate) fn jiffies_to_secs(jiffies: u64, hz: u32) -> f64 {
    jiffies as f64 / f64::from(hz.max(1))
}

/// Reads `CONFIG_HZ=250` from kernel config text (`/boot/config-*`, or
/// `/proc/config.gz` after the caller gunzips it).
pub(crate) fn hz_from_kconfig(text: &str) -> Option<u32> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("CONFIG_HZ="))
        .find_map(|v| v.trim().parse::<u32>().ok().filter(|&hz| hz > 0))
}

/// Stateful line classifier; see the module docs for the grouping rules.
#[derive(Debug, Default)]
pub struct Classifier {
    open: Option<OpenSplat>,
    done: VecDeque<Event>,
}

#[derive(Debug)]
struct OpenSplat {
    event: Event,
    /// The splat's body is over. OOM: the `Killed process` line was seen; oops: the
    /// `---[ end trace ... ]---` marker. Before it every line belongs (their dumps have
    /// too many shapes, per architecture and version, to list).
    body_done: bool,
}

/// How a head line relates to an open splat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Starts a new multi-line splat.
    Splat,
    /// A complete one-line event; leaves the open splat alone.
    Single,
    /// `Kernel panic - not syncing: ...`: joins an open splat of the same kind.
    Panic,
    /// `... invoked oom-killer:`: starts an OOM splat.
    OomStart,
    /// `oom-kill:constraint=...` or old `Kill process N (x) score ...`.
    OomDetail,
    /// `Killed process N (x) ...`.
    OomKilled,
    /// `oom_reaper: reaped process N (x)`: joins its OOM event if still open.
    OomReaped,
    /// An oops's die line (`Internal error: Oops: ...`, `Oops: 0000 [#1] ...`): joins an
    /// oops whose body is still open (after `Unable to handle kernel ...`, `BUG: ...`,
    /// `kernel BUG at`), so one oops is one event; otherwise starts one.
    OopsJoin,
}

struct Head {
    kind: EventKind,
    role: Role,
    fields: Fields,
}

impl Head {
    fn new(kind: EventKind, role: Role, fields: Fields) -> Option<Head> {
        Some(Head { kind, role, fields })
    }
}

/// Where the text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A kernel record: only kernel heads.
    Kernel,
    /// A line of a saved log: kernel heads and containerd's name reservations.
    AnyLog,
}

impl Classifier {
    pub fn new() -> Classifier {
        Classifier::default()
    }

    /// Classifies one line of a saved log (`nodemedic classify`: dmesg, journal, syslog,
    /// containerd's own log). `ts_usec` is the kernel timestamp when the line had one; it
    /// only serves to split splats that are far apart in time. Kernel records read live
    /// go through [`feed_record`](Self::feed_record).
    pub fn feed(&mut self, text: &str, ts_usec: Option<u64>) -> LineVerdict {
        let line = text.trim_end_matches(['\n', '\r']);
        self.feed_line(line, line, ts_usec, Source::AnyLog)
    }

    /// Classifies one kernel record (`/dev/kmsg`, its `\xNN` escapes undone), calling
    /// `each` with the verdict of each of its lines in order.
    ///
    /// Only the record's first line can be a head (issue 18): lines after an embedded
    /// newline are printed by the same call, so they can only continue what the first
    /// line started or continued, and a newline in a user-chosen name (a file, a comm)
    /// cannot start a "new" kernel message. Records that carry user-chosen text (see
    /// `carriers`) are neither heads nor follow-ups; they leave an open splat alone.
    /// containerd's name reservations are not looked for: the kernel never prints them.
    pub fn feed_record(
        &mut self,
        text: &str,
        ts_usec: Option<u64>,
        mut each: impl FnMut(LineVerdict),
    ) {
        let record = text.trim_end_matches(['\n', '\r']);
        let mut lines = record.split('\n');
        let first = lines.next().unwrap_or_default();
        let v = self.feed_line(first, record, ts_usec, Source::Kernel);
        let continues = v.kind.is_some()
            && self
                .open
                .as_ref()
                .is_some_and(|o| Some(o.event.kind) == v.kind);
        each(v);
        for line in lines {
            each(if continues {
                self.follow_up(line, ts_usec)
            } else {
                LineVerdict::none()
            });
        }
    }

    /// `line` of `record` (the same text for a line of a saved log).
    fn feed_line(
        &mut self,
        line: &str,
        record: &str,
        ts_usec: Option<u64>,
        source: Source,
    ) -> LineVerdict {
        if let Some(open) = &self.open
            && too_far_apart(open.event.last_ts_usec, ts_usec)
        {
            self.close();
        }
        // The carrier check runs only when the line could matter: a head, or a splat open.
        if let Some(head) = detect_head(line, source) {
            if is_user_text_carrier(record) {
                return LineVerdict::none();
            }
            return self.apply_head(head, ts_usec);
        }
        if self.open.is_none() || is_user_text_carrier(record) {
            return LineVerdict::none();
        }
        match self.continuation(line) {
            Some(fields) => self.absorb(fields, ts_usec),
            None => {
                self.close();
                LineVerdict::none()
            }
        }
    }

    /// A later line of a record whose first line belongs to the open splat: a follow-up
    /// when it has the shape of one; otherwise nothing (the splat stays open).
    fn follow_up(&mut self, line: &str, ts_usec: Option<u64>) -> LineVerdict {
        match self.continuation(line) {
            Some(fields) => self.absorb(fields, ts_usec),
            None => LineVerdict::none(),
        }
    }

    /// The fields of `line` as a follow-up of the open splat, if it has the shape of one.
    /// A splat at its line limit is closed and takes nothing more.
    fn continuation(&mut self, line: &str) -> Option<Fields> {
        let open = self.open.as_ref()?;
        if open.event.lines >= SPLAT_MAX_LINES {
            self.close();
            return None;
        }
        match (open.event.kind, open.body_done) {
            (EventKind::OomKill, false) => return Some(oom_dump_fields(line)),
            (EventKind::KernelOops, false) => {
                let (fields, end) = oops_dump_fields(line);
                if end && let Some(open) = &mut self.open {
                    open.body_done = true;
                }
                return Some(fields);
            }
            _ => {}
        }
        continuation_fields(open.event.kind, &open.event.fields, line)
    }

    fn absorb(&mut self, fields: Fields, ts_usec: Option<u64>) -> LineVerdict {
        let Some(open) = &mut self.open else {
            return LineVerdict::none();
        };
        open.absorb(&fields, ts_usec);
        LineVerdict {
            kind: Some(open.event.kind),
            continuation: true,
            fields,
        }
    }

    /// Ends the input: the open splat, if any, becomes a complete event.
    pub(crate) fn flush(&mut self) {
        self.close();
    }

    /// Takes the oldest complete event. Call after every [`feed`](Self::feed) (a line
    /// can complete up to two events) and after [`flush`](Self::flush).
    pub(crate) fn pop_event(&mut self) -> Option<Event> {
        self.done.pop_front()
    }

    /// The splat still being collected, if any. A severe stall can freeze the node
    /// before the splat ends, so callers that must react fast can look here (or at the
    /// head line's verdict) instead of waiting for the event to complete.
    pub(crate) fn open_event(&self) -> Option<&Event> {
        self.open.as_ref().map(|o| &o.event)
    }

    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            self.done.push_back(open.event);
        }
    }

    fn open_new(&mut self, head: &Head, ts_usec: Option<u64>, body_done: bool) {
        self.close();
        self.open = Some(OpenSplat {
            event: Event {
                kind: head.kind,
                fields: head.fields.clone(),
                first_ts_usec: ts_usec,
                last_ts_usec: ts_usec,
                lines: 1,
            },
            body_done,
        });
    }

    fn apply_head(&mut self, head: Head, ts_usec: Option<u64>) -> LineVerdict {
        let open_kind = self.open.as_ref().map(|o| (o.event.kind, o.body_done));
        let open_oom_pid = self.open.as_ref().and_then(|o| o.event.fields.pid);
        let mut continuation = false;
        match head.role {
            Role::Single => self.done.push_back(Event {
                kind: head.kind,
                fields: head.fields.clone(),
                first_ts_usec: ts_usec,
                last_ts_usec: ts_usec,
                lines: 1,
            }),
            Role::Splat | Role::OomStart => self.open_new(&head, ts_usec, false),
            Role::Panic => {
                if open_kind.map(|(k, _)| k) == Some(head.kind) {
                    continuation = true;
                } else {
                    self.open_new(&head, ts_usec, false);
                }
            }
            Role::OopsJoin => {
                if open_kind == Some((EventKind::KernelOops, false)) {
                    continuation = true;
                } else {
                    self.open_new(&head, ts_usec, false);
                }
            }
            Role::OomDetail => {
                let pid_fits = open_oom_pid.is_none() || open_oom_pid == head.fields.pid;
                if open_kind == Some((EventKind::OomKill, false)) && pid_fits {
                    continuation = true;
                } else {
                    self.open_new(&head, ts_usec, false);
                }
            }
            Role::OomKilled => {
                if open_kind == Some((EventKind::OomKill, false)) {
                    continuation = true;
                    if let Some(open) = &mut self.open {
                        // The killed process is the truth; an older "Kill process"
                        // line may have named its parent.
                        open.event.fields.pid = head.fields.pid;
                        open.event.fields.comm.clone_from(&head.fields.comm);
                        open.body_done = true;
                    }
                } else {
                    self.open_new(&head, ts_usec, true);
                }
            }
            Role::OomReaped => {
                // Joins its OOM event when open; otherwise it is a late, orphaned
                // follow-up: flagged, but no new event and no closing of other splats.
                let joins = open_kind.map(|(k, _)| k) == Some(EventKind::OomKill)
                    && (open_oom_pid.is_none() || open_oom_pid == head.fields.pid);
                if !joins {
                    return LineVerdict {
                        kind: Some(head.kind),
                        continuation: true,
                        fields: head.fields,
                    };
                }
                continuation = true;
            }
        }
        if continuation && let Some(open) = &mut self.open {
            open.absorb(&head.fields, ts_usec);
        }
        LineVerdict {
            kind: Some(head.kind),
            continuation,
            fields: head.fields,
        }
    }
}

impl OpenSplat {
    fn absorb(&mut self, fields: &Fields, ts_usec: Option<u64>) {
        self.event.fields.absorb(fields);
        self.event.lines = self.event.lines.saturating_add(1);
        if ts_usec.is_some() {
            self.event.last_ts_usec = ts_usec;
            if self.event.first_ts_usec.is_none() {
                self.event.first_ts_usec = ts_usec;
            }
        }
    }
}

fn too_far_apart(last: Option<u64>, now: Option<u64>) -> bool {
    match (last, now) {
        // Time going backwards means a new boot or another log mixed in.
        (Some(last), Some(now)) => now < last || now - last > SPLAT_MAX_GAP_USEC,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------
// Head lines
// ---------------------------------------------------------------------------------

/// A head matcher of one message family.
type HeadFn = fn(&str) -> Option<Head>;

/// Every kernel head, with the bytes its messages can start with: kernel heads are
/// matched from the start of the record, so almost every line is turned away by its first
/// byte. A new family is one more line here.
const HEADS: &[(&[u8], HeadFn)] = &[
    (b"rIt", rcu_head),
    (b"I", hung_task_head),
    (b"F", hung_task_suppressed_head),
    (b"wWNB", lockup_head),
    (b"K", panic_head),
    (b"OMKo", oom_head),
    (b"nlsrpNEx", nfs_head),
    (b"niV", limits_head),
    (b"E", ext4_head),
    (b"AJj", jbd2_head),
    (b"X", xfs_head),
    (b"B", btrfs_head),
    (b"Bl", buffer_error_head),
    (b"UBkKISDIOW", oops_head),
    (b"msb", mmc_head),
    (b"suxt", usb_storage_head),
    (b"hrUVCtsmA", power_head),
    (b"u", netdev_head),
];

/// Heads with no fixed first byte: they start with a comm or a free word, and are looked
/// for where they can stand (a few dozen bytes in), then matched whole.
const HEADS_ANYWHERE: &[HeadFn] = &[
    oom_invoked_head,
    request_error_head,
    beyond_end_head,
    corrupted_page_table_head,
    x86_die_head,
];

/// For each first byte, the indexes into [`HEADS`] to try, in order.
fn dispatch() -> &'static [Vec<u8>; 256] {
    static TABLE: std::sync::OnceLock<[Vec<u8>; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: [Vec<u8>; 256] = std::array::from_fn(|_| Vec::new());
        for (i, (first, _)) in HEADS.iter().enumerate() {
            for &b in *first {
                t[usize::from(b)].push(i as u8);
            }
        }
        t
    })
}

fn detect_head(line: &str, source: Source) -> Option<Head> {
    let first = *line.as_bytes().first()?;
    for &i in &dispatch()[usize::from(first)] {
        if let Some(h) = (HEADS[usize::from(i)].1)(line) {
            return Some(h);
        }
    }
    for f in HEADS_ANYWHERE {
        if let Some(h) = f(line) {
            return Some(h);
        }
    }
    // containerd, kubelet and k3s wrap the reservation error in their own log syntax, so
    // it is searched for in the line; the kernel never prints it.
    if source == Source::AnyLog && line.contains("to reserve ") {
        return reserved_name_head(line);
    }
    // k3s's kubelet/etcd lines: saved logs only, never kernel records.
    if source == Source::AnyLog {
        return k3s_log_head(line);
    }
    None
}

/// `Kernel panic - not syncing: <reason>` (kernel/panic.c): joins an open splat of the
/// kind its reason names.
/// A reason no family claims is an oops's (`Fatal exception`, `Oops: Fatal exception in
/// interrupt`...).
fn panic_head(line: &str) -> Option<Head> {
    let reason = line.strip_prefix("Kernel panic - not syncing: ")?;
    let (kind, mut fields) = lockup_panic(reason)
        .or_else(|| oom_panic(reason))
        .or_else(|| fs_panic(reason))
        .unwrap_or_else(|| oops_panic(reason));
    fields.panic = Some(true);
    Head::new(kind, Role::Panic, fields)
}

// ---------------------------------------------------------------------------------
// Continuation lines
// ---------------------------------------------------------------------------------

/// `Some(fields)` when `line` has the shape of a follow-up of an open `kind` splat.
fn continuation_fields(kind: EventKind, open: &Fields, line: &str) -> Option<Fields> {
    let t = line.trim_start();
    if t.is_empty() {
        return None;
    }
    let specific = match kind {
        EventKind::RcuStall => rcu_continuation(t, open),
        EventKind::HungTask => hung_task_continuation(t),
        EventKind::SoftLockup => soft_lockup_continuation(t),
        EventKind::WorkqueueLockup => workqueue_continuation(t),
        EventKind::HardLockup => hard_lockup_continuation(t),
        EventKind::FsError | EventKind::FsReadonly => fs_continuation(t),
        EventKind::BlockIoError => block_continuation(t),
        EventKind::MmcError => mmc_continuation(t),
        EventKind::UsbStorageReset => usb_continuation(t),
        EventKind::KernelOops => oops_after_end(t),
        _ => None,
    };
    if specific.is_some() {
        return specific;
    }
    is_dump_line(t).then(Fields::default)
}

// ---------------------------------------------------------------------------------
// NFS server pairing
// ---------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------
// Small parsers
// ---------------------------------------------------------------------------------
