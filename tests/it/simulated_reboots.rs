//! Simulated reboots: the host root is a fixture whose `boot_id` the test changes, so the
//! daemon sees a new boot each time. What must survive (persisted counters, the audit
//! trail) survives, and a boot that ended without the clean-shutdown marker is counted.

use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;

use super::kernel_kmsg::metric;
use super::support::{Daemon, run_cli, set_boot_id as boot};

fn config(root: &Path) -> String {
    // Only what the fixture root can serve: no kmsg, no PSI, no mounts.
    format!(
        "host_root = \"{}\"\n[kernel]\nenabled = false\n[memory]\nenabled = false\n[mounts]\nenabled = false\n",
        root.display()
    )
}

fn run_once(dir: tempfile::TempDir, root: &Path) -> (tempfile::TempDir, String, serde_json::Value) {
    let mut d = Daemon::start_in(dir, &config(root), &[]);
    let m = d.metrics();
    let s = d.status();
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(5)).unwrap().success());
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    (dir, m, s)
}

#[test]
fn unclean_shutdowns_are_counted_across_simulated_reboots_and_state_survives() {
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    boot(root.path(), "boot-a");
    let (dir, m, _) = run_once(dir, root.path());
    assert_eq!(metric(&m, "nodemedic_unclean_shutdowns_total"), 0.0);

    // Power cut: no marker, new boot.
    boot(root.path(), "boot-b");
    let (dir, m, s) = run_once(dir, root.path());
    assert_eq!(metric(&m, "nodemedic_unclean_shutdowns_total"), 1.0);
    assert_eq!(s["persisted"]["last_shutdown_clean"], false);
    assert_eq!(s["persisted"]["previous_boot_id"], "boot-a");

    // A clean shutdown of boot b, as the shutdown unit records it.
    let cfg = dir.path().join("config.toml");
    let (code, _, err) = run_cli(&["shutdown-marker", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("boot-b"), "{err}");

    boot(root.path(), "boot-c");
    let (dir, m, s) = run_once(dir, root.path());
    assert_eq!(
        metric(&m, "nodemedic_unclean_shutdowns_total"),
        1.0,
        "a clean shutdown is not counted"
    );
    assert_eq!(s["persisted"]["last_shutdown_clean"], true);

    // A plain daemon restart within boot c is not a reboot at all.
    let (dir, m, s) = run_once(dir, root.path());
    assert_eq!(metric(&m, "nodemedic_unclean_shutdowns_total"), 1.0);
    assert_eq!(s["persisted"]["boot_id"], "boot-c");
    assert!(state.join("state.json").exists());
    drop(dir);
}
