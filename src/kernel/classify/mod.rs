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
//! the first byte (kernel heads are anchored at the start of the message) and only two
//! rare substrings are searched anywhere in the line. Follow-up shapes are only tried
//! while a splat is open.
//!
//! Trust: the classifier judges text only. Kernel kinds should be acted on only for
//! lines the kernel wrote (`/dev/kmsg` facility 0, see `kmsg_record`), or a root user
//! could forge a "stall" with `echo > /dev/kmsg`.
//!
//! Severity: [`Event::severity`] gives a default reading. Notably a short expedited RCU
//! stall (the Raspberry Pi's routine ~21 jiffies during container start) is
//! [`Severity::Info`]: harmless alone, a problem only when it repeats or is long.

use std::collections::VecDeque;

use serde::Serialize;

/// A splat is printed in one burst, but the legacy console path prints from inside
/// printk, so on a 115200-baud serial console a 500-line OOM task table takes ~3.5 s.
/// Lines further apart than this do not belong to the same splat.
pub const SPLAT_MAX_GAP_USEC: u64 = 10_000_000;

/// An RCU stall with NMI backtraces from 64 CPUs is ~2,600 lines; an OOM task table on
/// a busy node a few hundred. Beyond this the splat is closed so one event can never
/// swallow an endless stream.
pub const SPLAT_MAX_LINES: u32 = 4096;

/// Bound on CPUs and pids kept per event (a 64-CPU stall lists at most 64 CPUs).
const MAX_LIST_LEN: usize = 64;

/// HZ to assume when the kernel config is unknown: CONFIG_HZ is 100..=1000, and the
/// smallest value never understates how long a stall lasted.
pub const FALLBACK_HZ: u32 = 100;

/// Expedited stalls shorter than this are routine on Raspberry Pi kernels during
/// container start (~21 jiffies, at most 0.21 s even at HZ=100; field notes), while a
/// normal RCU stall is only reported after 21 s (CONFIG_RCU_CPU_STALL_TIMEOUT).
pub const BRIEF_EXPEDITED_STALL_SECS: f64 = 1.0;

/// RPC programs whose "server X not responding" / "server X OK" lines concern an NFS
/// mount (names from `struct rpc_program` in fs/nfs, fs/lockd, net/sunrpc).
const NFS_RPC_PROGRAMS: &[&str] = &["nfs", "nfsacl", "lockd", "statd", "rpcbind", "portmap"];

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
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
}

impl EventKind {
    pub const ALL: [EventKind; 15] = [
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
    ];

    /// The snake_case name, as serialised (for metric labels).
    pub fn as_str(self) -> &'static str {
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
        }
    }
}

/// NFS mount semantics revealed by the "not responding" message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// `still trying`: a hard mount; callers sit in D state until the server returns.
    Hard,
    /// `timed out`: a soft mount; calls fail with EIO.
    Soft,
}

/// Everything extracted from a line or a whole splat. Unset fields are left out of JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Fields {
    /// RCU flavor: `rcu_preempt`, `rcu_sched`, `rcu_bh`, `rcu_tasks`, `rcu_tasks_trace`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// RCU: an expedited grace period stalled (`detected expedited stalls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expedited: Option<bool>,
    /// RCU: the stalled CPU reported itself (`self-detected stall`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_detected: Option<bool>,
    /// RCU: stall length, from `} N jiffies` or `t=N jiffies`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jiffies: Option<u64>,
    /// RCU: the CPU that noticed the stall (`detected by N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_by: Option<u32>,
    /// RCU: `kthread starved for N jiffies`; the grace-period kthread got no CPU, the
    /// kernel warns that OOM is then expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kthread_starved_jiffies: Option<u64>,
    /// RCU / workqueue: CPUs involved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u32>,
    /// RCU: pids of blocked tasks (`P1234`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// Lockups: the stuck CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Hung task / soft lockup / OOM victim command name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Hung task: blocked for more than; lockups: stuck for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// The kernel panicked for this (`Kernel panic - not syncing: ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panic: Option<bool>,
    /// NFS: RPC program that reported (`nfs`, `lockd`, `statd`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_program: Option<String>,
    /// NFS: server host name or address as the kernel printed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_kind: Option<MountKind>,
    /// NFS: state-manager stage that failed (`lease expired`, `reclaim reboot`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// NFS/RPC: error number as printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<i32>,
    /// NFS: `lost N locks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_locks: Option<u32>,
    /// OOM: memory cgroup of the victim (`task_memcg=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// OOM: memory cgroup whose limit was hit (`oom_memcg=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_cgroup: Option<String>,
    /// OOM: `CONSTRAINT_NONE`, `CONSTRAINT_MEMCG`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// OOM: a cgroup limit, not the whole machine, ran out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcg: Option<bool>,
    /// containerd: the reserved sandbox name `<pod>_<namespace>_<uid>_<attempt>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_name: Option<String>,
    /// containerd: the reserved container name `<container>_<pod>_<ns>_<uid>_<attempt>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// containerd: id of the sandbox/container holding the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_id: Option<String>,
    /// containerd: reported by `failed to recover state:`, i.e. fatal at containerd
    /// start (the CRI never comes up), not a runtime RunPodSandbox retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recover_state: Option<bool>,
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
            recover_state
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
    pub kind: Option<EventKind>,
    /// The line belongs to a splat whose head came earlier.
    pub continuation: bool,
    /// What this line alone told (not the whole splat; see [`Event`]).
    #[serde(flatten)]
    pub fields: Fields,
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
pub struct Event {
    pub kind: EventKind,
    #[serde(flatten)]
    pub fields: Fields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_ts_usec: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ts_usec: Option<u64>,
    /// Input lines that made up the event.
    pub lines: u32,
}

/// Default reading of how bad an event is; policy may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
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
    pub fn stall_secs(&self, hz: u32) -> Option<f64> {
        self.fields.jiffies.map(|j| jiffies_to_secs(j, hz))
    }

    /// Default severity; `hz` converts stall jiffies (use [`FALLBACK_HZ`] if unknown).
    pub fn severity(&self, hz: u32) -> Severity {
        if self.fields.panic == Some(true) {
            return Severity::Critical;
        }
        match self.kind {
            EventKind::RcuStall => {
                if self.fields.kthread_starved_jiffies.is_some() {
                    Severity::Critical
                } else if self.fields.expedited == Some(true) {
                    match self.stall_secs(hz) {
                        Some(s) if s < BRIEF_EXPEDITED_STALL_SECS => Severity::Info,
                        _ => Severity::Warning,
                    }
                } else {
                    Severity::Critical
                }
            }
            EventKind::SoftLockup | EventKind::HardLockup => Severity::Critical,
            EventKind::NfsRecovered | EventKind::ContainerNameReserved => Severity::Info,
            EventKind::HungTask
            | EventKind::HungTaskReportsSuppressed
            | EventKind::WorkqueueLockup
            | EventKind::NfsNotResponding
            | EventKind::NfsStateRecoveryFailed
            | EventKind::NfsLockReclaimFailed
            | EventKind::NfsLockdError
            | EventKind::NfsRpcTransportError
            | EventKind::OomKill
            | EventKind::SandboxNameReserved => Severity::Warning,
        }
    }
}

/// Converts jiffies to seconds. `hz` of 0 is treated as 1 (never divides by zero).
pub fn jiffies_to_secs(jiffies: u64, hz: u32) -> f64 {
    jiffies as f64 / f64::from(hz.max(1))
}

/// Reads `CONFIG_HZ=250` from kernel config text (`/boot/config-*`, or
/// `/proc/config.gz` after the caller gunzips it).
pub fn hz_from_kconfig(text: &str) -> Option<u32> {
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
    /// OOM only: the `Killed process` line was seen; before it every line belongs.
    oom_killed: bool,
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

impl Classifier {
    pub fn new() -> Classifier {
        Classifier::default()
    }

    /// Classifies one line of message text. `ts_usec` is the kernel timestamp when the
    /// line had one; it only serves to split splats that are far apart in time.
    pub fn feed(&mut self, text: &str, ts_usec: Option<u64>) -> LineVerdict {
        let line = text.trim_end_matches(['\n', '\r']);
        if let Some(open) = &self.open
            && too_far_apart(open.event.last_ts_usec, ts_usec)
        {
            self.close();
        }
        if let Some(head) = detect_head(line) {
            return self.apply_head(head, ts_usec);
        }
        let Some(open) = &mut self.open else {
            return LineVerdict::none();
        };
        if open.event.lines >= SPLAT_MAX_LINES {
            self.close();
            return LineVerdict::none();
        }
        let kind = open.event.kind;
        let fields = if kind == EventKind::OomKill && !open.oom_killed {
            Some(oom_dump_fields(line))
        } else {
            continuation_fields(kind, &open.event.fields, line)
        };
        match fields {
            Some(fields) => {
                open.absorb(&fields, ts_usec);
                LineVerdict {
                    kind: Some(kind),
                    continuation: true,
                    fields,
                }
            }
            None => {
                self.close();
                LineVerdict::none()
            }
        }
    }

    /// Ends the input: the open splat, if any, becomes a complete event.
    pub fn flush(&mut self) {
        self.close();
    }

    /// Takes the oldest complete event. Call after every [`feed`](Self::feed) (a line
    /// can complete up to two events) and after [`flush`](Self::flush).
    pub fn pop_event(&mut self) -> Option<Event> {
        self.done.pop_front()
    }

    /// The splat still being collected, if any. A severe stall can freeze the node
    /// before the splat ends, so callers that must react fast can look here (or at the
    /// head line's verdict) instead of waiting for the event to complete.
    pub fn open_event(&self) -> Option<&Event> {
        self.open.as_ref().map(|o| &o.event)
    }

    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            self.done.push_back(open.event);
        }
    }

    fn open_new(&mut self, head: &Head, ts_usec: Option<u64>, oom_killed: bool) {
        self.close();
        self.open = Some(OpenSplat {
            event: Event {
                kind: head.kind,
                fields: head.fields.clone(),
                first_ts_usec: ts_usec,
                last_ts_usec: ts_usec,
                lines: 1,
            },
            oom_killed,
        });
    }

    fn apply_head(&mut self, head: Head, ts_usec: Option<u64>) -> LineVerdict {
        let open_kind = self.open.as_ref().map(|o| (o.event.kind, o.oom_killed));
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
                        open.oom_killed = true;
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

fn detect_head(line: &str) -> Option<Head> {
    let first = *line.as_bytes().first()?;
    let anchored = match first {
        b'r' => match line.strip_prefix("rcu: ") {
            Some(rest) => rcu_head(rest),
            None => nfs_rpc_server(line),
        },
        b'I' => rcu_head(line).or_else(|| hung_task_head(line)),
        b'w' | b'W' | b'B' => lockup_head(line),
        b'N' => lockup_head(line).or_else(|| nfs_client_head(line)),
        b'K' => panic_head(line).or_else(|| oom_killed_head(line, None)),
        b'O' => line
            .strip_prefix("Out of memory")
            .and_then(|rest| oom_victim_head(rest, false)),
        b'M' => line
            .strip_prefix("Memory cgroup out of memory")
            .and_then(|rest| oom_victim_head(rest, true)),
        b'o' => oom_small_head(line),
        b'F' => line
            .starts_with("Future hung task reports are suppressed")
            .then(|| Head {
                kind: EventKind::HungTaskReportsSuppressed,
                role: Role::Single,
                fields: Fields::default(),
            }),
        b'n' | b'l' | b's' | b'p' | b'_' | b'x' | b'E' => nfs_rpc_server(line)
            .or_else(|| lockd_head(line))
            .or_else(|| nfs_client_head(line))
            .or_else(|| rpc_transport_head(line)),
        _ => None,
    };
    if anchored.is_some() {
        return anchored;
    }
    // The only heads that do not start the message: the OOM report names the
    // allocating task first, and containerd/kubelet wrap their errors in log syntax.
    if line.contains(" invoked oom-killer:") {
        return Head::new(EventKind::OomKill, Role::OomStart, Fields::default());
    }
    if line.contains("to reserve ") {
        return reserved_name_head(line);
    }
    None
}

/// `INFO: <flavor> detected stalls on CPUs/tasks: ...` and its relatives; `s` has any
/// `rcu: ` prefix removed.
fn rcu_head(s: &str) -> Option<Head> {
    let rest = s.strip_prefix("INFO: ")?;
    let (flavor, tail) = rest.split_once(' ')?;
    if !flavor.starts_with("rcu") {
        return None;
    }
    let mut f = Fields {
        flavor: Some(flavor.to_string()),
        expedited: Some(false),
        self_detected: Some(false),
        ..Fields::default()
    };
    if let Some(t) = tail.strip_prefix("self-detected stall on CPU") {
        // Old kernels: `self-detected stall on CPU { 2}  (t=5250 jiffies g=...)`.
        f.self_detected = Some(true);
        braces_into(t, &mut f);
        f.jiffies = t_equals_jiffies(t);
    } else if let Some(t) = tail.strip_prefix("detected expedited stalls on ") {
        // `{ 3-...D P1234 } 21 jiffies s: 1189 root: 0x1/.`
        f.expedited = Some(true);
        if let Some(after) = braces_into(t, &mut f) {
            f.jiffies = leading_u64(after.trim_start())
                .filter(|(_, r)| r.starts_with(" jiffies"))
                .map(|(n, _)| n);
        }
    } else if let Some(t) = tail.strip_prefix("detected stalls") {
        // Modern: nothing more on this line. Old: `{ 1} (detected by 0, t=2102 jiffies, ...)`.
        braces_into(t, &mut f);
        f.jiffies = t_equals_jiffies(t);
        f.detected_by = detected_by(t);
    } else if let Some(t) = tail.strip_prefix("detected stall on CPU") {
        // 2.6-era: `INFO: rcu_sched_state detected stall on CPU 1 (t=15000 jiffies)`.
        if let Some((cpu, _)) = leading_u32(t.trim_start()) {
            push_unique(&mut f.cpus, cpu);
        }
        f.jiffies = t_equals_jiffies(t);
    } else {
        return None;
    }
    Head::new(EventKind::RcuStall, Role::Splat, f)
}

/// Parses `{ 3-...D P1234 2 }` into CPUs and pids; returns the text after `}`.
fn braces_into<'a>(s: &'a str, f: &mut Fields) -> Option<&'a str> {
    let open = s.find('{')?;
    let close = open + s[open..].find('}')?;
    for token in s[open + 1..close].split_ascii_whitespace() {
        if let Some(p) = token.strip_prefix('P') {
            if let Some((pid, _)) = leading_u32(p) {
                push_unique(&mut f.pids, pid);
            }
        } else if let Some((cpu, rest)) = leading_u32(token)
            && (rest.is_empty() || rest.starts_with('-'))
        {
            push_unique(&mut f.cpus, cpu);
        }
    }
    Some(&s[close + 1..])
}

