//! Loop liveness and shutdown.
//!
//! Every daemon loop (each detector thread, the policy loop, the HTTP server) registers a
//! [`Heartbeat`] and beats it on every pass. A loop silent for longer than `stuck_after` is
//! stuck: `/healthz` answers 503 naming it, and the keep-alive thread stops feeding systemd
//! (and the hardware watchdog), so a wedged daemon is restarted rather than trusted. Beats
//! are atomics on the monotonic clock: checking never takes a lock a stuck loop could hold.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::edge::Clock;
use crate::edge::eventfd::{self, EventFd};

struct Entry {
    name: String,
    last_ms: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct Heartbeats {
    entries: Arc<Mutex<Vec<Arc<Entry>>>>,
    clock: Arc<dyn Clock>,
    stuck_after: Duration,
}

#[derive(Clone)]
pub(crate) struct Heartbeat {
    entry: Arc<Entry>,
    clock: Arc<dyn Clock>,
}

impl Heartbeat {
    pub(crate) fn beat(&self) {
        self.entry
            .last_ms
            .store(self.clock.monotonic().as_millis() as u64, Ordering::Relaxed);
    }

    /// Beats now and vouches for `d` more: the loop is about to sleep that long on a timed
    /// wait (which cannot wedge) and beats when it wakes. It counts as stuck only once
    /// `stuck_after` has passed beyond the promised wake-up, so an idle loop need not wake
    /// just to beat (each wake-up costs CPU on a Pi).
    pub(crate) fn beat_for(&self, d: Duration) {
        let until = self.clock.monotonic().saturating_add(d);
        self.entry
            .last_ms
            .store(until.as_millis() as u64, Ordering::Relaxed);
    }
}

/// A loop that has not beaten for too long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stuck {
    pub(crate) name: String,
    pub(crate) silent_for: Duration,
}

impl Heartbeats {
    pub fn new(clock: Arc<dyn Clock>, stuck_after: Duration) -> Self {
        Heartbeats {
            entries: Arc::default(),
            clock,
            stuck_after,
        }
    }

    /// Registers a loop; it counts as alive from now.
    pub fn register(&self, name: &str) -> Heartbeat {
        let entry = Arc::new(Entry {
            name: name.to_string(),
            last_ms: AtomicU64::new(0),
        });
        self.entries.lock().unwrap().push(entry.clone());
        let hb = Heartbeat {
            entry,
            clock: self.clock.clone(),
        };
        hb.beat();
        hb
    }

    /// The stuck loops, empty when all are alive.
    pub(crate) fn stuck(&self) -> Vec<Stuck> {
        let now = self.clock.monotonic().as_millis() as u64;
        let entries = self.entries.lock().unwrap().clone();
        entries
            .iter()
            .filter_map(|e| {
                let silent =
                    Duration::from_millis(now.saturating_sub(e.last_ms.load(Ordering::Relaxed)));
                (silent > self.stuck_after).then(|| Stuck {
                    name: e.name.clone(),
                    silent_for: silent,
                })
            })
            .collect()
    }
}

/// A file descriptor that becomes readable (and stays so) once the daemon stops: a loop
/// that waits in poll(2) on kernel events adds it, so a stop never waits out its timeout.
pub(crate) type StopFd = Arc<OwnedFd>;

/// Shutdown signal for plain threads: a condvar so a loop sleeping between passes wakes at
/// once on SIGTERM instead of finishing its interval, and an eventfd for loops in poll(2).
#[derive(Clone, Default)]
pub(crate) struct Shutdown {
    inner: Arc<(Mutex<bool>, Condvar)>,
    fd: Arc<Mutex<Option<StopFd>>>,
}

impl Shutdown {
    pub(crate) fn trigger(&self) {
        *self.inner.0.lock().unwrap() = true;
        self.inner.1.notify_all();
        if let Some(fd) = &*self.fd.lock().unwrap() {
            eventfd::signal(fd);
        }
    }

