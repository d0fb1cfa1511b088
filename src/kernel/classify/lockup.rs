//! Lockups and hung tasks: soft and hard lockups, workqueue lockups, `INFO: task ... blocked`,
//! `Kernel panic - not syncing` (kernel/watchdog.c, kernel/hung_task.c,
//! kernel/workqueue.c, kernel/panic.c).

use super::*;

/// `INFO: task <comm>:<pid> blocked for more than <N> seconds.`; the comm may contain
/// spaces and colons, so the pid is the number after the last colon.
pub(super) fn hung_task_head(line: &str) -> Option<Head> {
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
pub(super) fn lockup_head(line: &str) -> Option<Head> {
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
pub(super) fn hard_lockup_fields(s: &str) -> Fields {
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

pub(super) fn panic_head(line: &str) -> Option<Head> {
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

pub(super) fn hung_task_continuation(t: &str) -> Option<Fields> {
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
    let utilisation = (t.starts_with("CPU#") && t.contains("Utilization every"))
        || (t.starts_with('#') && t.contains("% system"));
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
