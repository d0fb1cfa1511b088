//! The classifier over kernel text that did not come from `/dev/kmsg` (a pstore record,
//! the previous boot's journal), summarised as [`KernelEventSummary`]s for the power
//! subsystem's previous-boot verdict. Prefixes (`<6>[ 12.3] `, journal forms) are stripped
//! by `line_format`; the text is trusted as kernel text because both sources only hold
//! what the kernel wrote (the journal is read for facility 0 only).

use super::classify::{Classifier, Event, EventKind, FALLBACK_HZ};
use super::line_format::{Origin, normalise};
use crate::model::{KernelEventSummary, KernelLine};

/// Below this an expedited RCU stall is the Pi's routine one (about 21 jiffies), not a hang.
const BRIEF_STALL_SECS: f64 = 1.0;

pub(crate) fn summarise(lines: &[KernelLine]) -> Vec<KernelEventSummary> {
    let mut c = Classifier::new();
    let mut out = Vec::new();
    for l in lines {
        let n = normalise(&l.text);
        if n.origin == Origin::KmsgDict {
            continue;
        }
        c.feed(&n.text, l.ts_usec.or(n.kernel_ts_usec));
        while let Some(e) = c.pop_event() {
            out.push(summary(&e));
        }
    }
    c.flush();
    while let Some(e) = c.pop_event() {
        out.push(summary(&e));
    }
    out
}

fn summary(e: &Event) -> KernelEventSummary {
    let f = &e.fields;
    let hang = match e.kind {
        EventKind::HungTask
        | EventKind::SoftLockup
        | EventKind::HardLockup
        | EventKind::WorkqueueLockup => true,
        EventKind::RcuStall => {
            f.expedited != Some(true)
                || e.stall_secs(FALLBACK_HZ)
                    .is_none_or(|s| s >= BRIEF_STALL_SECS)
        }
        _ => false,
    };
    KernelEventSummary {
        kind: e.kind.as_str(),
        panic: f.panic == Some(true),
        cleared: f.cleared == Some(true),
        critical: f.critical == Some(true),
        hang,
        ts_usec: e.first_ts_usec,
        fields: serde_json::to_value(e).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<KernelLine> {
        text.lines()
            .map(|t| KernelLine {
                ts_usec: None,
                text: t.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_pstore_dump_summarises_to_its_events_with_hang_and_panic_flags() {
        let s = summarise(&lines(concat!(
            "Panic#1 Part1\n",
            "<6>[  100.000000] hwmon hwmon1: Undervoltage detected!\n",
            "<3>[  200.000000] INFO: task containerd:812 blocked for more than 122 seconds.\n",
            "<3>[  200.000100]       Not tainted 6.12.25-v8+ #1\n",
            "<0>[  201.000000] Kernel panic - not syncing: hung_task: blocked tasks\n",
        )));
        let kinds: Vec<_> = s.iter().map(|e| (e.kind, e.hang, e.panic)).collect();
        assert_eq!(
            kinds,
            [("undervoltage", false, false), ("hung_task", true, true)]
        );
        assert_eq!(s[1].ts_usec, Some(200_000_000));
        assert_eq!(s[1].fields["comm"], "containerd");
    }

    #[test]
    fn the_pis_brief_expedited_stalls_are_not_hangs() {
        let s = summarise(&lines(
            "[   50.000000] rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P4120 } 21 jiffies s: 1137 root: 0x0/T\n",
        ));
        assert_eq!((s[0].kind, s[0].hang), ("rcu_stall", false));
    }
}
