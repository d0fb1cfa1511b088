//! The node API edge: the one trait every Kubernetes call goes through, the plain types it
//! speaks, and the error that says whether a failure means "the API is down" (queue and
//! retry) or "the API said no" (report).
//!
//! The trait is semantic (`patch_node_cordon`, `evict_pod`), not HTTP-shaped: the real
//! client builds wire bodies with the pure helpers in `conditions` and `cordon`, and the
//! recording fake applies the same meaning in memory. Methods return `impl Future + Send`
//! so a generic caller can still be spawned on the daemon's tokio runtime.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// Namespace for Events about cluster-scoped objects such as Nodes: client-go records
/// them in `default` (metav1.NamespaceDefault), and `kubectl describe node` looks there.
pub(crate) const EVENT_NAMESPACE: &str = "default";

/// `source.component` and `reportingComponent` of our Events.
pub(crate) const COMPONENT: &str = "nodemedic";

/// Status of a node condition, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }

    /// Anything other than `True`/`False` reads as `Unknown`, as the API conventions say.
    pub(crate) fn parse(s: &str) -> ConditionStatus {
        match s {
            "True" => ConditionStatus::True,
            "False" => ConditionStatus::False,
            _ => ConditionStatus::Unknown,
        }
    }
}

/// One entry of `status.conditions` on a Node (ours or kubelet's).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCondition {
    pub(crate) type_: String,
    pub(crate) status: ConditionStatus,
    pub(crate) reason: String,
    pub(crate) message: String,
    pub(crate) last_transition_time: Option<SystemTime>,
    pub(crate) last_heartbeat_time: Option<SystemTime>,
}

/// The parts of a Node nodemedic reads.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub name: String,
    /// Sent back with cordon changes so a concurrent `kubectl cordon` makes ours fail with
    /// 409 instead of being overwritten.
    pub(crate) resource_version: String,
    pub unschedulable: bool,
    pub(crate) annotations: BTreeMap<String, String>,
    pub conditions: Vec<NodeCondition>,
}

/// A change to `spec.unschedulable` and our ownership annotations.
#[derive(Clone, Debug, PartialEq)]
pub enum CordonChange {
    /// Set `spec.unschedulable` and record that nodemedic did it, why and when.
    Cordon { reason: String, at: SystemTime },
    /// Clear `spec.unschedulable` and our annotations.
    Uncordon,
    /// Only remove our annotations: someone else already made the node schedulable.
    ForgetOwnership,
}

/// A pod bound to this node, reduced to what drain decides on.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// `metadata.uid`: names the pod's cgroup directory.
    pub(crate) uid: String,
    /// `status.qosClass` (`Guaranteed`, `Burstable`, `BestEffort`), set by the API server
    /// when the pod is created; empty if absent.
    pub(crate) qos_class: String,
    /// Kind of the controlling owner reference (`DaemonSet`, `ReplicaSet`, ...), if any.
    pub(crate) controller_kind: Option<String>,
    /// A static pod's API mirror (annotation `kubernetes.io/config.mirror`): evicting it
    /// does nothing, kubelet owns it.
    pub(crate) mirror: bool,
    /// `status.phase`: `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub(crate) phase: String,
    /// `metadata.deletionTimestamp` is set: already on its way out.
    pub(crate) terminating: bool,
    /// Annotated `nodemedic.io/evictable: "true"`: a pod without a controller that its
    /// owner allows drain to evict (nothing recreates it elsewhere).
    pub(crate) evictable: bool,
}

impl PodView {
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the Eviction API answered for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvictOutcome {
    /// 201: the pod is being deleted gracefully.
    Evicted,
    /// 429: a PodDisruptionBudget forbids it right now; try again later.
    Blocked { message: String },
    /// 404: the pod no longer exists.
    Gone,
}

/// A coordination.k8s.io/v1 Lease, reduced to its spec.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LeaseView {
    /// None when writing a new Lease; set on everything read back.
    pub(crate) resource_version: Option<String>,
    pub(crate) holder: Option<String>,
    pub(crate) duration_secs: Option<u32>,
    pub(crate) acquire_time: Option<SystemTime>,
    pub(crate) renew_time: Option<SystemTime>,
    pub(crate) transitions: u32,
}

impl LeaseView {
    /// Holder identity, treating the empty string (client-go's "released") as none.
    pub(crate) fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// A core/v1 Event about our Node, as written (create) or bumped (repeat).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeEvent {
    /// `<node>.<hex>`, the client-go naming scheme; fixed before the first attempt so a
    /// retried create that already succeeded answers 409 instead of duplicating.
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) type_: EventType,
    pub(crate) reason: String,
    pub(crate) message: String,
    pub(crate) count: u32,
    pub(crate) first: SystemTime,
    pub(crate) last: SystemTime,
}

