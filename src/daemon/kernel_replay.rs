//! Replays of kernel-log sequences through the real kernel detector and the loop: the
//! kernel log is a shared queue fed as simulated time passes. Here because they join two
//! subsystems (kernel and remedy), which only the daemon may.

use crate::audit::AuditOutcome;
use crate::config::KernelSection;
use crate::config::RunMode;
use crate::detect::Detector;
use crate::edge::Clock;
use crate::edge::FakeFiles;
use crate::kernel::detector::{KernelDeps, KernelDetector};
use crate::kernel::source::{KmsgRead, KmsgSource};
use crate::remedy::policy_loop::Carried;
use crate::remedy::tests::*;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Queue = Arc<Mutex<VecDeque<Vec<u8>>>>;

struct SharedKmsg(Queue);

impl KmsgSource for SharedKmsg {
    fn read(&mut self, _t: Duration) -> std::io::Result<KmsgRead> {
        Ok(match self.0.lock().unwrap().pop_front() {
            Some(r) => KmsgRead::Record(r),
            None => KmsgRead::Idle,
        })
    }
}

struct Replay {
    b: Bed,
    det: KernelDetector,
    queue: Queue,
    seq: u64,
}

impl Replay {
    fn new(mode: RunMode) -> Replay {
        let b = bed(&config(mode, |_| {}));
        let queue: Queue = Arc::default();
        let q = queue.clone();
        let det = KernelDetector::new(
            KernelSection::default(),
            KernelDeps {
                files: Arc::new(FakeFiles::with(&[(
                    "proc/sys/kernel/hung_task_warnings",
                    "10",
                )])),
                clock: b.clock.clone(),
                metrics: None,
                oom_kills: None,
                storage: None,
                boot_id: "boot-a".into(),
                runtime_dir: None,
                state_dir: None,
                source: Some(Box::new(move || {
                    Ok(Box::new(SharedKmsg(q.clone())) as Box<dyn KmsgSource>)
                })),
            },
        );
        Replay {
            b,
            det,
            queue,
            seq: 0,
        }
    }

    /// A kernel-facility record stamped with the current monotonic time.
    fn kernel(&mut self, level: u8, text: &str) {
        self.seq += 1;
        let ts = self.b.clock.monotonic().as_micros();
        self.queue
            .lock()
            .unwrap()
            .push_back(format!("{level},{},{ts},-;{text}", self.seq).into_bytes());
    }

    /// One simulated minute: detector pass, publish, policy tick.
    fn minute(&mut self) -> Vec<Carried> {
        self.b.clock.advance(MIN);
        let s = self.det.sample().unwrap();
        self.b
            .hub
            .publish("kernel", s.conditions, self.b.clock.unix_secs());
        self.b.tick()
    }
}

const SHORT: &str = "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P4121 } 23 jiffies s: 2237 root: 0x1/.";
const LONG: &str = "rcu: INFO: rcu_preempt self-detected stall on CPU";
const LONG_DETAIL: &str = "rcu: \t2-....: (5251 ticks this GP) idle=8e4/1/0x4000000000000002 softirq=90123/90123 fqs=2561";

#[test]
fn benign_short_stalls_at_dozens_per_hour_lead_to_no_action() {
    let mut r = Replay::new(RunMode::Act);
    let mut carried = Vec::new();
    // 24 per hour (one every 2.5 min, alternating 2 and 3 minutes) for three hours.
    for m in 0..180 {
        if m % 5 == 0 || m % 5 == 2 {
            r.kernel(4, SHORT);
        }
        carried.extend(r.minute());
    }
    assert!(carried.is_empty(), "{carried:?}");
    assert!(r.b.hub.conditions().is_empty());
    assert!(r.b.services.calls().is_empty());
    assert!(r.b.rebooter.inner.calls().is_empty());
    assert!(
        r.det.events_seen >= 70,
        "the stalls were seen: {}",
        r.det.events_seen
    );
}

fn recurring_long_stall(mode: RunMode) -> Replay {
    let mut r = Replay::new(mode);
    for m in 0..40 {
        if m % 5 == 0 {
            r.kernel(3, LONG);
            r.kernel(3, LONG_DETAIL);
        }
        r.minute();
    }
    r
}

#[test]
fn a_recurring_long_stall_escalates_to_a_reboot_in_act_mode() {
    let r = recurring_long_stall(RunMode::Act);
    let audit = r.b.audit();
    let done: Vec<&str> = audit
        .iter()
        .filter(|e| e.outcome == AuditOutcome::Done)
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(done, vec!["cordon", "restart_k3s", "reboot"], "{audit:?}");
    assert_eq!(r.b.rebooter.inner.calls().len(), 1);
    let reboot = audit.iter().find(|e| e.action == "reboot").unwrap();
    assert_eq!(reboot.problem, "KernelRCUStall");
    assert!(
        reboot.evidence["conditions"][0]["kind"] == "KernelRCUStall",
        "{}",
        reboot.evidence
    );
}

#[test]
fn a_recurring_long_stall_in_observe_mode_only_leaves_audit_entries() {
    let r = recurring_long_stall(RunMode::Observe);
    let audit = r.b.audit();
    assert!(
        audit
            .iter()
            .all(|e| matches!(e.outcome, AuditOutcome::Suppressed | AuditOutcome::Recorded)),
        "{audit:?}"
    );
    let suppressed: Vec<&str> = audit
        .iter()
        .filter(|e| e.outcome == AuditOutcome::Suppressed)
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(suppressed, vec!["cordon", "restart_k3s", "reboot"]);
    assert!(r.b.rebooter.inner.calls().is_empty());
    assert!(r.b.services.calls().is_empty());
}
