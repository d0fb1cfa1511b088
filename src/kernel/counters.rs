//! Kernel counters and sysctls that matter when log scraping goes blind.
//!
//! The kernel stops printing hung-task reports after `kernel.hung_task_warnings` (default
//! 10) of them, so a detector that only reads the log goes blind exactly when a node is
//! sickest. Newer kernels count anyway: `/proc/sys/kernel/hung_task_detect_count` (6.13+)
//! and `/sys/kernel/rcu_stall_count` (6.16+).

use serde::Serialize;

use crate::edge::HostFiles;

pub(crate) const RCU_STALL_COUNT: &str = "sys/kernel/rcu_stall_count";
pub(crate) const HUNG_TASK_DETECT_COUNT: &str = "proc/sys/kernel/hung_task_detect_count";
pub(crate) const HUNG_TASK_WARNINGS: &str = "proc/sys/kernel/hung_task_warnings";

/// Sysctls shown by `nodemedic check`, with why each matters.
pub(crate) const SYSCTLS: [(&str, &str); 4] = [
    (
        "kernel.panic_on_rcu_stall",
        "1 turns an RCU stall into a panic (then kernel.panic decides the reboot)",
    ),
    (
        "kernel.hung_task_timeout_secs",
        "how long a task may sit in D state before it is reported (0 disables)",
    ),
    (
        "kernel.softlockup_panic",
        "1 turns a soft lockup into a panic",
    ),
    (
        "kernel.panic",
        "seconds before rebooting after a panic (0 = hang forever)",
    ),
];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counters {
    pub(crate) rcu_stall_count: Option<u64>,
    pub(crate) hung_task_detect_count: Option<u64>,
    /// -1 is unlimited; 0 means the kernel prints no more hung-task reports.
    pub(crate) hung_task_warnings: Option<i64>,
}

fn read_num<T: std::str::FromStr>(files: &dyn HostFiles, rel: &str) -> Option<T> {
    files.read_string(rel).ok()?.trim().parse().ok()
}

pub fn read(files: &dyn HostFiles) -> Counters {
    Counters {
        rcu_stall_count: read_num(files, RCU_STALL_COUNT),
        hung_task_detect_count: read_num(files, HUNG_TASK_DETECT_COUNT),
        hung_task_warnings: read_num(files, HUNG_TASK_WARNINGS),
    }
}

/// `kernel.panic` -> `proc/sys/kernel/panic`, value as text.
pub(crate) fn sysctl(files: &dyn HostFiles, name: &str) -> Option<String> {
    let rel = format!("proc/sys/{}", name.replace('.', "/"));
    files.read_string(&rel).ok().map(|s| s.trim().to_string())
}

/// Increase of a counter between two reads; None when either is unknown or it went back.
pub(crate) fn increase(prev: Option<u64>, cur: Option<u64>) -> Option<u64> {
    match (prev, cur) {
        (Some(p), Some(c)) if c >= p => Some(c - p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeFiles;

    #[test]
    fn counters_read_what_the_kernel_has_and_skip_what_it_lacks() {
        let f = FakeFiles::with(&[(HUNG_TASK_DETECT_COUNT, "7\n"), (HUNG_TASK_WARNINGS, "0\n")]);
        let c = read(&f);
        assert_eq!(
            c,
            Counters {
                rcu_stall_count: None,
                hung_task_detect_count: Some(7),
                hung_task_warnings: Some(0)
            }
        );
        assert_eq!(
            sysctl(&f, "kernel.hung_task_warnings").as_deref(),
            Some("0")
        );
        assert_eq!(sysctl(&f, "kernel.panic"), None);
    }

    #[test]
    fn increases_ignore_unknown_and_reset_counters() {
        assert_eq!(increase(Some(3), Some(5)), Some(2));
        assert_eq!(increase(None, Some(5)), None);
        assert_eq!(increase(Some(9), Some(2)), None);
    }
}
