//! Hung mounts for real: FUSE connections nobody serves (`support/hangfs.rs`), probed,
//! counted in the D-state census and lazily unmounted, on the running kernel.
//!
//! Needs root and `/dev/fuse`. Without them each test prints `SKIP:` to stderr and passes,
//! unless under CI (`CI=true`), where a missing prerequisite fails the test
//! (`support::require`).
//!
//! Cleanup order matters and is encoded in declaration order (locals drop in reverse): the
//! scratch directory first, then child processes, then mounts. So on any failure the mounts
//! are released first (which wakes every blocked caller), then children are killed and
//! reaped, then the directories are removed.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nodemedic::formats::mountinfo::parse_mountinfo;
use nodemedic::mounts::dstate::{self, ProcTaskSource, WaitClass};
use nodemedic::mounts::prober::{ProbeKind, ProbeState, Prober, ProberConfig, RealProbeSyscall};
use nodemedic::mounts::watch::{WatchPolicy, WatchReason};

use super::support::hangfs::{HANGFS_FSTYPE, HangFs, HangMode};
use super::support::{is_root, require};

/// Probe deadline: long enough for a healthy local statfs (and spawning 21 probe threads)
/// on a 2-core machine under full load.
const DEADLINE: Duration = Duration::from_secs(1);
/// Scheduling latency allowed on top of a deadline before the caller counts as blocked.
const SCHED_SLACK: Duration = Duration::from_millis(500);
/// Upper bound for things that happen within milliseconds when the code is right.
pub(super) const SETTLE: Duration = Duration::from_secs(10);
/// Poll interval while waiting for another process to enter a kernel wait: there is no
/// event to block on for that, /proc must be looked at.
pub(super) const POLL: Duration = Duration::from_millis(10);
/// A lookup on a detached mount point must come back this fast (it no longer reaches FUSE).
pub(super) const FAST_LOOKUP: Duration = Duration::from_secs(2);
pub(super) const STAT_BIN: &str = "/usr/bin/stat";
/// Ids kept per wait class in the census: more than every task this machine may have in D.
pub(super) const CENSUS_IDS: usize = 4096;

/// Root, `/dev/fuse` and `stat(1)`, or a loud skip (a failure under CI).
pub(super) fn fuse_ready(test: &str) -> bool {
    require(is_root(), &format!("{test}: root (to mount FUSE)"))
        && require(
            Path::new("/dev/fuse").exists(),
            &format!("{test}: /dev/fuse"),
        )
        && require(Path::new(STAT_BIN).exists(), &format!("{test}: {STAT_BIN}"))
}

/// A private directory tree under the temp dir. Only ever removed with non-recursive
/// `rmdir`: a recursive walk into a still-hung mount would block the test forever.
pub(super) struct Scratch {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Scratch {
    pub(super) fn new(tag: &str) -> Scratch {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "nodemedic-it-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&root).expect("create scratch dir");
        Scratch {
            root,
            dirs: Vec::new(),
        }
    }

    pub(super) fn dir(&mut self, name: &str) -> PathBuf {
        let d = self.root.join(name);
        fs::create_dir(&d).expect("create scratch subdir");
        self.dirs.push(d.clone());
        d
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
        let _ = fs::remove_dir(&self.root);
    }
}

/// Child processes that are killed and reaped on drop.
#[derive(Default)]
pub(super) struct Kids(Vec<Child>);

impl Kids {
    pub(super) fn spawn_stat(&mut self, args: &[&str], path: &Path) -> u32 {
        let child = Command::new(STAT_BIN)
            .args(args)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stat");
        let pid = child.id();
        self.0.push(child);
        pid
    }