    /// The stop eventfd, made on first use (already readable if the stop came first).
    /// None only if the kernel refused an eventfd: waiters then rely on their timeouts.
    pub(crate) fn poll_fd(&self) -> Option<StopFd> {
        let mut g = self.fd.lock().unwrap();
        if g.is_none() {
            let fd = Arc::new(EventFd::new()?.into_fd());
            if *self.inner.0.lock().unwrap() {
                eventfd::signal(&fd);
            }
            *g = Some(fd);
        }
        g.clone()
    }

    /// [`Self::poll_fd`] as a raw fd, for loops that poll(2) with libc (it stays open
    /// while this `Shutdown` lives).
    pub(crate) fn wake_fd(&self) -> Option<RawFd> {
        self.poll_fd().map(|fd| fd.as_raw_fd())
    }

    pub(crate) fn is_triggered(&self) -> bool {
        *self.inner.0.lock().unwrap()
    }
    /// Sleeps up to `d`; returns true if shutdown was triggered.
    pub(crate) fn wait(&self, d: Duration) -> bool {
        let g = self.inner.0.lock().unwrap();
        let (g, _) = self
            .inner
            .1
            .wait_timeout_while(g, d, |stop| !*stop)
            .unwrap();
        *g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeClock;

    #[test]
    fn the_stop_fd_becomes_readable_on_stop_even_when_asked_for_after_it() {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let readable = |fd: &StopFd| {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
        };
        let s = Shutdown::default();
        let fd = s.poll_fd().unwrap();
        assert!(!readable(&fd));
        s.trigger();
        assert!(readable(&fd));
        assert!(readable(&fd), "stays readable");
        let late = Shutdown::default();
        late.trigger();
        assert!(readable(&late.poll_fd().unwrap()));
    }

    #[test]
    fn a_loop_that_stops_beating_is_reported_stuck_and_recovers_when_it_beats() {
        let clock = Arc::new(FakeClock::new(0, Duration::from_secs(100)));
        let l = Heartbeats::new(clock.clone(), Duration::from_secs(30));
        let a = l.register("kernel");
        let b = l.register("memory");
        clock.advance(Duration::from_secs(20));
        b.beat();
        assert!(l.stuck().is_empty());
        clock.advance(Duration::from_secs(15));
        let s = l.stuck();
        assert_eq!(
            s,
            vec![Stuck {
                name: "kernel".into(),
                silent_for: Duration::from_secs(35)
            }]
        );
        a.beat();
        assert!(l.stuck().is_empty());
    }

    #[test]
    fn a_loop_sleeping_for_a_promised_time_is_stuck_only_after_it_overruns() {
        let clock = Arc::new(FakeClock::new(0, Duration::from_secs(100)));
        let l = Heartbeats::new(clock.clone(), Duration::from_secs(30));
        let a = l.register("mounts");
        a.beat_for(Duration::from_secs(600));
        clock.advance(Duration::from_secs(620));
        assert!(l.stuck().is_empty(), "within the promise plus stuck_after");
        clock.advance(Duration::from_secs(15));
        assert_eq!(
            l.stuck(),
            vec![Stuck {
                name: "mounts".into(),
                silent_for: Duration::from_secs(35)
            }],
            "did not beat when it promised to wake"
        );
    }

    #[test]
    fn shutdown_makes_its_wake_fd_readable() {
        let s = Shutdown::default();
        let fd = s.wake_fd().expect("eventfd");
        let mut p = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(p.as_mut_ptr(), 1, 0) }, 0, "not yet");
        s.clone().trigger();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::poll(p.as_mut_ptr(), 1, 1000) }, 1);
        assert_eq!(s.wake_fd(), Some(fd), "one fd per shutdown");
    }

    #[test]
    fn shutdown_wakes_a_waiting_thread_at_once() {
        let s = Shutdown::default();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait(Duration::from_secs(3600)));
        s.trigger();
        assert!(t.join().unwrap());
        assert!(s.is_triggered());
        assert!(
            s.wait(Duration::from_secs(3600)),
            "already triggered returns immediately"
        );
    }
}
