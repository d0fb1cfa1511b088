//! A private containerd with CRI, in its own network namespace, for the preflight tests.
//!
//! Everything belongs to one bed and is named uniquely, so beds run concurrently: root,
//! state, socket, runc root, CNI config and IPAM dirs live in one temp dir; the network
//! namespace and the CNI network name carry the test process id and a sequence number. The
//! pause image is a static C program compiled here and packed into an OCI archive by
//! [`pack_image`] (our own tar writer, uncompressed layer); a second image carries the
//! host's static busybox. Pods are driven over CRI (k8s-cri + tonic over the unix socket).
//!
//! The containerd binaries come from one setting, `NODEMEDIC_TEST_CONTAINERD_DIR` (default
//! bookworm's `/usr/bin`, containerd 1.6); `scripts/test.sh` runs the `containerd_*` tests once
//! per version with 1.7 and 2.x unpacked by `scripts/deps.sh`. Each bed writes the config k3s
//! generates for that version: `version = 2` importing `config.toml.d/*.toml` on 1.x,
//! `version = 3` importing `config-v3.toml.d/*.toml` with the CRI tables under the 2.x plugin
//! ids on 2.x.
//!
//! Shared machine state is touched only by exact name: shim sockets in the fixed
//! `/run/containerd/s/` are removed by the path their bundle's `address` file names, shims
//! are found by the `-address <our socket>` in their command line, netns files by the paths
//! our own sandboxes recorded, cgroups and CNI result files by our own container ids.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use nodemedic::preflight::containerd::connect_unix;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use super::{is_root, require};

pub const PAUSE_IMAGE: &str = "localhost/nodemedic-test/pause:1";
pub const BUSYBOX_IMAGE: &str = "localhost/nodemedic-test/busybox:1";
pub const NAMESPACE: &str = "k8s.io";
/// Where the bed takes `containerd`, `ctr` and `containerd-shim-runc-v2` from.
pub const CONTAINERD_DIR_ENV: &str = "NODEMEDIC_TEST_CONTAINERD_DIR";
/// The pod subnet; each bed has its own netns and IPAM dir, so beds may share it.
const SUBNET: &str = "10.244.77.0/24";
/// containerd start under a full 2-core load (other tests compiling and running).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// One CRI call; RunPodSandbox runs runc and CNI and takes ~0.3 s idle, much more loaded.
const CRI_TIMEOUT: Duration = Duration::from_secs(60);
/// libcni's result cache; not configurable in containerd 1.6.
pub const CNI_RESULTS: &str = "/var/lib/cni/results";
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
const TASK_DIR: &str = "io.containerd.runtime.v2.task/k8s.io";

const PAUSE_C: &str = r#"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction q = {0}, r = {0};
    q.sa_handler = quit; r.sa_handler = reap;
    sigaction(SIGINT, &q, 0); sigaction(SIGTERM, &q, 0); sigaction(SIGCHLD, &r, 0);
    for (;;) pause();
}
"#;

/// The directory of the containerd binaries under test.
pub fn containerd_dir() -> PathBuf {
    std::env::var_os(CONTAINERD_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin"))
}

/// The version of the containerd under test, from `containerd --version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtdVersion {
    pub major: u32,
    pub minor: u32,
    /// The version word as printed, e.g. `1.6.20~ds1` or `2.1.9+unknown`.
    pub text: String,
}

impl CtdVersion {
    /// containerd 2.x: the sandbox store (Sandbox API), config version 3, split CRI plugins.
    pub fn has_sandbox_store(&self) -> bool {
        self.major >= 2
    }
}

impl std::fmt::Display for CtdVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "containerd {}", self.text)
    }
}

/// Parses `containerd github.com/containerd/containerd[/v2] <version> [<revision>]`.
pub fn parse_version(out: &str) -> Option<CtdVersion> {
    let text = out.split_whitespace().nth(2)?.trim_start_matches('v');
    let mut it = text.split(|c: char| !c.is_ascii_digit());
    Some(CtdVersion {
        major: it.next()?.parse().ok()?,
        minor: it.next()?.parse().ok()?,
        text: text.to_string(),
    })
}

/// The containerd under test (run once per process).
pub fn version() -> CtdVersion {
    static V: std::sync::OnceLock<CtdVersion> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let bin = containerd_dir().join("containerd");
        let out = run(Command::new(&bin).arg("--version"));
        parse_version(&out).unwrap_or_else(|| panic!("{} --version: {out:?}", bin.display()))
    })
    .clone()
}

/// Prints that `what` does not apply to the containerd under test, and why (no silent pass).
pub fn not_applicable(what: &str, why: &str) {
    eprintln!("NOT APPLICABLE on {}: {what}: {why}", version());
}

/// A containerd API request in the CRI namespace ([`NAMESPACE`]), where the bed's records live.
pub fn namespaced<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("containerd-namespace", NAMESPACE.parse().unwrap());
    req
}

