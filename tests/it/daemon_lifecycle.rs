//! The real binary as systemd runs it: readiness, keep-alives, endpoints, clean stop.

use crate::support::{Daemon, NotifySocket, http_request};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

#[test]
fn metrics_healthz_and_status_answer_on_a_fresh_daemon() {
    let d = Daemon::start("", &[]);
    let m = d.metrics();
    for want in [
        "nodemedic_build_info{version=\"",
        "nodemedic_up 1",
        "nodemedic_condition{condition=\"KernelRCUStall\"} 0",
        "# EOF",
    ] {
        assert!(m.contains(want), "missing {want}:\n{m}");
    }
    let r = d.get("/metrics");
    assert!(
        r.headers.contains("application/openmetrics-text"),
        "{}",
        r.headers
    );
    let h = d.get("/healthz");
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
    let s = d.status();
    assert_eq!(s["info"]["mode"], "observe");
    assert_eq!(s["healthy"], true);
    assert!(
        s["persisted"]["boot_id"].as_str().unwrap().len() >= 32,
        "{s}"
    );
    assert_eq!(d.get("/nope").status, 404);
}

#[test]
fn the_endpoint_refuses_every_write_method() {
    let d = Daemon::start("", &[]);
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = http_request(&d.addr, m, "/status");
        assert_eq!(r.status, 405, "{m}");
        assert!(
            r.headers.to_lowercase().contains("allow: get, head"),
            "{}",
            r.headers
        );
    }
}

#[test]
fn readiness_and_watchdog_keepalives_reach_the_notify_socket_and_sigterm_stops_cleanly() {
    let sock = NotifySocket::bind();
    let path = sock.path.to_str().unwrap().to_string();
    // 600 ms WatchdogSec: keep-alives every 300 ms.
    let mut d = Daemon::start("", &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "600000")]);
    let first = sock.recv(Duration::from_secs(10)).expect("no notification");
    assert_eq!(
        first, "READY=1",
        "READY=1 must come first, after the endpoint listens"
    );
    // The endpoint is already up when READY=1 has been sent.
    assert_eq!(d.get("/healthz").status, 200);
    let msgs = sock.collect(Duration::from_millis(1500));
    let keepalives = msgs.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(keepalives >= 3, "expected steady keep-alives, got {msgs:?}");
    assert!(
        msgs.iter().any(|m| m.starts_with("STATUS=observe mode")),
        "{msgs:?}"
    );

    let t0 = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("did not stop within 5 s");
    assert!(status.success(), "{status:?}\n{}", d.log.join("\n"));
    assert!(t0.elapsed() < Duration::from_secs(5));
    let rest = sock.collect(Duration::from_millis(100));
    assert!(rest.iter().any(|m| m == "STOPPING=1"), "{rest:?}");
    assert!(
        d.log.iter().any(|l| l.contains("stopped cleanly")),
        "{}",
        d.log.join("\n")
    );
}

#[test]
fn sigint_also_stops_cleanly_and_state_is_saved() {
    let mut d = Daemon::start("", &[]);
    d.signal(Signal::SIGINT);
    assert!(
        d.wait_exit(Duration::from_secs(5))
            .expect("no exit")
            .success()
    );
    let state = std::fs::read_to_string(d.state_dir().join("state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert!(v["last_seen_unix"].as_u64().unwrap() > 1_600_000_000);
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let d = Daemon::start("", &[]);
    let cfg = d.dir.path().join("config.toml");
    let (code, _, err) = crate::support::run_cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another nodemedic daemon"), "{err}");
}

#[test]
fn a_busy_listen_port_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n",
            dir.path().join("s").display()
        ),
    )
    .unwrap();
    let (code, _, err) = crate::support::run_cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("set `listen`"), "{err}");
}

/// Issue 18, point 7: SIGHUP, SIGUSR1, SIGUSR2 and SIGALRM end a process by default; the
/// daemon ignores them (no live reload: a config change needs a restart) and keeps serving.
/// Before the fix the first `kill -HUP` stopped it.
#[test]
fn hup_usr1_usr2_and_alrm_leave_the_daemon_running_and_serving() {
    let mut d = Daemon::start("", &[]);
    assert_eq!(d.get("/healthz").status, 200);
    for sig in [
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGALRM,
    ] {
        for _ in 0..3 {
            d.signal(sig);
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "{sig:?} stopped the daemon:\n{}",
            d.log.join("\n")
        );
        assert!(d.metrics().contains("nodemedic_up 1"), "after {sig:?}");
        assert_eq!(d.get("/healthz").status, 200, "after {sig:?}");
    }
    // SIGTERM still stops it cleanly.
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(5)).expect("no exit");
    assert!(status.success(), "{status:?}\n{}", d.log.join("\n"));
}
