//! The feeder: a dedicated plain thread that resets the hardware timer every `timeout / 3`,
//! but only while the daemon's health predicate ("all daemon loops are alive") holds.
//!
//! It takes no lock a detector could hold and calls nothing that can block on what nodemedic
//! watches, so a stuck probe cannot delay it, while a stuck loop stops the feed and the board
//! resets: a wedged healer is as bad as a wedged node. The reboot path stops the feed on
//! purpose ([`FeederHandle::stop_feeding`]); from then on the device stays open and silent
//! until the board resets.
//!
//! A clean stop disarms the timer with a magic close, except when `no_way_out` is set or a
//! reboot is under way ([`FeederHandle::keep_armed_on_stop`]): if systemd stops nodemedic
//! while shutting down for that reboot and the shutdown then hangs (a hung mount refusing
//! to unmount), the still-armed timer resets the board anyway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{WatchdogDevice, WatchdogError};

/// Unix time of the last successful keep-alive (0 before the first one).
pub(crate) const METRIC_LAST_KEEPALIVE: &str =
    "nodemedic_watchdog_last_keepalive_timestamp_seconds";
/// The timeout the hardware runs with, after clamping and what the driver reported.
pub(crate) const METRIC_TIMEOUT: &str = "nodemedic_watchdog_timeout_seconds";
/// As medik8s: a keep-alive every third of the timeout survives one late wake-up of the
/// thread on a loaded board without a spurious reset.
pub(crate) const FEEDS_PER_TIMEOUT: u32 = 3;
/// Floor for the period: a zero period (a 0 s timeout slipping through) must not spin.
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// The keep-alive period for a hardware timeout.
pub(crate) fn feed_period(timeout: Duration) -> Duration {
    timeout / FEEDS_PER_TIMEOUT
}

/// How to feed: the effective timeout, the period (normally [`feed_period`]) and whether a
/// clean stop may disarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeedPlan {
    pub(crate) timeout: Duration,
    pub(crate) period: Duration,
    pub(crate) no_way_out: bool,
}

impl FeedPlan {
    pub(crate) fn for_timeout(timeout: Duration, no_way_out: bool) -> Self {
        FeedPlan {
            timeout,
            period: feed_period(timeout),
            no_way_out,
        }
    }
}

/// How the feeder left the device when its thread ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// Magic close: the timer is stopped.
    Disarmed,
    /// Closed without a magic close: the board resets after the timeout unless the device
    /// is reopened and fed.
    LeftArmed(LeftArmed),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeftArmed {
    /// The reboot path stopped the feed.
    FeedingStopped,
    /// A reboot was requested before the stop.
    RebootPending,
    /// `no_way_out` is configured.
    NoWayOut,
    /// The [`Feeder`] was dropped (a panic unwinding, say) instead of stopped.
    Dropped,
}

#[derive(Debug, Default, Clone, Copy)]
struct Control {
    stop: bool,
    dropped: bool,
    feeding_stopped: bool,
    keep_armed: bool,
}

/// Whether a stopping feeder may disarm the timer: `None` means magic close.
fn close_decision(ctl: &Control, no_way_out: bool) -> Option<LeftArmed> {
    if ctl.feeding_stopped {
        Some(LeftArmed::FeedingStopped)
    } else if ctl.keep_armed {
        Some(LeftArmed::RebootPending)
    } else if no_way_out {
        Some(LeftArmed::NoWayOut)
    } else if ctl.dropped {
        Some(LeftArmed::Dropped)
    } else {
        None
    }
}

#[derive(Debug)]
struct Shared {
    ctl: Mutex<Control>,
    wake: Condvar,
    timeout: Duration,
    last_keepalive_unix: AtomicU64,
    keepalives: AtomicU64,
    withheld: AtomicU64,
    failures: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Control> {
        // Control is plain flags: still consistent if a holder panicked.
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, f: impl FnOnce(&mut Control)) {
        f(&mut self.lock());
        self.wake.notify_all();
    }
}

/// A cloneable view of a running feeder: control for the reboot path, values for metrics.
#[derive(Debug, Clone)]
pub struct FeederHandle(Arc<Shared>);