/// Checks what the bed needs; prints SKIP (or panics under CI) when something is missing.
pub fn prerequisites() -> bool {
    if !require(is_root(), "root (containerd, network namespaces, mounts)") {
        return false;
    }
    let dir = containerd_dir();
    let need = [
        dir.join("containerd").display().to_string(),
        dir.join("ctr").display().to_string(),
        dir.join("containerd-shim-runc-v2").display().to_string(),
        "/usr/lib/cni/bridge".into(),
        "/usr/lib/cni/host-local".into(),
        "/usr/lib/cni/loopback".into(),
        "/bin/busybox".into(),
    ];
    let mut missing: Vec<String> = need
        .iter()
        .filter(|p| !Path::new(p).exists())
        .cloned()
        .collect();
    for tool in ["runc", "gcc", "ip", "nsenter"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            missing.push(tool.to_string());
        }
    }
    require(
        missing.is_empty(),
        &format!(
            "containerd test bed tools {missing:?} (apt-get install containerd runc containernetworking-plugins busybox-static gcc iproute2; 1.7 and 2.x: scripts/deps.sh)"
        ),
    ) && {
        eprintln!("containerd under test: {} ({})", version(), dir.display());
        true
    }
}

/// One private containerd (with or without CRI) and everything it made.
pub struct ContainerdBed {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub runc_root: PathBuf,
    pub ipam_dir: PathBuf,
    pub log: PathBuf,
    pub netns: String,
    /// CNI network name, unique per bed (it prefixes the shared result cache files).
    pub network: String,
    config_cri: PathBuf,
    config_nocri: PathBuf,
    child: Option<Child>,
    /// Container ids (sandboxes and containers) this bed ever saw, for cleanup.
    seen_ids: BTreeSet<String>,
    /// netns files our sandboxes recorded.
    seen_netns: BTreeSet<PathBuf>,
    pub rt: tokio::runtime::Runtime,
    tmp: Option<tempfile::TempDir>,
}

