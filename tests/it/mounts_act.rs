//! Lazy unmount through the daemon's policy loop on a real hung FUSE mount: in act mode
//! (action switched on) the mount is detached, new lookups answer at once and the audit
//! says so; in observe mode the same decision is only recorded. The daemon watches only the
//! test's own mount (`fstypes = []`, `paths = [...]`) so no other mount on the machine is
//! touched. Needs root and /dev/fuse.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::support::hangfs::HangFs;
use super::support::{Daemon, is_root, poll, require};

fn config(mode: &str, mount: &Path) -> String {
    format!(
        "mode = \"{mode}\"\n[kernel]\nenabled = false\n[memory]\nenabled = false\n\
         [kubernetes]\nenabled = false\n\
         [mounts]\ninterval = \"1s\"\nprobe_timeout = \"1s\"\nfstypes = []\npaths = [\"{}\"]\n\
         [actions.unmount]\nenabled = true\n\
         [policy]\nboot_grace = \"0s\"\n[policy.ladders]\nnetwork_mount_hung = [\"unmount@0s\"]\n",
        mount.display()
    )
}

fn mounted(p: &Path) -> bool {
    let want = p.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

fn audit_line(d: &Daemon, action: &str, outcome: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(d.state_dir().join("audit.jsonl")).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["action"] == action && e["outcome"] == outcome)
}

#[test]
fn serial_act_mode_lazily_unmounts_a_hung_mount_and_observe_mode_only_reports() {
    if !require(
        is_root() && Path::new("/dev/fuse").exists(),
        "root and /dev/fuse",
    ) {
        return;
    }
    // Observe mode first: the decision is recorded as suppressed, the mount stays.
    let dir = tempfile::tempdir().unwrap();
    let canon = dir.path().canonicalize().unwrap();
    let fs = HangFs::mount(&canon).unwrap();
    let mut d = Daemon::start(&config("observe", &canon), &[]);
    let e = poll(Duration::from_secs(15), || {
        audit_line(&d, "unmount", "suppressed")
    })
    .unwrap_or_else(|| panic!("no suppressed unmount; log:\n{}", d.log.join("\n")));
    assert!(
        e["reason"].as_str().unwrap().contains("observe_mode"),
        "{e}"
    );
    assert!(mounted(&canon), "observe mode must not unmount");
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());

    // Act mode: detached; a new lookup inside answers at once instead of hanging.
    let mut d = Daemon::start(&config("act", &canon), &[]);
    let e = poll(Duration::from_secs(15), || {
        audit_line(&d, "unmount", "done")
    })
    .unwrap_or_else(|| panic!("no unmount; log:\n{}", d.log.join("\n")));
    assert_eq!(e["subject"], canon.to_str().unwrap(), "{e}");
    assert!(!mounted(&canon), "the hung mount is detached");
    let probe = canon.join("anything");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = std::fs::metadata(&probe).is_ok();
        let _ = tx.send((r, t0.elapsed()));
    });
    let (_, took) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a new stat must return, not join the hung callers");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let m = d.metrics();
    assert!(
        m.contains("nodemedic_remediation_actions_total{action=\"unmount\",result=\"done\"} 1"),
        "{m}"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    drop(fs);
}
