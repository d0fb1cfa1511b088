//! Feeding the hardware watchdog through the rest of a reboot nodemedic asked for (issue
//! 17, point 5).
//!
//! With `[watchdog] owner = "nodemedic"`, systemd stops nodemedic early in that shutdown:
//! nothing orders it after k3s. A timer left armed then resets the board one timeout later
//! (15 s at most on a Pi's `bcm2835_wdt`), while k3s may still be stopping its pods: the
//! unclean shutdown preflight exists to repair. Disarming instead would leave a shutdown
//! that hangs without any reset. So on SIGTERM while such a reboot is pending, the daemon
//! keeps running (and feeding) while other units are still stopping, asks systemd for the
//! time (`EXTEND_TIMEOUT_USEC`), and leaves once they are done; the feeder then writes one
//! last keep-alive and leaves the timer armed for what remains (units ordered after
//! nodemedic, unmounting, systemd-shutdown). A shutdown that never finishes is still
//! caught: the reboot sequence stops feeding at `remedy.reboot_deadline`, and the daemon
//! then leaves at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::edge::command::stdout_with_deadline;
use crate::edge::{Notice, Notifier};
use crate::watchdog::FeederHandle;

/// How often systemd is asked which units are still stopping.
pub(crate) const POLL: Duration = Duration::from_secs(1);
/// Asked for at each poll: systemd's stop timeout then always lies this far ahead.
const EXTEND: Duration = Duration::from_secs(10);
/// `systemctl list-units` answers in milliseconds over PID 1's private socket; a PID 1 still
/// silent after this is wedged, and the daemon stops waiting for it.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(5);

/// Which units (other than nodemedic's own) are stopping right now.
pub(crate) trait StoppingUnits: Send + Sync {
    fn others_stopping(&self) -> Result<Vec<String>, String>;
}

/// Real: `systemctl list-units --state=deactivating`, without this daemon's own unit.
pub(crate) struct SystemctlStoppingUnits {
    own_unit: Option<String>,
}

impl SystemctlStoppingUnits {
    pub(crate) fn new() -> Self {
        SystemctlStoppingUnits {
            own_unit: std::fs::read_to_string("/proc/self/cgroup")
                .ok()
                .and_then(|t| own_unit(&t)),
        }
    }
}

impl StoppingUnits for SystemctlStoppingUnits {
    fn others_stopping(&self) -> Result<Vec<String>, String> {
        let argv: Vec<String> = [
            "systemctl",
            "list-units",
            "--all",
            "--state=deactivating",
            "--plain",
            "--no-legend",
            "--no-pager",
        ]
        .map(String::from)
        .into();
        let out = stdout_with_deadline(&argv, SYSTEMCTL_TIMEOUT).map_err(|e| e.to_string())?;
        Ok(unit_names(&out)
            .into_iter()
            .filter(|u| Some(u) != self.own_unit.as_ref())
            .collect())
    }
}

/// The unit this process runs in, from `/proc/self/cgroup`: the last path element that is
/// a service, on whichever hierarchy systemd tracks it (cgroup v2 `0::`, or the v1
/// `name=systemd` one; on a hybrid host one of them may say just `/`).
pub(crate) fn own_unit(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter(|l| l.starts_with("0::") || l.contains(":name=systemd:"))
        .filter_map(|l| l.rsplit('/').next())
        .find(|u| u.ends_with(".service"))
        .map(String::from)
}

/// The unit names of `systemctl list-units --plain --no-legend`: the first word that looks
/// like a unit on each line (a leading status bullet is skipped).
pub(crate) fn unit_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.contains('.')))
        .map(String::from)
        .collect()
}

/// Why the daemon stopped waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Leave {
    /// No reboot of nodemedic's is under way: an ordinary stop.
    NoRebootPending,
    /// The reboot sequence stopped the feed: the shutdown is stuck and the reset intended.
    FeedStopped,
    /// Nothing else is stopping any more.
    OthersStopped,
    /// systemd cannot tell: as before this rule, leave now.
    CannotAsk(String),
    /// Waited as long as the reboot sequence itself would (a safety net).
    Cap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Linger {
    Wait(Vec<String>),
    Leave(Leave),
}

