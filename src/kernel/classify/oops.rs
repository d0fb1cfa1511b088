//! Oopses, BUGs, WARNINGs and panics on x86, arm64 and arm (arch/*/mm/fault.c and
//! kernel/traps.c, arch/x86/kernel/dumpstack.c, kernel/panic.c, lib/bug.c,
//! lib/dump_stack.c): one oops is one event.
//!
//! An oops prints its head (`Unable to handle kernel ...`, `BUG: ...`, `kernel BUG at`),
//! then the die line (`Internal error: Oops: ...`, x86 `Oops: 0000 [#1] ...`), which joins
//! the head's event, then a dump whose shapes differ per architecture and version (fault
//! decoding, page tables, registers, modules, stack, code), swallowed whole up to
//! `---[ end trace ... ]---`; a `Kernel panic - not syncing:` after it joins too.
//!
//! The Raspberry Pi firmware driver's `get_throttled` sysfs file prints a WARNING with a
//! backtrace on every read (`WARN_ONCE(1, "deprecated, use hwmon sysfs instead")` in
//! drivers/firmware/raspberrypi.c): a deprecation notice, not a kernel fault, so not a head.

use super::pattern::COMM_MAX;
use super::*;

/// The oops kinds in [`Fields::oops`].
const OOPS: &str = "oops";
const BUG: &str = "bug";
const WARNING: &str = "warning";
const PANIC: &str = "panic";
const SERROR: &str = "serror";

fn head(role: Role, oops: &str, mut f: Fields, line: &str) -> Option<Head> {
    f.oops = Some(oops.to_string());
    f.detail = Some(detail(line));
    Head::new(EventKind::KernelOops, role, f)
}

