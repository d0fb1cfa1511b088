//! reboot(2) for real: the whole reboot path runs as PID 1 of a child PID namespace.
//!
//! Inside a child PID namespace the kernel turns reboot(LINUX_REBOOT_CMD_RESTART) into
//! "kill this namespace's init" and makes its parent see it killed by SIGHUP
//! (kernel/pid_namespace.c, reboot_pid_ns), so the machine itself is never touched. The
//! test binary re-executes itself through a raw clone(CLONE_NEWPID) so the helper test is
//! that init, writes the audit record through the persistence closure, then runs the real
//! sequence (`reboot_node` + `LinuxReboot`) with a graceful command that fails or does
//! nothing and no watchdog, so it ends in reboot(2).
//!
//! Safety: outside a child PID namespace reboot(2) reboots the machine. The helper refuses
//! unless it is PID 1 and its PID namespace differs from the one the parent test passed.

use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nodemedic::remedy::reboot::{LinuxReboot, RebootError, RebootPlan, RebootSystem, reboot_node};

use nodemedic::edge::SystemClock;

use crate::support::{is_root, require};

const STATE_DIR_ENV: &str = "NODEMEDIC_TEST_PIDNS_STATE";
const PARENT_NS_ENV: &str = "NODEMEDIC_TEST_PARENT_PIDNS";
const MODE_ENV: &str = "NODEMEDIC_TEST_PIDNS_MODE";
const HELPER: &str = "pidns_reboot_helper";
const AUDIT_FILE: &str = "audit.log";
const HELPER_OUT: &str = "helper.out";
/// Written only if the reboot path ever returns; must never appear.
const AFTER_MARKER: &str = "AFTER REBOOT CALL";
/// The no-op mode's graceful wait: long enough to measure, short enough for a test.
const NOOP_GRACEFUL_DEADLINE: Duration = Duration::from_millis(300);
/// The whole namespace lives well under a second; this only catches a hang.
const HELPER_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// The graceful command exits 1: no wait, straight to sync + reboot(2).
    GracefulFails,
    /// The graceful command succeeds but nothing reboots: wait out the deadline first.
    GracefulNoop,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::GracefulFails => "fails",
            Mode::GracefulNoop => "noop",
        }
    }
}

fn pid_ns_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/pid")
        .expect("stat /proc/self/ns/pid")
        .ino()
}

/// Appends one line and fsyncs it, so the file shows exactly what happened before death.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")?;
    f.sync_all()
}

/// The real machine, with a fsynced line in the audit file before each call.
struct Marked {
    inner: LinuxReboot,
    log: PathBuf,
    t0: Instant,
}

impl Marked {
    fn mark(&self, step: &str) {
        let t = self.t0.elapsed().as_millis();
        append_line(&self.log, &format!("step={step} t_ms={t}")).expect("write marker");
    }
}

impl RebootSystem for Marked {
    fn sync(&mut self) {
        self.inner.sync();
        self.mark("synced");
    }
    fn request_graceful_reboot(&mut self) -> Result<(), RebootError> {
        let r = self.inner.request_graceful_reboot();
        self.mark(if r.is_ok() {
            "graceful-accepted"
        } else {
            "graceful-refused"
        });
        r
    }
    fn watchdog_timeout(&self) -> Option<Duration> {
        self.inner.watchdog_timeout()
    }
    fn stop_watchdog_feeding(&mut self) {
        self.mark("stop-feeding");
        self.inner.stop_watchdog_feeding();
    }
    fn reboot_syscall(&mut self) -> Result<(), RebootError> {
        // The last line the helper may ever write.
        self.mark("reboot2");
        self.inner.reboot_syscall()
    }
}

