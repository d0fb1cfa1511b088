//! The daemon's wiring: which real edge, detector and actuator each part of the config
//! asks for, in one place. `run` (the daemon) and `check` (one pass) both build from here,
//! so they can never disagree about what is watched. This is also where facts cross
//! subsystems without the subsystems importing each other: the kernel detector's NFS view
//! goes to the mounts detector, its OOM kills to the memory metrics, and the detector
//! subsystems' actuators go to the policy loop as the traits of `remedy::actuators`.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::detect::Detector;
use crate::edge::{Clock, HostFiles, Notifier, RootedFiles, SdNotifier, SystemClock};
use crate::k3s::probe::{LivenessProbe, ProbeAnswer};
use crate::kube::credentials::{self, CredentialSource, Discovery};
use crate::kube::metrics::KubeMetrics;
use crate::liveness::Heartbeats;
use crate::memory::judge::OomKillCounts;
use crate::memory::pod_usage::CgroupPodMemory;
use crate::model::{CriHealth, PodUsage};
use crate::mounts::detached::DetachedMounts;
use crate::mounts::unmount::MountDetacher;
use crate::remedy::actuators::{Actuators, DiskReclaim, MountRemedy, PodMemory, SandboxRemedy};
use crate::remedy::cluster::ClusterLink;
use crate::remedy::error::{ActionError, Target};
use crate::remedy::policy_loop::LoopConfig;
use crate::runtime::metrics::RuntimeMetrics;
use crate::watchdog::{Feeder, WatchdogConfig};

/// The node-facing edges, injectable so integration tests can point them elsewhere.
pub(crate) struct Edges {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) files: Arc<dyn HostFiles>,
    pub(crate) notifier: Arc<dyn Notifier>,
}

impl Edges {
    pub fn real(cfg: &Config) -> Self {
        Edges {
            clock: Arc::new(SystemClock),
            files: Arc::new(RootedFiles::new(&cfg.host_root)),
            notifier: Arc::new(SdNotifier),
        }
    }
}

/// The node name: config, else the hostname lowercased, as k3s does (one rule, shared with
/// the Kubernetes client). A hostname that is no valid node name is shown as it is.
pub(crate) fn node_name(cfg: &Config) -> String {
    let host = credentials::system_hostname().unwrap_or_else(|_| "unknown".into());
    credentials::node_name(cfg.node_name.as_deref(), &host).unwrap_or_else(|_| host.to_lowercase())
}

