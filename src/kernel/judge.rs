//! The kernel detector's judgement, pure: which kernel conditions hold, from the events the
//! classifier completes and the rises of the kernel's own counters, with `now` passed in.
//!
//! - A short expedited RCU stall, like the Pi's ~21-jiffy ones at dozens per hour, is
//!   counted but is not a problem; a normal stall (the kernel reports those only after
//!   `rcu_cpu_stall_timeout`, 21 s by default), an expedited stall of at least
//!   `long_stall`, a starved grace-period kthread, or a burst of `short_stall_burst` short
//!   stalls within `short_stall_window` raises `KernelRCUStall`.
//! - Hung tasks, soft and hard lockups raise their condition at once.
//! - A counter rise (`rcu_stall_count`, `hung_task_detect_count`) raises the condition too,
//!   unless the log already reported it since the last read: the log's words say more.
//! - An oops raises `KernelOops`: a problem when it killed a kernel thread (or hit one in
//!   interrupt context), when the kernel caught its own bug (`BUG:`, `kernel BUG at`), when
//!   an earlier oops or bad page already tainted the kernel (`D`, `B`, `M` in the report's
//!   taint flags) or when it panicked; otherwise (a WARNING, an oops that killed a user
//!   task) a warning, reported and never acted on.
//! - Every condition clears `quiet` after its last event, so a stall that passed does not
//!   hold the node forever.

use std::collections::VecDeque;
use std::time::Duration;

use super::classify::{Event, EventKind, Fields};
use crate::config::KernelSection;
use crate::model::{Condition, ConditionKind, UserFuseWait};

/// How bad an oops is: its reason, and whether it is a problem (see the module docs).
fn oops_class(f: &Fields) -> (&'static str, bool) {
    let kind = f.oops.as_deref().unwrap_or("oops");
    if f.panic == Some(true) || kind == "panic" {
        return ("KernelPanic", true);
    }
    match kind {
        "warning" => ("KernelWarning", false),
        "bug" => ("KernelBug", true),
        _ if f.kernel_thread == Some(true) => ("OopsInKernelThread", true),
        _ if f
            .taint
            .as_deref()
            .is_some_and(|t| t.contains(['D', 'B', 'M'])) =>
        {
            ("OopsAfterEarlierBug", true)
        }
        _ => ("OopsInUserTask", false),
    }
}

/// Where a held kernel condition stands.
#[derive(Clone, Debug)]
struct Held {
    last_mono: Duration,
    reason: &'static str,
    message: String,
    /// Reported only, never escalated (a KernelOops of the warning class).
    warning_only: bool,
}

/// Hold, burst and quiet: the state behind the kernel conditions.
pub(crate) struct KernelJudge {
    cfg: KernelSection,
    held: Vec<(ConditionKind, Held)>,
    short_stalls: VecDeque<Duration>,
    reports_suppressed: bool,
}

impl KernelJudge {
    pub fn new(cfg: KernelSection) -> Self {
        KernelJudge {
            cfg,
            held: Vec::new(),
            short_stalls: VecDeque::new(),
            reports_suppressed: false,
        }
    }

    pub(crate) fn hold(
        &mut self,
        kind: ConditionKind,
        now: Duration,
        reason: &'static str,
        message: String,
    ) {
        self.hold_as(kind, now, reason, message, false);
    }