/// Not a test on its own: PID 1 of the namespace that `reboot_path_*` tests create.
#[test]
#[ignore = "helper process: runs only as PID 1 of a child PID namespace"]
fn pidns_reboot_helper() {
    let (Ok(dir), Ok(parent_ns), Ok(mode)) = (
        std::env::var(STATE_DIR_ENV),
        std::env::var(PARENT_NS_ENV),
        std::env::var(MODE_ENV),
    ) else {
        return; // `cargo test -- --ignored` on its own: nothing to do.
    };
    let own_ns = pid_ns_inode();
    let pid = std::process::id();
    if pid != 1 || own_ns.to_string() == parent_ns {
        panic!("REFUSING to call reboot(2): pid {pid}, pid ns {own_ns} (parent's {parent_ns})");
    }
    let dir = PathBuf::from(dir);
    let audit = dir.join(AUDIT_FILE);
    let t0 = Instant::now();
    let (argv, deadline) = match mode.as_str() {
        "fails" => (vec!["false".to_string()], Duration::from_secs(3600)),
        "noop" => (vec!["true".to_string()], NOOP_GRACEFUL_DEADLINE),
        other => panic!("unknown mode {other}"),
    };
    let persist = || -> std::io::Result<()> {
        append_line(
            &audit,
            &format!("audit: reboot problem=KernelRCUStall pid={pid} pidns={own_ns}"),
        )?;
        // The directory entry too: the file must exist after a power cut.
        std::fs::File::open(&dir)?.sync_all()
    };
    let mut sys = Marked {
        inner: LinuxReboot::new(argv, None),
        log: audit.clone(),
        t0,
    };
    let plan = RebootPlan {
        graceful_deadline: deadline,
        ..RebootPlan::default()
    };
    let r = reboot_node(&mut sys, &SystemClock, &plan, persist);
    let _ = append_line(&audit, &format!("{AFTER_MARKER}: {r:?}"));
    panic!("the reboot path returned: {r:?}");
}

/// Starts this test binary's helper as PID 1 of a new PID namespace; returns its pid.
fn spawn_helper_as_pidns_init(dir: &Path, mode: Mode) -> std::io::Result<libc::pid_t> {
    let exe = std::env::current_exe()?;
    let name = format!("{}::{HELPER}", module_path!().split_once("::").unwrap().1);
    let cstr = |s: &OsStr| CString::new(s.as_bytes()).unwrap();
    let exe_c = cstr(exe.as_os_str());
    let args: Vec<CString> = [
        exe.as_os_str(),
        OsStr::new("--exact"),
        OsStr::new(&name),
        OsStr::new("--ignored"),
        OsStr::new("--nocapture"),
    ]
    .into_iter()
    .map(cstr)
    .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| {
            ![STATE_DIR_ENV, PARENT_NS_ENV, MODE_ENV].contains(&k.to_str().unwrap_or(""))
        })
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).unwrap()
        })
        .collect();
    env.push(CString::new(format!("{STATE_DIR_ENV}={}", dir.display())).unwrap());
    env.push(CString::new(format!("{PARENT_NS_ENV}={}", pid_ns_inode())).unwrap());
    env.push(CString::new(format!("{MODE_ENV}={}", mode.name())).unwrap());
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let out = std::fs::File::create(dir.join(HELPER_OUT))?;
    let out_fd = std::os::fd::AsRawFd::as_raw_fd(&out);
    // Everything above is prepared before the clone: in the child of a multithreaded
    // process only async-signal-safe calls (dup2, execve, _exit) are allowed.
    // SAFETY: a fork-like clone (no CLONE_VM, so a copied stack); the child only calls
    // dup2/execve/_exit on memory prepared above.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            libc::dup2(out_fd, 1);
            libc::dup2(out_fd, 2);
            libc::execve(exe_c.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    Ok(pid as libc::pid_t)
}

/// Waits for the namespace's init; kills it and fails after `HELPER_DEADLINE`.
fn wait_raw_status(pid: libc::pid_t) -> libc::c_int {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut status = 0;
        loop {
            // SAFETY: plain waitpid on our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                let _ = tx.send(status);
                return;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return;
            }
        }
    });
    match rx.recv_timeout(HELPER_DEADLINE) {
        Ok(s) => s,
        Err(_) => {
            // SAFETY: the child is not reaped yet (the waiter has not returned), so the pid
            // is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the PID namespace init did not die within {HELPER_DEADLINE:?}");
        }
    }
}

