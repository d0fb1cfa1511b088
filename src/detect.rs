//! Detectors and the thread that runs each one.
//!
//! Every detector runs on its own plain thread, never on the async runtime: a detector
//! that blocks (a kernel read, a slow `/proc` walk) only delays itself. Its pass publishes
//! the full condition set to the hub and beats its heartbeat; a pass that fails keeps the
//! previous conditions (a failed read is not evidence that a problem cleared), and a pass
//! that panics is caught, counted and retried next interval.

use serde::Serialize;
use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::edge::Clock;
use crate::hub::Hub;
use crate::liveness::{Heartbeat, Shutdown, StopFd};
use crate::model::Condition;

/// What one pass found.
#[derive(Debug, Default)]
pub struct Sample {
    pub conditions: Vec<Condition>,
    /// Detector-specific facts for `/status` and `check`.
    pub info: serde_json::Value,
    /// Extra rows for `nodemedic check` (configuration risks, sysctls, fallbacks).
    pub(crate) notes: Vec<CheckNote>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NoteLevel {
    Ok,
    Info,
    Warn,
}

/// A line of `nodemedic check` that is not a condition: "PSI disabled, using fallback".
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct CheckNote {
    pub(crate) level: NoteLevel,
    pub(crate) item: String,
    pub(crate) detail: String,
}

impl CheckNote {
    pub fn new(level: NoteLevel, item: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckNote {
            level,
            item: item.into(),
            detail: detail.into(),
        }
    }
}

/// What a detector's wake fd ([`Detector::wake_fd`]) signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeOn {
    /// POLLPRI|POLLERR: a sysfs (kernfs) attribute its driver `sysfs_notify`s. Its poll
    /// always reports POLLIN, so only these two mean "changed" (fs/kernfs/file.c).
    Notify,
    /// POLLIN: a pipe or an eventfd with something to read.
    Readable,
}

pub trait Detector: Send {
    fn name(&self) -> &'static str;
    /// Pause between passes. A streaming or event-driven detector returns zero and waits
    /// in `sample` itself, for at most [`Detector::blocks_for`].
    fn interval(&self) -> Duration;
    fn sample(&mut self) -> Result<Sample, String>;
    /// How long the next `sample` may wait for kernel events (in poll(2), a timed wait
    /// that cannot wedge); the thread vouches for that on its heartbeat first, so a
    /// detector waiting for minutes on a quiet kernel log never reads as stuck and never
    /// wakes just to beat. Zero for detectors that only wait between passes.
    fn blocks_for(&self) -> Duration {
        Duration::ZERO
    }
    /// Called once before the first pass: a detector that waits in poll(2) adds this fd,
    /// which becomes readable when the daemon stops.
    fn stop_on(&mut self, _stop: StopFd) {}
    /// True when every pass is bounded by deadlines (probes, calls and statfs run on
    /// threads it only waits for until a deadline), so it may share the periodic thread
    /// with other such detectors: one timer and one wake-up for all of them.
    fn shares_timer(&self) -> bool {
        false
    }
    /// A file descriptor that says, before the interval is up, that the next pass is due:
    /// the thread sleeps in poll(2) on it instead of a timed wait, so an idle detector
    /// costs no wake-up until something changes. After a [`WakeOn::Notify`] wake the next
    /// `sample` must re-read the attribute from offset 0: that re-arms the notification.
    fn wake_fd(&self) -> Option<(RawFd, WakeOn)> {
        None
    }
    /// On the shared thread, the least time from one pass to a pass its wake fd starts: a
    /// member whose fd may signal in bursts (the mount table while pods start) is neither
    /// run nor woken by it more often than this; the signal waits until then.
    fn wake_gap(&self) -> Duration {
        Duration::ZERO
    }
}

/// Why a [`poll_wake`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The fd signalled.
    Fd,
    Shutdown,
    /// The wait ran its full time.
    Timeout,
}

/// Sleeps up to `max` or until `fd` signals `on` or shutdown is triggered; true when
/// shutdown was triggered.
pub(crate) fn wait_for_wake(fd: RawFd, on: WakeOn, max: Duration, shutdown: &Shutdown) -> bool {
    poll_wake(fd, on, max, shutdown) == Wake::Shutdown
}

