//! Clock sanity before k3s starts (issue 5, step 2).
//!
//! Boards without a real-time clock (every Raspberry Pi) boot with the wall clock in the
//! past: at the kernel's or systemd's build time, or at what fake-hwclock saved. It jumps
//! forward once NTP answers. containerd orders and garbage-collects sandboxes by timestamps,
//! and such jumps have produced "name is reserved" loops (containerd issue 10842,
//! https://github.com/containerd/containerd/issues/10842). So before k3s starts, preflight compares the wall clock with the last time the
//! daemon saw (`last_seen_unix` in `state.json`): a clock *earlier* than that is certainly
//! wrong, and preflight waits, up to `[preflight] clock_wait`, until either the clock passes
//! that time or the kernel says it is synchronised (adjtimex(2) without `STA_UNSYNC`, or
//! systemd-timesyncd's `/run/systemd/timesync/synchronized`). It never sets the clock: that
//! is the time daemon's job, and a wrong step would be worse than waiting.
//!
//! A clock that is not earlier than last-seen is accepted as it is: with fake-hwclock a
//! clock can be behind true time yet ahead of last-seen, and nothing local can tell.
//!
//! `state.json` belongs to the daemon. It is read here without its lock (the file is
//! replaced atomically, so a read sees a whole version) and a missing or unreadable file
//! only means "no reference": never a reason to wait.
//!
//! The decision ([`assess`]) is pure; the wait ([`check_and_wait`]) takes a [`TimeSync`],
//! so tests replay minutes of a booting board in microseconds with [`FakeTimeSync`].

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
#[cfg(any(test, feature = "fakes"))]
use std::sync::Mutex;
#[cfg(any(test, feature = "fakes"))]
use std::time::UNIX_EPOCH;
use std::time::{Duration, Instant, SystemTime};

use crate::edge::Clock;

/// NTP on a Pi syncs a few seconds after the network is up (k3s.service is ordered after
/// network-online.target); 30 s covers a slow Wi-Fi association without holding k3s long.
pub(crate) const DEFAULT_CLOCK_WAIT: Duration = Duration::from_secs(30);
/// How often the clock and the sync flag are re-read while waiting: both are cheap.
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// `last_seen_unix` is whole seconds written by another process: a clock this little behind
/// is rounding or a small NTP step, not a board that booted without RTC.
pub(crate) const SLACK_SECS: u64 = 2;
pub(crate) use crate::edge::clock::TIMESYNCD_FLAG;
/// The daemon's state file (see `crate::state`); only `last_seen_unix` is read.
pub const STATE_FILE: &str = "state.json";
/// Larger than any real state file; a bigger one is not read (never trusted blindly).
const MAX_STATE_BYTES: u64 = 4 << 20;

/// The clock and the synchronisation signals, as an edge: a [`Clock`] that also knows
/// whether the kernel or timesyncd consider it synchronised.
pub trait TimeSync: Clock {
    /// `Some(source)` when the clock is known to be synchronised: `"kernel"` (adjtimex
    /// status without STA_UNSYNC) or `"timesyncd"` (its flag file exists).
    fn synced(&self) -> Option<&'static str>;
}

/// The real clock, `adjtimex(2)` (read-only: `modes = 0`) and timesyncd's flag file.
pub(crate) struct SystemTimeSync {
    pub(crate) timesyncd_flag: PathBuf,
    start: Instant,
}

impl SystemTimeSync {
    pub fn new() -> Self {
        SystemTimeSync {
            timesyncd_flag: TIMESYNCD_FLAG.into(),
            start: Instant::now(),
        }
    }
}

impl Default for SystemTimeSync {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) use crate::edge::clock::kernel_synced;

impl Clock for SystemTimeSync {
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
    fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
    fn synchronized(&self) -> bool {
        self.synced().is_some()
    }
}

