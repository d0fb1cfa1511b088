//! The reboot path: the most destructive thing nodemedic does, as an ordered sequence.
//!
//! 1. Persist the audit record and evidence (fsynced) — strictly first. The record is what
//!    the next boot uses to cap reboots and to clean up after the reboot it caused (a healer
//!    must never reboot in a loop); if it cannot be written, nodemedic does not reboot.
//! 2. Ask for a graceful reboot (`systemctl reboot`, a configurable argv, run with a
//!    deadline) and give the shutdown time to finish.
//! 3. If this process is still running when that time is up, the shutdown is stuck (a hung
//!    mount refusing to unmount, a wedged PID 1): stop feeding the hardware watchdog, when
//!    nodemedic owns it, and wait for the board to reset (as medik8s: reboot = stop feeding).
//! 4. No hardware watchdog, or the board did not reset: `sync` (bounded, since sync(2)
//!    behind a hung mount never returns) and `reboot(2)`.
//!
//! Which step comes next is a pure function of what has been done and the time
//! ([`next_step`]); [`reboot_node`] only executes it against a [`RebootSystem`] and a
//! [`Clock`], so tests run the whole sequence instantly with the recording fakes. Inside a
//! child PID namespace the kernel turns reboot(2) into "kill this namespace's init", which
//! is how the integration test runs the real path safely.

use std::fmt::Display;
use std::sync::mpsc;
#[cfg(any(test, feature = "fakes"))]
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(any(test, feature = "fakes"))]
use crate::config::remedy::DEFAULT_GRACEFUL_ARGV;
use crate::config::remedy::DEFAULT_GRACEFUL_DEADLINE;
use crate::edge::Clock;
use crate::edge::command::{run_with_deadline, stdout_with_deadline};
use crate::watchdog::FeederHandle;

/// `systemctl reboot` returns once the job is queued (well under a second); still running
/// after 10 s means PID 1 or D-Bus is wedged.
pub(crate) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// After the last keep-alive the board resets within the timeout; the margin covers a keep-
/// alive written just before the feed stopped and the board's own reset latency.
pub(crate) const DEFAULT_WATCHDOG_MARGIN: Duration = Duration::from_secs(10);
/// An SD card flushes in seconds; a sync still running after 20 s is stuck behind a hung
/// filesystem, and the reboot matters more than the flush.
pub(crate) const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum RebootError {
    #[error(
        "refusing to reboot: the audit record could not be persisted ({0}); without it the \
         reboot cap cannot be enforced after the reboot. Check the state directory (disk full? \
         read-only filesystem?)"
    )]
    Persist(String),
    #[error("graceful reboot command `{argv}` failed: {detail}")]
    Graceful { argv: String, detail: String },
    #[error("reboot(2) failed: {0}; nodemedic needs CAP_SYS_BOOT (run it as root)")]
    Syscall(nix::errno::Errno),
    #[error(
        "the graceful reboot did not finish and `remedy.reboot_syscall_fallback` is off, so \
         nodemedic does not force it; the node needs a human (or set the switch on)"
    )]
    FallbackDisabled,
}

/// The machine edge of the reboot path.
pub trait RebootSystem {
    /// Flushes filesystems; must return even if a filesystem hangs.
    fn sync(&mut self);
    /// Asks the init system for an orderly reboot; returns once the request is accepted.
    fn request_graceful_reboot(&mut self) -> Result<(), RebootError>;
    /// The hardware watchdog timeout when nodemedic owns and feeds one.
    fn watchdog_timeout(&self) -> Option<Duration>;
    /// Stops the keep-alives so the board resets within the watchdog timeout.
    fn stop_watchdog_feeding(&mut self);
    /// `sync` then reboot(2). Does not return on success on a real machine.
    fn reboot_syscall(&mut self) -> Result<(), RebootError>;
}

/// The waits of the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebootPlan {
    /// How long a shutdown may take after the graceful request was accepted.
    pub graceful_deadline: Duration,
    /// Added to the watchdog timeout before falling back to reboot(2).
    pub watchdog_margin: Duration,
}