pub(crate) fn boot_id(files: &dyn HostFiles) -> String {
    files
        .read_string("proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// What detectors need beyond the config.
pub(crate) struct DetectorEnv<'a> {
    pub(crate) edges: &'a Edges,
    pub(crate) boot_id: String,
    /// Where detectors persist cursors; None for one-shot commands (`check`).
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// None for one-shot commands.
    pub(crate) registry: Option<&'a mut Registry>,
    /// Mounts nodemedic lazily unmounted, shared with the unmount actuator.
    pub(crate) detached: Option<Arc<DetachedMounts>>,
    /// Shared with the sandbox actuator (it counts what it removes).
    pub(crate) runtime_metrics: Option<RuntimeMetrics>,
    /// What the etcd detector shares with the policy loop.
    pub(crate) links: DetectorLinks,
}

/// Views a detector shares with the policy loop, created once by the daemon.
#[derive(Clone, Default)]
pub(crate) struct DetectorLinks {
    /// The local etcd member's view of its peers (quorum rail, API unreachable).
    pub(crate) local_etcd: crate::model::LocalEtcdView,
    /// Events detectors ask for (etcd leader changes).
    pub(crate) events: crate::model::EventOutbox,
    /// The kernel detector's storage events for the storage detector; the daemon wakes
    /// its long wait when stopping.
    pub(crate) storage: crate::model::StorageEvents,
}

/// What this node is for the quorum rail, from its files.
pub(crate) fn server_facts(
    cfg: &Config,
    files: &dyn HostFiles,
    links: &DetectorLinks,
) -> crate::remedy::servers::ServerFacts {
    let is_server = files.exists(crate::datastore::etcd_detector::SERVER_DIR);
    crate::remedy::servers::ServerFacts {
        is_server,
        self_etcd: is_server && files.exists("var/lib/rancher/k3s/server/db/etcd"),
        sqlite: is_server && files.exists(cfg.kine.db.trim_start_matches('/')),
        node: node_name(cfg),
        local_etcd: Some(links.local_etcd.clone()),
    }
}

/// The k3s unit watched and restarted: `remedy.k3s_unit` resolved ("auto": the server's
/// unit if installed, else the agent's).
pub(crate) fn k3s_unit(cfg: &Config, files: &dyn HostFiles) -> Option<String> {
    crate::remedy::services::resolve_k3s_unit(&cfg.remedy.k3s_unit, files)
}

/// The local apiserver's `/readyz` with this node's credentials, as a k3s liveness probe.
struct ApiserverReadyz(crate::kube::readyz::Readyz);

impl LivenessProbe for ApiserverReadyz {
    fn name(&self) -> &'static str {
        "apiserver"
    }
    fn target(&self) -> String {
        self.0.url().to_string()
    }
    fn check(&self, deadline: std::time::Duration) -> ProbeAnswer {
        use crate::kube::readyz::ReadyzAnswer;
        match self.0.get(deadline) {
            ReadyzAnswer::Status { code, body } => {
                crate::k3s::http_probe::judge_healthz(&crate::edge::http_get::HttpAnswer {
                    status: code,
                    body,
                })
            }
            ReadyzAnswer::Refused(e) => ProbeAnswer::Refused(e),
            ReadyzAnswer::Failed(e) => ProbeAnswer::Failed(e),
        }
    }
}

/// The apiserver probe for a server, or why there is none. Quiet: `run` reports the
/// credentials it uses once.
fn apiserver_probe(cfg: &Config) -> Result<Arc<dyn LivenessProbe>, String> {
    if !cfg.kubernetes.enabled {
        return Err("[kubernetes] is disabled: no credentials to ask it with".into());
    }
    let explicit = (!cfg.kubernetes.kubeconfig.is_empty())
        .then(|| std::path::PathBuf::from(&cfg.kubernetes.kubeconfig));
    let source = credentials::discover(&Discovery::host(&cfg.host_root, explicit.as_deref()))
        .map_err(|e| e.to_string())?;
    let r = crate::kube::readyz::Readyz::new(
        &source,
        &cfg.host_root,
        &cfg.k3s.apiserver_url,
        cfg.k3s.probe_timeout.get(),
    )?;
    Ok(Arc::new(ApiserverReadyz(r)))
}

