//! k3s itself under a real systemd (issue 20): a wedged-but-alive k3s restarted exactly
//! once, a crash-looping k3s reported with its last fatal line, a failed unit started again
//! once (not while paused), an operator's stop never fought, journal lines classified, and
//! nodemedic's reboot going through logind so a delay inhibitor gets its time.
//!
//! Real: systemd 252 as PID 1 in `systemd-nspawn` with its D-Bus system bus, journald and
//! logind; the packaged units and the test-built binary; `systemctl`, `systemd-cat`,
//! `systemd-inhibit`; the container's reboot. Stand-ins: `k3s.service` is not k3s but a
//! unit whose main process is a BusyBox `httpd` serving `/healthz` on the kubelet's port
//! 10248 (stopped with SIGSTOP to play a wedged kubelet), or a shell script that prints a
//! k3s fatal line and exits (a crash loop, a failed start).

use std::fs;

use super::support::nspawn::{self, EXIT_REBOOT, Machine, SHUTDOWN_TIMEOUT};
use super::support::nspawn_bed::{ADDR, Bed, WAIT, base_config, read_time, wait_unit};

/// A k3s stand-in whose main process serves the kubelet's healthz (BusyBox httpd, in the
/// foreground so it is the unit's main process).
const KUBELET_UNIT: &str = "[Unit]
Description=k3s stand-in: its main process answers the kubelet's /healthz
[Service]
Type=simple
ExecStartPre=/bin/sh -c 'mkdir -p /run/kubelet-www && echo ok > /run/kubelet-www/healthz && echo k3s stand-in starting'
ExecStart=/bin/busybox httpd -f -p 127.0.0.1:10248 -h /run/kubelet-www
[Install]
WantedBy=multi-user.target
";

