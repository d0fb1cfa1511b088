//! OOM kills: `invoked oom-killer`, the constraint line, `Killed process` and the reaper
//! (mm/oom_kill.c).

use super::pattern::COMM_MAX;
use super::*;

/// The OOM report's first line, `<comm> invoked oom-killer: gfp_mask=...` (mm/oom_kill.c
/// dump_header()), matched whole: 4.10+, with `nodemask=` 4.8-4.19, and the 2.6-4.7 forms.
const INVOKED: &[&str] = &[
    "%c invoked oom-killer: gfp_mask=0x%x(%s), order=%d, oom_score_adj=%d",
    "%c invoked oom-killer: gfp_mask=0x%x(%s), nodemask=%s, order=%d, oom_score_adj=%d",
    "%c invoked oom-killer: gfp_mask=0x%x, order=%d, oom_score_adj=%d",
    "%c invoked oom-killer: gfp_mask=0x%x, order=%d, oom_adj=%d, oom_score_adj=%d",
    "%c invoked oom-killer: gfp_mask=0x%x, order=%d, oom_adj=%d",
];

const INVOKED_MARK: &str = " invoked oom-killer: gfp_mask=0x";

/// The allocating task's comm comes first, so this head has no fixed first byte: it is
/// looked for where it can stand, after at most 15 bytes of comm.
pub(super) fn oom_invoked_head(line: &str) -> Option<Head> {
    let window = line.get(..COMM_MAX + INVOKED_MARK.len()).unwrap_or(line);
    // A short needle: std's SIMD search (every line that is no head comes here).
    if !window.contains(" invoked oom-killer") {
        return None;
    }
    kmatch_any(INVOKED, line)?;
    Head::new(EventKind::OomKill, Role::OomStart, Fields::default())
}

/// What comes before `Killed process`: the kind of OOM (mm/oom_kill.c, `message` of
/// oom_kill_process()), or nothing (4.x-5.0 printed the victim on a line of its own).
const VICTIM_PREFIXES: &[(&str, Option<bool>)] = &[
    ("Out of memory: ", Some(false)),
    ("Memory cgroup out of memory: ", Some(true)),
    ("Out of memory (oom_kill_allocating_task): ", Some(false)),
    ("", None),
];

/// `[<prefix>: ]Killed process 1234 (prometheus) total-vm:...` and the old
/// `<prefix>: Kill process N (x) score N or sacrifice child` (before 5.1).
pub(super) fn oom_victim_head(line: &str) -> Option<Head> {
    for (prefix, memcg) in VICTIM_PREFIXES {
        let Some(rest) = line.strip_prefix(prefix) else {
            continue;
        };
        if let Some(s) = rest.strip_prefix("Killed process ") {
            let (pid, comm) = pid_and_comm(s, killed_tail)?;
            let fields = Fields {
                pid: Some(pid),
                comm: Some(comm.to_string()),
                memcg: *memcg,
                ..Fields::default()
            };
            return Head::new(EventKind::OomKill, Role::OomKilled, fields);
        }
        if memcg.is_some()
            && let Some(s) = rest
                .strip_prefix("Kill process ")
                .or_else(|| rest.strip_prefix("kill process "))
        {
            let (pid, comm) =
                pid_and_comm(s, |t| kmatch(" score %u or sacrifice child", t).is_some())?;
            let fields = Fields {
                pid: Some(pid),
                comm: Some(comm.to_string()),
                memcg: *memcg,
                ..Fields::default()
            };
            return Head::new(EventKind::OomKill, Role::OomDetail, fields);
        }
    }
    None
}

/// After `Killed process N (comm)`: nothing, or the kernel's sizes
/// (` total-vm:1817344kB, anon-rss:712340kB, ..., UID:65534 pgtables:1640kB oom_score_adj:999`).
fn killed_tail(t: &str) -> bool {
    t.is_empty()
        || t.strip_prefix(" total-vm:").is_some_and(|r| {
            r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" :,-_".contains(&b))
        })
}

/// `1234 (comm)<tail>`: the comm is at most 15 bytes and may itself hold parentheses
/// (`(sd-pam)`), so the kernel's `)` is the one the tail fits after.
pub(super) fn pid_and_comm(s: &str, tail_ok: impl Fn(&str) -> bool) -> Option<(u32, &str)> {
    let (pid, rest) = leading_u32(s)?;
    let rest = rest.strip_prefix(" (")?;
    rest.match_indices(')')
        .take_while(|(i, _)| *i <= COMM_MAX)
        .find(|(i, _)| tail_ok(&rest[i + 1..]))
        .map(|(i, _)| (pid, &rest[..i]))
}

pub(super) fn oom_small_head(line: &str) -> Option<Head> {
    if let Some(kv) = line.strip_prefix("oom-kill:") {
        // `...,task=<comm>,pid=N,uid=N` ends the line; the comm may hold commas.
        let tail = kmatch("%s,task=%c,pid=%d,uid=%d", kv)?;
        let mut f = Fields {
            comm: tail.string(1),
            pid: tail.u32(2),
            ..Fields::default()
        };
        for pair in tail.get(0).split(',') {
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
                _ => {}
            }
        }
        f.constraint.as_ref()?;
        return Head::new(EventKind::OomKill, Role::OomDetail, f);
    }
    let rest = line.strip_prefix("oom_reaper: reaped process ")?;
    let (pid, comm) = pid_and_comm(rest, |t| {
        t.strip_prefix(", now anon-rss:").is_some_and(|r| {
            r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" :,-_".contains(&b))
        })
    })?;
    let fields = Fields {
        pid: Some(pid),
        comm: Some(comm.to_string()),
        ..Fields::default()
    };
    Head::new(EventKind::OomKill, Role::OomReaped, fields)
}

/// `Kernel panic - not syncing:` from the OOM killer: panic_on_oom, or nothing to kill.
pub(super) fn oom_panic(reason: &str) -> Option<(EventKind, Fields)> {
    let ok = kmatch("Out of memory: %s panic_on_oom is enabled", reason).is_some()
        || reason == "System is deadlocked on memory"
        || reason == "Out of memory and no killable processes...";
    ok.then(|| (EventKind::OomKill, Fields::default()))
}

/// Every OOM head with a fixed first word.
pub(super) fn oom_head(line: &str) -> Option<Head> {
    oom_victim_head(line).or_else(|| oom_small_head(line))
}

/// Inside an OOM report before the kill: every line belongs; pick up the cgroup from
/// the old `Task in /a killed as a result of limit of /b` line.
pub(super) fn oom_dump_fields(line: &str) -> Fields {
    let mut f = Fields::default();
    if let Some(rest) = line.trim_start().strip_prefix("Task in ")
        && let Some((task, limit)) = rest.split_once(" killed as a result of limit of ")
    {
        f.cgroup = Some(task.to_string());
        f.oom_cgroup = Some(limit.trim_end().to_string());
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

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
}
