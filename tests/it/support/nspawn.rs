//! A real systemd as PID 1 inside `systemd-nspawn`, for the packaging end-to-end tests.
//!
//! The container boots this machine's own `/usr` (read-only, `--volatile=yes`: `/etc` and
//! `/var` start empty, so it is a first boot every time) with an overlay on `/usr` whose
//! upper layer is a temp dir: files put there (the binary, the packaged units) look exactly
//! as a package would install them. It runs in its own network namespace, so the daemon's
//! port never clashes with anything on the host; [`Machine::http_get`] reaches it by
//! entering that namespace on a scratch thread.
//!
//! Settings a real node has and a stock container lacks, each needed by what is tested:
//! `/dev/kmsg` bound in and `CAP_SYSLOG` granted (the kernel detector), a unified cgroup
//! hierarchy with `bpf(2)` allowed (so systemd really enforces the unit's `DevicePolicy=`),
//! and the NTP state query allowed (`adjtimex`, `clock_adjtime`: nspawn's own filter denies
//! the @clock calls to a container without CAP_SYS_TIME, even the read-only one the clock
//! health check makes; the kernel still refuses any change without that capability).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{in_ci, is_root, require};

/// A first boot of a minimal systemd takes 2-4 s here; leave room for a loaded CI machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// An orderly container shutdown takes a few seconds.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// nspawn's exit status when the container asked for a reboot (systemd-nspawn(1)).
pub const EXIT_REBOOT: i32 = 133;

/// True (or a loud skip on a dev box, a panic under CI) when nspawn containers can run here.
pub fn available() -> bool {
    let tools = ["systemd-nspawn", "nsenter", "systemd-analyze"]
        .iter()
        .all(|t| which(t).is_some());
    require(
        is_root() && tools && Path::new("/dev/kmsg").exists(),
        "root, systemd-nspawn (apt package systemd-container), nsenter and /dev/kmsg",
    )
}

/// The absolute path of a program on PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|c| c.is_file())
    })
}

/// What to boot: the host's `/usr` with `usr_upper` layered on top, plus extra binds.
pub struct Boot {
    pub usr_upper: PathBuf,
    /// (host path, container path, read-only)
    pub binds: Vec<(PathBuf, String, bool)>,
    /// (host lower dir, host upper dir, container path): a writable view of a host dir.
    pub overlays: Vec<(PathBuf, PathBuf, String)>,
}