/// `t=N jiffies` where `t=` starts a word (`(t=5250 jiffies`, `, t=2102 jiffies`).
fn t_equals_jiffies(s: &str) -> Option<u64> {
    s.match_indices("t=").find_map(|(i, _)| {
        let word_start = i == 0 || matches!(s.as_bytes()[i - 1], b'(' | b' ' | b'\t' | b',');
        if !word_start {
            return None;
        }
        let (n, rest) = leading_u64(&s[i + 2..])?;
        rest.starts_with(" jiffies").then_some(n)
    })
}

fn detected_by(s: &str) -> Option<u32> {
    let i = s.find("detected by ")?;
    leading_u32(&s[i + "detected by ".len()..]).map(|(n, _)| n)
}

/// `INFO: task <comm>:<pid> blocked for more than <N> seconds.`; the comm may contain
/// spaces and colons, so the pid is the number after the last colon.
fn hung_task_head(line: &str) -> Option<Head> {
    const BLOCKED: &str = " blocked for more than ";
    let rest = line.strip_prefix("INFO: task ")?;
    let at = rest.find(BLOCKED)?;
    let who = &rest[..at];
    let colon = who.rfind(':')?;
    let pid = all_digits_u32(&who[colon + 1..])?;
    let fields = Fields {
        comm: Some(who[..colon].to_string()),
        pid: Some(pid),
        seconds: leading_u64(&rest[at + BLOCKED.len()..]).map(|(n, _)| n),
        ..Fields::default()
    };
    Head::new(EventKind::HungTask, Role::Splat, fields)
}

/// Soft, hard and workqueue lockups, with or without the `watchdog: ` /
/// `NMI watchdog: ` prefix.
fn lockup_head(line: &str) -> Option<Head> {
    let s = line
        .strip_prefix("watchdog: ")
        .or_else(|| line.strip_prefix("NMI watchdog: "))
        .unwrap_or(line);
    if let Some(t) = s.strip_prefix("BUG: soft lockup") {
        // `BUG: soft lockup - CPU#3 stuck for 23s! [comm:pid]`, 2.6-era
        // `BUG: soft lockup detected on CPU#1!`.
        let mut f = Fields::default();
        if let Some(i) = t.find("CPU#") {
            f.cpu = leading_u32(&t[i + 4..]).map(|(n, _)| n);
        }
        if let Some(i) = t.find("stuck for ") {
            f.seconds = leading_u64(&t[i + 10..])
                .filter(|(_, r)| r.starts_with('s'))
                .map(|(n, _)| n);
        }
        if let Some(open) = t.find("! [")
            && let Some(close) = t.rfind(']')
            && close > open + 3
        {
            let task = &t[open + 3..close];
            if let Some(colon) = task.rfind(':')
                && let Some(pid) = all_digits_u32(&task[colon + 1..])
            {
                f.comm = Some(task[..colon].to_string());
                f.pid = Some(pid);
            }
        }
        return Head::new(EventKind::SoftLockup, Role::Splat, f);
    }
    if let Some(t) = s.strip_prefix("BUG: workqueue lockup - ") {
        let mut f = Fields::default();
        if let Some(i) = t.find("cpus=") {
            let list = t[i + 5..].split(' ').next().unwrap_or("");
            f.cpus = parse_cpu_list(list);
        }
        if let Some(i) = t.find("stuck for ") {
            f.seconds = leading_u64(&t[i + 10..]).map(|(n, _)| n);
        }
        return Head::new(EventKind::WorkqueueLockup, Role::Splat, f);
    }
    if s.contains("detected hard LOCKUP") || s.contains("BUG: hard lockup - CPU#") {
        return Head::new(EventKind::HardLockup, Role::Splat, hard_lockup_fields(s));
    }
    None
}

/// `... on cpu 3` (the locked-up CPU, not a `CPU2:` reporter prefix) or `CPU#1`.
fn hard_lockup_fields(s: &str) -> Fields {
    let cpu = s
        .rfind("on cpu ")
        .and_then(|i| leading_u32(&s[i + 7..]))
        .or_else(|| s.find("CPU#").and_then(|i| leading_u32(&s[i + 4..])))
        .map(|(n, _)| n);
    Fields {
        cpu,
        ..Fields::default()
    }
}

fn panic_head(line: &str) -> Option<Head> {
    let reason = line.strip_prefix("Kernel panic - not syncing: ")?;
    let panic = |kind, mut fields: Fields| {
        fields.panic = Some(true);
        Head::new(kind, Role::Panic, fields)
    };
    if reason.starts_with("softlockup: hung tasks") {
        panic(EventKind::SoftLockup, Fields::default())
    } else if reason.starts_with("Hard LOCKUP") || reason.contains("detected hard LOCKUP") {
        panic(EventKind::HardLockup, hard_lockup_fields(reason))
    } else if reason.starts_with("hung_task: blocked tasks") {
        panic(EventKind::HungTask, Fields::default())
    } else if reason.starts_with("RCU Stall") {
        panic(EventKind::RcuStall, Fields::default())
    } else {
        None
    }
}

/// After `Out of memory` / `Memory cgroup out of memory`: `: Killed process N (x) ...`,
/// `(oom_kill_allocating_task): Killed process ...`, or old `: Kill process N (x) score`.
fn oom_victim_head(rest: &str, memcg: bool) -> Option<Head> {
    if let Some(i) = rest.find(": Killed process ") {
        return oom_killed_head(&rest[i + 2..], Some(memcg));
    }
    let i = rest.find(": Kill process ")?;
    let (pid, comm) = pid_and_comm(&rest[i + ": Kill process ".len()..])?;
    let fields = Fields {
        pid: Some(pid),
        comm: Some(comm),
        memcg: Some(memcg),
        ..Fields::default()
    };
    Head::new(EventKind::OomKill, Role::OomDetail, fields)
}

/// `Killed process 1234 (prometheus) total-vm:...`; `memcg` is `None` when the line
/// alone does not say.
fn oom_killed_head(s: &str, memcg: Option<bool>) -> Option<Head> {
    let (pid, comm) = pid_and_comm(s.strip_prefix("Killed process ")?)?;
    let fields = Fields {
        pid: Some(pid),
        comm: Some(comm),
        memcg,
        ..Fields::default()
    };
    Head::new(EventKind::OomKill, Role::OomKilled, fields)
}

/// `1234 (comm) rest`; the comm may itself contain parentheses (`(sd-pam)`).
fn pid_and_comm(s: &str) -> Option<(u32, String)> {
    let (pid, rest) = leading_u32(s)?;
    let rest = rest.strip_prefix(" (")?;
    let end = [") total-vm:", ") score ", "), now "]
        .iter()
        .find_map(|m| rest.find(m))
        .or_else(|| rest.rfind(')'))?;
    Some((pid, rest[..end].to_string()))
}

fn oom_small_head(line: &str) -> Option<Head> {
    if let Some(kv) = line.strip_prefix("oom-kill:") {
        let mut f = Fields::default();
        for pair in kv.split(',') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            match key {
                "constraint" => {
                    f.memcg = Some(value == "CONSTRAINT_MEMCG");
                    f.constraint = Some(value.to_string());
                }
                "oom_memcg" => f.oom_cgroup = Some(value.to_string()),
                "task_memcg" => f.cgroup = Some(value.to_string()),
                "task" => f.comm = Some(value.to_string()),
                "pid" => f.pid = all_digits_u32(value),
                _ => {}
            }
        }
        return Head::new(EventKind::OomKill, Role::OomDetail, f);
    }
    let rest = line.strip_prefix("oom_reaper: reaped process ")?;
    let (pid, comm) = pid_and_comm(rest)?;
    let fields = Fields {
        pid: Some(pid),
        comm: Some(comm),
        ..Fields::default()
    };
    Head::new(EventKind::OomKill, Role::OomReaped, fields)
}

/// Inside an OOM report before the kill: every line belongs; pick up the cgroup from
/// the old `Task in /a killed as a result of limit of /b` line.
fn oom_dump_fields(line: &str) -> Fields {
    let mut f = Fields::default();
    if let Some(rest) = line.trim_start().strip_prefix("Task in ")
        && let Some((task, limit)) = rest.split_once(" killed as a result of limit of ")
    {
        f.cgroup = Some(task.to_string());
        f.oom_cgroup = Some(limit.trim_end().to_string());
    }
    f
}

/// `<program>: server <host> not responding, still trying|timed out` / `... OK`.
fn nfs_rpc_server(line: &str) -> Option<Head> {
    let (program, rest) = line.split_once(": server ")?;
    if !NFS_RPC_PROGRAMS.contains(&program) {
        return None;
    }
    let (server, tail) = rest.split_once(' ')?;
    let mut f = Fields {
        rpc_program: Some(program.to_string()),
        server: Some(server.to_string()),
        ..Fields::default()
    };
    let kind = if tail == "OK" {
        EventKind::NfsRecovered
    } else if let Some(how) = tail.strip_prefix("not responding") {
        f.mount_kind = if how.contains("still trying") {
            Some(MountKind::Hard)
        } else if how.contains("timed out") {
            Some(MountKind::Soft)
        } else {
            None
        };
        EventKind::NfsNotResponding
    } else {
        return None;
    };
    Head::new(kind, Role::Single, f)
}

fn lockd_head(line: &str) -> Option<Head> {
    let rest = line.strip_prefix("lockd: ")?;
    let host = rest
        .strip_prefix("cannot monitor ")
        .or_else(|| rest.strip_prefix("failed to monitor "))?;
    let fields = Fields {
        rpc_program: Some("lockd".to_string()),
        server: Some(host.trim_end().to_string()),
        ..Fields::default()
    };
    Head::new(EventKind::NfsLockdError, Role::Single, fields)
}

/// NFSv4 client state recovery: state manager failures and lost locks.
fn nfs_client_head(line: &str) -> Option<Head> {
    const ON_SERVER: &str = " failed on NFSv4 server ";
    let s = line.strip_prefix("NFS: ").unwrap_or(line);
    if s.ends_with("Lock reclaim failed!") && s.contains("nfs4_reclaim_open_state") {
        return Head::new(
            EventKind::NfsLockReclaimFailed,
            Role::Single,
            Fields::default(),
        );
    }
    // `NFS: state manager: lease expired failed on NFSv4 server H with error 110`;
    // 2.6-era: `Error: state manager failed on NFSv4 server H with error 5`.
    let sm = s
        .strip_prefix("state manager")
        .or_else(|| s.strip_prefix("Error: state manager"));
    if let Some(rest) = sm
        && let Some(at) = rest.find(ON_SERVER)
    {
        let stage = rest[..at].strip_prefix(": ").filter(|st| !st.is_empty());
        let after = &rest[at + ON_SERVER.len()..];
        let (server, tail) = after.split_once(' ').unwrap_or((after, ""));
        let error = tail
            .strip_prefix("with error ")
            .and_then(|e| e.trim_end().parse::<i32>().ok());
        let fields = Fields {
            stage: stage.map(str::to_string),
            server: Some(server.to_string()),
            error,
            ..Fields::default()
        };
        return Head::new(EventKind::NfsStateRecoveryFailed, Role::Single, fields);
    }
    // Since 6.x: `NFS: nas.local: lost 3 locks`.
    if line.starts_with("NFS: ")
        && let Some(rest) = s.strip_suffix(" locks")
        && let Some((server, n)) = rest.rsplit_once(": lost ")
    {
        let fields = Fields {
            server: Some(server.to_string()),
            lost_locks: all_digits_u32(n),
            ..Fields::default()
        };
        return Head::new(EventKind::NfsLockReclaimFailed, Role::Single, fields);
    }
    None
}