    /// As [`hold`](Self::hold); `warning_only` never downgrades a problem already held.
    fn hold_as(
        &mut self,
        kind: ConditionKind,
        now: Duration,
        reason: &'static str,
        message: String,
        warning_only: bool,
    ) {
        match self.held.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, h)) => {
                h.last_mono = now;
                if warning_only && !h.warning_only {
                    return;
                }
                h.reason = reason;
                h.message = message;
                h.warning_only = warning_only;
            }
            None => self.held.push((
                kind,
                Held {
                    last_mono: now,
                    reason,
                    message,
                    warning_only,
                },
            )),
        }
    }

    /// Turns a complete event into held conditions; `hz` converts stall jiffies.
    pub(crate) fn apply(&mut self, e: &Event, hz: u32, now: Duration) {
        // Conditions age from when the kernel logged the event, so a stall logged before
        // the daemon started still counts, and one logged long ago has already cleared.
        let at = e
            .first_ts_usec
            .map(Duration::from_micros)
            .unwrap_or(now)
            .min(now);
        let f = &e.fields;
        match e.kind {
            EventKind::RcuStall => {
                let secs = e.stall_secs(hz);
                let flavor = f.flavor.clone().unwrap_or_else(|| "rcu".into());
                let what = match (f.expedited, secs) {
                    (Some(true), Some(s)) => format!("expedited {flavor} stall of {s:.3}s"),
                    (_, Some(s)) => format!("{flavor} stall of {s:.1}s"),
                    _ => format!("{flavor} stall"),
                };
                let cpus = if f.cpus.is_empty() && f.pids.is_empty() {
                    String::new()
                } else {
                    format!(" (CPUs {:?}, tasks {:?})", f.cpus, f.pids)
                };
                if f.kthread_starved_jiffies.is_some() {
                    self.hold(
                        ConditionKind::KernelRcuStall,
                        at,
                        "KthreadStarved",
                        format!("{what}{cpus}; the grace-period kthread was starved"),
                    );
                } else if f.expedited != Some(true) {
                    self.hold(
                        ConditionKind::KernelRcuStall,
                        at,
                        "RCUStall",
                        format!("{what}{cpus}"),
                    );
                } else if secs.is_none_or(|s| s >= self.cfg.long_stall.get().as_secs_f64()) {
                    self.hold(
                        ConditionKind::KernelRcuStall,
                        at,
                        "LongExpeditedStall",
                        format!("{what}{cpus}"),
                    );
                } else {
                    let window = self.cfg.short_stall_window.get();
                    self.short_stalls.push_back(at);
                    while self
                        .short_stalls
                        .front()
                        .is_some_and(|t| at.saturating_sub(*t) > window)
                    {
                        self.short_stalls.pop_front();
                    }
                    if self.short_stalls.len() as u32 >= self.cfg.short_stall_burst {
                        let n = self.short_stalls.len();
                        self.hold(
                            ConditionKind::KernelRcuStall,
                            at,
                            "StallBurst",
                            format!(
                                "{n} short expedited stalls within {}s (latest: {what}{cpus})",
                                window.as_secs()
                            ),
                        );
                    }
                }
            }
            EventKind::HungTask => {
                let msg = format!(
                    "task {}:{} blocked for more than {}s",
                    f.comm.as_deref().unwrap_or("?"),
                    f.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    f.seconds.unwrap_or(0)
                );
                self.hold(ConditionKind::KernelHungTasks, at, "HungTask", msg);
            }
            EventKind::HungTaskReportsSuppressed => self.reports_suppressed = true,
            EventKind::SoftLockup => {
                let msg = format!(
                    "CPU#{} stuck for {}s in {}:{}",
                    f.cpu.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                    f.seconds.unwrap_or(0),
                    f.comm.as_deref().unwrap_or("?"),
                    f.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
                );
                self.hold(ConditionKind::KernelSoftLockup, at, "SoftLockup", msg);
            }
            EventKind::HardLockup => {
                let msg = format!(
                    "hard LOCKUP on CPU {}",
                    f.cpu.map(|c| c.to_string()).unwrap_or_else(|| "?".into())
                );
                self.hold(ConditionKind::KernelHardLockup, at, "HardLockup", msg);
            }
            EventKind::KernelOops => {
                let (reason, problem) = oops_class(f);
                let task = match (&f.comm, f.pid) {
                    (Some(c), Some(p)) => format!(
                        " in {c}[{p}]{}",
                        if f.kernel_thread == Some(true) {
                            ", a kernel thread"
                        } else {
                            ""
                        }
                    ),
                    _ => String::new(),
                };
                let taint = f
                    .taint
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(", taint {t}"))
                    .unwrap_or_default();
                let msg = format!(
                    "{}{task}{taint}",
                    f.detail.as_deref().unwrap_or("kernel oops")
                );
                self.hold_as(ConditionKind::KernelOops, at, reason, msg, !problem);
            }
            _ => {}
        }
    }

    /// A hung-task report whose task waits on FUSE mounts unprivileged users own (issue
    /// 18.1): anyone can cause one, so it holds `UserMountHung` (whose ladder may only
    /// cordon), not `KernelHungTasks`.
    pub(crate) fn hung_on_user_fuse(&mut self, e: &Event, wait: &UserFuseWait, now: Duration) {
        let at = e
            .first_ts_usec
            .map(Duration::from_micros)
            .unwrap_or(now)
            .min(now);
        let f = &e.fields;
        let mounts: Vec<String> = wait
            .mounts
            .iter()
            .map(|(p, uid)| format!("{p} (uid {uid})"))
            .collect();
        self.hold(
            ConditionKind::UserMountHung,
            at,
            "HungTaskOnUserMount",
            format!(
                "task {}:{} blocked for more than {}s in a FUSE wait; the only FUSE mounts with requests waiting are owned by unprivileged users: {}",
                f.comm.as_deref().unwrap_or("?"),
                f.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                f.seconds.unwrap_or(0),
                mounts.join(", ")
            ),
        );
    }

    /// A kernel counter rose by `n` since the read at `since`: holds `kind` with `message`,
    /// unless the log reported `kind` since then.
    pub(crate) fn counter_rose(
        &mut self,
        kind: ConditionKind,
        now: Duration,
        since: Duration,
        reason: &'static str,
        message: String,
    ) {
        // A hung-task report answered as a user's FUSE mount accounts for the rise too.
        let explained = self.logged_since(kind, since)
            || (kind == ConditionKind::KernelHungTasks
                && self.logged_since(ConditionKind::UserMountHung, since));
        if !explained {
            self.hold(kind, now, reason, message);
        }
    }

    /// True when `kind` was refreshed from the log (not a counter) at or after `since`.
    fn logged_since(&self, kind: ConditionKind, since: Duration) -> bool {
        self.held
            .iter()
            .any(|(k, h)| *k == kind && h.last_mono >= since && !h.reason.ends_with("Counter"))
    }

    /// The kernel said it prints no more hung-task reports.
    pub(crate) fn reports_suppressed(&self) -> bool {
        self.reports_suppressed
    }

    /// When the first held condition clears unless an event refreshes it: the detector
    /// need not wake before then for the judge's sake.
    pub(crate) fn next_clear(&self) -> Option<Duration> {
        let quiet = self.cfg.quiet.get();
        self.held.iter().map(|(_, h)| h.last_mono + quiet).min()
    }

    /// The conditions held now; each clears `quiet` after its last event.
    pub(crate) fn conditions(&mut self, now: Duration) -> Vec<Condition> {
        let quiet = self.cfg.quiet.get();
        self.held
            .retain(|(_, h)| now.saturating_sub(h.last_mono) < quiet);
        let v: Vec<Condition> = self
            .held
            .iter()
            .map(|(k, h)| {
                let ago = now.saturating_sub(h.last_mono).as_secs();
                let c = Condition::new(*k, "", h.reason, format!("{} ({ago}s ago)", h.message));
                if h.warning_only { c.into_warning() } else { c }
            })
            .collect();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::Classifier;
    use crate::model::Severity;

    fn oops_condition(lines: &[&str]) -> Condition {
        let mut c = Classifier::new();
        for l in lines {
            c.feed(l, None);
        }
        c.flush();
        let mut j = KernelJudge::new(KernelSection::default());
        let now = Duration::from_secs(100);
        while let Some(e) = c.pop_event() {
            j.apply(&e, 250, now);
        }
        let v = j.conditions(now);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ConditionKind::KernelOops);
        v[0].clone()
    }

    #[test]
    fn an_oops_in_a_kernel_thread_is_a_problem_one_in_a_user_task_or_a_warning_is_not() {
        let c = oops_condition(&[
            "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008",
            "Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP",
            "CPU: 3 PID: 77 Comm: kworker/3:1 Not tainted 6.12.47+rpt-rpi-v8 #1",
            "---[ end trace 0000000000000000 ]---",
        ]);
        assert_eq!(c.reason, "OopsInKernelThread");
        assert_eq!(c.severity(), Severity::Problem);
        assert!(c.message.contains("kworker/3:1[77]"), "{}", c.message);
        let c = oops_condition(&[
            "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008",
            "Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP",
            "CPU: 1 PID: 4242 Comm: python3 Not tainted 6.12.47+rpt-rpi-v8 #1",
            "---[ end trace 0000000000000000 ]---",
        ]);
        assert_eq!(c.reason, "OopsInUserTask");
        assert_eq!(c.severity(), Severity::Warning);
        let c = oops_condition(&["kernel BUG at fs/ext4/inode.c:1234!"]);
        assert_eq!(c.reason, "KernelBug");
        assert_eq!(c.severity(), Severity::Problem);
    }
}
