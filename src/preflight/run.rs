//! The `nodemedic preflight` core: inventory, plan and repair of containerd and CNI state
//! before k3s starts, within a total time budget. It never fails k3s's start: every error is
//! logged and reported, and [`run`] always returns a [`Summary`].
//!
//! Steps: refuse if a containerd is running (k3s restart in progress) -> start a private
//! containerd without CRI -> list records and tasks -> classify -> decide reboot or restart ->
//! scan CNI -> plan -> (dry run: stop here) -> apply the per-kind switches and caps
//! ([`super::gate`]) -> remove, item by item, until the repair's share of the budget is spent
//! -> stop the private containerd -> check the clock against the last time the daemon saw and
//! wait for time sync if it is behind ([`super::clock_sanity`]) -> write `preflight.json` and
//! add the run to `preflight-totals.json` ([`super::totals`]) in the state dir.
//!
//! The budget covers the whole run: the repair gets `budget - clock_wait` (10 s by default),
//! the clock wait what is left, at most `clock_wait`. The repair does not need a right clock
//! (it judges by boot id and liveness, and orders by the records' own timestamps), so it
//! runs first and is never starved by a slow NTP.
//!
//! Idempotent: every removal treats "already gone" as success, and a second run sees nothing
//! left to do. The report records the boot whose reboot cleanup completed, which is how a
//! later run in the same boot knows it is only a k3s restart (see [`super::plan::decide_mode`]).

use super::clock_sanity::{self, ClockReport, SystemTimeSync, TimeSync};
use super::cni::{self, CniInventory};
use super::containerd::{ContainerStore, Deleted, GrpcStore, SnapshotRemoval, StoreError};
use super::gate::{self, DEFAULT_MAX_CNI_FILES, DEFAULT_MAX_SANDBOX_RECORDS, KindDecision, Switch};
use super::plan::{self, Action, Mode, Plan};
use super::private_instance::{InstanceConfig, InstanceError, PrivateInstance};
pub use super::report::{ItemReport, ItemResult};
use super::sandbox_meta::{Inventory, Liveness, TaskState, liveness};
use super::sandbox_store::StoreView;
use super::snapshots::SnapshotReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Total budget, clock wait included: k3s waits for us, and the next boot (or the runtime
/// repair) finishes what is left. The repair's share is 10 s (100 dead sandboxes take well
/// under 1 s here; a Pi 4 is roughly 4x slower); the clock may take up to 30 s more.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(40);
/// The repair always gets at least this much of the budget, whatever `clock_wait` says.
pub const MIN_REPAIR_SHARE: Duration = Duration::from_secs(1);
/// One containerd call; a healthy one answers in milliseconds, a hung shim never.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The private containerd starts in ~0.2 s here; SD cards are slower.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// containerd stops within ~100 ms on SIGTERM; after this it is killed.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// The host's network interfaces (preflight runs in the host network namespace).
const SYS_CLASS_NET: &str = "/sys/class/net";
/// The report file in the state dir.
pub const REPORT_FILE: &str = "preflight.json";
/// Report format version.
const REPORT_VERSION: u32 = 1;

/// Paths and limits; the defaults are k3s's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightConfig {
    /// k3s's bundled containerd, so the bolt DB schema matches what k3s runs.
    pub containerd_binary: PathBuf,
    /// k3s's generated containerd config (used when it exists).
    pub containerd_config: PathBuf,
    pub containerd_root: PathBuf,
    pub containerd_state: PathBuf,
    /// The socket k3s's containerd serves.
    pub containerd_socket: PathBuf,
    /// containerd namespace the CRI plugin uses.
    pub namespace: String,
    pub cni_results_dir: PathBuf,
    pub cni_networks_dir: PathBuf,
    /// Where the report goes (nodemedic's state dir).
    pub state_dir: PathBuf,
    /// Parent of the private containerd's socket directory (a tmpfs).
    pub run_dir: PathBuf,
    pub boot_id_path: PathBuf,
    pub proc_root: PathBuf,
    pub budget: Duration,
    pub call_timeout: Duration,
    pub startup_timeout: Duration,
    pub stop_timeout: Duration,
    /// Plan and report only; remove nothing.
    pub dry_run: bool,
    /// Whether, and how many, containerd records (sandboxes, containers) may be removed.
    pub records: Switch,
    /// Whether, and how many, CNI files (results, IP reservations) may be removed.
    pub cni: Switch,
    /// Networks whose IP reservations may be released, besides those named in
    /// `cni_conf_dir` ([`super::reservations`]).
    pub cni_networks: Vec<String>,
    /// k3s's CNI config directory; the `name` of each config in it is one of k3s's networks.
    pub cni_conf_dir: PathBuf,
    /// Whether, and how many, images with a snapshot that lost its directory may be removed
    /// ([`super::snapshots`]).
    pub images: Switch,
    /// Longest wait for a clock behind the daemon's last-seen time; zero never waits.
    pub clock_wait: Duration,
}

