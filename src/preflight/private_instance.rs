//! A private, temporary containerd on k3s's root, with the CRI plugin disabled.
//!
//! Why: the broken states are only readable and fixable through containerd's own API (the
//! records live in its bolt DB), but k3s's containerd with CRI enabled either fails to start
//! (`failed to recover state`) or starts serving the kubelet at once. So preflight starts the
//! same containerd binary that k3s bundles, on the same root and state dirs, with the CRI
//! plugin disabled and its gRPC socket in a private directory, repairs, and stops it. This is
//! the manual fix from containerd issues 6095/10848, automated.
//!
//! Safety rules:
//! - Refuse when another containerd uses the root: k3s's socket answers, or the bolt DB lock
//!   is held (bbolt `flock`s `meta.db`; a second opener would block forever). That is the
//!   "k3s still stopping / restarting" case; preflight then leaves everything alone.
//! - The configuration is k3s's own generated `config.toml` with its drop-ins (snapshotter
//!   and proxy plugin settings matter for snapshot removal), CRI disabled and k3s's own
//!   listeners dropped ([`super::ctd_config`]); root, state and the gRPC address are
//!   overridden on the command line, which wins over the file. A drop-in that would undo
//!   that means a minimal config instead, with the reason in the report.
//! - Once it serves, the instance is asked which plugins it loaded: a CRI plugin among them
//!   (whatever config made that happen) means no repair at all ([`InstanceError::CriLoaded`]).
//! - The child dies with us (`PR_SET_PDEATHSIG`), every wait has a deadline, and stop is
//!   SIGTERM, then SIGKILL after a grace period. Only the child's own pid is signalled: shims
//!   that k3s started keep running (they belong to live pods after a k3s restart).

use super::containerd::connect_unix;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Plugins disabled in the private instance: every CRI variant (1.x id and the 2.x split
/// ones), so no recovery runs and no kubelet is served; `opt` because it would create
/// `/opt/containerd` as a side effect. Unknown ids are ignored by containerd.
pub const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.runtime",
    "io.containerd.cri.v1.images",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.internal.v1.opt",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
    // NRI (on by default in 2.x) would serve the host-wide /var/run/nri/nri.sock.
    "io.containerd.nri.v1.nri",
];
/// CRI plugins that must not be loaded in the private instance.
const CRI_PLUGINS: [&str; 4] = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.runtime",
    "io.containerd.cri.v1.images",
    "io.containerd.podsandbox.controller.v1.podsandbox",
];
/// Poll interval while waiting for the socket; containerd 1.6 is up in ~150 ms here.
const READY_POLL: Duration = Duration::from_millis(15);
/// Per-probe timeout while waiting for readiness.
const READY_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Lines of containerd's log kept in error messages.
const LOG_TAIL_LINES: usize = 15;
/// bolt DB path relative to containerd's root.
pub const BOLT_DB: &str = "io.containerd.metadata.v1.bolt/meta.db";

/// Where and how to run the private instance.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// The containerd binary; k3s's bundled one by default, so the DB schema matches.
    pub binary: PathBuf,
    /// k3s's generated config.toml; `None` or missing: a minimal config.
    pub base_config: Option<PathBuf>,
    pub root: PathBuf,
    pub state: PathBuf,
    /// The socket k3s's containerd serves; if it answers, we refuse.
    pub real_socket: PathBuf,
    /// Parent of the private run directory (socket, config, log).
    pub run_dir: PathBuf,
    pub startup_timeout: Duration,
    pub stop_timeout: Duration,
}

/// Why the private instance was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "a containerd already serves {0}: k3s (or its containerd) is still running; nothing is repaired"
    )]
    SocketServing(PathBuf),
    #[error(
        "the containerd metadata DB {0} is locked by another process (k3s restarting?); nothing is repaired"
    )]
    DbLocked(PathBuf),
    #[error("no containerd metadata at {0}: nothing to repair")]
    NoDatabase(PathBuf),
    #[error(
        "containerd binary {0} not found; set the preflight containerd binary to k3s's bundled containerd"
    )]
    NoBinary(PathBuf),
    #[error("cannot prepare {path}: {error}")]
    Setup { path: PathBuf, error: String },
    #[error("private containerd exited during startup ({status}); log tail:\n{log}")]
    Exited { status: String, log: String },
    #[error(
        "private containerd loaded the CRI plugin {0} despite disabled_plugins: it would recover and serve pods; nothing is repaired"
    )]
    CriLoaded(String),
    #[error("private containerd did not serve {socket} within {timeout:?}; log tail:\n{log}")]
    StartTimeout {
        socket: PathBuf,
        timeout: Duration,
        log: String,
    },
}