pub struct Machine {
    pub name: String,
    nspawn: Child,
    init: i32,
    console: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Machine {
    /// Boots and waits until systemd reports `running` or `degraded`.
    pub fn boot(b: &Boot) -> Machine {
        let name = format!(
            "nmtest-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args([
            "--quiet",
            "--directory=/",
            "--volatile=yes",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            "--private-network",
            "--capability=CAP_SYSLOG",
            "--system-call-filter=bpf adjtimex clock_adjtime",
            "--bind=/dev/kmsg",
        ])
        .arg(format!("--machine={name}"))
        .arg(format!("--overlay=/usr:{}:/usr", b.usr_upper.display()));
        for (lower, upper, dst) in &b.overlays {
            cmd.arg(format!(
                "--overlay={}:{}:{dst}",
                lower.display(),
                upper.display()
            ));
        }
        for (src, dst, ro) in &b.binds {
            let flag = if *ro { "--bind-ro" } else { "--bind" };
            cmd.arg(format!("{flag}={}:{dst}", src.display()));
        }
        cmd.arg("-b");
        cmd.env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut nspawn = cmd.spawn().expect("spawn systemd-nspawn");
        let console = Arc::new(Mutex::new(String::new()));
        for mut pipe in [
            Box::new(nspawn.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(nspawn.stderr.take().unwrap()),
        ] {
            let console = console.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    console
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut m = Machine {
            name,
            nspawn,
            init: 0,
            console,
            exited: None,
        };
        let end = Instant::now() + BOOT_TIMEOUT;
        while m.init == 0 {
            if let Some(st) = m.nspawn.try_wait().unwrap() {
                panic!("systemd-nspawn exited {st} while booting:\n{}", m.console());
            }
            m.init = container_init(m.nspawn.id()).unwrap_or(0);
            assert!(
                Instant::now() < end,
                "no container init after {BOOT_TIMEOUT:?}:\n{}",
                m.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let state = m.wait_for(BOOT_TIMEOUT, |m| {
            let s = m.exec(&["systemctl", "is-system-running"]);
            let s = String::from_utf8_lossy(&s.stdout).trim().to_string();
            matches!(s.as_str(), "running" | "degraded").then_some(s)
        });
        assert!(
            state.is_some(),
            "container {} did not finish booting:\n{}\n{}",
            m.name,
            m.run(&["systemctl", "list-jobs", "--no-pager"]),
            m.console()
        );
        m
    }

    pub fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// The container's PID 1, as a host pid.
    pub fn init_pid(&self) -> i32 {
        self.init
    }

    /// Runs a command inside the container (its mount, PID, UTS and IPC namespaces).
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_with_stdin(args, None)
    }

    pub fn exec_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init.to_string(), "-m", "-p", "-u", "-i", "--"])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn nsenter");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in container {}: {args:?} failed ({}): {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a file inside the container.
    pub fn write_file(&self, path: &str, content: &str) {
        let script = format!("mkdir -p \"$(dirname '{path}')\" && cat > '{path}'");
        let out = self.exec_with_stdin(&["sh", "-c", &script], Some(content));
        assert!(out.status.success(), "write {path}: {out:?}");
    }

    /// One property of a unit (`systemctl show -p`).
    pub fn prop(&self, unit: &str, prop: &str) -> String {
        self.run(&["systemctl", "show", "-p", prop, "--value", unit])
            .trim()
            .to_string()
    }

    /// A unit's journal, message text only.
    pub fn journal(&self, unit: &str) -> String {
        self.run(&["journalctl", "-u", unit, "-o", "cat", "--no-pager", "-b"])
    }

    /// Polls `f` until it returns Some or the timeout passes.
    pub fn wait_for<T>(&self, timeout: Duration, f: impl Fn(&Machine) -> Option<T>) -> Option<T> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return Some(v);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An HTTP GET to `addr` from inside the container's network namespace; None when
    /// nothing answers.
    pub fn http_get(&self, addr: &str, path: &str) -> Option<(u16, String)> {
        let ns = fs::File::open(format!("/proc/{}/ns/net", self.init)).ok()?;
        let (addr, path) = (addr.to_string(), path.to_string());
        // setns(CLONE_NEWNET) changes only the calling thread: use a throwaway one.
        std::thread::spawn(move || {
            // SAFETY: a valid namespace fd; affects only this thread, which then exits.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            let sock = addr.parse().ok()?;
            let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut raw = String::new();
            s.read_to_string(&mut raw).ok()?;
            let (head, body) = raw.split_once("\r\n\r\n")?;
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            Some((status, body.to_string()))
        })
        .join()
        .ok()
        .flatten()
    }

    /// Waits for systemd-nspawn to exit (after a shutdown or reboot inside).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.nspawn.try_wait().unwrap() {
                self.exited = Some(st);
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A power cut: SIGKILL to the container's PID 1. The kernel then kills every process
    /// in its PID namespace at once; nothing gets to shut down.
    pub fn power_cut(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.init),
            nix::sys::signal::Signal::SIGKILL,
        );
        let st = self.wait_exit(SHUTDOWN_TIMEOUT);
        assert!(
            st.is_some(),
            "nspawn did not exit after its init was killed"
        );
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        // SIGTERM asks nspawn for an orderly shutdown of the container.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.nspawn.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if self.wait_exit(SHUTDOWN_TIMEOUT).is_none() {
            if self.init > 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.init),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        if in_ci() || std::env::var_os("NODEMEDIC_TEST_CONSOLE").is_some() {
            eprintln!("--- console of {} ---\n{}", self.name, self.console());
        }
    }
}

/// The repository's units and drop-ins, laid out under `dst` (a `lib/systemd/system`) as
/// the package installs them.
pub fn install_packaged_units(dst: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    fs::create_dir_all(dst).unwrap();
    for unit in ["nodemedic.service", "nodemedic-clean-shutdown.service"] {
        fs::copy(src.join(unit), dst.join(unit)).unwrap();
    }
    for d in ["k3s.service.d", "k3s-agent.service.d"] {
        fs::create_dir_all(dst.join(d)).unwrap();
        let f = "10-nodemedic-preflight.conf";
        fs::copy(src.join(d).join(f), dst.join(d).join(f)).unwrap();
    }
}

/// The first child of the nspawn process: the container's init.
fn container_init(nspawn: u32) -> Option<i32> {
    let tasks = fs::read_dir(format!("/proc/{nspawn}/task")).ok()?;
    for t in tasks.flatten() {
        let children = fs::read_to_string(t.path().join("children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            let pid: i32 = pid.parse().ok()?;
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "systemd" {
                return Some(pid);
            }
        }
    }
    None
}
