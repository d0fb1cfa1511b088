//! Lockups and hung tasks: soft and hard lockups, workqueue lockups, `INFO: task ... blocked`,
//! `Kernel panic - not syncing` (kernel/watchdog.c, kernel/hung_task.c,
//! kernel/workqueue.c, kernel/panic.c).

use super::*;

/// `INFO: task <comm>:<pid> blocked for more than <N> seconds.` (kernel/hung_task.c); since
/// 6.16 a task in I/O wait says `blocked in I/O wait for more than`. The comm may contain
/// spaces and colons: it is at most 15 bytes, and the pid follows it.
const HUNG_TASK: &[&str] = &[
    "INFO: task %c:%d blocked for more than %u seconds.",
    "INFO: task %c:%d blocked in I/O wait for more than %u seconds.",
];

pub(super) fn hung_task_head(line: &str) -> Option<Head> {
    let (_, c) = kmatch_any(HUNG_TASK, line)?;
    let fields = Fields {
        comm: c.string(0),
        pid: c.u32(1),
        seconds: c.u64(2),
        ..Fields::default()
    };
    Head::new(EventKind::HungTask, Role::Splat, fields)
}

pub(super) fn hung_task_suppressed_head(line: &str) -> Option<Head> {
    (line == "Future hung task reports are suppressed, see sysctl kernel.hung_task_warnings").then(
        || Head {
            kind: EventKind::HungTaskReportsSuppressed,
            role: Role::Single,
            fields: Fields::default(),
        },
    )
}

/// Soft lockups (kernel/watchdog.c): `watchdog: ` since 4.15, `NMI watchdog: ` before
/// (the file's pr_fmt then), none in 2.6-3.x; 2.6.2x said `detected on CPU#N!`.
const SOFT_LOCKUP: &[&str] = &[
    "watchdog: BUG: soft lockup - CPU#%u stuck for %us! [%c:%d]",
    "NMI watchdog: BUG: soft lockup - CPU#%u stuck for %us! [%c:%d]",
    "BUG: soft lockup - CPU#%u stuck for %us! [%c:%d]",
    "BUG: soft lockup detected on CPU#%u!",
];

/// Hard lockups whose first conversion is the locked-up CPU: the perf/buddy detector
/// (kernel/watchdog.c, watchdog_hld.c before 6.6: `NMI watchdog: `; 3.x printed it as a
/// WARN without prefix; sparc's die_nmi still does), powerpc's own detector
/// (arch/powerpc/kernel/watchdog.c: `watchdog: CPU %d ...` since 5.x, `Watchdog CPU:%d ...`
/// in 4.13-4.20), and x86's NMI watchdog of 2.6.
const HARD_LOCKUP: &[&str] = &[
    "watchdog: Watchdog detected hard LOCKUP on cpu %u",
    "NMI watchdog: Watchdog detected hard LOCKUP on cpu %u",
    "Watchdog detected hard LOCKUP on cpu %u",
    "watchdog: CPU %u Hard LOCKUP",
    // `@ %pS`: the interrupted code, `symbol+0x1c/0x60` and its module, if any.
    "watchdog: CPU %u self-detected hard LOCKUP @ %w",
    "watchdog: CPU %u self-detected hard LOCKUP @ %w [%w]",
    "Watchdog CPU:%u Hard LOCKUP",
    "Watchdog CPU:%u self-detected Hard LOCKUP @ %w",
    "Watchdog CPU:%u self-detected Hard LOCKUP @ %w [%w]",
    "NMI Watchdog detected LOCKUP on CPU %u",
    "NMI Watchdog detected LOCKUP on CPU %u, registers:",
    "NMI Watchdog detected LOCKUP on CPU%u, registers:",
    "BUG: hard lockup - CPU#%u stuck",
    "NMI watchdog: BUG: hard lockup - CPU#%u stuck",
];