/// What the credentials in use may do. Every identity nodemedic uses may read and patch
/// its own Node (conditions, cordon) and create Events; a node's kubelet identity may not
/// evict pods or touch Leases in kube-system (NodeRestriction, kubernetes issue 63167), so
/// those are refused up front with a clear error instead of a 403 on every attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Human-readable name of the identity, for error messages.
    pub(crate) identity: String,
    pub(crate) evict: bool,
    pub(crate) leases: bool,
}

impl Capabilities {
    pub fn full(identity: impl Into<String>) -> Self {
        Capabilities {
            identity: identity.into(),
            evict: true,
            leases: true,
        }
    }

    pub(crate) fn kubelet(identity: impl Into<String>) -> Self {
        Capabilities {
            identity: identity.into(),
            evict: false,
            leases: false,
        }
    }
}

/// Every Kubernetes call nodemedic makes. Implementations bound each call by a deadline.
pub trait NodeApi: Send + Sync {
    fn get_node(&self, node: &str) -> impl Future<Output = Result<NodeView, KubeError>> + Send;

    /// Strategic-merge of `status.conditions` by `type`: only the listed types are written,
    /// so kubelet's own conditions are never touched.
    fn patch_node_conditions(
        &self,
        node: &str,
        conditions: &[NodeCondition],
    ) -> impl Future<Output = Result<(), KubeError>> + Send;

    /// Applies `change` only if the Node is still at `resource_version` (409 otherwise).
    fn patch_node_cordon(
        &self,
        node: &str,
        change: &CordonChange,
        resource_version: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;

    /// Creates the Event (409 AlreadyExists if that name exists).
    fn create_event(&self, event: &NodeEvent)
    -> impl Future<Output = Result<(), KubeError>> + Send;

    /// Updates count and lastTimestamp of an existing Event (404 if it expired).
    fn update_event(&self, event: &NodeEvent)
    -> impl Future<Output = Result<(), KubeError>> + Send;

    fn list_pods_on_node(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<PodView>, KubeError>> + Send;

    /// Nodes carrying the label `label_selector` names (`key` or `key=value`): the other
    /// k3s servers, for the quorum rule; `""` lists every Node (cluster-wide restraint
    /// reads their schedulability and `NodeMedic*` conditions).
    fn list_nodes(
        &self,
        label_selector: &str,
    ) -> impl Future<Output = Result<Vec<NodeView>, KubeError>> + Send;

    /// policy/v1 Eviction subresource.
    fn evict_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<EvictOutcome, KubeError>> + Send;

    fn get_lease(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<LeaseView>, KubeError>> + Send;

    /// 409 when a Lease of that name already exists.
    fn create_lease(
        &self,
        namespace: &str,
        name: &str,
        lease: &LeaseView,
    ) -> impl Future<Output = Result<LeaseView, KubeError>> + Send;

    /// Replaces the Lease at `lease.resource_version`; 409 if someone wrote it since.
    fn replace_lease(
        &self,
        namespace: &str,
        name: &str,
        lease: &LeaseView,
    ) -> impl Future<Output = Result<LeaseView, KubeError>> + Send;
}

/// Why a Kubernetes call failed. [`KubeError::api_unavailable`] separates "the API is
/// down" (a cluster problem: queue and retry, never a reason to heal this node) from
/// answers the API gave.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KubeError {
    #[error(
        "cannot reach the Kubernetes API for {verb} {resource} {name:?}: {detail}; \
         the change stays queued and is retried with backoff"
    )]
    Unreachable {
        verb: &'static str,
        resource: &'static str,
        name: String,
        detail: String,
    },
    #[error(
        "the Kubernetes API did not answer {verb} {resource} {name:?} within {after:?}; \
         the change stays queued and is retried with backoff"
    )]
    Timeout {
        verb: &'static str,
        resource: &'static str,
        name: String,
        after: Duration,
    },
    #[error(
        "the Kubernetes API answered {verb} {resource} {name:?} with {code} {reason}: {message}"
    )]
    Api {
        verb: &'static str,
        resource: &'static str,
        name: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error(
        "{action} is not allowed for the {identity} credentials; point `kubeconfig` at \
         credentials bound to the RBAC in packaging/k8s/rbac.yaml"
    )]
    NotPermitted {
        action: &'static str,
        identity: String,
    },
    #[error("cannot build the request {verb} {resource} {name:?}: {detail}")]
    Invalid {
        verb: &'static str,
        resource: &'static str,
        name: String,
        detail: String,
    },
    #[error("cannot decode the answer to {verb} {resource} {name:?}: {detail}")]
    Decode {
        verb: &'static str,
        resource: &'static str,
        name: String,
        detail: String,
    },
}