/// Every detector the config enables.
pub(crate) fn build_detectors(cfg: &Config, env: DetectorEnv<'_>) -> Vec<Box<dyn Detector>> {
    let DetectorEnv {
        edges,
        boot_id,
        state_dir,
        mut registry,
        detached,
        runtime_metrics,
        links,
    } = env;
    let mut v: Vec<Box<dyn Detector>> = Vec::new();
    let cri_health = CriHealth::default();
    let memory_metrics = registry
        .as_mut()
        .map(|r| crate::memory::metrics::MemoryMetrics::register(r));
    let mut nfs = None;
    let mut limit_hits = None;
    // The kernel detector's storage events go to the storage detector.
    let storage_events = links.storage.clone();
    if cfg.kernel.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::kernel::metrics::KernelMetrics::register(r));
        let k = crate::kernel::detector::KernelDetector::new(
            cfg.kernel.clone(),
            crate::kernel::detector::KernelDeps {
                files: edges.files.clone(),
                clock: edges.clock.clone(),
                metrics,
                oom_kills: memory_metrics.clone().map(|m| {
                    let mut counts = OomKillCounts::default();
                    Box::new(move |cgroup: &str| m.record_oom(&mut counts, cgroup))
                        as crate::kernel::detector::OomKillSink
                }),
                boot_id: boot_id.clone(),
                state_dir: state_dir.clone(),
                runtime_dir: state_dir.as_ref().map(|_| cfg.runtime_dir.clone()),
                source: None,
                storage: cfg.storage.enabled.then(|| storage_events.clone()),
            },
        )
        // Hung-task reports on users' FUSE mounts (issue 18.1): mountinfo and fusectl.
        .with_hung_task_waits(Arc::new(crate::mounts::hung_wait::FuseWaitResolver::new(
            edges.files.clone(),
        )));
        nfs = Some(k.nfs_servers_down());
        limit_hits = Some(k.limit_hits());
        v.push(Box::new(k));
    }
    if cfg.mounts.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::mounts::metrics::MountMetrics::register(r));
        let mut det = crate::mounts::detector::MountsDetector::new(
            cfg.mounts.clone(),
            edges.files.clone(),
            metrics,
            nfs,
        );
        if let Some(d) = detached {
            det = det.with_detached(d);
        }
        if cfg.storage.enabled {
            // A filesystem mounted since the storage detector's last pass is watched now,
            // not at its next timed pass.
            let storage = storage_events.clone();
            det = det.on_table_change(Box::new(move || storage.wake()));
        }
        v.push(Box::new(det));
    }
    if cfg.runtime.enabled {
        v.push(Box::new(
            crate::runtime::detector::RuntimeDetector::real(
                cfg.runtime.clone(),
                edges.clock.clone(),
                runtime_metrics,
                state_dir.clone(),
            )
            .with_health(cri_health.clone()),
        ));
    }
    if cfg.storage.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::storage::metrics::StorageMetrics::register(r));
        v.push(Box::new(crate::storage::detector::StorageDetector::new(
            cfg.storage.clone(),
            cfg.state_dir.clone(),
            edges.files.clone(),
            edges.clock.clone(),
            storage_events,
            cfg.storage.probe.then(|| {
                Box::new(PooledWriteProbes::new(WRITE_PROBE_THREADS))
                    as Box<dyn crate::storage::probe::WriteProbes>
            }),
            metrics,
        )));
    }
    if cfg.memory.enabled {
        v.push(Box::new(crate::memory::detector::MemoryDetector::new(
            cfg.memory.clone(),
            edges.files.clone(),
            edges.clock.clone(),
            memory_metrics,
        )));
    }
    if cfg.limits.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::limits::metrics::LimitsMetrics::register(r));
        v.push(Box::new(crate::limits::detector::LimitsDetector::new(
            cfg.limits.clone(),
            crate::limits::detector::LimitsDeps {
                files: edges.files.clone(),
                clock: edges.clock.clone(),
                fs: Box::new(crate::limits::statfs::RealFsStats::default()),
                hits: limit_hits,
                metrics,
            },
        )));
    }
    if cfg.k3s.enabled {
        match k3s_unit(cfg, edges.files.as_ref()) {
            Some(unit) => {
                let server = crate::k3s::detector::is_server(cfg.k3s.role, &unit);
                let apiserver = if server && !cfg.k3s.apiserver_url.is_empty() {
                    apiserver_probe(cfg)
                } else {
                    Err("not a server".into())
                };
                let metrics = registry
                    .as_mut()
                    .map(|r| crate::k3s::metrics::K3sMetrics::register(r));
                v.push(Box::new(crate::k3s::detector::K3sDetector::real(
                    cfg.k3s.clone(),
                    crate::k3s::detector::K3sSetup {
                        unit,
                        server,
                        apiserver,
                    },
                    edges.clock.clone(),
                    edges.files.clone(),
                    cfg.runtime.enabled.then_some(cri_health),
                    metrics,
                )));
            }
            None => log::info!(
                "k3s detector: no k3s unit installed (k3s.service, k3s-agent.service); set remedy.k3s_unit to watch another"
            ),
        }
    }
    if cfg.clock.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::clock::metrics::ClockMetrics::register(r));
        v.push(Box::new(crate::clock::detector::ClockDetector::new(
            cfg.clock.clone(),
            edges.clock.clone(),
            Arc::new(crate::edge::timex::KernelNtp),
            metrics,
        )));
    }
    if cfg.etcd.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::datastore::metrics::EtcdMetrics::register(r));
        v.push(Box::new(
            crate::datastore::etcd_detector::EtcdDetector::new(
                cfg.etcd.clone(),
                crate::datastore::etcd_detector::EtcdDeps {
                    files: edges.files.clone(),
                    clock: edges.clock.clone(),
                    metrics,
                    local: links.local_etcd.clone(),
                    events: Some(links.events.clone()),
                    endpoint: None,
                },
            ),
        ));
    }
    if cfg.kine.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::datastore::metrics::KineMetrics::register(r));
        v.push(Box::new(
            crate::datastore::kine_detector::KineDetector::new(
                cfg.kine.clone(),
                crate::datastore::kine_detector::KineDeps {
                    files: edges.files.clone(),
                    clock: edges.clock.clone(),
                    metrics,
                    state_dir: state_dir.clone(),
                    journal: None,
                },
            ),
        ));
    }
    if cfg.certificates.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::certs::metrics::CertMetrics::register(r));
        v.push(Box::new(crate::certs::detector::CertDetector::new(
            cfg.certificates.clone(),
            edges.files.clone(),
            edges.clock.clone(),
            metrics,
        )));
    }
    if cfg.power.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::power::metrics::PowerMetrics::register(r));
        v.push(Box::new(crate::power::detector::PowerDetector::new(
            cfg.power.clone(),
            crate::power::detector::PowerDeps {
                files: edges.files.clone(),
                clock: edges.clock.clone(),
                metrics,
                boot_id: boot_id.clone(),
                state_dir: state_dir.clone(),
                mailbox: None,
            },
        )));
    }
    v
}

