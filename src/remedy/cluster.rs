//! The wish board between the policy thread (plain, synchronous) and the Kubernetes task
//! (async, on the daemon's runtime).
//!
//! The policy thread never waits on the API: it writes wishes (conditions, cordon, lock,
//! Events) and reads the last readings (API up, lock, pause annotation, Ready). The task
//! hands wishes to [`NodeSync`], which coalesces them while the API is away and applies
//! them in bounded passes. With no credentials the board is "unconfigured": wishes are
//! dropped, and the engine sees the API as unreachable, so node-local healing goes on.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::kubernetes::RebootLease;
use crate::edge::Clock;
use crate::kube::api::{ConditionStatus, NodeApi, NodeView, PodView};
use crate::kube::conditions::DesiredCondition;
use crate::kube::events::EventDraft;
use crate::kube::evict_besteffort::{EvictResult, evict_largest};
use crate::kube::lease::LockWant;
use crate::kube::sync::{LockStatus, NodeSync, Now};
use crate::model::PodUsage;
use crate::policy::engine::Lease;
use crate::state::pause_annotation::{self, SeenPause};

use super::error::{ActionError, Target};

/// Events waiting for the task beyond this are dropped (the task is behind: the API is
/// down, and NodeSync's own log de-duplicates and rate-limits what is queued).
const MAX_QUEUED_EVENTS: usize = 100;

#[derive(Clone, Debug, Default)]
pub(crate) struct ClusterReadings {
    /// Credentials were found and the task runs.
    pub(crate) configured: bool,
    /// None until the first pass.
    pub(crate) api_up: Option<bool>,
    pub(crate) last_error: Option<String>,
    pub(crate) lock: Option<LockStatus>,
    /// The Node carries the pause annotation.
    pub(crate) paused: bool,
    pub(crate) node_ready: Option<bool>,
    /// Critical DaemonSet pods on this node: Ok, or what is not running.
    pub(crate) critical_pods: Option<Result<(), String>>,
    pub(crate) passes: u64,
    /// The other Nodes as of the last pass that could list them.
    pub(crate) cluster: Option<crate::policy::engine::ClusterView>,
}

#[derive(Default)]
pub(crate) struct Wishes {
    pub(crate) conditions: Option<Vec<DesiredCondition>>,
    /// Some(Some(reason)): cordon; Some(None): remove our cordon.
    pub(crate) cordon: Option<Option<String>>,
    pub(crate) lock: Option<LockWant>,
    pub(crate) events: Vec<EventDraft>,
    pub(crate) check_pods: Option<Vec<String>>,
    pub(crate) drain: bool,
    pub(crate) evict: Option<EvictRequest>,
}

/// Evict the largest BestEffort pod, given each one's working set as just measured.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EvictRequest {
    pub(crate) usage: Vec<PodUsage>,
    pub(crate) min_bytes: u64,
}

/// What became of an [`EvictRequest`]; Err when the API could not be asked.
pub(crate) type EvictDone = Result<EvictResult, ActionError>;

/// A Kubernetes failure on the actuator edge: an unavailable API is worth retrying, an
/// answer (403, 422, not permitted) is not.
pub(crate) fn kube_action_error(e: &crate::kube::api::KubeError) -> ActionError {
    if e.api_unavailable() {
        ActionError::unavailable(Target::Cluster, e.to_string())
    } else {
        ActionError::failed(Target::Cluster, e.to_string())
    }
}

pub(crate) struct ClusterLink {
    wishes: Mutex<Wishes>,
    readings: Mutex<ClusterReadings>,
    /// Outcomes of evictions, for the policy loop's audit.
    evictions: Mutex<Vec<EvictDone>>,
    /// An eviction was asked for and its outcome has not been taken yet: the policy loop
    /// looks every tick meanwhile, so the outcome is audited and counted at once.
    eviction_owed: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
    /// The other servers and this node's part, for the quorum rail (`super::servers`).
    servers: Mutex<super::servers::ServerSide>,
}

impl ClusterLink {
    pub fn new(configured: bool) -> Arc<Self> {
        Arc::new(ClusterLink {
            wishes: Mutex::new(Wishes::default()),
            evictions: Mutex::new(Vec::new()),
            eviction_owed: std::sync::atomic::AtomicBool::new(false),
            readings: Mutex::new(ClusterReadings {
                configured,
                ..ClusterReadings::default()
            }),
            wake: tokio::sync::Notify::new(),
            servers: Mutex::default(),
        })
    }

