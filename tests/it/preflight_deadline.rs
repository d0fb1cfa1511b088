//! `nodemedic preflight` ends itself at its budget, with exit code 0, even when the main
//! thread is blocked where no deadline reaches (issue 16, point 7): reaping a private
//! containerd stuck in D state, and writing to a stdout pipe nobody reads.
//!
//! The stuck containerd is a stand-in that never answers and never exits: a `stat` on a FUSE
//! mount whose request was read and is never answered (`support/hangfs.rs`), so SIGTERM and
//! SIGKILL leave it in uninterruptible sleep. Needs root (FUSE, /run); SKIP on a dev box
//! without it, failure under CI.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::hangfs::{HangFs, HangMode};
use crate::support::{BIN, is_root, require};

/// Long enough that each test's setup is done well before it, short enough to wait for.
const BUDGET_SECS: u64 = 3;
/// The test's own guard: without the watchdog the process would never end.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A preflight config for a node under `dir` whose containerd is `binary`.
fn write_config(dir: &Path, binary: &Path) -> PathBuf {
    let p = |s: &str| dir.join(s).display().to_string();
    let db = dir.join("root/io.containerd.metadata.v1.bolt/meta.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&db, b"").unwrap();
    let cfg = format!(
        "mode = \"act\"\nstate_dir = \"{}\"\n[preflight]\nbudget = \"{BUDGET_SECS}s\"\nclock_wait = \"0s\"\ncontainerd_binary = \"{}\"\ncontainerd_config = \"{}\"\ncontainerd_root = \"{}\"\ncontainerd_state = \"{}\"\ncontainerd_socket = \"{}\"\ncni_results_dir = \"{}\"\ncni_networks_dir = \"{}\"\n",
        p("state"),
        binary.display(),
        p("config.toml"),
        p("root"),
        p("run-state"),
        p("k3s.sock"),
        p("results"),
        p("networks"),
    );
    let path = dir.join("nodemedic.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Waits for `child` to exit, at most [`HANG_GUARD`]; kills it and fails if it does not.
fn wait_exit(child: &mut std::process::Child) -> (std::process::ExitStatus, Duration) {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st, t.elapsed());
        }
        if t.elapsed() > HANG_GUARD {
            let _ = child.kill();
            panic!("preflight still runs after {HANG_GUARD:?}: nothing ended it at its budget");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[test]
fn a_private_containerd_stuck_in_d_state_cannot_hold_preflight_past_its_budget() {
    if !require(is_root(), "root (FUSE mount, preflight's run dir)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("hung");
    std::fs::create_dir(&mnt).unwrap();
    let fs = HangFs::mount_with(&mnt, HangMode::AnswerInitOnly).expect("FUSE mount");
    // The stand-in: records its pid, then becomes a `stat` on the hung mount.
    let pidfile = dir.path().join("standin.pid");
    let standin = dir.path().join("containerd");
    std::fs::write(
        &standin,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec stat {}/x\n",
            pidfile.display(),
            mnt.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &standin,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cfg = write_config(dir.path(), &standin);

    let mut child = Command::new(BIN)
        .args(["preflight", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The stand-in's request is read and never answered: it is now unkillable.
    let opcode = fs
        .swallow_request(Duration::from_secs(20))
        .expect("the stand-in asks the hung mount");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("stand-in containerd pid {pid} waits on FUSE opcode {opcode}");

    let (status, took) = wait_exit(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    eprintln!("preflight ended after {took:?}:\n{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("budget of {BUDGET_SECS} s spent while blocked")),
        "{stderr}"
    );
    // It was the watchdog that ended it: the stand-in has been killed but cannot die yet.
    assert_eq!(proc_state(pid), Some('D'), "the stand-in must still hang");
    drop(fs);
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && proc_state(pid).is_some_and(|s| s != 'Z') {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        proc_state(pid).is_none_or(|s| s == 'Z'),
        "released, the killed stand-in is gone"
    );
}

#[test]
fn a_full_stdout_pipe_cannot_hold_preflight_past_its_budget() {
    if !require(is_root(), "root (preflight's run dir)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No containerd at all: the run itself is quick and ends by printing its outcome.
    let cfg = write_config(dir.path(), &dir.path().join("no-containerd"));
    // A pipe that is full before preflight writes its first line, and never read.
    let (read_end, write_end): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    let fd = write_end.as_raw_fd();
    let flags = nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let nb = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETFL(nb)).unwrap();
    let chunk = [b'x'; 4096];
    let mut filled = 0;
    while let Ok(n) = nix::unistd::write(&write_end, &chunk) {
        filled += n;
    }
    nix::fcntl::fcntl(
        &write_end,
        nix::fcntl::FcntlArg::F_SETFL(nb - nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    eprintln!("stdout pipe (fd {fd}) filled with {filled} bytes");

    let mut child = Command::new(BIN)
        .args(["preflight", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, took) = wait_exit(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    eprintln!("preflight ended after {took:?}:\n{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("spent while blocked"), "{stderr}");
    // The run itself finished before the write blocked: its report is on disk.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/preflight.json")).unwrap())
            .unwrap();
    assert_eq!(report["outcome"], "containerd_unavailable");
    drop(read_end);
}
