//! A recording, in-memory [`NodeApi`] for unit tests of everything above the wire: one
//! Node, its pods, Events and Leases, with the API's meaning (resourceVersion conflicts,
//! 409 on duplicate creates, 404 on missing objects, PDB refusals) and a switch that makes
//! every call fail as if the API were down. Tests assert on [`FakeNodeApi::calls`].
//! The wire format is covered separately, against an in-process fake API server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::UNIX_EPOCH;

use super::api::{
    ConditionStatus, CordonChange, EvictOutcome, KubeError, LeaseView, NodeApi, NodeCondition,
    NodeEvent, NodeView, PodView,
};
use super::cordon::{
    ANNOTATION_CORDON_REASON, ANNOTATION_CORDONED_AT, ANNOTATION_CORDONED_BY, CORDONED_BY_NODEMEDIC,
};

/// One call as the fake saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiCall {
    GetNode,
    PatchConditions(Vec<(String, ConditionStatus)>),
    PatchCordon(CordonChange),
    CreateEvent {
        name: String,
        count: u32,
    },
    UpdateEvent {
        name: String,
        count: u32,
    },
    ListPods,
    /// `list nodes` with this label selector.
    ListNodes(String),
    Evict(String),
    GetLease(String),
    CreateLease {
        name: String,
        holder: Option<String>,
    },
    ReplaceLease {
        name: String,
        holder: Option<String>,
    },
}

type NodeHook = Box<dyn FnOnce(&mut NodeView) + Send>;
type LeaseHook = Box<dyn FnOnce(&mut LeaseView) + Send>;

struct State {
    nodes: BTreeMap<String, NodeView>,
    /// Labels per node, for `list_nodes` (NodeView carries none).
    node_labels: BTreeMap<String, BTreeMap<String, String>>,
    pods: Vec<PodView>,
    eviction_scripts: BTreeMap<String, VecDeque<u16>>,
    eviction_attempts: BTreeMap<String, u32>,
    events: BTreeMap<String, NodeEvent>,
    leases: BTreeMap<String, LeaseView>,
    calls: Vec<ApiCall>,
    down: bool,
    hang: bool,
    /// Calls left before `hang` switches on by itself.
    hang_after: Option<u32>,
    revision: u64,
    after_get: Option<NodeHook>,
    after_lease_get: Option<LeaseHook>,
}

impl State {
    fn next_rv(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }
}

#[derive(Clone)]
pub struct FakeNodeApi {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeNodeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeNodeApi")
    }
}

fn new_node(name: &str) -> NodeView {
    let ready = NodeCondition {
        type_: "Ready".into(),
        status: ConditionStatus::True,
        reason: "KubeletReady".into(),
        message: "kubelet is posting ready status".into(),
        last_transition_time: Some(UNIX_EPOCH),
        last_heartbeat_time: Some(UNIX_EPOCH),
    };
    NodeView {
        name: name.into(),
        resource_version: "1".into(),
        unschedulable: false,
        annotations: BTreeMap::new(),
        conditions: vec![ready],
    }
}

fn api_error(
    verb: &'static str,
    resource: &'static str,
    name: &str,
    code: u16,
    reason: &str,
    message: String,
) -> KubeError {
    KubeError::Api {
        verb,
        resource,
        name: name.to_string(),
        code,
        reason: reason.into(),
        message,
    }
}

/// The apiserver's 404 for `name`; `kind` is how its message names the resource
/// (`leases.coordination.k8s.io`, where the request path says `leases`).
fn not_found(verb: &'static str, resource: &'static str, kind: &str, name: &str) -> KubeError {
    let msg = format!("{kind} \"{name}\" not found");
    api_error(verb, resource, name, 404, "NotFound", msg)
}

/// The apiserver's 409 for creating `name` twice; `kind` as for [`not_found`].
fn already_exists(verb: &'static str, resource: &'static str, kind: &str, name: &str) -> KubeError {
    let msg = format!("{kind} \"{name}\" already exists");
    api_error(verb, resource, name, 409, "AlreadyExists", msg)
}

fn conflict(verb: &'static str, resource: &'static str, name: &str) -> KubeError {
    api_error(
        verb,
        resource,
        name,
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
             modified; please apply your changes to the latest version and try again"
        ),
    )
}