/// The message for condition texts, bounded.
pub(super) fn detail(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Page-fault and trap heads (arm64, arm, x86), each matched whole.
const FAULT_HEADS: &[(&str, &str)] = &[
    // arm64 die_kernel_fault(), arm __do_kernel_fault() (6.12+ adds `when read|write|...`)
    ("Unable to handle kernel %s at virtual address %x", OOPS),
    (
        "Unable to handle kernel %s at virtual address %x when %w",
        OOPS,
    ),
    // arm do_DataAbort()/do_PrefetchAbort() for faults nobody handles
    ("Unhandled fault: %s (0x%x) at 0x%x", OOPS),
    ("Unhandled prefetch abort: %s (0x%x) at 0x%x", OOPS),
    // x86 show_fault_oops(), 5.1+ and 4.x
    ("BUG: kernel NULL pointer dereference, address: %x", OOPS),
    ("BUG: unable to handle page fault for address: %x", OOPS),
    (
        "BUG: unable to handle kernel NULL pointer dereference at %x",
        OOPS,
    ),
    ("BUG: unable to handle kernel paging request at %x", OOPS),
    (
        "BUG: %w stack guard page was hit at %x (stack is %x..%x)",
        OOPS,
    ),
    // kernel/workqueue.c: a work item returned with a lock held or atomic
    ("BUG: workqueue leaked lock or atomic: %s", BUG),
    ("BUG: workqueue leaked atomic, lock or RCU: %s", BUG),
    // lib/bug.c report_bug()
    ("kernel BUG at %s:%u!", BUG),
    ("Kernel BUG at %s [verbose debug info unavailable]", BUG),
    ("kernel BUG at %s [verbose debug info unavailable]", BUG),
    // arm64: an asynchronous external abort, a bad exception vector, a stack overflow
    ("SError Interrupt on CPU%u, code 0x%x -- %s", SERROR),
    ("Bad mode in %w handler detected", OOPS),
    (
        "Bad mode in %w handler detected on CPU%u, code 0x%x -- %s",
        OOPS,
    ),
    ("Insufficient stack space to handle exception!", OOPS),
    // arm: __div0()
    ("Division by zero in kernel.", BUG),
];

/// x86's kernel-mode split lock (arch/x86/kernel/traps.c): the die string ends with a
/// newline, so the record's next line is `: 0000 [#1] SMP NOPTI`.
const SPLIT_LOCK: &[&str] = &["Split lock detected", "Oops: Split lock detected"];

/// The die line: joins an oops whose head came first. `%s` after `[#N]` is the build's
/// flags (` PREEMPT SMP NOPTI`, ` SMP`, ` ARM`), checked by [`die_flags`].
const DIE_LINES: &[&str] = &[
    // arm64 and arm __die(): `Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP`
    "Internal error: %s: %x [#%u]%s",
    // x86 6.12+: `Oops: general protection fault, ...: 0000 [#1]`, `Oops: Oops: 0002 [#1]`
    "Oops: %s: %x [#%u]%s",
    // x86 before 6.12: `Oops: 0002 [#1] SMP`, `general protection fault: 0000 [#1] SMP`
    "Oops: %x [#%u]%s",
];

const WARNINGS: &[&str] = &[
    // kernel/panic.c __warn(), 4.x-6.x
    "WARNING: CPU: %u PID: %d at %s",
    // 7.x
    "WARNING: %s at %s, CPU#%u: %c/%d",
    "WARNING: at %s, CPU#%u: %c/%d",
    // 2.6-3.x
    "WARNING: at %s",
];

/// Heads with a fixed first word.
pub(super) fn oops_head(line: &str) -> Option<Head> {
    for (fmt, oops) in FAULT_HEADS {
        if kmatch(fmt, line).is_some() {
            return head(Role::Splat, oops, Fields::default(), line);
        }
    }
    if SPLIT_LOCK.contains(&line) {
        return head(Role::OopsJoin, OOPS, Fields::default(), line);
    }
    if let Some((_, c)) = kmatch_any(DIE_LINES, line) {
        // The flags come last: the `%s` before them is the die string.
        let flags = c.get(c_last(&c));
        if die_flags(flags) {
            return head(Role::OopsJoin, OOPS, Fields::default(), line);
        }
    }
    if let Some((i, c)) = kmatch_any(WARNINGS, line) {
        // Where it fired: the location, or the function of the 7.x forms.
        let at = match i {
            0 => c.get(2),
            1 => c.get(1),
            _ => c.get(0),
        };
        if at.contains("get_throttled_show") {
            return None;
        }
        let mut f = Fields::default();
        if i == 1 || i == 2 {
            f.comm = c.string(c_last(&c) - 1);
            f.pid = c.u32(c_last(&c));
        }
        return head(Role::Splat, WARNING, f, line);
    }
    None
}

/// The index of the last conversion of a match.
fn c_last(c: &pattern::Caps) -> usize {
    (0..10).rfind(|&i| c.string(i).is_some()).unwrap_or(0)
}

/// ` PREEMPT SMP NOPTI`, ` SMP`, `  SMP` (7.x), ` ARM`, ` THUMB2`, empty.
fn die_flags(flags: &str) -> bool {
    flags
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_')
}

/// x86 before 6.12 prints the die string first (`general protection fault, probably for
/// non-canonical address 0x...: 0000 [#1] SMP NOPTI`, `double fault: 0000 [#1] SMP`):
/// no fixed first byte, so it is looked for by its ` [#` and matched whole.
pub(super) fn x86_die_head(line: &str) -> Option<Head> {
    // The die line's `[#N]` stands within its first ~100 bytes.
    if !line.get(..160).unwrap_or(line).contains(" [#") {
        return None;
    }
    let c = kmatch("%s: %x [#%u]%s", line)?;
    let (what, code, flags) = (c.get(0), c.get(1), c.get(3));
    if code.len() != 4 || what.is_empty() || !die_flags(flags) {
        return None;
    }
    head(Role::OopsJoin, OOPS, Fields::default(), line)
}

/// x86 pgtable_bad(): `<comm>: Corrupted page table at address <addr>`.
pub(super) fn corrupted_page_table_head(line: &str) -> Option<Head> {
    const MARK: &str = ": Corrupted page table at address ";
    let window = line.get(..COMM_MAX + MARK.len()).unwrap_or(line);
    // A short needle: std's SIMD search (every line that is no head comes here).
    if !window.contains("Corrupted page table") {
        return None;
    }
    let c = kmatch("%c: Corrupted page table at address %x", line)?;
    let f = Fields {
        comm: c.string(0),
        ..Fields::default()
    };
    head(Role::Splat, OOPS, f, line)
}

/// `Kernel panic - not syncing: <reason>` whose reason no other family claims.
pub(super) fn oops_panic(reason: &str) -> (EventKind, Fields) {
    let f = Fields {
        oops: Some(PANIC.to_string()),
        detail: Some(detail(reason)),
        // An oops in interrupt context kills no task: the kernel itself is broken.
        kernel_thread: reason.ends_with("in interrupt").then_some(true),
        ..Fields::default()
    };
    (EventKind::KernelOops, f)
}

/// Kernel threads an oops can hit: nothing restarts them. A user task can take such a
/// name, but it must also hit a kernel bug first.
const KTHREAD_PREFIXES: &[&str] = &[
    "kworker/",
    "ksoftirqd/",
    "kthreadd",
    "migration/",
    "rcu_",
    "cpuhp/",
    "idle_inject/",
    "irq/",
    "jbd2/",
    "kswapd",
    "khugepaged",
    "kcompactd",
    "kauditd",
    "oom_reaper",
    "scsi_eh_",
    "usb-storage",
    "xfsaild/",
    "btrfs-",
    "kblockd",
    "swapper/",
    "watchdog/",
    "kdevtmpfs",
    "khungtaskd",
    "mmcqd/",
];

/// A line of an oops body; true when it is the end marker.
pub(super) fn oops_dump_fields(line: &str) -> (Fields, bool) {
    let t = line.trim_start();
    let end = t.starts_with("---[ end trace") || t.starts_with("---[ end Kernel panic");
    let mut f = Fields::default();
    if let Some(rest) = t.strip_prefix("CPU: ") {
        task_line(rest, &mut f);
    } else if t.starts_with("Workqueue: ") {
        f.kernel_thread = Some(true);
    }
    (f, end)
}

/// `CPU: 2 [UID: 0 ]PID: 1234 Comm: containerd Not tainted 6.12.0 #1` (lib/dump_stack.c):
/// the task, whether it is a kernel thread, and the taint flags.
fn task_line(rest: &str, f: &mut Fields) {
    let Some(at) = rest.find("PID: ") else {
        return;
    };
    let Some((pid, tail)) = leading_u32(&rest[at + 5..]) else {
        return;
    };
    let Some(comm_and_more) = tail.strip_prefix(" Comm: ") else {
        return;
    };
    // The comm is at most 15 bytes and may itself hold the words that follow it: the
    // kernel's marker is the last one that starts within 15 bytes.
    let marker = [" Not tainted", " Tainted: "]
        .iter()
        .flat_map(|m| comm_and_more.match_indices(m))
        .filter(|(i, _)| *i <= COMM_MAX)
        .max_by_key(|(i, _)| *i);
    let Some((i, m)) = marker else {
        return;
    };
    let comm = &comm_and_more[..i];
    f.pid = Some(pid);
    f.comm = Some(comm.to_string());
    f.kernel_thread = Some(pid == 0 || KTHREAD_PREFIXES.iter().any(|p| comm.starts_with(p)));
    if m == " Tainted: " {
        // `Tainted: G      D W  ` then the release, which starts with a digit.
        let flags: String = comm_and_more[i + m.len()..]
            .chars()
            .take_while(|c| !c.is_ascii_digit())
            .filter(char::is_ascii_uppercase)
            .collect();
        f.taint = Some(flags);
    }
}

/// After the end marker: what may still follow (the panic joins as a head).
pub(super) fn oops_after_end(t: &str) -> Option<Fields> {
    const AFTER: &[&str] = &[
        "note: ",
        "Fixing recursive fault",
        "Rebooting in",
        "SMP: stopping",
    ];
    AFTER.iter().any(|p| t.starts_with(p)).then(Fields::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

    fn oops_kind(line: &str) -> Option<String> {
        let v = verdict(line);
        (v.kind == Some(EventKind::KernelOops)).then(|| v.fields.oops.unwrap_or_default())
    }

    #[test]
    fn oops_heads_on_three_architectures() {
        for (line, kind) in [
            (
                "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008",
                "oops",
            ),
            (
                "Unable to handle kernel paging request at virtual address ffff800012345678",
                "oops",
            ),
            (
                "Unable to handle kernel NULL pointer dereference at virtual address 00000004 when read",
                "oops",
            ),
            (
                "BUG: kernel NULL pointer dereference, address: 0000000000000008",
                "oops",
            ),
            (
                "BUG: unable to handle kernel NULL pointer dereference at 0000000000000008",
                "oops",
            ),
            ("kernel BUG at fs/ext4/inode.c:1234!", "bug"),
            (
                "Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP",
                "oops",
            ),
            (
                "Internal error: Oops - BUG: 00000000f2000800 [#1] SMP",
                "oops",
            ),
            ("Internal error: Oops: 17 [#1] ARM", "oops"),
            ("Oops: 0002 [#1] PREEMPT SMP NOPTI", "oops"),
            (
                "Oops: general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] PREEMPT SMP NOPTI",
                "oops",
            ),
            (
                "general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP NOPTI",
                "oops",
            ),
            ("invalid opcode: 0000 [#1] PREEMPT SMP PTI", "oops"),
            (
                "WARNING: CPU: 1 PID: 812 at fs/ext4/inode.c:3611 ext4_set_page_dirty+0x4c/0x60",
                "warning",
            ),
            (
                "WARNING: fs/ext4/inode.c:3611 at ext4_set_page_dirty+0x4c/0x60, CPU#1: k3s-server/812",
                "warning",
            ),
            (
                "SError Interrupt on CPU2, code 0x00000000bf000002 -- SError",
                "serror",
            ),
        ] {
            assert_eq!(oops_kind(line).as_deref(), Some(kind), "{line:?}");
        }
        // The Pi's deprecated get_throttled file prints a WARNING on every read.
        assert_eq!(
            verdict(
                "WARNING: CPU: 0 PID: 4121 at drivers/firmware/raspberrypi.c:237 get_throttled_show+0x48/0x50"
            ),
            LineVerdict::none()
        );
        // Not oopses: a bug check that does not die, an ordinary line with a `[#`.
        for line in [
            "BUG: scheduling while atomic: swapper/0/0/0x00000002",
            "hid-generic 0003:046D:C52B.0003: input [#1] foo",
        ] {
            assert_eq!(verdict(line), LineVerdict::none(), "{line:?}");
        }
    }

    #[test]
    fn an_x86_oops_with_its_die_line_and_panic_is_one_event() {
        let lines = [
            "BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "#PF: supervisor read access in kernel mode",
            "#PF: error_code(0x0000) - not-present page",
            "PGD 0 P4D 0 ",
            "Oops: 0000 [#1] PREEMPT SMP NOPTI",
            "CPU: 3 PID: 77 Comm: kworker/3:1 Not tainted 6.1.0-18-amd64 #1  Debian 6.1.76-1",
            "Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2 04/01/2014",
            "Workqueue: events_unbound async_run_entry_fn",
            "RIP: 0010:ext4_lookup+0x24/0x80 [ext4]",
            "Code: 48 8b 47 08 <48> 8b 00 c3",
            "some interleaved line nobody knows",
            "---[ end trace 0000000000000000 ]---",
            "Kernel panic - not syncing: Fatal exception",
        ];
        let (verdicts, events) = run(&lines);
        assert!(verdicts[1..].iter().all(|v| v.continuation), "{verdicts:?}");
        assert_eq!(events.len(), 1);
        let f = &events[0].fields;
        assert_eq!(f.oops.as_deref(), Some("oops"));
        assert_eq!(f.comm.as_deref(), Some("kworker/3:1"));
        assert_eq!(f.pid, Some(77));
        assert_eq!(f.kernel_thread, Some(true));
        assert_eq!(f.panic, Some(true));
    }

    #[test]
    fn the_task_line_gives_comm_pid_and_taint() {
        let mut f = Fields::default();
        task_line(
            "2 UID: 1000 PID: 1234 Comm: a Tainted: b Tainted: G      D W          6.12.47 #1",
            &mut f,
        );
        assert_eq!(f.comm.as_deref(), Some("a Tainted: b"));
        assert_eq!(f.pid, Some(1234));
        assert_eq!(f.taint.as_deref(), Some("GDW"));
        assert_eq!(f.kernel_thread, Some(false));
    }
}