impl TimeSync for SystemTimeSync {
    fn synced(&self) -> Option<&'static str> {
        if kernel_synced() {
            Some("kernel")
        } else if self.timesyncd_flag.exists() {
            Some("timesyncd")
        } else {
            None
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
/// A scripted board: the wall clock advances with every sleep, and may jump (NTP) or
/// report synchronisation once a given amount of monotonic time has passed.
pub struct FakeTimeSync {
    inner: Mutex<BoardState>,
}

#[cfg(any(test, feature = "fakes"))]
struct BoardState {
    wall: u64,
    mono: Duration,
    /// (at monotonic time, jump the wall clock to this).
    jump: Option<(Duration, u64)>,
    /// Synchronised from this monotonic time on.
    synced_at: Option<Duration>,
    sleeps: u32,
}

#[cfg(any(test, feature = "fakes"))]
impl FakeTimeSync {
    pub fn new(wall_unix: u64) -> Self {
        FakeTimeSync {
            inner: Mutex::new(BoardState {
                wall: wall_unix,
                mono: Duration::ZERO,
                jump: None,
                synced_at: None,
                sleeps: 0,
            }),
        }
    }
    /// At `after` (monotonic), NTP steps the wall clock to `to`.
    pub fn jump_at(self, after: Duration, to: u64) -> Self {
        self.inner.lock().unwrap().jump = Some((after, to));
        self
    }
    /// From `after` on (monotonic), the kernel reports the clock synchronised.
    pub fn synced_from(self, after: Duration) -> Self {
        self.inner.lock().unwrap().synced_at = Some(after);
        self
    }
    pub fn sleeps(&self) -> u32 {
        self.inner.lock().unwrap().sleeps
    }
}

#[cfg(any(test, feature = "fakes"))]
impl TimeSync for FakeTimeSync {
    fn synced(&self) -> Option<&'static str> {
        let g = self.inner.lock().unwrap();
        g.synced_at.filter(|&t| g.mono >= t).map(|_| "kernel")
    }
}

#[cfg(any(test, feature = "fakes"))]
impl Clock for FakeTimeSync {
    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.inner.lock().unwrap().wall)
    }
    fn monotonic(&self) -> Duration {
        self.inner.lock().unwrap().mono
    }
    fn sleep(&self, d: Duration) {
        let mut g = self.inner.lock().unwrap();
        g.sleeps += 1;
        let before = g.mono;
        g.mono += d;
        // The wall clock runs with monotonic time, in whole seconds crossed.
        g.wall += g.mono.as_secs() - before.as_secs();
        if let Some((at, to)) = g.jump
            && g.mono >= at
        {
            g.wall = to;
            g.jump = None;
        }
    }
    fn synchronized(&self) -> bool {
        self.synced().is_some()
    }
}

/// How the clock looked, or what waiting for it ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockVerdict {
    /// Not earlier than the last time seen: nothing to wait for.
    Sane,
    /// No last-seen time to compare with (first run, or an unreadable state file).
    NoReference,
    /// Earlier than last-seen, but the kernel or timesyncd says it is synchronised: the
    /// last-seen time was the wrong one (a clock once set in the future).
    Synced,
    /// It was earlier than last-seen; while waiting it passed it or got synchronised.
    CaughtUp,
    /// Still earlier than last-seen when the wait ran out: k3s starts anyway.
    GaveUp,
    /// Earlier than last-seen, but `clock_wait = 0`: reported only.
    NotWaited,
}

/// What [`assess`] makes of one reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClockAssessment {
    Fine(ClockVerdict),
    /// The clock is this many seconds earlier than last-seen and not synchronised.
    Behind(u64),
}

/// Judges one reading (pure).
pub(crate) fn assess(
    wall_unix: u64,
    last_seen: Option<u64>,
    synced: Option<&str>,
) -> ClockAssessment {
    let Some(seen) = last_seen else {
        return ClockAssessment::Fine(ClockVerdict::NoReference);
    };
    if wall_unix.saturating_add(SLACK_SECS) >= seen {
        return ClockAssessment::Fine(ClockVerdict::Sane);
    }
    if synced.is_some() {
        return ClockAssessment::Fine(ClockVerdict::Synced);
    }
    ClockAssessment::Behind(seen - wall_unix)
}

/// The clock part of the preflight report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReport {
    pub verdict: ClockVerdict,
    pub(crate) wall_unix_at_start: u64,
    pub wall_unix_at_end: u64,
    pub(crate) last_seen_unix: Option<u64>,
    /// How far the clock was behind last-seen at the start (0 when it was not).
    pub behind_secs: u64,
    pub waited_ms: u64,
    /// The wait allowed: `clock_wait`, or less when the run's budget had less left.
    pub(crate) limit_ms: u64,
    pub(crate) synced_by: Option<String>,
    /// Why `last_seen_unix` is missing, when the state file could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// One line for the journal and the printed summary.
    pub message: String,
}

impl ClockReport {
    #[cfg(test)]
    /// True when k3s starts with a clock known to be wrong.
    pub(crate) fn is_problem(&self) -> bool {
        matches!(self.verdict, ClockVerdict::GaveUp | ClockVerdict::NotWaited)
    }
}

