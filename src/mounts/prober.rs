//! A mount prober that cannot hang the daemon.
//!
//! A `statfs` on a hard NFS mount whose server is gone never returns, and the thread that
//! made it cannot be cancelled: it sits in the kernel (state `D`) until the server answers
//! or the mount is torn down. The daemon therefore never probes on a thread it needs:
//!
//! - every probe runs on a small pool of plain std threads (no async runtime: a blocked
//!   syscall would take a runtime worker with it);
//! - the caller waits at most its deadline, then reports the probe `Stuck` and walks away;
//! - a thread stuck in the kernel is *parked*: left inside the syscall, counted, and never
//!   given a second probe of the same mount (node_exporter learned this the hard way:
//!   stacking probes on a dead mount exhausts threads). When the syscall finally returns
//!   the thread rejoins the pool and the mount's result is updated, so a mount that comes
//!   back clears on its own;
//! - the pool has a hard thread cap. When every thread is taken, further mounts are
//!   reported `NotProbed` with a reason instead of blocking or spawning more: their state
//!   is *unknown*, never "down" and never "fine";
//! - threads the watched mounts no longer need (after a storage outage that parked dozens
//!   of them) exit once the surplus has lasted `idle_exit` (issue 18: 39 threads were
//!   still there 60 s after the mounts were released, against 8 at start).
//!
//! `statfs` is the default probe because NFS always asks the server for it (FSSTAT), while
//! `stat` can be answered from the attribute cache and miss a dead server.
//!
//! Time: the prober reads the monotonic clock itself (deadlines and durations); it is an
//! edge component, the verdicts built on its results stay pure.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::mounts::DEFAULT_MAX_PROBE_THREADS;

/// A probe needs a few hundred bytes of stack; 128 KiB keeps 32 parked threads cheap on an
/// 8 GB Pi while leaving ample room (the std default is 2 MiB).
const PROBE_THREAD_STACK_BYTES: usize = 128 * 1024;

/// Used when `deadline` is too large to add to `Instant::now()`.
const FAR_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// Which syscall probes a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub enum ProbeKind {
    /// `statfs(2)` on the mount point: always reaches the NFS server.
    #[default]
    Statfs,
    /// `stat(2)` of the mount point: cheaper, but may be served from cache.
    Stat,
}

/// The probing syscall. Implementations must be callable from many threads at once.
pub trait ProbeSyscall: Send + Sync {
    fn probe(&self, path: &Path, kind: ProbeKind) -> io::Result<()>;
}

/// The real syscalls.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealProbeSyscall;

impl ProbeSyscall for RealProbeSyscall {
    fn probe(&self, path: &Path, kind: ProbeKind) -> io::Result<()> {
        let result = match kind {
            ProbeKind::Statfs => nix::sys::statfs::statfs(path).map(drop),
            ProbeKind::Stat => nix::sys::stat::stat(path).map(drop),
        };
        result.map_err(|errno| io::Error::from_raw_os_error(errno as i32))
    }
}

/// How long threads beyond what a round needs may stay: long enough that a node whose
/// mount count wobbles does not spawn and end threads every pass (10 s by default),
/// short enough that a released outage's threads are gone within a minute.
pub(crate) const DEFAULT_IDLE_EXIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProberConfig {
    pub max_threads: usize,
    pub kind: ProbeKind,
    /// Surplus idle threads exit after the surplus has lasted this long.
    pub idle_exit: Duration,
}

impl Default for ProberConfig {
    fn default() -> Self {
        ProberConfig {
            max_threads: DEFAULT_MAX_PROBE_THREADS as usize,
            kind: ProbeKind::Statfs,
            idle_exit: DEFAULT_IDLE_EXIT,
        }
    }
}

/// Why a mount got no probe this round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NotProbedReason {
    /// Every thread up to the cap is busy, most likely parked on other hung mounts.
    ThreadCapReached { cap: usize },
    /// The OS refused a new thread.
    SpawnFailed { error: String },
}

/// The state of a mount as the prober sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ProbeState {
    /// The probe returned success.
    Ok,
    /// The probe returned an error (`ENOTCONN` from a dead FUSE daemon, `ESTALE`, ...).
    Failed { errno: Option<i32>, error: String },
    /// A probe is outstanding past its deadline; its thread is parked in the syscall.
    Stuck,
    /// Unknown: no probe could be started.
    NotProbed(NotProbedReason),
}

/// The outcome for one mount of one [`Prober::probe_all`] call. `Stuck` means the probe was
/// still outstanding when the call's deadline passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub path: PathBuf,
    pub state: ProbeState,
    /// How long the syscall took; for `Stuck`, how long it has been outstanding;
    /// zero for `NotProbed`.
    pub duration: Duration,
}