/// [`wait_for_wake`], saying why it returned. Falls back to a plain timed wait when poll(2)
/// cannot be used (no eventfd, a closed fd, a hung-up pipe), so it never spins.
pub(crate) fn poll_wake(fd: RawFd, on: WakeOn, max: Duration, shutdown: &Shutdown) -> Wake {
    poll_any(&[(fd, on)], max, shutdown).0
}

/// [`poll_wake`] on several fds at once; with [`Wake::Fd`], the index of one that signalled.
/// Any fd that cannot be polled turns the whole wait into a timed one.
pub(crate) fn poll_any(
    wanted: &[(RawFd, WakeOn)],
    max: Duration,
    shutdown: &Shutdown,
) -> (Wake, Option<usize>) {
    let timed = |shutdown: &Shutdown| {
        if shutdown.wait(max) {
            (Wake::Shutdown, None)
        } else {
            (Wake::Timeout, None)
        }
    };
    let Some(stop) = shutdown.wake_fd() else {
        return timed(shutdown);
    };
    if shutdown.is_triggered() {
        return (Wake::Shutdown, None);
    }
    let events = |on: WakeOn| match on {
        WakeOn::Notify => libc::POLLPRI | libc::POLLERR,
        WakeOn::Readable => libc::POLLIN,
    };
    let mut fds: Vec<libc::pollfd> = wanted
        .iter()
        .map(|&(fd, on)| libc::pollfd {
            fd,
            events: events(on),
            revents: 0,
        })
        .collect();
    fds.push(libc::pollfd {
        fd: stop,
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = max.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: a valid array of pollfd structs, its length passed with it.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    let broken = libc::POLLNVAL | libc::POLLHUP;
    let failed =
        rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted;
    let hung_up = wanted.iter().zip(&fds).any(|(&(_, on), p)| {
        p.revents & broken != 0 && p.revents & events(on) & !libc::POLLERR == 0
    });
    if failed || hung_up {
        return timed(shutdown);
    }
    if shutdown.is_triggered() {
        return (Wake::Shutdown, None);
    }
    match fds[..wanted.len()].iter().position(|p| p.revents != 0) {
        Some(i) => (Wake::Fd, Some(i)),
        None => (Wake::Timeout, None),
    }
}

/// Runs one pass, turning a panic into an error.
pub(crate) fn sample_once(det: &mut dyn Detector) -> Result<Sample, String> {
    match catch_unwind(AssertUnwindSafe(|| det.sample())) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("detector panicked: {msg}"))
        }
    }
}

/// How long a streaming detector (the kernel log) waits for input in one pass: below the
/// smallest allowed `health.stuck_after` (5 s) with room for a late wake-up, and short
/// enough for a prompt stop.
pub(crate) const IDLE_BEAT: Duration = Duration::from_secs(2);