/// Compares the clock with `last_seen` and, if it is behind, waits up to `limit` for it to
/// pass `last_seen` or be synchronised. `configured` is `clock_wait` (zero: never wait).
pub(crate) fn check_and_wait(
    time: &dyn TimeSync,
    last_seen: Option<u64>,
    configured: Duration,
    limit: Duration,
) -> ClockReport {
    let wall0 = time.unix_secs();
    let t0 = time.monotonic();
    let limit = limit.min(configured);
    let mut report = ClockReport {
        verdict: ClockVerdict::Sane,
        wall_unix_at_start: wall0,
        wall_unix_at_end: wall0,
        last_seen_unix: last_seen,
        behind_secs: 0,
        waited_ms: 0,
        limit_ms: limit.as_millis() as u64,
        synced_by: None,
        note: None,
        message: String::new(),
    };
    let behind = match assess(wall0, last_seen, time.synced()) {
        ClockAssessment::Fine(v) => {
            report.verdict = v;
            report.synced_by = time.synced().map(str::to_string);
            report.message = match v {
                ClockVerdict::NoReference => {
                    "clock: no last-seen time to compare with; not checked".into()
                }
                ClockVerdict::Synced => format!(
                    "clock: earlier than the last time seen ({}), but synchronised by {}: using it",
                    last_seen.unwrap_or(0),
                    report.synced_by.as_deref().unwrap_or("?")
                ),
                _ => "clock: not earlier than the last time seen".into(),
            };
            return report;
        }
        ClockAssessment::Behind(b) => b,
    };
    let seen = last_seen.unwrap_or(0);
    report.behind_secs = behind;
    if configured.is_zero() {
        report.verdict = ClockVerdict::NotWaited;
        report.message = format!(
            "clock is {behind} s earlier than the last time nodemedic saw ({seen}) and not synchronised; not waiting (preflight.clock_wait = 0, or --dry-run)"
        );
        log::warn!("preflight: {}", report.message);
        return report;
    }
    log::warn!(
        "preflight: clock ({wall0}) is {behind} s earlier than the last time nodemedic saw ({seen}), as on a board without RTC before NTP: waiting up to {} ms for time synchronisation (nodemedic never sets the clock)",
        limit.as_millis()
    );
    loop {
        let waited = time.monotonic().saturating_sub(t0);
        let wall = time.unix_secs();
        let synced = time.synced();
        report.wall_unix_at_end = wall;
        report.waited_ms = waited.as_millis() as u64;
        if let ClockAssessment::Fine(_) = assess(wall, last_seen, synced) {
            report.verdict = ClockVerdict::CaughtUp;
            report.synced_by = synced.map(str::to_string);
            report.message = format!(
                "clock caught up after {} ms ({}): now {wall}, last seen {seen}",
                report.waited_ms,
                synced.map_or("passed the last-seen time".into(), |s| format!(
                    "synchronised by {s}"
                ))
            );
            log::info!("preflight: {}", report.message);
            return report;
        }
        if waited >= limit {
            report.verdict = ClockVerdict::GaveUp;
            report.message = format!(
                "clock still {} s earlier than the last time nodemedic saw ({seen}) after waiting {} ms, and not synchronised: letting k3s start anyway; check NTP (timedatectl timesync-status)",
                seen.saturating_sub(wall),
                report.waited_ms
            );
            log::warn!("preflight: {}", report.message);
            return report;
        }
        time.sleep(POLL.min(limit - waited));
    }
}