/// Renders the private config from k3s's config text `base` (imports relative to `/`), or a
/// minimal one; see [`super::ctd_config::render`]. Returns the text and, when the base was
/// not used, why.
pub fn render_config(base: Option<&str>) -> (String, Option<String>) {
    let r = super::ctd_config::render(
        base.map(|b| (Path::new("/config.toml"), b)),
        DISABLED_PLUGINS,
    );
    (r.text, r.fallback)
}

/// Asks the instance serving `channel` which plugins it loaded: `Ok(true)` without CRI,
/// `Ok(false)` when it could not tell yet (no answer in time: ask again), and
/// [`InstanceError::CriLoaded`] with a CRI plugin among them.
pub async fn verify_cri_disabled(
    channel: tonic::transport::Channel,
    timeout: Duration,
) -> Result<bool, InstanceError> {
    use containerd_client::services::v1::{
        PluginsRequest, introspection_client::IntrospectionClient,
    };
    let mut c = IntrospectionClient::new(channel);
    let mut req = tonic::Request::new(PluginsRequest { filters: vec![] });
    req.set_timeout(timeout);
    let plugins = match tokio::time::timeout(timeout, c.plugins(req)).await {
        Ok(Ok(r)) => r.into_inner().plugins,
        Ok(Err(_)) | Err(_) => return Ok(false),
    };
    match plugins
        .iter()
        .map(|p| format!("{}.{}", p.r#type, p.id))
        .find(|full| CRI_PLUGINS.contains(&full.as_str()))
    {
        Some(full) => Err(InstanceError::CriLoaded(full)),
        None => Ok(true),
    }
}

/// Checks that no containerd uses `root` or serves `socket`.
pub fn check_not_running(socket: &Path, root: &Path) -> Result<(), InstanceError> {
    let db = root.join(BOLT_DB);
    if let Ok(f) = std::fs::File::open(&db) {
        // A shared, non-blocking flock fails exactly when bbolt holds its exclusive lock.
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock) {
            Ok(_unlocked_on_drop) => {}
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(InstanceError::DbLocked(db)),
            Err(_) => {}
        }
    }
    if socket_answers(socket) {
        return Err(InstanceError::SocketServing(socket.to_path_buf()));
    }
    Ok(())
}

/// True when something accepts connections on the unix socket `path` (bounded wait).
fn socket_answers(path: &Path) -> bool {
    if !path.exists() {
        return false;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        matches!(
            tokio::time::timeout(READY_PROBE_TIMEOUT, tokio::net::UnixStream::connect(path)).await,
            Ok(Ok(_))
        )
    })
}

/// A running private containerd; stopped on [`PrivateInstance::stop`] or drop.
pub struct PrivateInstance {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    stop_timeout: Duration,
    /// Why k3s's config was not used, if it was not.
    pub config_note: Option<String>,
    /// What of k3s's drop-ins the instance merged in (for the report).
    pub config_merged: Vec<String>,
    pub started_in: Duration,
}

