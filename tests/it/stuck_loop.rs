//! A detector really stuck in the kernel (reading a file on a FUSE mount nobody serves):
//! the daemon must say so on /healthz, stop feeding systemd's watchdog so systemd restarts
//! it, keep /metrics fast, and still stop cleanly on SIGTERM. Also `check` exiting 1 on a
//! real detected problem. Needs root and /dev/fuse for the first test.

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

use super::support::hangfs::HangFs;
use super::support::{BIN, Daemon, NotifySocket, is_root, require, stalled_kmsg_root};

#[test]
fn serial_a_detector_stuck_in_the_kernel_turns_healthz_503_and_stops_the_keepalives() {
    if !require(
        is_root() && std::path::Path::new("/dev/fuse").exists(),
        "root and /dev/fuse",
    ) {
        return;
    }
    let hang_dir = tempfile::tempdir().unwrap();
    let fs = HangFs::mount(hang_dir.path()).unwrap();
    let sock = NotifySocket::bind();
    let path = sock.path.to_str().unwrap().to_string();
    // The memory detector reads <watched_cgroup>/memory.pressure: on the hung mount.
    let cfg = format!(
        "[health]\nstuck_after = \"5s\"\n[mounts]\nenabled = false\n[kernel]\nenabled = false\n[memory]\nwatched_cgroup = \"{}\"\n",
        fs.path().display()
    );
    let mut d = Daemon::start(
        &cfg,
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "900000")],
    );
    assert_eq!(
        sock.recv(Duration::from_secs(5)).as_deref(),
        Some("READY=1")
    );

    // Within stuck_after (5 s) plus a keep-alive period the loop counts as stuck.
    let t0 = Instant::now();
    let mut health = d.get("/healthz");
    while health.status == 200 && t0.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
        health = d.get("/healthz");
    }
    assert_eq!(health.status, 503, "{}", health.body);
    assert!(health.body.contains("detector:memory"), "{}", health.body);
    let _ = sock.collect(Duration::from_millis(400)); // drain what was in flight
    let after = sock.collect(Duration::from_secs(2));
    assert!(
        !after.iter().any(|m| m == "WATCHDOG=1"),
        "keep-alives must stop: {after:?}"
    );
    let m = d.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.elapsed < Duration::from_millis(500), "{:?}", m.elapsed);
    assert!(m.body.contains("\nnodemedic_up 0\n"), "{}", m.body);
    assert_eq!(d.status()["healthy"], false);

    // SIGTERM still stops it within 5 s although a thread sits in the kernel.
    let t0 = Instant::now();
    d.signal(Signal::SIGTERM);
    let st = d
        .wait_exit(Duration::from_secs(5))
        .expect("no clean stop within 5 s");
    assert!(st.success(), "{st:?} {}", d.log.join("\n"));
    assert!(t0.elapsed() < Duration::from_secs(5));
    fs.release();
}

#[test]
fn check_exits_1_with_the_problem_in_json_when_the_kernel_reported_a_stall() {
    // Fixture host root: a kmsg FIFO holding one kernel stall record.
    let (root, _kmsg_writer) = stalled_kmsg_root();
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "host_root = \"{}\"\nstate_dir = \"{}\"\n[memory]\nenabled = false\n[mounts]\nenabled = false\n",
            root.path().display(),
            root.path().join("state").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--json", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(json["healthy"], false);
    let row = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item"] == "KernelRCUStall")
        .cloned();
    let row = row.unwrap_or_else(|| panic!("{json}"));
    assert_eq!(row["status"], "problem");
    // The same node without the record is healthy.
    let out = std::process::Command::new(BIN)
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("result: healthy"));
}