/// The storage write probe on the mount prober's pool: a deadline, a thread cap, and a
/// probe that hangs is parked and never stacked.
struct PooledWriteProbes(crate::mounts::prober::Prober);

/// At most three filesystems are write-probed (`/`, the k3s data dir, the state dir), each
/// never stacked: one thread each plus one spare. Its own pool, so a hung disk never takes
/// the threads of the network-mount prober.
const WRITE_PROBE_THREADS: usize = 4;

struct WriteSyscall;

impl crate::mounts::prober::ProbeSyscall for WriteSyscall {
    fn probe(
        &self,
        path: &std::path::Path,
        _kind: crate::mounts::prober::ProbeKind,
    ) -> std::io::Result<()> {
        crate::storage::probe::write_probe(path)
    }
}

impl PooledWriteProbes {
    fn new(max_threads: usize) -> Self {
        PooledWriteProbes(crate::mounts::prober::Prober::new(
            crate::mounts::prober::ProberConfig {
                max_threads: max_threads.max(1),
                ..Default::default()
            },
            Arc::new(WriteSyscall),
        ))
    }
}

impl crate::storage::probe::WriteProbes for PooledWriteProbes {
    fn probe_all(
        &mut self,
        dirs: &[std::path::PathBuf],
        deadline: std::time::Duration,
    ) -> Vec<(crate::storage::probe::WriteOutcome, std::time::Duration)> {
        use crate::mounts::prober::ProbeState;
        use crate::storage::probe::WriteOutcome;
        self.0
            .probe_all(dirs, deadline)
            .into_iter()
            .map(|r| {
                let o = match r.state {
                    ProbeState::Ok => WriteOutcome::Ok,
                    ProbeState::Failed { errno, error } => WriteOutcome::Failed { errno, error },
                    ProbeState::Stuck => WriteOutcome::Stuck,
                    ProbeState::NotProbed(why) => WriteOutcome::NotProbed(format!("{why:?}")),
                };
                (o, r.duration)
            })
            .collect()
    }
}

