//! The policy loop inside the real daemon: the hardware watchdog protocol against a fake
//! device file (a regular file: the keep-alive ioctl gives ENOTTY, so keep-alives are
//! written bytes, and a clean stop writes the magic 'V'), and a real reboot through the
//! daemon run as PID 1 of a child PID namespace, where reboot(2) only ends the namespace.
//!
//! Real: the binary, /dev/kmsg, reboot(2), the audit/state files. Stand-ins: the watchdog
//! device (a file), the graceful reboot command (a shell line that records it ran), the
//! boot id (a fixture host root, so a "reboot" can change it).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::kernel_kmsg::kmsg_write;
use super::support::hangfs::HangFs;
use super::support::{Daemon, http_get, is_root, poll, require, set_boot_id};

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn watchdog_config(dev: &Path) -> String {
    format!(
        "[watchdog]\nowner = \"nodemedic\"\ndevice = \"{}\"\ntimeout = \"3s\"\n",
        dev.display()
    )
}

#[test]
fn the_fake_watchdog_device_is_fed_while_healthy_and_magic_closed_on_a_clean_stop() {
    let dev_dir = tempfile::tempdir().unwrap();
    let dev = dev_dir.path().join("watchdog");
    std::fs::write(&dev, b"").unwrap();
    let cfg = format!(
        "{}[kernel]\nenabled = false\n[mounts]\nenabled = false\n[memory]\nenabled = false\n",
        watchdog_config(&dev)
    );
    let mut d = Daemon::start(&cfg, &[]);
    // Timeout 3 s: a keep-alive every second.
    assert!(
        poll(Duration::from_secs(10), || (file_len(&dev) >= 3)
            .then_some(()))
        .is_some(),
        "keep-alives written: {} bytes; log:\n{}",
        file_len(&dev),
        d.log.join("\n")
    );
    let bytes = std::fs::read(&dev).unwrap();
    assert!(bytes.iter().all(|b| *b == 0), "keep-alives are NUL bytes");
    let m = d.metrics();
    assert!(m.contains("nodemedic_watchdog_timeout_seconds 3"), "{m}");
    let last: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("nodemedic_watchdog_last_keepalive_timestamp_seconds "))
        .expect("last keep-alive series")
        .parse()
        .unwrap();
    assert!(last > 1.6e9, "{last}");
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    let bytes = std::fs::read(&dev).unwrap();
    assert_eq!(bytes.last(), Some(&b'V'), "magic close on a clean stop");
}

#[test]
fn serial_keepalives_to_the_fake_watchdog_stop_once_a_loop_is_stuck() {
    if !require(
        is_root() && Path::new("/dev/fuse").exists(),
        "root and /dev/fuse",
    ) {
        return;
    }
    let hang_dir = tempfile::tempdir().unwrap();
    let fs = HangFs::mount(hang_dir.path()).unwrap();
    let dev_dir = tempfile::tempdir().unwrap();
    let dev = dev_dir.path().join("watchdog");
    std::fs::write(&dev, b"").unwrap();
    // The memory detector reads <watched_cgroup>/memory.pressure: on the hung mount.
    let cfg = format!(
        "{}[health]\nstuck_after = \"5s\"\n[mounts]\nenabled = false\n[kernel]\nenabled = false\n[memory]\nwatched_cgroup = \"{}\"\n",
        watchdog_config(&dev),
        fs.path().display()
    );
    let mut d = Daemon::start(&cfg, &[]);
    assert!(
        poll(Duration::from_secs(20), || (d.get("/healthz").status
            == 503)
            .then_some(()))
        .is_some(),
        "the loop must be seen stuck"
    );
    // Whatever was in flight has landed after one feed period; then nothing more.
    std::thread::sleep(Duration::from_millis(1500));
    let before = file_len(&dev);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        file_len(&dev),
        before,
        "no keep-alive once a loop is stuck (timeout 3 s: the board would reset)"
    );
    assert!(before >= 1, "it was fed before the loop got stuck");
    d.signal(Signal::SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(5));
    drop(fs);
}

/// A host root whose boot id the test controls; /dev/kmsg is the real one.
fn fixture_root(root: &Path, boot: &str) {
    set_boot_id(root, boot);
    std::fs::create_dir_all(root.join("dev")).unwrap();
    let kmsg = root.join("dev/kmsg");
    if !kmsg.exists() {
        std::os::unix::fs::symlink("/dev/kmsg", kmsg).unwrap();
    }
}