fn metrics(m: &Machine) -> String {
    m.wait_for(WAIT, |m| {
        m.http_get(ADDR, "/metrics").filter(|(s, _)| *s == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "no /metrics from the daemon in the container ({}):\n{}",
            m.prop("nodemedic.service", "ActiveState"),
            m.journal("nodemedic.service")
        )
    })
    .1
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls the daemon's metrics until `series` has `value`.
fn wait_sample(m: &Machine, series: &str, value: f64) {
    let got = m.wait_for(WAIT, |m| {
        (sample(&metrics(m), series) == Some(value)).then_some(())
    });
    assert!(
        got.is_some(),
        "{series} never became {value}:\n{}\n{}",
        metrics(m),
        m.journal("nodemedic.service")
    );
}

/// The held conditions from /status.
fn conditions(m: &Machine) -> Vec<serde_json::Value> {
    let (_, body) = m.http_get(ADDR, "/status").expect("/status");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["conditions"].as_array().cloned().unwrap_or_default()
}

/// Waits until the k3s detector has run `passes` more times (its last-run time moved on).
fn wait_passes(m: &Machine, passes: u32) {
    wait_detector_passes(m, "k3s", passes)
}

/// Waits until `detector` has run `passes` more times (its last-run time moved on).
fn wait_detector_passes(m: &Machine, detector: &str, passes: u32) {
    let series =
        format!("nodemedic_detector_last_run_timestamp_seconds{{detector=\"{detector}\"}}");
    for _ in 0..passes {
        let t0 = sample(&metrics(m), &series).unwrap_or(0.0);
        let moved = m.wait_for(WAIT, |m| sample(&metrics(m), &series).filter(|t| *t > t0));
        assert!(moved.is_some(), "the {detector} detector stopped running");
    }
}

fn starts(m: &Machine) -> usize {
    m.journal("k3s.service")
        .lines()
        .filter(|l| l.contains("k3s stand-in starting"))
        .count()
}

fn signal(m: &Machine, pid: &str, sig: &str) {
    m.run(&["kill", &format!("-{sig}"), pid]);
}

#[test]
fn serial_a_wedged_kubelet_is_restarted_once_and_one_that_recovers_in_time_is_left_alone() {
    if !nspawn::available() {
        return;
    }
    let bed = Bed::new(
        &base_config(
            "[policy]\nboot_grace = \"0s\"\n[policy.ladders]\nk3s_unresponsive = [\"restart_k3s@0s\"]\n\
             [k3s]\ninterval = \"1s\"\nprobe_timeout = \"1s\"\nunresponsive_after = \"10s\"\n",
        ),
        KUBELET_UNIT,
        &[],
    );
    let m = bed.boot();
    wait_unit(&m, "nodemedic.service", "active");
    wait_unit(&m, "k3s.service", "active");
    let up = "nodemedic_k3s_probe_up{probe=\"kubelet\"}";
    wait_sample(&m, up, 1.0);

    // `nodemedic check` shows each probe's last answer.
    // In the container's network namespace too (Machine::exec does not enter it). Exit 0
    // or 1 (a problem held) both print the report.
    let check = m.exec(&[
        "nsenter",
        "-t",
        "1",
        "-n",
        "--",
        "nodemedic",
        "check",
        "--json",
    ]);
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = |item: &str| {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["item"] == item)
            .cloned()
            .unwrap_or_else(|| panic!("no {item} row:\n{out}"))
    };
    let kubelet = row("k3s probe kubelet");
    assert_eq!(kubelet["status"], "ok", "{kubelet}");
    assert!(kubelet["detail"].as_str().unwrap().contains("HTTP 200 ok"));
    let unit = row("k3s unit k3s.service");
    assert!(
        unit["detail"]
            .as_str()
            .unwrap()
            .starts_with("active/running"),
        "{unit}"
    );
    for probe in ["apiserver", "etcd", "pleg", "cri"] {
        row(&format!("k3s probe {probe}"));
    }

    // A kubelet stopped for a moment, then back before unresponsive_after: seen failing,
    // seen answering again, and nothing done.
    let pid = m.prop("k3s.service", "MainPID");
    signal(&m, &pid, "STOP");
    wait_sample(&m, up, 0.0);
    signal(&m, &pid, "CONT");
    wait_sample(&m, up, 1.0);
    wait_passes(&m, 3);
    assert!(
        bed.audited("restart_k3s", "done").is_empty(),
        "{:?}",
        bed.audit()
    );
    assert_eq!(starts(&m), 1);
    assert_eq!(m.prop("k3s.service", "MainPID"), pid);

    // Stopped for good: K3sUnresponsive after 10 s, then exactly one restart.
    signal(&m, &pid, "STOP");
    let restarted = m.wait_for(WAIT, |_| {
        (!bed.audited("restart_k3s", "done").is_empty()).then_some(())
    });
    assert!(
        restarted.is_some(),
        "no restart:\n{:?}\n{}",
        bed.audit(),
        m.journal("nodemedic.service")
    );
    let restart = &bed.audited("restart_k3s", "done")[0];
    assert_eq!(restart["problem"], "K3sUnresponsive", "{restart}");
    wait_unit(&m, "k3s.service", "active");
    let ok = m.wait_for(WAIT, |m| {
        (m.prop("k3s.service", "MainPID") != pid).then_some(())
    });
    assert!(ok.is_some(), "k3s was not restarted");
    wait_sample(&m, up, 1.0);
    wait_sample(
        &m,
        "nodemedic_condition{condition=\"K3sUnresponsive\"}",
        0.0,
    );
    wait_passes(&m, 3);
    assert_eq!(
        bed.audited("restart_k3s", "done").len(),
        1,
        "{:?}",
        bed.audit()
    );
    assert_eq!(starts(&m), 2, "{}", m.journal("k3s.service"));
}

/// Prints a k3s fatal line (as k3s's logrus does) with its pid, and fails.
const CRASH_SCRIPT: &str = r#"#!/bin/sh
echo "time=\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" level=fatal msg=\"starting kubernetes: preparing server: stand-in crash $$\""
exit 1
"#;

const CRASH_UNIT: &str = "[Unit]
Description=k3s stand-in that crashes at once, again and again
StartLimitIntervalSec=0
[Service]
Type=simple
ExecStart=/usr/local/bin/k3s-crash
Restart=always
RestartSec=500ms
[Install]
WantedBy=multi-user.target
";

