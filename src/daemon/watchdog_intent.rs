//! The reboot intent for the watchdog: when the feeder starts withholding keep-alives
//! because a daemon loop is stuck, nodemedic records (fsynced) that the board is about to
//! be reset for a hang, and withdraws that when the loop recovers. The next boot reads it
//! (`power::boot_end`) to tell a watchdog reset after a hang from a power cut.
//!
//! The writes happen on their own thread, in order: the feeder thread must never wait on
//! the SD card (a hung card may be why a loop is stuck, and the feed must resume the moment
//! the loop recovers).

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};

use crate::liveness::Heartbeats;
use crate::state::reboot_intent::{self, IntentKind, RebootIntent};

/// Wraps the feeder's health check: same answer, and each change of it recorded.
pub(crate) fn health_with_intent(
    liveness: Heartbeats,
    state_dir: PathBuf,
    boot_id: String,
    now_unix: impl Fn() -> u64 + Send + Sync + 'static,
) -> impl Fn() -> bool + Send + 'static {
    let tx = spawn_writer(state_dir, boot_id);
    let healthy = AtomicBool::new(true);
    move || {
        let stuck = liveness.stuck();
        let ok = stuck.is_empty();
        if healthy.swap(ok, Ordering::AcqRel) != ok
            && let Ok(tx) = tx.lock()
        {
            let _ = tx.send((!ok).then(|| {
                (
                    now_unix(),
                    format!(
                        "daemon loop(s) {} stuck: keep-alives withheld from the hardware watchdog",
                        stuck
                            .iter()
                            .map(|s| format!("{} ({}s silent)", s.name, s.silent_for.as_secs()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            }));
        }
        ok
    }
}

/// Some((time, reason)): write the intent; None: withdraw it.
type Message = Option<(u64, String)>;

fn spawn_writer(dir: PathBuf, boot_id: String) -> Mutex<Sender<Message>> {
    let (tx, rx) = mpsc::channel::<Message>();
    let _ = std::thread::Builder::new()
        .name("watchdog-intent".into())
        .spawn(move || {
            for m in rx {
                let r = match m {
                    Some((at_unix, reason)) => {
                        // A reboot nodemedic asked for is the truer story: keep it.
                        if reboot_intent::read(&dir)
                            .is_some_and(|i| i.boot_id == boot_id && i.kind == IntentKind::Reboot)
                        {
                            continue;
                        }
                        reboot_intent::write(
                            &dir,
                            &RebootIntent {
                                boot_id: boot_id.clone(),
                                at_unix,
                                kind: IntentKind::WatchdogStop,
                                reason,
                            },
                        )
                    }
                    None => reboot_intent::withdraw(&dir, &boot_id, IntentKind::WatchdogStop),
                };
                if let Err(e) = r {
                    log::error!("reboot intent: {e}");
                }
            }
        });
    Mutex::new(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeClock;
    use std::sync::Arc;
    use std::time::Duration;

    /// Polls `f` until it gives a value (the writer thread is asynchronous by design).
    fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = f() {
                return Some(v);
            }
            if std::time::Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_stuck_loop_writes_the_intent_and_its_recovery_withdraws_it() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::new(1000, Duration::from_secs(10)));
        let live = Heartbeats::new(clock.clone(), Duration::from_secs(30));
        let hb = live.register("policy");
        let health = health_with_intent(live, d.path().into(), "b1".into(), || 1234);
        assert!(health());
        clock.advance(Duration::from_secs(31));
        assert!(!health());
        let written = wait_for(|| reboot_intent::read(d.path()));
        let i = written.expect("intent written");
        assert_eq!(
            (i.kind, i.boot_id.as_str(), i.at_unix),
            (IntentKind::WatchdogStop, "b1", 1234)
        );
        assert!(i.reason.contains("policy (31s silent)"), "{}", i.reason);
        hb.beat();
        assert!(health());
        let gone = wait_for(|| reboot_intent::read(d.path()).is_none().then_some(()));
        assert!(gone.is_some(), "withdrawn after the recovery");
    }
}
