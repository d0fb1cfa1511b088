//! The kernel saying a node limit was hit: the conntrack table is full
//! (net/netfilter/nf_conntrack_core.c), or the system-wide file table is
//! (fs/file_table.c). Both are single-line events; the limits subsystem turns them into its
//! conditions (they come through `model::LimitHits`).

use super::*;

/// `nf_conntrack: table full, dropping packet` (`net_warn_ratelimited`). Since the file's
/// `pr_fmt` adds the module name, kernels print it twice (`nf_conntrack: nf_conntrack:
/// table full, dropping packet`); 2.6-era kernels end it with a period, and the old
/// `ip_conntrack` module printed the same words.
const CONNTRACK_FULL: &str = "table full, dropping packet";

/// `VFS: file-max limit %lu reached` (`pr_info`, once per new high of open files).
const FILE_MAX_HEAD: &str = "VFS: file-max limit ";

/// One of the two limit lines, anchored at the start of the message. Cheap for every other
/// line: two byte checks.
pub(super) fn limits_head(line: &str) -> Option<Head> {
    match line.as_bytes().first()? {
        b'n' | b'i' => {
            let mut rest = line;
            for prefix in ["nf_conntrack: ", "nf_conntrack: "] {
                rest = rest.strip_prefix(prefix).unwrap_or(rest);
            }
            let rest = rest.strip_prefix("ip_conntrack: ").unwrap_or(rest);
            let tail = rest.strip_prefix(CONNTRACK_FULL)?;
            matches!(tail.trim_end(), "" | ".").then_some(())?;
            Head::new(
                EventKind::ConntrackTableFull,
                Role::Single,
                Fields::default(),
            )
        }
        b'V' => {
            let rest = line.strip_prefix(FILE_MAX_HEAD)?;
            let (n, tail) = rest.split_once(' ')?;
            (tail.trim_end() == "reached" && n.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
            Head::new(EventKind::FileMaxReached, Role::Single, Fields::default())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(line: &str) -> Option<EventKind> {
        let mut c = Classifier::new();
        let v = c.feed(line, Some(1));
        assert!(!v.continuation);
        v.kind
    }

    #[test]
    fn every_kernel_spelling_of_a_full_conntrack_table_is_one_event() {
        for line in [
            "nf_conntrack: nf_conntrack: table full, dropping packet",
            "nf_conntrack: table full, dropping packet",
            "nf_conntrack: table full, dropping packet.",
            "ip_conntrack: table full, dropping packet.",
        ] {
            assert_eq!(kind(line), Some(EventKind::ConntrackTableFull), "{line}");
        }
    }

    #[test]
    fn the_file_max_line_is_an_event_and_look_alikes_are_not() {
        assert_eq!(
            kind("VFS: file-max limit 9223372036854775807 reached"),
            Some(EventKind::FileMaxReached)
        );
        for line in [
            "VFS: file-max limit reached",
            "VFS: file-max limit 10 reached by user",
            "nf_conntrack: table full, dropping packets from 10.0.0.1",
            "myapp: nf_conntrack: table full, dropping packet",
            "nf_conntrack: falling back to vmalloc.",
            "net_ratelimit: 3939 callbacks suppressed",
        ] {
            assert_eq!(kind(line), None, "{line}");
        }
    }

    #[test]
    fn a_limit_line_inside_a_stall_splat_leaves_the_splat_open() {
        let mut c = Classifier::new();
        c.feed(
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            Some(1),
        );
        c.feed(
            "nf_conntrack: nf_conntrack: table full, dropping packet",
            Some(2),
        );
        assert_eq!(c.open_event().map(|e| e.kind), Some(EventKind::RcuStall));
        assert_eq!(
            c.pop_event().map(|e| e.kind),
            Some(EventKind::ConntrackTableFull)
        );
    }
}