#[test]
fn serial_a_crash_loop_is_reported_with_its_last_fatal_line_and_journal_lines_are_counted_only_from_root_or_the_unit()
 {
    if !nspawn::available() {
        return;
    }
    let bed = Bed::new(
        &base_config("[k3s]\ninterval = \"1s\"\nprobe_timeout = \"1s\"\n"),
        CRASH_UNIT,
        &[("k3s-crash", CRASH_SCRIPT)],
    );
    let m = bed.boot();
    wait_unit(&m, "nodemedic.service", "active");
    let looping = m.wait_for(WAIT, |m| {
        conditions(m)
            .into_iter()
            .find(|c| c["kind"] == "K3sCrashLooping")
    });
    let c = looping.unwrap_or_else(|| {
        panic!(
            "no K3sCrashLooping:\n{}\n{}",
            m.journal("nodemedic.service"),
            m.prop("k3s.service", "NRestarts")
        )
    });
    let message = c["message"].as_str().unwrap();
    assert!(
        message
            .contains("level=fatal msg=\"starting kubernetes: preparing server: stand-in crash "),
        "{c}"
    );
    assert!(
        m.journal("k3s.service").lines().any(|l| l == message),
        "the message is a line the unit printed: {message}"
    );
    // The packaged unit's system call filter lets the clock check read adjtimex(2).
    let (_, body) = m.http_get(ADDR, "/status").expect("/status");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let clock = &status["detectors"]["clock"]["info"];
    assert!(
        clock["error"].is_null() && clock["reading"].is_object(),
        "{clock}"
    );
    let n: u32 = m.prop("k3s.service", "NRestarts").parse().unwrap();
    assert!(n >= 5, "NRestarts {n}");
    assert!(bed.audited("restart_k3s", "done").is_empty());

    // Lines written with systemd-cat under k3s's identifier: root's count, a user's do not.
    let pleg = r#"E1121 17:35:41.123456     812 kubelet.go:2412] "Skipping pod synchronization" err="PLEG is not healthy: pleg was last seen active 3m5s ago; threshold is 3m0s""#;
    let etcd = r#"{"level":"warn","ts":"2025-11-21T17:35:41.123Z","caller":"wal/wal.go:805","msg":"slow fdatasync","took":"1.51s","expected-duration":"1s"}"#;
    m.run(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "systemd-cat",
        "-t",
        "k3s",
        "echo",
        etcd,
    ]);
    // The journal is read in order: once root's later PLEG line is counted, the user's
    // earlier etcd line has been read too, and must not have counted.
    m.run(&["systemd-cat", "-t", "k3s", "echo", pleg]);
    let pleg_series = "nodemedic_k3s_log_events_total{kind=\"kubelet_pleg_unhealthy\"}";
    let etcd_series = "nodemedic_k3s_log_events_total{kind=\"etcd_slow\"}";
    wait_sample(&m, pleg_series, 1.0);
    assert_eq!(sample(&metrics(&m), etcd_series), Some(0.0));
    m.run(&["systemd-cat", "-t", "k3s", "echo", etcd]);
    wait_sample(&m, etcd_series, 1.0);
    let text = metrics(&m);
    assert_eq!(sample(&text, pleg_series), Some(1.0), "{text}");
    assert!(
        sample(&text, "nodemedic_k3s_log_events_total{kind=\"fatal\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
}

/// Fails its first start (Restart=no leaves the unit failed), then serves healthz.
const FAIL_ONCE_SCRIPT: &str = r#"#!/bin/sh
if [ ! -e /run/k3s-failed-once ]; then
  touch /run/k3s-failed-once
  echo 'time="2025-11-21T17:35:41Z" level=fatal msg="stand-in: the first start fails"'
  exit 1
fi
mkdir -p /run/kubelet-www && echo ok > /run/kubelet-www/healthz
exec /bin/busybox httpd -f -p 127.0.0.1:10248 -h /run/kubelet-www
"#;

const FAIL_ONCE_UNIT: &str = "[Unit]
Description=k3s stand-in that fails its first start and then runs
[Service]
Type=simple
ExecStartPre=/bin/sh -c 'echo k3s stand-in starting'
ExecStart=/usr/local/bin/k3s-fail-once
Restart=no
[Install]
WantedBy=multi-user.target
";

#[test]
fn serial_a_failed_unit_is_started_once_not_while_paused_and_an_operators_stop_is_never_fought() {
    if !nspawn::available() {
        return;
    }
    let bed = Bed::new(
        &base_config(
            "[policy]\nboot_grace = \"0s\"\ncooldown = \"0s\"\npause_file = \"/var/lib/nodemedic/pause\"\n\
             [k3s]\ninterval = \"1s\"\nprobe_timeout = \"1s\"\nunresponsive_after = \"5s\"\n",
        ),
        FAIL_ONCE_UNIT,
        &[("k3s-fail-once", FAIL_ONCE_SCRIPT)],
    );
    // Paused from the start: the failure is seen and the start held back.
    fs::write(bed.state().join("pause"), "").unwrap();
    let m = bed.boot();
    wait_unit(&m, "nodemedic.service", "active");
    wait_unit(&m, "k3s.service", "failed");
    let held = m.wait_for(WAIT, |_| {
        bed.audited("reset_failed_k3s", "suppressed")
            .into_iter()
            .next()
    });
    let held = held.unwrap_or_else(|| panic!("not held:\n{:?}", bed.audit()));
    assert!(
        held["reason"].as_str().unwrap().contains("paused"),
        "{held}"
    );
    assert_eq!(held["problem"], "K3sUnitFailed");
    wait_passes(&m, 3);
    assert_eq!(m.prop("k3s.service", "ActiveState"), "failed");
    assert!(bed.audited("reset_failed_k3s", "done").is_empty());

    // Unpaused: one reset-failed + start, and k3s runs.
    fs::remove_file(bed.state().join("pause")).unwrap();
    let done = m.wait_for(WAIT, |_| {
        bed.audited("reset_failed_k3s", "done").into_iter().next()
    });
    assert!(done.is_some(), "{:?}", bed.audit());
    wait_unit(&m, "k3s.service", "active");
    wait_sample(&m, "nodemedic_k3s_probe_up{probe=\"kubelet\"}", 1.0);
    wait_sample(&m, "nodemedic_condition{condition=\"K3sUnitFailed\"}", 0.0);
    assert_eq!(starts(&m), 2);

    // An operator stops k3s: inactive with Result=success. Watched, never started again.
    let entries = bed.audit().len();
    m.run(&["systemctl", "stop", "k3s.service"]);
    assert_eq!(m.prop("k3s.service", "ActiveState"), "inactive");
    assert_eq!(m.prop("k3s.service", "Result"), "success");
    wait_sample(&m, "nodemedic_k3s_unit_state{state=\"inactive\"}", 1.0);
    // Longer than unresponsive_after, with a refused kubelet port all along.
    wait_passes(&m, 8);
    assert_eq!(m.prop("k3s.service", "ActiveState"), "inactive");
    assert_eq!(starts(&m), 2);
    let after: Vec<_> = bed.audit().into_iter().skip(entries).collect();
    assert!(
        after.is_empty(),
        "nodemedic acted on an operator's stop: {after:?}"
    );
    assert!(
        conditions(&m)
            .iter()
            .all(|c| c["kind"] != "K3sUnresponsive" && c["kind"] != "K3sUnitFailed"),
        "{:?}",
        conditions(&m)
    );
    assert_eq!(bed.audited("reset_failed_k3s", "done").len(), 1);
}

/// A k3s stand-in on a kine (sqlite) server: its datastore file exists, and once told to
/// (`/run/go`) it logs twelve kine `Slow SQL` lines among others, as k3s does.
const KINE_SCRIPT: &str = r#"#!/bin/sh
mkdir -p /var/lib/rancher/k3s/server/db
head -c 8192 /dev/zero > /var/lib/rancher/k3s/server/db/state.db
while [ ! -e /run/go ]; do sleep 0.2; done
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
  echo "time=\"2026-12-05T05:00:0${i}Z\" level=info msg=\"Slow SQL (started: 2026-12-05 05:00:00 +0000 UTC m=+1.0) (total time: 1.5s): SELECT COUNT(*) FROM kine\""
  echo "time=\"2026-12-05T05:00:0${i}Z\" level=info msg=\"an ordinary line $i\""
done
exec sleep infinity
"#;

const KINE_UNIT: &str = "[Unit]
Description=k3s stand-in on kine: logs Slow SQL lines
[Service]
Type=simple
ExecStart=/usr/local/bin/kine-k3s
[Install]
WantedBy=multi-user.target
";

#[test]
fn serial_kines_slow_sql_lines_are_counted_from_the_units_own_journal_and_raise_the_warning() {
    if !nspawn::available() {
        return;
    }
    let bed = Bed::new(
        &base_config("[k3s]\nkubelet_url = \"\"\n[kine]\ninterval = \"1s\"\n"),
        KINE_UNIT,
        &[("kine-k3s", KINE_SCRIPT)],
    );
    let m = bed.boot();
    wait_unit(&m, "k3s.service", "active");
    // The follower runs (it starts at the first pass that finds the database).
    wait_sample(&m, "nodemedic_kine_journal_up", 1.0);
    // The same words from another process (any local user can write to the journal with
    // its own identifier) are not k3s's: not counted.
    m.run(&[
        "systemd-cat",
        "-t",
        "k3s",
        "echo",
        "Slow SQL (started: x) (total time: 9s): forged",
    ]);
    m.run(&["touch", "/run/go"]);
    wait_sample(&m, "nodemedic_kine_slow_sql_total", 12.0);
    let raised = m.wait_for(WAIT, |m| {
        conditions(m)
            .into_iter()
            .find(|c| c["kind"] == "KineSlowSQL")
    });
    assert!(
        raised.is_some(),
        "{:?}\n{}",
        conditions(&m),
        m.journal("nodemedic.service")
    );
    // Still 12: the ordinary lines and the forged one were never delivered.
    wait_detector_passes(&m, "kine", 3);
    assert_eq!(
        sample(&metrics(&m), "nodemedic_kine_slow_sql_total"),
        Some(12.0)
    );
}

/// Holds a delay inhibitor for shutdown; once logind prepares a shutdown, keeps it 5 s
/// more (a kubelet stopping pods), noting both times in the state dir.
const HOLDER_SCRIPT: &str = r#"#!/bin/sh
exec systemd-inhibit --what=shutdown --mode=delay --who=test-kubelet --why="test: 5 s graceful node shutdown" sh -c '
while [ "$(busctl get-property org.freedesktop.login1 /org/freedesktop/login1 org.freedesktop.login1.Manager PreparingForShutdown)" != "b true" ]; do
  sleep 0.1
done
date +%s.%N > /var/lib/nodemedic/inhibitor-saw-shutdown
sleep 5
date +%s.%N > /var/lib/nodemedic/inhibitor-released
'
"#;

const SLEEP_UNIT: &str = "[Unit]
Description=k3s stand-in (a sleep)
[Service]
Type=simple
ExecStart=/bin/sleep infinity
[Install]
WantedBy=multi-user.target
";

#[test]
fn serial_nodemedics_reboot_goes_through_logind_and_waits_for_a_delay_inhibitor() {
    if !nspawn::available() {
        return;
    }
    // Nothing answers on the kubelet's port while k3s runs: K3sUnresponsive, then (this
    // test's ladder) a reboot. Paused until the inhibitor is in place.
    let bed = Bed::new(
        &base_config(
            "[policy]\nboot_grace = \"0s\"\npause_file = \"/var/lib/nodemedic/pause\"\n\
             [policy.ladders]\nk3s_unresponsive = [\"reboot@0s\"]\n\
             [k3s]\ninterval = \"1s\"\nprobe_timeout = \"1s\"\nunresponsive_after = \"5s\"\n",
        ),
        SLEEP_UNIT,
        &[("hold-inhibitor", HOLDER_SCRIPT)],
    )
    .with_etc(
        "logind.conf",
        "/etc/systemd/logind.conf.d/50-test.conf",
        "[Login]\nInhibitDelayMaxSec=30\n",
    );
    fs::write(bed.state().join("pause"), "").unwrap();
    let mut m = bed.boot();
    wait_unit(&m, "nodemedic.service", "active");
    wait_unit(&m, "systemd-logind.service", "active");
    m.run(&[
        "systemd-run",
        "--unit=inhibitor-holder",
        "/usr/local/bin/hold-inhibitor",
    ]);
    let listed = m.wait_for(WAIT, |m| {
        m.run(&["systemd-inhibit", "--list", "--no-pager"])
            .contains("test-kubelet")
            .then_some(())
    });
    assert!(listed.is_some(), "the inhibitor was not registered");
    let held = m.wait_for(WAIT, |_| {
        bed.audited("reboot", "suppressed").into_iter().next()
    });
    assert!(
        held.is_some(),
        "no reboot decision held by the pause:\n{:?}",
        bed.audit()
    );

    fs::remove_file(bed.state().join("pause")).unwrap();
    let saw = bed.state().join("inhibitor-saw-shutdown");
    let prepared = m.wait_for(WAIT, |_| saw.exists().then_some(()));
    assert!(
        prepared.is_some(),
        "logind never prepared a shutdown:\n{:?}",
        bed.audit()
    );
    let log = m.journal("nodemedic.service");
    assert!(log.contains("reboot requested from logind"), "{log}");
    let st = m.wait_exit(SHUTDOWN_TIMEOUT).expect("no reboot");
    assert_eq!(st.code(), Some(EXIT_REBOOT), "{st}\n{}", m.console());
    let released = read_time(&bed.state().join("inhibitor-released"));
    let saw = read_time(&saw);
    assert!(
        released - saw >= 5.0,
        "the inhibitor was not waited for: saw the shutdown at {saw}, released at {released}"
    );
    assert_eq!(bed.audited("reboot", "done").len(), 1, "{:?}", bed.audit());
}

/// One `nodemedic check --json` in the container; its k3s rows by item.
fn check_rows(m: &Machine) -> Vec<serde_json::Value> {
    let out = m.exec(&[
        "nsenter",
        "-t",
        "1",
        "-n",
        "--",
        "nodemedic",
        "check",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    v["rows"].as_array().unwrap().clone()
}

fn find_row<'a>(rows: &'a [serde_json::Value], item: &str) -> Option<&'a serde_json::Value> {
    rows.iter().find(|r| r["item"] == item)
}

#[test]
fn serial_a_grace_period_logind_would_cut_short_is_a_warning_with_the_fix_and_a_long_enough_one_is_not()
 {
    if !nspawn::available() {
        return;
    }
    let bed = Bed::new(
        &base_config("[k3s]\nkubelet_url = \"\"\nreadiness_after = \"0s\"\n"),
        SLEEP_UNIT,
        &[],
    )
    .with_etc(
        "k3s-config.yaml",
        "/etc/rancher/k3s/config.yaml",
        "write-kubeconfig-mode: \"0644\"\nkubelet-arg:\n  - shutdown-grace-period=30s\n  - shutdown-grace-period-critical-pods=10s\n",
    );
    let m = bed.boot();
    wait_unit(&m, "systemd-logind.service", "active");
    wait_unit(&m, "k3s.service", "active");

    // No inhibitor yet (no kubelet), and logind's default InhibitDelayMaxSec of 5 s.
    let rows = check_rows(&m);
    let r = find_row(&rows, "reboot readiness").unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(r["status"], "warn", "{r}");
    let detail = r["detail"].as_str().unwrap();
    assert!(detail.contains("no delay inhibitor"), "{detail}");
    assert!(
        detail.contains("InhibitDelayMaxSec is 5 s") && detail.contains("InhibitDelayMaxSec=30s"),
        "{detail}"
    );
    let c = find_row(&rows, "GracefulShutdownIneffective").unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(c["status"], "warn", "a warning, not a problem: {c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("/etc/rancher/k3s/config.yaml"),
        "{c}"
    );

    // A kubelet-like delay inhibitor, and logind waiting long enough: effective.
    m.run(&[
        "systemd-run",
        "--unit=kubelet-inhibitor",
        "systemd-inhibit",
        "--what=shutdown",
        "--mode=delay",
        "--who=kubelet",
        "--why=Kubelet needs time to handle node shutdown",
        "sleep",
        "infinity",
    ]);
    m.write_file(
        "/etc/systemd/logind.conf.d/99-kubelet.conf",
        "[Login]\nInhibitDelayMaxSec=30\n",
    );
    m.run(&["systemctl", "restart", "systemd-logind.service"]);
    wait_unit(&m, "systemd-logind.service", "active");
    let listed = m.wait_for(WAIT, |m| {
        m.run(&["systemd-inhibit", "--list", "--no-pager"])
            .contains("kubelet")
            .then_some(())
    });
    assert!(listed.is_some(), "the inhibitor is not registered");
    let rows = check_rows(&m);
    let r = find_row(&rows, "reboot readiness").unwrap();
    assert_eq!(r["status"], "ok", "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("graceful node shutdown 30 s"),
        "{r}"
    );
    assert!(
        find_row(&rows, "GracefulShutdownIneffective").is_none(),
        "{rows:#?}"
    );
}