/// Runs the helper; returns (raw wait status, audit lines, helper output, elapsed).
fn run_namespace(mode: Mode) -> Option<(libc::c_int, Vec<String>, String, Duration)> {
    if !require(
        is_root(),
        "root (a PID namespace needs CAP_SYS_ADMIN, reboot(2) CAP_SYS_BOOT)",
    ) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let pid = match spawn_helper_as_pidns_init(dir.path(), mode) {
        Ok(p) => p,
        Err(e) => {
            require(false, &format!("clone(CLONE_NEWPID): {e}"));
            return None;
        }
    };
    let status = wait_raw_status(pid);
    let elapsed = t0.elapsed();
    let audit = std::fs::read_to_string(dir.path().join(AUDIT_FILE)).unwrap_or_default();
    let out = std::fs::read_to_string(dir.path().join(HELPER_OUT)).unwrap_or_default();
    eprintln!("pid ns init: raw wait status {status:#x} after {elapsed:?}\n{audit}");
    Some((
        status,
        audit.lines().map(String::from).collect(),
        out,
        elapsed,
    ))
}

fn killed_by(status: libc::c_int) -> Option<libc::c_int> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

/// The millisecond stamp of a `step=` line.
fn t_ms(line: &str) -> u64 {
    line.rsplit_once("t_ms=").unwrap().1.parse().unwrap()
}

fn assert_died_by_reboot2(status: libc::c_int, lines: &[String], out: &str, steps: &[&str]) {
    // The kernel's verdict for LINUX_REBOOT_CMD_RESTART in a child namespace: SIGHUP.
    assert_eq!(
        killed_by(status),
        Some(libc::SIGHUP),
        "wait status {status:#x} (exited: {}, code {}); audit:\n{}\nhelper output:\n{out}",
        libc::WIFEXITED(status),
        libc::WEXITSTATUS(status),
        lines.join("\n"),
    );
    assert!(!libc::WCOREDUMP(status));
    // The record came first and was on disk before reboot(2); nothing came after it.
    assert_eq!(lines.len(), steps.len() + 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("audit: reboot problem=KernelRCUStall pid=1 pidns="),
        "{lines:#?}"
    );
    let helper_ns = lines[0].rsplit_once("pidns=").unwrap().1;
    assert_ne!(
        helper_ns,
        pid_ns_inode().to_string(),
        "ran in our own namespace?!"
    );
    for (line, step) in lines[1..].iter().zip(steps) {
        assert!(line.starts_with(&format!("step={step} ")), "{lines:#?}");
    }
    assert_eq!(
        lines.last().unwrap().split(' ').next(),
        Some("step=reboot2")
    );
    assert!(
        !lines.iter().any(|l| l.contains(AFTER_MARKER)),
        "{lines:#?}"
    );
    assert!(!out.contains("the reboot path returned"), "{out}");
    assert!(!out.contains("REFUSING"), "{out}");
}

#[test]
fn reboot_path_with_a_failing_graceful_command_ends_in_reboot2_killing_the_pidns_init() {
    let Some((status, lines, out, elapsed)) = run_namespace(Mode::GracefulFails) else {
        return;
    };
    assert_died_by_reboot2(
        status,
        &lines,
        &out,
        &["graceful-refused", "synced", "reboot2"],
    );
    // No graceful wait (the deadline was an hour): straight to the fallback.
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

#[test]
fn reboot_path_with_a_noop_graceful_command_waits_out_the_deadline_then_reboot2() {
    let Some((status, lines, out, _)) = run_namespace(Mode::GracefulNoop) else {
        return;
    };
    assert_died_by_reboot2(
        status,
        &lines,
        &out,
        &["graceful-accepted", "synced", "reboot2"],
    );
    // Stamps count from before the sequence started, so the fallback came after the full
    // deadline (and not absurdly later).
    let rebooted = t_ms(&lines[3]);
    let deadline = NOOP_GRACEFUL_DEADLINE.as_millis() as u64;
    assert!(
        rebooted >= deadline,
        "fell back after {rebooted} ms, before the deadline"
    );
    assert!(
        rebooted < deadline + 10_000,
        "fell back only after {rebooted} ms"
    );
}