    /// The client could not be built after all: cluster features off.
    pub(crate) fn set_configured(&self, on: bool) {
        self.readings.lock().unwrap().configured = on;
    }

    fn configured(&self) -> bool {
        self.readings.lock().unwrap().configured
    }

    fn wish(&self, f: impl FnOnce(&mut Wishes)) {
        if self.configured() {
            f(&mut self.wishes.lock().unwrap());
            self.wake.notify_one();
        }
    }

    pub fn set_conditions(&self, c: Vec<DesiredCondition>) {
        self.wish(|w| w.conditions = Some(c));
    }
    pub fn want_cordon(&self, reason: &str) {
        self.wish(|w| w.cordon = Some(Some(reason.to_string())));
    }
    pub fn want_uncordon(&self) {
        self.wish(|w| w.cordon = Some(None));
    }
    pub fn want_lock(&self, want: LockWant) {
        self.wish(|w| w.lock = Some(want));
    }
    pub(crate) fn event(&self, e: EventDraft) {
        self.wish(|w| {
            if w.events.len() < MAX_QUEUED_EVENTS {
                w.events.push(e);
            }
        });
    }
    /// Evicts this node's movable pods (PDBs respected) on the next pass.
    pub(crate) fn want_drain(&self) {
        self.wish(|w| w.drain = true);
    }
    /// Evicts the largest BestEffort pod on the next pass. A newer request replaces one
    /// not yet carried out: only the latest measurement counts.
    pub(crate) fn want_evict(&self, req: EvictRequest) {
        self.eviction_owed
            .store(true, std::sync::atomic::Ordering::Release);
        self.wish(|w| w.evict = Some(req));
    }
    /// An eviction's outcome is still to come.
    pub(crate) fn eviction_owed(&self) -> bool {
        self.eviction_owed
            .load(std::sync::atomic::Ordering::Acquire)
    }
    /// Eviction outcomes since the last call, oldest first.
    pub(crate) fn take_evictions(&self) -> Vec<EvictDone> {
        let done = std::mem::take(&mut *self.evictions.lock().unwrap());
        if !done.is_empty() {
            self.eviction_owed
                .store(false, std::sync::atomic::Ordering::Release);
        }
        done
    }
    pub(crate) fn check_pods(&self, prefixes: Vec<String>) {
        self.wish(|w| w.check_pods = Some(prefixes));
    }

    #[cfg(test)]
    pub(crate) fn push_eviction(&self, done: EvictDone) {
        self.evictions.lock().unwrap().push(done);
    }

    #[cfg(test)]
    pub(crate) fn update_readings(&self, f: impl FnOnce(&mut ClusterReadings)) {
        f(&mut self.readings.lock().unwrap());
    }

    pub(crate) fn servers(&self) -> std::sync::MutexGuard<'_, super::servers::ServerSide> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn readings(&self) -> ClusterReadings {
        self.readings.lock().unwrap().clone()
    }

    /// The reboot lease as the engine sees it, under `kubernetes.reboot_lease`, and why
    /// (for the audit of a reboot that goes ahead).
    pub(crate) fn lease(&self, mode: RebootLease) -> (Lease, &'static str) {
        let r = self.readings();
        let reachable = r.configured && r.api_up == Some(true);
        match (mode, &r.lock) {
            (RebootLease::Off, _) => (
                Lease::NotNeeded,
                "rebooting without the cluster lease (kubernetes.reboot_lease = \"off\")",
            ),
            (_, Some(LockStatus::Held { .. })) if reachable => {
                (Lease::Held, "holding the cluster reboot lease")
            }
            // Credentials but no pass yet (the daemon just started): whether the API
            // answers is unknown, and a reboot without the lease it could have had is not
            // undone. The first pass takes at most `request_timeout`.
            _ if r.configured && r.api_up.is_none() => (
                Lease::Pending,
                "the Kubernetes API has not been reached yet",
            ),
            (RebootLease::WhenPermitted, _) if !reachable => (
                Lease::NotNeeded,
                "the Kubernetes API is unreachable: rebooting without the cluster lease (a wedged node must still heal; kubernetes.reboot_lease = \"when_permitted\")",
            ),
            (RebootLease::WhenPermitted, Some(LockStatus::NotPermitted)) => (
                Lease::NotNeeded,
                "these credentials may not take the cluster lease (a k3s agent's kubelet identity): rebooting without it (kubernetes.reboot_lease = \"when_permitted\")",
            ),
            (RebootLease::Required, Some(LockStatus::NotPermitted)) => (
                Lease::Pending,
                "these credentials may not take the cluster lease and kubernetes.reboot_lease = \"required\": no automatic reboot",
            ),
            (RebootLease::Required, _) if !reachable => (
                Lease::Pending,
                "the Kubernetes API is unreachable and kubernetes.reboot_lease = \"required\": waiting for it",
            ),
            (_, Some(LockStatus::Waiting { .. })) => (
                Lease::Pending,
                "another node holds the cluster reboot lease",
            ),
            _ => (
                Lease::Pending,
                "the cluster reboot lease is not granted yet",
            ),
        }
    }

    pub(crate) fn take(&self) -> Wishes {
        std::mem::take(&mut self.wishes.lock().unwrap())
    }
}