/// Since 7.0 the reporting CPU comes first: `watchdog: CPU%u: Watchdog detected hard LOCKUP
/// on cpu %u`; the second is the locked-up one.
const HARD_LOCKUP_REPORTED_BY: &str = "watchdog: CPU%u: Watchdog detected hard LOCKUP on cpu %u";

/// powerpc's SMP check: one CPU reports the others (`%*pbl`, a CPU list).
const HARD_LOCKUP_OTHERS: &[&str] = &[
    "watchdog: CPU %u detected hard LOCKUP on other CPUs %w",
    "Watchdog CPU:%u detected Hard LOCKUP other CPUS:%w",
];

/// Soft, hard and workqueue lockups.
pub(super) fn lockup_head(line: &str) -> Option<Head> {
    // Every lockup head names one (`soft lockup`, `workqueue lockup`, `hard LOCKUP`): most
    // lines of these first bytes are turned away here.
    if !line.contains("ockup") && !line.contains("OCKUP") {
        return None;
    }
    if let Some((_, c)) = kmatch_any(SOFT_LOCKUP, line) {
        let f = Fields {
            cpu: c.u32(0),
            seconds: c.u64(1),
            comm: c.string(2),
            pid: c.u32(3),
            ..Fields::default()
        };
        return Head::new(EventKind::SoftLockup, Role::Splat, f);
    }
    if let Some(f) = workqueue_lockup_fields(line) {
        return Head::new(EventKind::WorkqueueLockup, Role::Splat, f);
    }
    hard_lockup_fields(line).and_then(|f| Head::new(EventKind::HardLockup, Role::Splat, f))
}

/// The CPU(s) of a hard-lockup head, when `line` is one.
pub(super) fn hard_lockup_fields(line: &str) -> Option<Fields> {
    let mut f = Fields::default();
    if let Some((_, c)) = kmatch_any(HARD_LOCKUP, line) {
        f.cpu = c.u32(0);
    } else if let Some(c) = kmatch(HARD_LOCKUP_REPORTED_BY, line) {
        f.cpu = c.u32(1);
    } else if let Some((_, c)) = kmatch_any(HARD_LOCKUP_OTHERS, line) {
        f.cpus = parse_cpu_list(c.get(1));
    } else {
        return None;
    }
    Some(f)
}

/// `BUG: workqueue lockup - pool cpus=0-3 node=0 flags=0x0 nice=0 stuck for 33s!`
/// (kernel/workqueue.c, pr_cont_pool_info): `node=` only for a pool bound to a node, and
/// since 6.9 a BH pool says ` bh` or ` bh-hi` instead of its nice level.
pub(super) fn workqueue_lockup_fields(line: &str) -> Option<Fields> {
    let rest = line.strip_prefix("BUG: workqueue lockup - pool cpus=")?;
    let (cpus, rest) = rest.split_once(' ')?;
    let rest = match rest.strip_prefix("node=") {
        Some(r) => {
            let (_, r) = leading_u32(r)?;
            r.strip_prefix(' ')?
        }
        None => rest,
    };
    let c = kmatch("flags=0x%x%s stuck for %us!", rest)?;
    // Between flags and `stuck`: ` nice=N`, ` bh` or ` bh-hi` (the extracted format joins
    // the branches: ` bh-hi nice=N`).
    let mut mid = c.get(1);
    for opt in [" bh-hi", " bh"] {
        if let Some(r) = mid.strip_prefix(opt) {
            mid = r;
            break;
        }
    }
    if !mid.is_empty() && kmatch(" nice=%d", mid).is_none() {
        return None;
    }
    let seconds = c.u64(2);
    let cpu_list = parse_cpu_list(cpus);
    if cpu_list.is_empty() {
        return None;
    }
    Some(Fields {
        cpus: cpu_list,
        seconds,
        ..Fields::default()
    })
}

