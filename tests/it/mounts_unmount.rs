//! The unmount remedy for real: a FUSE mount nobody serves (`support/hangfs.rs`), with
//! processes stuck in it, lazily unmounted by `LinuxUnmounter` through `MountDetacher`,
//! watched by the mounts detector on the real `/proc`.
//!
//! Needs root and `/dev/fuse` (skips loudly elsewhere, fails under CI). Named `serial_`:
//! the mount and the detach are visible machine-wide. Other tests' hung FUSE mounts may
//! exist at the same time, so conditions are filtered by this test's mount point, and
//! the final clearing is awaited with a deadline (their blocked tasks count too while the
//! census cannot tell one FUSE connection from another).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nodemedic::config::MountsSection;
use nodemedic::detect::{Detector, Sample};
use nodemedic::edge::RootedFiles;
use nodemedic::formats::mountinfo::parse_mountinfo;
use nodemedic::model::ConditionKind;
use nodemedic::mounts::detached::DetachedMounts;
use nodemedic::mounts::detector::MountsDetector;
use nodemedic::mounts::dstate::{self, ProcTaskSource};
use nodemedic::mounts::unmount::{LinuxUnmounter, MountDetacher, UnmountRules};

use super::mounts_real::{
    CENSUS_IDS, FAST_LOOKUP, Kids, POLL, SETTLE, Scratch, fuse_ready, task_wait, wait_fuse_sleep,
};
use super::support::hangfs::HangFs;

/// Probe deadline of the detector under test: a healthy local statfs answers far faster.
const PROBE_TIMEOUT: &str = "1s";
/// Other tests' FUSE hangs release within seconds; the census counts their tasks too.
const CLEAR_WITHIN: Duration = Duration::from_secs(60);

fn is_mounted(dir: &Path) -> bool {
    let table = parse_mountinfo(&fs::read("/proc/self/mountinfo").expect("read mountinfo"));
    table.entries.iter().any(|e| e.mount_point == dir)
}

/// The reason and message of `NetworkMountHung` for `dir`, if raised.
fn hung_for(s: &Sample, dir: &Path) -> Option<(String, String)> {
    let subject = dir.display().to_string();
    s.conditions
        .iter()
        .find(|c| c.kind == ConditionKind::NetworkMountHung && c.subject == subject)
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// `stat` of `path` on a thread: the answer if it comes within `deadline`, else `None`
/// (the thread is left blocked; aborting the connection at teardown frees it).
fn stat_within(path: PathBuf, deadline: Duration) -> Option<(std::io::Result<()>, Duration)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = fs::metadata(&path).map(drop);
        let _ = tx.send((r, t0.elapsed()));
    });
    rx.recv_timeout(deadline).ok()
}

fn procs_blocked() -> Option<u64> {
    fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("procs_blocked ")?.trim().parse().ok())
}

#[test]
fn serial_a_lazily_unmounted_hung_fuse_mount_answers_new_lookups_and_stays_hung_until_its_tasks_are_released()
 {
    const TEST: &str = "lazy-unmount-remedy";
    if !fuse_ready(TEST) {
        return;
    }
    let mut scratch = Scratch::new(TEST);
    let dir = scratch.dir("hung");
    let mut kids = Kids::default();
    let mut fs_guard = HangFs::mount(&dir).expect("mount hangfs");

    let cfg: MountsSection =
        toml::from_str(&format!("probe_timeout = \"{PROBE_TIMEOUT}\"")).expect("mounts config");
    let files = Arc::new(RootedFiles::new("/"));
    let detached = Arc::new(DetachedMounts::default());
    let mut det =
        MountsDetector::new(cfg.clone(), files.clone(), None, None).with_detached(detached.clone());
    let detacher = MountDetacher::new(
        files,
        UnmountRules::from_config(&cfg),
        Arc::new(LinuxUnmounter::new()),
        detached.clone(),
    );

    let pids: Vec<u32> = (0..2).map(|_| kids.spawn_stat(&[], &dir)).collect();
    for pid in &pids {
        wait_fuse_sleep(*pid, 'D');
    }
    eprintln!(
        "procs_blocked in /proc/stat with {} tasks in D on FUSE: {:?} (it counts iowait only)",
        pids.len(),
        procs_blocked()
    );
    let s = det.sample().expect("detector pass");
    let (reason, _) = hung_for(&s, &dir).expect("the hung mount is reported");
    assert_eq!(reason, "ProbeTimeout");

    // Observe mode / dry run: the plan makes no syscall.
    let plan = detacher.plan(dir.to_str().unwrap()).expect("plan");
    assert!(plan.contains("MNT_DETACH"), "{plan}");
    assert!(is_mounted(&dir), "planning must not unmount");

    let summary = detacher
        .detach(dir.to_str().unwrap())
        .expect("lazy unmount");
    fs_guard.mark_detached_elsewhere();
    eprintln!("{summary}");
    assert!(!is_mounted(&dir), "gone from the mount table");

    // A new lookup inside the old mount point reaches the empty directory underneath.
    let (r, took) = stat_within(dir.join("inside"), FAST_LOOKUP)
        .unwrap_or_else(|| panic!("a new stat still blocks after the detach"));
    assert_eq!(
        r.expect_err("the underlying directory is empty").kind(),
        std::io::ErrorKind::NotFound
    );
    eprintln!("new stat after the detach answered in {took:?}");

    // The detach frees nobody: the early callers are still in D and counted.
    let census = dstate::take_census(&ProcTaskSource::new("/proc"), CENSUS_IDS).expect("census");
    for pid in &pids {
        assert_eq!(task_wait(*pid).map(|(s, _)| s), Some('D'), "pid {pid}");
        assert!(census.fuse.ids.contains(pid), "pid {pid} not in {census:?}");
    }
    for _ in 0..2 {
        let s = det.sample().expect("detector pass");
        let (reason, msg) = hung_for(&s, &dir).expect("still raised after the detach");
        assert_eq!(reason, "DetachedTasksBlocked", "{msg}");
        assert!(msg.contains("lazily unmounted"), "{msg}");
    }
    assert!(!detached.is_empty());

    // Abort the connection: every blocked caller returns (ENOTCONN) and the condition clears.
    fs_guard.release();
    assert_eq!(kids.wait_all_exited(SETTLE), pids.len());
    assert!(
        det.prober_monitor().wait_idle(SETTLE),
        "the parked probe returned"
    );
    let until = Instant::now() + CLEAR_WITHIN;
    loop {
        let s = det.sample().expect("detector pass");
        match hung_for(&s, &dir) {
            None => break,
            Some((_, msg)) => assert!(
                Instant::now() < until,
                "still raised {CLEAR_WITHIN:?} after release: {msg}"
            ),
        }
        std::thread::sleep(POLL);
    }
    assert!(detached.is_empty(), "forgotten once nothing is blocked");
}
