//! `nodemedic run`: the daemon's lifecycle. Startup order matters: config is already valid
//! (`commands`), then the state dir is locked and loaded, the listener bound, loops started,
//! and only then `READY=1`, so systemd's "active" means "scrapable and watching". A SIGTERM
//! or SIGINT stops everything within [`STOP_DEADLINE`].
//!
//! A state directory that is full or read-only does not stop the daemon: it runs degraded
//! (`state::health`): detection and metrics go on, state stays in memory,
//! `StateDirUnusable` is raised, and no action runs whose audit record cannot be written
//! first.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use super::state_dir::StateDirDetector;
use super::wiring::{self, DetectorEnv, Edges, boot_id, node_name};
use crate::audit::AuditLog;
use crate::config::{Config, ConfigOrigin, RunMode};
use crate::detect;
use crate::edge::Notice;
use crate::http::{self, App, StaticInfo};
use crate::hub::Hub;
use crate::keepalive;
use crate::liveness::{Heartbeats, Shutdown};
use crate::metrics::CoreMetrics;
use crate::mounts::detached::DetachedMounts;
use crate::remedy::cluster::ClusterLink;
use crate::remedy::metrics::{PolicyMetrics, WatchdogMetrics};
use crate::remedy::policy_loop::{LoopThread, PolicyLoop};
use crate::runtime::metrics::RuntimeMetrics;
use crate::state::{DirLock, LoadOutcome, StateDirHealth, StateStore};
use crate::watchdog::Feeder;

/// systemd's default stop timeout is 90 s; we promise 5 s. Threads still busy after this
/// (e.g. stuck in a syscall on a dead mount) are abandoned: the process exits anyway.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// How often the async runtime proves it is alive. Each beat vouches for the next one, so
/// a blocked runtime reads as stuck `health.stuck_after` past a missed beat: at most 90 s
/// after it blocked with the default 30 s, for one wake-up a minute (issue 24). Only the
/// endpoint and the Kubernetes task run there, and a wedged one costs no detection.
pub(crate) const RUNTIME_BEAT: Duration = Duration::from_secs(60);

/// Errors that stop the daemon, mapped to exit codes by `commands`.
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

pub fn run(cfg: Config, origin: ConfigOrigin) -> Result<(), DaemonError> {
    super::footprint::tune_malloc();
    super::footprint::bound_fault_around();
    // Before any thread exists: every thread inherits the mask.
    if let Err(e) = super::signals::ignore_nuisance_signals() {
        log::warn!(
            "cannot block SIGHUP/SIGUSR1/SIGUSR2/SIGALRM ({e}): any of them stops nodemedic"
        );
    }
    let edges = Edges::real(&cfg);
    run_with(cfg, origin, edges)
}

/// The state the daemon opened: hold the lock for the life of the process.
struct Opened {
    _lock: Option<DirLock>,
    store: StateStore,
    boot: String,
    /// The wall clock is trusted once it reaches the last time a previous run saw.
    min_sane_unix: u64,
    /// The first start in this boot.
    new_boot: bool,
}

/// What the HTTP endpoint, the keep-alive and the stop need from the startup.
struct Running {
    app: Arc<App>,
    http_metrics: http::HttpMetrics,
    hub: Arc<Hub>,
    liveness: Heartbeats,
    shutdown: Shutdown,
    cluster: Arc<ClusterLink>,
    cluster_source: Option<crate::kube::credentials::CredentialSource>,
    kube_metrics: Option<crate::kube::metrics::KubeMetrics>,
    threads: Vec<JoinHandle<()>>,
    /// The hardware watchdog feeder, when nodemedic owns the watchdog.
    watchdog: Option<crate::watchdog::FeederHandle>,
    /// Woken at the stop: the storage detector waits on it for up to its probe interval.
    storage_events: crate::model::StorageEvents,
}