/// What to do, from the feeder's state, what systemd said and how long this has gone on.
pub(crate) fn decide(
    reboot_pending: bool,
    feeding_stopped: bool,
    others: Result<Vec<String>, String>,
    waited: Duration,
    cap: Duration,
) -> Linger {
    if feeding_stopped {
        return Linger::Leave(Leave::FeedStopped);
    }
    if !reboot_pending {
        return Linger::Leave(Leave::NoRebootPending);
    }
    if waited >= cap {
        return Linger::Leave(Leave::Cap);
    }
    match others {
        Err(e) => Linger::Leave(Leave::CannotAsk(e)),
        Ok(u) if u.is_empty() => Linger::Leave(Leave::OthersStopped),
        Ok(u) => Linger::Wait(u),
    }
}

/// Waits, feeding, while a pending reboot of nodemedic's still has other units stopping;
/// returns why it stopped waiting. It asks every `poll` ([`POLL`]); `cap` bounds the wait.
pub(crate) async fn linger(
    feeder: &FeederHandle,
    units: Arc<dyn StoppingUnits>,
    notifier: &dyn Notifier,
    poll: Duration,
    cap: Duration,
) -> Leave {
    let start = Instant::now();
    let mut waiting_on: Vec<String> = Vec::new();
    loop {
        let others = if feeder.reboot_pending() {
            let u = units.clone();
            tokio::task::spawn_blocking(move || u.others_stopping())
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        } else {
            Ok(Vec::new())
        };
        let step = decide(
            feeder.reboot_pending(),
            feeder.is_feeding_stopped(),
            others,
            start.elapsed(),
            cap,
        );
        match step {
            Linger::Wait(units) => {
                if units != waiting_on {
                    log::warn!(
                        "stopping during the reboot nodemedic asked for, while {} still \
                         stopping: feeding the hardware watchdog until they have stopped (at \
                         most {} s more)",
                        units.join(", "),
                        cap.saturating_sub(start.elapsed()).as_secs()
                    );
                    waiting_on = units;
                }
                let _ = notifier.send(&Notice::ExtendTimeout(EXTEND));
                tokio::time::sleep(poll).await;
            }
            Linger::Leave(why) => {
                match &why {
                    Leave::NoRebootPending => {}
                    Leave::OthersStopped => log::info!(
                        "the other units have stopped after {} s: leaving the hardware \
                         watchdog armed and fed for the rest of the reboot",
                        start.elapsed().as_secs()
                    ),
                    Leave::FeedStopped => log::warn!(
                        "the reboot's shutdown did not finish in time and the feed is stopped: \
                         the hardware watchdog resets the board"
                    ),
                    Leave::CannotAsk(e) => log::error!(
                        "cannot ask systemd which units are still stopping ({e}); leaving the \
                         hardware watchdog armed: the board resets within its timeout"
                    ),
                    Leave::Cap => log::error!(
                        "units still stopping after {} s: leaving the hardware watchdog armed",
                        start.elapsed().as_secs()
                    ),
                }
                return why;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_own_unit_comes_from_the_cgroup_path() {
        assert_eq!(
            own_unit("0::/system.slice/nodemedic.service\n").as_deref(),
            Some("nodemedic.service")
        );
        assert_eq!(
            own_unit("12:cpu:/x\n1:name=systemd:/system.slice/nodemedic.service\n").as_deref(),
            Some("nodemedic.service")
        );
        // Hybrid (seen in systemd-nspawn): name=systemd says `/`, the unified one the unit.
        assert_eq!(
            own_unit("9:name=systemd:/\n8:pids:/\n0::/system.slice/nodemedic.service\n").as_deref(),
            Some("nodemedic.service")
        );
        // A shell in a session, or a test run: no unit to leave out.
        assert_eq!(
            own_unit("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
        assert_eq!(own_unit(""), None);
    }

    #[test]
    fn unit_names_are_the_first_unit_word_of_each_line() {
        let out = "k3s.service loaded deactivating stop-sigterm k3s\n\
                   ● mnt-nas.mount loaded deactivating unmounting /mnt/nas\n\n";
        assert_eq!(unit_names(out), ["k3s.service", "mnt-nas.mount"]);
        assert!(unit_names("").is_empty());
    }

    #[test]
    fn it_waits_only_while_a_pending_reboot_has_other_units_stopping() {
        let k3s = || Ok(vec!["k3s.service".to_string()]);
        assert_eq!(
            decide(true, false, k3s(), S(3), S(150)),
            Linger::Wait(vec!["k3s.service".into()])
        );
        assert_eq!(
            decide(true, false, Ok(vec![]), S(3), S(150)),
            Linger::Leave(Leave::OthersStopped)
        );
        // An ordinary stop, or one after the reboot sequence gave up on the shutdown.
        assert_eq!(
            decide(false, false, k3s(), S(0), S(150)),
            Linger::Leave(Leave::NoRebootPending)
        );
        assert_eq!(
            decide(false, true, k3s(), S(0), S(150)),
            Linger::Leave(Leave::FeedStopped)
        );
        assert_eq!(
            decide(true, false, k3s(), S(150), S(150)),
            Linger::Leave(Leave::Cap)
        );
        assert_eq!(
            decide(true, false, Err("timed out".into()), S(1), S(150)),
            Linger::Leave(Leave::CannotAsk("timed out".into()))
        );
    }

    /// Answers from a script, one per call (the last one repeats).
    struct ScriptedUnits(Mutex<Vec<Vec<String>>>);

    impl StoppingUnits for ScriptedUnits {
        fn others_stopping(&self) -> Result<Vec<String>, String> {
            let mut v = self.0.lock().unwrap();
            Ok(if v.len() > 1 {
                v.remove(0)
            } else {
                v[0].clone()
            })
        }
    }

    fn feeder() -> crate::watchdog::Feeder {
        crate::watchdog::Feeder::start(
            crate::watchdog::device::FakeWatchdog::new(),
            crate::watchdog::feeder::FeedPlan::for_timeout(S(15), false),
            || true,
        )
        .unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_pending_reboot_waits_for_the_other_units_and_asks_systemd_for_the_time() {
        let f = feeder();
        f.handle().keep_armed_on_stop();
        let units = Arc::new(ScriptedUnits(Mutex::new(vec![
            vec!["k3s.service".into()],
            vec!["k3s.service".into()],
            vec!["k3s.service".into()],
            vec![],
        ])));
        let n = crate::edge::RecordingNotifier::default();
        let why = rt().block_on(linger(&f.handle(), units, &n, MS(5), S(150)));
        assert_eq!(why, Leave::OthersStopped);
        assert_eq!(
            *n.sent.lock().unwrap(),
            vec![Notice::ExtendTimeout(EXTEND); 3],
            "one extension per poll while k3s stops"
        );
    }

    #[test]
    fn an_ordinary_stop_does_not_wait_or_ask() {
        let f = feeder();
        let units = Arc::new(ScriptedUnits(Mutex::new(vec![vec!["k3s.service".into()]])));
        let n = crate::edge::RecordingNotifier::default();
        let why = rt().block_on(linger(&f.handle(), units.clone(), &n, MS(5), S(150)));
        assert_eq!(why, Leave::NoRebootPending);
        assert!(n.sent.lock().unwrap().is_empty());
    }

    #[test]
    fn a_feed_stopped_by_the_reboot_sequence_ends_the_wait() {
        let f = feeder();
        let h = f.handle();
        h.keep_armed_on_stop();
        let units = Arc::new(ScriptedUnits(Mutex::new(vec![vec!["k3s.service".into()]])));
        let n = crate::edge::RecordingNotifier::default();
        let stopper = h.clone();
        let why = rt().block_on(async move {
            tokio::spawn(async move {
                tokio::time::sleep(MS(50)).await;
                stopper.stop_feeding();
            });
            linger(&h, units, &n, MS(5), S(150)).await
        });
        assert_eq!(why, Leave::FeedStopped);
    }

    #[test]
    fn a_unit_that_never_stops_is_waited_for_at_most_the_cap() {
        let f = feeder();
        f.handle().keep_armed_on_stop();
        let units = Arc::new(ScriptedUnits(Mutex::new(vec![vec![
            "stuck.service".into(),
        ]])));
        let n = crate::edge::RecordingNotifier::default();
        let why = rt().block_on(linger(&f.handle(), units, &n, MS(5), MS(100)));
        assert_eq!(why, Leave::Cap);
    }
}