impl PrivateInstance {
    /// Starts the instance and waits until it serves its socket, at most until the earlier of
    /// `startup_timeout` and `deadline`.
    pub fn start(
        cfg: &InstanceConfig,
        deadline: Instant,
    ) -> Result<PrivateInstance, InstanceError> {
        let t0 = Instant::now();
        check_not_running(&cfg.real_socket, &cfg.root)?;
        let db = cfg.root.join(BOLT_DB);
        if !db.exists() {
            return Err(InstanceError::NoDatabase(db));
        }
        if !cfg.binary.exists() {
            return Err(InstanceError::NoBinary(cfg.binary.clone()));
        }
        // Unique per process and start, so concurrent preflights (tests) never share a dir.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = cfg
            .run_dir
            .join(format!("preflight-ctd-{}-{seq}", std::process::id()));
        let setup = |path: &Path, e: std::io::Error| InstanceError::Setup {
            path: path.to_path_buf(),
            error: e.to_string(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| setup(&dir, e))?;
        let base = cfg
            .base_config
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok().map(|t| (p.clone(), t)));
        let rendered = super::ctd_config::render(
            base.as_ref().map(|(p, t)| (p.as_path(), t.as_str())),
            DISABLED_PLUGINS,
        );
        let (text, config_note) = (rendered.text, rendered.fallback);
        let config = dir.join("config.toml");
        std::fs::write(&config, text).map_err(|e| setup(&config, e))?;
        let socket = dir.join("c.sock");
        let log_path = dir.join("containerd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| setup(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| setup(&log_path, e))?;
        // Bundled shims and runc sit next to k3s's containerd.
        let mut path_env = cfg
            .binary
            .parent()
            .map(|p| p.as_os_str().to_owned())
            .unwrap_or_default();
        if let Some(p) = std::env::var_os("PATH") {
            path_env.push(":");
            path_env.push(p);
        }
        let mut cmd = Command::new(&cfg.binary);
        cmd.arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&cfg.root)
            .arg("--state")
            .arg(&cfg.state)
            .arg("--address")
            .arg(&socket)
            .arg("--log-level")
            .arg("warn")
            .env("PATH", path_env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| setup(&cfg.binary, e))?;
        super::hard_deadline::set_private_containerd(child.id());
        let mut inst = PrivateInstance {
            child: Some(child),
            dir,
            socket,
            stop_timeout: cfg.stop_timeout,
            config_note,
            config_merged: rendered.merged,
            started_in: Duration::ZERO,
        };
        let until = deadline.min(t0 + cfg.startup_timeout);
        inst.wait_ready(until, &log_path)?;
        inst.started_in = t0.elapsed();
        Ok(inst)
    }