/// The hardware watchdog, fed only while every loop beats; None when nodemedic does not
/// own it (or it cannot be opened: logged, the daemon runs on without it). A withheld feed
/// is recorded as a reboot intent for the next boot (`watchdog_intent`).
pub(crate) fn start_watchdog(
    cfg: &Config,
    liveness: &Heartbeats,
    boot_id: &str,
    clock: Arc<dyn Clock>,
) -> Option<Feeder> {
    if cfg.watchdog.owner != crate::config::watchdog::Owner::Nodemedic {
        return None;
    }
    let health = super::watchdog_intent::health_with_intent(
        liveness.clone(),
        cfg.state_dir.clone(),
        boot_id.to_string(),
        move || clock.unix_secs(),
    );
    match crate::watchdog::start(&WatchdogConfig::from_section(&cfg.watchdog), health) {
        Ok(f) => f,
        Err(e) => {
            log::error!("hardware watchdog not armed: {e}");
            None
        }
    }
}

/// The policy loop's view of the config.
pub(crate) fn loop_config(
    cfg: &Config,
    files: &dyn HostFiles,
    boot_id: &str,
    min_sane_unix: u64,
) -> LoopConfig {
    LoopConfig {
        policy: crate::policy::policy_config(cfg),
        remedy: {
            // Below the loop's stuck_after whatever the config says: a slow action must be
            // reported before the loop counts as stuck.
            let mut r = cfg.remedy.clone();
            let cap = cfg.health.stuck_after.get() * 2 / 3;
            if r.action_deadline.get() > cap {
                r.action_deadline = crate::config::ConfigDuration(cap);
            }
            r
        },
        pause_file: cfg.policy.pause_file.clone().into(),
        k3s_unit: crate::remedy::services::resolve_k3s_unit(&cfg.remedy.k3s_unit, files),
        boot_id: boot_id.to_string(),
        min_sane_unix,
        state_dir: cfg.state_dir.clone(),
        post_events: cfg.kubernetes.events,
        publish_conditions: cfg.kubernetes.conditions,
        evict_min_bytes: u64::from(cfg.memory.evict_min_working_set_mib) << 20,
        detector_events: Default::default(),
        reboot_lease: cfg.kubernetes.reboot_lease,
    }
}

/// The real actuators the policy loop drives.
pub(crate) fn actuators(
    cfg: &Config,
    files: &Arc<dyn HostFiles>,
    feeder: Option<&Feeder>,
    detached: Arc<DetachedMounts>,
    runtime_metrics: RuntimeMetrics,
    cluster: Arc<ClusterLink>,
) -> Actuators {
    Actuators {
        services: Arc::new(crate::remedy::services::Systemctl),
        rebooter: Arc::new(crate::remedy::rebooter::SystemRebooter {
            argv: cfg.remedy.reboot_command.clone(),
            plan: crate::remedy::reboot::RebootPlan {
                graceful_deadline: cfg.remedy.reboot_deadline.get(),
                ..Default::default()
            },
            syscall_fallback: cfg.remedy.reboot_syscall_fallback,
            feeder: feeder.map(|f| f.handle()),
            ended: Default::default(),
            via_logind: cfg.remedy.reboot_via_logind,
        }),
        mounts: Some(Arc::new(crate::mounts::unmount::MountDetacher::new(
            files.clone(),
            crate::mounts::unmount::UnmountRules::from_config(&cfg.mounts)
                .with_host_kubelet_roots(&cfg.host_root),
            Arc::new(crate::mounts::unmount::LinuxUnmounter::new()),
            detached,
        ))),
        sandboxes: Some(Arc::new(CriSandboxes {
            cfg: cfg.runtime.clone(),
            metrics: Some(runtime_metrics),
        })),
        pod_memory: Some(Arc::new(crate::memory::pod_usage::CgroupPodMemory {
            files: files.clone(),
        })),
        disk: Some(Arc::new(disk_reclaimer(cfg))),
        cluster,
    }
}

/// The disk reclaim step: the journal half from `limits`, the image half over CRI.
pub(crate) fn disk_reclaimer(cfg: &Config) -> crate::limits::reclaim::Reclaimer {
    crate::limits::reclaim::Reclaimer {
        cfg: cfg.limits.clone(),
        host_root: cfg.host_root.clone(),
        images_root: cfg.preflight.containerd_root.clone(),
        images: Some(Box::new(CriImages {
            cfg: cfg.runtime.clone(),
        })),
        vacuum: crate::limits::reclaim::journalctl_vacuum(),
        device_of: crate::limits::reclaim::st_dev(),
    }
}