impl Default for PreflightConfig {
    fn default() -> Self {
        PreflightConfig {
            containerd_binary: "/var/lib/rancher/k3s/data/current/bin/containerd".into(),
            containerd_config: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml".into(),
            containerd_root: "/var/lib/rancher/k3s/agent/containerd".into(),
            containerd_state: "/run/k3s/containerd".into(),
            containerd_socket: "/run/k3s/containerd/containerd.sock".into(),
            namespace: "k8s.io".into(),
            cni_results_dir: "/var/lib/cni/results".into(),
            cni_networks_dir: "/var/lib/cni/networks".into(),
            state_dir: "/var/lib/nodemedic".into(),
            run_dir: "/run/nodemedic".into(),
            boot_id_path: "/proc/sys/kernel/random/boot_id".into(),
            proc_root: "/proc".into(),
            budget: DEFAULT_BUDGET,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            dry_run: false,
            records: Switch::allowed(DEFAULT_MAX_SANDBOX_RECORDS),
            cni: Switch::allowed(DEFAULT_MAX_CNI_FILES),
            cni_networks: vec![super::reservations::DEFAULT_NETWORK.into()],
            cni_conf_dir: super::reservations::K3S_CNI_CONF_DIR.into(),
            images: Switch::allowed(super::snapshots::DEFAULT_MAX_BROKEN_IMAGES),
            clock_wait: clock_sanity::DEFAULT_CLOCK_WAIT,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// Every planned item was handled (or none was needed).
    Completed,
    /// The plan was printed; nothing was removed.
    DryRun,
    /// A containerd is running on the root (k3s restart in progress): nothing touched.
    Refused(String),
    /// containerd state could not be read; only corrupt CNI results were handled.
    ContainerdUnavailable(String),
    /// The budget ran out; the rest waits for the next run.
    TimedOut(String),
}

/// The JSON report written to `<state_dir>/preflight.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: u32,
    pub finished_unix_secs: u64,
    pub elapsed_ms: u64,
    pub boot_id: Option<String>,
    /// The boot whose after-reboot cleanup completed (carried over from earlier runs).
    pub reboot_cleanup_boot_id: Option<String>,
    pub dry_run: bool,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub plan: Option<Plan>,
    pub items: Vec<ItemReport>,
    pub private_containerd_start_ms: Option<u64>,
    pub notes: Vec<String>,
    /// Per kind of removal: planned, cap, allowed, why.
    pub decisions: Vec<KindDecision>,
    /// The clock check and any wait for time synchronisation.
    pub clock: Option<ClockReport>,
    /// Every record's liveness and why, by id (what "dead" was judged on).
    pub liveness: BTreeMap<String, Liveness>,
    /// The snapshot/metadata desync check and repair.
    pub snapshots: Option<SnapshotReport>,
}

/// What [`run`] returns to the caller.
#[derive(Debug, Clone)]
pub struct Summary {
    pub outcome: Outcome,
    pub mode: Option<Mode>,
    pub planned: usize,
    pub done: usize,
    pub failed: usize,
    /// Planned but not attempted: switched off or over a cap.
    pub withheld: usize,
    pub elapsed: Duration,
    /// The plan as text (what the dry run prints).
    pub plan_text: String,
    pub report_path: Option<PathBuf>,
    pub report: Report,
}

/// Only the field we read back from the previous report.
#[derive(Deserialize)]
struct PreviousReport {
    #[serde(default)]
    reboot_cleanup_boot_id: Option<String>,
}

fn read_boot_id(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Unix seconds when this boot began: `now` less the first field of `/proc/uptime` (time
/// since boot, suspend included). `None` when it cannot be read.
pub(crate) fn boot_unix(uptime: &Path, now: SystemTime) -> Option<u64> {
    let text = std::fs::read_to_string(uptime).ok()?;
    let up: f64 = text.split_whitespace().next()?.parse().ok()?;
    if !up.is_finite() || up < 0.0 {
        return None;
    }
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    (now >= up).then_some((now - up) as u64)
}

fn previous_cleanup_boot(state_dir: &Path) -> Option<String> {
    let text = std::fs::read(state_dir.join(REPORT_FILE)).ok()?;
    serde_json::from_slice::<PreviousReport>(&text)
        .ok()?
        .reboot_cleanup_boot_id
}

/// Inventory through `store`: records, tasks, bundle probes for tasks the list missed, and
/// (2.x) the sandbox store with the liveness of its entries that have no record.
pub fn take_inventory(
    store: &mut dyn ContainerStore,
) -> Result<(Inventory, Vec<String>, StoreView), StoreError> {
    let records = store.list_records()?;
    let tasks = store.list_tasks()?;
    let entries = store.list_store_entries()?;
    let mut live = std::collections::BTreeMap::new();
    let record_ids: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r.id.as_str()).collect();
    let orphans: Vec<String> = entries
        .iter()
        .flatten()
        .filter(|e| !record_ids.contains(e.id.as_str()))
        .map(|e| e.id.clone())
        .collect();
    for id in records.iter().map(|r| &r.id).chain(orphans.iter()) {
        let task = tasks.get(id).cloned().unwrap_or(TaskState::Absent);
        let probe = match task {
            TaskState::Running { .. } => super::sandbox_meta::BundleProbe::NoBundle,
            _ => store.bundle_probe(id),
        };
        live.insert(id.clone(), liveness(&task, probe));
    }
    let inv = Inventory::classify(&records, |id| {
        live.get(id)
            .cloned()
            .unwrap_or_else(|| super::sandbox_meta::Liveness::Unknown("not probed".into()))
    });
    let stopped: Vec<String> = tasks
        .into_iter()
        .filter(|(_, t)| *t == TaskState::Stopped)
        .map(|(id, _)| id)
        .collect();
    let view = StoreView {
        orphan_liveness: orphans
            .into_iter()
            .filter_map(|id| live.get(&id).cloned().map(|l| (id, l)))
            .collect(),
        entries,
    };
    Ok((inv, stopped, view))
}

/// Carries out `plan` through `store` and the filesystem until `deadline`. `stopped_tasks`
/// are records whose task exists but has exited: their task is deleted before the record.
/// `withheld[i]` says why item `i` must not be attempted ([`gate::decide`]).
pub fn execute(
    plan: &Plan,
    store: Option<&mut dyn ContainerStore>,
    stopped_tasks: &[String],
    deadline: Instant,
    withheld: &[Option<String>],
) -> Vec<ItemReport> {
    let mut store = store;
    let mut out = Vec::with_capacity(plan.items.len());
    for (n, item) in plan.items.iter().enumerate() {
        let result = if let Some(Some(why)) = withheld.get(n) {
            ItemResult::Withheld(why.clone())
        } else if Instant::now() >= deadline {
            ItemResult::Skipped
        } else {
            match &item.action {
                Action::RemoveContainer {
                    id,
                    snapshotter,
                    snapshot_key,
                    ..
                } => match store.as_deref_mut() {
                    Some(s) => remove_record(s, id, snapshotter, snapshot_key, stopped_tasks),
                    None => ItemResult::Failed("no containerd connection".into()),
                },
                Action::RemoveSandbox {
                    id,
                    snapshotter,
                    snapshot_key,
                    ..
                } => match store.as_deref_mut() {
                    Some(s) => {
                        let r = remove_record(s, id, snapshotter, snapshot_key, stopped_tasks);
                        super::sandbox_store::with_store_entry(s, id, r)
                    }
                    None => ItemResult::Failed("no containerd connection".into()),
                },
                Action::RemoveCniResult { path } | Action::ReleaseIp { path, .. } => {
                    remove_file(path)
                }
            }
        };
        let text = item.to_string();
        match &result {
            ItemResult::Done => log::info!("preflight: {text}"),
            ItemResult::AlreadyGone => log::info!("preflight: {text} (already gone)"),
            ItemResult::Failed(e) => log::warn!("preflight: failed to {text}: {e}"),
            // Logged once per kind with the decision, not once per item.
            ItemResult::Skipped | ItemResult::Withheld(_) => {}
        }
        out.push(ItemReport {
            item: item.clone(),
            text,
            result,
        });
    }
    out
}

fn remove_record(
    store: &mut dyn ContainerStore,
    id: &str,
    snapshotter: &str,
    snapshot_key: &str,
    stopped_tasks: &[String],
) -> ItemResult {
    if stopped_tasks.iter().any(|t| t == id)
        && let Err(e) = store.delete_task(id)
    {
        return ItemResult::Failed(e.to_string());
    }
    let deleted = match store.delete_record(id) {
        Ok(d) => d,
        Err(e) => return ItemResult::Failed(e.to_string()),
    };
    // The record is gone; a snapshot left behind is garbage containerd's GC collects, so a
    // failure here is logged but does not fail the item.
    if !snapshot_key.is_empty() && !snapshotter.is_empty() {
        match store.remove_active_snapshot(snapshotter, snapshot_key) {
            Ok(SnapshotRemoval::Refused(kind)) => log::warn!(
                "preflight: snapshot {snapshotter}/{snapshot_key} of {id} is {kind}, not a container layer: kept"
            ),
            Ok(_) => {}
            Err(e) => log::warn!("preflight: snapshot {snapshotter}/{snapshot_key} of {id}: {e}"),
        }
    }
    match deleted {
        Deleted::Removed => ItemResult::Done,
        Deleted::AlreadyGone => ItemResult::AlreadyGone,
    }
}

fn remove_file(path: &Path) -> ItemResult {
    match std::fs::remove_file(path) {
        Ok(()) => ItemResult::Done,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ItemResult::AlreadyGone,
        Err(e) => ItemResult::Failed(format!("{}: {e}", path.display())),
    }
}

/// What the repair part of a run produced.
#[derive(Debug, Clone)]
pub struct Repair {
    pub outcome: Outcome,
    pub plan: Option<Plan>,
    pub items: Vec<ItemReport>,
    /// The boot whose after-reboot cleanup is complete (for the report).
    pub marker: Option<String>,
    pub decisions: Vec<KindDecision>,
    /// Why each record (and 2.x store entry without one) is alive, dead or unknown.
    pub liveness: BTreeMap<String, Liveness>,
    pub snapshots: Option<SnapshotReport>,
}

/// The containerd-independent part of a run, given how the store could be reached.
/// `store` is `Err(why)` when containerd could not be started or listed.
pub fn run_with_store(
    cfg: &PreflightConfig,
    store: Result<&mut dyn ContainerStore, String>,
    deadline: Instant,
) -> Repair {
    let boot_id = read_boot_id(&cfg.boot_id_path);
    let cleaned = previous_cleanup_boot(&cfg.state_dir);
    let cni_inv: CniInventory = cni::scan(&cfg.cni_results_dir, &cfg.cni_networks_dir);
    let (mut store, inv, stopped, view, unavailable) = match store {
        Ok(s) => match take_inventory(s) {
            Ok((inv, stopped, view)) => (Some(s), Some(inv), stopped, view, None),
            Err(e) => (
                None,
                None,
                vec![],
                StoreView::default(),
                Some(e.to_string()),
            ),
        },
        Err(why) => (None, None, vec![], StoreView::default(), Some(why)),
    };
    let not_dead = inv.as_ref().map_or(0, |i| i.not_dead_sandbox_ids().len())
        + view
            .orphan_liveness
            .values()
            .filter(|l| !l.is_dead())
            .count();
    let (mode, why) = plan::decide_mode(boot_id.as_deref(), cleaned.as_deref(), not_dead);
    let mut plan = plan::build(inv.as_ref(), &cni_inv, mode, &why);
    view.plan(&mut plan);
    let (networks, net_notes) =
        super::reservations::managed_networks(&cfg.cni_networks, &cfg.cni_conf_dir);
    plan.left_alone.extend(net_notes);
    let traces = super::reservations::HostTraces {
        results_dir: &cfg.cni_results_dir,
        sys_net: Path::new(SYS_CLASS_NET),
    };
    {
        let mut ids_in_root = || match store.as_mut() {
            Some(s) => s.ids_in_every_namespace().map_err(|e| e.to_string()),
            None => Err("containerd is not reachable".to_string()),
        };
        let mut earlier = super::reservations::EarlierBoot {
            boot_unix: boot_unix(&cfg.proc_root.join("uptime"), SystemTime::now()),
            ids_in_root: &mut ids_in_root,
        };
        super::reservations::plan(
            &mut plan,
            &cni_inv,
            inv.as_ref(),
            &view,
            &networks,
            &traces,
            &mut earlier,
        );
    }
    let liveness: BTreeMap<String, Liveness> = inv
        .iter()
        .flat_map(|i| {
            i.sandboxes
                .iter()
                .map(|s| (s.id.clone(), s.liveness.clone()))
                .chain(
                    i.containers
                        .iter()
                        .map(|c| (c.id.clone(), c.liveness.clone())),
                )
        })
        .chain(view.orphan_liveness.clone())
        .collect();
    let (decisions, withheld) = gate::decide(&plan, &cfg.records, &cfg.cni);
    if cfg.dry_run {
        // What the real run would remove first counts as gone.
        let gone = record_ids(plan.items.iter().map(|i| &i.action));
        let snapshots = store.and_then(|s| snapshot_check(cfg, s, inv.as_ref(), &gone, deadline));
        return Repair {
            outcome: Outcome::DryRun,
            plan: Some(plan),
            items: vec![],
            marker: cleaned,
            decisions,
            liveness,
            snapshots,
        };
    }
    for d in decisions.iter().filter(|d| !d.allowed) {
        log::warn!(
            "preflight: {} {} not removed: {}",
            d.planned,
            d.kind.label(),
            d.reason
        );
    }
    // The snapshot check reads the containers' mounts, so it runs before their records go;
    // the repair after, once nothing that goes builds on a broken chain any more.
    let gone = record_ids(
        plan.items
            .iter()
            .zip(&withheld)
            .filter(|(_, w)| w.is_none())
            .map(|(i, _)| &i.action),
    );
    let mut snapshots = match store.as_mut() {
        Some(s) => snapshot_check(cfg, &mut **s, inv.as_ref(), &gone, deadline),
        None => None,
    };
    let items = execute(
        &plan,
        store.as_mut().map(|s| &mut **s as &mut dyn ContainerStore),
        &stopped,
        deadline,
        &withheld,
    );
    let mut decisions = decisions;
    if let (Some(s), Some(r)) = (store, snapshots.as_mut()) {
        let d = gate::decide_count(gate::Kind::BrokenImages, r.plan.images.len(), &cfg.images);
        if !r.plan.is_empty() {
            if d.allowed && Instant::now() < deadline {
                if let Some(api) = s.snapshot_api() {
                    super::snapshots::repair(api, r);
                }
            } else if !d.allowed {
                log::warn!(
                    "preflight: {} broken images not removed: {}",
                    d.planned,
                    d.reason
                );
                r.withheld = Some(d.reason.clone());
            }
        }
        decisions.push(d);
    }
    let skipped = items
        .iter()
        .filter(|i| i.result == ItemResult::Skipped)
        .count();
    let incomplete = items
        .iter()
        .any(|i| matches!(i.result, ItemResult::Failed(_) | ItemResult::Withheld(_)));
    let outcome = match (&unavailable, skipped) {
        (_, n) if n > 0 => Outcome::TimedOut(format!("{n} item(s) left for the next run")),
        (Some(why), _) => Outcome::ContainerdUnavailable(why.clone()),
        (None, _) => Outcome::Completed,
    };
    // The reboot cleanup of this boot is complete only when every item went through
    // (a withheld one is not through: the next run in this boot must still see a reboot).
    let marker = if mode == Mode::AfterReboot && outcome == Outcome::Completed && !incomplete {
        boot_id.or(cleaned)
    } else {
        cleaned
    };
    Repair {
        outcome,
        plan: Some(plan),
        items,
        marker,
        decisions,
        liveness,
        snapshots,
    }
}

/// Ids of the records among `actions`.
fn record_ids<'a>(actions: impl Iterator<Item = &'a Action>) -> std::collections::BTreeSet<String> {
    actions
        .filter_map(|a| match a {
            Action::RemoveSandbox { id, .. } | Action::RemoveContainer { id, .. } => {
                Some(id.clone())
            }
            _ => None,
        })
        .collect()
}

/// The snapshot/metadata desync check ([`super::snapshots::check`]) once the records in
/// `gone` are removed: the active snapshots of records that stay are what a broken chain must
/// not take along.
fn snapshot_check(
    cfg: &PreflightConfig,
    store: &mut dyn ContainerStore,
    inv: Option<&Inventory>,
    gone: &std::collections::BTreeSet<String>,
    deadline: Instant,
) -> Option<SnapshotReport> {
    let inv = inv?;
    if Instant::now() >= deadline {
        return None;
    }
    let staying: std::collections::BTreeSet<String> = inv
        .sandboxes
        .iter()
        .map(|s| (&s.id, &s.snapshotter, &s.snapshot_key))
        .chain(
            inv.containers
                .iter()
                .map(|c| (&c.id, &c.snapshotter, &c.snapshot_key)),
        )
        .filter(|(id, sn, key)| {
            !gone.contains(id.as_str())
                && sn.as_str() == super::snapshots::SNAPSHOTTER
                && !key.is_empty()
        })
        .map(|(_, _, k)| k.clone())
        .collect();
    let api = store.snapshot_api()?;
    match super::snapshots::check(api, &cfg.namespace, &staying) {
        Ok(r) => {
            for m in &r.plan.missing {
                log::warn!(
                    "preflight: snapshot {} of the image store has no directory ({}): every new container of its images would fail",
                    m.key,
                    m.detail
                );
            }
            Some(r)
        }
        Err(e) => {
            log::warn!("preflight: snapshot check: {e}");
            Some(SnapshotReport {
                failed: vec![format!("check: {e}")],
                ..Default::default()
            })
        }
    }
}

/// The report's outcome tag, also the totals file's `last_outcome`.
pub fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Completed => "completed",
        Outcome::DryRun => "dry_run",
        Outcome::Refused(_) => "refused",
        Outcome::ContainerdUnavailable(_) => "containerd_unavailable",
        Outcome::TimedOut(_) => "timed_out",
    }
}