/// What the Nodes say, for the engine's cluster-wide rails. Pure.
pub(crate) fn cluster_view(nodes: &[NodeView], me: &str) -> crate::policy::engine::ClusterView {
    let mut v = crate::policy::engine::ClusterView {
        nodes: nodes.len() as u32,
        ..Default::default()
    };
    for n in nodes {
        if !n.unschedulable {
            v.schedulable += 1;
            if n.name == me {
                v.this_schedulable = true;
            }
        }
        if n.name == me {
            continue;
        }
        let mut kinds: Vec<crate::model::ConditionKind> = n
            .conditions
            .iter()
            .filter(|c| c.status == ConditionStatus::True)
            .filter_map(|c| {
                c.type_
                    .strip_prefix(crate::kube::conditions::CONDITION_PREFIX)
            })
            .filter_map(crate::model::ConditionKind::from_name)
            .collect();
        kinds.sort();
        kinds.dedup();
        for k in kinds {
            *v.held_elsewhere.entry(k).or_default() += 1;
        }
    }
    v
}

/// The pause annotation is set to anything but an explicit "false".
pub(crate) fn paused_by_annotation(node: &NodeView, key: &str) -> bool {
    node.annotations
        .get(key)
        .is_some_and(|v| !matches!(v.trim(), "false" | "0" | "no"))
}

/// Keeps `state::pause_annotation` in step with the Node, for preflight (which runs before
/// the API): writes the file whenever the annotation's pause state or key changes, and only
/// then (a pass every `sync_interval` must not rewrite the state dir).
pub(crate) struct PauseRecorder {
    dir: Option<PathBuf>,
    /// What the file says, as (key, paused); `None` until known.
    last: Option<(String, bool)>,
}

impl PauseRecorder {
    /// `dir`: the state dir (`None`: nothing is persisted). Starts from what the file says,
    /// so a daemon restart does not rewrite an unchanged state.
    pub(crate) fn new(dir: Option<PathBuf>) -> PauseRecorder {
        let last = dir
            .as_deref()
            .and_then(|d| pause_annotation::read(d).ok().flatten())
            .map(|s| (s.annotation, s.paused));
        PauseRecorder { dir, last }
    }

    /// Notes what `node` says about annotation `key` at `now`.
    pub(crate) fn note(&mut self, node: &NodeView, key: &str, now: SystemTime) {
        let Some(dir) = &self.dir else { return };
        let paused = paused_by_annotation(node, key);
        if self.last.as_ref() == Some(&(key.to_string(), paused)) {
            return;
        }
        let seen = SeenPause {
            annotation: key.to_string(),
            value: node.annotations.get(key).cloned(),
            paused,
            seen_unix: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        match pause_annotation::write(dir, &seen) {
            Ok(()) => self.last = Some((seen.annotation, paused)),
            // Tried again at the next pass.
            Err(e) => log::warn!(
                "cannot record the pause annotation for preflight in {}: {e}",
                dir.display()
            ),
        }
    }
}

pub(crate) fn node_ready(node: &NodeView) -> Option<bool> {
    node.conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status == ConditionStatus::True)
}

