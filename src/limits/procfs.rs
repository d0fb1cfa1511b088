//! Pure parsers of the kernel files the limits are read from (proc(5), cgroup v2's pids
//! controller, netfilter's sysctls). Each takes the file's text and never panics.

/// The number of scheduling entities (threads) that exist now: the denominator of
/// `/proc/loadavg`'s fourth field (`1/523`). Every thread holds a PID, so this is what
/// `pid_max` and `threads-max` bound, and it costs one small read instead of a walk.
pub(crate) fn loadavg_threads(text: &str) -> Option<u64> {
    let field = text.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}

/// One integer sysctl (`/proc/sys/kernel/pid_max`, `.../nf_conntrack_count`...).
pub(crate) fn sysctl_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `/proc/sys/fs/file-nr`: allocated handles, free allocated handles (always 0 since
/// 2.6), and `file-max`. Returns (in use, max).
pub(crate) fn file_nr(text: &str) -> Option<(u64, u64)> {
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (allocated, free, max) = (f.next()??, f.next()??, f.next()??);
    Some((allocated.saturating_sub(free), max))
}

/// A cgroup's `pids.max`: `max` (no limit) or a number.
pub(crate) fn pids_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        n => n.parse().ok().map(Some),
    }
}

/// From `/proc/<pid>/stat`: (state, ppid). `comm` may hold spaces and parentheses, so the
/// fields are counted after the last `)`.
pub(crate) fn stat_state_ppid(text: &str) -> Option<(char, u32)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The `comm` of a `/proc/<pid>/stat` line (between the first `(` and the last `)`).
pub(crate) fn stat_comm(text: &str) -> Option<&str> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    (open < close).then(|| &text[open + 1..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_gives_the_thread_count() {
        assert_eq!(loadavg_threads("0.52 0.58 0.59 1/523 12345\n"), Some(523));
        assert_eq!(loadavg_threads("0.52 0.58 0.59\n"), None);
        assert_eq!(loadavg_threads(""), None);
        assert_eq!(loadavg_threads("a b c d/x e"), None);
    }

    #[test]
    fn file_nr_is_allocated_minus_free_against_the_max() {
        assert_eq!(
            file_nr("2304\t0\t9223372036854775807\n"),
            Some((2304, i64::MAX as u64))
        );
        assert_eq!(file_nr("100 20 1000"), Some((80, 1000)));
        assert_eq!(file_nr("100 0"), None);
        assert_eq!(file_nr("x 0 1"), None);
    }

    #[test]
    fn pids_max_may_be_unlimited() {
        assert_eq!(pids_max("max\n"), Some(None));
        assert_eq!(pids_max("4096\n"), Some(Some(4096)));
        assert_eq!(pids_max("lots"), None);
    }

    #[test]
    fn stat_state_survives_a_comm_with_spaces_and_parentheses() {
        let line = "4242 (my (odd) proc) Z 17 4242 4242 0 -1 4227140 0 0 0 0";
        assert_eq!(stat_state_ppid(line), Some(('Z', 17)));
        assert_eq!(stat_comm(line), Some("my (odd) proc"));
        assert_eq!(stat_state_ppid("garbage"), None);
        assert_eq!(stat_state_ppid("1 (init)"), None);
    }
}