pub fn run_with(cfg: Config, origin: ConfigOrigin, edges: Edges) -> Result<(), DaemonError> {
    let health = StateDirHealth::new(&cfg.state_dir);
    let opened = open_state(&cfg, &edges, &health)?;
    let mut audit = AuditLog::open(&cfg.state_dir, cfg.audit.max_entries)
        .unwrap_or_else(|e| {
            log::error!(
                "cannot read the audit trail in {}: {e}; appending to it without counting its lines",
                cfg.state_dir.display()
            );
            AuditLog::unread(&cfg.state_dir, cfg.audit.max_entries)
        })
        .with_health(health.clone());
    let Opened {
        _lock,
        mut store,
        boot,
        min_sane_unix,
        new_boot,
    } = opened;
    let boot_end = super::boot_end::at_start(
        &cfg,
        &super::boot_end::BootEndEdges {
            files: edges.files.as_ref(),
            clock: edges.clock.as_ref(),
            journal: &super::boot_end::journal(&cfg),
        },
        &mut store,
        &mut audit,
        new_boot,
        &boot,
        min_sane_unix,
    );

    let mut registry = Registry::default();
    let core = CoreMetrics::register(&mut registry);
    core.unclean_shutdowns
        .inc_by(store.counter("unclean_shutdowns"));
    let causes = crate::power::boot_end::decide::Cause::ALL.map(|c| c.name());
    let boot_ends = crate::power::metrics::BootEndMetrics::register(&mut registry, &causes);
    for c in causes {
        boot_ends
            .ends
            .get_or_create(&crate::power::metrics::CauseLabels { cause: c.into() })
            .inc_by(store.counter(&super::boot_end::counter_name(c)));
    }
    let (change_tx, change_rx) = mpsc::channel();
    let hub = Arc::new(Hub::new(core.clone(), Some(change_tx)));
    hub.set_persisted(serde_json::to_value(&store.data).unwrap_or_default());
    for e in boot_end.entries {
        hub.record_action(e);
    }
    let liveness = Heartbeats::new(edges.clock.clone(), cfg.health.stuck_after.get());
    let shutdown = Shutdown::default();
    let (std_listener, bound) = bind(&cfg)?;

    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let detached = Arc::new(DetachedMounts::default());
    let runtime_metrics = RuntimeMetrics::register(&mut registry);
    let links = wiring::DetectorLinks::default();
    let detector_count = start_detectors(
        &cfg,
        &edges,
        &boot,
        &mut registry,
        detached.clone(),
        runtime_metrics.clone(),
        links.clone(),
        (&hub, &liveness, &shutdown),
        &mut threads,
    )?;
    // The state directory's own health: `StateDirUnusable` while writes fail.
    threads.push(detect::spawn(
        Box::new(StateDirDetector::new(health.clone())),
        hub.clone(),
        liveness.register("detector:state_dir"),
        shutdown.clone(),
        edges.clock.clone(),
    )?);
    let detector_count = detector_count + 1;

    let store = Arc::new(Mutex::new(store));
    let policy_metrics = PolicyMetrics::register(&mut registry);
    let cluster_source = wiring::kube_source(&cfg);
    log::info!(
        "{}",
        wiring::reboot_lease_summary(&cfg, cluster_source.as_ref())
    );
    // Only with credentials: an API-down gauge on a node without Kubernetes would alert.
    let kube_metrics = cluster_source
        .as_ref()
        .map(|_| crate::kube::metrics::KubeMetrics::register(&mut registry));
    let cluster = ClusterLink::new(cluster_source.is_some());
    cluster.set_server_facts(wiring::server_facts(&cfg, edges.files.as_ref(), &links));
    if let Some(ev) = boot_end.event
        && cfg.kubernetes.events
    {
        // Queued: sent once the API is reachable.
        cluster.event(ev);
    }
    let feeder = wiring::start_watchdog(&cfg, &liveness, &boot, edges.clock.clone());
    let watchdog_metrics = feeder.as_ref().map(|f| {
        let m = WatchdogMetrics::register(&mut registry);
        m.update(&f.handle());
        (m, f.handle())
    });

    let mut loop_config = wiring::loop_config(&cfg, edges.files.as_ref(), &boot, min_sane_unix);
    loop_config.detector_events = links.events.clone();
    let policy = PolicyLoop::new(
        loop_config,
        wiring::actuators(
            &cfg,
            &edges.files,
            feeder.as_ref(),
            detached,
            runtime_metrics,
            cluster.clone(),
        ),
        hub.clone(),
        store.clone(),
        audit,
        policy_metrics,
        edges.clock.clone(),
    );
    threads.push(policy.spawn(LoopThread {
        changes: change_rx,
        heartbeat: liveness.register("policy"),
        shutdown: shutdown.clone(),
        detector_count,
        watchdog: watchdog_metrics,
    })?);

    let http_metrics = http::HttpMetrics::register(&mut registry);
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
            started_unix: edges.clock.unix_secs(),
            previous_boot: boot_end.status,
        },
    });
    let mut running = Running {
        app,
        http_metrics,
        hub,
        liveness,
        shutdown,
        cluster,
        cluster_source,
        kube_metrics,
        threads,
        watchdog: feeder.as_ref().map(Feeder::handle),
        storage_events: links.storage.clone(),
    };
    serve_until_stopped(&cfg, &origin, &edges, std_listener, bound, &mut running)?;
    stop(&cfg, running.threads, feeder, &store)
}

