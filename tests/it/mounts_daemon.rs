//! The running daemon with real hung FUSE mounts: stuck mounts are reported, the endpoint
//! and the systemd keep-alives are unaffected, probe threads stay bounded, and releasing
//! the mounts clears everything. Needs root and /dev/fuse (skips loudly elsewhere, fails
//! under CI). Runs serially: the mounts are visible machine-wide.

use std::time::{Duration, Instant};

use super::kernel_kmsg::metric;
use super::support::hangfs::HangFs;
use super::support::{Daemon, NotifySocket, is_root, require};

const CONFIG: &str = "[kernel]\nenabled = false\n[memory]\nenabled = false\n[mounts]\ninterval = \"1s\"\nprobe_timeout = \"1s\"\n";

fn hung_with(n: usize) {
    if !require(
        is_root() && std::path::Path::new("/dev/fuse").exists(),
        "root and /dev/fuse",
    ) {
        return;
    }
    let sock = NotifySocket::bind();
    let path = sock.path.to_str().unwrap().to_string();
    let d = Daemon::start(
        CONFIG,
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "1500000")],
    );
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let mounted = Instant::now();
    let mounts: Vec<HangFs> = dirs
        .iter()
        .map(|d| HangFs::mount(d.path()).unwrap())
        .collect();
    let stuck_series = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("nodemedic_mount_stuck{") && l.ends_with(" 1"))
            .count()
    };

    // A pass is one probe deadline (1 s) plus the interval (1 s): a mount that appears
    // just after a pass is discovered by the next one and is stuck one deadline later.
    // The condition gauge follows the stuck gauges through the hub and the policy tick,
    // so one scrape can show the mounts stuck before the condition: wait for both.
    let condition = "nodemedic_condition{condition=\"NetworkMountHung\"} 1";
    let m = d
        .wait_metrics(Duration::from_secs(10), |m| {
            stuck_series(m) == n && m.contains(condition)
        })
        .unwrap_or_else(|| {
            panic!(
                "not all {n} mounts reported stuck with NetworkMountHung raised:\n{}",
                d.metrics()
            )
        });
    let took = mounted.elapsed();
    eprintln!("{n} hung mounts reported stuck after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "two passes + one deadline + slack: {took:?}"
    );
    assert!(m.contains(condition), "{m}");

    // While they hang: endpoint fast, keep-alives flowing, threads bounded.
    let _ = sock.collect(Duration::from_millis(10));
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        for p in ["/metrics", "/healthz"] {
            let r = d.get(p);
            assert_eq!(r.status, 200, "{p}: {}", r.body);
            worst = worst.max(r.elapsed);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("slowest /metrics or /healthz answer with {n} hung mounts: {worst:?}");
    // Well under one probe deadline: the endpoint never waits on a probe.
    assert!(worst < Duration::from_millis(500), "{worst:?}");
    let msgs = sock.collect(Duration::from_secs(2));
    assert!(
        msgs.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "keep-alives stopped: {msgs:?}"
    );
    let m = d.metrics();
    let threads = metric(&m, "nodemedic_probe_threads_stuck");
    assert!(
        threads >= 1.0 && threads <= n as f64,
        "one parked thread per mount at most: {threads}"
    );
    let s = d.status();
    let hung: Vec<_> = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "NetworkMountHung")
        .collect();
    assert_eq!(hung.len(), n, "{s}");

    for h in mounts {
        h.release();
    }
    d.wait_metrics(Duration::from_secs(15), |m| {
        m.contains("nodemedic_condition{condition=\"NetworkMountHung\"} 0")
            && metric(m, "nodemedic_probe_threads_stuck") == 0.0
    })
    .unwrap_or_else(|| panic!("released mounts must clear:\n{}", d.metrics()));
}

#[test]
fn serial_one_hung_fuse_mount_is_reported_and_clears_when_released() {
    hung_with(1);
}

#[test]
fn serial_twenty_hung_fuse_mounts_never_slow_the_endpoint_or_the_keepalives() {
    hung_with(20);
}