impl FakeNodeApi {
    /// A Node named `node` with kubelet's `Ready` condition, schedulable.
    pub fn new(node: &str) -> Self {
        FakeNodeApi {
            state: Arc::new(Mutex::new(State {
                nodes: BTreeMap::from([(node.to_string(), new_node(node))]),
                node_labels: BTreeMap::new(),
                pods: Vec::new(),
                eviction_scripts: BTreeMap::new(),
                eviction_attempts: BTreeMap::new(),
                events: BTreeMap::new(),
                leases: BTreeMap::new(),
                calls: Vec::new(),
                down: false,
                hang: false,
                hang_after: None,
                revision: 1,
                after_get: None,
                after_lease_get: None,
            })),
        }
    }

    pub fn add_node(&self, node: &str) {
        self.lock().nodes.insert(node.into(), new_node(node));
    }

    /// Sets a label on a Node (as k3s labels its servers `node-role.kubernetes.io/...`).
    pub fn label_node(&self, node: &str, key: &str, value: &str) {
        self.lock()
            .node_labels
            .entry(node.into())
            .or_default()
            .insert(key.into(), value.into());
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node(&self, node: &str) -> NodeView {
        self.lock().nodes[node].clone()
    }

    /// Changes a Node as another writer would (kubectl, kubelet): bumps resourceVersion.
    pub fn edit_node(&self, node: &str, f: impl FnOnce(&mut NodeView)) {
        let mut s = self.lock();
        let rv = s.next_rv();
        let n = s.nodes.get_mut(node).expect("node exists");
        f(n);
        n.resource_version = rv;
    }

    /// Right after the next Node read, another writer changes that Node: the reader's
    /// resourceVersion is stale, as in a real race.
    pub fn after_next_get(&self, f: impl FnOnce(&mut NodeView) + Send + 'static) {
        self.lock().after_get = Some(Box::new(f));
    }

    /// Right after the next Lease read, another node writes (or creates) that Lease.
    pub fn after_next_lease_get(&self, f: impl FnOnce(&mut LeaseView) + Send + 'static) {
        self.lock().after_lease_get = Some(Box::new(f));
    }

    pub fn add_pod(&self, pod: PodView) {
        self.lock().pods.push(pod);
    }

    /// The pods still bound to the node (evicted ones are gone).
    pub fn pods(&self) -> Vec<PodView> {
        self.lock().pods.clone()
    }

    /// The next evictions of the pod answer these codes in order (429 = PDB refusal),
    /// then succeed.
    pub fn script_eviction(&self, namespace: &str, name: &str, codes: &[u16]) {
        self.lock().eviction_scripts.insert(
            format!("{namespace}/{name}"),
            codes.iter().copied().collect(),
        );
    }

    pub fn eviction_attempts(&self, namespace: &str, name: &str) -> u32 {
        let key = format!("{namespace}/{name}");
        self.lock()
            .eviction_attempts
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    pub fn events(&self) -> Vec<NodeEvent> {
        self.lock().events.values().cloned().collect()
    }

    pub fn lease(&self, name: &str) -> Option<LeaseView> {
        self.lock().leases.get(name).cloned()
    }

    /// Changes a Lease as another node would; bumps its resourceVersion.
    pub fn edit_lease(&self, name: &str, f: impl FnOnce(&mut LeaseView)) {
        let mut s = self.lock();
        let rv = s.next_rv();
        let l = s.leases.entry(name.to_string()).or_default();
        f(l);
        l.resource_version = Some(rv);
    }

    /// While down, every call fails as a refused connection would.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// While hanging, every call waits forever, as on a black-holed connection.
    pub fn set_hang(&self, hang: bool) {
        self.lock().hang = hang;
    }

    /// Lets `n` more calls through, then hangs every call (a deadline hit mid-way).
    pub fn hang_after(&self, n: u32) {
        self.lock().hang_after = Some(n);
    }

    async fn maybe_hang(&self) {
        let hang = {
            let mut s = self.lock();
            if let Some(n) = s.hang_after {
                s.hang = s.hang || n == 0;
                s.hang_after = n.checked_sub(1);
            }
            s.hang
        };
        if hang {
            std::future::pending::<()>().await;
        }
    }

    pub fn calls(&self) -> Vec<ApiCall> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Records the call; fails it if the API is down.
    fn enter(
        &self,
        call: ApiCall,
        verb: &'static str,
        resource: &'static str,
        name: &str,
    ) -> Result<MutexGuard<'_, State>, KubeError> {
        let mut s = self.lock();
        s.calls.push(call);
        if s.down {
            return Err(KubeError::Unreachable {
                verb,
                resource,
                name: name.to_string(),
                detail: "connection refused (fake API down)".into(),
            });
        }
        Ok(s)
    }
}

impl NodeApi for FakeNodeApi {
    async fn get_node(&self, node: &str) -> Result<NodeView, KubeError> {
        self.maybe_hang().await;
        let mut s = self.enter(ApiCall::GetNode, "get", "nodes", node)?;
        let Some(view) = s.nodes.get(node).cloned() else {
            return Err(not_found("get", "nodes", "nodes", node));
        };
        if let Some(hook) = s.after_get.take() {
            let rv = s.next_rv();
            let n = s.nodes.get_mut(node).expect("read above");
            hook(n);
            n.resource_version = rv;
        }
        Ok(view)
    }