/// powerpc's timebase details after its hard-lockup reports.
pub(super) fn hard_lockup_continuation(t: &str) -> Option<Fields> {
    const TB: &[&str] = &[
        "watchdog: CPU %u TB:%d, last heartbeat TB:%d (%dms ago)",
        "watchdog: CPU %u TB:%d, last SMP heartbeat TB:%d (%dms ago)",
        "Watchdog CPU:%u TB:%d, last heartbeat TB:%d (%dms ago)",
        "Watchdog CPU:%u TB:%d, last SMP heartbeat TB:%d (%dms ago)",
    ];
    kmatch_any(TB, t).map(|_| Fields::default())
}

/// `Kernel panic - not syncing: <reason>`: the reasons the lockup, hung-task, RCU and
/// workqueue detectors give (kernel/watchdog.c, hung_task.c, rcu/tree_stall.h,
/// workqueue.c; sparc's and 3.x's `Watchdog detected hard LOCKUP on cpu N`).
pub(super) fn lockup_panic(reason: &str) -> Option<(EventKind, Fields)> {
    let kind = match reason {
        "softlockup: hung tasks" => EventKind::SoftLockup,
        "Hard LOCKUP" => EventKind::HardLockup,
        "hung_task: blocked tasks" => EventKind::HungTask,
        "RCU Stall" => EventKind::RcuStall,
        _ => {
            if let Some(f) = hard_lockup_fields(reason) {
                return Some((EventKind::HardLockup, f));
            }
            let wq = [
                "workqueue: %u stall(s) exceeded threshold %u",
                "workqueue: stall lasted %us, exceeding threshold %us",
            ];
            kmatch_any(&wq, reason)?;
            EventKind::WorkqueueLockup
        }
    };
    Some((kind, Fields::default()))
}

pub(super) fn hung_task_continuation(t: &str) -> Option<Fields> {
    const PREFIXES: &[&str] = &[
        "Not tainted",
        "Tainted:",
        "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\"",
        // 6.14+: `INFO: task X:1 is blocked on a mutex likely owned by task Y:2.`
        "INFO: task ",
        "INFO: lockdep is turned off",
        // 6.16+: the blocked task is dumping core.
        "Blocked by coredump.",
    ];
    PREFIXES
        .iter()
        .any(|p| t.starts_with(p))
        .then(Fields::default)
}

/// Pre-5.x `sched_show_task` line: `mkdir           D    0  1234   1000 0x00000000`,
/// `kworker/3:1     R  running task        0   123      2 0x00000008`.
pub(super) fn is_old_task_state_line(t: &str) -> bool {
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

pub(super) fn soft_lockup_continuation(t: &str) -> Option<Fields> {
    // 6.x adds CPU utilisation during the lockup:
    // `CPU#3 Utilization every 4s during lockup:` / `#1: 100% system, 0% softirq, ...`.
    // 6.12+ adds the most frequent hard IRQs: `CPU#2 Detect HardIRQ Time exceeds 50%.
    // Most frequent HardIRQs:` / `#1: 6342      irq#25`.
    let utilisation = kmatch("CPU#%u Utilization every %w during lockup:", t).is_some()
        || kmatch(
            "CPU#%u Detect HardIRQ Time exceeds %u%%. Most frequent HardIRQs:",
            t,
        )
        .is_some()
        || (t.starts_with('#') && (t.contains("% system") || t.contains("irq#")));
    utilisation.then(Fields::default)
}

pub(super) fn workqueue_continuation(t: &str) -> Option<Fields> {
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
        // 6.9+: workers of a stalled pool, and a pool with no running worker.
        "Showing backtraces of busy workers in stalled worker pools:",
        "The pool might have trouble waking an idle worker.",
    ];
    PREFIXES
        .iter()
        .any(|p| t.starts_with(p))
        .then(Fields::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

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
                "INFO: task my task:with:co:4321 blocked for more than 120 seconds.",
                "my task:with:co",
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
}