impl KubeError {
    /// HTTP status of an API answer.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the API itself is unavailable: no connection, no answer in time, or a
    /// 502/503/504 from the server or a load balancer in front of it.
    pub fn api_unavailable(&self) -> bool {
        match self {
            KubeError::Unreachable { .. } | KubeError::Timeout { .. } => true,
            KubeError::Api { code, .. } => matches!(code, 502..=504),
            _ => false,
        }
    }

    pub(crate) fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// Bounded label value for `nodemedic_kube_requests_total{code}`.
    pub(crate) fn code_label(&self) -> String {
        match self {
            KubeError::Unreachable { .. } => "unreachable".into(),
            KubeError::Timeout { .. } => "timeout".into(),
            KubeError::Api { code, .. } => code.to_string(),
            KubeError::NotPermitted { .. } => "not_permitted".into(),
            KubeError::Invalid { .. } => "invalid".into(),
            KubeError::Decode { .. } => "decode".into(),
        }
    }
}

/// `metav1.Time` wire form: RFC 3339 in UTC, whole seconds.
pub fn format_time(t: SystemTime) -> String {
    to_timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
/// `metav1.MicroTime` wire form (Lease times): RFC 3339 in UTC, microseconds.
pub(crate) fn format_micro_time(t: SystemTime) -> String {
    to_timestamp(t)
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[cfg(test)]
/// Parses either wire form (and any RFC 3339 offset). None on anything else.
pub(crate) fn parse_time(s: &str) -> Option<SystemTime> {
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(SystemTime::from)
}

pub(super) fn to_timestamp(t: SystemTime) -> k8s_openapi::jiff::Timestamp {
    // Out of jiff's range (year 9999+ or before -9999) only with a broken clock.
    k8s_openapi::jiff::Timestamp::try_from(t).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn times_use_the_kubernetes_wire_forms() {
        let t = UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456);
        assert_eq!(format_time(t), "2025-11-24T16:00:00Z");
        assert_eq!(format_micro_time(t), "2025-11-24T16:00:00.123456Z");
        assert_eq!(
            parse_time("2025-11-24T16:00:00.123456Z"),
            Some(t),
            "micro time round-trips"
        );
        assert_eq!(
            parse_time("2025-11-24T17:00:00+01:00"),
            Some(UNIX_EPOCH + Duration::from_secs(1_764_000_000))
        );
    }

    #[test]
    fn garbage_times_parse_to_none() {
        for s in ["", "yesterday", "2025-13-01T00:00:00Z", "1764000000"] {
            assert_eq!(parse_time(s), None, "{s:?}");
        }
    }

    #[test]
    fn only_transport_failures_and_gateway_codes_mean_the_api_is_down() {
        let api = |code| KubeError::Api {
            verb: "get",
            resource: "nodes",
            name: "pi5".into(),
            code,
            reason: String::new(),
            message: String::new(),
        };
        assert!(api(503).api_unavailable());
        assert!(api(504).api_unavailable());
        assert!(!api(403).api_unavailable());
        assert!(!api(409).api_unavailable());
        assert!(!api(429).api_unavailable(), "429 is the API answering");
        let t = KubeError::Timeout {
            verb: "patch",
            resource: "nodes",
            name: "pi5".into(),
            after: Duration::from_secs(10),
        };
        assert!(t.api_unavailable());
        assert_eq!(t.code_label(), "timeout");
        assert_eq!(api(409).code_label(), "409");
        assert!(api(409).is_conflict() && !api(409).is_not_found());
    }

    #[test]
    fn errors_name_the_object_and_what_happens_next() {
        let e = KubeError::Unreachable {
            verb: "patch",
            resource: "nodes/status",
            name: "pi4".into(),
            detail: "connection refused".into(),
        };
        let s = e.to_string();
        assert!(s.contains("nodes/status") && s.contains("pi4") && s.contains("retried"));
    }

    #[test]
    fn released_lease_holder_reads_as_none() {
        let mut l = LeaseView {
            holder: Some(String::new()),
            ..LeaseView::default()
        };
        assert_eq!(l.holder(), None);
        l.holder = Some("pi5".into());
        assert_eq!(l.holder(), Some("pi5"));
    }
}
