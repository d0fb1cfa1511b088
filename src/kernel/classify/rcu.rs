//! RCU stalls: the head line in all its shapes (normal, expedited, self-detected, RCU-tasks,
//! starved kthread), per-CPU and task follow-ups (kernel/rcu/tree_stall.h,
//! kernel/rcu/tasks.h).

use super::*;

/// `[rcu: ]INFO: <flavor> detected stalls on CPUs/tasks:` and its relatives
/// (kernel/rcu/tree_stall.h, tree_exp.h, tasks.h; the `rcu: ` pr_fmt since 4.20), each
/// matched whole: the flavor is the RCU flavor's name, and what older kernels printed after
/// the head on the same line (`{ 1} (detected by 0, t=2102 jiffies, ...)`) is checked for
/// its shape.
pub(super) fn rcu_head(line: &str) -> Option<Head> {
    let s = line.strip_prefix("rcu: ").unwrap_or(line);
    if let Some(c) = kmatch(TASKS_EXIT_SRCU, s) {
        // 6.12+: an exiting task holds up Tasks RCU (tasks_rcu_exit_srcu_stall()).
        let f = Fields {
            flavor: Some("rcu_tasks".into()),
            expedited: Some(false),
            self_detected: Some(false),
            jiffies: c.u64(3),
            ..Fields::default()
        };
        return Head::new(EventKind::RcuStall, Role::Splat, f);
    }
    let rest = s.strip_prefix("INFO: ")?;
    let (flavor, tail) = rest.split_once(' ')?;
    let flavor_ok = flavor.len() > 3
        && flavor.starts_with("rcu")
        && flavor.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if !flavor_ok {
        return None;
    }
    let mut f = Fields {
        flavor: Some(flavor.to_string()),
        expedited: Some(false),
        self_detected: Some(false),
        ..Fields::default()
    };
    if let Some(t) = tail.strip_prefix("self-detected stall on CPU") {
        // Old kernels: `self-detected stall on CPU { 2}  (t=5250 jiffies g=9123 ...)`.
        if !old_stall_tail(t) {
            return None;
        }
        f.self_detected = Some(true);
        braces_into(t, &mut f);
        f.jiffies = t_equals_jiffies(t);
    } else if let Some(t) = tail.strip_prefix("detected expedited stalls on CPUs/tasks: ") {
        // `{ 3-...D P1234 } 21 jiffies s: 1189 root: 0x1/.`; 4.x had no `root:`.
        let after = braces_into(t, &mut f)?;
        let c = expedited_tail(t, after)?;
        f.expedited = Some(true);
        f.jiffies = c;
    } else if let Some(t) = tail.strip_prefix("detected stalls on CPUs/tasks:") {
        // Modern: nothing more on this line. Old: `{ 1} (detected by 0, t=2102 jiffies, ...)`.
        if !old_stall_tail(t) {
            return None;
        }
        braces_into(t, &mut f);
        f.jiffies = t_equals_jiffies(t);
        f.detected_by = detected_by(t);
    } else if CSD_LOCK.contains(&tail) {
        // 6.12+: the stall report is left out because a CSD lock is stuck.
        f.expedited = Some(tail.starts_with("detected expedited"));
    } else if TASKS_STALL.contains(&tail) {
        // rcu_tasks, rcu_tasks_trace: the holdout tasks follow.
    } else if let Some(c) = kmatch("detected stall on CPU %u (t=%u jiffies)", tail) {
        // 2.6-era: `INFO: rcu_sched_state detected stall on CPU 1 (t=15000 jiffies)`.
        push_unique(&mut f.cpus, c.u32(0)?);
        f.jiffies = c.u64(1);
    } else {
        return None;
    }
    Head::new(EventKind::RcuStall, Role::Splat, f)
}

const TASKS_EXIT_SRCU: &str = "tasks_rcu_exit_srcu_stall: %s grace period number %u (since boot) gp_state: %w is %u jiffies old.";

const CSD_LOCK: &[&str] = &[
    "detected stall, but suppressed full report due to a stuck CSD-lock.",
    "detected expedited stalls, but suppressed full report due to a stuck CSD-lock.",
];