/// Credentials for the Kubernetes API, if enabled and found. Not finding any is normal on
/// a machine without k3s: said once, and cluster features stay off.
pub(crate) fn kube_source(cfg: &Config) -> Option<CredentialSource> {
    if !cfg.kubernetes.enabled {
        return None;
    }
    let explicit = (!cfg.kubernetes.kubeconfig.is_empty())
        .then(|| std::path::PathBuf::from(&cfg.kubernetes.kubeconfig));
    let d = Discovery::host(&cfg.host_root, explicit.as_deref());
    match credentials::discover(&d) {
        Ok(s) => {
            log::info!("Kubernetes: using {}", s.describe());
            Some(s)
        }
        Err(e) => {
            log::info!("Kubernetes: {e}");
            None
        }
    }
}

/// What `kubernetes.reboot_lease` means with these credentials: said by the start-up log
/// and `nodemedic check`.
pub(crate) fn reboot_lease_summary(cfg: &Config, source: Option<&CredentialSource>) -> String {
    use crate::config::kubernetes::RebootLease;
    let mode = cfg.kubernetes.reboot_lease;
    let can = source.map(|s| s.capabilities().leases);
    let what = match (mode, can) {
        (RebootLease::Off, _) => "reboots never take the cluster lease",
        (RebootLease::WhenPermitted, Some(true)) => {
            "reboots take the cluster lease while the API answers, and go without it while it does not"
        }
        (RebootLease::WhenPermitted, Some(false)) => {
            "these credentials may not take the cluster lease (a k3s agent's kubelet identity): reboots go without it"
        }
        (RebootLease::WhenPermitted, None) => {
            "no Kubernetes credentials: reboots go without the cluster lease"
        }
        (RebootLease::Required, Some(true)) => {
            "reboots wait for the cluster lease, also while the API is unreachable"
        }
        (RebootLease::Required, _) => {
            "the lease is required but these credentials cannot take it: NO automatic reboot will happen"
        }
    };
    format!("kubernetes.reboot_lease = \"{}\": {what}", mode.as_str())
}

pub(crate) async fn start_kube_task(
    cfg: &Config,
    source: CredentialSource,
    link: Arc<ClusterLink>,
    metrics: Option<KubeMetrics>,
    clock: Arc<dyn Clock>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    use crate::kube::client::{KubeClient, Timeouts};
    use crate::kube::sync::{NodeSync, Now, SyncConfig};
    let timeouts = Timeouts {
        request: cfg.kubernetes.request_timeout.get(),
        ..Timeouts::default()
    };
    let client = match KubeClient::connect(&source, &cfg.host_root, timeouts, metrics.clone()).await
    {
        Ok(c) => c,
        Err(e) => {
            log::error!("Kubernetes: {e}; cluster features stay off");
            link.set_configured(false);
            return;
        }
    };
    let mut sc = SyncConfig::new(node_name(cfg), source.capabilities());
    sc.lease = crate::kube::lease::LeaseConfig::from_section(&cfg.kubernetes);
    let now = Now {
        wall: clock.wall(),
        mono: clock.monotonic(),
    };
    let seed = u64::from(std::process::id()) ^ clock.monotonic().as_nanos() as u64;
    let mut sync = NodeSync::new(client, sc, now, seed);
    if let Some(m) = metrics {
        sync = sync.with_metrics(m);
    }
    tokio::spawn(crate::remedy::cluster::run(
        link,
        sync,
        clock,
        cfg.kubernetes.sync_interval.get(),
        cfg.kubernetes.pause_annotation.clone(),
        crate::remedy::cluster::PauseRecorder::new(Some(cfg.state_dir.clone())),
        stop,
    ));
}

// The detector subsystems' actuators, as the policy loop's traits.

