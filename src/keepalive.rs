//! The keep-alive thread: feeds systemd's watchdog (`WATCHDOG=1`) only while every daemon
//! loop is alive, and keeps the `STATUS=` line current. It is a plain thread that takes no
//! lock a detector could hold, so a stuck probe cannot delay it, and a stuck loop stops the
//! feed: systemd then kills and restarts the wedged daemon (`WatchdogSec=`).

use std::sync::Arc;
use std::time::Duration;

use crate::edge::{Notice, Notifier};
use crate::liveness::{Heartbeats, Shutdown, Stuck};

/// Without a systemd watchdog the loop only keeps `STATUS=` and the "stuck loop" log
/// current: twice a minute is enough for that (issue 24: every wake-up costs a Pi).
pub(crate) const IDLE_PERIOD: Duration = Duration::from_secs(30);

/// Keep-alives every half of `WatchdogSec`, as sd_watchdog_enabled(3) advises. The unit's
/// 60 s gives 30 s: the same two wake-ups a minute as without a watchdog (issue 24), and
/// still room for a 30 s late wake-up on a Pi thrashing in swap.
pub(crate) fn period(watchdog: Option<Duration>) -> Duration {
    match watchdog {
        Some(w) => (w / 2).clamp(Duration::from_millis(100), IDLE_PERIOD),
        None => IDLE_PERIOD,
    }
}

/// One keep-alive decision: the notices to send this tick.
pub(crate) fn tick(stuck: &[Stuck], watchdog_on: bool, was_healthy: bool) -> Vec<Notice> {
    let mut out = Vec::new();
    if stuck.is_empty() {
        if watchdog_on {
            out.push(Notice::Watchdog);
        }
        if !was_healthy {
            out.push(Notice::Status("all loops alive again".into()));
        }
    } else if was_healthy {
        let names: Vec<String> = stuck
            .iter()
            .map(|s| format!("{} ({}s)", s.name, s.silent_for.as_secs()))
            .collect();
        out.push(Notice::Status(format!(
            "stuck loop(s): {}; withholding watchdog keep-alive",
            names.join(", ")
        )));
    }
    out
}

pub fn run(
    liveness: Heartbeats,
    notifier: Arc<dyn Notifier>,
    shutdown: Shutdown,
    on_keepalive: impl Fn(),
) {
    let wd = notifier.watchdog_interval();
    let period = period(wd);
    let mut healthy = true;
    loop {
        let stuck = liveness.stuck();
        for n in tick(&stuck, wd.is_some(), healthy) {
            if let Notice::Status(s) = &n {
                if stuck.is_empty() {
                    log::info!("{s}");
                } else {
                    log::error!("{s}");
                }
            }
            if n == Notice::Watchdog {
                on_keepalive();
            }
            let _ = notifier.send(&n);
        }
        healthy = stuck.is_empty();
        if shutdown.wait(period) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuck() -> Vec<Stuck> {
        vec![Stuck {
            name: "mounts".into(),
            silent_for: Duration::from_secs(40),
        }]
    }

    #[test]
    fn keepalives_flow_only_while_every_loop_is_alive() {
        assert_eq!(tick(&[], true, true), vec![Notice::Watchdog]);
        let t = tick(&stuck(), true, true);
        assert!(!t.contains(&Notice::Watchdog));
        assert!(matches!(&t[..], [Notice::Status(s)] if s.contains("mounts (40s)")));
        assert!(
            tick(&stuck(), true, false).is_empty(),
            "status is said once per streak"
        );
        assert_eq!(
            tick(&[], true, false),
            vec![
                Notice::Watchdog,
                Notice::Status("all loops alive again".into())
            ]
        );
    }

    #[test]
    fn no_watchdog_means_no_keepalives_but_status_still_works() {
        assert!(tick(&[], false, true).is_empty());
        assert_eq!(tick(&stuck(), false, true).len(), 1);
    }

    #[test]
    fn period_is_half_of_watchdog_sec_within_bounds() {
        assert_eq!(
            period(Some(Duration::from_secs(15))),
            Duration::from_millis(7500)
        );
        assert_eq!(
            period(Some(Duration::from_secs(60))),
            Duration::from_secs(30),
            "the unit's WatchdogSec"
        );
        assert_eq!(
            period(Some(Duration::from_secs(3))),
            Duration::from_millis(1500)
        );
        assert_eq!(
            period(Some(Duration::from_millis(30))),
            Duration::from_millis(100)
        );
        assert_eq!(period(Some(Duration::from_secs(600))), IDLE_PERIOD);
        assert_eq!(period(None), IDLE_PERIOD);
    }
}