/// Per-mount numbers for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountProbeStatus {
    pub path: PathBuf,
    /// `Stuck` while a parked probe is outstanding, else the last finished probe's result;
    /// `None` while the first probe is still within its deadline.
    pub state: Option<ProbeState>,
    /// Duration of the last probe that returned.
    pub(crate) last_duration: Option<Duration>,
    /// How long the outstanding probe has been running.
    pub(crate) in_flight_for: Option<Duration>,
}

/// Pool numbers for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProberStats {
    pub(crate) thread_cap: usize,
    pub threads_total: usize,
    /// Threads with a probe queued or running.
    pub threads_busy: usize,
    /// Threads parked in a probe that missed its deadline.
    pub threads_stuck: usize,
    /// Parked probes that returned later (the mount came back or broke for good).
    pub returned_after_stuck: u64,
    /// Mounts reported `NotProbed`, summed over all rounds.
    pub(crate) not_probed_total: u64,
    /// Per mount, sorted by path.
    pub mounts: Vec<MountProbeStatus>,
}

/// Runs probes on a bounded pool; see the module docs. Dropping it lets idle threads exit;
/// parked threads exit when their syscall returns.
pub struct Prober {
    shared: Arc<Pool>,
}

/// A cloneable read-only view for a metrics endpoint on another thread.
#[derive(Clone)]
pub struct ProberMonitor {
    shared: Arc<Pool>,
}

struct Pool {
    syscall: Arc<dyn ProbeSyscall>,
    kind: ProbeKind,
    cap: usize,
    idle_exit: Duration,
    state: Mutex<PoolState>,
    /// Signalled when a job is queued or on shutdown.
    work: Condvar,
    /// Signalled when a job finishes or a thread exits.
    done: Condvar,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    threads_total: usize,
    /// Queued plus running jobs; never above `threads_total`.
    jobs_in_flight: usize,
    mounts: HashMap<PathBuf, Slot>,
    next_job: u64,
    next_thread: u64,
    shutdown: bool,
    returned_after_stuck: u64,
    not_probed_total: u64,
    /// Since when the pool has had more threads than the last round needed.
    surplus_since: Option<Instant>,
    /// Idle threads told to exit and not gone yet.
    retire: usize,
}

struct Job {
    id: u64,
    path: PathBuf,
}

#[derive(Default)]
struct Slot {
    in_flight: Option<InFlight>,
    last: Option<Finished>,
}

struct InFlight {
    job: u64,
    started: Instant,
    stuck: bool,
}