fn state_err(cfg: &Config) -> impl Fn(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::State {
        dir: cfg.state_dir.display().to_string(),
        source,
    }
}

/// Locks and loads the state dir, notes the boot (and how the previous one ended), and
/// records the time seen. Only another daemon holding the lock stops the start: a
/// directory that cannot be created, locked or written means degraded mode (reported to
/// `health`), never an exit that would leave the node without detection.
fn open_state(cfg: &Config, edges: &Edges, health: &StateDirHealth) -> Result<Opened, DaemonError> {
    let clock = &edges.clock;
    let state_err = state_err(cfg);
    if let Err(e) = std::fs::create_dir_all(&cfg.state_dir) {
        health.failed("creating the state directory", &e);
    }
    let lock = match DirLock::acquire(&cfg.state_dir) {
        Ok(l) => Some(l),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(state_err(e)),
        Err(e) => {
            log::warn!(
                "cannot lock the state directory {}: {e}; make sure no other nodemedic daemon uses it",
                cfg.state_dir.display()
            );
            None
        }
    };
    for name in crate::state::atomic_file::remove_dead_writers_temps(&cfg.state_dir) {
        log::info!("removed {name}, left by a write that was killed");
    }
    let (store, outcome) =
        StateStore::load(&cfg.state_dir, clock.unix_secs()).map_err(&state_err)?;
    let mut store = store.with_health(health.clone());
    match &outcome {
        LoadOutcome::Recovered { error, moved_to } => log::error!(
            "state file {} was corrupt or not a state file ({error}); {} and started from safe defaults (reboot budget treated as spent for 24 h)",
            store.path().display(),
            match moved_to {
                Some(p) => format!("moved it to {}", p.display()),
                None => "left it where it is".to_string(),
            }
        ),
        LoadOutcome::Fresh => log::info!(
            "no state file yet at {}; starting fresh",
            store.path().display()
        ),
        LoadOutcome::Loaded => {}
    }
    let boot = boot_id(edges.files.as_ref());
    let new_boot = store.note_boot(&boot);
    if new_boot {
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
    // A failure is reported by the store to `health`: degraded from here on.
    let _ = store.save();
    Ok(Opened {
        _lock: lock,
        store,
        boot,
        min_sane_unix,
        new_boot,
    })
}

/// Binds the HTTP listener before anything starts: a taken port is an error at startup.
fn bind(cfg: &Config) -> Result<(std::net::TcpListener, SocketAddr), DaemonError> {
    let addr: SocketAddr = cfg.listen.parse().expect("validated by Config::validate");
    let std_listener = std::net::TcpListener::bind(addr).map_err(|source| DaemonError::Listen {
        addr: cfg.listen.clone(),
        source,
    })?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    Ok((std_listener, bound))
}

/// One thread per enabled detector, each with its heartbeat. Returns how many started.
#[allow(clippy::too_many_arguments)]
fn start_detectors(
    cfg: &Config,
    edges: &Edges,
    boot: &str,
    registry: &mut Registry,
    detached: Arc<DetachedMounts>,
    runtime_metrics: RuntimeMetrics,
    links: wiring::DetectorLinks,
    (hub, liveness, shutdown): (&Arc<Hub>, &Heartbeats, &Shutdown),
    threads: &mut Vec<JoinHandle<()>>,
) -> std::io::Result<usize> {
    let detectors = wiring::build_detectors(
        cfg,
        DetectorEnv {
            edges,
            boot_id: boot.to_string(),
            state_dir: Some(cfg.state_dir.clone()),
            registry: Some(registry),
            detached: Some(detached),
            runtime_metrics: Some(runtime_metrics),
            links,
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
    let count = names.len();
    // Detectors whose passes are bounded by deadlines share one thread and its timer
    // (issue 24: wake-ups); the others (the kernel log, PSI) wait on kernel events alone.
    let mut shared = Vec::new();
    for d in detectors {
        let hb = liveness.register(&format!("detector:{}", d.name()));
        if d.shares_timer() {
            shared.push((d, hb));
            continue;
        }
        threads.push(detect::spawn(
            d,
            hub.clone(),
            hb,
            shutdown.clone(),
            edges.clock.clone(),
        )?);
    }
    if !shared.is_empty() {
        threads.push(detect::spawn_shared(
            shared,
            hub.clone(),
            shutdown.clone(),
            edges.clock.clone(),
        )?);
    }
    Ok(count)
}

/// The async part: HTTP endpoint, Kubernetes task and the runtime's heartbeat; then
/// `READY=1` and the keep-alive; returns once SIGTERM or SIGINT asked to stop.
fn serve_until_stopped(
    cfg: &Config,
    origin: &ConfigOrigin,
    edges: &Edges,
    std_listener: std::net::TcpListener,
    bound: SocketAddr,
    r: &mut Running,
) -> Result<(), DaemonError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let runtime_hb = r.liveness.register("async-runtime");
    let notifier = &edges.notifier;
    rt.block_on(async {
        // Handlers first: a SIGTERM right after READY=1 must still be a clean stop.
        let stop_signal = stop_signals()?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(http::serve(
            listener,
            r.app.clone(),
            http::Limits::default(),
            r.http_metrics.clone(),
            stop_rx.clone(),
        ));
        if let Some(source) = r.cluster_source.take() {
            wiring::start_kube_task(
                cfg,
                source,
                r.cluster.clone(),
                r.kube_metrics.take(),
                edges.clock.clone(),
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
            r.app.info.mode
        );
        let _ = notifier.send(&Notice::Ready);
        let mut settle_stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(super::footprint::RELEASE_STARTUP_CODE_AFTER) => {
                    super::footprint::release_startup_code();
                }
                _ = settle_stop.changed() => {}
            }
        });
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
                (r.liveness.clone(), notifier.clone(), r.shutdown.clone());
            r.threads.push(
                std::thread::Builder::new()
                    .name("keepalive".into())
                    .spawn(move || keepalive::run(liveness, notifier, shutdown, || {}))?,
            );
        }

        stop_signal.await;
        log::info!("stopping");
        let _ = notifier.send(&Notice::Stopping);
        if let Some(w) = &r.watchdog {
            // Everything keeps running (and beating) while this waits.
            let cap = cfg.remedy.reboot_deadline.get()
                + w.timeout()
                + crate::remedy::reboot::DEFAULT_WATCHDOG_MARGIN;
            super::shutdown_linger::linger(
                w,
                Arc::new(super::shutdown_linger::SystemctlStoppingUnits::new()),
                notifier.as_ref(),
                super::shutdown_linger::POLL,
                cap,
            )
            .await;
        }
        r.shutdown.trigger();
        // Wakes the policy loop, which may be in a long idle wait on this channel, and the
        // storage detector, waiting for kernel events until its next probe.
        r.hub.close_changes();
        r.storage_events.wake();
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = server.await;
            let _ = beater.await;
        })
        .await;
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}

