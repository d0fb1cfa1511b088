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
            self, other, flavor, expedited, self_detected, jiffies, detected_by,
            kthread_starved_jiffies, cpu, comm, pid, seconds, rpc_program, server,
            mount_kind, stage, error, lost_locks, cgroup, oom_cgroup, constraint, memcg,
            sandbox_name, container_name, container, pod, namespace, pod_uid, attempt,
            holder_id, recover_state
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
        b'K' => panic_head(line).or_else(|| oom_killed_head(line, Some(false))),
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
            f.jiffies = leading_u64(after.trim_start()).filter(|(_, r)| r.starts_with(" jiffies")).map(|(n, _)| n);
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
        memcg: memcg.filter(|&m| m),
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
        return Head::new(EventKind::NfsLockReclaimFailed, Role::Single, Fields::default());
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
        let id = after[name_len + i + "is reserved for".len()..].trim_start_matches([' ', '\\', '"']);
        let id_len = id.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(id.len());
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
    let tasks_flavor = open.flavor.as_deref().is_some_and(|fl| fl.starts_with("rcu_tasks"));
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
        Some(flags) => &flags[flags.find(':').filter(|&i| i <= 8 && !flags[..i].contains(' '))?..],
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
    if PREFIXES.iter().any(|p| t.starts_with(p)) || is_old_task_state_line(t) {
        return Some(Fields::default());
    }
    None
}

/// 3.x/4.x task line: `mkdir           D    0  1234   1000 0x00000000`.
fn is_old_task_state_line(t: &str) -> bool {
    let mut tokens = t.split_ascii_whitespace();
    let (Some(_comm), Some(state)) = (tokens.next(), tokens.next()) else {
        return false;
    };
    let state_ok = state.len() == 1 && "RSDTtXZPIKN".contains(state);
    let mut numbers = 0;
    for tok in tokens {
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
    is_stack_frame(t) || is_register_line(t) || is_hex_words(t) || is_lock_line(t)
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
    first.contains("+0x") && first.contains("/0x")
}

/// `RAX: 0000000000000000 RBX: ...`, `x29: ffff80000a0f3d80 x28: ...`, `sp : ffff...`,
/// `r10: c1234567  r9 : ...`, `RSP: 0018:ffffc900...`.
fn is_register_line(t: &str) -> bool {
    let Some(colon) = t.as_bytes().iter().take(6).position(|&b| b == b':') else {
        return false;
    };
    let name = t[..colon].trim_end();
    let name_ok = !name.is_empty() && name.len() <= 4 && name.bytes().all(|b| b.is_ascii_alphanumeric());
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