/// The whole preflight with the real private containerd and the real clock.
pub fn run(cfg: &PreflightConfig) -> Summary {
    run_with(cfg, &SystemTimeSync::new())
}

/// The budget split: (repair deadline, end of the whole run).
fn deadlines(cfg: &PreflightConfig, t0: Instant) -> (Instant, Instant) {
    let end = t0 + cfg.budget;
    let repair = cfg
        .budget
        .saturating_sub(cfg.clock_wait)
        .max(MIN_REPAIR_SHARE.min(cfg.budget));
    (t0 + repair, end)
}

/// The whole preflight with the real private containerd, the clock taken from `time`.
/// Never panics on I/O errors, never exceeds the budget by more than one call's timeout
/// plus the stop grace period.
pub fn run_with(cfg: &PreflightConfig, time: &dyn TimeSync) -> Summary {
    let t0 = Instant::now();
    let (deadline, end) = deadlines(cfg, t0);
    let mut notes = Vec::new();
    let inst_cfg = InstanceConfig {
        binary: cfg.containerd_binary.clone(),
        base_config: Some(cfg.containerd_config.clone()).filter(|p| p.exists()),
        root: cfg.containerd_root.clone(),
        state: cfg.containerd_state.clone(),
        real_socket: cfg.containerd_socket.clone(),
        run_dir: cfg.run_dir.clone(),
        startup_timeout: cfg.startup_timeout,
        stop_timeout: cfg.stop_timeout,
    };
    let mut start_ms = None;
    let repair = match PrivateInstance::start(&inst_cfg, deadline) {
        Err(e @ (InstanceError::SocketServing(_) | InstanceError::DbLocked(_))) => {
            log::info!("preflight: {e}");
            Repair {
                outcome: Outcome::Refused(e.to_string()),
                plan: None,
                items: vec![],
                marker: previous_cleanup_boot(&cfg.state_dir),
                decisions: vec![],
                liveness: BTreeMap::new(),
                snapshots: None,
            }
        }
        Err(e) => {
            log::warn!("preflight: {e}");
            run_with_store(cfg, Err(e.to_string()), deadline)
        }
        Ok(mut inst) => {
            start_ms = Some(inst.started_in.as_millis() as u64);
            if let Some(n) = &inst.config_note {
                notes.push(format!("private containerd used a minimal config: {n}"));
            }
            for m in &inst.config_merged {
                notes.push(format!("private containerd merged k3s's drop-in {m}"));
            }
            let r = match GrpcStore::connect(
                inst.socket(),
                &cfg.namespace,
                cfg.call_timeout,
                Some(deadline),
                &cfg.containerd_state,
                &cfg.proc_root,
            ) {
                Ok(mut store) => run_with_store(cfg, Ok(&mut store), deadline),
                Err(e) => run_with_store(cfg, Err(e.to_string()), deadline),
            };
            inst.stop();
            r
        }
    };
    let Repair {
        outcome,
        plan,
        items,
        marker,
        decisions,
        liveness,
        snapshots,
    } = repair;
    let plan_text = plan.as_ref().map(|p| p.to_string()).unwrap_or_default();
    if cfg.dry_run {
        for l in plan_text.lines() {
            log::info!("preflight (dry run): {l}");
        }
    }

    // The clock, with what is left of the budget (the repair never waits for it).
    let (last_seen, seen_error) = match clock_sanity::read_last_seen(&cfg.state_dir) {
        Ok(s) => (s, None),
        Err(e) => {
            log::warn!("preflight: {e}");
            (None, Some(e))
        }
    };
    let mut clock = clock_sanity::check_and_wait(
        time,
        last_seen,
        cfg.clock_wait,
        end.saturating_duration_since(Instant::now()),
    );
    clock.note = seen_error;

    let elapsed = t0.elapsed();
    let finished = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report = Report {
        version: REPORT_VERSION,
        finished_unix_secs: finished,
        elapsed_ms: elapsed.as_millis() as u64,
        boot_id: read_boot_id(&cfg.boot_id_path),
        reboot_cleanup_boot_id: marker,
        dry_run: cfg.dry_run,
        outcome: outcome.clone(),
        plan: plan.clone(),
        items: items.clone(),
        private_containerd_start_ms: start_ms,
        notes,
        decisions,
        clock: Some(clock),
        liveness,
        snapshots,
    };
    let report_path = match write_report(&cfg.state_dir, &report) {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!(
                "preflight: cannot write the report to {}: {e}",
                cfg.state_dir.display()
            );
            None
        }
    };
    if let Err(e) = super::totals::record(
        &cfg.state_dir,
        &items,
        finished,
        elapsed.as_secs_f64(),
        outcome_label(&outcome),
    ) {
        log::warn!(
            "preflight: cannot update {} in {}: {e}",
            super::totals::TOTALS_FILE,
            cfg.state_dir.display()
        );
    }
    let images_removed = report
        .snapshots
        .as_ref()
        .map_or(0, |s| s.images_removed.len() as u64);
    if images_removed > 0
        && let Err(e) =
            super::totals::record_images(&cfg.state_dir, "snapshot_missing", images_removed)
    {
        log::warn!("preflight: cannot count removed images: {e}");
    }
    let count = |f: fn(&ItemResult) -> bool| items.iter().filter(|i| f(&i.result)).count();
    let done = count(|r| matches!(r, ItemResult::Done | ItemResult::AlreadyGone));
    let failed = count(|r| matches!(r, ItemResult::Failed(_)));
    let withheld = count(|r| matches!(r, ItemResult::Withheld(_)));
    log::info!(
        "preflight: {:?}: {} planned, {done} done, {failed} failed, {withheld} withheld in {} ms",
        outcome,
        plan.as_ref().map_or(0, |p| p.items.len()),
        elapsed.as_millis()
    );
    Summary {
        mode: plan.as_ref().map(|p| p.mode),
        planned: plan.as_ref().map_or(0, |p| p.items.len()),
        outcome,
        done,
        failed,
        withheld,
        elapsed,
        plan_text,
        report_path,
        report,
    }
}