struct Finished {
    state: ProbeState,
    duration: Duration,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves counters that are still consistent (every
        // update is a single statement), so keep going rather than poison the daemon.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on `done` until `cond` holds or `timeout` passes; returns whether it holds.
    fn wait_until(&self, timeout: Duration, cond: impl Fn(&PoolState) -> bool) -> bool {
        let until = Instant::now().checked_add(timeout);
        let mut st = self.lock();
        loop {
            if cond(&st) {
                return true;
            }
            let now = Instant::now();
            let left = match until {
                Some(u) if u > now => u - now,
                Some(_) => return false,
                None => FAR_DEADLINE,
            };
            st = self
                .done
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn stats(&self) -> ProberStats {
        let st = self.lock();
        let now = Instant::now();
        let mut mounts: Vec<MountProbeStatus> = st
            .mounts
            .iter()
            .map(|(path, slot)| MountProbeStatus {
                path: path.clone(),
                state: match (&slot.in_flight, &slot.last) {
                    (Some(f), _) if f.stuck => Some(ProbeState::Stuck),
                    (_, last) => last.as_ref().map(|l| l.state.clone()),
                },
                last_duration: slot.last.as_ref().map(|l| l.duration),
                in_flight_for: slot.in_flight.as_ref().map(|f| now - f.started),
            })
            .collect();
        mounts.sort_by(|a, b| a.path.cmp(&b.path));
        ProberStats {
            thread_cap: self.cap,
            threads_total: st.threads_total,
            threads_busy: st.jobs_in_flight,
            threads_stuck: st
                .mounts
                .values()
                .filter(|s| s.in_flight.as_ref().is_some_and(|f| f.stuck))
                .count(),
            returned_after_stuck: st.returned_after_stuck,
            not_probed_total: st.not_probed_total,
            mounts,
        }
    }
}

/// What `probe_all` decided for one unique path.
enum ProbePlan {
    Submitted(u64),
    AlreadyInFlight,
    NotProbed(NotProbedReason),
}

impl Prober {
    pub fn new(config: ProberConfig, syscall: Arc<dyn ProbeSyscall>) -> Prober {
        Prober {
            shared: Arc::new(Pool {
                syscall,
                kind: config.kind,
                cap: config.max_threads,
                idle_exit: config.idle_exit,
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
                done: Condvar::new(),
            }),
        }
    }

    /// Probes every path in `mounts` and returns one result per entry, in order, after at
    /// most `deadline` (plus scheduling latency). Paths given twice are probed once. A path
    /// whose previous probe has not returned is reported `Stuck` without a new probe. Paths
    /// that find every thread busy wait in line for a thread freed by a probe that returns
    /// within the deadline, and are reported `NotProbed` if none is. Mounts that are no
    /// longer listed are forgotten once no probe of theirs is parked.
    pub fn probe_all(&mut self, mounts: &[PathBuf], deadline: Duration) -> Vec<ProbeResult> {
        let start = Instant::now();
        let until = start
            .checked_add(deadline)
            .unwrap_or_else(|| start + FAR_DEADLINE);
        let sh = Arc::clone(&self.shared);
        let mut st = sh.lock();

        let wanted: HashSet<&PathBuf> = mounts.iter().collect();
        st.mounts
            .retain(|p, s| s.in_flight.is_some() || wanted.contains(p));

        let mut plans: HashMap<&PathBuf, ProbePlan> = HashMap::new();
        let mut waiting: VecDeque<&PathBuf> = VecDeque::new();
        let mut seen: HashSet<&PathBuf> = HashSet::new();
        for path in mounts {
            if !seen.insert(path) {
                continue;
            }
            match self.plan_one(&mut st, path) {
                Some(plan) => {
                    plans.insert(path, plan);
                }
                None => waiting.push_back(path),
            }
        }

        // Wait for our own jobs only, handing threads they free to paths waiting in line,
        // and never past the deadline.
        loop {
            while let Some(path) = waiting.pop_front() {
                match self.plan_one(&mut st, path) {
                    Some(plan) => {
                        plans.insert(path, plan);
                    }
                    None => {
                        waiting.push_front(path);
                        break;
                    }
                }
            }
            let pending = plans.iter().any(|(path, plan)| match plan {
                ProbePlan::Submitted(job) => in_flight_job(&st, path) == Some(*job),
                _ => false,
            });
            let now = Instant::now();
            if !pending || now >= until {
                break;
            }
            st = sh
                .done
                .wait_timeout(st, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        for path in waiting {
            st.not_probed_total += 1;
            plans.insert(
                path,
                ProbePlan::NotProbed(NotProbedReason::ThreadCapReached { cap: sh.cap }),
            );
        }

        let now = Instant::now();
        // A round needs at most one thread per unique path (they are all submitted at
        // once); more than that, beyond what is still in flight, is surplus.
        let needed = seen.len().min(sh.cap).max(st.jobs_in_flight);
        let idle_surplus = st
            .threads_total
            .saturating_sub(st.retire)
            .saturating_sub(needed);
        if idle_surplus == 0 {
            st.surplus_since = None;
        } else if now.saturating_duration_since(*st.surplus_since.get_or_insert(now))
            >= sh.idle_exit
        {
            st.retire += idle_surplus;
            st.surplus_since = None;
            sh.work.notify_all();
        }
        let mut results = Vec::with_capacity(mounts.len());
        for path in mounts {
            let (state, duration) = match &plans[path] {
                ProbePlan::NotProbed(reason) => {
                    (ProbeState::NotProbed(reason.clone()), Duration::ZERO)
                }
                ProbePlan::Submitted(_) | ProbePlan::AlreadyInFlight => {
                    match st.mounts.get_mut(path).map(|s| (&mut s.in_flight, &s.last)) {
                        Some((Some(f), _)) => {
                            f.stuck = true;
                            (ProbeState::Stuck, now - f.started)
                        }
                        Some((None, Some(last))) => (last.state.clone(), last.duration),
                        // Cannot happen: a submitted probe is in flight or has a result.
                        _ => (
                            ProbeState::Failed {
                                errno: None,
                                error: "internal error: probe result lost".to_owned(),
                            },
                            Duration::ZERO,
                        ),
                    }
                }
            };
            results.push(ProbeResult {
                path: path.clone(),
                state,
                duration,
            });
        }
        results
    }

    /// Starts a probe of `path` unless one is in flight; `None` when every thread is taken.
    fn plan_one(&self, st: &mut PoolState, path: &Path) -> Option<ProbePlan> {
        let sh = &self.shared;
        if st.mounts.get(path).is_some_and(|s| s.in_flight.is_some()) {
            return Some(ProbePlan::AlreadyInFlight);
        }
        if st.jobs_in_flight >= sh.cap {
            return None;
        }
        if st.jobs_in_flight >= st.threads_total {
            let n = st.next_thread;
            let shared = Arc::clone(sh);
            let spawned = thread::Builder::new()
                .name(format!("mount-probe-{n}"))
                .stack_size(PROBE_THREAD_STACK_BYTES)
                .spawn(move || worker(shared));
            match spawned {
                Ok(_detached) => {
                    st.next_thread += 1;
                    st.threads_total += 1;
                }
                Err(e) => {
                    st.not_probed_total += 1;
                    return Some(ProbePlan::NotProbed(NotProbedReason::SpawnFailed {
                        error: e.to_string(),
                    }));
                }
            }
        }
        let job = st.next_job;
        st.next_job += 1;
        st.jobs_in_flight += 1;
        st.mounts.entry(path.to_path_buf()).or_default().in_flight = Some(InFlight {
            job,
            started: Instant::now(),
            stuck: false,
        });
        st.queue.push_back(Job {
            id: job,
            path: path.to_path_buf(),
        });
        sh.work.notify_one();
        Some(ProbePlan::Submitted(job))
    }

    pub fn stats(&self) -> ProberStats {
        self.shared.stats()
    }

    pub(crate) fn monitor(&self) -> ProberMonitor {
        ProberMonitor {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Waits up to `timeout` for every outstanding probe (parked ones included) to return.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |st| st.jobs_in_flight == 0)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
    }
}

impl ProberMonitor {
    pub fn stats(&self) -> ProberStats {
        self.shared.stats()
    }

    /// Waits up to `timeout` for every outstanding probe to return.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |st| st.jobs_in_flight == 0)
    }

    #[cfg(test)]
    /// Waits up to `timeout` until at most `n` pool threads exist (after the prober is
    /// dropped, idle threads exit at once and parked ones when their syscall returns).
    pub(crate) fn wait_threads_at_most(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |st| st.threads_total <= n)
    }
}

fn in_flight_job(st: &PoolState, path: &Path) -> Option<u64> {
    st.mounts.get(path)?.in_flight.as_ref().map(|f| f.job)
}

fn worker(sh: Arc<Pool>) {
    let mut st = sh.lock();
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| sh.syscall.probe(&job.path, sh.kind)));
            let duration = started.elapsed();
            let state = match outcome {
                Ok(Ok(())) => ProbeState::Ok,
                Ok(Err(e)) => ProbeState::Failed {
                    errno: e.raw_os_error(),
                    error: e.to_string(),
                },
                Err(_) => ProbeState::Failed {
                    errno: None,
                    error: "probe panicked".to_owned(),
                },
            };
            st = sh.lock();
            st.jobs_in_flight -= 1;
            let mut was_stuck = false;
            if let Some(slot) = st.mounts.get_mut(&job.path) {
                if slot.in_flight.as_ref().is_some_and(|f| f.job == job.id) {
                    was_stuck = slot.in_flight.take().is_some_and(|f| f.stuck);
                }
                slot.last = Some(Finished { state, duration });
            }
            if was_stuck {
                st.returned_after_stuck += 1;
            }
            sh.done.notify_all();
            continue;
        }
        if st.retire > 0 {
            st.retire -= 1;
            st.threads_total -= 1;
            sh.done.notify_all();
            return;
        }
        if st.shutdown {
            st.threads_total -= 1;
            sh.done.notify_all();
            return;
        }
        st = sh.work.wait(st).unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(any(test, feature = "fakes"))]