const STALL: &str = "<3>rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:";

#[test]
fn serial_an_act_mode_reboot_through_the_daemon_persists_first_and_the_next_boot_keeps_budget_and_audit()
 {
    let have_unshare = Command::new("unshare").arg("--version").output().is_ok();
    if !require(
        is_root() && Path::new("/dev/kmsg").exists() && have_unshare,
        "root, /dev/kmsg and unshare",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fixture_root(&root, "boot-a");
    let state = dir.path().join("state");
    let graceful = dir.path().join("graceful");
    // The graceful command proves ordering: it runs after the persist step, and records
    // whether the reboot's audit record was already on disk.
    let graceful_cmd = format!(
        "grep -q '\"action\":\"reboot\"' {audit} && echo audit-was-on-disk >> {g} || echo audit-missing >> {g}",
        audit = state.join("audit.jsonl").display(),
        g = graceful.display()
    );
    let act = format!(
        "mode = \"act\"\nhost_root = \"{}\"\n\
         [kernel]\naccept_non_kernel_facilities = true\n[memory]\nenabled = false\n\
         [mounts]\nenabled = false\n[kubernetes]\nenabled = false\n\
         [policy]\nboot_grace = \"0s\"\n[policy.ladders]\nkernel_rcu_stall = [\"reboot@0s\"]\n\
         [remedy]\nreboot_command = [\"/bin/sh\", \"-c\", {:?}]\nreboot_deadline = \"1s\"\n",
        root.display(),
        graceful_cmd
    );
    // PID 1 of a new PID namespace: reboot(2) there only ends the namespace.
    let mut d = Daemon::start_wrapped(
        dir,
        &act,
        &[(nodemedic::remedy::rebooter::ONLY_AS_PIDNS_INIT_ENV, "1")],
        &["unshare", "--pid", "--fork", "--kill-child"],
    );
    kmsg_write(STALL);
    let status = d
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no reboot within the deadline; log:\n{}", d.log.join("\n")));
    let log = d.log.clone();
    use std::os::unix::process::ExitStatusExt;
    // reboot(2) in a PID namespace kills its init with SIGHUP; unshare passes it on.
    assert!(
        status.signal() == Some(libc::SIGHUP) || status.code() == Some(128 + libc::SIGHUP),
        "{status:?}; log:\n{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.contains("REBOOTING the node")),
        "{}",
        log.join("\n")
    );
    assert_eq!(
        std::fs::read_to_string(&graceful).unwrap().trim(),
        "audit-was-on-disk",
        "graceful request ran once, after the audit record was on disk"
    );
    let audit = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let reboot: serde_json::Value = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["action"] == "reboot")
        .expect("reboot audit entry");
    assert_eq!(reboot["outcome"], "done");
    assert_eq!(reboot["problem"], "KernelRCUStall");
    assert_eq!(reboot["boot_id"], "boot-a");
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("state.json")).unwrap()).unwrap();
    assert_eq!(st["reboots"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["counters"]["reboots:KernelRCUStall"], 1, "{st}");

    // The next boot: a new boot id, same state directory, observe mode.
    fixture_root(&root, "boot-b");
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    let mut d = Daemon::start_in(
        dir,
        &format!(
            "host_root = \"{}\"\n[memory]\nenabled = false\n[mounts]\nenabled = false\n[kubernetes]\nenabled = false\n",
            root.display()
        ),
        &[],
    );
    let m = d
        .wait_metrics(Duration::from_secs(10), |m| {
            m.contains("nodemedic_reboot_budget_remaining")
        })
        .unwrap();
    assert!(m.contains("nodemedic_reboot_budget_remaining 2"), "{m}");
    assert!(
        m.contains("nodemedic_reboots_total{reason=\"KernelRCUStall\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("nodemedic_unclean_shutdowns_total 1"),
        "the namespace reboot wrote no clean-shutdown marker: {m}"
    );
    let audit_after = std::fs::read_to_string(d.state_dir().join("audit.jsonl")).unwrap();
    assert!(
        audit_after.starts_with(&audit),
        "the audit trail survived the reboot"
    );
    assert!(
        d.wait_log("follows the reboot nodemedic made", Duration::from_secs(5))
            .is_some(),
        "the new boot knows it follows our reboot"
    );
    let s = http_get(&d.addr, "/status");
    assert_eq!(s.status, 200);
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}