impl Default for RebootPlan {
    fn default() -> Self {
        RebootPlan {
            graceful_deadline: DEFAULT_GRACEFUL_DEADLINE,
            watchdog_margin: DEFAULT_WATCHDOG_MARGIN,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persisted {
    NotYet,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GracefulRequest {
    pub(crate) at: Duration,
    /// The command succeeded, so a shutdown should be under way.
    pub(crate) accepted: bool,
}

/// What the sequence has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) persisted: Persisted,
    pub(crate) graceful: Option<GracefulRequest>,
    pub(crate) feeding_stopped_at: Option<Duration>,
    pub(crate) synced: bool,
    pub(crate) reboot_called: bool,
}

impl Progress {
    pub(crate) fn start() -> Self {
        Progress {
            persisted: Persisted::NotYet,
            graceful: None,
            feeding_stopped_at: None,
            synced: false,
            reboot_called: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitFor {
    GracefulShutdown,
    WatchdogReset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RebootStep {
    Persist,
    RequestGraceful,
    Wait {
        until: Duration,
        for_what: WaitFor,
    },
    StopFeeding,
    Sync,
    RebootSyscall,
    /// The audit record could not be written: do not reboot.
    Abort,
    /// reboot(2) returned: nothing is left to try.
    Exhausted,
}

/// The next step of the reboot sequence. `watchdog` is the owned hardware watchdog's
/// timeout (`None`: no watchdog nodemedic can stop feeding).
pub(crate) fn next_step(
    p: &Progress,
    now: Duration,
    plan: &RebootPlan,
    watchdog: Option<Duration>,
) -> RebootStep {
    match p.persisted {
        Persisted::NotYet => return RebootStep::Persist,
        Persisted::Failed => return RebootStep::Abort,
        Persisted::Done => {}
    }
    let Some(g) = p.graceful else {
        return RebootStep::RequestGraceful;
    };
    // A refused request (systemctl failed) starts no shutdown: nothing to wait for.
    let graceful_end = g.at.saturating_add(plan.graceful_deadline);
    if g.accepted && now < graceful_end {
        return RebootStep::Wait {
            until: graceful_end,
            for_what: WaitFor::GracefulShutdown,
        };
    }
    if let Some(timeout) = watchdog {
        let Some(at) = p.feeding_stopped_at else {
            return RebootStep::StopFeeding;
        };
        let reset_by = at
            .saturating_add(timeout)
            .saturating_add(plan.watchdog_margin);
        if now < reset_by {
            return RebootStep::Wait {
                until: reset_by,
                for_what: WaitFor::WatchdogReset,
            };
        }
    }
    if !p.synced {
        RebootStep::Sync
    } else if !p.reboot_called {
        RebootStep::RebootSyscall
    } else {
        RebootStep::Exhausted
    }
}

/// What [`reboot_node`] did, with the (clock) time of each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub(crate) steps: Vec<(Duration, RebootStep)>,
    pub(crate) graceful_error: Option<String>,
}

/// Runs the reboot sequence. `persist` writes and fsyncs the audit record and evidence; it
/// runs before anything else, and a failure aborts the reboot.
///
/// On a real machine this does not return when it succeeds. It returns `Ok` only when
/// reboot(2) returned success (a fake), and `Err` when persisting or reboot(2) failed.
pub fn reboot_node<S, C, E>(
    sys: &mut S,
    clock: &C,
    plan: &RebootPlan,
    persist: impl FnOnce() -> Result<(), E>,
) -> Result<Trace, RebootError>
where
    S: RebootSystem + ?Sized,
    C: Clock + ?Sized,
    E: Display,
{
    let watchdog = sys.watchdog_timeout();
    let mut persist = Some(persist);
    let mut persist_error = None;
    let mut p = Progress::start();
    let mut trace = Trace {
        steps: Vec::new(),
        graceful_error: None,
    };
    loop {
        let now = clock.monotonic();
        let step = next_step(&p, now, plan, watchdog);
        trace.steps.push((now, step));
        match step {
            RebootStep::Persist => {
                let f = persist.take().expect("persist runs once");
                match f() {
                    Ok(()) => p.persisted = Persisted::Done,
                    Err(e) => {
                        p.persisted = Persisted::Failed;
                        persist_error = Some(e.to_string());
                    }
                }
            }
            RebootStep::RequestGraceful => {
                log::warn!("rebooting: asking for a graceful reboot");
                let accepted = match sys.request_graceful_reboot() {
                    Ok(()) => true,
                    Err(e) => {
                        log::error!("{e}; falling back at once");
                        trace.graceful_error = Some(e.to_string());
                        false
                    }
                };
                p.graceful = Some(GracefulRequest { at: now, accepted });
            }
            RebootStep::Wait { until, for_what } => {
                if for_what == WaitFor::WatchdogReset {
                    log::warn!(
                        "waiting up to {} s for the hardware watchdog to reset the board",
                        (until - now).as_secs()
                    );
                }
                clock.sleep(until - now);
            }
            RebootStep::StopFeeding => {
                log::error!("shutdown did not finish: stopping the hardware watchdog feed");
                sys.stop_watchdog_feeding();
                p.feeding_stopped_at = Some(now);
            }
            RebootStep::Sync => {
                sys.sync();
                p.synced = true;
            }
            RebootStep::RebootSyscall => {
                log::error!("forcing the reboot with reboot(2)");
                p.reboot_called = true;
                sys.reboot_syscall()?;
            }
            RebootStep::Abort => {
                let err = RebootError::Persist(persist_error.take().unwrap_or_default());
                log::error!("{err}");
                return Err(err);
            }
            RebootStep::Exhausted => return Ok(trace),
        }
    }
}

/// logind's reboot, tried before the graceful command (see `remedy::logind_reboot`).
pub trait LogindPower: Send {
    fn reboot(&mut self) -> Result<(), crate::edge::dbus::DbusError>;
}

/// The real machine: a graceful request (logind, else the command), sync(2), reboot(2) and
/// the watchdog feeder.
pub struct LinuxReboot {
    graceful_argv: Vec<String>,
    command_timeout: Duration,
    sync_timeout: Duration,
    feeder: Option<FeederHandle>,
    synced: bool,
    logind: Option<Box<dyn LogindPower>>,
}

impl LinuxReboot {
    /// `graceful_argv` is normally [`DEFAULT_GRACEFUL_ARGV`]; `feeder` is the running
    /// hardware watchdog feeder when nodemedic owns the watchdog.
    pub fn new(graceful_argv: Vec<String>, feeder: Option<FeederHandle>) -> Self {
        LinuxReboot {
            graceful_argv,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            feeder,
            synced: false,
            logind: None,
        }
    }

    /// Asks logind first; the command only when logind cannot be asked.
    pub fn with_logind(mut self, logind: Box<dyn LogindPower>) -> Self {
        self.logind = Some(logind);
        self
    }
}

impl LinuxReboot {
    /// systemd's own state says a shutdown is under way.
    fn system_stopping(&self) -> bool {
        let argv: Vec<String> = ["systemctl", "show", "-p", "SystemState", "--value"]
            .map(String::from)
            .into();
        stdout_with_deadline(&argv, self.command_timeout).is_ok_and(|s| shutdown_under_way(&s))
    }
}

/// `SystemState` of systemd's manager: `stopping` from the moment a shutdown job runs.
pub(crate) fn shutdown_under_way(system_state: &str) -> bool {
    system_state.trim() == "stopping"
}

impl RebootSystem for LinuxReboot {
    fn sync(&mut self) {
        if !sync_within(self.sync_timeout, nix::unistd::sync) {
            log::error!(
                "sync(2) still running after {} s (a hung filesystem?); rebooting without it",
                self.sync_timeout.as_secs()
            );
        }
        // Once, whether it finished or not: a stuck sync would only get stuck again.
        self.synced = true;
    }

    fn request_graceful_reboot(&mut self) -> Result<(), RebootError> {
        if let Some(f) = &self.feeder {
            // If systemd stops nodemedic during this shutdown and the shutdown then hangs,
            // the timer must still be armed to reset the board. It then resets it at
            // most the watchdog timeout (15 s on a Pi) after nodemedic stopped, maybe
            // before k3s has: flush the filesystems first, so that reset loses as little
            // as possible (issue 17, point 5; README "watchdog owner").
            if !sync_within(self.sync_timeout, nix::unistd::sync) {
                log::error!("sync(2) before the graceful reboot did not finish in time");
            }
            f.keep_armed_on_stop();
        }
        if let Some(l) = &mut self.logind {
            match l.reboot() {
                Ok(()) => {
                    log::warn!(
                        "reboot requested from logind: it waits for delay inhibitors (the kubelet's graceful node shutdown) first"
                    );
                    return Ok(());
                }
                Err(e) => log::warn!(
                    "logind did not take the reboot ({e}); using `{}`",
                    self.graceful_argv.join(" ")
                ),
            }
        }
        match run_with_deadline(&self.graceful_argv, self.command_timeout) {
            Ok(()) => Ok(()),
            // logind may have taken the reboot and lost the bus before replying (dbus stops
            // early in the shutdown), and systemd then kills the command with the rest of
            // nodemedic's cgroup: a failed request while systemd is stopping is a success.
            Err(e) if self.system_stopping() => {
                log::warn!(
                    "`{}` did not answer ({e}), but systemd is already stopping: the reboot is under way",
                    self.graceful_argv.join(" ")
                );
                Ok(())
            }
            Err(e) => Err(RebootError::Graceful {
                argv: self.graceful_argv.join(" "),
                detail: e.to_string(),
            }),
        }
    }

    fn watchdog_timeout(&self) -> Option<Duration> {
        self.feeder.as_ref().map(FeederHandle::timeout)
    }

    fn stop_watchdog_feeding(&mut self) {
        if let Some(f) = &self.feeder {
            f.stop_feeding();
        }
    }

    fn reboot_syscall(&mut self) -> Result<(), RebootError> {
        if !self.synced {
            self.sync();
        }
        // RB_AUTOBOOT is LINUX_REBOOT_CMD_RESTART. Inside a child PID namespace the kernel
        // kills that namespace's init instead (the caller sees SIGHUP).
        match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT) {
            Ok(never) => match never {},
            Err(e) => Err(RebootError::Syscall(e)),
        }
    }
}

/// Runs `f` (sync) on its own thread; true if it finished within `timeout`. A thread that
/// cannot even be started counts as not finished.
pub(crate) fn sync_within(timeout: Duration, f: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("reboot-sync".into())
        .spawn(move || {
            f();
            let _ = tx.send(());
        });
    spawned.is_ok() && rx.recv_timeout(timeout).is_ok()
}

/// A call the reboot sequence made on the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootCall {
    Sync,
    RequestGraceful,
    StopWatchdogFeeding,
    RebootSyscall,
}

#[cfg(any(test, feature = "fakes"))]
/// A recording fake machine.
#[derive(Debug, Default)]
pub struct RecordingReboot {
    calls: Arc<Mutex<Vec<RebootCall>>>,
    /// `Some(detail)`: the graceful request fails with it.
    pub graceful_fails: Option<String>,
    pub watchdog: Option<Duration>,
    /// `Some(errno)`: reboot(2) fails with it.
    pub reboot_fails: Option<nix::errno::Errno>,
}

#[cfg(any(test, feature = "fakes"))]
impl RecordingReboot {
    pub fn calls(&self) -> Vec<RebootCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The live record, for checks made while the sequence runs (e.g. from `persist`).
    pub fn shared_calls(&self) -> Arc<Mutex<Vec<RebootCall>>> {
        self.calls.clone()
    }

    fn record(&self, c: RebootCall) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }
}

#[cfg(any(test, feature = "fakes"))]
impl RebootSystem for RecordingReboot {
    fn sync(&mut self) {
        self.record(RebootCall::Sync);
    }
    fn request_graceful_reboot(&mut self) -> Result<(), RebootError> {
        self.record(RebootCall::RequestGraceful);
        match &self.graceful_fails {
            None => Ok(()),
            Some(d) => Err(RebootError::Graceful {
                argv: DEFAULT_GRACEFUL_ARGV.join(" "),
                detail: d.clone(),
            }),
        }
    }
    fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }
    fn stop_watchdog_feeding(&mut self) {
        self.record(RebootCall::StopWatchdogFeeding);
    }
    fn reboot_syscall(&mut self) -> Result<(), RebootError> {
        self.record(RebootCall::RebootSyscall);
        match self.reboot_fails {
            None => Ok(()),
            Some(e) => Err(RebootError::Syscall(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeClock;
    use crate::watchdog::feeder::{Closed, LeftArmed};
    use crate::watchdog::{FakeWatchdog, FeedPlan, Feeder};
    use RebootCall::*;
    use nix::errno::Errno;
    use std::cell::Cell;
    use std::time::Instant;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn plan() -> RebootPlan {
        RebootPlan {
            graceful_deadline: S(120),
            watchdog_margin: S(10),
        }
    }

    fn run(sys: &mut RecordingReboot) -> (Result<Trace, RebootError>, FakeClock) {
        let clock = FakeClock::default();
        let calls = sys.shared_calls();
        let r = reboot_node(sys, &clock, &plan(), || {
            assert!(
                calls.lock().unwrap().is_empty(),
                "persist must run before any machine call"
            );
            Ok::<(), String>(())
        });
        (r, clock)
    }

    fn timed(trace: &Trace) -> Vec<(u64, RebootStep)> {
        trace.steps.iter().map(|(t, s)| (t.as_secs(), *s)).collect()
    }

    #[test]
    fn without_a_watchdog_an_accepted_graceful_reboot_is_waited_for_then_reboot2() {
        let mut sys = RecordingReboot::default();
        let (r, clock) = run(&mut sys);
        let trace = r.unwrap();
        assert_eq!(sys.calls(), vec![RequestGraceful, Sync, RebootSyscall]);
        assert_eq!(clock.sleeps(), vec![S(120)]);
        assert_eq!(
            timed(&trace),
            vec![
                (0, RebootStep::Persist),
                (0, RebootStep::RequestGraceful),
                (
                    0,
                    RebootStep::Wait {
                        until: S(120),
                        for_what: WaitFor::GracefulShutdown
                    }
                ),
                (120, RebootStep::Sync),
                (120, RebootStep::RebootSyscall),
                (120, RebootStep::Exhausted),
            ]
        );
        assert_eq!(trace.graceful_error, None);
    }

    #[test]
    fn a_refused_graceful_request_skips_the_wait() {
        let mut sys = RecordingReboot {
            graceful_fails: Some("Failed to connect to bus".into()),
            ..Default::default()
        };
        let (r, clock) = run(&mut sys);
        let trace = r.unwrap();
        assert_eq!(sys.calls(), vec![RequestGraceful, Sync, RebootSyscall]);
        assert!(clock.sleeps().is_empty());
        assert!(
            trace
                .graceful_error
                .unwrap()
                .contains("Failed to connect to bus")
        );
    }

    #[test]
    fn with_a_watchdog_a_stuck_shutdown_stops_the_feed_then_waits_timeout_plus_margin() {
        let mut sys = RecordingReboot {
            watchdog: Some(S(15)),
            ..Default::default()
        };
        let (r, clock) = run(&mut sys);
        let trace = r.unwrap();
        assert_eq!(
            sys.calls(),
            vec![RequestGraceful, StopWatchdogFeeding, Sync, RebootSyscall]
        );
        assert_eq!(clock.sleeps(), vec![S(120), S(25)]);
        let t = timed(&trace);
        assert!(t.contains(&(120, RebootStep::StopFeeding)), "{t:?}");
        assert!(t.contains(&(145, RebootStep::Sync)), "{t:?}");
        assert!(t.contains(&(145, RebootStep::RebootSyscall)), "{t:?}");
    }

    #[test]
    fn with_a_watchdog_a_refused_graceful_request_stops_the_feed_at_once() {
        let mut sys = RecordingReboot {
            watchdog: Some(S(15)),
            graceful_fails: Some("exit status: 1".into()),
            ..Default::default()
        };
        let (r, clock) = run(&mut sys);
        r.unwrap();
        assert_eq!(
            sys.calls(),
            vec![RequestGraceful, StopWatchdogFeeding, Sync, RebootSyscall]
        );
        assert_eq!(clock.sleeps(), vec![S(25)]);
    }

    #[test]
    fn a_failed_audit_write_aborts_before_any_machine_call() {
        let mut sys = RecordingReboot {
            watchdog: Some(S(15)),
            ..Default::default()
        };
        let clock = FakeClock::default();
        let err = reboot_node(&mut sys, &clock, &plan(), || {
            Err("No space left on device (os error 28)")
        })
        .unwrap_err();
        assert!(matches!(err, RebootError::Persist(_)));
        let m = err.to_string();
        assert!(
            m.contains("refusing to reboot") && m.contains("os error 28"),
            "{m}"
        );
        assert!(sys.calls().is_empty());
        assert!(clock.sleeps().is_empty());
    }

    #[test]
    fn a_failing_reboot_syscall_is_reported_with_what_to_do() {
        let mut sys = RecordingReboot {
            reboot_fails: Some(Errno::EPERM),
            graceful_fails: Some("x".into()),
            ..Default::default()
        };
        let (r, _) = run(&mut sys);
        let err = r.unwrap_err();
        assert!(matches!(err, RebootError::Syscall(Errno::EPERM)));
        assert!(err.to_string().contains("CAP_SYS_BOOT"));
        assert_eq!(sys.calls().last(), Some(&RebootSyscall));
    }

    #[test]
    fn persist_runs_exactly_once_and_first() {
        let mut sys = RecordingReboot::default();
        let clock = FakeClock::default();
        let n = Cell::new(0);
        reboot_node(&mut sys, &clock, &plan(), || {
            n.set(n.get() + 1);
            Ok::<(), String>(())
        })
        .unwrap();
        assert_eq!(n.get(), 1);
    }

    fn all_progress(times: &[Duration]) -> Vec<Progress> {
        let mut out = Vec::new();
        let opt_times = || std::iter::once(None).chain(times.iter().copied().map(Some));
        for persisted in [Persisted::NotYet, Persisted::Done, Persisted::Failed] {
            for g_at in opt_times() {
                for accepted in [false, true] {
                    for feeding_stopped_at in opt_times() {
                        for synced in [false, true] {
                            for reboot_called in [false, true] {
                                out.push(Progress {
                                    persisted,
                                    graceful: g_at.map(|at| GracefulRequest { at, accepted }),
                                    feeding_stopped_at,
                                    synced,
                                    reboot_called,
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Every state at every interesting time (before, at and after each deadline).
    #[test]
    fn next_step_keeps_every_safety_rule_in_every_state() {
        let plan = plan();
        let times: Vec<Duration> = [0, 1, 24, 25, 26, 119, 120, 121, 144, 145, 146, 300]
            .into_iter()
            .map(S)
            .collect();
        let mut checked = 0;
        for p in all_progress(&[S(0), S(120)]) {
            for wd in [None, Some(S(15))] {
                for &now in &times {
                    let step = next_step(&p, now, &plan, wd);
                    checked += 1;
                    let ctx = format!("{p:?} now={now:?} wd={wd:?} -> {step:?}");
                    // Nothing touches the machine before the record is on disk.
                    if p.persisted != Persisted::Done {
                        let want = if p.persisted == Persisted::NotYet {
                            RebootStep::Persist
                        } else {
                            RebootStep::Abort
                        };
                        assert_eq!(step, want, "{ctx}");
                        continue;
                    }
                    let graceful_over = p
                        .graceful
                        .is_some_and(|g| !g.accepted || now >= g.at + plan.graceful_deadline);
                    match step {
                        RebootStep::Persist | RebootStep::Abort => panic!("{ctx}"),
                        RebootStep::RequestGraceful => assert!(p.graceful.is_none(), "{ctx}"),
                        RebootStep::Wait { until, .. } => assert!(until > now, "{ctx}"),
                        RebootStep::StopFeeding => {
                            assert!(wd.is_some(), "{ctx}");
                            assert!(p.feeding_stopped_at.is_none(), "{ctx}");
                            assert!(graceful_over, "{ctx}");
                        }
                        RebootStep::Sync | RebootStep::RebootSyscall | RebootStep::Exhausted => {
                            // The fallback never cuts a wait short.
                            assert!(graceful_over, "{ctx}");
                            if let Some(t) = wd {
                                let stop = p.feeding_stopped_at.expect(&ctx);
                                assert!(now >= stop + t + plan.watchdog_margin, "{ctx}");
                            }
                            match step {
                                RebootStep::Sync => assert!(!p.synced, "{ctx}"),
                                RebootStep::RebootSyscall => {
                                    assert!(p.synced && !p.reboot_called, "{ctx}")
                                }
                                _ => assert!(p.synced && p.reboot_called, "{ctx}"),
                            }
                        }
                    }
                }
            }
        }
        // 216 progress states x 2 watchdog set-ups x 12 instants.
        assert_eq!(checked, 216 * 2 * 12);
    }

    #[test]
    fn next_step_waits_exactly_until_each_deadline() {
        let plan = plan();
        let mut p = Progress::start();
        p.persisted = Persisted::Done;
        p.graceful = Some(GracefulRequest {
            at: S(5),
            accepted: true,
        });
        let wait = |until, for_what| RebootStep::Wait { until, for_what };
        assert_eq!(
            next_step(&p, S(5), &plan, Some(S(15))),
            wait(S(125), WaitFor::GracefulShutdown)
        );
        assert_eq!(
            next_step(&p, S(124), &plan, Some(S(15))),
            wait(S(125), WaitFor::GracefulShutdown)
        );
        assert_eq!(
            next_step(&p, S(125), &plan, Some(S(15))),
            RebootStep::StopFeeding
        );
        assert_eq!(next_step(&p, S(125), &plan, None), RebootStep::Sync);
        p.feeding_stopped_at = Some(S(125));
        assert_eq!(
            next_step(&p, S(125), &plan, Some(S(15))),
            wait(S(150), WaitFor::WatchdogReset)
        );
        assert_eq!(
            next_step(&p, S(149), &plan, Some(S(15))),
            wait(S(150), WaitFor::WatchdogReset)
        );
        assert_eq!(next_step(&p, S(150), &plan, Some(S(15))), RebootStep::Sync);
    }

    /// Every configuration runs to reboot(2) in the canonical order, with time never
    /// going back and no step repeated.
    #[test]
    fn every_configuration_ends_in_reboot2_in_order() {
        for wd in [None, Some(S(3)), Some(S(15))] {
            for graceful_fails in [None, Some("refused".to_string())] {
                let mut sys = RecordingReboot {
                    watchdog: wd,
                    graceful_fails: graceful_fails.clone(),
                    ..Default::default()
                };
                let (r, clock) = run(&mut sys);
                let trace = r.unwrap();
                let mut want = vec![RequestGraceful];
                if wd.is_some() {
                    want.push(StopWatchdogFeeding);
                }
                want.extend([Sync, RebootSyscall]);
                assert_eq!(sys.calls(), want, "wd={wd:?} fails={graceful_fails:?}");
                let total: Duration = clock.sleeps().iter().sum();
                let expect = if graceful_fails.is_none() {
                    S(120)
                } else {
                    S(0)
                } + wd.map_or(S(0), |t| t + S(10));
                assert_eq!(total, expect, "wd={wd:?} fails={graceful_fails:?}");
                assert!(trace.steps.windows(2).all(|w| w[0].0 <= w[1].0));
            }
        }
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sync_within_gives_up_on_a_sync_that_never_returns() {
        let (tx, rx) = mpsc::channel::<()>();
        let t0 = Instant::now();
        // Blocks until the test ends and drops `tx`.
        let stuck = sync_within(Duration::from_millis(50), move || {
            let _ = rx.recv();
        });
        assert!(!stuck);
        assert!(t0.elapsed() < S(5));
        drop(tx);
        assert!(sync_within(S(10), || {}));
    }

    #[test]
    fn the_real_system_keeps_the_watchdog_armed_once_a_graceful_reboot_is_requested() {
        let dev = FakeWatchdog::new();
        let feeder = Feeder::start(dev, FeedPlan::for_timeout(S(15), false), || true).unwrap();
        let mut sys = LinuxReboot::new(argv(&["true"]), Some(feeder.handle()));
        assert_eq!(sys.watchdog_timeout(), Some(S(15)));
        sys.request_graceful_reboot().unwrap();
        assert_eq!(
            feeder.stop().unwrap(),
            Closed::LeftArmed(LeftArmed::RebootPending)
        );
    }

    #[test]
    fn the_real_system_stops_the_feeder_it_was_given() {
        let feeder = Feeder::start(
            FakeWatchdog::new(),
            FeedPlan::for_timeout(S(15), false),
            || true,
        )
        .unwrap();
        let mut sys = LinuxReboot::new(argv(&["false"]), Some(feeder.handle()));
        let err = sys.request_graceful_reboot().unwrap_err();
        assert!(
            err.to_string().contains("`false` failed: exit status: 1"),
            "{err}"
        );
        sys.stop_watchdog_feeding();
        assert!(feeder.handle().is_feeding_stopped());
        assert_eq!(
            feeder.stop().unwrap(),
            Closed::LeftArmed(LeftArmed::FeedingStopped)
        );
    }

    #[test]
    fn the_real_system_without_a_feeder_has_no_watchdog() {
        let mut sys = LinuxReboot::new(argv(&DEFAULT_GRACEFUL_ARGV), None);
        assert_eq!(sys.watchdog_timeout(), None);
        sys.stop_watchdog_feeding(); // a no-op, not a panic
        sys.sync();
        assert!(sys.synced);
    }

    #[test]
    fn only_a_stopping_systemd_counts_as_a_shutdown_under_way() {
        assert!(shutdown_under_way("stopping\n"));
        for other in ["running", "degraded", "starting", "maintenance", ""] {
            assert!(!shutdown_under_way(other), "{other}");
        }
    }
}