/// Joins the loops (within [`STOP_DEADLINE`]), closes the watchdog and saves the state.
fn stop(
    cfg: &Config,
    threads: Vec<JoinHandle<()>>,
    feeder: Option<Feeder>,
    store: &Mutex<StateStore>,
) -> Result<(), DaemonError> {
    join_with_deadline(threads, STOP_DEADLINE);
    if let Some(f) = feeder {
        if f.handle().reboot_pending() {
            // What the units stopped since the graceful request wrote, on disk before the
            // timer is left to run out.
            let t = crate::remedy::reboot::DEFAULT_SYNC_TIMEOUT;
            if !crate::remedy::reboot::sync_within(t, nix::unistd::sync) {
                log::error!("sync(2) before leaving the watchdog armed did not finish in time");
            }
        }
        match f.stop() {
            Ok(closed) => log::info!("hardware watchdog: {closed:?}"),
            Err(e) => log::error!("hardware watchdog: {e}"),
        }
    }
    let s = store.lock().unwrap_or_else(|p| p.into_inner());
    match s.save() {
        Ok(()) => log::info!("stopped cleanly"),
        // Already reported (degraded mode); the stop itself was clean.
        Err(e) => log::error!(
            "stopped; the final state could not be saved in {}: {e}",
            cfg.state_dir.display()
        ),
    }
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