impl FeederHandle {
    /// Stops keep-alives for good so the board resets within the timeout. When this
    /// returns, no further keep-alive is written.
    pub(crate) fn stop_feeding(&self) {
        self.0.set(|c| c.feeding_stopped = true);
    }

    /// A reboot is under way: keep feeding, but a later clean stop must not disarm.
    pub(crate) fn keep_armed_on_stop(&self) {
        self.0.set(|c| c.keep_armed = true);
    }

    /// A reboot nodemedic asked for is under way and the feed still runs: a stop now must
    /// leave the timer armed and fed (see `daemon::shutdown_linger`).
    pub(crate) fn reboot_pending(&self) -> bool {
        let c = self.0.lock();
        c.keep_armed && !c.feeding_stopped
    }

    pub(crate) fn is_feeding_stopped(&self) -> bool {
        self.0.lock().feeding_stopped
    }

    /// The effective hardware timeout (for [`METRIC_TIMEOUT`]).
    pub(crate) fn timeout(&self) -> Duration {
        self.0.timeout
    }

    /// Unix seconds of the last successful keep-alive (for [`METRIC_LAST_KEEPALIVE`]).
    pub(crate) fn last_keepalive_unix(&self) -> Option<u64> {
        match self.0.last_keepalive_unix.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    #[cfg(test)]
    /// Successful keep-alives so far.
    pub(crate) fn keepalives(&self) -> u64 {
        self.0.keepalives.load(Ordering::Acquire)
    }

    #[cfg(test)]
    /// Ticks on which the health predicate was false and nothing was written.
    pub(crate) fn withheld(&self) -> u64 {
        self.0.withheld.load(Ordering::Acquire)
    }

    #[cfg(test)]
    /// Keep-alives the device refused.
    pub(crate) fn failures(&self) -> u64 {
        self.0.failures.load(Ordering::Acquire)
    }
}

/// The running feeder thread. Stop it with [`Feeder::stop`]; dropping it ends the thread
/// without disarming.
#[derive(Debug)]
pub(crate) struct Feeder {
    handle: FeederHandle,
    thread: Option<JoinHandle<Result<Closed, WatchdogError>>>,
}

impl Feeder {
    /// Starts feeding `dev` (already configured) per `plan` while `healthy()` is true. The
    /// predicate runs on the feeder thread every period and must not block.
    #[cfg(test)]
    pub(crate) fn start<D, H>(dev: D, plan: FeedPlan, healthy: H) -> Result<Feeder, WatchdogError>
    where
        D: WatchdogDevice + 'static,
        H: Fn() -> bool + Send + 'static,
    {
        Self::start_with_stack(dev, plan, healthy, None)
    }