/// Reads `last_seen_unix` from the daemon's state file in `state_dir`, without its lock.
/// `Ok(None)`: no file, or a zero value. `Err`: unreadable or not JSON (reported, ignored).
pub(crate) fn read_last_seen(state_dir: &Path) -> Result<Option<u64>, String> {
    #[derive(Deserialize)]
    struct Seen {
        #[serde(default)]
        last_seen_unix: u64,
    }
    let path = state_dir.join(STATE_FILE);
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    f.take(MAX_STATE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let seen: Seen = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{} is not valid state JSON ({e}); clock not checked",
            path.display()
        )
    })?;
    Ok(Some(seen.last_seen_unix).filter(|&s| s > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEN: u64 = 1_763_700_000; // 2025-11-21

    #[test]
    fn a_clock_not_earlier_than_last_seen_or_without_reference_is_fine() {
        assert_eq!(
            assess(SEEN, Some(SEEN), None),
            ClockAssessment::Fine(ClockVerdict::Sane)
        );
        assert_eq!(
            assess(SEEN - SLACK_SECS, Some(SEEN), None),
            ClockAssessment::Fine(ClockVerdict::Sane),
            "rounding and small NTP steps are tolerated"
        );
        assert_eq!(
            assess(0, None, None),
            ClockAssessment::Fine(ClockVerdict::NoReference)
        );
    }

    #[test]
    fn a_clock_behind_last_seen_is_behind_unless_synchronised() {
        assert_eq!(
            assess(SEEN - 3600, Some(SEEN), None),
            ClockAssessment::Behind(3600)
        );
        assert_eq!(
            assess(SEEN - 3600, Some(SEEN), Some("timesyncd")),
            ClockAssessment::Fine(ClockVerdict::Synced)
        );
    }

    #[test]
    fn sane_clock_returns_at_once_without_sleeping() {
        let t = FakeTimeSync::new(SEEN + 100);
        let r = check_and_wait(&t, Some(SEEN), DEFAULT_CLOCK_WAIT, DEFAULT_CLOCK_WAIT);
        assert_eq!(r.verdict, ClockVerdict::Sane);
        assert_eq!(t.sleeps(), 0);
        assert_eq!(r.waited_ms, 0);
    }

    #[test]
    fn a_clock_from_1970_waits_until_ntp_steps_it_past_last_seen() {
        // Boots at the epoch plus uptime; NTP steps the clock 7 s later.
        let t = FakeTimeSync::new(40).jump_at(Duration::from_secs(7), SEEN + 600);
        let r = check_and_wait(&t, Some(SEEN), DEFAULT_CLOCK_WAIT, DEFAULT_CLOCK_WAIT);
        assert_eq!(r.verdict, ClockVerdict::CaughtUp);
        assert_eq!(r.behind_secs, SEEN - 40);
        assert_eq!(r.waited_ms, 7_000);
        assert_eq!(r.wall_unix_at_end, SEEN + 600);
        assert!(
            r.message.contains("passed the last-seen time"),
            "{}",
            r.message
        );
        assert!(!r.is_problem());
    }

    #[test]
    fn the_kernel_saying_synced_ends_the_wait_even_if_the_clock_is_still_behind() {
        let t = FakeTimeSync::new(SEEN - 3600).synced_from(Duration::from_millis(1200));
        let r = check_and_wait(&t, Some(SEEN), DEFAULT_CLOCK_WAIT, DEFAULT_CLOCK_WAIT);
        assert_eq!(r.verdict, ClockVerdict::CaughtUp);
        assert_eq!(r.synced_by.as_deref(), Some("kernel"));
        assert_eq!(r.waited_ms, 1250, "first poll at or after 1.2 s");
    }

    #[test]
    fn a_clock_that_never_syncs_gives_up_at_the_limit_and_k3s_starts() {
        let t = FakeTimeSync::new(SEEN - 86_400);
        let r = check_and_wait(&t, Some(SEEN), DEFAULT_CLOCK_WAIT, Duration::from_secs(4));
        assert_eq!(r.verdict, ClockVerdict::GaveUp);
        assert_eq!(
            r.waited_ms, 4_000,
            "the smaller of clock_wait and the budget left"
        );
        assert_eq!(r.limit_ms, 4_000);
        assert!(r.is_problem());
        assert!(
            r.message.contains("letting k3s start anyway"),
            "{}",
            r.message
        );
    }

    #[test]
    fn clock_wait_zero_reports_a_behind_clock_without_waiting() {
        let t = FakeTimeSync::new(SEEN - 86_400);
        let r = check_and_wait(&t, Some(SEEN), Duration::ZERO, DEFAULT_CLOCK_WAIT);
        assert_eq!(r.verdict, ClockVerdict::NotWaited);
        assert_eq!(t.sleeps(), 0);
        assert!(r.is_problem());
    }

    #[test]
    fn last_seen_is_read_leniently_from_the_daemons_state_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_last_seen(d.path()), Ok(None), "no file yet");
        std::fs::write(
            d.path().join(STATE_FILE),
            format!(r#"{{"schema":1,"last_seen_unix":{SEEN},"future_field":[1,2]}}"#),
        )
        .unwrap();
        assert_eq!(read_last_seen(d.path()), Ok(Some(SEEN)));
        std::fs::write(d.path().join(STATE_FILE), r#"{"schema":1}"#).unwrap();
        assert_eq!(read_last_seen(d.path()), Ok(None));
        std::fs::write(d.path().join(STATE_FILE), r#"{"schema":1,"last_se"#).unwrap();
        let e = read_last_seen(d.path()).unwrap_err();
        assert!(e.contains("state.json") && e.contains("not valid"), "{e}");
        assert!(
            d.path().join(STATE_FILE).exists(),
            "the daemon's file is never moved or rewritten"
        );
    }

    #[test]
    fn the_real_time_source_reads_without_changing_anything() {
        let t = SystemTimeSync::new();
        assert!(t.unix_secs() > SEEN);
        // Whatever the machine's NTP state, asking must not fail or set anything.
        let _ = t.synced();
        let a = t.monotonic();
        t.sleep(Duration::from_millis(1));
        assert!(t.monotonic() > a);
    }
}
