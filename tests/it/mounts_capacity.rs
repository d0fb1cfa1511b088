//! Probe capacity with real hung FUSE mounts through the daemon (issue 18, point 5): with
//! 100 dead mounts and 32 probe threads, the 68 mounts (and the healthy path) that get no
//! thread are reported unknown, never `nodemedic_mount_up 0` and never silently fine; the
//! `MountsUnprobed` warning says so; once the mounts are released and gone, the threads
//! they held exit. Needs root and /dev/fuse. The mounts carry their own fstype, so the
//! daemon watches only them.

use std::time::Duration;

use super::support::hangfs::{HangFs, HangMode};
use super::support::{Daemon, is_root, require};

const FSTYPE: &str = "fuse.nodemedic-cap";

fn count(m: &str, prefix: &str, value: &str) -> usize {
    m.lines()
        .filter(|l| l.starts_with(prefix) && l.ends_with(&format!(" {value}")))
        .count()
}

fn gauge(m: &str, name: &str) -> Option<f64> {
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
}

/// Threads of process `pid` (from /proc, the kernel's own count).
fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        .unwrap()
}

#[test]
fn serial_a_hundred_hung_mounts_leave_the_rest_unknown_and_their_threads_go_once_released() {
    if !require(
        is_root() && std::path::Path::new("/dev/fuse").exists(),
        "root and /dev/fuse",
    ) {
        return;
    }
    let healthy = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &format!(
            "[kernel]\nenabled = false\n[memory]\nenabled = false\n[runtime]\nenabled = false\n\
             [kubernetes]\nenabled = false\n\
             [mounts]\ninterval = \"1s\"\nprobe_timeout = \"1s\"\nfstypes = [\"{FSTYPE}\"]\n\
             paths = [\"{}\"]\n",
            healthy.path().display()
        ),
        &[],
    );
    let pid = d.child.id();
    let healthy_series = format!("mountpoint=\"{}\"", healthy.path().display());
    let settled = d
        .wait_metrics(Duration::from_secs(10), |m| {
            m.lines().any(|l| {
                l.starts_with("nodemedic_mount_up{")
                    && l.contains(&healthy_series)
                    && l.ends_with(" 1")
            })
        })
        .expect("the healthy path is probed");
    let threads_before = threads(pid);
    assert_eq!(
        gauge(&settled, "nodemedic_probe_threads"),
        Some(1.0),
        "{settled}"
    );

    let dirs: Vec<_> = (0..100).map(|_| tempfile::tempdir().unwrap()).collect();
    let mounts: Vec<HangFs> = dirs
        .iter()
        .map(|d| HangFs::mount_as(d.path(), HangMode::NeverInit, FSTYPE).unwrap())
        .collect();
    let m = d
        .wait_metrics(Duration::from_secs(30), |m| {
            count(m, "nodemedic_mount_stuck{", "1") == 32
                && count(m, "nodemedic_mount_unknown{", "1") == 69
        })
        .unwrap_or_else(|| panic!("32 stuck and 69 unknown expected:\n{}", d.metrics()));
    // Before issue 18: the 68 were "not probed, hung: false" and the healthy path up 0.
    assert_eq!(
        count(&m, "nodemedic_mount_up{", "0"),
        32,
        "only the stuck ones are down"
    );
    assert!(
        m.lines().any(|l| l.starts_with("nodemedic_mount_up{")
            && l.contains(&healthy_series)
            && l.ends_with(" 1")),
        "the healthy path keeps its last known state:\n{m}"
    );
    assert!(
        m.contains("nodemedic_condition{condition=\"MountsUnprobed\"} 1"),
        "{m}"
    );
    assert_eq!(gauge(&m, "nodemedic_probe_threads"), Some(32.0), "{m}");
    let s = d.status();
    let unknown_mounts: Vec<_> = s["detectors"]["mounts"]["info"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["probe"] == "unknown")
        .cloned()
        .collect();
    assert_eq!(unknown_mounts.len(), 69);
    assert!(
        unknown_mounts
            .iter()
            .filter(|m| m["hung"].is_null())
            .count()
            == 68,
        "never probed: hung is not known, not false"
    );
    let warning = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "MountsUnprobed")
        .cloned()
        .unwrap();
    assert!(
        warning["message"].as_str().unwrap().contains("69 of 101"),
        "{warning}"
    );

    // Released and unmounted: every parked probe returns, the mounts leave the table, and
    // the threads they held exit (after the pool's 30 s surplus wait).
    drop(mounts);
    d.wait_metrics(Duration::from_secs(90), |m| {
        gauge(m, "nodemedic_probe_threads") == Some(1.0)
            && m.contains("nodemedic_condition{condition=\"MountsUnprobed\"} 0")
    })
    .unwrap_or_else(|| panic!("threads did not go:\n{}", d.metrics()));
    let after = threads(pid);
    assert!(
        after <= threads_before,
        "{after} threads after the release, {threads_before} before the mounts"
    );
}