    /// [`Feeder::start`] with the feeder thread's stack size (tests make the spawn fail
    /// with an impossible one). If the thread cannot start, the device is disarmed with a
    /// magic close: left armed, nobody would feed it and the board would reset.
    pub(crate) fn start_with_stack<D, H>(
        dev: D,
        plan: FeedPlan,
        healthy: H,
        stack: Option<usize>,
    ) -> Result<Feeder, WatchdogError>
    where
        D: WatchdogDevice + 'static,
        H: Fn() -> bool + Send + 'static,
    {
        let shared = Arc::new(Shared {
            ctl: Mutex::new(Control::default()),
            wake: Condvar::new(),
            timeout: plan.timeout,
            last_keepalive_unix: AtomicU64::new(0),
            keepalives: AtomicU64::new(0),
            withheld: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let s = shared.clone();
        // The device waits here until the thread takes it, so a failed spawn gives it back.
        let slot = Arc::new(Mutex::new(Some(dev)));
        let taken = slot.clone();
        let mut builder = std::thread::Builder::new().name("wdt-feeder".into());
        if let Some(n) = stack {
            builder = builder.stack_size(n);
        }
        let thread = builder
            .spawn(move || {
                let dev = taken
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .expect("the device is handed over once");
                run(dev, plan, healthy, &s)
            })
            .map_err(|e| {
                if let Some(dev) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    match dev.magic_close() {
                        Ok(()) => log::error!(
                            "the watchdog feeder thread cannot start ({e}): watchdog disarmed"
                        ),
                        Err(c) => log::error!(
                            "the watchdog feeder thread cannot start ({e}), and disarming failed ({c}): the board may reset"
                        ),
                    }
                }
                WatchdogError::Thread(e)
            })?;
        Ok(Feeder {
            handle: FeederHandle(shared),
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> FeederHandle {
        self.handle.clone()
    }

    /// Ends the thread and closes the device: a magic close unless `no_way_out`, a pending
    /// reboot or a stopped feed says the timer must stay armed.
    pub(crate) fn stop(mut self) -> Result<Closed, WatchdogError> {
        self.handle.0.set(|c| c.stop = true);
        let thread = self
            .thread
            .take()
            .expect("thread is present until stop or drop");
        thread.join().map_err(|_| WatchdogError::FeederPanicked)?
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.0.set(|c| {
                c.stop = true;
                c.dropped = true;
            });
            let _ = t.join();
        }
    }
}

enum Tick {
    Due,
    Stop,
}

/// Sleeps until `due` or a stop; after `stop_feeding` only a stop wakes it.
fn wait_tick(shared: &Shared, due: Instant) -> Tick {
    let mut g = shared.lock();
    loop {
        if g.stop {
            return Tick::Stop;
        }
        if g.feeding_stopped {
            g = shared.wake.wait(g).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        let now = Instant::now();
        if now >= due {
            return Tick::Due;
        }
        g = shared
            .wake
            .wait_timeout(g, due - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        // 0 means "never"; a clock before 1970 (a Pi without RTC can be far off) still counts.
        .max(1)
}

fn run<D: WatchdogDevice, H: Fn() -> bool>(
    mut dev: D,
    plan: FeedPlan,
    healthy: H,
    shared: &Shared,
) -> Result<Closed, WatchdogError> {
    let path = dev.path().display().to_string();
    // A zero period would spin; nothing real feeds faster than every millisecond.
    let period = plan.period.max(MIN_PERIOD);
    let mut due = Instant::now();
    let mut was_healthy = true;
    let mut was_failing = false;
    while let Tick::Due = wait_tick(shared, due) {
        // After a stall the next tick is due at once, then the period resumes: no burst.
        due = (due + period).max(Instant::now());
        let ok = healthy();
        if ok != was_healthy {
            if ok {
                log::info!("all daemon loops alive again: feeding watchdog {path}");
            } else {
                log::warn!(
                    "a daemon loop is stuck: withholding keep-alives from watchdog {path}; the \
                     board resets within {} s unless it recovers",
                    plan.timeout.as_secs()
                );
            }
            was_healthy = ok;
        }
        if !ok {
            shared.withheld.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        // Under the lock, so that once stop_feeding() returns no keep-alive follows.
        let g = shared.lock();
        if g.stop || g.feeding_stopped {
            continue;
        }
        match dev.keepalive() {
            Ok(()) => {
                shared
                    .last_keepalive_unix
                    .store(unix_now(), Ordering::Release);
                shared.keepalives.fetch_add(1, Ordering::AcqRel);
                if was_failing {
                    log::info!("watchdog {path} accepts keep-alives again");
                    was_failing = false;
                }
            }
            Err(e) => {
                shared.failures.fetch_add(1, Ordering::AcqRel);
                if !was_failing {
                    log::error!("{e}");
                    was_failing = true;
                }
            }
        }
        drop(g);
    }
    let ctl = *shared.lock();
    match close_decision(&ctl, plan.no_way_out) {
        None => {
            dev.magic_close()?;
            log::info!("watchdog {path} disarmed (magic close)");
            Ok(Closed::Disarmed)
        }
        Some(why) => {
            if why == LeftArmed::RebootPending && healthy() {
                // The rest of the shutdown (units ordered after nodemedic, unmounting,
                // systemd-shutdown) gets a whole timeout from now, not from the last tick.
                if let Err(e) = dev.keepalive() {
                    log::error!("last keep-alive before the reboot: {e}");
                }
            }
            drop(dev);
            log::warn!(
                "watchdog {path} closed still armed ({why:?}): the board resets in {} s unless \
                 it is fed again",
                plan.timeout.as_secs()
            );
            Ok(Closed::LeftArmed(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watchdog::device::{FakeEvent, FakeWatchdog, KEEPALIVE_BYTE, LinuxWatchdog};
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    /// Short enough that tests run in milliseconds; all waits below are event-driven.
    const TICK: Duration = Duration::from_millis(2);
    /// Only reached when the feeder is broken.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn plan(no_way_out: bool) -> FeedPlan {
        FeedPlan {
            timeout: Duration::from_secs(15),
            period: TICK,
            no_way_out,
        }
    }

    /// A health predicate the test flips, reporting every evaluation on a channel: when the
    /// test has seen evaluation N+1, everything the feeder did for evaluation N is done.
    struct Health {
        flag: Arc<AtomicBool>,
        evals: mpsc::Receiver<(bool, Instant)>,
    }

    impl Health {
        fn new() -> (Health, impl Fn() -> bool + Send + 'static) {
            let flag = Arc::new(AtomicBool::new(true));
            let (tx, evals) = mpsc::channel();
            let f = flag.clone();
            let pred = move || {
                let h = f.load(Ordering::SeqCst);
                let _ = tx.send((h, Instant::now()));
                h
            };
            (Health { flag, evals }, pred)
        }

        fn set(&self, healthy: bool) {
            self.flag.store(healthy, Ordering::SeqCst);
        }

        /// Waits for `n` evaluations that returned `value`.
        fn saw(&self, value: bool, n: usize) {
            let mut seen = 0;
            while seen < n {
                let (v, _) = self
                    .evals
                    .recv_timeout(PATIENCE)
                    .expect("the feeder stopped evaluating health");
                if v == value {
                    seen += 1;
                }
            }
        }
    }

    #[test]
    fn the_period_is_a_third_of_the_timeout() {
        assert_eq!(feed_period(Duration::from_secs(15)), Duration::from_secs(5));
        assert_eq!(
            feed_period(Duration::from_secs(10)),
            Duration::from_nanos(3_333_333_333)
        );
        let p = FeedPlan::for_timeout(Duration::from_secs(9), true);
        assert_eq!(p.period, Duration::from_secs(3));
        assert!(p.no_way_out);
    }

    #[test]
    fn close_decision_disarms_only_on_a_plain_clean_stop() {
        for bits in 0..16u8 {
            let ctl = Control {
                stop: true,
                feeding_stopped: bits & 1 != 0,
                keep_armed: bits & 2 != 0,
                dropped: bits & 4 != 0,
            };
            let no_way_out = bits & 8 != 0;
            let d = close_decision(&ctl, no_way_out);
            let any = ctl.feeding_stopped || ctl.keep_armed || ctl.dropped || no_way_out;
            assert_eq!(d.is_none(), !any, "{ctl:?} no_way_out={no_way_out}");
            if ctl.feeding_stopped {
                assert_eq!(d, Some(LeftArmed::FeedingStopped));
            }
        }
    }

    #[test]
    fn a_healthy_daemon_feeds_repeatedly_and_a_clean_stop_disarms() {
        let dev = FakeWatchdog::new();
        let log = dev.log();
        let (health, pred) = Health::new();
        let f = Feeder::start(dev, plan(false), pred).unwrap();
        // The 4th evaluation comes after the 3rd keep-alive is fully accounted.
        health.saw(true, 4);
        let h = f.handle();
        assert!(h.keepalives() >= 3);
        assert_eq!(h.timeout(), Duration::from_secs(15));
        let now = unix_now();
        let last = h.last_keepalive_unix().unwrap();
        assert!(last <= now && last + 5 >= now, "{last} vs {now}");
        assert_eq!(f.stop().unwrap(), Closed::Disarmed);
        let ev = log.events();
        assert_eq!(ev.last(), Some(&FakeEvent::MagicClose));
        assert!(
            ev[..ev.len() - 1]
                .iter()
                .all(|e| *e == FakeEvent::Keepalive)
        );
    }

    #[test]
    fn the_first_keepalive_is_written_at_once_not_after_a_period() {
        let dev = FakeWatchdog::new();
        let log = dev.log();
        let long = FeedPlan {
            period: Duration::from_secs(3600),
            ..plan(false)
        };
        let f = Feeder::start(dev, long, || true).unwrap();
        assert!(log.wait_for(PATIENCE, |e| e.contains(&FakeEvent::Keepalive)));
        // Stop wakes the thread from its hour-long wait at once.
        let t0 = Instant::now();
        assert_eq!(f.stop().unwrap(), Closed::Disarmed);
        assert!(t0.elapsed() < PATIENCE);
        assert_eq!(
            log.events(),
            vec![FakeEvent::Keepalive, FakeEvent::MagicClose]
        );
    }

    #[test]
    fn an_unhealthy_daemon_writes_no_keepalive_until_it_recovers() {
        let dev = FakeWatchdog::new();
        let log = dev.log();
        let (health, pred) = Health::new();
        let f = Feeder::start(dev, plan(false), pred).unwrap();
        health.saw(true, 2);
        health.set(false);
        health.saw(false, 1);
        let before = log.keepalives();
        health.saw(false, 5);
        assert_eq!(log.keepalives(), before, "fed while unhealthy");
        assert!(f.handle().withheld() >= 5);
        health.set(true);
        health.saw(true, 2);
        assert!(log.keepalives() > before, "did not resume after recovery");
        f.stop().unwrap();
    }

    #[test]
    fn stop_feeding_silences_the_feeder_and_a_later_stop_leaves_the_timer_armed() {
        let dev = FakeWatchdog::new();
        let log = dev.log();
        let (health, pred) = Health::new();
        let f = Feeder::start(dev, plan(false), pred).unwrap();
        health.saw(true, 2);
        let h = f.handle();
        h.stop_feeding();
        let stopped = Instant::now();
        assert!(h.is_feeding_stopped());
        let after = log.keepalives();
        // A window of ~25 periods: a still-ticking thread would evaluate health ~25 times;
        // a silenced one at most once more (a tick already past its wait).
        let window_end = stopped + Duration::from_millis(50);
        let mut evals = 0;
        while let Some(left) = window_end.checked_duration_since(Instant::now()) {
            if let Ok((_, at)) = health.evals.recv_timeout(left) {
                evals += usize::from(at >= stopped);
            }
        }
        assert!(
            evals <= 1,
            "{evals} health evaluations after stop_feeding()"
        );
        assert_eq!(
            log.keepalives(),
            after,
            "a keep-alive followed stop_feeding()"
        );
        assert_eq!(
            f.stop().unwrap(),
            Closed::LeftArmed(LeftArmed::FeedingStopped)
        );
        assert_eq!(log.events().last(), Some(&FakeEvent::DroppedArmed));
        assert!(!log.events().contains(&FakeEvent::MagicClose));
    }

    #[test]
    fn stop_feeding_between_the_health_check_and_the_keepalive_cancels_that_keepalive() {
        let dev = FakeWatchdog::new();
        let log = dev.log();
        let slot: Arc<std::sync::OnceLock<FeederHandle>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let (s, l) = (slot.clone(), log.clone());
        // The predicate runs on the feeder thread right before the keep-alive: stopping
        // the feed from inside it hits that window every time.
        let pred = move || {
            if let Some(h) = s.get() {
                let before = l.keepalives();
                h.stop_feeding();
                let _ = tx.send(before);
            }
            true
        };
        let f = Feeder::start(dev, plan(false), pred).unwrap();
        slot.set(f.handle()).unwrap();
        let before = rx.recv_timeout(PATIENCE).unwrap();
        assert_eq!(
            f.stop().unwrap(),
            Closed::LeftArmed(LeftArmed::FeedingStopped)
        );
        assert_eq!(log.keepalives(), before);
    }

    #[test]
    fn no_way_out_never_disarms_on_a_clean_stop() {
        let dev = FakeWatchdog::new();
        let log = dev.log();
        let f = Feeder::start(dev, plan(true), || true).unwrap();
        assert!(log.wait_for(PATIENCE, |e| !e.is_empty()));
        assert_eq!(f.stop().unwrap(), Closed::LeftArmed(LeftArmed::NoWayOut));
        assert_eq!(log.events().last(), Some(&FakeEvent::DroppedArmed));
    }

    #[test]
    fn a_pending_reboot_keeps_feeding_but_never_disarms() {
        let dev = FakeWatchdog::new();
        let log = dev.log();
        let (health, pred) = Health::new();
        let f = Feeder::start(dev, plan(false), pred).unwrap();
        f.handle().keep_armed_on_stop();
        health.saw(true, 1);
        let n = log.keepalives();
        health.saw(true, 2);
        assert!(
            log.keepalives() > n,
            "feeding must go on during the graceful reboot"
        );
        let n = log.keepalives();
        assert_eq!(
            f.stop().unwrap(),
            Closed::LeftArmed(LeftArmed::RebootPending)
        );
        assert!(!log.events().contains(&FakeEvent::MagicClose));
        assert_eq!(
            log.keepalives(),
            n + 1,
            "one last keep-alive right before the close gives the rest of the shutdown a whole timeout"
        );
        assert_eq!(log.events().last(), Some(&FakeEvent::DroppedArmed));
    }

    #[test]
    fn a_reboot_is_pending_only_until_the_feed_is_stopped() {
        let f = Feeder::start(FakeWatchdog::new(), plan(false), || true).unwrap();
        let h = f.handle();
        assert!(!h.reboot_pending());
        h.keep_armed_on_stop();
        assert!(h.reboot_pending());
        h.stop_feeding();
        assert!(!h.reboot_pending());
        assert_eq!(
            f.stop().unwrap(),
            Closed::LeftArmed(LeftArmed::FeedingStopped)
        );
    }

    #[test]
    fn dropping_the_feeder_is_not_a_magic_close() {
        let dev = FakeWatchdog::new();
        let log = dev.log();
        let f = Feeder::start(dev, plan(false), || true).unwrap();
        assert!(log.wait_for(PATIENCE, |e| !e.is_empty()));
        drop(f);
        assert_eq!(log.events().last(), Some(&FakeEvent::DroppedArmed));
        assert!(!log.events().contains(&FakeEvent::MagicClose));
    }

    #[test]
    fn refused_keepalives_are_counted_and_retried() {
        let dev = FakeWatchdog::new().with_failing_keepalive();
        let log = dev.log();
        let (health, pred) = Health::new();
        let f = Feeder::start(dev, plan(false), pred).unwrap();
        health.saw(true, 4);
        let h = f.handle();
        assert!(h.failures() >= 3);
        assert!(log.keepalives() >= 3, "attempts are recorded by the device");
        assert_eq!(h.keepalives(), 0);
        assert_eq!(h.last_keepalive_unix(), None);
        f.stop().unwrap();
    }

    fn device_file() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("watchdog");
        std::fs::write(&p, b"").unwrap();
        (dir, p)
    }

    #[test]
    fn the_real_device_on_a_file_gets_keepalive_bytes_and_v_last_after_a_clean_stop() {
        let (_d, path) = device_file();
        let dev = LinuxWatchdog::open(&path).unwrap();
        let (health, pred) = Health::new();
        let f = Feeder::start(dev, plan(false), pred).unwrap();
        health.saw(true, 4);
        assert_eq!(f.stop().unwrap(), Closed::Disarmed);
        let bytes = std::fs::read(&path).unwrap();
        let (last, feeds) = bytes.split_last().unwrap();
        assert_eq!(*last, b'V');
        assert!(feeds.len() >= 3, "{bytes:?}");
        assert!(feeds.iter().all(|b| *b == KEEPALIVE_BYTE), "{bytes:?}");
    }

    #[test]
    fn the_real_device_on_a_file_gets_no_byte_while_unhealthy() {
        let (_d, path) = device_file();
        let dev = LinuxWatchdog::open(&path).unwrap();
        let (health, pred) = Health::new();
        let f = Feeder::start(dev, plan(false), pred).unwrap();
        health.saw(true, 2);
        health.set(false);
        health.saw(false, 1);
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len >= 1);
        health.saw(false, 5);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        // Stopped while unhealthy: the clean stop still disarms, nothing else was written.
        assert_eq!(f.stop().unwrap(), Closed::Disarmed);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, len + 1);
        assert_eq!(bytes.last(), Some(&b'V'));
    }

    #[test]
    fn the_real_device_on_a_file_stays_silent_after_stop_feeding() {
        let (_d, path) = device_file();
        let dev = LinuxWatchdog::open(&path).unwrap();
        let (health, pred) = Health::new();
        let f = Feeder::start(dev, plan(false), pred).unwrap();
        health.saw(true, 2);
        f.handle().stop_feeding();
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(
            f.stop().unwrap(),
            Closed::LeftArmed(LeftArmed::FeedingStopped)
        );
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, len);
        assert!(!bytes.contains(&b'V'));
    }
}
