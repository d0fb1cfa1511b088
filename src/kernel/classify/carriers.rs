//! Kernel records that carry text a user chooses (issue 18 point 1): they are never heads of
//! any kind, and never follow-ups of an open splat.
//!
//! The facility check keeps out what userspace writes to `/dev/kmsg`, but the kernel itself
//! prints a task's comm (15 bytes, chosen with `prctl(PR_SET_NAME)` or the name of the
//! executable) and file names (255 bytes, any byte but `/` and NUL, newlines included) in its
//! reports about user-space faults and signals. Any local user, or any process in any pod,
//! can make the kernel print these. Recognised here, from the formats in the sources
//! (tests/fixtures/kernel-formats/*/user-text-carriers.jsonl):
//!
//! - comm first (the comm may be empty): x86 `%s[%d]: segfault at ...` (show_signal_msg,
//!   `debug.exception-trace`),
//!   arm64 `%s[%d]: unhandled exception: ...` (arm64_show_signal), x86 CET
//!   `%s[%d] control protection ...`, arm `%s (%d): undefined instruction: ...`,
//!   `%s: unhandled page fault (...`, `%s: CONFIG_KUSER_HELPERS disabled at ...`, and
//!   `%s/%d: reached RLIMIT_SIGPENDING ...` (kernel/signal.c);
//! - pid first: arm `[%d] %s: obsolete system call ...`, `arm syscall`, `bad data abort`;
//! - fixed prefixes: x86 `traps: %s[%d] ...`, `umip: %s[%d] ...`, `process '%pD4' started
//!   with executable stack` and `process '%s' launched '%s' with NULL argv` (fs/exec.c),
//!   `ptrace %s of "%s"[%d] was attempted by ...` (yama), and audit records
//!   (`audit: type=%d %s`, old kernels' `type=%d audit(...)`);
//! - a fixed suffix: print_fatal_signal's `...: potentially unexpected fatal signal %d.`
//!   (`kernel.print-fatal-signals`), which since 6.13 starts with the executable's file name
//!   (`%pD: %s: `), unbounded, so only its end is the kernel's.
//!
//! The check looks at the whole record: its first bytes (where a comm or a prefix stands)
//! and its last bytes (where the fixed suffix stands), so a name with a newline in it does
//! not hide the carrier behind a line that looks like a head.

use super::pattern::COMM_MAX;

/// Prefixes the kernel prints before user-chosen text.
const PREFIXES: &[&str] = &[
    "traps: ",
    "umip: ",
    "process '",
    "ptrace ",
    "audit: ",
    "audit(",
];

/// After a comm that starts the record: the rest of a carrier's fixed text.
const AFTER_COMM: &[&str] = &[
    ": unhandled page fault (",
    ": CONFIG_KUSER_HELPERS disabled at ",
];

const FATAL_SIGNAL: &str = "potentially unexpected fatal signal ";

/// True when `record` (a whole record, every line of it) is one of the kernel's reports
/// that embed a user-chosen name.
pub(super) fn is_user_text_carrier(record: &str) -> bool {
    let r = record.as_bytes();
    if PREFIXES.iter().any(|p| record.starts_with(p)) || old_audit(r) {
        return true;
    }
    if fatal_signal_suffix(record) {
        return true;
    }
    // A comm of at most 15 bytes, then the carrier's own text.
    let end = (COMM_MAX + 1).min(r.len());
    (0..end).any(|p| match r[p] {
        // `comm[pid]: ...` (an empty comm too), and x86 CET's `comm[pid] control protection`
        b'[' => {
            digits_then(r, p + 1, b"]: ")
                || digits_then(r, p + 1, b"] control protection ")
                || (p == 0 && arm_pid_first(r))
        }
        // `comm (pid): ...`
        b' ' => r.get(p + 1) == Some(&b'(') && digits_then(r, p + 2, b"): "),
        // `comm/pid: reached RLIMIT_SIGPENDING, dropped signal N`
        b'/' => digits_then(r, p + 1, b": reached RLIMIT_SIGPENDING"),
        b':' => AFTER_COMM.iter().any(|a| r[p..].starts_with(a.as_bytes())),
        _ => false,
    })
}