    async fn patch_node_conditions(
        &self,
        node: &str,
        conditions: &[NodeCondition],
    ) -> Result<(), KubeError> {
        self.maybe_hang().await;
        let call = ApiCall::PatchConditions(
            conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status))
                .collect(),
        );
        let mut s = self.enter(call, "patch", "nodes/status", node)?;
        let rv = s.next_rv();
        let Some(n) = s.nodes.get_mut(node) else {
            return Err(not_found("patch", "nodes/status", "nodes", node));
        };
        for c in conditions {
            match n.conditions.iter_mut().find(|e| e.type_ == c.type_) {
                Some(e) => *e = c.clone(),
                None => n.conditions.push(c.clone()),
            }
        }
        n.resource_version = rv;
        Ok(())
    }

    async fn patch_node_cordon(
        &self,
        node: &str,
        change: &CordonChange,
        resource_version: &str,
    ) -> Result<(), KubeError> {
        self.maybe_hang().await;
        let mut s = self.enter(ApiCall::PatchCordon(change.clone()), "patch", "nodes", node)?;
        let rv = s.next_rv();
        let Some(n) = s.nodes.get_mut(node) else {
            return Err(not_found("patch", "nodes", "nodes", node));
        };
        if n.resource_version != resource_version {
            return Err(conflict("patch", "nodes", node));
        }
        let ann = [
            ANNOTATION_CORDONED_BY,
            ANNOTATION_CORDON_REASON,
            ANNOTATION_CORDONED_AT,
        ];
        match change {
            CordonChange::Cordon { reason, at } => {
                n.unschedulable = true;
                let a = &mut n.annotations;
                a.insert(ANNOTATION_CORDONED_BY.into(), CORDONED_BY_NODEMEDIC.into());
                a.insert(ANNOTATION_CORDON_REASON.into(), reason.clone());
                a.insert(ANNOTATION_CORDONED_AT.into(), super::api::format_time(*at));
            }
            CordonChange::Uncordon => {
                n.unschedulable = false;
                ann.iter().for_each(|k| {
                    n.annotations.remove(*k);
                });
            }
            CordonChange::ForgetOwnership => ann.iter().for_each(|k| {
                n.annotations.remove(*k);
            }),
        }
        n.resource_version = rv;
        Ok(())
    }

    async fn create_event(&self, event: &NodeEvent) -> Result<(), KubeError> {
        self.maybe_hang().await;
        let call = ApiCall::CreateEvent {
            name: event.name.clone(),
            count: event.count,
        };
        let mut s = self.enter(call, "create", "events", &event.name)?;
        if s.events.contains_key(&event.name) {
            return Err(already_exists("create", "events", "events", &event.name));
        }
        s.events.insert(event.name.clone(), event.clone());
        Ok(())
    }

    async fn update_event(&self, event: &NodeEvent) -> Result<(), KubeError> {
        self.maybe_hang().await;
        let call = ApiCall::UpdateEvent {
            name: event.name.clone(),
            count: event.count,
        };
        let mut s = self.enter(call, "patch", "events", &event.name)?;
        match s.events.get_mut(&event.name) {
            None => Err(not_found("patch", "events", "events", &event.name)),
            Some(e) => {
                e.count = event.count;
                e.last = event.last;
                Ok(())
            }
        }
    }

    async fn list_pods_on_node(&self, node: &str) -> Result<Vec<PodView>, KubeError> {
        self.maybe_hang().await;
        let s = self.enter(ApiCall::ListPods, "list", "pods", node)?;
        Ok(s.pods.clone())
    }

    async fn list_nodes(&self, label_selector: &str) -> Result<Vec<NodeView>, KubeError> {
        self.maybe_hang().await;
        let s = self.enter(
            ApiCall::ListNodes(label_selector.into()),
            "list",
            "nodes",
            label_selector,
        )?;
        let (key, value) = match label_selector.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (label_selector, None),
        };
        Ok(s.nodes
            .values()
            .filter(|n| {
                // An empty selector lists every Node, as the API does.
                label_selector.is_empty()
                    || s.node_labels
                        .get(&n.name)
                        .and_then(|l| l.get(key))
                        .is_some_and(|v| value.is_none_or(|want| v == want))
            })
            .cloned()
            .collect())
    }

    async fn evict_pod(&self, namespace: &str, name: &str) -> Result<EvictOutcome, KubeError> {
        self.maybe_hang().await;
        let key = format!("{namespace}/{name}");
        let mut s = self.enter(ApiCall::Evict(key.clone()), "create", "pods/eviction", &key)?;
        *s.eviction_attempts.entry(key.clone()).or_default() += 1;
        if !s.pods.iter().any(|p| p.key() == key) {
            return Ok(EvictOutcome::Gone);
        }
        match s
            .eviction_scripts
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
        {
            Some(429) => Ok(EvictOutcome::Blocked {
                message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            }),
            Some(code) => Err(api_error(
                "create",
                "pods/eviction",
                &key,
                code,
                "InternalError",
                "scripted".into(),
            )),
            None => {
                s.pods.retain(|p| p.key() != key);
                Ok(EvictOutcome::Evicted)
            }
        }
    }

    async fn get_lease(
        &self,
        _namespace: &str,
        name: &str,
    ) -> Result<Option<LeaseView>, KubeError> {
        self.maybe_hang().await;
        let mut s = self.enter(ApiCall::GetLease(name.into()), "get", "leases", name)?;
        let got = s.leases.get(name).cloned();
        if let Some(hook) = s.after_lease_get.take() {
            let rv = s.next_rv();
            let l = s.leases.entry(name.to_string()).or_default();
            hook(l);
            l.resource_version = Some(rv);
        }
        Ok(got)
    }

    async fn create_lease(
        &self,
        _namespace: &str,
        name: &str,
        lease: &LeaseView,
    ) -> Result<LeaseView, KubeError> {
        self.maybe_hang().await;
        let call = ApiCall::CreateLease {
            name: name.into(),
            holder: lease.holder.clone(),
        };
        let mut s = self.enter(call, "create", "leases", name)?;
        if s.leases.contains_key(name) {
            return Err(already_exists(
                "create",
                "leases",
                "leases.coordination.k8s.io",
                name,
            ));
        }
        let mut stored = lease.clone();
        stored.resource_version = Some(s.next_rv());
        s.leases.insert(name.into(), stored.clone());
        Ok(stored)
    }

    async fn replace_lease(
        &self,
        _namespace: &str,
        name: &str,
        lease: &LeaseView,
    ) -> Result<LeaseView, KubeError> {
        self.maybe_hang().await;
        let call = ApiCall::ReplaceLease {
            name: name.into(),
            holder: lease.holder.clone(),
        };
        let mut s = self.enter(call, "update", "leases", name)?;
        let Some(cur) = s.leases.get(name) else {
            return Err(not_found(
                "update",
                "leases",
                "leases.coordination.k8s.io",
                name,
            ));
        };
        if cur.resource_version != lease.resource_version {
            return Err(conflict("update", "leases.coordination.k8s.io", name));
        }
        let mut stored = lease.clone();
        stored.resource_version = Some(s.next_rv());
        s.leases.insert(name.into(), stored.clone());
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_resource_version_makes_a_cordon_conflict() {
        let api = FakeNodeApi::new("pi5");
        let rv = api.node("pi5").resource_version;
        api.edit_node("pi5", |n| n.unschedulable = true);
        let e = api
            .patch_node_cordon("pi5", &CordonChange::Uncordon, &rv)
            .await
            .unwrap_err();
        assert!(e.is_conflict());
        assert!(api.node("pi5").unschedulable, "nothing applied");
        assert_eq!(api.calls(), [ApiCall::PatchCordon(CordonChange::Uncordon)]);
    }

    #[tokio::test]
    async fn a_down_api_fails_every_call_but_records_it() {
        let api = FakeNodeApi::new("pi5");
        api.set_down(true);
        let e = api.get_node("pi5").await.unwrap_err();
        assert!(e.api_unavailable());
        assert_eq!(api.calls(), [ApiCall::GetNode]);
    }
}