/// A [`ProbeSyscall`] for tests: records every call, and blocks probes of "hung" paths on a
/// gate until they are released, the way a dead NFS server blocks `statfs`.
#[derive(Default)]
pub struct FakeProbeSyscall {
    state: Mutex<FakeState>,
    changed: Condvar,
}

#[cfg(any(test, feature = "fakes"))]
#[derive(Default)]
struct FakeState {
    hung: HashSet<PathBuf>,
    failing: HashMap<PathBuf, i32>,
    panicking: HashSet<PathBuf>,
    calls: Vec<(PathBuf, ProbeKind)>,
    blocked: HashMap<PathBuf, usize>,
}

#[cfg(any(test, feature = "fakes"))]
impl FakeProbeSyscall {
    pub fn new() -> FakeProbeSyscall {
        FakeProbeSyscall::default()
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Probes of `path` block from now on until [`FakeProbeSyscall::release`].
    pub fn hang(&self, path: impl Into<PathBuf>) {
        self.lock().hung.insert(path.into());
    }

    /// Lets blocked and future probes of `path` return.
    pub fn release(&self, path: &Path) {
        self.lock().hung.remove(path);
        self.changed.notify_all();
    }

    /// Probes of `path` fail with `errno` (after any hang is released).
    pub fn fail(&self, path: impl Into<PathBuf>, errno: i32) {
        self.lock().failing.insert(path.into(), errno);
    }

    /// Probes of `path` panic, as a buggy syscall wrapper would.
    pub fn panic_on(&self, path: impl Into<PathBuf>) {
        self.lock().panicking.insert(path.into());
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<(PathBuf, ProbeKind)> {
        self.lock().calls.clone()
    }

    pub fn calls_for(&self, path: &Path) -> usize {
        self.lock().calls.iter().filter(|(p, _)| p == path).count()
    }

    /// Probes currently blocked on the gate of `path`.
    pub fn blocked_on(&self, path: &Path) -> usize {
        self.lock().blocked.get(path).copied().unwrap_or(0)
    }

    /// Waits up to `timeout` until `n` probes in total are blocked on gates.
    pub fn wait_blocked_total(&self, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut st = self.lock();
        while st.blocked.values().sum::<usize>() < n {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

#[cfg(any(test, feature = "fakes"))]
impl ProbeSyscall for FakeProbeSyscall {
    fn probe(&self, path: &Path, kind: ProbeKind) -> io::Result<()> {
        let mut st = self.lock();
        st.calls.push((path.to_path_buf(), kind));
        if st.hung.contains(path) {
            *st.blocked.entry(path.to_path_buf()).or_default() += 1;
            self.changed.notify_all();
            while st.hung.contains(path) {
                st = self
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            *st.blocked.get_mut(path).expect("counted above") -= 1;
            self.changed.notify_all();
        }
        if st.panicking.contains(path) {
            drop(st);
            panic!("fake probe of {} panics", path.display());
        }
        match st.failing.get(path) {
            Some(errno) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deadline of rounds that mix hung and healthy mounts: long enough that a healthy fake
    /// probe finishes within it even on a 2-core machine under full load.
    const DEADLINE: Duration = Duration::from_secs(1);
    /// Deadline of rounds in which every probe returns at once: the call returns as soon as
    /// they do, so this bound only matters on a stalled machine.
    const QUICK: Duration = Duration::from_secs(10);
    /// Deadline of rounds whose probes are all hung: they always take all of it.
    const SHORT: Duration = Duration::from_millis(50);
    /// Scheduling latency allowed on top of a deadline before the caller counts as blocked.
    const SCHED_SLACK: Duration = Duration::from_millis(500);
    /// Bound on waits for threads to finish after a gate opens; never reached when correct.
    const SETTLE: Duration = Duration::from_secs(10);

    fn paths(names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(PathBuf::from).collect()
    }

    fn prober(cap: usize, kind: ProbeKind) -> (Prober, Arc<FakeProbeSyscall>) {
        let fake = Arc::new(FakeProbeSyscall::new());
        let p = Prober::new(
            ProberConfig {
                max_threads: cap,
                kind,
                ..ProberConfig::default()
            },
            fake.clone(),
        );
        (p, fake)
    }

    fn timed(p: &mut Prober, mounts: &[PathBuf], deadline: Duration) -> Vec<ProbeResult> {
        let t0 = Instant::now();
        let r = p.probe_all(mounts, deadline);
        let took = t0.elapsed();
        assert!(
            took < deadline + SCHED_SLACK,
            "probe_all blocked {took:?} with deadline {deadline:?}"
        );
        r
    }

    fn states(results: &[ProbeResult]) -> Vec<ProbeState> {
        results.iter().map(|r| r.state.clone()).collect()
    }

    #[test]
    fn healthy_mounts_are_ok_with_a_duration_and_are_probed_once_each_with_the_configured_kind() {
        let (mut p, fake) = prober(4, ProbeKind::Stat);
        let m = paths(&["/mnt/a", "/mnt/b", "/mnt/a"]);
        let r = timed(&mut p, &m, QUICK);
        assert_eq!(states(&r), vec![ProbeState::Ok; 3]);
        assert_eq!(r.iter().map(|r| r.path.clone()).collect::<Vec<_>>(), m);
        assert!(r.iter().all(|r| r.duration < QUICK));
        let mut calls = fake.calls();
        calls.sort();
        assert_eq!(
            calls,
            vec![
                (PathBuf::from("/mnt/a"), ProbeKind::Stat),
                (PathBuf::from("/mnt/b"), ProbeKind::Stat)
            ]
        );
        let s = p.stats();
        assert_eq!((s.threads_busy, s.threads_stuck), (0, 0));
        assert!(s.threads_total <= 2);
        assert_eq!(s.mounts.len(), 2);
        assert!(
            s.mounts
                .iter()
                .all(|m| m.state == Some(ProbeState::Ok) && m.last_duration.is_some())
        );
    }

    #[test]
    fn a_failing_probe_reports_its_errno() {
        let (mut p, fake) = prober(4, ProbeKind::Statfs);
        fake.fail("/mnt/gone", libc::ENOTCONN);
        let r = timed(&mut p, &paths(&["/mnt/gone"]), QUICK);
        match &r[0].state {
            ProbeState::Failed { errno, error } => {
                assert_eq!(*errno, Some(libc::ENOTCONN));
                assert!(error.contains("not connected"), "{error}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn a_probe_past_its_deadline_marks_the_mount_stuck_while_the_caller_returns_on_time() {
        let (mut p, fake) = prober(4, ProbeKind::Statfs);
        fake.hang("/mnt/nfs");
        let m = paths(&["/mnt/ok", "/mnt/nfs"]);
        let t0 = Instant::now();
        let r = timed(&mut p, &m, DEADLINE);
        assert_eq!(states(&r), vec![ProbeState::Ok, ProbeState::Stuck]);
        // Outstanding since it was submitted, which is a little after the call began.
        assert!(r[1].duration > DEADLINE / 2 && r[1].duration <= t0.elapsed());
        assert_eq!(fake.blocked_on(Path::new("/mnt/nfs")), 1);
        let s = p.stats();
        assert_eq!((s.threads_stuck, s.threads_busy), (1, 1));
        let nfs = s
            .mounts
            .iter()
            .find(|m| m.path == Path::new("/mnt/nfs"))
            .unwrap();
        assert_eq!(nfs.state, Some(ProbeState::Stuck));
        assert!(nfs.in_flight_for.unwrap() > DEADLINE / 2);
        assert_eq!(nfs.last_duration, None);
        fake.release(Path::new("/mnt/nfs"));
        assert!(p.wait_idle(SETTLE));
    }

    #[test]
    fn no_second_probe_starts_on_a_mount_whose_probe_has_not_returned() {
        let (mut p, fake) = prober(4, ProbeKind::Statfs);
        fake.hang("/mnt/nfs");
        let m = paths(&["/mnt/nfs", "/mnt/ok"]);
        for _ in 0..3 {
            let r = timed(&mut p, &m, SHORT);
            assert_eq!(r[0].state, ProbeState::Stuck);
        }
        // The later rounds do not wait for the parked probe at all.
        let r = timed(&mut p, &m[..1], Duration::ZERO);
        assert_eq!(r[0].state, ProbeState::Stuck);
        assert_eq!(fake.calls_for(Path::new("/mnt/nfs")), 1);
        assert_eq!(fake.calls_for(Path::new("/mnt/ok")), 3);
        let s = p.stats();
        assert_eq!(s.threads_stuck, 1);
        assert!(s.threads_total <= 2, "threads: {}", s.threads_total);
        fake.release(Path::new("/mnt/nfs"));
        assert!(p.wait_idle(SETTLE));
    }

    #[test]
    fn a_parked_thread_returns_to_the_pool_and_its_mount_clears_on_its_own() {
        let (mut p, fake) = prober(4, ProbeKind::Statfs);
        let nfs = PathBuf::from("/mnt/nfs");
        fake.hang(&nfs);
        let m = vec![nfs.clone()];
        assert_eq!(timed(&mut p, &m, SHORT)[0].state, ProbeState::Stuck);
        assert_eq!(p.stats().threads_total, 1);

        fake.release(&nfs);
        assert!(p.wait_idle(SETTLE));
        let s = p.stats();
        assert_eq!(
            (s.threads_total, s.threads_busy, s.threads_stuck),
            (1, 0, 0)
        );
        assert_eq!(s.returned_after_stuck, 1);
        assert_eq!(s.mounts[0].state, Some(ProbeState::Ok));
        assert!(s.mounts[0].last_duration.is_some());

        let r = timed(&mut p, &m, QUICK);
        assert_eq!(r[0].state, ProbeState::Ok);
        assert_eq!(fake.calls_for(&nfs), 2);
        assert_eq!(p.stats().threads_total, 1, "the returned thread is reused");
    }

    #[test]
    fn a_parked_probe_that_returns_an_error_reports_that_error_not_ok() {
        let (mut p, fake) = prober(2, ProbeKind::Statfs);
        let fuse = PathBuf::from("/mnt/fuse");
        fake.hang(&fuse);
        fake.fail(&fuse, libc::ENOTCONN);
        timed(&mut p, std::slice::from_ref(&fuse), SHORT);
        fake.release(&fuse);
        assert!(p.wait_idle(SETTLE));
        assert!(matches!(
            p.stats().mounts[0].state,
            Some(ProbeState::Failed {
                errno: Some(libc::ENOTCONN),
                ..
            })
        ));
    }

    #[test]
    fn a_hundred_dead_mounts_take_at_most_the_cap_and_the_rest_are_not_probed() {
        let (mut p, fake) = prober(32, ProbeKind::Statfs);
        let m: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/mnt/dead{i:03}")))
            .collect();
        for path in &m {
            fake.hang(path);
        }
        for round in 0..2 {
            let r = timed(&mut p, &m, SHORT);
            let stuck = r.iter().filter(|r| r.state == ProbeState::Stuck).count();
            let capped = r
                .iter()
                .filter(|r| {
                    r.state == ProbeState::NotProbed(NotProbedReason::ThreadCapReached { cap: 32 })
                })
                .count();
            assert_eq!((stuck, capped), (32, 68), "round {round}");
            assert!(
                r.iter()
                    .filter(|r| r.state != ProbeState::Stuck)
                    .all(|r| r.duration == Duration::ZERO)
            );
        }
        assert!(fake.wait_blocked_total(32, SETTLE));
        assert_eq!(fake.calls().len(), 32);
        let s = p.stats();
        assert_eq!(
            (s.threads_total, s.threads_stuck, s.threads_busy),
            (32, 32, 32)
        );
        assert_eq!(s.not_probed_total, 136);

        // Ten mounts come back: their threads are free again and probe ten more mounts.
        let back: Vec<&PathBuf> = r_first_stuck(&m, &fake, 10);
        for path in &back {
            fake.release(path);
        }
        wait_jobs_in_flight(&p, 22);
        // The ten healthy probes finish, and the threads they free go to mounts in line,
        // which are dead too: 32 stuck again, 58 still unknown.
        let r = timed(&mut p, &m, DEADLINE);
        let ok = r.iter().filter(|r| r.state == ProbeState::Ok).count();
        let stuck = r.iter().filter(|r| r.state == ProbeState::Stuck).count();
        let unknown = r
            .iter()
            .filter(|r| matches!(r.state, ProbeState::NotProbed(_)))
            .count();
        assert_eq!((ok, stuck, unknown), (10, 32, 58));
        assert!(
            back.iter()
                .all(|b| r.iter().any(|r| r.path == **b && r.state == ProbeState::Ok))
        );
        assert_eq!(p.stats().threads_total, 32);
        assert_eq!(fake.calls().len(), 32 + 10 + 10);

        for path in &m {
            fake.release(path);
        }
        assert!(p.wait_idle(SETTLE));
    }

    /// The first `n` paths whose probes are blocked on the fake's gate.
    fn r_first_stuck<'a>(m: &'a [PathBuf], fake: &FakeProbeSyscall, n: usize) -> Vec<&'a PathBuf> {
        m.iter()
            .filter(|p| fake.blocked_on(p) == 1)
            .take(n)
            .collect()
    }

    /// Waits until exactly `n` probes are still parked (released ones have checked back in).
    fn wait_jobs_in_flight(p: &Prober, n: usize) {
        assert!(
            p.shared.wait_until(SETTLE, |st| st.jobs_in_flight == n),
            "jobs in flight never dropped to {n}"
        );
    }

    #[test]
    fn a_mount_dropped_from_the_list_is_forgotten_unless_its_probe_is_parked() {
        let (mut p, fake) = prober(4, ProbeKind::Statfs);
        fake.hang("/mnt/hung");
        timed(&mut p, &paths(&["/mnt/a", "/mnt/hung"]), SHORT);
        wait_jobs_in_flight(&p, 1);
        timed(&mut p, &paths(&["/mnt/b"]), QUICK);
        let listed: Vec<PathBuf> = p.stats().mounts.into_iter().map(|m| m.path).collect();
        assert_eq!(listed, paths(&["/mnt/b", "/mnt/hung"]));

        fake.release(Path::new("/mnt/hung"));
        assert!(p.wait_idle(SETTLE));
        timed(&mut p, &paths(&["/mnt/b"]), QUICK);
        let listed: Vec<PathBuf> = p.stats().mounts.into_iter().map(|m| m.path).collect();
        assert_eq!(listed, paths(&["/mnt/b"]));
    }

    #[test]
    fn a_panicking_probe_is_a_failure_and_its_thread_keeps_serving() {
        let (mut p, fake) = prober(1, ProbeKind::Statfs);
        fake.panic_on("/mnt/bug");
        let r = timed(&mut p, &paths(&["/mnt/bug"]), QUICK);
        assert_eq!(
            r[0].state,
            ProbeState::Failed {
                errno: None,
                error: "probe panicked".into()
            }
        );
        let r = timed(&mut p, &paths(&["/mnt/fine"]), QUICK);
        assert_eq!(r[0].state, ProbeState::Ok);
        assert_eq!(p.stats().threads_total, 1);
    }

    #[test]
    fn mounts_waiting_for_a_thread_get_one_freed_within_the_same_round() {
        let (mut p, fake) = prober(1, ProbeKind::Statfs);
        let m = paths(&["/mnt/a", "/mnt/b", "/mnt/c"]);
        let r = timed(&mut p, &m, QUICK);
        assert_eq!(states(&r), vec![ProbeState::Ok; 3]);
        assert_eq!(fake.calls().len(), 3);
        assert_eq!(p.stats().threads_total, 1);
    }

    #[test]
    fn a_cap_of_zero_probes_nothing_and_never_blocks() {
        let (mut p, fake) = prober(0, ProbeKind::Statfs);
        let r = timed(&mut p, &paths(&["/mnt/a"]), QUICK);
        assert_eq!(
            r[0].state,
            ProbeState::NotProbed(NotProbedReason::ThreadCapReached { cap: 0 })
        );
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn dropping_the_prober_ends_idle_threads_at_once_and_parked_ones_when_they_return() {
        let (mut p, fake) = prober(4, ProbeKind::Statfs);
        fake.hang("/mnt/hung");
        timed(&mut p, &paths(&["/mnt/a", "/mnt/b", "/mnt/hung"]), SHORT);
        let monitor = p.monitor();
        let before = monitor.stats().threads_total;
        assert!(before >= 2);
        drop(p);
        assert!(monitor.wait_threads_at_most(1, SETTLE));
        assert_eq!(monitor.stats().threads_total, 1);
        fake.release(Path::new("/mnt/hung"));
        assert!(monitor.wait_threads_at_most(0, SETTLE));
    }

    #[test]
    fn real_syscall_probes_root_and_reports_enoent_for_a_missing_path() {
        let real = RealProbeSyscall;
        for kind in [ProbeKind::Statfs, ProbeKind::Stat] {
            real.probe(Path::new("/"), kind).unwrap();
            let err = real
                .probe(Path::new("/nonexistent/nodemedic-probe"), kind)
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        }
    }

    #[test]
    fn threads_an_outage_left_behind_exit_once_the_surplus_has_lasted_idle_exit() {
        let fake = Arc::new(FakeProbeSyscall::new());
        let idle_exit = Duration::from_millis(200);
        let mut p = Prober::new(
            ProberConfig {
                max_threads: 32,
                kind: ProbeKind::Statfs,
                idle_exit,
            },
            fake.clone(),
        );
        let dead: Vec<PathBuf> = (0..20)
            .map(|i| PathBuf::from(format!("/mnt/dead{i}")))
            .collect();
        for d in &dead {
            fake.hang(d);
        }
        let healthy = paths(&["/mnt/a", "/mnt/b"]);
        let mut all = dead.clone();
        all.extend(healthy.iter().cloned());
        timed(&mut p, &all, SHORT);
        assert!(fake.wait_blocked_total(20, SETTLE));
        assert_eq!(p.stats().threads_total, 22);
        // The outage ends and its mounts go away: two mounts are watched from now on.
        for d in &dead {
            fake.release(d);
        }
        assert!(p.wait_idle(SETTLE));
        let r = timed(&mut p, &healthy, QUICK);
        assert_eq!(states(&r), vec![ProbeState::Ok; 2]);
        assert_eq!(p.stats().threads_total, 22, "not before idle_exit");
        // Rounds go on; once the surplus has lasted idle_exit, it exits.
        let monitor = p.monitor();
        let shrunk = (0..200).any(|_| {
            timed(&mut p, &healthy, QUICK);
            monitor.wait_threads_at_most(2, Duration::from_millis(50))
        });
        assert!(shrunk, "threads: {}", p.stats().threads_total);
        assert_eq!(
            p.stats().threads_total,
            2,
            "what the watched mounts need stays"
        );
        let r = timed(&mut p, &healthy, QUICK);
        assert_eq!(states(&r), vec![ProbeState::Ok; 2]);
    }

    #[test]
    fn parked_threads_are_never_counted_as_surplus() {
        let fake = Arc::new(FakeProbeSyscall::new());
        let mut p = Prober::new(
            ProberConfig {
                max_threads: 8,
                kind: ProbeKind::Statfs,
                idle_exit: Duration::ZERO,
            },
            fake.clone(),
        );
        let dead = paths(&["/mnt/d1", "/mnt/d2", "/mnt/d3"]);
        for d in &dead {
            fake.hang(d);
        }
        timed(&mut p, &dead, SHORT);
        // The dead mounts disappear from the table while their probes are parked.
        for _ in 0..5 {
            timed(&mut p, &paths(&["/mnt/ok"]), QUICK);
        }
        let s = p.stats();
        assert_eq!(s.threads_stuck, 3);
        assert!(
            s.threads_total >= 3,
            "parked threads stay: {}",
            s.threads_total
        );
        for d in &dead {
            fake.release(d);
        }
        assert!(p.wait_idle(SETTLE));
    }

    #[test]
    fn a_huge_deadline_does_not_overflow() {
        let (mut p, _fake) = prober(1, ProbeKind::Statfs);
        let r = p.probe_all(&paths(&["/mnt/a"]), Duration::MAX);
        assert_eq!(r[0].state, ProbeState::Ok);
    }
}
