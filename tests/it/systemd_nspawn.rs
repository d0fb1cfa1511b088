//! The packaged systemd units under a real systemd (PID 1 in systemd-nspawn): notify
//! readiness, the k3s preflight drop-in, the service watchdog, `RestartPreventExitStatus=`,
//! the clean-shutdown marker across real reboots and power cuts, and whether the unit's
//! hardening leaves the daemon what it needs (kmsg, /proc, its state dir, and in act mode
//! `systemctl`, a lazy unmount in the host's mount namespace, and a reboot).
//!
//! Real: systemd 252 as PID 1, the repository's unit files and drop-ins installed under
//! `/usr/lib/systemd/system`, the test-built `nodemedic` binary, the host kernel's
//! `/dev/kmsg`, reboots and power cuts of the container. Stand-in: `k3s.service` is a
//! `sleep` with the packaged drop-in (no k3s here), and nothing is scraped by Prometheus.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::support::BIN;
use super::support::nspawn::{
    self, Boot, EXIT_REBOOT, Machine, SHUTDOWN_TIMEOUT, install_packaged_units,
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Where the test config makes the daemon listen, inside the container's own network.
const ADDR: &str = "127.0.0.1:9847";
const UNIT_WAIT: Duration = Duration::from_secs(30);

/// k3s's real unit lives in /etc/systemd/system; the package's drop-in must apply to it.
const K3S_STAND_IN: &str = "[Unit]
Description=k3s stand-in (a sleep; the packaged drop-in adds the preflight)
[Service]
Type=simple
ExecStart=/bin/sh -c 'echo \"k3s stand-in started\"; exec sleep infinity'
[Install]
WantedBy=multi-user.target
";

/// First boot enables units by preset: only ours, not whatever else this machine has.
const PRESET: &str = "enable nodemedic.service
enable nodemedic-clean-shutdown.service
enable k3s.service
disable *
";

/// Host-side files of one test container: the /usr overlay, /etc files, config, state.
struct Bed {
    dir: tempfile::TempDir,
}

impl Bed {
    /// `config` becomes /etc/nodemedic/config.toml; `dropin` a nodemedic.service drop-in
    /// (test-only settings such as a short WatchdogSec=, never in the shipped unit).
    fn new(config: &str, dropin: &str) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let usr = d.join("usr");
        fs::create_dir_all(usr.join("bin")).unwrap();
        fs::copy(BIN, usr.join("bin/nodemedic")).unwrap();
        install_packaged_units(&usr.join("lib/systemd/system"));
        fs::create_dir_all(d.join("etc")).unwrap();
        fs::create_dir_all(d.join("state")).unwrap();
        fs::write(d.join("etc/preset"), PRESET).unwrap();
        fs::write(d.join("etc/k3s.service"), K3S_STAND_IN).unwrap();
        fs::write(d.join("etc/dropin.conf"), dropin).unwrap();
        fs::write(d.join("etc/config.toml"), config).unwrap();
        Bed { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("etc/config.toml")
    }

    fn boot(&self) -> Machine {
        let d = self.dir.path();
        let e = |f: &str| d.join("etc").join(f);
        Machine::boot(&Boot {
            usr_upper: d.join("usr"),
            binds: vec![
                (
                    e("preset"),
                    "/etc/systemd/system-preset/00-nodemedic-test.preset".into(),
                    true,
                ),
                (
                    e("k3s.service"),
                    "/etc/systemd/system/k3s.service".into(),
                    true,
                ),
                (
                    e("dropin.conf"),
                    "/etc/systemd/system/nodemedic.service.d/50-test.conf".into(),
                    true,
                ),
                (e("config.toml"), "/etc/nodemedic/config.toml".into(), false),
                (self.state(), "/var/lib/nodemedic".into(), false),
            ],
            overlays: vec![],
        })
    }
}

/// Waits until the unit is `active (running)`.
fn wait_running(m: &Machine, unit: &str) {
    let ok = m.wait_for(UNIT_WAIT, |m| {
        (m.prop(unit, "ActiveState") == "active" && m.prop(unit, "SubState") == "running")
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "{unit} is not running: {}\n{}",
        m.prop(unit, "ActiveState"),
        m.journal(unit)
    );
}

fn metrics(m: &Machine) -> String {
    let got = m.wait_for(UNIT_WAIT, |m| {
        m.http_get(ADDR, "/metrics").filter(|(s, _)| *s == 200)
    });
    got.expect("no /metrics from the daemon in the container").1
}

/// The value of one series (exact name and labels) in OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn boot_id(m: &Machine) -> String {
    m.run(&["cat", "/proc/sys/kernel/random/boot_id"])
        .trim()
        .to_string()
}

/// The capability bits the unit keeps (linux/capability.h numbers).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_BOOT: u32 = 22;
const CAP_SYSLOG: u32 = 34;

fn status_field(m: &Machine, pid: &str, field: &str) -> String {
    let status = m.run(&["cat", &format!("/proc/{pid}/status")]);
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

#[test]
fn serial_systemd_starts_the_packaged_daemon_by_notify_and_its_sandbox_still_reads_kmsg_proc_and_state()
 {
    if !nspawn::available() {
        return;
    }
    let bed = Bed::new(
        // A watched path: the D-state census (a walk over every task's /proc files, which
        // the hardening must allow) runs on the first watched pass.
        &format!("listen = \"{ADDR}\"\n[mounts]\npaths = [\"/run\"]\n"),
        "",
    );
    let m = bed.boot();
    wait_running(&m, "nodemedic.service");
    // Type=notify: "active" means systemd got READY=1, and STATUS= is the daemon's.
    assert_eq!(m.prop("nodemedic.service", "Type"), "notify");
    let status = m.prop("nodemedic.service", "StatusText");
    assert!(status.starts_with("observe mode: watching"), "{status}");

    // The stand-in k3s ran the packaged preflight before its own start.
    wait_running(&m, "k3s.service");
    let k3s = m.journal("k3s.service");
    let pre = k3s.find("preflight").unwrap_or_else(|| panic!("{k3s}"));
    let started = k3s
        .find("k3s stand-in started")
        .unwrap_or_else(|| panic!("{k3s}"));
    assert!(
        pre < started,
        "preflight must run before k3s starts:\n{k3s}"
    );
    let report = fs::read_to_string(bed.state().join("preflight.json"))
        .expect("the preflight report in the state dir");
    assert!(report.contains(&boot_id(&m)), "{report}");

    // The sandbox leaves the daemon the host's mount namespace (for umount2 in act mode)
    // and exactly the capabilities the unit documents.
    let pid = m.prop("nodemedic.service", "MainPID");
    let ns = |p: &str| m.run(&["readlink", &format!("/proc/{p}/ns/mnt")]);
    assert_eq!(
        ns(&pid),
        ns("1"),
        "the daemon must share PID 1's mount namespace"
    );
    assert_eq!(status_field(&m, &pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(&m, &pid, "Seccomp"), "2");
    let want: u64 = [
        CAP_DAC_READ_SEARCH,
        CAP_SYS_PTRACE,
        CAP_SYS_ADMIN,
        CAP_SYS_BOOT,
        CAP_SYSLOG,
    ]
    .iter()
    .map(|b| 1u64 << b)
    .sum();
    let bnd = u64::from_str_radix(&status_field(&m, &pid, "CapBnd"), 16).unwrap();
    assert_eq!(bnd, want, "CapBnd {bnd:x}, want {want:x}");

    // This container enforces device ACLs (a closed policy refuses /dev/kmsg)...
    let denied = m.exec(&[
        "systemd-run",
        "--quiet",
        "--wait",
        "--pipe",
        "-p",
        "DevicePolicy=closed",
        "dd",
        "if=/dev/kmsg",
        "of=/dev/null",
        "bs=8192",
        "count=1",
        "iflag=nonblock",
    ]);
    assert!(
        !denied.status.success(),
        "device ACLs are not enforced here, so the next check would prove nothing: {denied:?}"
    );
    // ...and still the daemon reads the kernel log, /proc and writes its state dir.
    let first = metrics(&m);
    assert!(
        sample(&first, "nodemedic_kmsg_records_total").unwrap_or(0.0) > 0.0,
        "no kernel records read through the unit's device ACL:\n{first}"
    );
    assert_eq!(
        sample(&first, "nodemedic_condition{condition=\"KernelLogBlind\"}"),
        Some(0.0)
    );
    assert!(sample(&first, "nodemedic_memory_available_bytes").unwrap_or(0.0) > 0.0);
    assert!(sample(&first, "nodemedic_dstate_tasks{wait=\"other\"}").is_some());
    for det in ["kernel", "memory", "mounts"] {
        let series = format!("nodemedic_detector_last_run_timestamp_seconds{{detector=\"{det}\"}}");
        let t0 = sample(&first, &series).unwrap_or_else(|| panic!("no {series}:\n{first}"));
        let advanced = m.wait_for(UNIT_WAIT, |m| {
            sample(&metrics(m), &series).filter(|t| *t > t0)
        });
        assert!(advanced.is_some(), "detector {det} did not run again");
    }
    let (code, body) = m.http_get(ADDR, "/status").expect("/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["healthy"], true, "{status}");
    // The clock health check reads adjtimex(2) inside the unit's system call filter.
    let clock = &status["detectors"]["clock"]["info"];
    assert!(
        clock["error"].is_null() && clock["reading"].is_object(),
        "{clock}"
    );
    for f in ["state.json", "daemon.lock"] {
        assert!(bed.state().join(f).exists(), "no {f} in the state dir");
    }
}

#[test]
fn serial_systemd_restarts_the_daemon_when_a_stuck_loop_stops_its_keepalives_but_not_after_a_config_error()
 {
    if !nspawn::available() {
        return;
    }
    // stuck_after at its minimum; every detector interval must stay below it, or a detector
    // idling between passes would count as stuck.
    let config = format!(
        "listen = \"{ADDR}\"\n[health]\nstuck_after = \"5s\"\n[mounts]\ninterval = \"2s\"\n"
    );
    let bed = Bed::new(&config, "[Service]\nWatchdogSec=2s\nRestartSec=500ms\n");
    let m = bed.boot();
    wait_running(&m, "nodemedic.service");
    assert_eq!(m.prop("nodemedic.service", "WatchdogUSec"), "2s");
    assert_eq!(m.prop("nodemedic.service", "NRestarts"), "0");

    // A real stuck loop: the memory detector opens <watched_cgroup>/memory.pressure, here a
    // FIFO nobody writes, so open(2) blocks in the kernel for good.
    m.run(&["mkdir", "-p", "/run/stuck-cgroup"]);
    m.run(&["mkfifo", "/run/stuck-cgroup/memory.pressure"]);
    fs::write(
        bed.config(),
        format!("{config}[memory]\nwatched_cgroup = \"/run/stuck-cgroup\"\n"),
    )
    .unwrap();
    m.run(&["systemctl", "restart", "nodemedic.service"]);
    let stuck_pid = m.prop("nodemedic.service", "MainPID");
    let restarted = m.wait_for(UNIT_WAIT, |m| {
        (m.prop("nodemedic.service", "NRestarts") != "0").then_some(())
    });
    let log = m.journal("nodemedic.service");
    assert!(restarted.is_some(), "no watchdog restart:\n{log}");
    assert!(log.contains("detector:memory"), "{log}");
    assert!(log.contains("Watchdog timeout"), "{log}");
    assert!(log.contains("Failed with result 'watchdog'"), "{log}");
    assert_ne!(m.prop("nodemedic.service", "MainPID"), stuck_pid);

    // A config error exits 78 and is not restarted: a typo must not become a restart loop.
    fs::write(bed.config(), "mode = \"sometimes\"\n").unwrap();
    m.run(&["systemctl", "reset-failed", "nodemedic.service"]);
    let start = m.exec(&["systemctl", "restart", "nodemedic.service"]);
    assert!(!start.status.success(), "a bad config must fail the start");
    let failed = m.wait_for(UNIT_WAIT, |m| {
        (m.prop("nodemedic.service", "ActiveState") == "failed").then_some(())
    });
    assert!(failed.is_some(), "{}", m.journal("nodemedic.service"));
    assert_eq!(m.prop("nodemedic.service", "ExecMainStatus"), "78");
    let restarts = m.prop("nodemedic.service", "NRestarts");
    // RestartSec=500ms: a restart would have happened within 3 s.
    let came_back = m.wait_for(Duration::from_secs(3), |m| {
        (m.prop("nodemedic.service", "ActiveState") != "failed").then_some(())
    });
    assert!(came_back.is_none(), "restarted after exit 78");
    assert_eq!(m.prop("nodemedic.service", "NRestarts"), restarts);
}

/// The shipped unit's sandbox: every [Service] line except how the daemon is started and
/// supervised. A probe unit with these lines runs what act mode runs, with the same limits.
fn sandbox_of(unit: &str) -> Vec<String> {
    const LIFECYCLE: [&str; 9] = [
        "Type=",
        "NotifyAccess=",
        "ExecStart=",
        "WatchdogSec=",
        "Restart=",
        "RestartSec=",
        "RestartPreventExitStatus=",
        "TimeoutStartSec=",
        "TimeoutStopSec=",
    ];
    let mut out = Vec::new();
    let mut in_service = false;
    for l in unit.lines().map(str::trim) {
        if l.starts_with('[') {
            in_service = l == "[Service]";
            continue;
        }
        if !in_service || l.is_empty() || l.starts_with('#') {
            continue;
        }
        if !LIFECYCLE.iter().any(|k| l.starts_with(k)) {
            out.push(l.to_string());
        }
    }
    out
}

fn probe_unit(sandbox: &[String], commands: &[&str]) -> String {
    let mut u = String::from(
        "[Unit]\nDescription=act-mode commands inside nodemedic.service's sandbox\n[Service]\nType=oneshot\n",
    );
    for l in sandbox {
        u.push_str(l);
        u.push('\n');
    }
    for c in commands {
        u.push_str(&format!("ExecStart={c}\n"));
    }
    u
}

#[test]
fn serial_the_daemons_sandbox_can_restart_k3s_unmount_on_the_host_and_reboot_and_reboots_are_judged_clean_or_unclean()
 {
    if !nspawn::available() {
        return;
    }
    let unit = fs::read_to_string(Path::new(REPO).join("systemd/nodemedic.service")).unwrap();
    let sandbox = sandbox_of(&unit);
    assert!(sandbox.iter().any(|l| l.starts_with("SystemCallFilter=")));
    let bed = Bed::new(&format!("listen = \"{ADDR}\"\n"), "");
    let mut m = bed.boot();
    wait_running(&m, "nodemedic.service");
    wait_running(&m, "k3s.service");
    let boot1 = boot_id(&m);

    // In the sandbox: restart k3s through PID 1, lazily unmount a mount of PID 1's namespace.
    m.run(&["mkdir", "-p", "/run/probe-mount"]);
    m.run(&["mount", "-t", "tmpfs", "probe", "/run/probe-mount"]);
    let k3s_before = m.prop("k3s.service", "InvocationID");
    m.write_file(
        "/etc/systemd/system/nodemedic-act-probe.service",
        &probe_unit(
            &sandbox,
            &[
                "/usr/bin/systemctl restart k3s.service",
                "/usr/bin/umount --lazy /run/probe-mount",
            ],
        ),
    );
    m.run(&["systemctl", "daemon-reload"]);
    let probe = m.exec(&["systemctl", "start", "nodemedic-act-probe.service"]);
    assert!(
        probe.status.success(),
        "act-mode commands failed in the sandbox:\n{}",
        m.journal("nodemedic-act-probe.service")
    );
    assert_ne!(m.prop("k3s.service", "InvocationID"), k3s_before);
    wait_running(&m, "k3s.service");
    let host_mounts = m.run(&["cat", "/proc/1/mountinfo"]);
    assert!(
        !host_mounts.contains("/run/probe-mount"),
        "the lazy unmount did not reach PID 1's namespace:\n{host_mounts}"
    );

    // A stop that is not a shutdown writes no marker; then a real reboot does.
    m.run(&["systemctl", "stop", "nodemedic-clean-shutdown.service"]);
    assert!(
        m.journal("nodemedic-clean-shutdown.service")
            .contains("not a system shutdown")
    );
    assert!(!bed.state().join("clean-shutdown.json").exists());
    m.run(&["systemctl", "start", "nodemedic-clean-shutdown.service"]);
    m.write_file(
        "/etc/systemd/system/nodemedic-reboot-probe.service",
        &probe_unit(&sandbox, &["/usr/bin/systemctl reboot"]),
    );
    m.run(&["systemctl", "daemon-reload"]);
    let _ = m.exec(&[
        "systemctl",
        "start",
        "--no-block",
        "nodemedic-reboot-probe.service",
    ]);
    let st = m.wait_exit(SHUTDOWN_TIMEOUT).expect("no reboot");
    assert_eq!(st.code(), Some(EXIT_REBOOT), "{st}\n{}", m.console());
    let marker = fs::read_to_string(bed.state().join("clean-shutdown.json"))
        .expect("the clean-shutdown marker after a reboot");
    assert!(marker.contains(&boot1), "{marker} should name boot {boot1}");
    drop(m);

    // Next boot: judged clean. Then a power cut: the boot after counts it.
    let mut m = bed.boot();
    wait_running(&m, "nodemedic.service");
    assert!(m.journal("nodemedic.service").contains("shut down cleanly"));
    assert_eq!(
        sample(&metrics(&m), "nodemedic_unclean_shutdowns_total"),
        Some(0.0)
    );
    m.power_cut();
    drop(m);
    let m = bed.boot();
    wait_running(&m, "nodemedic.service");
    assert!(
        m.journal("nodemedic.service")
            .contains("WITHOUT a clean shutdown")
    );
    assert_eq!(
        sample(&metrics(&m), "nodemedic_unclean_shutdowns_total"),
        Some(1.0)
    );
}
