//! `nodemedic run`: wires detectors, the hub, the policy loop, the HTTP endpoint and the
//! systemd keep-alive together. Startup order matters: config is already valid (main),
//! then the state dir is locked and loaded, the listener bound, loops started, and only
//! then `READY=1`, so systemd's "active" means "scrapable and watching".

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use crate::audit::AuditLog;
use crate::config::{Config, ConfigOrigin, RunMode};
use crate::detect::{self, Detector};
use crate::edge::{Clock, HostFiles, Notice, Notifier, RootedFiles, SdNotifier, SystemClock};
use crate::http::{self, App, StaticInfo};
use crate::hub::Hub;
use crate::keepalive;
use crate::liveness::{Liveness, Shutdown};
use crate::metrics::CoreMetrics;
use crate::state::{DirLock, LoadOutcome, StateStore};

/// systemd's default stop timeout is 90 s; we promise 5 s. Threads still busy after this
/// (e.g. stuck in a syscall on a dead mount) are abandoned: the process exits anyway.
pub const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// How often the async runtime proves it is alive. Each beat vouches for the next one, so
/// a blocked runtime reads as stuck `health.stuck_after` past a missed beat; 5 s keeps
/// idle wake-ups few without delaying that much.
pub const RUNTIME_BEAT: Duration = Duration::from_secs(5);

/// The policy waits this long at most for every detector's first pass.
pub const FIRST_PASS_WAIT: Duration = Duration::from_secs(60);

/// Errors that stop the daemon, mapped to exit codes by main.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory {dir}: {source}")]
    State { dir: String, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}; free the port or set `listen` in the config")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The node-facing edges, injectable so integration tests can point them elsewhere.
pub struct Edges {
    pub clock: Arc<dyn Clock>,
    pub files: Arc<dyn HostFiles>,
    pub notifier: Arc<dyn Notifier>,
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
pub fn node_name(cfg: &Config) -> String {
    let host = crate::kube::credentials::system_hostname().unwrap_or_else(|_| "unknown".into());
    crate::kube::credentials::node_name(cfg.node_name.as_deref(), &host)
        .unwrap_or_else(|_| host.to_lowercase())
}

pub fn boot_id(files: &dyn HostFiles) -> String {
    files
        .read_string("proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// What detectors need beyond the config.
pub struct DetectorEnv<'a> {
    pub edges: &'a Edges,
    pub boot_id: String,
    /// Where detectors persist cursors; None for one-shot commands (`check`).
    pub state_dir: Option<std::path::PathBuf>,
    /// None for one-shot commands.
    pub registry: Option<&'a mut Registry>,
    /// Mounts nodemedic lazily unmounted, shared with the unmount actuator.
    pub detached: Option<Arc<crate::mounts::detached::DetachedMounts>>,
    /// Shared with the sandbox actuator (it counts what it removes).
    pub runtime_metrics: Option<crate::runtime::metrics::RuntimeMetrics>,
}

/// Every detector the config enables.
pub fn build_detectors(cfg: &Config, env: DetectorEnv<'_>) -> Vec<Box<dyn Detector>> {
    let DetectorEnv {
        edges,
        boot_id,
        state_dir,
        mut registry,
        detached,
        runtime_metrics,
    } = env;
    let mut v: Vec<Box<dyn Detector>> = Vec::new();
    let memory_metrics = registry
        .as_mut()
        .map(|r| crate::memory::MemoryMetrics::register(r));
    let mut nfs = None;
    if cfg.kernel.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::kernel::detector::KernelMetrics::register(r));
        let k = crate::kernel::detector::KernelDetector::new(
            cfg.kernel.clone(),
            crate::kernel::detector::KernelDeps {
                files: edges.files.clone(),
                clock: edges.clock.clone(),
                metrics,
                memory_metrics: memory_metrics.clone(),
                boot_id,
                state_dir: state_dir.clone(),
                source: None,
            },
        );
        nfs = Some(k.nfs.clone());
        v.push(Box::new(k));
    }
    if cfg.mounts.enabled {
        let metrics = registry
            .as_mut()
            .map(|r| crate::mounts::detector::MountMetrics::register(r));
        let mut det = crate::mounts::detector::MountsDetector::new(
            cfg.mounts.clone(),
            edges.files.clone(),
            metrics,
            nfs,
        );
        if let Some(d) = detached {
            det = det.with_detached(d);
        }
        v.push(Box::new(det));
    }
    if cfg.runtime.enabled {
        v.push(Box::new(crate::runtime::detector::RuntimeDetector::real(
            cfg.runtime.clone(),
            edges.clock.clone(),
            runtime_metrics,
            state_dir.clone(),
        )));
    }
    if cfg.memory.enabled {
        v.push(Box::new(crate::memory::MemoryDetector::new(
            cfg.memory.clone(),
            edges.files.clone(),
            edges.clock.clone(),
            memory_metrics,
        )));
    }
    v
}