    /// Waits up to `timeout` for every child to exit; returns how many failed.
    pub(super) fn wait_all_exited(&mut self, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        let mut failed = 0;
        for c in &mut self.0 {
            loop {
                match c.try_wait().expect("try_wait") {
                    Some(status) => {
                        failed += usize::from(!status.success());
                        break;
                    }
                    None if Instant::now() < until => std::thread::sleep(POLL),
                    None => panic!("child {} still blocked after {timeout:?}", c.id()),
                }
            }
        }
        failed
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Runs a command and returns its output, failing the test instead of hanging if it does
/// not finish within `timeout`.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> (Output, Duration) {
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            let took = t0.elapsed();
            return (child.wait_with_output().expect("collect output"), took);
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// `(state, wchan)` of a task, read the way the census reads it.
pub(super) fn task_wait(pid: u32) -> Option<(char, String)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    Some((dstate::parse_stat(&stat)?.state, wchan))
}

/// Waits until `pid` sleeps in state `state` on a FUSE wait channel; returns the wchan.
pub(super) fn wait_fuse_sleep(pid: u32, state: char) -> String {
    let until = Instant::now() + SETTLE;
    loop {
        let seen = task_wait(pid);
        if let Some((s, wchan)) = &seen
            && *s == state
            && dstate::classify_wchan(wchan) == WaitClass::Fuse
        {
            return wchan.clone();
        }
        assert!(
            Instant::now() < until,
            "pid {pid} never slept in {state} on FUSE; last seen {seen:?}"
        );
        std::thread::sleep(POLL);
    }
}

fn prober_scenario(test: &str, n: usize, kind: ProbeKind) {
    if !fuse_ready(test) {
        return;
    }
    let mut scratch = Scratch::new(test);
    let healthy = scratch.dir("healthy");
    let dirs: Vec<PathBuf> = (0..n).map(|i| scratch.dir(&format!("hung{i}"))).collect();
    let mut mounts: Vec<HangFs> = dirs
        .iter()
        .map(|d| HangFs::mount(d).expect("mount hangfs"))
        .collect();

    // The mount table shows them as fuse subtypes, which the default policy watches.
    let table = parse_mountinfo(&fs::read("/proc/self/mountinfo").expect("read mountinfo"));
    let targets = WatchPolicy::default().targets(&table.entries);
    for d in &dirs {
        let t = targets
            .iter()
            .find(|t| t.path == *d)
            .unwrap_or_else(|| panic!("{} is not a watch target", d.display()));
        assert_eq!(t.reason, WatchReason::NetworkFs);
        assert_eq!(t.mount.as_ref().expect("is a mount").fstype, HANGFS_FSTYPE);
    }

    let mut prober = Prober::new(
        ProberConfig {
            max_threads: 32,
            kind,
            ..ProberConfig::default()
        },
        Arc::new(RealProbeSyscall),
    );
    let mut all = dirs.clone();
    all.push(healthy.clone());
    let mut stuck_for = vec![Duration::ZERO; n];
    for round in 0..3 {
        let t0 = Instant::now();
        let r = prober.probe_all(&all, DEADLINE);
        let took = t0.elapsed();
        assert!(
            took < DEADLINE + SCHED_SLACK,
            "round {round}: caller blocked {took:?}"
        );
        for (i, res) in r[..n].iter().enumerate() {
            assert_eq!(
                res.state,
                ProbeState::Stuck,
                "round {round}: {}",
                res.path.display()
            );
            // Outstanding since its submission in round 0, so it only grows.
            assert!(
                res.duration > stuck_for[i],
                "round {round}: {:?}",
                res.duration
            );
            stuck_for[i] = res.duration;
        }
        assert_eq!(r[n].state, ProbeState::Ok, "the healthy dir");
        let s = prober.stats();
        assert_eq!(
            s.threads_stuck, n,
            "round {round}: one parked thread per hung mount"
        );
        assert!(
            s.threads_total <= n + 1,
            "round {round}: {} threads",
            s.threads_total
        );
    }

    // The parked threads really sit in the kernel, in D on a FUSE wait.
    let me = std::process::id();
    let census = dstate::take_census(&ProcTaskSource::new("/proc"), CENSUS_IDS).expect("census");
    let own_fuse = census
        .fuse
        .ids
        .iter()
        .filter(|tid| fs::metadata(format!("/proc/{me}/task/{tid}")).is_ok())
        .count();
    assert!(
        own_fuse >= n,
        "{own_fuse} of this process's threads in fuse D, want >= {n}"
    );

    let threads_before = prober.stats().threads_total;
    for m in mounts.drain(..) {
        m.release();
    }
    assert!(
        prober.wait_idle(SETTLE),
        "parked probes did not return after release"
    );
    let s = prober.stats();
    assert_eq!((s.threads_stuck, s.threads_busy), (0, 0));
    assert_eq!(
        s.threads_total, threads_before,
        "returned threads stay in the pool"
    );
    assert_eq!(s.returned_after_stuck, n as u64);
    for m in s.mounts.iter().filter(|m| m.path != healthy) {
        assert!(
            matches!(
                m.state,
                Some(ProbeState::Failed {
                    errno: Some(libc::ENOTCONN),
                    ..
                })
            ),
            "{}: the aborted connection answers ENOTCONN, got {:?}",
            m.path.display(),
            m.state
        );
    }

    let r = prober.probe_all(&all, DEADLINE);
    assert!(
        r.iter().all(|r| r.state == ProbeState::Ok),
        "after release every path is a plain directory again: {r:?}"
    );
    assert_eq!(
        prober.stats().threads_total,
        threads_before,
        "threads are reused"
    );
}

#[test]
fn prober_marks_one_hung_fuse_mount_stuck_and_clears_it_after_release() {
    prober_scenario("prober-one", 1, ProbeKind::Statfs);
}

#[test]
fn prober_marks_twenty_hung_fuse_mounts_stuck_with_one_parked_thread_each() {
    prober_scenario("prober-twenty", 20, ProbeKind::Statfs);
}

#[test]
fn stat_probes_of_hung_fuse_mounts_are_stuck_too() {
    prober_scenario("prober-stat", 3, ProbeKind::Stat);
}

#[test]
fn census_sees_stat_processes_blocked_on_a_hung_fuse_mount_as_class_fuse() {
    const TEST: &str = "census-fuse";
    if !fuse_ready(TEST) {
        return;
    }
    let mut scratch = Scratch::new(TEST);
    let dir = scratch.dir("hung");
    let mut kids = Kids::default();
    let fs_guard = HangFs::mount(&dir).expect("mount hangfs");

    let pids: Vec<u32> = (0..3)
        .map(|i| {
            let args: &[&str] = if i == 0 { &["-f"] } else { &[] };
            kids.spawn_stat(args, fs_guard.path())
        })
        .collect();
    for pid in &pids {
        let wchan = wait_fuse_sleep(*pid, 'D');
        assert_eq!(wchan.trim(), "fuse_get_req", "pid {pid}");
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
        let parsed = dstate::parse_stat(&stat).expect("parse stat");
        assert_eq!((parsed.pid, parsed.comm.as_str()), (*pid, "stat"));
    }

    let census = dstate::take_census(&ProcTaskSource::new("/proc"), CENSUS_IDS).expect("census");
    assert_eq!(census.unparsable, 0);
    for pid in &pids {
        assert!(
            census.fuse.ids.contains(pid),
            "pid {pid} missing from {census:?}"
        );
        assert!(!census.nfs.ids.contains(pid) && !census.other.ids.contains(pid));
    }
    assert!(census.fuse.count >= pids.len());

    fs_guard.release();
    assert_eq!(
        kids.wait_all_exited(SETTLE),
        pids.len(),
        "every stat fails with ENOTCONN"
    );
    let after = dstate::take_census(&ProcTaskSource::new("/proc"), CENSUS_IDS).expect("census");
    assert!(pids.iter().all(|p| !after.fuse.ids.contains(p)));
}

#[test]
fn after_fuse_init_a_blocked_caller_sleeps_interruptibly_so_only_the_prober_catches_it() {
    const TEST: &str = "init-answered";
    if !fuse_ready(TEST) {
        return;
    }
    let mut scratch = Scratch::new(TEST);
    let dir = scratch.dir("hung");
    let mut kids = Kids::default();
    let fs_guard = HangFs::mount_with(&dir, HangMode::AnswerInitOnly).expect("mount hangfs");

    let pid = kids.spawn_stat(&[], &dir);
    let wchan = wait_fuse_sleep(pid, 'S');
    assert_eq!(wchan.trim(), "request_wait_answer");
    let census = dstate::take_census(&ProcTaskSource::new("/proc"), CENSUS_IDS).expect("census");
    assert!(
        !census.fuse.ids.contains(&pid),
        "state S is not counted as hung"
    );

    let mut prober = Prober::new(ProberConfig::default(), Arc::new(RealProbeSyscall));
    let r = prober.probe_all(std::slice::from_ref(&dir), DEADLINE);
    assert_eq!(r[0].state, ProbeState::Stuck);

    fs_guard.release();
    assert_eq!(kids.wait_all_exited(SETTLE), 1);
    assert!(prober.wait_idle(SETTLE));
    assert!(matches!(
        prober.stats().mounts[0].state,
        Some(ProbeState::Failed {
            errno: Some(libc::ECONNABORTED),
            ..
        })
    ));
}

#[test]
fn lazy_unmount_of_a_hung_fuse_mount_makes_a_new_stat_return_at_once_on_the_underlying_dir() {
    const TEST: &str = "lazy-unmount";
    if !fuse_ready(TEST) {
        return;
    }
    let mut scratch = Scratch::new(TEST);
    let dir = scratch.dir("hung");
    let underlying_ino = fs::metadata(&dir).expect("stat before mount").ino();
    let mut kids = Kids::default();
    let mut fs_guard = HangFs::mount(&dir).expect("mount hangfs");

    let early = kids.spawn_stat(&[], &dir);
    wait_fuse_sleep(early, 'D');

    fs_guard.lazy_unmount().expect("umount2 MNT_DETACH");
    let (out, took) = run_bounded(Command::new(STAT_BIN).args(["-c", "%i"]).arg(&dir), SETTLE);
    assert!(out.status.success(), "stat after detach: {out:?}");
    assert!(took < FAST_LOOKUP, "stat after detach took {took:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        underlying_ino.to_string(),
        "the path now resolves to the directory underneath"
    );
    let table = parse_mountinfo(&fs::read("/proc/self/mountinfo").expect("read mountinfo"));
    assert!(table.entries.iter().all(|e| e.mount_point != dir));

    // The detach does not free callers that were already waiting on the connection.
    assert_eq!(task_wait(early).map(|(s, _)| s), Some('D'));
    let mut prober = Prober::new(ProberConfig::default(), Arc::new(RealProbeSyscall));
    assert_eq!(
        prober.probe_all(std::slice::from_ref(&dir), DEADLINE)[0].state,
        ProbeState::Ok
    );

    fs_guard.release();
    assert_eq!(
        kids.wait_all_exited(SETTLE),
        1,
        "the early stat fails once aborted"
    );
}