impl MountRemedy for MountDetacher {
    fn detach(&self, mountpoint: &str) -> Result<String, ActionError> {
        use crate::mounts::unmount::DetachError;
        let target = || Target::Mount(mountpoint.to_string());
        MountDetacher::detach(self, mountpoint).map_err(|e| match e {
            DetachError::Refused(why) => ActionError::refused(target(), why),
            DetachError::Failed(d) => ActionError::failed(target(), d),
            e @ (DetachError::Mountinfo(_) | DetachError::Stuck(_)) => {
                ActionError::unavailable(target(), e.to_string())
            }
        })
    }
}

/// The real sandbox actuator: a CRI connection per use (the daemon holds none open to a
/// runtime that may be stuck), removing only NotReady holders of exactly that name.
pub(crate) struct CriSandboxes {
    pub(crate) cfg: crate::config::RuntimeSection,
    pub(crate) metrics: Option<crate::runtime::metrics::RuntimeMetrics>,
}

impl SandboxRemedy for CriSandboxes {
    fn remove_conflicting(&self, name: &str) -> Result<String, ActionError> {
        use crate::runtime::resolve::{self, ResolveError};
        let target = || Target::Sandbox(name.to_string());
        let mut cri = resolve::connect(&self.cfg).map_err(|e| {
            ActionError::unavailable(
                target(),
                format!(
                    "cannot reach the container runtime at {}: {e}",
                    self.cfg.socket.display()
                ),
            )
        })?;
        let count = |n: usize| {
            if let Some(m) = &self.metrics {
                m.removed_at_runtime(n as u64);
            }
        };
        match resolve::resolve_conflicts(&mut cri, name, resolve::MAX_PER_CONFLICT) {
            Ok(removed) => {
                count(removed.len());
                let ids: Vec<&str> = removed.iter().map(|r| r.id.as_str()).collect();
                Ok(format!(
                    "removed {} dead sandbox(es) holding {name}: {}",
                    removed.len(),
                    ids.join(", ")
                ))
            }
            Err(e) => {
                count(e.removed().len());
                Err(match e {
                    ResolveError::BadSubject(_) | ResolveError::OverCap { .. } => {
                        ActionError::refused(target(), e.to_string())
                    }
                    ResolveError::List(_) => ActionError::unavailable(target(), e.to_string()),
                    ResolveError::Failed { .. } => ActionError::failed(target(), e.to_string()),
                })
            }
        }
    }
}

/// The image half of the disk reclaim: a CRI connection per use, as for sandboxes.
pub(crate) struct CriImages {
    pub(crate) cfg: crate::config::RuntimeSection,
}

impl crate::limits::reclaim::ImagePruner for CriImages {
    fn prune(&self, deadline: std::time::Instant) -> Result<String, String> {
        let mut cri = crate::runtime::resolve::connect(&self.cfg).map_err(|e| {
            format!(
                "cannot reach the container runtime at {}: {e}",
                self.cfg.socket.display()
            )
        })?;
        crate::runtime::images::prune(&mut cri, deadline)
    }
}

impl DiskReclaim for crate::limits::reclaim::Reclaimer {
    fn reclaim(&self, path: &str) -> Result<String, ActionError> {
        // The reclaimer's errors are a path it cannot stat or steps that all failed.
        crate::limits::reclaim::Reclaimer::reclaim(self, path)
            .map_err(|e| ActionError::failed(Target::Filesystem(path.to_string()), e))
    }
}

impl PodMemory for CgroupPodMemory {
    fn besteffort_usage(&self) -> Result<Vec<PodUsage>, ActionError> {
        use crate::memory::pod_usage::PodUsageError;
        CgroupPodMemory::besteffort_usage(self).map_err(|e| match e {
            PodUsageError::NoQosCgroup(why) => ActionError::refused(Target::PodCgroups, why),
            PodUsageError::Unreadable(d) => ActionError::unavailable(Target::PodCgroups, d),
            PodUsageError::Malformed(d) => ActionError::failed(Target::PodCgroups, d),
        })
    }
}