    fn wait_ready(&mut self, until: Instant, log_path: &Path) -> Result<(), InstanceError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| InstanceError::Setup {
                path: self.dir.clone(),
                error: e.to_string(),
            })?;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = log_tail(log_path);
                self.stop();
                return Err(InstanceError::Exited {
                    status: st.to_string(),
                    log,
                });
            }
            if self.socket.exists() {
                let left = until.saturating_duration_since(Instant::now());
                let probe = READY_PROBE_TIMEOUT.min(left.max(Duration::from_millis(1)));
                let ok = rt.block_on(async {
                    let Ok(ch) = connect_unix(&self.socket, probe).await else {
                        return None;
                    };
                    let mut v = containerd_client::services::v1::version_client::VersionClient::new(
                        ch.clone(),
                    );
                    let mut req = tonic::Request::new(());
                    req.set_timeout(probe);
                    if !matches!(tokio::time::timeout(probe, v.version(req)).await, Ok(Ok(_))) {
                        return None;
                    }
                    Some(verify_cri_disabled(ch, READY_PROBE_TIMEOUT).await)
                });
                match ok {
                    Some(Ok(true)) => return Ok(()),
                    Some(Err(e)) => {
                        self.stop();
                        return Err(e);
                    }
                    // Not serving yet, or the plugin list did not come in time: ask again.
                    Some(Ok(false)) | None => {}
                }
            }
            if Instant::now() >= until {
                let log = log_tail(log_path);
                let socket = self.socket.clone();
                let timeout = until.saturating_duration_since(Instant::now());
                self.stop();
                return Err(InstanceError::StartTimeout {
                    socket,
                    timeout,
                    log,
                });
            }
            std::thread::sleep(READY_POLL);
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The child's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then SIGKILL after the grace period; removes the private directory.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let end = Instant::now() + self.stop_timeout;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        log::warn!(
                            "preflight: private containerd (pid {pid}) ignored SIGTERM; killing it"
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
            super::hard_deadline::set_private_containerd(0);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for PrivateInstance {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const K3S_CONFIG: &str = r#"
# File generated by k3s. DO NOT EDIT. Use config.toml.tmpl instead.
version = 2

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/rancher/k3s/agent/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  sandbox_image = "rancher/mirrored-pause:3.6"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  disable_snapshot_annotations = true

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/var/lib/rancher/k3s/data/current/bin"
  conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
"#;

    #[test]
    fn k3s_config_gets_cri_disabled_and_stays_valid_toml() {
        let (text, note) = render_config(Some(K3S_CONFIG));
        assert_eq!(note, None);
        let t: toml::Table = text.parse().unwrap();
        let disabled: Vec<&str> = t["disabled_plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(disabled.contains(&"io.containerd.grpc.v1.cri"));
        assert_eq!(disabled, DISABLED_PLUGINS);
        assert_eq!(t["version"].as_integer(), Some(2));
        assert_eq!(
            t["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["snapshotter"].as_str(),
            Some("overlayfs")
        );
    }

    #[test]
    fn keys_we_must_own_are_merged_or_dropped_and_only_a_broken_base_falls_back() {
        // A base's own disabled_plugins are kept beside ours, its ttrpc listener dropped
        // (issue 16: merge rather than give up k3s's snapshotter settings).
        for base in [
            "disabled_plugins = [\"x\"]\nversion = 2\n",
            "version = 2\n[ttrpc]\n  address = \"/run/k3s/containerd/containerd.sock.ttrpc\"\n",
        ] {
            let (text, note) = render_config(Some(base));
            assert_eq!(note, None, "{base}");
            let t: toml::Table = text.parse().unwrap();
            assert_eq!(t["version"].as_integer(), Some(2));
            assert!(t.get("ttrpc").and_then(|t| t.get("address")).is_none());
            let disabled: Vec<&str> = t["disabled_plugins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(&disabled[..DISABLED_PLUGINS.len()], DISABLED_PLUGINS);
        }
        let (text, note) = render_config(Some("version = = 2"));
        assert!(note.as_deref().unwrap().contains("unparsable"), "{note:?}");
        let t: toml::Table = text.parse().unwrap();
        assert_eq!(t["version"].as_integer(), Some(2));
        assert_eq!(
            t["disabled_plugins"].as_array().unwrap().len(),
            DISABLED_PLUGINS.len()
        );
        let (text, note) = render_config(None);
        assert!(note.is_some());
        assert!(text.parse::<toml::Table>().is_ok());
    }

    #[test]
    fn a_held_bolt_lock_means_refusal() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join(BOLT_DB);
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        std::fs::write(&db, b"").unwrap();
        let sock = d.path().join("none.sock");
        assert_eq!(check_not_running(&sock, d.path()), Ok(()));
        let f = std::fs::File::open(&db).unwrap();
        let _held =
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        assert_eq!(
            check_not_running(&sock, d.path()),
            Err(InstanceError::DbLocked(db.clone()))
        );
    }

    #[test]
    fn an_answering_socket_means_refusal() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("k3s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(
            check_not_running(&sock, d.path()),
            Err(InstanceError::SocketServing(sock.clone()))
        );
    }

    #[test]
    fn a_stale_socket_file_is_not_a_running_containerd() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("k3s.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        assert!(sock.exists());
        assert_eq!(check_not_running(&sock, d.path()), Ok(()));
    }

    #[test]
    fn missing_db_or_binary_is_reported_before_anything_starts() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = InstanceConfig {
            binary: d.path().join("no-containerd"),
            base_config: None,
            root: d.path().join("root"),
            state: d.path().join("state"),
            real_socket: d.path().join("k3s.sock"),
            run_dir: d.path().join("run"),
            startup_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(1),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            PrivateInstance::start(&cfg, deadline),
            Err(InstanceError::NoDatabase(_))
        ));
        std::fs::create_dir_all(cfg.root.join(BOLT_DB).parent().unwrap()).unwrap();
        std::fs::write(cfg.root.join(BOLT_DB), b"").unwrap();
        assert!(matches!(
            PrivateInstance::start(&cfg, deadline),
            Err(InstanceError::NoBinary(_))
        ));
        // A binary that exits at once is reported with its output.
        cfg.binary = PathBuf::from("/bin/false");
        match PrivateInstance::start(&cfg, deadline) {
            Err(InstanceError::Exited { status, .. }) => assert!(status.contains("1"), "{status}"),
            Err(e) => panic!("unexpected {e}"),
            Ok(_) => panic!("/bin/false cannot serve a socket"),
        }
        // The private directory is gone again.
        assert_eq!(std::fs::read_dir(&cfg.run_dir).unwrap().count(), 0);
    }
}