pub fn run(cfg: Config, origin: ConfigOrigin) -> Result<(), DaemonError> {
    let edges = Edges::real(&cfg);
    run_with(cfg, origin, edges)
}

pub fn run_with(cfg: Config, origin: ConfigOrigin, edges: Edges) -> Result<(), DaemonError> {
    let Edges {
        clock,
        files,
        notifier,
    } = &edges;
    let state_err = |source| DaemonError::State {
        dir: cfg.state_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&cfg.state_dir).map_err(state_err)?;
    let _lock = DirLock::acquire(&cfg.state_dir).map_err(state_err)?;
    let (mut store, outcome) =
        StateStore::load(&cfg.state_dir, clock.unix_secs()).map_err(state_err)?;
    match &outcome {
        LoadOutcome::Recovered { error, moved_to } => log::error!(
            "state file {} was corrupt ({error}); moved it to {} and started from safe defaults (reboot budget treated as spent for 24 h)",
            store.path().display(),
            moved_to.display()
        ),
        LoadOutcome::Fresh => log::info!(
            "no state file yet at {}; starting fresh",
            store.path().display()
        ),
        LoadOutcome::Loaded => {}
    }
    let boot = boot_id(files.as_ref());
    if store.note_boot(&boot) {
        let marker = crate::state::read_clean_shutdown(&cfg.state_dir);
        match store.judge_previous_shutdown(marker.as_ref()) {
            Some(true) => {
                log::info!("first start in boot {boot}; the previous boot shut down cleanly")
            }
            Some(false) => log::warn!(
                "first start in boot {boot}; the previous boot ended WITHOUT a clean shutdown (power cut, watchdog reset or panic); unclean shutdowns so far: {}",
                store.counter("unclean_shutdowns")
            ),
            None => log::info!("first start in boot {boot}"),
        }
    }
    // A board without RTC boots in the past: until the clock passes what the previous run
    // saw, time-based rails (the reboot budget window) cannot be trusted.
    let min_sane_unix = store.data.last_seen_unix;
    if clock.unix_secs() < min_sane_unix {
        log::warn!(
            "the wall clock ({}) is behind the last time nodemedic ran ({}): not synced yet; reboots are held back until it is",
            crate::timefmt::rfc3339_utc(clock.unix_secs_f64()),
            crate::timefmt::rfc3339_utc(min_sane_unix as f64)
        );
    }
    store.data.last_seen_unix = store.data.last_seen_unix.max(clock.unix_secs());
    store.save().map_err(state_err)?;
    let audit = AuditLog::open(&cfg.state_dir, cfg.audit.max_entries).map_err(state_err)?;

    let mut registry = Registry::default();
    let core = CoreMetrics::register(&mut registry);
    core.unclean_shutdowns
        .inc_by(store.counter("unclean_shutdowns"));
    let (change_tx, change_rx) = mpsc::channel();
    let hub = Arc::new(Hub::new(core.clone(), Some(change_tx)));
    hub.set_persisted(serde_json::to_value(&store.data).unwrap_or_default());
    let liveness = Liveness::new(clock.clone(), cfg.health.stuck_after.get());
    let shutdown = Shutdown::default();

    let addr: SocketAddr = cfg.listen.parse().expect("validated by Config::validate");
    let std_listener = std::net::TcpListener::bind(addr).map_err(|source| DaemonError::Listen {
        addr: cfg.listen.clone(),
        source,
    })?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;

    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let detached = Arc::new(crate::mounts::detached::DetachedMounts::default());
    let runtime_metrics = crate::runtime::metrics::RuntimeMetrics::register(&mut registry);
    let detectors = build_detectors(
        &cfg,
        DetectorEnv {
            edges: &edges,
            boot_id: boot.clone(),
            state_dir: Some(cfg.state_dir.clone()),
            registry: Some(&mut registry),
            detached: Some(detached.clone()),
            runtime_metrics: Some(runtime_metrics.clone()),
        },
    );
    let names: Vec<&str> = detectors.iter().map(|d| d.name()).collect();
    log::info!(
        "detectors: {}",
        if names.is_empty() {
            "none enabled".into()
        } else {
            names.join(", ")
        }
    );
    for d in detectors {
        let hb = liveness.register(&format!("detector:{}", d.name()));
        threads.push(detect::spawn(
            d,
            hub.clone(),
            hb,
            shutdown.clone(),
            clock.clone(),
        )?);
    }

    let store = Arc::new(Mutex::new(store));
    let policy_metrics = crate::remedy::metrics::PolicyMetrics::register(&mut registry);
    let cluster_source = kube_source(&cfg);
    // Only with credentials: an API-down gauge on a node without Kubernetes would alert.
    let kube_metrics = cluster_source
        .as_ref()
        .map(|_| crate::kube::metrics::KubeMetrics::register(&mut registry));
    let cluster = crate::remedy::cluster::ClusterLink::new(cluster_source.is_some());

    // The hardware watchdog is fed only while every loop beats.
    let feeder = {
        let liveness = liveness.clone();
        match crate::watchdog::start(
            &crate::watchdog::WatchdogConfig::from_section(&cfg.watchdog),
            move || liveness.stuck().is_empty(),
        ) {
            Ok(f) => f,
            Err(e) => {
                log::error!("hardware watchdog not armed: {e}");
                None
            }
        }
    };
    let watchdog_metrics = feeder.as_ref().map(|f| {
        let m = crate::remedy::metrics::WatchdogMetrics::register(&mut registry);
        m.update(&f.handle());
        (m, f.handle())
    });

    {
        let hb = liveness.register("policy");
        let (hub, shutdown, clock, store) =
            (hub.clone(), shutdown.clone(), clock.clone(), store.clone());
        let loop_cfg = crate::remedy::policy_loop::LoopConfig {
            policy: crate::policy::policy_config(&cfg),
            remedy: cfg.remedy.clone(),
            pause_file: cfg.policy.pause_file.clone().into(),
            k3s_unit: crate::remedy::services::resolve_k3s_unit(
                &cfg.remedy.k3s_unit,
                files.as_ref(),
            ),
            boot_id: boot.clone(),
            min_sane_unix,
            state_dir: cfg.state_dir.clone(),
            post_events: cfg.kubernetes.events,
            publish_conditions: cfg.kubernetes.conditions,
            evict_min_bytes: u64::from(cfg.memory.evict_min_working_set_mib) << 20,
        };
        let actuators = crate::remedy::policy_loop::Actuators {
            services: Arc::new(crate::remedy::services::Systemctl),
            rebooter: Arc::new(crate::remedy::rebooter::SystemRebooter {
                argv: cfg.remedy.reboot_command.clone(),
                plan: crate::remedy::reboot::RebootPlan {
                    graceful_deadline: cfg.remedy.reboot_deadline.get(),
                    ..Default::default()
                },
                syscall_fallback: cfg.remedy.reboot_syscall_fallback,
                feeder: feeder.as_ref().map(|f| f.handle()),
            }),
            mounts: Some(Arc::new(crate::mounts::unmount::MountDetacher::new(
                files.clone(),
                crate::mounts::unmount::UnmountRules::from_config(&cfg.mounts),
                Arc::new(crate::mounts::unmount::LinuxUnmounter::new()),
                detached.clone(),
            ))),
            sandboxes: Some(Arc::new(crate::remedy::policy_loop::CriSandboxes {
                cfg: cfg.runtime.clone(),
                metrics: Some(runtime_metrics.clone()),
            })),
            pod_memory: Some(Arc::new(crate::memory::pod_usage::CgroupPodMemory {
                files: files.clone(),
            })),
            cluster: cluster.clone(),
        };
        let tick = cfg.remedy.tick.get();
        let detector_count = names.len();
        let mut policy = crate::remedy::policy_loop::PolicyLoop::new(
            loop_cfg,
            actuators,
            hub.clone(),
            store.clone(),
            audit,
            policy_metrics,
            clock.clone(),
        );
        threads.push(
            std::thread::Builder::new()
                .name("policy".into())
                .spawn(move || {
                    let started = Instant::now();
                    let mut ready = false;
                    while !shutdown.is_triggered() {
                        let wait = if ready && policy.idle() {
                            crate::remedy::IDLE_TICK.max(tick)
                        } else {
                            tick
                        };
                        hb.beat_for(wait);
                        match change_rx.recv_timeout(wait) {
                            Ok(change) => policy.on_change(&change),
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                        while let Ok(change) = change_rx.try_recv() {
                            policy.on_change(&change);
                        }
                        // Decide only once every detector has published its first pass:
                        // a restarted daemon must not end episodes it simply has not
                        // re-derived yet.
                        if !ready {
                            let ran = hub
                                .detectors()
                                .values()
                                .filter(|d| d.last_run_unix.is_some())
                                .count();
                            ready = ran >= detector_count || started.elapsed() > FIRST_PASS_WAIT;
                        }
                        if ready {
                            policy.tick(&|| hb.beat());
                        }
                        if let Some((m, h)) = &watchdog_metrics {
                            m.update(h);
                        }
                        if let Ok(mut s) = store.try_lock() {
                            s.data.last_seen_unix = s.data.last_seen_unix.max(clock.unix_secs());
                        }
                        hb.beat();
                    }
                })?,
        );
    }

    let app = Arc::new(App {
        registry,
        hub: hub.clone(),
        liveness: liveness.clone(),
        info: StaticInfo {
            version: env!("CARGO_PKG_VERSION"),
            mode: match cfg.mode {
                RunMode::Observe => "observe".into(),
                RunMode::Act => "act".into(),
            },
            node_name: node_name(&cfg),
            boot_id: boot.clone(),
            config: origin.to_string(),
            listen: bound.to_string(),
            started_unix: clock.unix_secs(),
        },
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let runtime_hb = liveness.register("async-runtime");
    rt.block_on(async {
        // Handlers first: a SIGTERM right after READY=1 must still be a clean stop.
        let stop_signal = stop_signals()?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(http::serve(listener, app.clone(), stop_rx.clone()));
        if let Some(source) = cluster_source {
            start_kube_task(
                &cfg,
                source,
                cluster.clone(),
                kube_metrics,
                clock.clone(),
                stop_rx.clone(),
            )
            .await;
        }
        let mut beat_stop = stop_rx.clone();
        let beater = tokio::spawn(async move {
            loop {
                runtime_hb.beat_for(RUNTIME_BEAT);
                tokio::select! {
                    _ = tokio::time::sleep(RUNTIME_BEAT) => {}
                    _ = beat_stop.changed() => return,
                }
            }
        });
        log::info!(
            "nodemedic {} listening on http://{bound} (mode {}, config: {origin})",
            env!("CARGO_PKG_VERSION"),
            app.info.mode
        );
        let _ = notifier.send(&Notice::Ready);
        let _ = notifier.send(&Notice::Status(format!(
            "{}: watching, endpoint http://{bound}",
            if cfg.mode == RunMode::Act {
                "act mode"
            } else {
                "observe mode"
            }
        )));
        // Keep-alives start after READY=1: systemd's watchdog covers a started service.
        {
            let (liveness, notifier, shutdown) =
                (liveness.clone(), notifier.clone(), shutdown.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("keepalive".into())
                    .spawn(move || keepalive::run(liveness, notifier, shutdown, || {}))?,
            );
        }

        stop_signal.await;
        log::info!("stopping");
        let _ = notifier.send(&Notice::Stopping);
        shutdown.trigger();
        // Wakes the policy loop, which may be in a long idle wait on this channel.
        hub.close_changes();
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = server.await;
            let _ = beater.await;
        })
        .await;
        Ok::<(), std::io::Error>(())
    })?;

    join_with_deadline(threads, STOP_DEADLINE);
    if let Some(f) = feeder {
        match f.stop() {
            Ok(closed) => log::info!("hardware watchdog: {closed:?}"),
            Err(e) => log::error!("hardware watchdog: {e}"),
        }
    }
    let s = store.lock().unwrap_or_else(|p| p.into_inner());
    s.save().map_err(state_err)?;
    log::info!("stopped cleanly");
    Ok(())
}

/// Installs SIGTERM/SIGINT handlers now; the returned future resolves on either.
fn stop_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Joins what finishes in time; a thread stuck in the kernel is left behind.
fn join_with_deadline(threads: Vec<JoinHandle<()>>, deadline: Duration) {
    let end = Instant::now() + deadline;
    for t in threads {
        while !t.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::warn!(
                "thread {} did not stop within {}s; exiting without it",
                t.thread().name().unwrap_or("?"),
                deadline.as_secs()
            );
        }
    }
}

/// Credentials for the Kubernetes API, if enabled and found. Not finding any is normal on
/// a machine without k3s: said once, and cluster features stay off.
fn kube_source(cfg: &Config) -> Option<crate::kube::credentials::CredentialSource> {
    if !cfg.kubernetes.enabled {
        return None;
    }
    let explicit = (!cfg.kubernetes.kubeconfig.is_empty())
        .then(|| std::path::PathBuf::from(&cfg.kubernetes.kubeconfig));
    let d = crate::kube::credentials::Discovery::host(&cfg.host_root, explicit.as_deref());
    match crate::kube::credentials::discover(&d) {
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

async fn start_kube_task(
    cfg: &Config,
    source: crate::kube::credentials::CredentialSource,
    link: Arc<crate::remedy::cluster::ClusterLink>,
    metrics: Option<crate::kube::metrics::KubeMetrics>,
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
        stop,
    ));
}
