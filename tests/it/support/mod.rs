//! Shared fixtures for the integration tests: the real `nodemedic` binary started with a
//! temp config, a minimal HTTP client, an emulated systemd notify socket, and the rule for
//! tests that need root or kernel features (skip loudly on a dev box, fail under CI).

#![allow(dead_code)]

pub mod containerd_bed;
pub mod fake_apiserver;
pub mod hangfs;
pub mod nspawn;
pub mod nspawn_bed;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_nodemedic");

/// True under CI (`CI=true`), where a missing capability is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns false (after a loud message) when `what` is unavailable on a dev box; panics in CI.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("CI must not skip: {what} is not available on this machine");
    }
    eprintln!("\n*** SKIP: {what} is not available here; this test did NOT run ***\n");
    false
}

/// Polls `f` every 100 ms until it gives a value or `timeout` passes (then one last try).
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Gives a fixture host root the boot id `id` (a "reboot" is a new id).
pub fn set_boot_id(root: &Path, id: &str) {
    let p = root.join("proc/sys/kernel/random");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("boot_id"), format!("{id}\n")).unwrap();
}

/// Removes cgroup directories, given parents first (so removed in reverse), retrying for
/// a while: a killed task leaves its cgroup a moment after it is reaped.
pub fn remove_cgroups(dirs: Vec<PathBuf>, who: &str) {
    for dir in dirs.into_iter().rev() {
        let end = Instant::now() + Duration::from_secs(10);
        while let Err(e) = std::fs::remove_dir(&dir) {
            if Instant::now() > end {
                eprintln!("{who}: cannot remove {}: {e}", dir.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A fixture host root whose `dev/kmsg` is a FIFO holding one kernel-facility RCU stall
/// record, stamped now. The returned write end (opened read+write, so it never blocks)
/// keeps the FIFO open while the daemon reads it; keep it alive for the test.
pub fn stalled_kmsg_root() -> (tempfile::TempDir, std::fs::File) {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("dev")).unwrap();
    let fifo = root.path().join("dev/kmsg");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut w = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let usec = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    w.write_all(
        format!("3,1,{usec},-;rcu: INFO: rcu_sched detected stalls on CPUs/tasks:\n").as_bytes(),
    )
    .unwrap();
    (root, w)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A running `nodemedic run` with its stderr captured line by line.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

/// Minimal config for a test daemon: loopback port 0, state and the per-boot runtime
/// files (the kmsg cursor) in the temp dir.
pub fn base_config(dir: &Path) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n",
        dir.join("state").display(),
        dir.join("run").display()
    )
}

impl Daemon {
    /// Starts the daemon with `extra` appended to the base config and `env` set.
    pub fn start(extra: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra, env)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_wrapped(dir, extra, env, &[])
    }

    /// As [`Daemon::start_in`], run through `wrapper` (e.g. `unshare --pid --fork`).
    pub fn start_wrapped(
        dir: tempfile::TempDir,
        extra: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Daemon {
        let cfg = dir.path().join("config.toml");
        // A key the test sets itself (`listen`, `state_dir`) replaces the base's.
        let base: String = base_config(dir.path())
            .lines()
            .filter(|l| {
                let key = l.split(' ').next().unwrap_or_default();
                !extra.lines().any(|e| e.split(' ').next() == Some(key))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&cfg, format!("{base}{extra}")).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg)
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn nodemedic");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon {
            child,
            addr: String::new(),
            dir,
            lines,
            log: Vec::new(),
        };
        let line = d
            .wait_log("listening on http://", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("daemon did not start; log:\n{}", d.log.join("\n")));
        let start = line.find("http://").unwrap() + 7;
        d.addr = line[start..].split_whitespace().next().unwrap().to_string();
        d
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(needle) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    pub fn drain_log(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.log.push(l);
        }
    }

    pub fn get(&self, path: &str) -> Response {
        http_get(&self.addr, path)
    }

    pub fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200);
        r.body
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status").body).unwrap()
    }

    /// Polls /metrics until `pred` holds.
    pub fn wait_metrics(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if pred(&m) {
                return Some(m);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.drain_log();
                return Some(s);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
    pub elapsed: Duration,
}

/// One HTTP/1.1 GET with `Connection: close`; enough for our own read-only endpoint.
pub fn http_get(addr: &str, path: &str) -> Response {
    http_request(addr, "GET", path)
}

pub fn http_request(addr: &str, method: &str, path: &str) -> Response {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let elapsed = t0.elapsed();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        headers: head.to_string(),
        body: body.to_string(),
        elapsed,
    }
}

/// An emulated systemd notify socket.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            path,
            sock,
            _dir: dir,
        }
    }

    /// Next datagram within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_string()),
            Err(_) => None,
        }
    }

    /// Collects datagrams for `window`.
    pub fn collect(&self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if let Some(m) = self.recv(left.max(Duration::from_millis(1))) {
                out.push(m);
            }
        }
        out
    }
}

/// Runs the binary to completion with args, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
