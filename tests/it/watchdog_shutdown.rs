//! A graceful reboot that nodemedic starts while it owns the hardware watchdog (issue 17,
//! point 5): systemd stops nodemedic early in the shutdown, and a timer left armed then
//! resets the board one timeout later (15 s, the Pi's maximum), before a slow unit such as
//! k3s (stopping its pods) has stopped: the unclean shutdown preflight exists to repair.
//!
//! Real: systemd 252 as PID 1 in `systemd-nspawn`, the packaged units, the test-built
//! binary, the container's shutdown and reboot. Stand-ins: the hardware watchdog is a plain
//! file in the state directory (a keep-alive is a byte written to it, a magic close a `V`),
//! watched from the host; the "reset" is computed from when the keep-alives stopped.
//! `k3s.service` is a shell script that takes 30 s to exit after SIGTERM.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::support::nspawn::{self, EXIT_REBOOT};
use super::support::nspawn_bed::{Bed, base_config, read_time, wait_unit};

/// The Raspberry Pi's `bcm2835_wdt` maximum, the case the issue describes.
const TIMEOUT_S: f64 = 15.0;
/// How long the k3s stand-in takes to stop.
const K3S_STOP_S: f64 = 30.0;

const SLOW_K3S: &str = r#"#!/bin/sh
# Stopping takes 30 s, as k3s stopping its pods and containerd flushing. systemd's kill
# loop also signals processes that appear while it runs: TERM is ignored first, so the
# `date` and `sleep` forked here (which inherit that) are not killed before they finish.
trap 'trap "" TERM; date +%s.%N > /var/lib/nodemedic/k3s-stopping; sleep 30; date +%s.%N > /var/lib/nodemedic/k3s-stopped; exit 0' TERM
while :; do sleep 1 & wait $!; done
"#;

const SLOW_K3S_UNIT: &str = "[Unit]
Description=k3s stand-in: takes 30 s to stop
[Service]
Type=simple
ExecStart=/usr/local/bin/slow-k3s
TimeoutStopSec=90
[Install]
WantedBy=multi-user.target
";

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Watches the fake device from the host: the (wall) time of every keep-alive byte.
struct FeedWatch {
    feeds: Arc<Mutex<Vec<f64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FeedWatch {
    fn start(dev: PathBuf) -> FeedWatch {
        let feeds = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (feeds.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut len = fs::metadata(&dev).map(|m| m.len()).unwrap_or(0);
            while !s.load(Ordering::Relaxed) {
                let now = fs::metadata(&dev).map(|m| m.len()).unwrap_or(len);
                if now > len {
                    f.lock().unwrap().push(unix_now());
                    len = now;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        FeedWatch {
            feeds,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.feeds.lock().unwrap().clone()
    }
}

/// When a real timer fed at `feeds` would have reset the board: the first keep-alive
/// followed by a silence of a whole timeout.
fn reset_time(feeds: &[f64]) -> Option<f64> {
    let first = feeds.first()?;
    let mut last = *first;
    for f in &feeds[1..] {
        if f - last >= TIMEOUT_S {
            break;
        }
        last = *f;
    }
    Some(last + TIMEOUT_S)
}

#[test]
fn serial_a_graceful_reboot_under_owner_nodemedic_is_not_cut_short_by_the_watchdog_while_k3s_stops()
{
    if !nspawn::available() {
        return;
    }
    // Nothing answers on the kubelet's port while k3s runs: K3sUnresponsive, then (this
    // test's ladder) a reboot.
    let bed = Bed::new(
        &base_config(
            "[policy]\nboot_grace = \"0s\"\n\
             [policy.ladders]\nk3s_unresponsive = [\"reboot@0s\"]\n\
             [k3s]\ninterval = \"1s\"\nprobe_timeout = \"1s\"\nunresponsive_after = \"5s\"\n\
             [watchdog]\nowner = \"nodemedic\"\ndevice = \"/var/lib/nodemedic/watchdog\"\n\
             timeout = \"15s\"\n",
        ),
        SLOW_K3S_UNIT,
        &[("slow-k3s", SLOW_K3S)],
    );
    let dev = bed.state().join("watchdog");
    fs::write(&dev, b"").unwrap();
    let watch = FeedWatch::start(dev.clone());
    let mut m = bed.boot();
    wait_unit(&m, "k3s.service", "active");
    // The journal is gone with the container: keep its last copy for the report.
    let mut journal = String::new();
    let end = std::time::Instant::now() + Duration::from_secs(180);
    let st = loop {
        if let Some(st) = m.wait_exit(Duration::from_secs(1)) {
            break st;
        }
        assert!(
            std::time::Instant::now() < end,
            "the container did not reboot:\n{journal}"
        );
        let out = m.exec(&["journalctl", "-b", "-o", "short-precise", "--no-pager"]);
        if out.status.success() {
            journal = String::from_utf8_lossy(&out.stdout).into_owned();
        }
    };
    let exited = unix_now();
    let feeds = watch.finish();
    assert_eq!(st.code(), Some(EXIT_REBOOT), "{st}\n{}", m.console());
    assert_eq!(bed.audited("reboot", "done").len(), 1, "{:?}", bed.audit());

    let stopping = read_time(&bed.state().join("k3s-stopping"));
    let stopped = read_time(&bed.state().join("k3s-stopped"));
    assert!(stopped - stopping >= K3S_STOP_S - 1.0);
    let bytes = fs::read(&dev).unwrap();
    assert!(
        !bytes.contains(&b'V'),
        "the timer was disarmed (magic close) during nodemedic's own reboot"
    );
    let reset = reset_time(&feeds).expect("nodemedic never fed the watchdog");
    let report = format!(
        "k3s stopping at {stopping:.1}, stopped at {stopped:.1}; container gone at \
         {exited:.1}; keep-alives at {feeds:.1?}; a real {TIMEOUT_S} s timer resets at {reset:.1}"
    );
    eprintln!("{report}");
    if std::env::var_os("NODEMEDIC_TEST_CONSOLE").is_some() {
        eprintln!("{journal}");
    }
    let report = format!("{report}\nthe container's journal:\n{journal}");
    assert!(
        reset > stopped,
        "the watchdog would have reset the board before k3s stopped: {report}"
    );
    assert!(
        reset > exited,
        "the watchdog would have reset the board before the shutdown finished: {report}"
    );
}