/// `xs_tcp_setup_socket: connect returned unhandled error -107` (sunrpc xprtsock).
fn rpc_transport_head(line: &str) -> Option<Head> {
    const MARK: &str = ": connect returned unhandled error ";
    if !line.starts_with("xs_") {
        return None;
    }
    let at = line.find(MARK)?;
    let fields = Fields {
        error: line[at + MARK.len()..].trim_end().parse::<i32>().ok(),
        ..Fields::default()
    };
    Head::new(EventKind::NfsRpcTransportError, Role::Single, fields)
}

/// containerd/kubelet/k3s: `failed to reserve sandbox name "a_b_c_0": name "a_b_c_0"
/// is reserved for "<id>"`, with the quotes possibly escaped once or twice.
fn reserved_name_head(line: &str) -> Option<Head> {
    const SANDBOX: &str = "failed to reserve sandbox name";
    const CONTAINER: &str = "failed to reserve container name";
    let (kind, at, len) = if let Some(i) = line.find(SANDBOX) {
        (EventKind::SandboxNameReserved, i, SANDBOX.len())
    } else if let Some(i) = line.find(CONTAINER) {
        (EventKind::ContainerNameReserved, i, CONTAINER.len())
    } else {
        return None;
    };
    let after = line[at + len..].trim_start_matches([' ', '\\', '"']);
    let name_len = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .unwrap_or(after.len());
    let name = &after[..name_len];
    if name.is_empty() {
        return None;
    }
    let mut f = Fields {
        recover_state: Some(line[..at].contains("failed to recover state")),
        ..Fields::default()
    };
    if let Some(i) = after[name_len..].find("is reserved for") {
        let id =
            after[name_len + i + "is reserved for".len()..].trim_start_matches([' ', '\\', '"']);
        let id_len = id
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(id.len());
        if id_len > 0 {
            f.holder_id = Some(id[..id_len].to_string());
        }
    }
    let parts: Vec<&str> = name.split('_').collect();
    if kind == EventKind::SandboxNameReserved {
        f.sandbox_name = Some(name.to_string());
        if let [pod, ns, uid, attempt] = parts[..] {
            set_pod_parts(&mut f, pod, ns, uid, attempt);
        }
    } else {
        f.container_name = Some(name.to_string());
        if let [container, pod, ns, uid, attempt] = parts[..] {
            f.container = Some(container.to_string());
            set_pod_parts(&mut f, pod, ns, uid, attempt);
        }
    }
    Head::new(kind, Role::Single, f)
}

fn set_pod_parts(f: &mut Fields, pod: &str, ns: &str, uid: &str, attempt: &str) {
    f.pod = Some(pod.to_string());
    f.namespace = Some(ns.to_string());
    f.pod_uid = Some(uid.to_string());
    f.attempt = all_digits_u32(attempt);
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
        _ => None,
    };
    if specific.is_some() {
        return specific;
    }
    is_dump_line(t).then(Fields::default)
}

fn rcu_continuation(t: &str, open: &Fields) -> Option<Fields> {
    // Every line of a modern stall report carries the `rcu: ` prefix; nothing else
    // with that prefix is printed after boot.
    let (detail, prefixed) = match t.strip_prefix("rcu:") {
        Some(rest) => (rest.trim_start(), true),
        None => (t, false),
    };
    let mut f = Fields::default();
    let mut known = prefixed;

    if let Some(cpu) = per_cpu_line(detail) {
        push_unique(&mut f.cpus, cpu);
        known = true;
    }
    if detail.starts_with("(detected by") || detail.starts_with("(t=") {
        f.detected_by = detected_by(detail);
        f.jiffies = t_equals_jiffies(detail);
        known = true;
    }
    if let Some(i) = detail.find("kthread starved for ") {
        f.kthread_starved_jiffies = leading_u64(&detail[i + 20..]).map(|(n, _)| n);
        known = true;
    }
    if detail.starts_with("Tasks blocked on") {
        if let Some((_, list)) = detail.split_once("): ") {
            for token in list.split_ascii_whitespace() {
                if let Some((pid, _)) = token.strip_prefix('P').and_then(leading_u32) {
                    push_unique(&mut f.pids, pid);
                }
            }
        }
        known = true;
    }
    // rcu_tasks_trace: `P1234: .I` / `P1234: .... nesting: ...`.
    if let Some(p) = detail.strip_prefix('P')
        && let Some((pid, rest)) = leading_u32(p)
        && rest.starts_with(": ")
    {
        push_unique(&mut f.pids, pid);
        known = true;
    }
    // rcu_tasks holdouts: `00000000769f52cd: .N nvcsw: 2/2 holdout: 1 idle_cpu: -1/64`,
    // each followed by that task's `task:` line, whose pid is the stalled task.
    if detail.contains(" nvcsw: ") {
        known = true;
    }
    let tasks_flavor = open
        .flavor
        .as_deref()
        .is_some_and(|fl| fl.starts_with("rcu_tasks"));
    if tasks_flavor && detail.starts_with("task:") {
        if let Some(pid) = task_line_pid(detail) {
            push_unique(&mut f.pids, pid);
        }
        known = true;
    }
    const RCU_DETAIL_PREFIXES: &[&str] = &[
        "blocking rcu_node",
        "All QSes seen",
        "INFO: Stall ended before state dump start",
        "Unless ",
        "RCU grace-period kthread stack dump",
        "Stack dump where RCU",
        "Possible timer handling issue",
        "rcu_tasks_wait_gp:",
    ];
    if RCU_DETAIL_PREFIXES.iter().any(|p| detail.starts_with(p))
        || detail.contains("kthread timer wakeup didn't happen")
    {
        known = true;
    }
    if !known && !is_dump_line(t) {
        return None;
    }
    Some(f)
}

/// `2-...!: (1 GPs behind) idle=...`, `3-....: (5249 ticks this GP)`, old
/// `1: (0 ticks this GP)`: returns the CPU number.
fn per_cpu_line(s: &str) -> Option<u32> {
    let (cpu, rest) = leading_u32(s)?;
    let rest = match rest.strip_prefix('-') {
        // The flags are 4-6 non-space characters: `....`, `...!`, `.N..`, `...D`.
        Some(flags) => {
            let colon = flags.find(':')?;
            if colon > 8 || flags[..colon].contains(' ') {
                return None;
            }
            &flags[colon..]
        }
        None => rest,
    };
    rest.starts_with(": (").then_some(cpu)
}

/// `task:rcu_tasks state:R ... pid:48300 ...` and old `pid: 2133`.
fn task_line_pid(s: &str) -> Option<u32> {
    let i = s.find(" pid:")?;
    leading_u32(s[i + 5..].trim_start()).map(|(n, _)| n)
}

fn hung_task_continuation(t: &str) -> Option<Fields> {
    const PREFIXES: &[&str] = &[
        "Not tainted",
        "Tainted:",
        "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\"",
        // 6.14+: `INFO: task X:1 is blocked on a mutex likely owned by task Y:2.`
        "INFO: task ",
        "INFO: lockdep is turned off",
    ];
    PREFIXES
        .iter()
        .any(|p| t.starts_with(p))
        .then(Fields::default)
}

/// Pre-5.x `sched_show_task` line: `mkdir           D    0  1234   1000 0x00000000`,
/// `kworker/3:1     R  running task        0   123      2 0x00000008`.
fn is_old_task_state_line(t: &str) -> bool {
    let mut tokens = t.split_ascii_whitespace();
    let (Some(_comm), Some(state)) = (tokens.next(), tokens.next()) else {
        return false;
    };
    let state_ok = state.len() == 1 && "RSDTtXZPIKN".contains(state);
    let mut numbers = 0;
    for tok in tokens {
        if tok == "running" || tok == "task" {
            continue;
        }
        let hex = tok.strip_prefix("0x").unwrap_or(tok);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        numbers += 1;
    }
    state_ok && numbers >= 3
}

fn soft_lockup_continuation(t: &str) -> Option<Fields> {
    // 6.x adds CPU utilisation during the lockup:
    // `CPU#3 Utilization every 4s during lockup:` / `#1: 100% system, 0% softirq, ...`.
    let utilisation = (t.starts_with("CPU#") && t.contains("Utilization every"))
        || (t.starts_with('#') && t.contains("% system"));
    utilisation.then(Fields::default)
}

fn workqueue_continuation(t: &str) -> Option<Fields> {
    const PREFIXES: &[&str] = &[
        "Showing busy workqueues and worker pools:",
        "Showing backtraces of running workers",
        "workqueue ",
        "pwq ",
        "pending:",
        "in-flight:",
        "inactive:",
        "delayed:",
        "canceling:",
        "barriers:",
        "pool ",
    ];
    PREFIXES
        .iter()
        .any(|p| t.starts_with(p))
        .then(Fields::default)
}

/// Lines any kernel splat may carry: stack traces, register dumps, NMI backtraces,
/// task dumps, lockdep listings. `t` has leading whitespace removed.
fn is_dump_line(t: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "Call Trace:",
        "Call trace:",
        "<TASK>",
        "</TASK>",
        "<IRQ>",
        "</IRQ>",
        "<NMI>",
        "</NMI>",
        "<EOI>",
        "CPU: ",
        "Hardware name:",
        "Workqueue:",
        "Modules linked in:",
        "RIP: ",
        "EIP: ",
        "Code: ",
        "pstate: ",
        "pc : ",
        "lr : ",
        "PC is at ",
        "LR is at ",
        "Backtrace:",
        "Exception stack",
        "Function entered at",
        "Stack:",
        "Sending NMI from CPU",
        "NMI backtrace for cpu",
        "Task dump for CPU",
        "task:",
        "Showing all locks held",
        "irq event stamp:",
        "hardirqs last",
        "softirqs last",
        "---[ end",
        "Kernel Offset:",
        "CPU features:",
        "Memory limit:",
        "Flags: ",
        "Control: ",
        "INFO: lockdep is turned off",
    ];
    if PREFIXES.iter().any(|p| t.starts_with(p)) {
        return true;
    }
    is_stack_frame(t)
        || is_register_line(t)
        || is_hex_words(t)
        || is_lock_line(t)
        || is_old_task_state_line(t)
}

/// `? __schedule+0x2e0/0x8a0`, `foo+0x24/0x40 [nfs]`, `[<ffffffff8109>] foo+0x..`,
/// arm32 `(schedule) from [<c010a1f4>] ...`.
fn is_stack_frame(t: &str) -> bool {
    let t = t.strip_prefix("? ").unwrap_or(t);
    if t.starts_with("[<") {
        return true;
    }
    if t.starts_with('(') && t.contains(") from [<") {
        return true;
    }
    let first = t.split_ascii_whitespace().next().unwrap_or("");
    // A return address with no symbol: ` 0xffff00004fb5e100`.
    let bare_address = first
        .strip_prefix("0x")
        .is_some_and(|h| h.len() >= 8 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    bare_address || (first.contains("+0x") && first.contains("/0x"))
}

/// `RAX: 0000000000000000 RBX: ...`, `x29: ffff80000a0f3d80 x28: ...`, `sp : ffff...`,
/// `r10: c1234567  r9 : ...`, `RSP: 0018:ffffc900...`.
fn is_register_line(t: &str) -> bool {
    let Some(colon) = t.as_bytes().iter().take(6).position(|&b| b == b':') else {
        return false;
    };
    let name = t[..colon].trim_end();
    let name_ok =
        !name.is_empty() && name.len() <= 4 && name.bytes().all(|b| b.is_ascii_alphanumeric());
    let value = t[colon + 1..].trim_start();
    let hex = value.bytes().take_while(u8::is_ascii_hexdigit).count();
    name_ok && hex >= 4
}

/// Raw stack words: `ffff88003fc13680 0000000000000000 ffffffff81234567`, arm32
/// `1f20: 00000000 c1201f6c ...`.
fn is_hex_words(t: &str) -> bool {
    let mut count = 0;
    for tok in t.split_ascii_whitespace() {
        let tok = tok.strip_suffix(':').unwrap_or(tok);
        if tok.len() < 4 || !tok.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        count += 1;
    }
    count >= 3
}

/// lockdep: `2 locks held by mkdir/1234:` / `#0: ffff... (&sb->s_type->i_mutex_key){++++}`.
fn is_lock_line(t: &str) -> bool {
    (t.starts_with('#') && t.as_bytes().get(1).is_some_and(u8::is_ascii_digit))
        || t.contains(" lock held by ")
        || t.contains(" locks held by ")
}

// ---------------------------------------------------------------------------------
// NFS server pairing
// ---------------------------------------------------------------------------------

/// A node mounts a handful of NFS servers; the bound keeps memory fixed whatever the
/// log says. Reports about further servers are dropped while the table is full.
const MAX_TRACKED_NFS_SERVERS: usize = 64;

/// An RPC server that said "not responding" and has not said "OK" since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsServerDown {
    /// `nfs`, `lockd`, `statd`...: each RPC client reports (and recovers) on its own.
    pub rpc_program: String,
    pub server: String,
    /// The last reported mount semantics, if any report said.
    pub mount_kind: Option<MountKind>,
    /// Kernel time of the first "not responding" report.
    pub since_ts_usec: Option<u64>,
    /// How many "not responding" reports arrived since.
    pub reports: u32,
}

