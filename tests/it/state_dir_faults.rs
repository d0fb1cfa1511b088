//! State-directory faults through the real binary (issue 18, point 2): a state directory
//! that is read-only or full at start means degraded operation, not exit 1; in act mode
//! no action runs that could not be recorded first; a FIFO named `state.json` is moved
//! aside instead of hanging startup; temp files of killed writes are removed at start.
//! The tmpfs tests need root (mount); a real FUSE mount stands in for the hung NAS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::support::hangfs::HangFs;
use super::support::{Daemon, is_root, poll, require};

/// A tmpfs of `size` on a temp dir of its own, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .unwrap();
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, read_only: bool) {
        let flags = if read_only {
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
        } else {
            MsFlags::MS_REMOUNT
        };
        mount(None::<&str>, self.path(), None::<&str>, flags, None::<&str>).unwrap();
    }

    /// Writes a filler file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![0u8; 4096];
        while f.write(&block).is_ok_and(|n| n > 0) {}
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(self.path(), MntFlags::MNT_DETACH);
    }
}

const QUIET: &str = "[kernel]\nenabled = false\n[memory]\nenabled = false\n[runtime]\nenabled = false\n[kubernetes]\nenabled = false\n";

fn state_dir_line(p: &Path) -> String {
    format!("state_dir = \"{}\"\n", p.display())
}

fn condition_on(m: &str) -> bool {
    m.contains("nodemedic_condition{condition=\"StateDirUnusable\"} 1")
}

#[test]
fn serial_a_read_only_state_dir_at_start_runs_degraded_serves_metrics_and_recovers() {
    if !require(is_root(), "root (to mount a tmpfs)") {
        return;
    }
    let fs = Tmpfs::mount("1m");
    let state = fs.path().join("state");
    std::fs::create_dir(&state).unwrap();
    fs.remount(true);
    // Before issue 18 the daemon exited 1 here, so this start failed.
    let d = Daemon::start(
        &format!(
            "{}[mounts]\nenabled = false\n{QUIET}",
            state_dir_line(&state)
        ),
        &[],
    );
    let m = d
        .wait_metrics(Duration::from_secs(20), condition_on)
        .unwrap_or_else(|| panic!("StateDirUnusable never raised:\n{}", d.metrics()));
    assert!(m.contains("nodemedic_up 1"), "{m}");
    let s = d.status();
    let c = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "StateDirUnusable")
        .cloned()
        .unwrap();
    assert_eq!(c["reason"], "ReadOnlyFilesystem", "{c}");
    assert!(c["message"].as_str().unwrap().contains("degraded"), "{c}");

    // Writable again: the detector's next test write notices and clears it.
    fs.remount(false);
    d.wait_metrics(Duration::from_secs(90), |m| {
        m.contains("nodemedic_condition{condition=\"StateDirUnusable\"} 0")
    })
    .unwrap_or_else(|| panic!("never cleared after the remount:\n{}", d.metrics()));
}

#[test]
fn serial_a_full_state_dir_at_start_runs_degraded() {
    if !require(is_root(), "root (to mount a tmpfs)") {
        return;
    }
    let fs = Tmpfs::mount("256k");
    let _filler = fs.fill();
    let d = Daemon::start(
        &format!(
            "{}[mounts]\nenabled = false\n{QUIET}",
            state_dir_line(fs.path())
        ),
        &[],
    );
    d.wait_metrics(Duration::from_secs(20), condition_on)
        .unwrap_or_else(|| panic!("StateDirUnusable never raised:\n{}", d.metrics()));
    let s = d.status();
    assert!(
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "StateDirUnusable" && c["reason"] == "NoSpace"),
        "{s}"
    );
}

fn mounted(p: &Path) -> bool {
    let want = p.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

#[test]
fn serial_act_mode_on_a_read_only_state_dir_runs_no_action_it_cannot_record() {
    if !require(
        is_root() && Path::new("/dev/fuse").exists(),
        "root and /dev/fuse",
    ) {
        return;
    }
    let fs = Tmpfs::mount("1m");
    let state = fs.path().join("state");
    std::fs::create_dir(&state).unwrap();
    fs.remount(true);
    let dir = tempfile::tempdir().unwrap();
    let canon = dir.path().canonicalize().unwrap();
    let hung = HangFs::mount(&canon).unwrap();
    let mut d = Daemon::start(
        &format!(
            "mode = \"act\"\n{}{QUIET}[mounts]\ninterval = \"1s\"\nprobe_timeout = \"1s\"\nfstypes = []\npaths = [\"{}\"]\n\
             [actions.unmount]\nenabled = true\n\
             [policy]\nboot_grace = \"0s\"\n[policy.ladders]\nnetwork_mount_hung = [\"unmount@0s\"]\n",
            state_dir_line(&state),
            canon.display()
        ),
        &[],
    );
    let m = d
        .wait_metrics(Duration::from_secs(30), |m| {
            m.contains(
                "nodemedic_actions_suppressed_total{action=\"unmount\",reason=\"audit_unwritable\"}",
            )
        })
        .unwrap_or_else(|| panic!("the unmount was not held back:\n{}", d.metrics()));
    assert!(
        !m.contains("nodemedic_remediation_actions_total{action=\"unmount\",result=\"done\"}"),
        "{m}"
    );
    assert!(
        mounted(&canon),
        "nothing may be unmounted without its record"
    );
    assert!(
        d.wait_log("could not be written first", Duration::from_secs(5))
            .is_some(),
        "the journal says why: {}",
        d.log.join("\n")
    );
    drop(d);
    drop(hung);
}

#[test]
fn state_dir_a_fifo_named_state_json_is_moved_aside_and_the_daemon_starts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    nix::unistd::mkfifo(
        &state.join("state.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // Before issue 18 the start hung on the FIFO before listening: this never returned.
    let mut d = Daemon::start_in(dir, QUIET, &[]);
    let line = d
        .wait_log("was corrupt", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("not reported: {}", d.log.join("\n")));
    assert!(line.contains("a FIFO, not a regular file"), "{line}");
    let aside: Vec<_> = std::fs::read_dir(d.state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let s = poll(Duration::from_secs(5), || {
        std::fs::metadata(d.state_dir().join("state.json"))
            .ok()
            .filter(|m| m.is_file())
    });
    assert!(s.is_some(), "a fresh state.json was written");
}

#[test]
fn state_dir_temps_of_killed_writes_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // pid_max is at most 2^22: these writers are gone. The test's own pid is alive.
    let dead = [
        ".kmsg-cursor.json.tmp.4999999",
        ".clean-shutdown.json.tmp.4999998",
        ".preflight-totals.json.tmp.4999997",
    ];
    for n in dead {
        std::fs::write(state.join(n), b"partial").unwrap();
    }
    let live = format!(".preflight-totals.json.tmp.{}", std::process::id());
    std::fs::write(state.join(&live), b"being written").unwrap();
    let mut d = Daemon::start_in(dir, QUIET, &[]);
    for n in dead {
        assert!(!d.state_dir().join(n).exists(), "{n} left behind");
    }
    assert!(d.state_dir().join(&live).exists(), "a live writer's temp");
    assert!(
        d.wait_log(".kmsg-cursor.json.tmp.4999999", Duration::from_secs(5))
            .is_some()
    );
}
