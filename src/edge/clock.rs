//! Time as an injected edge: the policy, the detectors, the reboot sequence and preflight's
//! clock check take `now` from a [`Clock`], and wait with [`Clock::sleep`], so tests replay
//! hours of a node's life in microseconds. The one clock trait of the crate.

#[cfg(any(test, feature = "fakes"))]
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Wall clock. May jump (boards without RTC); never use it for intervals.
    fn wall(&self) -> SystemTime;
    /// CLOCK_MONOTONIC since boot: the same clock as `/dev/kmsg` timestamps.
    fn monotonic(&self) -> Duration;
    /// Waits `d`; a fake advances its clocks instead.
    fn sleep(&self, d: Duration);
    /// Whether the wall clock is known to be synchronised: the kernel's NTP state
    /// (adjtimex(2) without `STA_UNSYNC`, as chrony and timesyncd leave it),
    /// systemd-timesyncd's flag file, or timedated's view of the kernel state. May run a
    /// bounded subprocess: ask only when it matters.
    fn synchronized(&self) -> bool;

    fn unix_secs_f64(&self) -> f64 {
        self.wall()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
    fn unix_secs(&self) -> u64 {
        self.unix_secs_f64() as u64
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
    fn monotonic(&self) -> Duration {
        monotonic_now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
    fn synchronized(&self) -> bool {
        kernel_synced() || std::path::Path::new(TIMESYNCD_FLAG).exists() || timedated_synced()
    }
}

/// timedated answers from adjtimex(2) in its own process: the packaged unit keeps
/// `ProtectClock=yes`, whose filter denies adjtimex even read-only, so inside it this is
/// how the kernel's word reaches the daemon (chrony or ntpd, no timesyncd flag).
fn timedated_synced() -> bool {
    let argv: Vec<String> = ["timedatectl", "show", "-p", "NTPSynchronized", "--value"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    super::command::stdout_with_deadline(&argv, TIMEDATECTL_TIMEOUT).is_ok_and(|o| o == "yes")
}

/// timedated answers in milliseconds; it is bus-activated, so allow for its start.
const TIMEDATECTL_TIMEOUT: Duration = Duration::from_secs(3);

/// systemd-timesyncd touches this file once it has synchronised the clock.
pub(crate) const TIMESYNCD_FLAG: &str = "/run/systemd/timesync/synchronized";

/// True when the kernel's NTP state says the clock is synchronised.
pub(crate) fn kernel_synced() -> bool {
    // One adjtimex(2) reader for the daemon, preflight and the clock detector.
    use super::timex::{KernelNtp, NtpSource};
    KernelNtp.read().is_ok_and(|r| r.synced)
}

/// CLOCK_MONOTONIC as a Duration (std's Instant hides the value, and kmsg needs it).
pub(crate) fn monotonic_now() -> Duration {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

#[cfg(any(test, feature = "fakes"))]
/// A clock tests move by hand; sleeping advances it at once and is recorded.
pub struct FakeClock {
    inner: Mutex<(SystemTime, Duration)>,
    sleeps: Mutex<Vec<Duration>>,
    synchronized: std::sync::atomic::AtomicBool,
}

#[cfg(any(test, feature = "fakes"))]
impl Default for FakeClock {
    /// The epoch, and monotonic time zero.
    fn default() -> Self {
        FakeClock::new(0, Duration::ZERO)
    }
}

#[cfg(any(test, feature = "fakes"))]
impl FakeClock {
    pub fn new(unix_secs: u64, monotonic: Duration) -> Self {
        FakeClock {
            inner: Mutex::new((UNIX_EPOCH + Duration::from_secs(unix_secs), monotonic)),
            sleeps: Mutex::new(Vec::new()),
            synchronized: std::sync::atomic::AtomicBool::new(false),
        }
    }
    /// Every sleep so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap().clone()
    }
    /// Moves both clocks forward.
    pub fn advance(&self, d: Duration) {
        let mut g = self.inner.lock().unwrap();
        g.0 += d;
        g.1 += d;
    }
    /// Jumps the wall clock only, as NTP does on a board that booted without RTC.
    pub fn set_wall(&self, unix_secs: u64) {
        self.inner.lock().unwrap().0 = UNIX_EPOCH + Duration::from_secs(unix_secs);
    }
    /// What [`Clock::synchronized`] answers (false until set).
    pub fn set_synchronized(&self, on: bool) {
        self.synchronized
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "fakes"))]
impl Clock for FakeClock {
    fn wall(&self) -> SystemTime {
        self.inner.lock().unwrap().0
    }
    fn monotonic(&self) -> Duration {
        self.inner.lock().unwrap().1
    }
    fn sleep(&self, d: Duration) {
        self.sleeps.lock().unwrap().push(d);
        self.advance(d);
    }
    fn synchronized(&self) -> bool {
        self.synchronized.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_wall_jumps_do_not_move_monotonic_time() {
        let c = FakeClock::new(1000, Duration::from_secs(5));
        c.advance(Duration::from_secs(2));
        assert_eq!(c.unix_secs(), 1002);
        assert_eq!(c.monotonic(), Duration::from_secs(7));
        c.set_wall(10);
        assert_eq!(c.unix_secs(), 10);
        assert_eq!(c.monotonic(), Duration::from_secs(7));
    }

    #[test]
    fn system_monotonic_clock_moves_forward() {
        let a = SystemClock.monotonic();
        let b = SystemClock.monotonic();
        assert!(b >= a && a > Duration::ZERO);
    }
}