/// Pairs "not responding" with "OK" per (RPC program, server): a server that came
/// back is not a standing problem.
#[derive(Debug, Clone, Default)]
pub struct NfsServerTracker {
    down: Vec<NfsServerDown>,
}

impl NfsServerTracker {
    pub fn new() -> NfsServerTracker {
        NfsServerTracker::default()
    }

    /// Takes any event; only `nfs_not_responding` and `nfs_recovered` change state.
    pub fn apply(&mut self, event: &Event) {
        let (Some(program), Some(server)) = (&event.fields.rpc_program, &event.fields.server)
        else {
            return;
        };
        let at = self
            .down
            .iter()
            .position(|d| &d.rpc_program == program && &d.server == server);
        match (event.kind, at) {
            (EventKind::NfsNotResponding, Some(i)) => {
                let d = &mut self.down[i];
                d.reports = d.reports.saturating_add(1);
                if event.fields.mount_kind.is_some() {
                    d.mount_kind = event.fields.mount_kind;
                }
            }
            (EventKind::NfsNotResponding, None) if self.down.len() < MAX_TRACKED_NFS_SERVERS => {
                self.down.push(NfsServerDown {
                    rpc_program: program.clone(),
                    server: server.clone(),
                    mount_kind: event.fields.mount_kind,
                    since_ts_usec: event.first_ts_usec,
                    reports: 1,
                });
            }
            (EventKind::NfsRecovered, Some(i)) => {
                self.down.remove(i);
            }
            _ => {}
        }
    }

    /// Servers with at least one RPC program still not responding, sorted, unique.
    pub fn down_servers(&self) -> Vec<&str> {
        let mut servers: Vec<&str> = self.down.iter().map(|d| d.server.as_str()).collect();
        servers.sort_unstable();
        servers.dedup();
        servers
    }

    /// Every (program, server) still down, in the order they went down.
    pub fn down(&self) -> &[NfsServerDown] {
        &self.down
    }

    pub fn is_down(&self, server: &str) -> bool {
        self.down.iter().any(|d| d.server == server)
    }
}

// ---------------------------------------------------------------------------------
// Small parsers
// ---------------------------------------------------------------------------------

fn leading_u64(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n = s[..digits].parse().ok()?;
    Some((n, &s[digits..]))
}

fn leading_u32(s: &str) -> Option<(u32, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n = s[..digits].parse().ok()?;
    Some((n, &s[digits..]))
}

fn all_digits_u32(s: &str) -> Option<u32> {
    match leading_u32(s) {
        Some((n, "")) => Some(n),
        _ => None,
    }
}

