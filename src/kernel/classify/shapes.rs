//! Line shapes every splat may carry (stack frames, register dumps, hex words, lockdep
//! listings) and the small number parsers the families share.

use super::*;

/// Lines any kernel splat may carry: stack traces, register dumps, NMI backtraces,
/// task dumps, lockdep listings. `t` has leading whitespace removed.
pub(super) fn is_dump_line(t: &str) -> bool {
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
pub(super) fn is_stack_frame(t: &str) -> bool {
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
pub(super) fn is_register_line(t: &str) -> bool {
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
pub(super) fn is_hex_words(t: &str) -> bool {
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
pub(super) fn is_lock_line(t: &str) -> bool {
    (t.starts_with('#') && t.as_bytes().get(1).is_some_and(u8::is_ascii_digit))
        || t.contains(" lock held by ")
        || t.contains(" locks held by ")
}

pub(super) fn leading_u64(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n = s[..digits].parse().ok()?;
    Some((n, &s[digits..]))
}

pub(super) fn leading_u32(s: &str) -> Option<(u32, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n = s[..digits].parse().ok()?;
    Some((n, &s[digits..]))
}

pub(super) fn all_digits_u32(s: &str) -> Option<u32> {
    match leading_u32(s) {
        Some((n, "")) => Some(n),
        _ => None,
    }
}

/// `0-3,5,7-8` -> `[0, 1, 2, 3, 5, 7, 8]`, at most [`MAX_LIST_LEN`] entries.
pub(super) fn parse_cpu_list(s: &str) -> Vec<u32> {
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

    #[test]
    fn cpu_lists_are_expanded_and_bounded() {
        assert_eq!(parse_cpu_list("0-3,5,7-8"), vec![0, 1, 2, 3, 5, 7, 8]);
        assert_eq!(parse_cpu_list("x,2"), vec![2]);
        assert_eq!(parse_cpu_list("0-4294967295").len(), MAX_LIST_LEN);
        assert_eq!(parse_cpu_list("5-1"), Vec::<u32>::new());
    }
}