/// Writes the report atomically: temp file, fsync, rename.
fn write_report(dir: &Path, report: &Report) -> std::io::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(REPORT_FILE);
    let tmp = dir.join(format!(".{REPORT_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    serde_json::to_writer_pretty(&mut f, report).map_err(std::io::Error::other)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::containerd::{Call, FakeStore};
    use crate::preflight::sandbox_meta::{
        BundleProbe, CONTAINER_METADATA_KEY, KIND_CONTAINER, KIND_LABEL, KIND_SANDBOX, Record,
        SANDBOX_METADATA_KEY,
    };

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn sandbox_record(c: char, name: &str, created: i64) -> Record {
        let mut r = Record {
            id: id(c),
            snapshotter: "overlayfs".into(),
            snapshot_key: id(c),
            created_unix_nanos: created,
            ..Default::default()
        };
        r.labels.insert(KIND_LABEL.into(), KIND_SANDBOX.into());
        r.extensions.insert(
            SANDBOX_METADATA_KEY.into(),
            format!(
                r#"{{"Version":"v1","Metadata":{{"ID":"{}","Name":"{name}","NetNSPath":"/var/run/netns/cni-{c}","IP":"10.42.0.{}"}}}}"#,
                id(c),
                c as u8
            )
            .into_bytes(),
        );
        r
    }

    fn container_record(c: char, name: &str, sandbox: char) -> Record {
        let mut r = Record {
            id: id(c),
            snapshotter: "overlayfs".into(),
            snapshot_key: id(c),
            created_unix_nanos: 1,
            ..Default::default()
        };
        r.labels.insert(KIND_LABEL.into(), KIND_CONTAINER.into());
        r.extensions.insert(
            CONTAINER_METADATA_KEY.into(),
            format!(
                r#"{{"Version":"v1","Metadata":{{"ID":"{}","Name":"{name}","SandboxID":"{}"}}}}"#,
                id(c),
                id(sandbox)
            )
            .into_bytes(),
        );
        r
    }

    struct Env {
        _dir: tempfile::TempDir,
        cfg: PreflightConfig,
    }

    fn env() -> Env {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("boot_id"), "7c1d5a4e-0f3b-4e7a-9d2c-1b8e6f4a3c21\n").unwrap();
        std::fs::create_dir_all(p.join("cni/results")).unwrap();
        std::fs::create_dir_all(p.join("cni/networks/cbr0")).unwrap();
        let cfg = PreflightConfig {
            cni_results_dir: p.join("cni/results"),
            cni_networks_dir: p.join("cni/networks"),
            state_dir: p.join("state"),
            boot_id_path: p.join("boot_id"),
            proc_root: p.join("proc"),
            containerd_state: p.join("run"),
            ..Default::default()
        };
        Env { _dir: d, cfg }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn rebooted_store() -> FakeStore {
        let mut f = FakeStore {
            records: vec![
                sandbox_record('a', "web-0_default_u1_0", 10),
                container_record('c', "app_web-0_default_u1_0", 'a'),
                sandbox_record('b', "db-0_default_u2_0", 20),
            ],
            ..Default::default()
        };
        for c in ['a', 'b', 'c'] {
            f.snapshots
                .insert(("overlayfs".into(), id(c)), "ACTIVE".into());
        }
        f.snapshots.insert(
            ("overlayfs".into(), "sha256:layer".into()),
            "COMMITTED".into(),
        );
        f
    }

    #[test]
    fn after_reboot_dead_records_go_containers_first_with_their_snapshots() {
        let e = env();
        let mut store = rebooted_store();
        let Repair {
            outcome,
            plan,
            items,
            marker,
            ..
        } = run_with_store(&e.cfg, Ok(&mut store), far());
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(plan.unwrap().mode, Mode::AfterReboot);
        assert_eq!(items.len(), 3);
        assert!(items.iter().all(|i| i.result == ItemResult::Done));
        assert_eq!(
            marker.as_deref(),
            Some("7c1d5a4e-0f3b-4e7a-9d2c-1b8e6f4a3c21")
        );
        let deletes: Vec<&Call> = store
            .calls
            .iter()
            .filter(|c| matches!(c, Call::DeleteRecord(_) | Call::RemoveSnapshot { .. }))
            .collect();
        assert_eq!(
            deletes,
            vec![
                &Call::DeleteRecord(id('c')),
                &Call::RemoveSnapshot {
                    snapshotter: "overlayfs".into(),
                    key: id('c')
                },
                &Call::DeleteRecord(id('a')),
                &Call::RemoveSnapshot {
                    snapshotter: "overlayfs".into(),
                    key: id('a')
                },
                &Call::DeleteRecord(id('b')),
                &Call::RemoveSnapshot {
                    snapshotter: "overlayfs".into(),
                    key: id('b')
                },
            ]
        );
        assert!(store.records.is_empty());
        // The image layer was never asked about.
        assert!(
            store
                .snapshots
                .contains_key(&("overlayfs".into(), "sha256:layer".into()))
        );
    }

    #[test]
    fn live_sandboxes_make_it_a_restart_and_nothing_alive_is_touched() {
        let e = env();
        let mut store = rebooted_store();
        store
            .tasks
            .insert(id('a'), TaskState::Running { pid: 4100 });
        store
            .tasks
            .insert(id('c'), TaskState::Running { pid: 4111 });
        store.bundles.insert(
            id('b'),
            BundleProbe::Pid {
                pid: 4200,
                alive: true,
            },
        );
        let Repair {
            outcome,
            plan,
            items,
            marker,
            ..
        } = run_with_store(&e.cfg, Ok(&mut store), far());
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(plan.unwrap().mode, Mode::AfterRestart);
        assert!(items.is_empty());
        assert_eq!(marker, None);
        assert!(
            !store
                .calls
                .iter()
                .any(|c| matches!(c, Call::DeleteRecord(_) | Call::DeleteTask(_)))
        );
    }

    #[test]
    fn stopped_tasks_are_deleted_before_their_record() {
        let e = env();
        let mut store = FakeStore {
            records: vec![
                sandbox_record('a', "web-0_default_u1_0", 10),
                sandbox_record('b', "web-0_default_u1_0", 20),
                sandbox_record('d', "other_default_u3_0", 5),
            ],
            ..Default::default()
        };
        store.tasks.insert(id('a'), TaskState::Stopped);
        store.tasks.insert(id('d'), TaskState::Running { pid: 77 });
        let Repair { plan, items, .. } = run_with_store(&e.cfg, Ok(&mut store), far());
        assert_eq!(plan.unwrap().mode, Mode::AfterRestart);
        assert_eq!(items.len(), 1, "{items:?}");
        let pos = |c: &Call| store.calls.iter().position(|x| x == c).unwrap();
        assert!(pos(&Call::DeleteTask(id('a'))) < pos(&Call::DeleteRecord(id('a'))));
    }

    fn store_entry(c: char) -> crate::preflight::sandbox_store::StoreEntry {
        let mut sb = containerd_client::types::Sandbox {
            sandbox_id: id(c),
            sandboxer: "podsandbox".into(),
            ..Default::default()
        };
        sb.extensions.insert(
            "metadata".into(),
            prost_types::Any {
                type_url: String::new(),
                value: format!(
                    r#"{{"Version":"v1","Metadata":{{"ID":"{}","Name":"ghost_default_u9_0"}}}}"#,
                    id(c)
                )
                .into_bytes(),
            },
        );
        crate::preflight::sandbox_store::StoreEntry::from_proto(sb)
    }

    #[test]
    fn on_2x_a_sandbox_goes_with_its_store_entry_and_a_dead_orphan_entry_goes_alone() {
        let e = env();
        let mut store = rebooted_store();
        // a and b have their records; e is an entry whose record is gone.
        store.store_entries = Some(vec![store_entry('a'), store_entry('b'), store_entry('e')]);
        store.tasks.insert(id('e'), TaskState::Stopped);
        let r = run_with_store(&e.cfg, Ok(&mut store), far());
        assert_eq!(r.outcome, Outcome::Completed);
        assert!(
            r.items.iter().all(|i| i.result == ItemResult::Done),
            "{:?}",
            r.items
        );
        let orphan = r
            .items
            .iter()
            .find(
                |i| matches!(&i.item.action, Action::RemoveSandbox { id: x, .. } if *x == id('e')),
            )
            .unwrap();
        assert!(matches!(
            orphan.item.reason,
            crate::preflight::plan::Reason::SandboxStoreOrphan { fatal: false, .. }
        ));
        let pos = |c: &Call| store.calls.iter().position(|x| x == c).unwrap();
        assert!(pos(&Call::DeleteRecord(id('a'))) < pos(&Call::DeleteStoreEntry(id('a'))));
        assert!(pos(&Call::DeleteTask(id('e'))) < pos(&Call::DeleteStoreEntry(id('e'))));
        assert!(
            !store.calls.contains(&Call::DeleteStoreEntry(id('c'))),
            "c is a container"
        );
        assert_eq!(store.store_entries.as_ref().unwrap().len(), 0);
        assert_eq!(r.liveness[&id('e')], Liveness::Dead("task stopped".into()));
    }

    #[test]
    fn a_record_gone_but_its_store_entry_kept_is_a_failed_item_not_a_done_one() {
        let e = env();
        let mut store = rebooted_store();
        store.store_entries = Some(vec![store_entry('b')]);
        store.failing_deletes = vec![id('b')];
        let r = run_with_store(&e.cfg, Ok(&mut store), far());
        let b = r
            .items
            .iter()
            .find(
                |i| matches!(&i.item.action, Action::RemoveSandbox { id: x, .. } if *x == id('b')),
            )
            .unwrap();
        assert!(matches!(b.result, ItemResult::Failed(_)));
        assert!(
            !store.calls.contains(&Call::DeleteStoreEntry(id('b'))),
            "the entry stays with its record"
        );
        assert_eq!(r.marker, None);
    }

    #[test]
    fn dry_run_plans_but_calls_nothing_destructive_and_keeps_files() {
        let mut e = env();
        e.cfg.dry_run = true;
        let corrupt = e.cfg.cni_results_dir.join("cbr0-x-eth0");
        std::fs::write(&corrupt, "").unwrap();
        let mut store = rebooted_store();
        let Repair {
            outcome,
            plan,
            items,
            ..
        } = run_with_store(&e.cfg, Ok(&mut store), far());
        assert_eq!(outcome, Outcome::DryRun);
        assert!(items.is_empty());
        let text = plan.unwrap().to_string();
        assert_eq!(text.matches("would remove").count(), 4, "{text}");
        assert!(text.contains("zero-length"));
        assert!(corrupt.exists());
        assert!(store.calls.iter().all(|c| matches!(
            c,
            Call::ListRecords | Call::ListTasks | Call::ListStore | Call::BundleProbe(_)
        )));
    }

    #[test]
    fn unreachable_containerd_still_removes_corrupt_results_but_no_reservation() {
        let e = env();
        let corrupt = e.cfg.cni_results_dir.join("cbr0-x-eth0");
        std::fs::write(&corrupt, "{\"kind\":").unwrap();
        let resv = e.cfg.cni_networks_dir.join("cbr0/10.42.0.9");
        std::fs::write(&resv, format!("{}\r\neth0", id('a'))).unwrap();
        let Repair {
            outcome,
            items,
            marker,
            ..
        } = run_with_store(&e.cfg, Err("containerd exited".into()), far());
        assert_eq!(
            outcome,
            Outcome::ContainerdUnavailable("containerd exited".into())
        );
        assert_eq!(items.len(), 1);
        assert!(!corrupt.exists());
        assert!(resv.exists());
        assert_eq!(marker, None);
    }

    #[test]
    fn spent_budget_skips_the_rest_and_the_cleanup_is_not_marked_done() {
        let e = env();
        let mut store = rebooted_store();
        let past = Instant::now() - Duration::from_millis(1);
        let Repair {
            outcome,
            items,
            marker,
            ..
        } = run_with_store(&e.cfg, Ok(&mut store), past);
        assert!(matches!(outcome, Outcome::TimedOut(_)));
        assert!(items.iter().all(|i| i.result == ItemResult::Skipped));
        assert_eq!(marker, None);
        assert_eq!(store.records.len(), 3);
    }

    #[test]
    fn failed_delete_is_reported_and_the_rest_still_runs() {
        let e = env();
        let mut store = rebooted_store();
        store.failing_deletes = vec![id('c')];
        let Repair {
            outcome,
            items,
            marker,
            ..
        } = run_with_store(&e.cfg, Ok(&mut store), far());
        assert_eq!(outcome, Outcome::Completed);
        assert!(
            matches!(&items[0].result, ItemResult::Failed(m) if m.contains("scripted failure"))
        );
        assert_eq!(items[1].result, ItemResult::Done);
        assert_eq!(marker, None, "a failed item leaves the reboot cleanup open");
    }

    #[test]
    fn second_run_in_the_same_boot_finds_nothing() {
        let e = env();
        let mut store = rebooted_store();
        let Repair { marker, .. } = run_with_store(&e.cfg, Ok(&mut store), far());
        let report = Report {
            version: REPORT_VERSION,
            finished_unix_secs: 0,
            elapsed_ms: 0,
            boot_id: None,
            reboot_cleanup_boot_id: marker,
            dry_run: false,
            outcome: Outcome::Completed,
            plan: None,
            items: vec![],
            private_containerd_start_ms: None,
            notes: vec![],
            decisions: vec![],
            clock: None,
            liveness: BTreeMap::new(),
            snapshots: None,
        };
        write_report(&e.cfg.state_dir, &report).unwrap();
        store.calls.clear();
        let Repair {
            outcome,
            plan,
            items,
            marker: marker2,
            ..
        } = run_with_store(&e.cfg, Ok(&mut store), far());
        assert_eq!(outcome, Outcome::Completed);
        assert!(plan.unwrap().is_empty());
        assert!(items.is_empty());
        assert_eq!(marker2, report.reboot_cleanup_boot_id);
    }

    #[test]
    fn over_the_record_cap_no_record_is_removed_and_the_reboot_cleanup_stays_open() {
        let mut e = env();
        e.cfg.records = Switch::allowed(2);
        let corrupt = e.cfg.cni_results_dir.join("cbr0-x-eth0");
        std::fs::write(&corrupt, "").unwrap();
        let mut store = rebooted_store();
        let r = run_with_store(&e.cfg, Ok(&mut store), far());
        assert_eq!(r.outcome, Outcome::Completed);
        assert_eq!(
            r.marker, None,
            "the next run in this boot must still see a reboot"
        );
        assert!(!r.decisions[0].allowed);
        assert!(
            r.decisions[0]
                .reason
                .contains("3 removals planned, over the cap of 2")
        );
        let withheld = r
            .items
            .iter()
            .filter(|i| matches!(i.result, ItemResult::Withheld(_)))
            .count();
        assert_eq!(withheld, 3);
        assert!(
            !store
                .calls
                .iter()
                .any(|c| matches!(c, Call::DeleteRecord(_)))
        );
        assert_eq!(store.records.len(), 3);
        assert!(!corrupt.exists(), "CNI files are judged on their own");
    }

    #[test]
    fn a_switched_off_cni_kind_keeps_the_files_while_dead_records_go() {
        let mut e = env();
        e.cfg.cni = Switch::withheld("actions.clean_cni.enabled = false", 500);
        let corrupt = e.cfg.cni_results_dir.join("cbr0-x-eth0");
        std::fs::write(&corrupt, "").unwrap();
        let mut store = rebooted_store();
        let r = run_with_store(&e.cfg, Ok(&mut store), far());
        assert!(corrupt.exists());
        assert!(store.records.is_empty());
        assert!(r.decisions[0].allowed && !r.decisions[1].allowed);
        assert_eq!(r.decisions[1].reason, "actions.clean_cni.enabled = false");
    }

    #[test]
    fn the_budget_leaves_the_repair_its_share_before_the_clock_wait() {
        let t0 = Instant::now();
        let cfg = PreflightConfig::default();
        assert_eq!(
            deadlines(&cfg, t0),
            (t0 + Duration::from_secs(10), t0 + Duration::from_secs(40))
        );
        let cfg = PreflightConfig {
            budget: Duration::from_secs(5),
            clock_wait: Duration::from_secs(30),
            ..Default::default()
        };
        assert_eq!(
            deadlines(&cfg, t0),
            (t0 + MIN_REPAIR_SHARE, t0 + Duration::from_secs(5))
        );
        let cfg = PreflightConfig {
            clock_wait: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(deadlines(&cfg, t0).0, t0 + DEFAULT_BUDGET);
    }

    #[test]
    fn a_clock_behind_last_seen_is_waited_for_reported_and_the_run_counted() {
        let e = env();
        let dir = e.cfg.state_dir.parent().unwrap().to_path_buf();
        let cfg = PreflightConfig {
            containerd_binary: dir.join("no-containerd"),
            containerd_root: dir.join("root"),
            containerd_socket: dir.join("k3s.sock"),
            run_dir: dir.join("run"),
            ..e.cfg.clone()
        };
        std::fs::create_dir_all(&cfg.state_dir).unwrap();
        let seen = 1_763_700_000;
        std::fs::write(
            cfg.state_dir.join("state.json"),
            format!(r#"{{"schema":1,"last_seen_unix":{seen}}}"#),
        )
        .unwrap();
        let time = clock_sanity::FakeTimeSync::new(1_000).synced_from(Duration::from_secs(2));
        let s = run_with(&cfg, &time);
        assert!(
            matches!(s.outcome, Outcome::ContainerdUnavailable(_)),
            "{:?}",
            s.outcome
        );
        let c = s.report.clock.as_ref().unwrap();
        assert_eq!(c.verdict, clock_sanity::ClockVerdict::CaughtUp);
        assert_eq!((c.behind_secs, c.waited_ms), (seen - 1_000, 2_000));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(s.report_path.unwrap()).unwrap()).unwrap();
        assert_eq!(json["clock"]["verdict"], "caught_up");
        let t = crate::preflight::totals::read(&cfg.state_dir)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.runs, t.last_outcome.as_str()),
            (1, "containerd_unavailable")
        );
    }

    #[test]
    fn refused_run_writes_a_report_and_touches_nothing() {
        let e = env();
        let root = e.cfg.state_dir.parent().unwrap().join("root");
        std::fs::create_dir_all(root.join("io.containerd.metadata.v1.bolt")).unwrap();
        let db = root.join("io.containerd.metadata.v1.bolt/meta.db");
        std::fs::write(&db, b"").unwrap();
        let f = std::fs::File::open(&db).unwrap();
        let _lock =
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        let corrupt = e.cfg.cni_results_dir.join("cbr0-x-eth0");
        std::fs::write(&corrupt, "").unwrap();
        let cfg = PreflightConfig {
            containerd_root: root,
            ..e.cfg.clone()
        };
        let s = run(&cfg);
        assert!(
            matches!(&s.outcome, Outcome::Refused(m) if m.contains("locked")),
            "{:?}",
            s.outcome
        );
        assert!(corrupt.exists());
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(s.report_path.unwrap()).unwrap()).unwrap();
        assert_eq!(json["outcome"], "refused");
        assert_eq!(json["boot_id"], "7c1d5a4e-0f3b-4e7a-9d2c-1b8e6f4a3c21");
    }

    #[test]
    fn this_boot_began_uptime_seconds_ago() {
        let d = tempfile::tempdir().unwrap();
        let up = d.path().join("uptime");
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        std::fs::write(&up, "3600.50 7000.00\n").unwrap();
        assert_eq!(boot_unix(&up, now), Some(6399));
        for bad in ["", "x 1", "-5 1", "20000.0 1"] {
            std::fs::write(&up, bad).unwrap();
            assert_eq!(boot_unix(&up, now), None, "{bad:?}");
        }
        assert_eq!(boot_unix(&d.path().join("missing"), now), None);
        // The real one: some time before now.
        let real = boot_unix(Path::new("/proc/uptime"), SystemTime::now()).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(real <= now);
    }
}