/// `0-3,5,7-8` -> `[0, 1, 2, 3, 5, 7, 8]`, at most [`MAX_LIST_LEN`] entries.
fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (all_digits_u32(a), all_digits_u32(b)),
            None => (all_digits_u32(part), all_digits_u32(part)),
        };
        let (Some(lo), Some(hi)) = (lo, hi) else {
            continue;
        };
        for cpu in lo..=hi {
            if out.len() >= MAX_LIST_LEN {
                return out;
            }
            push_unique(&mut out, cpu);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    /// Verdict of one line fed to a fresh classifier.
    fn verdict(line: &str) -> LineVerdict {
        Classifier::new().feed(line, None)
    }

    /// Feeds all lines (no timestamps), flushes, returns verdicts and events.
    fn run(lines: &[&str]) -> (Vec<LineVerdict>, Vec<Event>) {
        run_ts(&lines.iter().map(|l| (*l, None)).collect::<Vec<_>>())
    }

    fn run_ts(lines: &[(&str, Option<u64>)]) -> (Vec<LineVerdict>, Vec<Event>) {
        let mut c = Classifier::new();
        let mut verdicts = Vec::new();
        let mut events = Vec::new();
        for (line, ts) in lines {
            verdicts.push(c.feed(line, *ts));
            events.extend(std::iter::from_fn(|| c.pop_event()));
        }
        c.flush();
        events.extend(std::iter::from_fn(|| c.pop_event()));
        (verdicts, events)
    }

    fn assert_head(line: &str, kind: EventKind, fields: Fields) {
        let v = verdict(line);
        assert_eq!(v.kind, Some(kind), "kind of {line:?}");
        assert!(!v.continuation, "{line:?} is a head");
        assert_eq!(v.fields, fields, "fields of {line:?}");
    }

    fn rcu(flavor: &str, expedited: bool, self_detected: bool) -> Fields {
        Fields {
            flavor: s(flavor),
            expedited: Some(expedited),
            self_detected: Some(self_detected),
            ..Fields::default()
        }
    }

    #[test]
    fn rcu_stall_heads_in_every_known_shape() {
        let cases: Vec<(&str, Fields)> = vec![
            (
                "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
                rcu("rcu_preempt", false, false),
            ),
            (
                "rcu: INFO: rcu_sched self-detected stall on CPU",
                rcu("rcu_sched", false, true),
            ),
            (
                "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P1234 } 21 jiffies s: 1189 root: 0x1/.",
                Fields {
                    jiffies: Some(21),
                    pids: vec![1234],
                    ..rcu("rcu_preempt", true, false)
                },
            ),
            (
                "rcu: INFO: rcu_sched detected expedited stalls on CPUs/tasks: { 2-...D 3-.... P77 } 5002 jiffies s: 257 root: 0x2/.",
                Fields {
                    jiffies: Some(5002),
                    cpus: vec![2, 3],
                    pids: vec![77],
                    ..rcu("rcu_sched", true, false)
                },
            ),
            (
                "INFO: rcu_sched detected expedited stalls on CPUs/tasks: { 1-... } 21004 jiffies s: 1445 root: 0x2/.",
                Fields {
                    jiffies: Some(21004),
                    cpus: vec![1],
                    ..rcu("rcu_sched", true, false)
                },
            ),
            (
                "INFO: rcu_sched detected stalls on CPUs/tasks: { 1} (detected by 0, t=2102 jiffies, g=4486, c=4485, q=7)",
                Fields {
                    jiffies: Some(2102),
                    detected_by: Some(0),
                    cpus: vec![1],
                    ..rcu("rcu_sched", false, false)
                },
            ),
            (
                "INFO: rcu_sched self-detected stall on CPU { 2}  (t=5250 jiffies g=9123 c=9122 q=412)",
                Fields {
                    jiffies: Some(5250),
                    cpus: vec![2],
                    ..rcu("rcu_sched", false, true)
                },
            ),
            (
                "INFO: rcu_bh detected stalls on CPUs/tasks: { 0 3} (detected by 1, t=15002 jiffies, g=77, c=76, q=0)",
                Fields {
                    jiffies: Some(15002),
                    detected_by: Some(1),
                    cpus: vec![0, 3],
                    ..rcu("rcu_bh", false, false)
                },
            ),
            (
                "INFO: rcu_preempt detected stalls on CPUs/tasks: { P5678} (detected by 3, t=60002 jiffies, g=1, c=0, q=0)",
                Fields {
                    jiffies: Some(60002),
                    detected_by: Some(3),
                    pids: vec![5678],
                    ..rcu("rcu_preempt", false, false)
                },
            ),
            (
                "INFO: rcu_tasks detected stalls on tasks:",
                rcu("rcu_tasks", false, false),
            ),
            (
                "rcu: INFO: rcu_tasks_trace detected stalls on tasks:",
                rcu("rcu_tasks_trace", false, false),
            ),
            (
                "INFO: rcu_tasks_trace detected stalls on tasks",
                rcu("rcu_tasks_trace", false, false),
            ),
            (
                "INFO: rcu_sched_state detected stall on CPU 1 (t=15000 jiffies)",
                Fields {
                    jiffies: Some(15000),
                    cpus: vec![1],
                    ..rcu("rcu_sched_state", false, false)
                },
            ),
        ];
        for (line, fields) in cases {
            assert_head(line, EventKind::RcuStall, fields);
        }
    }

    #[test]
    fn hung_task_heads_take_the_pid_after_the_last_colon() {
        let cases = [
            (
                "INFO: task mkdir:2345 blocked for more than 122 seconds.",
                "mkdir",
                2345,
                122,
            ),
            (
                "INFO: task kworker/u8:2:123 blocked for more than 120 seconds.",
                "kworker/u8:2",
                123,
                120,
            ),
            (
                "INFO: task my task:with:colons:4321 blocked for more than 120 seconds.",
                "my task:with:colons",
                4321,
                120,
            ),
            (
                "INFO: task [kthr] x:7 blocked for more than 5 seconds.",
                "[kthr] x",
                7,
                5,
            ),
            (
                "INFO: task jbd2/mmcblk0p2-:189 blocked for more than 966 seconds.",
                "jbd2/mmcblk0p2-",
                189,
                966,
            ),
        ];
        for (line, comm, pid, secs) in cases {
            assert_head(
                line,
                EventKind::HungTask,
                Fields {
                    comm: s(comm),
                    pid: Some(pid),
                    seconds: Some(secs),
                    ..Fields::default()
                },
            );
        }
    }

    #[test]
    fn hung_task_warning_limit_reached_is_its_own_signal() {
        assert_head(
            "Future hung task reports are suppressed, see sysctl kernel.hung_task_warnings",
            EventKind::HungTaskReportsSuppressed,
            Fields::default(),
        );
    }

    #[test]
    fn soft_lockup_heads_old_and_new() {
        let cases = [
            (
                "watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [stress-ng:1234]",
                Some(3),
                Some(23),
                s("stress-ng"),
                Some(1234),
            ),
            (
                "BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:35]",
                Some(0),
                Some(22),
                s("kworker/0:1"),
                Some(35),
            ),
            (
                "NMI watchdog: BUG: soft lockup - CPU#1 stuck for 61s! [events/1:15]",
                Some(1),
                Some(61),
                s("events/1"),
                Some(15),
            ),
            (
                "watchdog: BUG: soft lockup - CPU#2 stuck for 26s! [runc:[2:INIT]:4321]",
                Some(2),
                Some(26),
                s("runc:[2:INIT]"),
                Some(4321),
            ),
            (
                "BUG: soft lockup detected on CPU#1!",
                Some(1),
                None,
                None,
                None,
            ),
        ];
        for (line, cpu, seconds, comm, pid) in cases {
            assert_head(
                line,
                EventKind::SoftLockup,
                Fields {
                    cpu,
                    seconds,
                    comm,
                    pid,
                    ..Fields::default()
                },
            );
        }
    }

    #[test]
    fn soft_lockup_in_an_nfs_daemon_is_not_an_nfs_fault() {
        let v = verdict("watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [rpc.nfsd:1234]");
        assert_eq!(v.kind, Some(EventKind::SoftLockup));
        assert_eq!(v.fields.comm.as_deref(), Some("rpc.nfsd"));
        assert_eq!(v.fields.server, None);
    }

    #[test]
    fn hard_lockup_heads_in_all_shapes() {
        let cases = [
            ("NMI watchdog: Watchdog detected hard LOCKUP on cpu 2", 2),
            ("watchdog: Watchdog detected hard LOCKUP on cpu 3", 3),
            ("watchdog: CPU2: Watchdog detected hard LOCKUP on cpu 3", 3),
            ("Watchdog detected hard LOCKUP on cpu 1", 1),
            ("NMI watchdog: BUG: hard lockup - CPU#1 stuck", 1),
        ];
        for (line, cpu) in cases {
            assert_head(
                line,
                EventKind::HardLockup,
                Fields {
                    cpu: Some(cpu),
                    ..Fields::default()
                },
            );
        }
    }

    #[test]
    fn kernel_panic_reasons_map_to_their_kind() {
        let cases = [
            (
                "Kernel panic - not syncing: softlockup: hung tasks",
                EventKind::SoftLockup,
                None,
            ),
            (
                "Kernel panic - not syncing: Hard LOCKUP",
                EventKind::HardLockup,
                None,
            ),
            (
                "Kernel panic - not syncing: Watchdog detected hard LOCKUP on cpu 0",
                EventKind::HardLockup,
                Some(0),
            ),
            (
                "Kernel panic - not syncing: hung_task: blocked tasks",
                EventKind::HungTask,
                None,
            ),
            (
                "Kernel panic - not syncing: RCU Stall",
                EventKind::RcuStall,
                None,
            ),
        ];
        for (line, kind, cpu) in cases {
            assert_head(
                line,
                kind,
                Fields {
                    cpu,
                    panic: Some(true),
                    ..Fields::default()
                },
            );
        }
    }

    #[test]
    fn workqueue_lockup_head_expands_the_pool_cpus() {
        assert_head(
            "BUG: workqueue lockup - pool cpus=1 node=0 flags=0x0 nice=0 stuck for 33s!",
            EventKind::WorkqueueLockup,
            Fields {
                cpus: vec![1],
                seconds: Some(33),
                ..Fields::default()
            },
        );
        assert_head(
            "BUG: workqueue lockup - pool cpus=0-3 flags=0x4 nice=0 stuck for 41s!",
            EventKind::WorkqueueLockup,
            Fields {
                cpus: vec![0, 1, 2, 3],
                seconds: Some(41),
                ..Fields::default()
            },
        );
    }

    fn nfs(program: &str, server: &str, mount_kind: Option<MountKind>) -> Fields {
        Fields {
            rpc_program: s(program),
            server: s(server),
            mount_kind,
            ..Fields::default()
        }
    }

    #[test]
    fn nfs_not_responding_and_recovery_with_mount_semantics() {
        let cases = [
            (
                "nfs: server nas.local not responding, still trying",
                EventKind::NfsNotResponding,
                nfs("nfs", "nas.local", Some(MountKind::Hard)),
            ),
            (
                "nfs: server 10.0.0.5 not responding, timed out",
                EventKind::NfsNotResponding,
                nfs("nfs", "10.0.0.5", Some(MountKind::Soft)),
            ),
            (
                "nfs: server nas.local OK",
                EventKind::NfsRecovered,
                nfs("nfs", "nas.local", None),
            ),
            (
                "lockd: server 10.0.0.5 not responding, still trying",
                EventKind::NfsNotResponding,
                nfs("lockd", "10.0.0.5", Some(MountKind::Hard)),
            ),
            (
                "lockd: server 10.0.0.5 OK",
                EventKind::NfsRecovered,
                nfs("lockd", "10.0.0.5", None),
            ),
            (
                "statd: server rpc.statd not responding, timed out",
                EventKind::NfsNotResponding,
                nfs("statd", "rpc.statd", Some(MountKind::Soft)),
            ),
            (
                "rpcbind: server localhost not responding, timed out",
                EventKind::NfsNotResponding,
                nfs("rpcbind", "localhost", Some(MountKind::Soft)),
            ),
            (
                "nfs: server fd00::5 not responding, still trying",
                EventKind::NfsNotResponding,
                nfs("nfs", "fd00::5", Some(MountKind::Hard)),
            ),
        ];
        for (line, kind, fields) in cases {
            assert_head(line, kind, fields);
        }
    }

    #[test]
    fn nfs_state_lock_lockd_and_transport_errors() {
        let cases = [
            (
                "NFS: state manager: lease expired failed on NFSv4 server 10.0.0.1 with error 110",
                EventKind::NfsStateRecoveryFailed,
                Fields {
                    stage: s("lease expired"),
                    server: s("10.0.0.1"),
                    error: Some(110),
                    ..Fields::default()
                },
            ),
            (
                "NFS: state manager failed on NFSv4 server 192.168.1.5 with error 5",
                EventKind::NfsStateRecoveryFailed,
                Fields {
                    server: s("192.168.1.5"),
                    error: Some(5),
                    ..Fields::default()
                },
            ),
            (
                "Error: state manager failed on NFSv4 server nas with error 13",
                EventKind::NfsStateRecoveryFailed,
                Fields {
                    server: s("nas"),
                    error: Some(13),
                    ..Fields::default()
                },
            ),
            (
                "NFS: __nfs4_reclaim_open_state: Lock reclaim failed!",
                EventKind::NfsLockReclaimFailed,
                Fields::default(),
            ),
            (
                "nfs4_reclaim_open_state: Lock reclaim failed!",
                EventKind::NfsLockReclaimFailed,
                Fields::default(),
            ),
            (
                "NFS: nas.local: lost 3 locks",
                EventKind::NfsLockReclaimFailed,
                Fields {
                    server: s("nas.local"),
                    lost_locks: Some(3),
                    ..Fields::default()
                },
            ),
            (
                "lockd: cannot monitor 10.0.0.2",
                EventKind::NfsLockdError,
                Fields {
                    rpc_program: s("lockd"),
                    server: s("10.0.0.2"),
                    ..Fields::default()
                },
            ),
            (
                "lockd: failed to monitor nas",
                EventKind::NfsLockdError,
                Fields {
                    rpc_program: s("lockd"),
                    server: s("nas"),
                    ..Fields::default()
                },
            ),
            (
                "xs_tcp_setup_socket: connect returned unhandled error -107",
                EventKind::NfsRpcTransportError,
                Fields {
                    error: Some(-107),
                    ..Fields::default()
                },
            ),
        ];
        for (line, kind, fields) in cases {
            assert_head(line, kind, fields);
        }
    }

    #[test]
    fn oom_victim_lines_in_all_shapes() {
        let cases = [
            (
                "Out of memory: Killed process 1234 (prometheus) total-vm:1817344kB, anon-rss:712340kB, file-rss:0kB, shmem-rss:0kB, UID:65534 pgtables:1640kB oom_score_adj:999",
                1234,
                "prometheus",
                Some(false),
            ),
            (
                "Memory cgroup out of memory: Killed process 99 (java) total-vm:3649380kB, anon-rss:516000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1368kB oom_score_adj:937",
                99,
                "java",
                Some(true),
            ),
            (
                "Out of memory (oom_kill_allocating_task): Killed process 77 (stress) total-vm:1kB",
                77,
                "stress",
                Some(false),
            ),
            (
                "Killed process 123 (x) total-vm:4000kB, anon-rss:100kB, file-rss:0kB",
                123,
                "x",
                None,
            ),
            (
                "Killed process 42 ((sd-pam)) total-vm:1kB, anon-rss:0kB",
                42,
                "(sd-pam)",
                None,
            ),
            ("Killed process 5 (my app)", 5, "my app", None),
        ];
        for (line, pid, comm, memcg) in cases {
            assert_head(
                line,
                EventKind::OomKill,
                Fields {
                    pid: Some(pid),
                    comm: s(comm),
                    memcg,
                    ..Fields::default()
                },
            );
        }
    }

    #[test]
    fn oom_kill_constraint_line_carries_cgroups() {
        assert_head(
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=cri-containerd-ab12.scope,mems_allowed=0,oom_memcg=/kubepods/burstable/pod5f1d/ab12,task_memcg=/kubepods/burstable/pod5f1d/ab12,task=java,pid=99,uid=0",
            EventKind::OomKill,
            Fields {
                constraint: s("CONSTRAINT_MEMCG"),
                memcg: Some(true),
                oom_cgroup: s("/kubepods/burstable/pod5f1d/ab12"),
                cgroup: s("/kubepods/burstable/pod5f1d/ab12"),
                comm: s("java"),
                pid: Some(99),
                ..Fields::default()
            },
        );
        assert_head(
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/system.slice/k3s.service,task=k3s-server,pid=812,uid=0",
            EventKind::OomKill,
            Fields {
                constraint: s("CONSTRAINT_NONE"),
                memcg: Some(false),
                cgroup: s("/system.slice/k3s.service"),
                comm: s("k3s-server"),
                pid: Some(812),
                ..Fields::default()
            },
        );
    }

    fn sandbox(
        name: &str,
        pod: &str,
        ns: &str,
        uid: &str,
        attempt: u32,
        id: &str,
        recover: bool,
    ) -> Fields {
        Fields {
            sandbox_name: s(name),
            pod: s(pod),
            namespace: s(ns),
            pod_uid: s(uid),
            attempt: Some(attempt),
            holder_id: s(id),
            recover_state: Some(recover),
            ..Fields::default()
        }
    }

    const ID: &str = "8b2f0c4e5d6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";

    #[test]
    fn sandbox_name_reserved_in_containerd_k3s_and_kubelet_formats() {
        let name =
            "longhorn-csi-plugin-x7k2p_longhorn-system_0b6d1c9e-3f2a-4c1b-9d8e-7a6b5c4d3e2f_3";
        let want = sandbox(
            name,
            "longhorn-csi-plugin-x7k2p",
            "longhorn-system",
            "0b6d1c9e-3f2a-4c1b-9d8e-7a6b5c4d3e2f",
            3,
            ID,
            false,
        );
        let lines = [
            format!(
                r#"time="2026-11-21T17:35:41.123456789Z" level=error msg="RunPodSandbox for &PodSandboxMetadata{{Name:longhorn-csi-plugin-x7k2p,Uid:0b6d1c9e-3f2a-4c1b-9d8e-7a6b5c4d3e2f,Namespace:longhorn-system,Attempt:3,}} failed, error" error="failed to reserve sandbox name \"{name}\": name \"{name}\" is reserved for \"{ID}\"""#
            ),
            format!(
                r#"E1121 17:35:41.123456    1234 log.go:32] "RunPodSandbox from runtime service failed" err="rpc error: code = Unknown desc = failed to reserve sandbox name \"{name}\": name \"{name}\" is reserved for \"{ID}\"""#
            ),
            format!(
                r#"E1121 17:35:41.123456    1234 pod_workers.go:1301] "Error syncing pod, skipping" err="failed to \"CreatePodSandbox\" with CreatePodSandboxError: \"Failed to create sandbox: rpc error: code = Unknown desc = failed to reserve sandbox name \\\"{name}\\\": name \\\"{name}\\\" is reserved for \\\"{ID}\\\"\"""#
            ),
            format!(
                r#"failed to reserve sandbox name "{name}": name "{name}" is reserved for "{ID}""#
            ),
        ];
        for line in &lines {
            assert_head(line, EventKind::SandboxNameReserved, want.clone());
        }
    }

    #[test]
    fn sandbox_name_reserved_at_containerd_start_is_marked_recover_state() {
        let line = format!(
            r#"containerd: failed to recover state: failed to reserve sandbox name "web-0_default_1234abcd-0000-1111-2222-333344445555_0": name "web-0_default_1234abcd-0000-1111-2222-333344445555_0" is reserved for "{ID}""#
        );
        assert_head(
            &line,
            EventKind::SandboxNameReserved,
            sandbox(
                "web-0_default_1234abcd-0000-1111-2222-333344445555_0",
                "web-0",
                "default",
                "1234abcd-0000-1111-2222-333344445555",
                0,
                ID,
                true,
            ),
        );
    }

    #[test]
    fn container_name_reserved_is_a_separate_transient_kind() {
        let line = format!(
            r#"level=error msg="CreateContainer within sandbox \"abc\" failed" error="failed to reserve container name \"nginx_web-0_default_uid-1_2\": name \"nginx_web-0_default_uid-1_2\" is reserved for \"{ID}\"""#
        );
        let v = verdict(&line);
        assert_eq!(v.kind, Some(EventKind::ContainerNameReserved));
        assert_eq!(
            v.fields,
            Fields {
                container_name: s("nginx_web-0_default_uid-1_2"),
                container: s("nginx"),
                pod: s("web-0"),
                namespace: s("default"),
                pod_uid: s("uid-1"),
                attempt: Some(2),
                holder_id: s(ID),
                recover_state: Some(false),
                ..Fields::default()
            }
        );
        assert_eq!(
            Event {
                kind: EventKind::ContainerNameReserved,
                fields: v.fields,
                first_ts_usec: None,
                last_ts_usec: None,
                lines: 1
            }
            .severity(FALLBACK_HZ),
            Severity::Info
        );
    }

    #[test]
    fn sandbox_name_that_does_not_split_in_four_keeps_only_the_name() {
        let v = verdict(
            r#"failed to reserve sandbox name "odd_name": name "odd_name" is reserved for "zz""#,
        );
        assert_eq!(v.kind, Some(EventKind::SandboxNameReserved));
        assert_eq!(
            v.fields,
            Fields {
                sandbox_name: s("odd_name"),
                recover_state: Some(false),
                ..Fields::default()
            }
        );
    }

    #[test]
    fn look_alike_lines_are_not_faults() {
        let negatives = [
            "rcu: Hierarchical RCU implementation.",
            "rcu: Preemptible hierarchical RCU implementation.",
            "rcu: \tRCU restricting CPUs from NR_CPUS=256 to nr_cpu_ids=4.",
            "rcu: \tRCU event tracing is enabled.",
            "rcu: \tRCU dyntick-idle grace-period acceleration is enabled.",
            "rcu: RCU calculated value of scheduler-enlistment delay is 25 jiffies.",
            "rcu: Adjusting geometry for rcu_fanout_leaf=16, nr_cpu_ids=4",
            "rcu: srcu_init: Setting srcu_struct sizes based on contention.",
            "rcu: \tTrampoline variant of Tasks RCU enabled.",
            "RCU Tasks: Setting shift to 2 and lim to 1 rcu_task_cb_adjust=1.",
            "RCU Tasks Trace: Setting shift to 2 and lim to 1 rcu_task_cb_adjust=1 rcu_task_cpu_ids=4.",
            "rcu_tasks_wait_gp: rcu_tasks grace period number 85 (since boot) is 40793 jiffies old.",
            "INFO: NMI handler (perf_event_nmi_handler) took too long to run: 1.234 msecs",
            "INFO: task_struct is 4096 bytes",
            "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
            "kernel.hung_task_timeout_secs = 120",
            "NMI watchdog: Enabled. Permanently consumes one hw-PMU counter.",
            "NMI watchdog: Perf NMI watchdog permanently disabled",
            "NMI watchdog: Shutting down hard lockup detector on all cpus",
            "watchdog: Disabling watchdog on nohz_full cores by default",
            "watchdog: Delayed init of the lockup detector failed: -19",
            "workqueue: blk_mq_run_work_fn hogged CPU for >10000us 4 times, consider switching to WQ_UNBOUND",
            "bcm2835-wdt bcm2835-wdt: Broadcom BCM2835 watchdog timer",
            "NFS: Registering the id_resolver key type",
            "RPC: Registered tcp transport module.",
            "nfs: server nas.local is a teapot",
            "myapp: server db not responding, still trying",
            "Out of memory and no killable processes...",
            "memory: usage 524288kB, limit 524288kB, failcnt 1234",
            "Memory cgroup stats for /kubepods:",
            "oom_reaper: started",
            "BUG: scheduling while atomic: swapper/0/0/0x00000002",
            "BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
            "CPU: 2 PID: 0 Comm: swapper/2 Not tainted 6.17.0-1004-raspi #4-Ubuntu",
            "Call trace:",
            " __switch_to+0xe8/0x168",
            "(detected by 2, t=5252 jiffies, g=185293, q=433 ncpus=4)",
            "systemd[1]: k3s.service: Killing process 1234 (containerd-shim) with signal SIGKILL.",
            "failed to reserve sandbox name",
            "level=info msg=\"reserve sandbox name ok\"",
            "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
            "",
        ];
        for line in negatives {
            let v = verdict(line);
            assert_eq!(v, LineVerdict::none(), "{line:?} must not match");
        }
    }

    const RCU_SPLAT: &[&str] = &[
        "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
        "rcu: \t2-...!: (1 GPs behind) idle=8c4c/1/0x4000000000000000 softirq=12345/12346 fqs=0",
        "rcu: \t(detected by 0, t=5252 jiffies, g=185293, q=433 ncpus=4)",
        "Task dump for CPU 2:",
        "task:runc:[2:INIT]   state:R  running task     stack:0     pid:4321  tgid:4321  ppid:4300   flags:0x0000000a",
        "Call trace:",
        " __switch_to+0xe8/0x168",
        " 0xffff00004fb5e100",
        "rcu: rcu_preempt kthread starved for 5254 jiffies! g185293 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402 ->cpu=2",
        "rcu: \tUnless rcu_preempt kthread gets sufficient CPU time, OOM is now expected behavior.",
        "rcu: RCU grace-period kthread stack dump:",
        "task:rcu_preempt     state:I stack:0     pid:15    tgid:15    ppid:2      flags:0x00000008",
        "Call trace:",
        " __switch_to+0xe8/0x168",
        " __schedule+0x37c/0xd68",
        " schedule+0x64/0x108",
        "rcu: Stack dump where RCU GP kthread last ran:",
        "Sending NMI from CPU 0 to CPUs 2:",
        "NMI backtrace for cpu 2",
        "CPU: 2 PID: 4321 Comm: runc:[2:INIT] Not tainted 6.17.0-1004-raspi #4-Ubuntu",
        "Hardware name: Raspberry Pi 5 Model B Rev 1.0 (DT)",
        "pstate: 60400009 (nZCv daif +PAN -UAO -TCO -DIT -SSBS BTYPE=--)",
        "pc : queued_spin_lock_slowpath+0x1c8/0x388",
        "lr : _raw_spin_lock+0x70/0x88",
        "sp : ffff8000851f3a10",
        "x29: ffff8000851f3a10 x28: ffff000102b4c000 x27: 0000000000000000",
        "x2 : 0000000000000000 x1 : ffff000102b4c000 x0 : 0000000000000001",
        "Call trace:",
        " queued_spin_lock_slowpath+0x1c8/0x388",
        " veth_newlink+0x1a4/0x3f0 [veth]",
    ];

    #[test]
    fn modern_rcu_stall_splat_is_one_event_with_merged_fields() {
        let mut lines = RCU_SPLAT.to_vec();
        lines.push("cni0: port 3(veth1a2b3c4d) entered blocking state");
        let (verdicts, events) = run(&lines);
        assert_eq!(verdicts[0].kind, Some(EventKind::RcuStall));
        assert!(!verdicts[0].continuation);
        for (v, line) in verdicts[1..RCU_SPLAT.len()].iter().zip(&RCU_SPLAT[1..]) {
            assert_eq!(v.kind, Some(EventKind::RcuStall), "{line:?}");
            assert!(v.continuation, "{line:?}");
        }
        assert_eq!(verdicts.last().unwrap(), &LineVerdict::none());
        // Per-line fields come from that line only.
        assert_eq!(verdicts[1].fields.cpus, vec![2]);
        assert_eq!(verdicts[2].fields.jiffies, Some(5252));
        assert_eq!(verdicts[8].fields.kthread_starved_jiffies, Some(5254));

        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.kind, EventKind::RcuStall);
        assert_eq!(e.lines, RCU_SPLAT.len() as u32);
        assert_eq!(
            e.fields,
            Fields {
                jiffies: Some(5252),
                detected_by: Some(0),
                kthread_starved_jiffies: Some(5254),
                cpus: vec![2],
                ..rcu("rcu_preempt", false, false)
            }
        );
        assert_eq!(e.severity(250), Severity::Critical);
    }

    #[test]
    fn event_is_complete_only_when_the_splat_ends() {
        let mut c = Classifier::new();
        for line in RCU_SPLAT {
            c.feed(line, None);
            assert_eq!(c.pop_event(), None);
        }
        assert_eq!(c.open_event().map(|e| e.kind), Some(EventKind::RcuStall));
        c.flush();
        assert_eq!(c.open_event(), None);
        assert_eq!(c.pop_event().map(|e| e.lines), Some(RCU_SPLAT.len() as u32));
        assert_eq!(c.pop_event(), None);
    }

    #[test]
    fn kmsg_tab_lines_and_old_self_detected_splat_group_together() {
        let lines = [
            "INFO: rcu_sched self-detected stall on CPU",
            "\t3-...: (5249 ticks this GP) idle=b2e/140000000000001/0 softirq=1234/1234 fqs=2624 ",
            "\t (t=5250 jiffies g=5678 c=5677 q=1234)",
            "Task dump for CPU 3:",
            "kworker/3:1     R  running task        0   123      2 0x00000008",
            "Call trace:",
            "[<ffffff8008085d5c>] dump_backtrace+0x0/0x1b8",
            "[<ffffff8008085f38>] show_stack+0x24/0x30",
            "INFO: Stall ended before state dump start",
        ];
        let (verdicts, events) = run(&lines);
        assert!(
            verdicts[1..]
                .iter()
                .all(|v| v.continuation && v.kind == Some(EventKind::RcuStall))
        );
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].fields,
            Fields {
                jiffies: Some(5250),
                cpus: vec![3],
                ..rcu("rcu_sched", false, true)
            }
        );
    }

    #[test]
    fn old_stall_with_per_cpu_and_tasks_blocked_lines() {
        let lines = [
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "rcu: \tTasks blocked on level-0 rcu_node (CPUs 0-3): P3407/1:b..l P3410/2:b..l",
            "rcu: \t0-...0: (3 ticks this GP) idle=a2e/1/0x4000000000000002 softirq=1/1 fqs=2",
            "\t1: (0 ticks this GP) idle=1b4/0/0 softirq=7/7 last_accelerate: 0000/ffff, nonlazy_posted: 0, L.",
            "rcu: \t(detected by 3, t=21003 jiffies, g=99, q=12)",
        ];
        let (_, events) = run(&lines);
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].fields,
            Fields {
                jiffies: Some(21003),
                detected_by: Some(3),
                cpus: vec![0, 1],
                pids: vec![3407, 3410],
                ..rcu("rcu_preempt", false, false)
            }
        );
    }

    #[test]
    fn self_detected_stall_with_cputime_report_lines_groups_on_the_rcu_prefix() {
        // CONFIG_RCU_CPU_STALL_CPUTIME (6.x) lines have no shape but their prefix.
        let lines = [
            "rcu: INFO: rcu_preempt self-detected stall on CPU",
            "rcu: \t1-....: (5249 ticks this GP) idle=5fac/1/0x4000000000000000 softirq=3452/3452 fqs=2600 rcuc=5250 jiffies(starved)",
            "rcu: \t         hardirqs   softirqs   csw/system",
            "rcu: \t number:       10         0            0",
            "rcu: \tcputime:        0          0         5248   ==> 5250(ms)",
            "rcu: \t(t=5250 jiffies g=4109 q=189 ncpus=4)",
            "CPU: 1 UID: 0 PID: 812 Comm: k3s-server Not tainted 6.17.0-1004-raspi #4-Ubuntu",
        ];
        let (verdicts, events) = run(&lines);
        for (v, line) in verdicts[1..].iter().zip(&lines[1..]) {
            assert!(v.continuation, "{line:?}");
        }
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].fields,
            Fields {
                jiffies: Some(5250),
                cpus: vec![1],
                ..rcu("rcu_preempt", false, true)
            }
        );
    }

    #[test]
    fn rcu_tasks_stall_collects_stalled_task_pids() {
        let lines = [
            "INFO: rcu_tasks detected stalls on tasks:",
            "00000000769f52cd: .N nvcsw: 2/2 holdout: 1 idle_cpu: -1/64",
            "task:napi/eth2-8265  state:R  running task     stack:0     pid:48300 tgid:48300 ppid:2      task_flags:0x208040 flags:0x00004000",
            "Call Trace:",
            " <TASK>",
            " ? napi_threaded_poll_loop+0x27c/0x2c0",
            " </TASK>",
            "00000000b92b832d: .. nvcsw: 1/1 holdout: 1 idle_cpu: -1/7",
            "task:osnoise/7       state:R  running task     stack:    0 pid: 2133 ppid:     2 flags:0x00004000",
        ];
        let (verdicts, events) = run(&lines);
        assert!(verdicts[1..].iter().all(|v| v.continuation));
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].fields,
            Fields {
                pids: vec![48300, 2133],
                ..rcu("rcu_tasks", false, false)
            }
        );
    }

    #[test]
    fn rcu_tasks_trace_holdout_lines_give_pids() {
        let (_, events) = run(&[
            "INFO: rcu_tasks_trace detected stalls on tasks:",
            "P1234: .I",
            "P99: ...N nesting: 1N cpu: 2",
        ]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].fields.pids, vec![1234, 99]);
    }

    #[test]
    fn back_to_back_expedited_stalls_are_separate_events() {
        let stall = "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P1234 } 21 jiffies s: 1189 root: 0x1/.";
        let stall2 = "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-...D P5678 } 22 jiffies s: 1193 root: 0x1/.";
        let (verdicts, events) = run(&[
            stall,
            "rcu: blocking rcu_node structures (internal RCU debug): l=1:0-3:0x0/T",
            "task:runc:[2:INIT] state:R  running task     stack:0     pid:1234  tgid:1234  ppid:1200   flags:0x00000002",
            stall2,
            "rcu: blocking rcu_node structures (internal RCU debug): l=1:0-3:0x0/T",
        ]);
        assert!(!verdicts[3].continuation);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].fields.pids, vec![1234]);
        assert_eq!(events[0].lines, 3);
        assert_eq!(events[1].fields.pids, vec![5678]);
        assert_eq!(events[1].fields.cpus, vec![1]);
        assert_eq!(events[1].fields.jiffies, Some(22));
        assert_eq!(events[1].lines, 2);
    }

    #[test]
    fn brief_expedited_stall_is_info_and_long_one_is_warning() {
        let ev = |jiffies| Event {
            kind: EventKind::RcuStall,
            fields: Fields {
                jiffies: Some(jiffies),
                ..rcu("rcu_preempt", true, false)
            },
            first_ts_usec: None,
            last_ts_usec: None,
            lines: 1,
        };
        assert_eq!(ev(21).severity(250), Severity::Info);
        assert_eq!(ev(21).severity(FALLBACK_HZ), Severity::Info);
        assert_eq!(ev(21).stall_secs(250), Some(0.084));
        assert_eq!(ev(2500).severity(250), Severity::Warning);
        let mut starved = ev(21);
        starved.fields.kthread_starved_jiffies = Some(10002);
        assert_eq!(starved.severity(250), Severity::Critical);
        let mut no_length = ev(0);
        no_length.fields.jiffies = None;
        assert_eq!(no_length.severity(250), Severity::Warning);
        let mut panicked = ev(21);
        panicked.fields.panic = Some(true);
        assert_eq!(panicked.severity(250), Severity::Critical);
    }

    #[test]
    fn hung_task_splats_one_event_each_then_suppression_signal() {
        let lines = [
            "INFO: task mkdir:2345 blocked for more than 122 seconds.",
            "      Not tainted 6.17.0-1004-raspi #4-Ubuntu",
            "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
            "task:mkdir           state:D stack:0     pid:2345  tgid:2345  ppid:2300   task_flags:0x400000 flags:0x00000204",
            "Call trace:",
            " __switch_to+0xe8/0x168",
            " request_wait_answer+0x178/0x2a0 [fuse]",
            " fuse_simple_request+0x1a0/0x330 [fuse]",
            "INFO: task mkdir:2346 blocked for more than 122 seconds.",
            "      Tainted: G        W          6.1.0-rpi7 #1",
            "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
            "task:mkdir           state:D stack:0     pid:2346  tgid:2346  ppid:2300   flags:0x00000204",
            "Call Trace:",
            " <TASK>",
            " __schedule+0x2e0/0x8a0",
            " ? fuse_get_req+0x3c/0x220 [fuse]",
            " </TASK>",
            "INFO: task mkdir:2346 is blocked on a mutex likely owned by task mkdir:2345.",
            "Future hung task reports are suppressed, see sysctl kernel.hung_task_warnings",
        ];
        let (verdicts, events) = run(&lines);
        assert!(!verdicts[8].continuation);
        assert!(verdicts[17].continuation);
        assert!(!verdicts[18].continuation);
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        // The suppression line is a one-line event emitted before the open splat ends.
        assert_eq!(
            kinds,
            vec![
                EventKind::HungTask,
                EventKind::HungTaskReportsSuppressed,
                EventKind::HungTask
            ]
        );
        assert_eq!(events[0].fields.pid, Some(2345));
        assert_eq!(events[0].lines, 8);
        assert_eq!(events[2].fields.pid, Some(2346));
        assert_eq!(events[2].lines, 10);
    }

    #[test]
    fn old_hung_task_state_line_is_a_continuation() {
        let (verdicts, events) = run(&[
            "INFO: task nfsd:1234 blocked for more than 120 seconds.",
            "nfsd            D ffff88003fc13680     0  1234      2 0x00000000",
            " ffff88003b4d7d28 0000000000000046 ffff88003b5a0000 ffff88003b4d7fd8",
        ]);
        assert!(verdicts[1].continuation && verdicts[2].continuation);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].lines, 3);
    }

    #[test]
    fn soft_lockup_splat_with_panic_is_one_event_and_no_nfs_event() {
        let lines = [
            "watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [rpc.nfsd:1234]",
            "CPU#3 Utilization every 4s during lockup:",
            "\t#1: 100% system,   0% softirq,   1% hardirq,   0% idle",
            "Modules linked in: nfsd auth_rpcgss nfs_acl lockd grace sunrpc veth",
            "CPU: 3 PID: 1234 Comm: rpc.nfsd Tainted: G             L     6.1.0-rpi7-rpi-v8 #1  Debian 1:6.1.63-1+rpt1",
            "Hardware name: Raspberry Pi 4 Model B Rev 1.4 (DT)",
            "pstate: 80000005 (Nzcv daif -PAN -UAO -TCO -DIT -SSBS BTYPE=--)",
            "pc : _raw_spin_unlock_irqrestore+0x1c/0x60",
            "lr : __wake_up_common_lock+0x94/0xd8",
            "sp : ffffffc00a0fbc70",
            "x29: ffffffc00a0fbc70 x28: ffffff8040e0c000 x27: 0000000000000000",
            "Call trace:",
            " _raw_spin_unlock_irqrestore+0x1c/0x60",
            " nfsd_svc+0x1a4/0x2e0 [nfsd]",
            "Kernel panic - not syncing: softlockup: hung tasks",
            "Kernel Offset: 0x1a2b000000 from 0xffffffc008000000",
            "---[ end Kernel panic - not syncing: softlockup: hung tasks ]---",
        ];
        let (verdicts, events) = run(&lines);
        assert!(
            verdicts[1..]
                .iter()
                .all(|v| v.continuation && v.kind == Some(EventKind::SoftLockup))
        );
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].fields,
            Fields {
                cpu: Some(3),
                seconds: Some(23),
                comm: s("rpc.nfsd"),
                pid: Some(1234),
                panic: Some(true),
                ..Fields::default()
            }
        );
        assert_eq!(events[0].lines, lines.len() as u32);
    }

    #[test]
    fn x86_hard_lockup_with_registers_and_panic() {
        let lines = [
            "NMI watchdog: Watchdog detected hard LOCKUP on cpu 2",
            "Modules linked in: overlay br_netfilter",
            "CPU: 2 UID: 0 PID: 0 Comm: swapper/2 Not tainted 6.12.0 #1",
            "RIP: 0010:native_queued_spin_lock_slowpath+0x5e/0x2d0",
            "Code: 6d f0 0f ba 2f 08 0f 92 c0 0f b6 c0 c1 e0 08 89 c2 8b 07 30 e4 09 d0 a9 00 01 ff ff",
            "RSP: 0018:ffffc90000003e48 EFLAGS: 00000002",
            "RAX: 0000000000000101 RBX: ffff888100a3c000 RCX: 0000000000000000",
            "FS:  0000000000000000(0000) GS:ffff88813bd00000(0000) knlGS:0000000000000000",
            "CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033",
            "Call Trace:",
            " <NMI>",
            " ? watchdog_hardlockup_check+0x1a2/0x1c0",
            " </NMI>",
            " <IRQ>",
            " _raw_spin_lock+0x29/0x30",
            " </IRQ>",
            "Kernel panic - not syncing: Hard LOCKUP",
        ];
        let (verdicts, events) = run(&lines);
        for (v, line) in verdicts[1..].iter().zip(&lines[1..]) {
            assert!(v.continuation, "{line:?}");
        }
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].fields,
            Fields {
                cpu: Some(2),
                panic: Some(true),
                ..Fields::default()
            }
        );
    }

    #[test]
    fn panic_without_an_open_splat_is_its_own_event() {
        let (verdicts, events) = run(&["eth0: link up", "Kernel panic - not syncing: Hard LOCKUP"]);
        assert!(!verdicts[1].continuation);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::HardLockup);
        assert_eq!(events[0].fields.panic, Some(true));
    }

    #[test]
    fn workqueue_lockup_splat() {
        let lines = [
            "BUG: workqueue lockup - pool cpus=1 node=0 flags=0x0 nice=0 stuck for 33s!",
            "Showing busy workqueues and worker pools:",
            "workqueue events: flags=0x0",
            "  pwq 2: cpus=1 node=0 flags=0x0 nice=0 active=3/256 refcnt=4",
            "    pending: vmstat_shepherd, check_corruption",
            "    in-flight: 123:nfs4_renew_state [nfsv4]",
            "pool 2: cpus=1 node=0 flags=0x0 nice=0 hung=33s workers=3 idle: 45 67",
            "Showing backtraces of running workers in stalled CPU-bound worker pools:",
        ];
        let (verdicts, events) = run(&lines);
        assert!(verdicts[1..].iter().all(|v| v.continuation));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::WorkqueueLockup);
        assert_eq!(events[0].fields.cpus, vec![1]);
        assert_eq!(events[0].fields.seconds, Some(33));
        assert_eq!(events[0].lines, lines.len() as u32);
    }

    const OOM_SPLAT: &[&str] = &[
        "java invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=937",
        "CPU: 1 PID: 99 Comm: java Not tainted 6.17.0-1004-raspi #4-Ubuntu",
        "Hardware name: Raspberry Pi 5 Model B Rev 1.0 (DT)",
        "Call trace:",
        " show_stack+0x20/0x38",
        " oom_kill_process+0x124/0x2d8",
        "memory: usage 524288kB, limit 524288kB, failcnt 1234",
        "swap: usage 0kB, limit 9007199254740988kB, failcnt 0",
        "Memory cgroup stats for /kubepods/burstable/pod5f1d/ab12:",
        "anon 530210816",
        "file 4096",
        "",
        "Tasks state (memory values in pages):",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        "[     99]     0    99   912345   129000  1400000        0           937 java",
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=cri-containerd-ab12.scope,mems_allowed=0,oom_memcg=/kubepods/burstable/pod5f1d/ab12,task_memcg=/kubepods/burstable/pod5f1d/ab12,task=java,pid=99,uid=0",
        "Memory cgroup out of memory: Killed process 99 (java) total-vm:3649380kB, anon-rss:516000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1368kB oom_score_adj:937",
        "oom_reaper: reaped process 99 (java), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
    ];

    fn java_oom() -> Fields {
        Fields {
            pid: Some(99),
            comm: s("java"),
            constraint: s("CONSTRAINT_MEMCG"),
            memcg: Some(true),
            cgroup: s("/kubepods/burstable/pod5f1d/ab12"),
            oom_cgroup: s("/kubepods/burstable/pod5f1d/ab12"),
            ..Fields::default()
        }
    }

    #[test]
    fn whole_oom_report_is_one_event_with_pid_comm_and_cgroup() {
        let mut lines = OOM_SPLAT.to_vec();
        lines.push("eth0: Link is Up - 1Gbps/Full");
        let (verdicts, events) = run(&lines);
        assert!(!verdicts[0].continuation);
        for (v, line) in verdicts[1..OOM_SPLAT.len()].iter().zip(&OOM_SPLAT[1..]) {
            assert_eq!(v.kind, Some(EventKind::OomKill), "{line:?}");
            assert!(v.continuation, "{line:?}");
        }
        assert_eq!(verdicts.last().unwrap(), &LineVerdict::none());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].fields, java_oom());
        assert_eq!(events[0].lines, OOM_SPLAT.len() as u32);
    }

    #[test]
    fn oom_kill_line_then_killed_line_make_one_event() {
        let (verdicts, events) = run(&OOM_SPLAT[15..17]);
        assert!(!verdicts[0].continuation);
        assert!(verdicts[1].continuation);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].fields, java_oom());
    }

    #[test]
    fn old_kill_process_then_killed_child_make_one_event_naming_the_child() {
        let (_, events) = run(&[
            "Out of memory: Kill process 1234 (postgres) score 900 or sacrifice child",
            "Killed process 1240 (postgres: wal) total-vm:40000kB, anon-rss:30000kB, file-rss:0kB",
        ]);
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].fields,
            Fields {
                pid: Some(1240),
                comm: s("postgres: wal"),
                memcg: Some(false),
                ..Fields::default()
            }
        );
    }

    #[test]
    fn old_memcg_task_in_line_gives_cgroups() {
        let (_, events) = run(&[
            "stress invoked oom-killer: gfp_mask=0x24000c0, order=0, oom_score_adj=0",
            "Task in /kubepods/pod1/c1 killed as a result of limit of /kubepods/pod1",
            "Memory cgroup out of memory: Kill process 321 (stress) score 1000 or sacrifice child",
            "Killed process 321 (stress) total-vm:1000kB, anon-rss:900kB, file-rss:0kB",
        ]);
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].fields,
            Fields {
                pid: Some(321),
                comm: s("stress"),
                memcg: Some(true),
                cgroup: s("/kubepods/pod1/c1"),
                oom_cgroup: s("/kubepods/pod1"),
                ..Fields::default()
            }
        );
    }

    #[test]
    fn two_kills_in_a_row_are_two_events() {
        let (_, events) = run(&[
            OOM_SPLAT[15],
            OOM_SPLAT[16],
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/kubepods/besteffort/pod9/c9,task=prometheus,pid=700,uid=65534",
            "Out of memory: Killed process 700 (prometheus) total-vm:1817344kB, anon-rss:712340kB",
        ]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].fields.pid, Some(99));
        assert_eq!(events[1].fields.pid, Some(700));
        assert_eq!(events[1].fields.comm.as_deref(), Some("prometheus"));
        assert_eq!(
            events[1].fields.cgroup.as_deref(),
            Some("/kubepods/besteffort/pod9/c9")
        );
        assert_eq!(events[1].fields.memcg, Some(false));
    }

    #[test]
    fn late_oom_reaper_line_is_flagged_but_makes_no_event() {
        let (verdicts, events) = run(&[
            "eth0: Link is Up",
            "oom_reaper: reaped process 99 (java), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
        ]);
        assert_eq!(verdicts[1].kind, Some(EventKind::OomKill));
        assert!(verdicts[1].continuation);
        assert_eq!(verdicts[1].fields.pid, Some(99));
        assert_eq!(verdicts[1].fields.comm.as_deref(), Some("java"));
        assert!(events.is_empty());
    }

    #[test]
    fn one_line_events_inside_a_splat_leave_it_open() {
        let (verdicts, events) = run(&[
            RCU_SPLAT[0],
            RCU_SPLAT[1],
            "nfs: server nas.local not responding, still trying",
            RCU_SPLAT[2],
        ]);
        assert!(!verdicts[2].continuation);
        assert!(verdicts[3].continuation);
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![EventKind::NfsNotResponding, EventKind::RcuStall]
        );
        assert_eq!(events[1].fields.jiffies, Some(5252));
        assert_eq!(events[1].lines, 3);
    }

    #[test]
    fn unrelated_line_ends_the_splat_and_later_trace_lines_are_not_claimed() {
        let (verdicts, events) = run(&[
            "INFO: task mkdir:1 blocked for more than 5 seconds.",
            "Call Trace:",
            "WARNING: CPU: 0 PID: 1 at fs/foo.c:12 foo+0x1/0x2",
            "Call Trace:",
            " foo+0x1/0x2",
        ]);
        assert!(verdicts[1].continuation);
        for v in &verdicts[2..] {
            assert_eq!(v, &LineVerdict::none());
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].lines, 2);
    }

    #[test]
    fn timestamp_gap_or_time_going_back_splits_splats() {
        let (verdicts, events) = run_ts(&[
            (
                "INFO: task a:1 blocked for more than 5 seconds.",
                Some(100_000_000),
            ),
            ("Call Trace:", Some(100_000_100)),
            (
                " schedule+0x1/0x2",
                Some(100_000_100 + SPLAT_MAX_GAP_USEC + 1),
            ),
            (
                "INFO: task b:2 blocked for more than 5 seconds.",
                Some(200_000_000),
            ),
            ("Call Trace:", Some(5)),
        ]);
        assert!(verdicts[1].continuation);
        assert_eq!(verdicts[2], LineVerdict::none());
        assert_eq!(verdicts[4], LineVerdict::none());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].first_ts_usec, Some(100_000_000));
        assert_eq!(events[0].last_ts_usec, Some(100_000_100));
        assert_eq!(events[0].lines, 2);
        assert_eq!(events[1].lines, 1);
    }

    #[test]
    fn endless_splat_is_cut_at_the_line_limit() {
        let mut c = Classifier::new();
        c.feed("INFO: task a:1 blocked for more than 5 seconds.", None);
        let mut continued = 0;
        for _ in 0..SPLAT_MAX_LINES + 10 {
            if c.feed(" schedule+0x1/0x2", None).continuation {
                continued += 1;
            }
        }
        assert_eq!(continued, SPLAT_MAX_LINES - 1);
        assert_eq!(c.pop_event().map(|e| e.lines), Some(SPLAT_MAX_LINES));
        assert!(c.open_event().is_none());
    }

    #[test]
    fn unfinished_oom_report_is_cut_at_the_line_limit() {
        let mut c = Classifier::new();
        c.feed(OOM_SPLAT[0], None);
        for _ in 0..SPLAT_MAX_LINES * 2 {
            c.feed("some line", None);
        }
        assert_eq!(c.pop_event().map(|e| e.lines), Some(SPLAT_MAX_LINES));
    }

    #[test]
    fn verdicts_serialise_to_the_classify_json_shape() {
        let v = verdict(
            "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P1234 } 21 jiffies s: 1189 root: 0x1/.",
        );
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({
                "kind": "rcu_stall",
                "continuation": false,
                "flavor": "rcu_preempt",
                "expedited": true,
                "self_detected": false,
                "jiffies": 21,
                "pids": [1234]
            })
        );
        assert_eq!(
            serde_json::to_string(&verdict("eth0: up")).unwrap(),
            r#"{"kind":null,"continuation":false}"#
        );
        let v = verdict("nfs: server nas not responding, still trying");
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"kind":"nfs_not_responding","continuation":false,"rpc_program":"nfs","server":"nas","mount_kind":"hard"}"#
        );
    }

    #[test]
    fn kind_names_match_their_serialised_form() {
        for kind in EventKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().to_string())
            );
        }
    }

    #[test]
    fn hz_is_read_from_kernel_config() {
        let config = "#\n# Timer frequency\nCONFIG_HZ_250=y\n# CONFIG_HZ_1000 is not set\nCONFIG_HZ=250\nCONFIG_SCHED_HRTICK=y\n";
        assert_eq!(hz_from_kconfig(config), Some(250));
        assert_eq!(
            hz_from_kconfig("CONFIG_HZ_1000=y\nCONFIG_HZ=1000"),
            Some(1000)
        );
        assert_eq!(hz_from_kconfig("CONFIG_HZ_100=y\n"), None);
        assert_eq!(hz_from_kconfig("CONFIG_HZ=0\n"), None);
        assert_eq!(hz_from_kconfig("CONFIG_HZ=abc\n"), None);
        assert_eq!(hz_from_kconfig(""), None);
    }

    #[test]
    fn jiffies_convert_with_hz() {
        assert_eq!(jiffies_to_secs(21, 1000), 0.021);
        assert_eq!(jiffies_to_secs(5250, 250), 21.0);
        assert_eq!(jiffies_to_secs(100, 0), 100.0);
    }

    fn nfs_event(line: &str, ts: u64) -> Event {
        let mut c = Classifier::new();
        c.feed(line, Some(ts));
        c.pop_event().expect("one-line event")
    }

    #[test]
    fn nfs_tracker_pairs_outage_with_recovery_per_program_and_server() {
        let mut t = NfsServerTracker::new();
        t.apply(&nfs_event(
            "nfs: server nas.local not responding, still trying",
            10,
        ));
        t.apply(&nfs_event(
            "nfs: server nas.local not responding, still trying",
            20,
        ));
        t.apply(&nfs_event(
            "lockd: server nas.local not responding, still trying",
            25,
        ));
        t.apply(&nfs_event(
            "nfs: server 10.0.0.5 not responding, timed out",
            30,
        ));
        assert_eq!(t.down_servers(), vec!["10.0.0.5", "nas.local"]);
        assert_eq!(
            t.down()[0],
            NfsServerDown {
                rpc_program: "nfs".into(),
                server: "nas.local".into(),
                mount_kind: Some(MountKind::Hard),
                since_ts_usec: Some(10),
                reports: 2,
            }
        );
        t.apply(&nfs_event("nfs: server nas.local OK", 40));
        // lockd has not recovered yet.
        assert!(t.is_down("nas.local"));
        t.apply(&nfs_event("lockd: server nas.local OK", 41));
        assert!(!t.is_down("nas.local"));
        assert_eq!(t.down_servers(), vec!["10.0.0.5"]);
        // Unrelated events and recoveries of unknown servers change nothing.
        t.apply(&nfs_event("nfs: server other OK", 50));
        t.apply(&nfs_event("lockd: cannot monitor 10.0.0.5", 51));
        assert_eq!(t.down().len(), 1);
        assert_eq!(t.down()[0].mount_kind, Some(MountKind::Soft));
    }

    #[test]
    fn nfs_tracker_is_bounded() {
        let mut t = NfsServerTracker::new();
        for i in 0..MAX_TRACKED_NFS_SERVERS + 5 {
            t.apply(&nfs_event(
                &format!("nfs: server s{i} not responding, still trying"),
                1,
            ));
        }
        assert_eq!(t.down().len(), MAX_TRACKED_NFS_SERVERS);
    }

    #[test]
    fn cpu_lists_are_expanded_and_bounded() {
        assert_eq!(parse_cpu_list("0-3,5,7-8"), vec![0, 1, 2, 3, 5, 7, 8]);
        assert_eq!(parse_cpu_list("x,2"), vec![2]);
        assert_eq!(parse_cpu_list("0-4294967295").len(), MAX_LIST_LEN);
        assert_eq!(parse_cpu_list("5-1"), Vec::<u32>::new());
    }

    /// Fragments of real messages, glued together to make near misses.
    const VOCAB: &[&str] = &[
        "rcu: ",
        "INFO: ",
        "rcu_preempt ",
        "detected stalls on CPUs/tasks:",
        "detected expedited stalls on ",
        "self-detected stall on CPU",
        "{ ",
        "P12",
        " }",
        " 21 jiffies",
        "t=",
        "(detected by ",
        "jiffies",
        "INFO: task ",
        ":",
        "12",
        " blocked for more than ",
        " seconds.",
        "watchdog: ",
        "BUG: soft lockup - CPU#",
        " stuck for ",
        "s! [",
        "]",
        "Watchdog detected hard LOCKUP on cpu ",
        "nfs: server ",
        " not responding",
        " OK",
        "Out of memory: Killed process ",
        " (",
        ")",
        "oom-kill:",
        "task_memcg=",
        ",pid=",
        "Killed process ",
        "failed to reserve sandbox name ",
        "\\\"",
        "\"",
        "_",
        " is reserved for ",
        "Kernel panic - not syncing: ",
        "NFS: state manager",
        " failed on NFSv4 server ",
        " with error ",
        "lost ",
        " locks",
        "\t",
        " ",
        "-...!: (",
        "Call Trace:",
        "+0x1/0x2",
        "oom_reaper: reaped process ",
        "), now ",
        "BUG: workqueue lockup - pool cpus=",
        "0-",
        "é",
        "\u{0}",
        "xs_tcp: connect returned unhandled error ",
        "lockd: cannot monitor ",
    ];

    fn vocab_line() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(VOCAB), 0..12).prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn classifier_never_panics_on_arbitrary_lines(
            lines in prop::collection::vec((any::<String>(), any::<Option<u64>>()), 0..20)
        ) {
            let mut c = Classifier::new();
            for (line, ts) in &lines {
                let _ = c.feed(line, *ts);
            }
            c.flush();
            while c.pop_event().is_some() {}
        }

        #[test]
        fn classifier_never_panics_on_near_miss_lines(
            lines in prop::collection::vec((vocab_line(), prop::option::of(0u64..1_000_000_000)), 0..30)
        ) {
            let mut c = Classifier::new();
            let mut heads = 0u32;
            let mut events = 0u32;
            for (line, ts) in &lines {
                let v = c.feed(line, *ts);
                if v.kind.is_some() && !v.continuation {
                    heads += 1;
                }
                events += std::iter::from_fn(|| c.pop_event()).count() as u32;
            }
            c.flush();
            events += std::iter::from_fn(|| c.pop_event()).count() as u32;
            // Every head line yields exactly one event.
            prop_assert_eq!(heads, events);
        }

        #[test]
        fn bytes_that_are_not_utf8_are_survived_after_lossy_decoding(
            bytes in prop::collection::vec(any::<u8>(), 0..200)
        ) {
            let mut c = Classifier::new();
            let _ = c.feed(&String::from_utf8_lossy(&bytes), None);
        }
    }

    /// Ordinary kernel lines, the bulk of any real log.
    const ORDINARY: &[&str] = &[
        "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
        "IPv6: ADDRCONF(NETDEV_CHANGE): veth1a2b3c4d: link becomes ready",
        "cni0: port 3(veth1a2b3c4d) entered forwarding state",
        "cni0: port 3(veth1a2b3c4d) entered blocking state",
        "device veth1a2b3c4d entered promiscuous mode",
        "EXT4-fs (mmcblk0p2): mounted filesystem with ordered data mode. Quota mode: none.",
        "audit: type=1400 audit(1700000000.123:45): apparmor=\"STATUS\" operation=\"profile_load\" profile=\"unconfined\" name=\"runc\" pid=1234 comm=\"apparmor_parser\"",
        "bcmgenet fd580000.ethernet eth0: Link is Up - 1Gbps/Full - flow control rx/tx",
        "flannel.1: Link UP",
        "overlayfs: idmapped layers are currently not supported",
        "Bluetooth: hci0: BCM: features 0x2f",
        "brcmfmac: brcmf_c_preinit_dcmds: Firmware: BCM4345/6 wl0: Nov  1 2021 00:37:25 version 7.45.241",
        "nf_conntrack: default automatic helper assignment has been turned off for security reasons",
        "rcu: Hierarchical RCU implementation.",
        "NFS: Registering the id_resolver key type",
        "systemd[1]: Started k3s.service - Lightweight Kubernetes.",
        "kauditd_printk_skb: 12 callbacks suppressed",
        "sd 0:0:0:0: [sda] 7814037168 512-byte logical blocks: (4.00 TB/3.64 TiB)",
        "xhci_hcd 0000:01:00.0: xHCI Host Controller",
        "vc4-drm gpu: [drm] Cannot find any crtc or sizes",
    ];

    /// Run with `cargo test --release -- --ignored --nocapture throughput`.
    #[test]
    #[ignore]
    fn throughput_on_a_mixed_corpus() {
        let mut corpus: Vec<&str> = Vec::new();
        for i in 0..50 {
            corpus.extend_from_slice(ORDINARY);
            if i % 10 == 0 {
                corpus.extend_from_slice(RCU_SPLAT);
                corpus.push("nfs: server nas.local not responding, still trying");
            }
            if i % 25 == 0 {
                corpus.extend_from_slice(OOM_SPLAT);
            }
        }
        let rounds = 2_000_000 / corpus.len() + 1;
        let mut c = Classifier::new();
        let mut matched = 0usize;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for line in &corpus {
                if c.feed(line, None).kind.is_some() {
                    matched += 1;
                }
                while c.pop_event().is_some() {}
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let lines = (rounds * corpus.len()) as f64;
        println!(
            "classified {lines} lines in {elapsed:.3}s: {:.0} lines/s ({matched} matched)",
            lines / elapsed
        );
        assert!(matched > 0);
    }
}