pub(crate) fn spawn(
    mut det: Box<dyn Detector>,
    hub: Arc<Hub>,
    heartbeat: Heartbeat,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> std::io::Result<JoinHandle<()>> {
    let name = det.name();
    hub.metrics().detector_known(name);
    std::thread::Builder::new()
        .name(format!("detect-{name}"))
        .spawn(move || {
            let mut failing = false;
            if let Some(fd) = shutdown.poll_fd() {
                det.stop_on(fd);
            }
            loop {
                let waits = det.blocks_for();
                if !waits.is_zero() {
                    heartbeat.beat_for(waits);
                }
                run_pass(det.as_mut(), &hub, clock.as_ref(), &mut failing);
                // Waiting between passes is being alive: the heartbeat vouches for the
                // whole timed wait, so a long interval never reads as stuck and an idle
                // loop wakes only when it has work.
                let interval = det.interval();
                heartbeat.beat_for(interval);
                let stop = if interval.is_zero() {
                    shutdown.is_triggered()
                } else if let Some((fd, on)) = det.wake_fd() {
                    wait_for_wake(fd, on, interval, &shutdown)
                } else {
                    shutdown.wait(interval)
                };
                if stop {
                    break;
                }
            }
        })
}

/// One pass: publishes its conditions and info, or counts its failure (logged once per
/// streak: the first failure and the recovery).
fn run_pass(det: &mut dyn Detector, hub: &Hub, clock: &dyn Clock, failing: &mut bool) {
    let name = det.name();
    let result = sample_once(det);
    let now = clock.unix_secs_f64();
    match result {
        Ok(s) => {
            if *failing {
                log::info!(detector = name; "detector {name} recovered");
                *failing = false;
            }
            hub.publish(name, s.conditions, now as u64);
            hub.detector_ran(name, now, Ok(s.info));
        }
        Err(e) => {
            if !*failing {
                log::warn!(detector = name; "detector {name} failed: {e}");
                *failing = true;
            }
            hub.detector_ran(name, now, Err(e));
        }
    }
}

/// A detector due within this share of its interval runs with the others now: timers
/// that drift apart by a pass's length are pulled back together, so detectors with the
/// same interval wake once between them, and a longer interval lands on a shorter one's.
const COALESCE_SHARE: u32 = 5;

/// Runs every detector that [`Detector::shares_timer`] on one thread ("detect-periodic"),
/// each at its own interval: one wake-up serves all that are due. Each keeps its own
/// heartbeat, vouched for until its next pass; a pass that overran every deadline would
/// delay the others, and all of them then read as stuck, which stops the keep-alives as
/// for any stuck loop.
pub(crate) fn spawn_shared(
    mut dets: Vec<(Box<dyn Detector>, Heartbeat)>,
    hub: Arc<Hub>,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
) -> std::io::Result<JoinHandle<()>> {
    for (d, _) in &dets {
        hub.metrics().detector_known(d.name());
    }
    std::thread::Builder::new()
        .name("detect-periodic".into())
        .spawn(move || {
            let start = clock.monotonic();
            let mut next = vec![start; dets.len()];
            // When each member's wake fd may start a pass again (after its wake gap).
            let mut listen_at = vec![start; dets.len()];
            let mut failing = vec![false; dets.len()];
            if let Some(fd) = shutdown.poll_fd() {
                for (d, _) in dets.iter_mut() {
                    d.stop_on(fd.clone());
                }
            }
            loop {
                for (i, (d, _)) in dets.iter_mut().enumerate() {
                    let now = clock.monotonic();
                    let slack = d.interval() / COALESCE_SHARE;
                    if next[i] <= now + slack {
                        run_pass(d.as_mut(), &hub, clock.as_ref(), &mut failing[i]);
                        next[i] = now + d.interval();
                        listen_at[i] = now + d.wake_gap();
                    }
                }
                let now = clock.monotonic();
                for (i, (_, hb)) in dets.iter().enumerate() {
                    hb.beat_for(next[i].saturating_sub(now));
                }
                // A member that waits on a kernel event (the power detector's under-voltage
                // alarm, the mount table) is woken by it here, and only it runs early; one
                // still within its wake gap is listened to again once the gap is over.
                let mut wake_at = next.clone();
                let (owners, fds): (Vec<usize>, Vec<(RawFd, WakeOn)>) = dets
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (d, _))| {
                        let w = d.wake_fd()?;
                        if listen_at[i] > now {
                            wake_at[i] = wake_at[i].min(listen_at[i]);
                            return None;
                        }
                        Some((i, w))
                    })
                    .unzip();
                let wait = wake_at
                    .iter()
                    .min()
                    .map_or(IDLE_BEAT, |t| t.saturating_sub(now));
                match poll_any(&fds, wait, &shutdown) {
                    (Wake::Shutdown, _) => break,
                    (Wake::Fd, Some(i)) => next[owners[i]] = clock.monotonic(),
                    _ => {}
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{FakeClock, SystemClock};
    use crate::liveness::Heartbeats;
    use crate::metrics::CoreMetrics;
    use crate::model::ConditionKind;
    use prometheus_client::registry::Registry;
    use std::sync::mpsc;

    /// Scripted detector: each pass takes the next scripted result.
    struct Scripted {
        passes: mpsc::Receiver<Result<Sample, String>>,
        done: mpsc::Sender<()>,
    }

    impl Detector for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn interval(&self) -> Duration {
            Duration::ZERO
        }
        fn sample(&mut self) -> Result<Sample, String> {
            let _ = self.done.send(());
            // Blocks until the test scripts a pass or drops the script.
            self.passes
                .recv()
                .unwrap_or_else(|_| Err("script ended".into()))
        }
    }

    #[test]
    fn a_failed_pass_keeps_the_conditions_and_counts_an_error() {
        let mut reg = Registry::default();
        let hub = Arc::new(Hub::new(CoreMetrics::register(&mut reg), None));
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::new(1000, Duration::from_secs(1)));
        let live = Heartbeats::new(Arc::new(SystemClock), Duration::from_secs(30));
        let shutdown = Shutdown::default();
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let stall = Condition::new(ConditionKind::KernelRcuStall, "", "LongStall", "x");
        tx.send(Ok(Sample {
            conditions: vec![stall],
            ..Default::default()
        }))
        .unwrap();
        tx.send(Err("cannot read /dev/kmsg".into())).unwrap();
        let t = spawn(
            Box::new(Scripted {
                passes: rx,
                done: done_tx,
            }),
            hub.clone(),
            live.register("scripted"),
            shutdown.clone(),
            clock,
        )
        .unwrap();
        // Third call to sample means the first two passes were fully processed.
        for _ in 0..3 {
            done_rx.recv().unwrap();
        }
        assert_eq!(
            hub.conditions().len(),
            1,
            "failure must not clear the stall"
        );
        let st = &hub.detectors()["scripted"];
        assert_eq!(st.errors, 1);
        assert_eq!(st.last_error.as_deref(), Some("cannot read /dev/kmsg"));
        let text = crate::metrics::encode(&reg);
        assert!(
            text.contains("nodemedic_detector_errors_total{detector=\"scripted\"} 1"),
            "{text}"
        );
        shutdown.trigger();
        drop(tx);
        t.join().unwrap();
    }

    /// Records the thread it ran on, each pass.
    struct Ticker {
        name: &'static str,
        every: Duration,
        runs: Arc<std::sync::Mutex<Vec<(&'static str, String)>>>,
    }
    impl Detector for Ticker {
        fn name(&self) -> &'static str {
            self.name
        }
        fn interval(&self) -> Duration {
            self.every
        }
        fn sample(&mut self) -> Result<Sample, String> {
            let t = std::thread::current().name().unwrap_or("?").to_string();
            self.runs.lock().unwrap().push((self.name, t));
            Ok(Sample {
                conditions: vec![Condition::new(
                    ConditionKind::ZombieProcesses,
                    self.name,
                    "R",
                    "m",
                )],
                ..Default::default()
            })
        }
    }

    #[test]
    fn periodic_detectors_share_one_thread_each_at_its_own_interval() {
        let mut reg = Registry::default();
        let hub = Arc::new(Hub::new(CoreMetrics::register(&mut reg), None));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let live = Heartbeats::new(clock.clone(), Duration::from_secs(5));
        let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let ticker = |name, ms| Ticker {
            name,
            every: Duration::from_millis(ms),
            runs: runs.clone(),
        };
        let shutdown = Shutdown::default();
        let t = spawn_shared(
            vec![
                (
                    Box::new(ticker("fast", 50)) as Box<dyn Detector>,
                    live.register("fast"),
                ),
                (Box::new(ticker("slow", 200)), live.register("slow")),
            ],
            hub.clone(),
            shutdown.clone(),
            clock,
        )
        .unwrap();
        // Not a timing assertion: wait (bounded) until the slow one has run three times.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while runs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == "slow")
            .count()
            < 3
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the slow detector never ran thrice"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        shutdown.trigger();
        t.join().unwrap();
        let runs = runs.lock().unwrap();
        assert!(runs.iter().all(|(_, t)| t == "detect-periodic"), "{runs:?}");
        let fast = runs.iter().filter(|r| r.0 == "fast").count();
        assert!(fast > 3, "the fast one runs more often: {fast}");
        assert_eq!(hub.conditions().len(), 2, "both publish");
        assert!(live.stuck().is_empty());
    }

    struct Panicky;
    impl Detector for Panicky {
        fn name(&self) -> &'static str {
            "panicky"
        }
        fn interval(&self) -> Duration {
            Duration::ZERO
        }
        fn sample(&mut self) -> Result<Sample, String> {
            panic!("index out of bounds")
        }
    }

    #[test]
    fn a_panicking_pass_becomes_an_error_instead_of_killing_the_thread() {
        let e = sample_once(&mut Panicky).unwrap_err();
        assert!(e.contains("index out of bounds"), "{e}");
    }

    /// A pipe as the wake fd: the stand-in for a sysfs attribute (whose real notification
    /// is tested on a kernfs file in tests/it/power_alarm.rs).
    fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        nix::unistd::pipe().unwrap()
    }

    #[test]
    fn a_wake_fd_wakes_the_wait_only_when_it_signals_and_shutdown_always_does() {
        use std::os::fd::AsRawFd;
        let (r, w) = pipe();
        let shutdown = Shutdown::default();
        let wait = |on, ms| poll_wake(r.as_raw_fd(), on, Duration::from_millis(ms), &shutdown);
        // Nothing written: the wait runs its full time.
        assert_eq!(wait(WakeOn::Readable, 100), Wake::Timeout);
        // A byte in the pipe: an hour-long wait returns, woken by the fd.
        nix::unistd::write(&w, b"1").unwrap();
        assert_eq!(wait(WakeOn::Readable, 3_600_000), Wake::Fd);
        // POLLPRI is never raised by a pipe: a Notify wait on it is not woken by data.
        assert_eq!(wait(WakeOn::Notify, 100), Wake::Timeout);
        // Shutdown from another thread ends an hour-long wait.
        let (r2, _w2) = pipe();
        let s2 = shutdown.clone();
        let t = std::thread::spawn(move || {
            wait_for_wake(
                r2.as_raw_fd(),
                WakeOn::Notify,
                Duration::from_secs(3600),
                &s2,
            )
        });
        std::thread::sleep(Duration::from_millis(50));
        shutdown.trigger();
        assert!(t.join().unwrap());
    }

    /// A shared member with a wake fd: an hour-long interval, drained on each pass.
    struct Waker {
        fd: std::os::fd::OwnedFd,
        runs: Arc<std::sync::Mutex<Vec<(&'static str, String)>>>,
    }
    impl Detector for Waker {
        fn name(&self) -> &'static str {
            "waker"
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(3600)
        }
        fn sample(&mut self) -> Result<Sample, String> {
            let mut b = [0u8; 16];
            let _ = nix::unistd::read(&self.fd, &mut b);
            let t = std::thread::current().name().unwrap_or("?").to_string();
            self.runs.lock().unwrap().push(("waker", t));
            Ok(Sample::default())
        }
        fn shares_timer(&self) -> bool {
            true
        }
        fn wake_fd(&self) -> Option<(RawFd, WakeOn)> {
            use std::os::fd::AsRawFd;
            Some((self.fd.as_raw_fd(), WakeOn::Readable))
        }
    }

    #[test]
    fn the_shared_thread_runs_a_member_early_when_its_wake_fd_signals_and_only_that_one() {
        let mut reg = Registry::default();
        let hub = Arc::new(Hub::new(CoreMetrics::register(&mut reg), None));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let live = Heartbeats::new(clock.clone(), Duration::from_secs(5));
        let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (r, w) = pipe();
        // Each pass drains it without blocking (the first runs before anything is written).
        nix::fcntl::fcntl(
            &r,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let shutdown = Shutdown::default();
        let t = spawn_shared(
            vec![
                (
                    Box::new(Waker {
                        fd: r,
                        runs: runs.clone(),
                    }) as Box<dyn Detector>,
                    live.register("waker"),
                ),
                (
                    Box::new(Ticker {
                        name: "hourly",
                        every: Duration::from_secs(3600),
                        runs: runs.clone(),
                    }),
                    live.register("hourly"),
                ),
            ],
            hub,
            shutdown.clone(),
            clock,
        )
        .unwrap();
        let count = |n: &str| runs.lock().unwrap().iter().filter(|r| r.0 == n).count();
        let wait_for = |n: &str, k: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while count(n) < k {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{n} never ran {k} times"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        // Both run once at the start, then sleep for an hour.
        wait_for("waker", 1);
        wait_for("hourly", 1);
        for k in 2..=3 {
            nix::unistd::write(&w, b"1").unwrap();
            wait_for("waker", k);
        }
        shutdown.trigger();
        t.join().unwrap();
        assert_eq!(count("hourly"), 1, "the fd woke only its own detector");
        assert!(
            runs.lock()
                .unwrap()
                .iter()
                .all(|(_, t)| t == "detect-periodic"),
            "{runs:?}"
        );
    }

    /// A shared member whose wake fd never stops signalling (never drained), with a gap.
    struct Storm {
        fd: std::os::fd::OwnedFd,
        runs: Arc<std::sync::atomic::AtomicUsize>,
    }
    impl Detector for Storm {
        fn name(&self) -> &'static str {
            "storm"
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(3600)
        }
        fn sample(&mut self) -> Result<Sample, String> {
            self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Sample::default())
        }
        fn shares_timer(&self) -> bool {
            true
        }
        fn wake_fd(&self) -> Option<(RawFd, WakeOn)> {
            use std::os::fd::AsRawFd;
            Some((self.fd.as_raw_fd(), WakeOn::Readable))
        }
        fn wake_gap(&self) -> Duration {
            Duration::from_millis(200)
        }
    }

    #[test]
    fn a_wake_fd_that_keeps_signalling_runs_its_member_once_per_wake_gap_not_in_a_loop() {
        let mut reg = Registry::default();
        let hub = Arc::new(Hub::new(CoreMetrics::register(&mut reg), None));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let live = Heartbeats::new(clock.clone(), Duration::from_secs(5));
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r, w) = pipe();
        nix::unistd::write(&w, b"1").unwrap();
        let shutdown = Shutdown::default();
        // Before the thread exists, so its first pass comes after it.
        let t0 = std::time::Instant::now();
        let t = spawn_shared(
            vec![(
                Box::new(Storm {
                    fd: r,
                    runs: runs.clone(),
                }) as Box<dyn Detector>,
                live.register("storm"),
            )],
            hub,
            shutdown.clone(),
            clock,
        )
        .unwrap();
        // The first pass, then one per 200 ms gap: the third cannot come before two gaps
        // have passed, whatever the scheduler does (a loop would run thousands at once).
        while runs.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            assert!(t0.elapsed() < Duration::from_secs(30), "no rerun on the fd");
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = t0.elapsed();
        shutdown.trigger();
        t.join().unwrap();
        assert!(
            took >= Duration::from_millis(400),
            "three passes within {took:?}: the gap was not kept"
        );
    }

    #[test]
    fn a_hung_up_wake_fd_falls_back_to_a_timed_wait_instead_of_spinning() {
        use std::os::fd::AsRawFd;
        let (r, w) = pipe();
        drop(w);
        let t0 = std::time::Instant::now();
        let woke = poll_wake(
            r.as_raw_fd(),
            WakeOn::Readable,
            Duration::from_millis(150),
            &Shutdown::default(),
        );
        assert_eq!(woke, Wake::Timeout);
        assert!(t0.elapsed() >= Duration::from_millis(150), "did not spin");
    }

    struct Slow;
    impl Detector for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(600)
        }
        fn sample(&mut self) -> Result<Sample, String> {
            Ok(Sample::default())
        }
    }

    #[test]
    fn a_detector_idle_between_long_intervals_never_reads_as_stuck() {
        let mut reg = Registry::default();
        let hub = Arc::new(Hub::new(CoreMetrics::register(&mut reg), None));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // stuck_after much shorter than the interval.
        let live = Heartbeats::new(clock.clone(), IDLE_BEAT + Duration::from_secs(1));
        let shutdown = Shutdown::default();
        let t = spawn(
            Box::new(Slow),
            hub,
            live.register("slow"),
            shutdown.clone(),
            clock,
        )
        .unwrap();
        std::thread::sleep(IDLE_BEAT * 2 + Duration::from_millis(500));
        assert!(live.stuck().is_empty(), "{:?}", live.stuck());
        shutdown.trigger();
        t.join().unwrap();
    }
}