/// Sandbox ids (and the dead holder's IP) of [`ContainerdBed::reserved_name_after_power_cut`].
pub struct ReservedName {
    /// Dead since the power cut, and still holding its pod's sandbox name.
    pub old: String,
    /// Dead since the power cut too, but no pod wants its name again.
    pub other: String,
    /// Started after the restart: Ready.
    pub live: String,
    /// The IP `old` had reserved.
    pub old_ip: String,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl ContainerdBed {
    /// Builds the bed, starts containerd with CRI and imports both images.
    pub fn new() -> ContainerdBed {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = tempfile::Builder::new()
            .prefix("nmctd")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let tag = format!("{}x{seq}", std::process::id());
        let bed = ContainerdBed {
            root: dir.join("root"),
            state: dir.join("state"),
            socket: dir.join("containerd.sock"),
            runc_root: dir.join("runc"),
            ipam_dir: dir.join("cni/ipam"),
            log: dir.join("containerd.log"),
            netns: format!("nmctd-{tag}"),
            network: format!("nmt{tag}"),
            config_cri: dir.join("etc/containerd/config.toml"),
            config_nocri: dir.join("etc/containerd/config-nocri.toml"),
            child: None,
            seen_ids: BTreeSet::new(),
            seen_netns: BTreeSet::new(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            dir,
            tmp: Some(tmp),
        };
        let mut bed = bed;
        bed.setup();
        bed
    }

    fn setup(&mut self) {
        let d = self.dir.clone();
        for sub in ["cni/net.d", "cni/ipam", "podlogs", "run", "images"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::create_dir_all(self.dropin_dir()).unwrap();
        std::fs::write(d.join("pause.c"), PAUSE_C).unwrap();
        run(Command::new("gcc")
            .args(["-O2", "-static", "-o"])
            .arg(d.join("pause"))
            .arg(d.join("pause.c")));
        pack_image(
            &d.join("images/pause.tar"),
            PAUSE_IMAGE,
            &["/pause"],
            &[(d.join("pause"), "pause")],
        );
        pack_image(
            &d.join("images/busybox.tar"),
            BUSYBOX_IMAGE,
            &["/bin/sh"],
            &[(PathBuf::from("/bin/busybox"), "bin/busybox")],
        );
        std::fs::write(&self.config_cri, self.config_text(true)).unwrap();
        std::fs::write(&self.config_nocri, self.config_text(false)).unwrap();
        let conflist = format!(
            r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"bridge","bridge":"nmtest0","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{SUBNET}"}}]],"dataDir":"{ipam}"}}}}]}}"#,
            net = self.network,
            ipam = self.ipam_dir.display()
        );
        std::fs::write(d.join("cni/net.d/10-nmtest.conflist"), conflist).unwrap();
        run(Command::new("ip").args(["netns", "add", &self.netns]));
        run(Command::new("ip").args(["-n", &self.netns, "link", "set", "lo", "up"]));
        self.start(true);
        for img in ["pause", "busybox"] {
            self.import_image(img);
        }
    }

    /// k3s's drop-in directory for this bed's config: `config.toml.d` (1.x) or
    /// `config-v3.toml.d` (2.x), beside the config, imported as `<dir>/*.toml`.
    pub fn dropin_dir(&self) -> PathBuf {
        let name = if version().major >= 2 {
            "config-v3.toml.d"
        } else {
            "config.toml.d"
        };
        self.config_cri.parent().unwrap().join(name)
    }

    /// The CNI config directory (k3s: `agent/etc/cni/net.d`), whose conflist names the network.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }

    /// The containerd config of this bed in the shape k3s generates for the version under
    /// test; `cri = false` disables the CRI plugins.
    pub fn config_text(&self, cri: bool) -> String {
        let disabled = if cri {
            String::new()
        } else {
            format!(
                "disabled_plugins = [{}]\n",
                nodemedic::preflight::private_instance::DISABLED_PLUGINS
                    .iter()
                    .map(|p| format!("\"{p}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let v = version();
        let (header, body) = if v.major >= 2 {
            ("Use config-v3.toml.tmpl instead.", self.config_v3())
        } else {
            ("Use config.toml.tmpl instead.", self.config_v2())
        };
        format!(
            "# File generated by k3s. DO NOT EDIT. {header}\n{disabled}{body}",
            header = header,
        )
    }

    /// containerd 1.x: what k3s's `config.toml.tmpl` base renders (`version = 2`).
    fn config_v2(&self) -> String {
        format!(
            r#"version = 2
imports = ["{dropins}/*.toml"]
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{cni}"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{runc}"
  [plugins."io.containerd.internal.v1.opt"]
    path = "{dir}/opt"
"#,
            dropins = self.dropin_dir().display(),
            root = self.root.display(),
            state = self.state.display(),
            sock = self.socket.display(),
            cni = self.cni_conf_dir().display(),
            dir = self.dir.display(),
            runc = self.runc_root.display(),
        )
    }

    /// containerd 2.x: what k3s's `config-v3.toml.tmpl` base renders (`version = 3`, CRI
    /// split into `io.containerd.grpc.v1.cri`, `io.containerd.cri.v1.runtime` and
    /// `io.containerd.cri.v1.images`). NRI (on by default in 2.x) gets a socket of the bed's
    /// own instead of the host-wide `/var/run/nri/nri.sock`.
    fn config_v3(&self) -> String {
        format!(
            r#"version = 3
imports = ["{dropins}/*.toml"]
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"

[plugins.'io.containerd.internal.v1.opt']
  path = "{dir}/opt"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "10010"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  device_ownership_from_security_context = false
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  disable_snapshot_annotations = true

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni}"

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{runc}"

[plugins.'io.containerd.nri.v1.nri']
  socket_path = "{dir}/nri.sock"
"#,
            dropins = self.dropin_dir().display(),
            root = self.root.display(),
            state = self.state.display(),
            sock = self.socket.display(),
            cni = self.cni_conf_dir().display(),
            dir = self.dir.display(),
            runc = self.runc_root.display(),
        )
    }

    /// Writes a k3s drop-in `name` (e.g. `50-x.toml`) into [`ContainerdBed::dropin_dir`].
    pub fn write_dropin(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dropin_dir().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Path of the CRI-enabled config (what preflight treats as "k3s's config").
    pub fn config_path(&self) -> &Path {
        &self.config_cri
    }

    /// Starts containerd in the bed's netns and waits for its gRPC API; with `cri`, also for
    /// the CRI API. Panics (with the log) if either does not come up.
    pub fn start(&mut self, cri: bool) {
        self.spawn(cri);
        assert!(
            self.wait_containerd(START_TIMEOUT),
            "containerd did not come up; log:\n{}",
            self.log_text()
        );
        if cri {
            assert!(
                self.wait_cri(START_TIMEOUT),
                "CRI did not come up; log:\n{}",
                self.log_text()
            );
        }
    }

    /// Starts containerd without waiting.
    pub fn spawn(&mut self, cri: bool) {
        assert!(self.child.is_none(), "containerd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // The shim is found on PATH, next to the containerd under test.
        let dir = containerd_dir();
        let mut path = dir.clone().into_os_string();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(dir.join("containerd"))
            .env("PATH", path)
            .arg("--config")
            .arg(if cri {
                &self.config_cri
            } else {
                &self.config_nocri
            })
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn containerd_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True when containerd answers `Version` within `timeout`.
    pub fn wait_containerd(&mut self, timeout: Duration) -> bool {
        self.wait_answer(timeout, |ch| async move {
            let mut v = containerd_client::services::v1::version_client::VersionClient::new(ch);
            v.version(()).await.is_ok()
        })
    }

    /// True when the CRI runtime service answers within `timeout`.
    pub fn wait_cri(&mut self, timeout: Duration) -> bool {
        self.wait_answer(timeout, |ch| async move {
            RuntimeServiceClient::new(ch)
                .version(VersionRequest {
                    version: "v1".into(),
                })
                .await
                .is_ok()
        })
    }

    /// Polls `answers` on a fresh connection until it holds (true), containerd exits or
    /// `timeout` passes (false).
    fn wait_answer<F>(&mut self, timeout: Duration, answers: impl Fn(Channel) -> F) -> bool
    where
        F: std::future::Future<Output = bool>,
    {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.exited() {
                return false;
            }
            let ok = self.rt.block_on(async {
                let Ok(ch) = connect_unix(&self.socket, Duration::from_secs(2)).await else {
                    return false;
                };
                answers(ch).await
            });
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// True (and reaped) when containerd has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                self.child = None;
                true
            }
            None => true,
            _ => false,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A gRPC channel to the bed's containerd.
    pub fn channel(&self) -> Channel {
        self.rt
            .block_on(connect_unix(&self.socket, Duration::from_secs(5)))
            .unwrap()
    }

    fn cri(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel())
    }

    fn cri_call<T>(
        &self,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        self.rt.block_on(async {
            match tokio::time::timeout(CRI_TIMEOUT, f).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded("test CRI call timed out")),
            }
        })
    }

    /// RunPodSandbox with pod networking; returns the sandbox id.
    pub fn run_pod(
        &mut self,
        name: &str,
        ns: &str,
        uid: &str,
        attempt: u32,
    ) -> Result<String, tonic::Status> {
        let logdir = self.dir.join("podlogs").join(uid);
        std::fs::create_dir_all(&logdir).unwrap();
        let cfg = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: ns.into(),
                uid: uid.into(),
                attempt,
            }),
            hostname: name.into(),
            log_directory: logdir.display().to_string(),
            labels: [("io.kubernetes.pod.name".to_string(), name.to_string())].into(),
            linux: Some(LinuxPodSandboxConfig {
                // The bed's own cgroup parent: under the shared default (`/k8s.io`) one bed's
                // cleanup could rmdir the parent while another bed's runc creates a child.
                cgroup_parent: self.cgroup_parent(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut c = self.cri();
        let id = self
            .cri_call(c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: String::new(),
            }))?
            .pod_sandbox_id;
        self.seen_ids.insert(id.clone());
        self.remember_netns();
        Ok(id)
    }

    /// Creates and starts a busybox container running `cmd` in sandbox `sb`.
    pub fn run_container(
        &mut self,
        sb: &str,
        name: &str,
        cmd: &[&str],
    ) -> Result<String, tonic::Status> {
        let mut c = self.cri();
        let status = self
            .cri_call(c.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sb.into(),
                verbose: false,
            }))?
            .status
            .unwrap_or_default();
        let meta = status.metadata.unwrap_or_default();
        let sandbox_config = PodSandboxConfig {
            log_directory: self
                .dir
                .join("podlogs")
                .join(&meta.uid)
                .display()
                .to_string(),
            metadata: Some(meta),
            ..Default::default()
        };
        let id = self
            .cri_call(c.create_container(CreateContainerRequest {
                pod_sandbox_id: sb.into(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: name.into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: BUSYBOX_IMAGE.into(),
                        ..Default::default()
                    }),
                    command: cmd.iter().map(|s| s.to_string()).collect(),
                    log_path: format!("{name}.log"),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config),
            }))?
            .container_id;
        self.seen_ids.insert(id.clone());
        self.cri_call(c.start_container(StartContainerRequest {
            container_id: id.clone(),
        }))?;
        Ok(id)
    }

    /// (state, ip) of a sandbox as CRI reports it.
    pub fn pod_state(&self, id: &str) -> Result<(PodSandboxState, String), tonic::Status> {
        let mut c = self.cri();
        let st = self
            .cri_call(c.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            }))?
            .status
            .unwrap_or_default();
        let ip = st.network.map(|n| n.ip).unwrap_or_default();
        Ok((
            PodSandboxState::try_from(st.state).unwrap_or(PodSandboxState::SandboxNotready),
            ip,
        ))
    }

    pub fn list_pods(&self) -> Vec<PodSandbox> {
        let mut c = self.cri();
        self.cri_call(c.list_pod_sandbox(ListPodSandboxRequest::default()))
            .unwrap()
            .items
    }

    pub fn list_containers(&self) -> Vec<k8s_cri::v1::Container> {
        let mut c = self.cri();
        self.cri_call(c.list_containers(ListContainersRequest::default()))
            .unwrap()
            .containers
    }

    pub fn stop_pod(&self, id: &str) {
        let mut c = self.cri();
        self.cri_call(c.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .unwrap();
    }

    pub fn remove_pod(&self, id: &str) {
        let mut c = self.cri();
        self.cri_call(c.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .unwrap();
    }

    /// Image references CRI knows (repo tags).
    pub fn image_tags(&self) -> Vec<String> {
        let mut c = ImageServiceClient::new(self.channel());
        self.cri_call(c.list_images(ListImagesRequest::default()))
            .unwrap()
            .images
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .collect()
    }

    /// Packs the host's busybox as another image named `name` and imports it: an image no
    /// container uses (the disk reclaim tests).
    pub fn import_extra_image(&self, name: &str) {
        let tar = self
            .dir
            .join(format!("images/extra-{}.tar", self.seen_ids.len()));
        pack_image(
            &tar,
            name,
            &["/bin/true"],
            &[(PathBuf::from("/bin/busybox"), "bin/true")],
        );
        self.import(&tar, name);
    }

    /// Every container record in the CRI namespace, straight from containerd.
    pub fn records(&self) -> Vec<containerd_client::services::v1::Container> {
        let mut c = containerd_client::services::v1::containers_client::ContainersClient::new(
            self.channel(),
        );
        let req =
            namespaced(containerd_client::services::v1::ListContainersRequest { filters: vec![] });
        self.rt
            .block_on(c.list(req))
            .unwrap()
            .into_inner()
            .containers
    }

    /// Creates a raw container record (for crafting broken states with CRI disabled).
    pub fn create_record(&mut self, rec: containerd_client::services::v1::Container) {
        self.create_record_in(NAMESPACE, rec)
    }

    /// Creates a raw container record in containerd namespace `ns` (another client's).
    pub fn create_record_in(&mut self, ns: &str, rec: containerd_client::services::v1::Container) {
        self.seen_ids.insert(rec.id.clone());
        let mut c = containerd_client::services::v1::containers_client::ContainersClient::new(
            self.channel(),
        );
        let mut req =
            tonic::Request::new(containerd_client::services::v1::CreateContainerRequest {
                container: Some(rec),
            });
        req.metadata_mut()
            .insert("containerd-namespace", ns.parse().unwrap());
        self.rt.block_on(c.create(req)).unwrap();
    }

    /// containerd 2.x's sandbox store (Sandbox API); `None` where there is none (1.6).
    pub fn store_entries(&self) -> Option<Vec<containerd_client::types::Sandbox>> {
        use containerd_client::services::v1::sandbox::{
            StoreListRequest, store_client::StoreClient,
        };
        let mut c = StoreClient::new(self.channel());
        match self
            .rt
            .block_on(c.list(namespaced(StoreListRequest { filters: vec![] })))
        {
            Ok(r) => Some(r.into_inner().list),
            Err(s) if s.code() == tonic::Code::Unimplemented => None,
            Err(s) => panic!("listing the sandbox store: {s}"),
        }
    }

    /// Creates a raw sandbox store entry (2.x; for crafting broken states with CRI disabled).
    pub fn create_store_entry(&mut self, sb: containerd_client::types::Sandbox) {
        use containerd_client::services::v1::sandbox::{
            StoreCreateRequest, store_client::StoreClient,
        };
        self.seen_ids.insert(sb.sandbox_id.clone());
        let mut c = StoreClient::new(self.channel());
        self.rt
            .block_on(c.create(namespaced(StoreCreateRequest { sandbox: Some(sb) })))
            .unwrap();
    }

    /// containerd's task list, by task id: (pid, status), straight from the Tasks API.
    pub fn tasks(&self) -> BTreeMap<String, (u32, i32)> {
        let mut c = containerd_client::services::v1::tasks_client::TasksClient::new(self.channel());
        let req = namespaced(containerd_client::services::v1::ListTasksRequest {
            filter: String::new(),
        });
        self.rt
            .block_on(c.list(req))
            .unwrap()
            .into_inner()
            .tasks
            .into_iter()
            .map(|t| (t.id, (t.pid, t.status)))
            .collect()
    }

    /// The init pid a task bundle of this bed names (a pod's pause or a container's process).
    pub fn init_pid(&self, id: &str) -> Option<u32> {
        std::fs::read_to_string(self.state.join(TASK_DIR).join(id).join("init.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The top layer snapshot of image `name` (through containerd's GC labels: manifest ->
    /// config -> `containerd.io/gc.ref.snapshot.overlayfs`) and its directory on disk.
    pub fn image_snapshot(&self, name: &str) -> (String, PathBuf) {
        use containerd_client::services::v1::snapshots::{
            RemoveSnapshotRequest, ViewSnapshotRequest, snapshots_client::SnapshotsClient,
        };
        use containerd_client::services::v1::{
            GetImageRequest, InfoRequest, content_client::ContentClient,
            images_client::ImagesClient,
        };
        let ch = self.channel();
        let img = self
            .rt
            .block_on(
                ImagesClient::new(ch.clone())
                    .get(namespaced(GetImageRequest { name: name.into() })),
            )
            .unwrap()
            .into_inner()
            .image
            .unwrap();
        let mut digest = img.target.unwrap().digest;
        let mut ct = ContentClient::new(ch.clone());
        let key = loop {
            let labels = self
                .rt
                .block_on(ct.info(namespaced(InfoRequest {
                    digest: digest.clone(),
                })))
                .unwrap()
                .into_inner()
                .info
                .unwrap()
                .labels;
            if let Some(k) = labels.get("containerd.io/gc.ref.snapshot.overlayfs") {
                break k.clone();
            }
            digest = labels["containerd.io/gc.ref.content.config"].clone();
        };
        let mut sn = SnapshotsClient::new(ch);
        let mounts = self
            .rt
            .block_on(sn.view(namespaced(ViewSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: "bed-view".into(),
                parent: key.clone(),
                labels: Default::default(),
            })))
            .unwrap()
            .into_inner()
            .mounts;
        // containerd's GC may have taken the unreferenced view already.
        let _ = self
            .rt
            .block_on(sn.remove(namespaced(RemoveSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: "bed-view".into(),
            })));
        // A single-layer image's view is a read-only bind mount of that layer's `fs`.
        let fs = PathBuf::from(&mounts[0].source);
        (key, fs.parent().unwrap().to_path_buf())
    }

    /// Imports one of the bed's images again (`pause` or `busybox`), as k3s imports its
    /// air-gap tarballs.
    pub fn import_image(&self, img: &str) {
        let name = match img {
            "pause" => PAUSE_IMAGE,
            "busybox" => BUSYBOX_IMAGE,
            _ => panic!("the bed has no image {img:?} (pause or busybox)"),
        };
        self.import(&self.dir.join(format!("images/{img}.tar")), name);
    }

    /// `ctr images import`, then waits until CRI lists `name`: CRI learns of images from
    /// containerd's `/images/create` events, after `ctr` has returned (containerd 2.1.9 in
    /// CI once answered "not found" to a container created right after the import).
    fn import(&self, tar: &Path, name: &str) {
        run(Command::new(containerd_dir().join("ctr"))
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", NAMESPACE, "images", "import"])
            .arg(tar));
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let tags = self.image_tags();
            if tags.iter().any(|t| t == name) {
                return;
            }
            assert!(
                Instant::now() < end,
                "CRI does not list {name} 10 s after its import: {tags:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Image names containerd itself holds (not only what CRI shows).
    pub fn containerd_images(&self) -> Vec<String> {
        let mut c =
            containerd_client::services::v1::images_client::ImagesClient::new(self.channel());
        let req =
            namespaced(containerd_client::services::v1::ListImagesRequest { filters: vec![] });
        self.rt
            .block_on(c.list(req))
            .unwrap()
            .into_inner()
            .images
            .into_iter()
            .map(|i| i.name)
            .collect()
    }

    /// Records the netns paths of every sandbox containerd knows (for cleanup by exact path).
    fn remember_netns(&mut self) {
        for r in self.records() {
            self.seen_ids.insert(r.id.clone());
            if let Some(ext) = r
                .extensions
                .get(nodemedic::preflight::sandbox_meta::SANDBOX_METADATA_KEY)
                && let Ok(m) =
                    nodemedic::preflight::sandbox_meta::decode_sandbox(&r.id, Some(&ext.value))
                && !m.netns.is_empty()
            {
                self.seen_netns.insert(PathBuf::from(m.netns));
            }
        }
    }

    /// IP reservation files in the bed's IPAM dir (file names), without host-local's own.
    pub fn reserved_ips(&self) -> BTreeMap<String, String> {
        let dir = self.ipam_dir.join(&self.network);
        let mut m = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n == "lock" || n.starts_with("last_reserved_ip") {
                    continue;
                }
                m.insert(n, std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        m
    }

    /// Pids of this bed's shims (found by our socket in their command line) and of their
    /// direct children (container init processes).
    pub fn shim_and_init_pids(&self) -> (Vec<u32>, Vec<u32>) {
        let sock = self.socket.display().to_string();
        let mut shims = Vec::new();
        let mut ppids: Vec<(u32, u32)> = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.first().is_some_and(|a| a.contains("containerd-shim"))
                && args.windows(2).any(|w| w[0] == "-address" && w[1] == sock)
            {
                shims.push(pid);
            }
            if let Ok(stat) = std::fs::read_to_string(e.path().join("stat"))
                && let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..])
                && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
            {
                ppids.push((pid, ppid));
            }
        }
        let inits = ppids
            .into_iter()
            .filter(|(_, pp)| shims.contains(pp))
            .map(|(p, _)| p)
            .collect();
        (shims, inits)
    }

    /// SIGKILL containerd only (what `systemctl restart k3s` does with `KillMode=process`):
    /// shims and pods keep running.
    pub fn kill_containerd(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Graceful stop (SIGTERM): shims and pods keep running.
    pub fn stop_containerd(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A power cut: SIGKILL containerd, every shim and every container init of this bed,
    /// then wipe what a reboot wipes (state dir and its mounts, runc root, netns files, shim
    /// sockets, cgroups).
    pub fn power_cut(&mut self) {
        if self.child.is_some() && self.wait_containerd(Duration::from_secs(1)) {
            self.remember_netns();
        }
        let shim_sockets = self.shim_sockets();
        let (shims, inits) = self.shim_and_init_pids();
        let cpid = self.child.as_ref().map(Child::id);
        for p in cpid
            .into_iter()
            .chain(shims.iter().copied())
            .chain(inits.iter().copied())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        // Wait until the killed processes are gone (or zombies nobody reaps).
        let end = Instant::now() + Duration::from_secs(10);
        for p in shims.iter().chain(inits.iter()) {
            while Instant::now() < end
                && nodemedic::preflight::containerd::process_alive(Path::new("/proc"), *p)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.wipe_volatile(&shim_sockets);
    }

    /// The state behind "failed to reserve sandbox name": pods web-0 (`old`) and web-1
    /// (`other`) run, the power is cut, containerd restarts with CRI and web-2 (`live`) runs.
    /// web-0's NotReady record still holds `web-0_default_uid-e_0`, so rerunning that pod
    /// (`run_pod("web-0", "default", "uid-e", 0)`, as the kubelet would) fails until the
    /// record goes.
    pub fn reserved_name_after_power_cut(&mut self) -> ReservedName {
        let old = self.run_pod("web-0", "default", "uid-e", 0).unwrap();
        let other = self.run_pod("web-1", "default", "uid-f", 0).unwrap();
        self.power_cut();
        self.start(true);
        let live = self.run_pod("web-2", "default", "uid-g", 0).unwrap();
        let old_ip = self.pod_state(&old).unwrap().1;
        ReservedName {
            old,
            other,
            live,
            old_ip,
        }
    }

    fn shim_sockets(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.state.join(TASK_DIR)) {
            for e in rd.flatten() {
                if let Ok(a) = std::fs::read_to_string(e.path().join("address")) {
                    let p = a.trim().trim_start_matches("unix://");
                    if p.starts_with(SHIM_SOCKET_DIR) {
                        v.push(PathBuf::from(p));
                    }
                }
            }
        }
        v
    }

    fn wipe_volatile(&mut self, shim_sockets: &[PathBuf]) {
        let state = format!("{}/", self.state.display());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<String> = mountinfo
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&state))
            .map(str::to_string)
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for n in std::mem::take(&mut self.seen_netns) {
            let _ = nix::mount::umount2(&n, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&n);
        }
        for s in shim_sockets {
            let _ = std::fs::remove_file(s);
        }
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_dir_all(&self.runc_root);
        self.remove_cgroups();
    }

    fn remove_cgroups(&self) {
        let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let ctrls: Vec<PathBuf> = ctrls.flatten().map(|e| e.path()).collect();
        let parent = self.cgroup_parent();
        for c in &ctrls {
            let parent = c.join(parent.trim_start_matches('/'));
            for id in &self.seen_ids {
                let _ = std::fs::remove_dir(parent.join(id));
            }
            let _ = std::fs::remove_dir(parent);
        }
    }

    /// The cgroup parent of this bed's pods (unique, like its netns name).
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.netns)
    }

    /// Moves this bed's CNI result files out of the host-wide `/var/lib/cni/results` into a
    /// directory of the bed's own and returns it, for a preflight run to scan. Call it only
    /// while the bed's containerd is down (nothing of the bed writes there then).
    ///
    /// Why: libcni writes its cache files in place (truncate, then write), so a scan of the
    /// shared directory while *another* bed starts a pod can read that pod's file at zero
    /// length (seen 5 times in 40 s of two parallel group runs) and preflight would remove a
    /// live pod's result as "corrupt". On a node nothing writes there while preflight runs
    /// (containerd is down); concurrent tests must not share the directory.
    pub fn isolate_cni_results(&self) -> PathBuf {
        let own = self.dir.join("cni-results-own");
        std::fs::create_dir_all(&own).unwrap();
        for f in self.cni_result_files() {
            std::fs::rename(&f, own.join(f.file_name().unwrap())).unwrap();
        }
        own
    }

    /// Moves what is left in [`ContainerdBed::isolate_cni_results`]'s directory back to
    /// `/var/lib/cni/results`, before the bed's containerd (and its pods' teardown) resumes.
    pub fn restore_cni_results(&self) {
        let own = self.dir.join("cni-results-own");
        for e in std::fs::read_dir(&own).into_iter().flatten().flatten() {
            std::fs::rename(e.path(), Path::new(CNI_RESULTS).join(e.file_name())).unwrap();
        }
    }

    /// CNI result cache files of this bed: its network's, and containerd's loopback results
    /// (`cni-loopback-<id>-lo`) of our own sandboxes.
    pub fn cni_result_files(&self) -> Vec<PathBuf> {
        let prefix = format!("{}-", self.network);
        let mut v: Vec<PathBuf> = std::fs::read_dir(CNI_RESULTS)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.starts_with(&prefix)
                            || self
                                .seen_ids
                                .iter()
                                .any(|id| n == format!("cni-loopback-{id}-lo"))
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A preflight config for this bed: its binary, config, root, state, socket, IPAM dir;
    /// `results_dir` for the CNI result cache; report and private socket in `state_dir`.
    pub fn preflight_config(
        &self,
        results_dir: &Path,
        state_dir: &Path,
    ) -> nodemedic::preflight::run::PreflightConfig {
        nodemedic::preflight::run::PreflightConfig {
            containerd_binary: containerd_dir().join("containerd"),
            containerd_config: self.config_cri.clone(),
            containerd_root: self.root.clone(),
            containerd_state: self.state.clone(),
            containerd_socket: self.socket.clone(),
            namespace: NAMESPACE.into(),
            cni_results_dir: results_dir.to_path_buf(),
            cni_networks_dir: self.ipam_dir.clone(),
            // The bed's conflist names its network, as k3s's names cbr0.
            cni_networks: vec![],
            cni_conf_dir: self.cni_conf_dir(),
            state_dir: state_dir.to_path_buf(),
            run_dir: self.dir.join("run"),
            // Generous under a loaded 2-core CI machine; timing is measured separately.
            budget: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(20),
            ..Default::default()
        }
    }
}

impl Drop for ContainerdBed {
    fn drop(&mut self) {
        let shim_sockets = self.shim_sockets();
        let (shims, inits) = self.shim_and_init_pids();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in shims.iter().chain(inits.iter()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let end = Instant::now() + Duration::from_secs(5);
        for p in shims.iter().chain(inits.iter()) {
            while Instant::now() < end
                && nodemedic::preflight::containerd::process_alive(Path::new("/proc"), *p)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.wipe_volatile(&shim_sockets);
        for f in self.cni_result_files() {
            let _ = std::fs::remove_file(f);
        }
        // Snapshot mounts may sit under root too (overlay work dirs are plain dirs); detach
        // anything left below the bed before removing it.
        let dir = format!("{}/", self.dir.display());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in mountinfo
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&dir))
        {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stderr(Stdio::null())
            .status();
        if let Some(t) = self.tmp.take() {
            let _ = t.close();
        }
    }
}

/// A tar header block (ustar) for `name` of `size` bytes.
fn tar_header(name: &str, size: u64, mode: u32, dir: bool) -> [u8; 512] {
    assert!(name.len() < 100, "tar name too long: {name}");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], off: usize, len: usize, v: u64| {
        let s = format!("{v:0width$o}\0", width = len - 1);
        h[off..off + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, mode as u64);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 0);
    h[148..156].copy_from_slice(b"        ");
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// A tar archive builder (regular files and directories only).
#[derive(Default)]
pub struct Tar(Vec<u8>);

impl Tar {
    pub fn dir(&mut self, name: &str) {
        let n = format!("{}/", name.trim_end_matches('/'));
        self.0.extend_from_slice(&tar_header(&n, 0, 0o755, true));
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.0
            .extend_from_slice(&tar_header(name, data.len() as u64, mode, false));
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a single-layer OCI image archive (OCI layout in a tar, uncompressed layer) to
/// `out`, named `name`, with `entrypoint`; `files` are (source, path in the image). The
/// layer also gets the directories a container rootfs needs as mount points.
pub fn pack_image(out: &Path, name: &str, entrypoint: &[&str], files: &[(PathBuf, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    let mut layer = Tar::default();
    let mut dirs = BTreeSet::new();
    for (_, dest) in files {
        let parts: Vec<&str> = dest.split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/");
            if dirs.insert(d.clone()) {
                layer.dir(&d);
            }
        }
    }
    for d in ["dev", "etc", "proc", "sys", "tmp"] {
        if dirs.insert(d.to_string()) {
            layer.dir(d);
        }
    }
    for (src, dest) in files {
        let data = std::fs::read(src).unwrap();
        let mode = std::fs::metadata(src).unwrap().permissions().mode() & 0o7777;
        layer.file(dest, mode, &data);
    }
    let layer = layer.finish();
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin:/usr/bin:/sbin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string()
    .into_bytes();
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    let tag = name.rsplit(':').next().unwrap_or("latest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }],
    })
    .to_string()
    .into_bytes();
    let mut oci = Tar::default();
    oci.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    oci.file("index.json", 0o644, &index);
    oci.dir("blobs");
    oci.dir("blobs/sha256");
    for blob in [&layer, &config, &manifest] {
        oci.file(&format!("blobs/sha256/{}", sha256_hex(blob)), 0o644, blob);
    }
    let mut f = std::fs::File::create(out).unwrap();
    f.write_all(&oci.finish()).unwrap();
}