const TASKS_STALL: &[&str] = &[
    "detected stalls on tasks:",
    "detected stalls on tasks",
    "detected stalls? (Late IPI?)",
];

/// What old kernels printed after a stall head on the same line: nothing, or
/// ` { <cpu and task list> }` and ` (detected by N, t=N jiffies, ...)` / `  (t=N jiffies ...)`.
fn old_stall_tail(t: &str) -> bool {
    let mut t = t;
    if let Some(r) = t.strip_prefix(" {") {
        let Some(close) = r.find('}') else {
            return false;
        };
        let list_ok = r[..close]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" .!-/".contains(&b));
        if !list_ok {
            return false;
        }
        t = &r[close + 1..];
    }
    let t = t.trim_start_matches([' ', '\t']);
    if t.is_empty() {
        return true;
    }
    let Some(inner) = t.strip_prefix('(').and_then(|r| r.strip_suffix(')')) else {
        return false;
    };
    (inner.starts_with("detected by ") || inner.starts_with("t="))
        && inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" =,-_".contains(&b))
}

/// ` 21 jiffies s: 1189 root: 0x1/.` after the braces of an expedited stall: the jiffies.
fn expedited_tail(all: &str, after: &str) -> Option<Option<u64>> {
    if !all.starts_with('{') {
        return None;
    }
    let (i, c) = kmatch_any(
        &[" %u jiffies s: %d root: 0x%x/%w", " %u jiffies s: %d"],
        after,
    )?;
    if i == 0 && c.get(3).len() != 1 {
        return None;
    }
    Some(c.u64(0))
}

/// Parses `{ 3-...D P1234 2 }` into CPUs and pids; returns the text after `}`.
pub(super) fn braces_into<'a>(s: &'a str, f: &mut Fields) -> Option<&'a str> {
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
pub(super) fn t_equals_jiffies(s: &str) -> Option<u64> {
    s.match_indices("t=").find_map(|(i, _)| {
        let word_start = i == 0 || matches!(s.as_bytes()[i - 1], b'(' | b' ' | b'\t' | b',');
        if !word_start {
            return None;
        }
        let (n, rest) = leading_u64(&s[i + 2..])?;
        rest.starts_with(" jiffies").then_some(n)
    })
}

pub(super) fn detected_by(s: &str) -> Option<u32> {
    let i = s.find("detected by ")?;
    leading_u32(&s[i + "detected by ".len()..]).map(|(n, _)| n)
}

pub(super) fn rcu_continuation(t: &str, open: &Fields) -> Option<Fields> {
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
        // rcu_tasks_trace: a CPU that never answered the IPI (6.1-6.12).
        "IPI outstanding to CPU ",
        // tasks_rcu_exit_srcu_stall(), 6.12+
        "Please check any exiting tasks stuck between calls to exit_tasks_rcu_start()",
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
pub(super) fn per_cpu_line(s: &str) -> Option<u32> {
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
pub(super) fn task_line_pid(s: &str) -> Option<u32> {
    let i = s.find(" pid:")?;
    leading_u32(s[i + 5..].trim_start()).map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

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
        assert_eq!(e.severity(250), EventSeverity::Critical);
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
        assert_eq!(ev(21).severity(250), EventSeverity::Info);
        assert_eq!(ev(21).severity(FALLBACK_HZ), EventSeverity::Info);
        assert_eq!(ev(21).stall_secs(250), Some(0.084));
        assert_eq!(ev(2500).severity(250), EventSeverity::Warning);
        let mut starved = ev(21);
        starved.fields.kthread_starved_jiffies = Some(10002);
        assert_eq!(starved.severity(250), EventSeverity::Critical);
        let mut no_length = ev(0);
        no_length.fields.jiffies = None;
        assert_eq!(no_length.severity(250), EventSeverity::Warning);
        let mut panicked = ev(21);
        panicked.fields.panic = Some(true);
        assert_eq!(panicked.severity(250), EventSeverity::Critical);
    }
}