/// Each critical DaemonSet (by pod-name prefix) that has pods on this node must have them
/// all Running. A DaemonSet with no pod here is not installed on this cluster: fine.
pub(crate) fn critical_pods_ok(pods: &[PodView], prefixes: &[String]) -> Result<(), String> {
    let mut bad = Vec::new();
    for p in pods {
        let is_critical = p.controller_kind.as_deref() == Some("DaemonSet")
            && prefixes.iter().any(|pre| p.name.starts_with(pre.as_str()));
        if is_critical && (p.phase != "Running" || p.terminating) {
            bad.push(format!("{} is {}", p.key(), p.phase));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join(", "))
    }
}

/// The Kubernetes task: applies wishes, runs a pass, updates readings, sleeps until the
/// interval, a wish, or stop.
pub async fn run<A: NodeApi + 'static>(
    link: Arc<ClusterLink>,
    mut sync: NodeSync<A>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    pause_annotation: String,
    mut pause_record: PauseRecorder,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_api_up: Option<bool> = None;
    loop {
        let w = link.take();
        let now = Now {
            wall: clock.wall(),
            mono: clock.monotonic(),
        };
        if let Some(c) = w.conditions {
            sync.set_conditions(c);
        }
        match w.cordon {
            Some(Some(reason)) => sync.want_cordon(reason),
            Some(None) => sync.want_uncordon(),
            None => {}
        }
        if let Some(l) = w.lock {
            sync.want_lock(l);
        }
        for e in w.events {
            sync.record_event(e, now);
        }
        let report = sync.sync(now).await;
        let node = sync.node().cloned();
        if w.drain && !node.as_ref().is_some_and(|n| n.unschedulable) {
            // The cordon did not land (API away, or raced): never drain a node that
            // takes the pods straight back. Asked again next pass.
            log::warn!("drain waits: the node is not cordoned yet");
            link.wishes.lock().unwrap().drain = true;
        } else if w.drain {
            let name = sync.config().node.clone();
            let caps = sync.config().capabilities.clone();
            let r = crate::kube::drain::drain(
                sync.api(),
                &name,
                &caps,
                crate::kube::drain::DrainOptions::default(),
            )
            .await;
            let (ty, reason, msg) = match r {
                Ok(rep) if rep.complete() => (
                    crate::kube::api::EventType::Normal,
                    "NodeMedicDrained",
                    "nodemedic drained the node".to_string(),
                ),
                Ok(rep) => (
                    crate::kube::api::EventType::Warning,
                    "NodeMedicDrainIncomplete",
                    format!("drain deadline passed with pods left: {rep:?}"),
                ),
                Err(e) => (
                    crate::kube::api::EventType::Warning,
                    "NodeMedicDrainFailed",
                    format!("drain failed: {e}"),
                ),
            };
            log::warn!("{msg}");
            sync.record_event(EventDraft::new(ty, reason, msg), now);
        }
        if let Some(req) = w.evict {
            // Not queued while the API is down: the measurement would be stale by the
            // time it is back, and the ladder's cooldown brings a fresh one.
            let done = match &report.api_down {
                Some(e) => Err(ActionError::unavailable(
                    Target::Cluster,
                    format!("the Kubernetes API is unreachable ({e}); no pod evicted"),
                )),
                None => {
                    let name = sync.config().node.clone();
                    let caps = sync.config().capabilities.clone();
                    evict_largest(sync.api(), &name, &caps, &req.usage, req.min_bytes)
                        .await
                        .map_err(|e| kube_action_error(&e))
                }
            };
            link.evictions.lock().unwrap().push(done);
        }
        if let (Some(me), None) = (link.wants_servers(), &report.api_down) {
            let peers = super::servers::list_peers(sync.api(), &me).await;
            link.note_servers(clock.unix_secs(), peers);
        }
        // The other Nodes, for cluster-wide restraint; unknown while the API is away.
        let view = match &report.api_down {
            None if report.attempted => {
                let me = sync.config().node.clone();
                match sync.api().list_nodes("").await {
                    Ok(nodes) => Some(Some(cluster_view(&nodes, &me))),
                    Err(e) => {
                        log::debug!("cannot list the Nodes: {e}");
                        Some(None)
                    }
                }
            }
            None => None,
            Some(_) => Some(None),
        };
        let pods = match (&w.check_pods, &report.api_down) {
            (Some(prefixes), None) => {
                let name = sync.config().node.clone();
                match sync.api().list_pods_on_node(&name).await {
                    Ok(pods) => Some(critical_pods_ok(&pods, prefixes)),
                    Err(e) => Some(Err(format!("cannot list pods: {e}"))),
                }
            }
            _ => None,
        };
        {
            let mut r = link.readings.lock().unwrap();
            r.passes += 1;
            if report.attempted {
                let up = report.api_down.is_none();
                if last_api_up != Some(up) {
                    match &report.api_down {
                        None => log::info!("Kubernetes API reachable"),
                        Some(e) => log::warn!(
                            "Kubernetes API unreachable ({e}); cluster actions are queued, node-local healing goes on"
                        ),
                    }
                    last_api_up = Some(up);
                }
                r.api_up = Some(up);
                r.last_error = report
                    .api_down
                    .as_ref()
                    .map(|e| e.to_string())
                    .or_else(|| report.errors.first().map(|e| e.to_string()));
            }
            if report.lock.is_some() {
                r.lock = report.lock.clone();
            }
            if let Some(v) = view {
                r.cluster = v;
            }
            if let Some(n) = &node {
                r.paused = paused_by_annotation(n, &pause_annotation);
                r.node_ready = node_ready(n);
            }
            if pods.is_some() {
                r.critical_pods = pods;
            } else if w.check_pods.is_some() {
                // Asked but the API is down: ask again next pass.
                link.wishes.lock().unwrap().check_pods = w.check_pods.clone();
            }
        }
        // Outside the readings' lock: a write to the state dir may take an fsync.
        if let Some(n) = &node {
            pause_record.note(n, &pause_annotation, clock.wall());
        }
        for e in &report.errors {
            log::warn!("Kubernetes: {e}");
        }
        let wait = report.retry_in.unwrap_or(interval).min(interval);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = link.wake.notified() => {
                // Coalesce a burst of wishes into one pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str, kind: Option<&str>, phase: &str) -> PodView {
        PodView {
            namespace: "longhorn-system".into(),
            name: name.into(),
            uid: String::new(),
            qos_class: "Burstable".into(),
            controller_kind: kind.map(String::from),
            mirror: false,
            phase: phase.into(),
            terminating: false,
            evictable: false,
        }
    }

    #[test]
    fn critical_daemonset_pods_must_all_be_running_when_present() {
        let pre = vec!["longhorn-csi-plugin".to_string()];
        assert_eq!(critical_pods_ok(&[], &pre), Ok(()));
        let ok = [pod("longhorn-csi-plugin-x7", Some("DaemonSet"), "Running")];
        assert_eq!(critical_pods_ok(&ok, &pre), Ok(()));
        let bad = [
            pod("longhorn-csi-plugin-x7", Some("DaemonSet"), "Pending"),
            // Same prefix but not a DaemonSet: not what the operator listed.
            pod("longhorn-csi-plugin-debug", None, "Failed"),
        ];
        let err = critical_pods_ok(&bad, &pre).unwrap_err();
        assert!(err.contains("longhorn-csi-plugin-x7 is Pending"), "{err}");
        assert!(!err.contains("debug"), "{err}");
    }

    #[test]
    fn pause_annotation_counts_unless_explicitly_false() {
        let mut n = NodeView {
            name: "pi1".into(),
            resource_version: "1".into(),
            unschedulable: false,
            annotations: BTreeMap::new(),
            conditions: vec![],
        };
        assert!(!paused_by_annotation(&n, "nodemedic.io/pause"));
        n.annotations.insert(
            "nodemedic.io/pause".into(),
            "maintenance until 18:00".into(),
        );
        assert!(paused_by_annotation(&n, "nodemedic.io/pause"));
        n.annotations
            .insert("nodemedic.io/pause".into(), "false".into());
        assert!(!paused_by_annotation(&n, "nodemedic.io/pause"));
    }

    #[test]
    fn the_pause_annotation_is_persisted_for_preflight_whenever_it_changes() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join(pause_annotation::PAUSE_ANNOTATION_FILE);
        let key = "nodemedic.io/pause";
        let mut n = NodeView {
            name: "pi1".into(),
            resource_version: "1".into(),
            unschedulable: false,
            annotations: BTreeMap::new(),
            conditions: vec![],
        };
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let seen = || pause_annotation::read(d.path()).unwrap().unwrap();
        let mut rec = PauseRecorder::new(Some(d.path().to_path_buf()));
        // The first pass records what it sees, unpaused too (it clears an older state).
        rec.note(&n, key, t(100));
        assert_eq!(
            seen(),
            SeenPause {
                annotation: key.into(),
                value: None,
                paused: false,
                seen_unix: 100
            }
        );
        // Unchanged: no write (the file removed behind its back stays removed).
        std::fs::remove_file(&file).unwrap();
        rec.note(&n, key, t(110));
        assert!(!file.exists());
        // Set: written with its value.
        n.annotations.insert(key.into(), "maintenance".into());
        rec.note(&n, key, t(120));
        let s = seen();
        assert!(s.paused && s.value.as_deref() == Some("maintenance") && s.seen_unix == 120);
        rec.note(&n, key, t(130));
        assert_eq!(seen().seen_unix, 120, "unchanged: not rewritten");
        // A restarted daemon starts from the file and does not rewrite an unchanged state.
        let mut rec = PauseRecorder::new(Some(d.path().to_path_buf()));
        rec.note(&n, key, t(140));
        assert_eq!(seen().seen_unix, 120);
        // Explicitly false: resumed, written.
        n.annotations.insert(key.into(), "false".into());
        rec.note(&n, key, t(150));
        let s = seen();
        assert!(!s.paused && s.value.as_deref() == Some("false") && s.seen_unix == 150);
        // Without a state dir nothing is written anywhere.
        PauseRecorder::new(None).note(&n, key, t(160));
        assert_eq!(seen().seen_unix, 150);
    }

    #[test]
    fn an_unconfigured_link_drops_wishes_and_reports_the_api_unreachable() {
        let l = ClusterLink::new(false);
        l.want_cordon("x");
        assert!(l.take().cordon.is_none());
        assert_eq!(l.lease(RebootLease::WhenPermitted).0, Lease::NotNeeded);
        assert_eq!(l.lease(RebootLease::Required).0, Lease::Pending);
    }

    #[test]
    fn the_lease_the_engine_sees_follows_kubernetes_reboot_lease() {
        use RebootLease::*;
        let l = ClusterLink::new(true);
        let set = |up: Option<bool>, lock: Option<LockStatus>| {
            let mut r = l.readings.lock().unwrap();
            r.api_up = up;
            r.lock = lock;
        };
        let waiting = Some(LockStatus::Waiting {
            holders: vec!["pi2".into()],
            retry_in: Duration::from_secs(5),
        });
        let held = Some(LockStatus::Held { slot: "s".into() });
        let cases = [
            // (api_up, lock, mode, expected)
            (None, None, WhenPermitted, Lease::Pending),
            (None, None, Required, Lease::Pending),
            (None, None, Off, Lease::NotNeeded),
            (Some(true), None, WhenPermitted, Lease::Pending),
            (Some(true), waiting.clone(), WhenPermitted, Lease::Pending),
            (Some(true), waiting.clone(), Required, Lease::Pending),
            (Some(true), waiting.clone(), Off, Lease::NotNeeded),
            (
                Some(false),
                waiting.clone(),
                WhenPermitted,
                Lease::NotNeeded,
            ),
            (Some(false), waiting, Required, Lease::Pending),
            (Some(true), held.clone(), WhenPermitted, Lease::Held),
            (Some(true), held, Required, Lease::Held),
            (
                Some(true),
                Some(LockStatus::NotPermitted),
                WhenPermitted,
                Lease::NotNeeded,
            ),
            (
                Some(true),
                Some(LockStatus::NotPermitted),
                Required,
                Lease::Pending,
            ),
            (
                Some(true),
                Some(LockStatus::NotHeld),
                WhenPermitted,
                Lease::Pending,
            ),
        ];
        for (up, lock, mode, want) in cases {
            set(up, lock.clone());
            assert_eq!(l.lease(mode).0, want, "{up:?} {lock:?} {mode:?}");
        }
    }
}