/// arm's `[pid] comm: obsolete system call ...`, `arm syscall`, `bad data abort:`.
fn arm_pid_first(r: &[u8]) -> bool {
    let digits = r[1..].iter().take_while(|b| b.is_ascii_digit()).count();
    let Some(rest) = r.get(1 + digits..).and_then(|t| t.strip_prefix(b"] ")) else {
        return false;
    };
    if digits == 0 {
        return false;
    }
    let window = &rest[..rest.len().min(COMM_MAX + 24)];
    [
        &b": obsolete system call "[..],
        b": arm syscall ",
        b": bad data abort: ",
    ]
    .iter()
    .any(|t| window.windows(t.len()).any(|w| w == *t))
}

/// One or more digits at `at`, then `then`.
fn digits_then(r: &[u8], at: usize, then: &[u8]) -> bool {
    let n = r
        .get(at..)
        .map_or(0, |t| t.iter().take_while(|b| b.is_ascii_digit()).count());
    n > 0 && r[at + n..].starts_with(then)
}

/// `type=1400 audit(...`: audit records of kernels before 3.16, without `audit: `.
fn old_audit(r: &[u8]) -> bool {
    r.starts_with(b"type=") && digits_then(r, 5, b" audit(")
}

/// `[...: ]potentially unexpected fatal signal 11.` at the very end.
fn fatal_signal_suffix(record: &str) -> bool {
    let Some(t) = record.trim_end().strip_suffix('.') else {
        return false;
    };
    let digits = t.bytes().rev().take_while(u8::is_ascii_digit).count();
    digits > 0 && t[..t.len() - digits].ends_with(FATAL_SIGNAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriers_from_the_kernel_sources_are_recognised() {
        let carriers = [
            "w detected hard[1234]: segfault at 0 ip 0000000000401000 sp 00007ffc error 6 in a.out[401000+1000] likely on CPU 0 (core 0, socket 0)",
            "INFO: task cont[1234]: segfault at 0 ip 0 sp 0 error 4",
            "x[1]: unhandled exception: DABT (lower EL), ESR 0x92000046, level 0 translation fault in a.out[400000+1000]",
            "[1234] rcu: INFO: rc: obsolete system call 00900001.",
            "rcu: INFO: rcu_ (1234): undefined instruction: pc=00000000",
            "rcu: INFO: rcu_: unhandled page fault (11) at 0x00000000, code 0x017",
            "k: CONFIG_KUSER_HELPERS disabled at 0xffff0fa0",
            "nfs: server a/77: reached RLIMIT_SIGPENDING, dropped signal 10",
            "x[1] control protection ip:401000 sp:7ffc ssp:7ffc error:1(near ret) in a.out[401000+1000]",
            "traps: rcu: INFO: rc[1] general protection fault ip:401000 sp:7ffc error:0 in a.out[401000+1000]",
            "umip: x[1] ip:401000 sp:7ffc: SGDT instruction cannot be used by applications.",
            "process './rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:' started with executable stack",
            "process 'x' launched 'y' with NULL argv: empty string added",
            "ptrace attach of \"x\"[1] was attempted by \"y\"[2]",
            "audit: type=1400 audit(1700000000.123:45): apparmor=\"DENIED\" name=\"/rcu: INFO\"",
            "type=1400 audit(1700000000.123:45): avc:  denied",
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:: rcu: INFO: rcu_p: potentially unexpected fatal signal 11.",
            "x\nrcu: INFO: rcu_preempt detected stalls on CPUs/tasks:: x: potentially unexpected fatal signal 6.",
            "potentially unexpected fatal signal 11.",
        ];
        for c in carriers {
            assert!(is_user_text_carrier(c), "{c:?}");
        }
    }

    #[test]
    fn kernel_heads_are_not_carriers() {
        let heads = [
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "INFO: task mkdir:1234 blocked for more than 122 seconds.",
            "watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [containerd:1234]",
            "sd 0:0:0:0: [sda] tag#0 uas_eh_abort_handler 0 uas-tag 1 inflight: CMD",
            "Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP",
            "Oops: 0002 [#1] SMP NOPTI",
            "usb 2-1: reset SuperSpeed USB device number 2 using xhci_hcd",
            "containerd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
            "EXT4-fs error (device sda2): ext4_lookup:1855: inode #2: comm ls: deleted inode referenced: 12",
            "",
        ];
        for h in heads {
            assert!(!is_user_text_carrier(h), "{h:?}");
        }
    }
}
