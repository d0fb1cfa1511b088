//! The real [`NodeApi`], on the kube crate. Thin on purpose: wire bodies come from the pure
//! modules (`conditions::status_patch`, `cordon::patch_body`); this file maps types, bounds
//! every call by a deadline, counts requests, and classifies failures.
//!
//! kube's own retry layer is switched off: it would retry a PDB's 429 on an eviction
//! (hiding the refusal drain must see) and stretch a call past our deadline while the API
//! is down. Retrying is the sync loop's job, with backoff.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ::kube::Client;
use ::kube::api::{Api, GetParams, ListParams, Patch, PatchParams, PostParams};
use ::kube::core::Request as ApiRequest;
use ::kube::core::request::Error as RequestError;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::NodeCondition as WireCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::api::{
    COMPONENT, ConditionStatus, CordonChange, EVENT_NAMESPACE, EvictOutcome, KubeError, LeaseView,
    NodeApi, NodeCondition, NodeEvent, NodeView, PodView, format_time, to_timestamp,
};
use super::credentials::{CredentialSource, CredentialsError, client_config};
use super::metrics::KubeMetrics;
use super::{conditions, cordon};
use crate::config::kubernetes::DEFAULT_REQUEST_TIMEOUT;

/// A LAN API server accepts TCP in milliseconds; 5 s covers a loaded Pi control plane
/// without stalling the sync loop when the address is black-holed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Shows up in `managedFields`, so `kubectl get node -o yaml --show-managed-fields` tells
/// who wrote what.
pub(crate) const FIELD_MANAGER: &str = "nodemedic";

/// Annotation kubelet puts on the API mirror of a static pod.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The explicit key that lets drain evict a pod without a controller.
pub(crate) const EVICTABLE_ANNOTATION: &str = "nodemedic.io/evictable";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

#[derive(Clone)]
pub struct KubeClient {
    client: Client,
    timeouts: Timeouts,
    metrics: Option<KubeMetrics>,
}

impl KubeClient {
    /// Builds a client for discovered credentials. Does no network I/O.
    pub async fn connect(
        source: &CredentialSource,
        root: &Path,
        timeouts: Timeouts,
        metrics: Option<KubeMetrics>,
    ) -> Result<KubeClient, CredentialsError> {
        let config = client_config(source, root).await?;
        Self::from_config(config, timeouts, metrics).map_err(|detail| CredentialsError::Load {
            what: source.describe(),
            detail,
        })
    }

    /// Builds a client from a kube config, overriding its timeouts and retry policy.
    pub fn from_config(
        mut config: ::kube::Config,
        timeouts: Timeouts,
        metrics: Option<KubeMetrics>,
    ) -> Result<KubeClient, String> {
        config.connect_timeout = Some(timeouts.connect);
        config.read_timeout = Some(timeouts.request);
        config.write_timeout = Some(timeouts.request);
        config.default_retry = false;
        let client = Client::try_from(config).map_err(|e| chain(&e))?;
        Ok(KubeClient {
            client,
            timeouts,
            metrics,
        })
    }

    /// Runs one API call under the request deadline and counts it.
    async fn call<T>(
        &self,
        verb: &'static str,
        resource: &'static str,
        name: &str,
        fut: impl Future<Output = Result<T, ::kube::Error>>,
    ) -> Result<T, KubeError> {
        let res = match tokio::time::timeout(self.timeouts.request, fut).await {
            Err(_) => Err(KubeError::Timeout {
                verb,
                resource,
                name: name.to_string(),
                after: self.timeouts.request,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(verb, resource, name, e)),
        };
        if let Some(m) = &self.metrics {
            let code = match &res {
                // kube does not expose the status of a success; these are the codes the
                // API documents for each verb.
                Ok(_) if verb == "create" => "201".to_string(),
                Ok(_) => "200".to_string(),
                Err(e) => e.code_label(),
            };
            m.request(verb, resource, code);
        }
        res
    }

    fn params() -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        }
    }

    fn post_params() -> PostParams {
        PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        }
    }
}

/// Maps a kube error: transport failures mean the API is unreachable, API answers keep
/// their code, reason and message.
fn classify(verb: &'static str, resource: &'static str, name: &str, e: ::kube::Error) -> KubeError {
    let name = name.to_string();
    match e {
        ::kube::Error::Api(s) => KubeError::Api {
            verb,
            resource,
            name,
            // A body that is not a Status gets code 0 from kube only if it had none.
            code: if s.code == 0 { 500 } else { s.code },
            reason: s.reason.clone(),
            message: s.message.clone(),
        },
        ::kube::Error::SerdeError(e) => KubeError::Decode {
            verb,
            resource,
            name,
            detail: e.to_string(),
        },
        other => KubeError::Unreachable {
            verb,
            resource,
            name,
            detail: chain(&other),
        },
    }
}

/// An error and its sources on one line ("... tcp connect error: Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn to_system(t: &Time) -> SystemTime {
    SystemTime::from(t.0)
}

// Only the fields nodemedic reads. Decoding the whole k8s-openapi `Node` or `Pod` links
// serde code for every field of NodeStatus and PodSpec (volumes, containers, probes),
// about a megabyte of a release binary; unknown fields are skipped.

#[derive(Deserialize)]
struct NodeWire {
    metadata: ObjectMeta,
    spec: Option<NodeSpecWire>,
    status: Option<NodeStatusWire>,
}

#[derive(Deserialize)]
struct NodeSpecWire {
    unschedulable: Option<bool>,
}

#[derive(Deserialize)]
struct NodeStatusWire {
    conditions: Option<Vec<WireCondition>>,
}

#[derive(Deserialize)]
struct PodWire {
    metadata: ObjectMeta,
    status: Option<PodStatusWire>,
}

#[derive(Deserialize)]
struct PodStatusWire {
    phase: Option<String>,
    #[serde(rename = "qosClass")]
    qos_class: Option<String>,
}

#[derive(Deserialize)]
struct ListWire<T> {
    items: Vec<T>,
}

fn node_view(n: NodeWire) -> NodeView {
    let conditions = n
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| NodeCondition {
            status: ConditionStatus::parse(&c.status),
            type_: c.type_,
            reason: c.reason.unwrap_or_default(),
            message: c.message.unwrap_or_default(),
            last_transition_time: c.last_transition_time.as_ref().map(to_system),
            last_heartbeat_time: c.last_heartbeat_time.as_ref().map(to_system),
        })
        .collect();
    NodeView {
        name: n.metadata.name.unwrap_or_default(),
        resource_version: n.metadata.resource_version.unwrap_or_default(),
        unschedulable: n.spec.and_then(|s| s.unschedulable).unwrap_or(false),
        annotations: n.metadata.annotations.unwrap_or_default(),
        conditions,
    }
}

fn pod_view(p: PodWire) -> PodView {
    let meta = p.metadata;
    let status = p.status.unwrap_or(PodStatusWire {
        phase: None,
        qos_class: None,
    });
    PodView {
        controller_kind: meta
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.kind),
        mirror: meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)),
        terminating: meta.deletion_timestamp.is_some(),
        evictable: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(EVICTABLE_ANNOTATION))
            .is_some_and(|v| v.trim() == "true"),
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        uid: meta.uid.unwrap_or_default(),
        qos_class: status.qos_class.unwrap_or_default(),
        phase: status.phase.unwrap_or_default(),
    }
}

fn lease_view(l: Lease) -> LeaseView {
    let spec = l.spec.unwrap_or_default();
    let micro = |t: Option<MicroTime>| t.map(|t| SystemTime::from(t.0));
    LeaseView {
        resource_version: l.metadata.resource_version,
        holder: spec.holder_identity,
        duration_secs: spec
            .lease_duration_seconds
            .and_then(|d| u32::try_from(d).ok()),
        acquire_time: micro(spec.acquire_time),
        renew_time: micro(spec.renew_time),
        transitions: spec
            .lease_transitions
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(0),
    }
}

fn lease_object(namespace: &str, name: &str, l: &LeaseView) -> Lease {
    let micro = |t: Option<SystemTime>| t.map(|t| MicroTime(to_timestamp(t)));
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            resource_version: l.resource_version.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: l.holder.clone(),
            lease_duration_seconds: l
                .duration_secs
                .map(|d| i32::try_from(d).unwrap_or(i32::MAX)),
            acquire_time: micro(l.acquire_time),
            renew_time: micro(l.renew_time),
            lease_transitions: Some(i32::try_from(l.transitions).unwrap_or(i32::MAX)),
            ..LeaseSpec::default()
        }),
    }
}

/// A core/v1 Event about the Node, as client-go's recorder writes one.
fn event_body(e: &NodeEvent) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": e.name, "namespace": EVENT_NAMESPACE},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Node",
            "name": e.node,
            // kubelet sets a Node reference's UID to the node name, and `kubectl describe
            // node` looks events up by exactly that.
            "uid": e.node,
        },
        "reason": e.reason,
        "message": e.message,
        "type": e.type_.as_str(),
        "count": e.count,
        "firstTimestamp": format_time(e.first),
        "lastTimestamp": format_time(e.last),
        "source": {"component": COMPONENT, "host": e.node},
        "reportingComponent": COMPONENT,
        "reportingInstance": e.node,
    })
}

const NODES: &str = "/api/v1/nodes";
const ALL_PODS: &str = "/api/v1/pods";

impl KubeClient {
    fn invalid(
        verb: &'static str,
        resource: &'static str,
        name: &str,
        e: RequestError,
    ) -> KubeError {
        KubeError::Invalid {
            verb,
            resource,
            name: name.to_string(),
            detail: e.to_string(),
        }
    }
}

impl NodeApi for KubeClient {
    async fn get_node(&self, node: &str) -> Result<NodeView, KubeError> {
        let req = ApiRequest::new(NODES)
            .get(node, &GetParams::default())
            .map_err(|e| Self::invalid("get", "nodes", node, e))?;
        let n: NodeWire = self
            .call("get", "nodes", node, self.client.request(req))
            .await?;
        Ok(node_view(n))
    }

    async fn patch_node_conditions(
        &self,
        node: &str,
        c: &[NodeCondition],
    ) -> Result<(), KubeError> {
        let body = Patch::Strategic(conditions::status_patch(c));
        let req = ApiRequest::new(NODES)
            .patch_subresource("status", node, &Self::params(), &body)
            .map_err(|e| Self::invalid("patch", "nodes/status", node, e))?;
        let _: IgnoredAny = self
            .call("patch", "nodes/status", node, self.client.request(req))
            .await?;
        Ok(())
    }

    async fn patch_node_cordon(
        &self,
        node: &str,
        change: &CordonChange,
        rv: &str,
    ) -> Result<(), KubeError> {
        let body = Patch::Merge(cordon::patch_body(change, rv));
        let req = ApiRequest::new(NODES)
            .patch(node, &Self::params(), &body)
            .map_err(|e| Self::invalid("patch", "nodes", node, e))?;
        let _: IgnoredAny = self
            .call("patch", "nodes", node, self.client.request(req))
            .await?;
        Ok(())
    }

    async fn create_event(&self, e: &NodeEvent) -> Result<(), KubeError> {
        let body = serde_json::to_vec(&event_body(e)).unwrap_or_default();
        let req = ApiRequest::new(format!("/api/v1/namespaces/{EVENT_NAMESPACE}/events"))
            .create(&Self::post_params(), body)
            .map_err(|err| Self::invalid("create", "events", &e.name, err))?;
        let _: IgnoredAny = self
            .call("create", "events", &e.name, self.client.request(req))
            .await?;
        Ok(())
    }

    async fn update_event(&self, e: &NodeEvent) -> Result<(), KubeError> {
        // client-go's event correlator bumps repeats with exactly these two fields.
        let body = Patch::Strategic(json!({
            "count": e.count,
            "lastTimestamp": format_time(e.last),
        }));
        let req = ApiRequest::new(format!("/api/v1/namespaces/{EVENT_NAMESPACE}/events"))
            .patch(&e.name, &Self::params(), &body)
            .map_err(|err| Self::invalid("patch", "events", &e.name, err))?;
        let _: IgnoredAny = self
            .call("patch", "events", &e.name, self.client.request(req))
            .await?;
        Ok(())
    }

    async fn list_pods_on_node(&self, node: &str) -> Result<Vec<PodView>, KubeError> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let req = ApiRequest::new(ALL_PODS)
            .list(&lp)
            .map_err(|e| Self::invalid("list", "pods", node, e))?;
        let list: ListWire<PodWire> = self
            .call("list", "pods", node, self.client.request(req))
            .await?;
        Ok(list.items.into_iter().map(pod_view).collect())
    }

    async fn list_nodes(&self, label_selector: &str) -> Result<Vec<NodeView>, KubeError> {
        let lp = match label_selector {
            "" => ListParams::default(),
            sel => ListParams::default().labels(sel),
        };
        let req = ApiRequest::new(NODES)
            .list(&lp)
            .map_err(|e| Self::invalid("list", "nodes", label_selector, e))?;
        let list: ListWire<NodeWire> = self
            .call("list", "nodes", label_selector, self.client.request(req))
            .await?;
        Ok(list.items.into_iter().map(node_view).collect())
    }

    async fn evict_pod(&self, namespace: &str, name: &str) -> Result<EvictOutcome, KubeError> {
        let key = format!("{namespace}/{name}");
        let body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        });
        let req = ApiRequest::new(format!("/api/v1/namespaces/{namespace}/pods"))
            .create_subresource(
                "eviction",
                name,
                &Self::post_params(),
                body.to_string().into_bytes(),
            )
            .map_err(|e| Self::invalid("create", "pods/eviction", &key, e))?;
        let res: Result<IgnoredAny, _> = self
            .call("create", "pods/eviction", &key, self.client.request(req))
            .await;
        match res {
            Ok(_) => Ok(EvictOutcome::Evicted),
            Err(KubeError::Api {
                code: 429, message, ..
            }) => Ok(EvictOutcome::Blocked { message }),
            Err(e) if e.is_not_found() => Ok(EvictOutcome::Gone),
            Err(e) => Err(e),
        }
    }

    async fn get_lease(&self, namespace: &str, name: &str) -> Result<Option<LeaseView>, KubeError> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        // Not `get_opt`: the metrics should show the 404 of a lock nobody created yet.
        match self.call("get", "leases", name, api.get(name)).await {
            Ok(l) => Ok(Some(lease_view(l))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_lease(
        &self,
        namespace: &str,
        name: &str,
        l: &LeaseView,
    ) -> Result<LeaseView, KubeError> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let obj = lease_object(
            namespace,
            name,
            &LeaseView {
                resource_version: None,
                ..l.clone()
            },
        );
        self.call(
            "create",
            "leases",
            name,
            api.create(&Self::post_params(), &obj),
        )
        .await
        .map(lease_view)
    }

    async fn replace_lease(
        &self,
        namespace: &str,
        name: &str,
        l: &LeaseView,
    ) -> Result<LeaseView, KubeError> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let obj = lease_object(namespace, name, l);
        self.call(
            "update",
            "leases",
            name,
            api.replace(name, &Self::post_params(), &obj),
        )
        .await
        .map(lease_view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::api::EventType;
    use crate::kube::credentials::{Discovery, discover, fixtures};
    use std::time::UNIX_EPOCH;

    #[tokio::test]
    async fn a_tls_client_with_a_k3s_kubelet_identity_builds_without_network() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_k3s_agent(dir.path(), "https://127.0.0.1:6443");
        let src = discover(&Discovery {
            root: dir.path(),
            explicit: None,
            service_host: None,
            service_port: None,
        })
        .unwrap();
        KubeClient::connect(&src, dir.path(), Timeouts::default(), None)
            .await
            .expect("rustls with ring and the kubelet client certificate");
    }

    #[tokio::test]
    async fn a_missing_client_key_is_a_load_error_naming_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_k3s_agent(dir.path(), "https://127.0.0.1:6443");
        std::fs::remove_file(
            dir.path()
                .join("var/lib/rancher/k3s/agent/client-kubelet.key"),
        )
        .unwrap();
        let src = CredentialSource::K3sKubelet(
            dir.path()
                .join(super::super::credentials::K3S_KUBELET_KUBECONFIG),
        );
        let Err(e) = KubeClient::connect(&src, dir.path(), Timeouts::default(), None).await else {
            panic!("expected an error")
        };
        assert!(e.to_string().contains("kubelet identity"), "{e}");
    }

    #[test]
    fn events_reference_the_node_the_way_kubectl_describe_finds_them() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let v = event_body(&NodeEvent {
            name: "pi5.187a3f2c9e1b0d00".into(),
            node: "pi5".into(),
            type_: EventType::Warning,
            reason: "RCUStall".into(),
            message: "rcu_preempt detected expedited stalls".into(),
            count: 3,
            first: t,
            last: t + Duration::from_secs(120),
        });
        assert_eq!(v["metadata"]["namespace"], "default");
        assert_eq!(v["involvedObject"]["kind"], "Node");
        assert_eq!(v["involvedObject"]["name"], "pi5");
        assert_eq!(v["involvedObject"]["uid"], "pi5");
        assert_eq!(v["source"]["component"], "nodemedic");
        assert_eq!(v["source"]["host"], "pi5");
        assert_eq!(v["count"], 3);
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["firstTimestamp"], "2025-11-24T16:00:00Z");
        assert_eq!(v["lastTimestamp"], "2025-11-24T16:02:00Z");
    }

    #[test]
    fn lease_objects_round_trip_through_the_wire_types() {
        let t = UNIX_EPOCH + Duration::from_micros(1_764_000_000_250_000);
        let l = LeaseView {
            resource_version: Some("812".into()),
            holder: Some("pi4".into()),
            duration_secs: Some(900),
            acquire_time: Some(t),
            renew_time: Some(t),
            transitions: 2,
        };
        let obj = lease_object("kube-system", "nodemedic-reboot", &l);
        let v = serde_json::to_value(&obj).unwrap();
        assert_eq!(v["spec"]["renewTime"], "2025-11-24T16:00:00.250000Z");
        assert_eq!(v["spec"]["holderIdentity"], "pi4");
        assert_eq!(v["metadata"]["resourceVersion"], "812");
        assert_eq!(lease_view(obj), l);
    }

    #[test]
    fn a_full_node_decodes_into_the_fields_nodemedic_reads() {
        let n: NodeWire = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": "pi5", "resourceVersion": "48213",
                "annotations": {"nodemedic.io/cordoned-by": "nodemedic"},
                "managedFields": [{"manager": "k3s", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}],
            },
            "spec": {"podCIDR": "10.42.0.0/24", "unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                     "lastHeartbeatTime": "2025-11-24T16:00:00Z", "lastTransitionTime": "2025-11-20T08:00:00Z"},
                    {"type": "NodeMedicKernelRCUStall", "status": "Unknown"},
                ],
                "images": [{"names": ["docker.io/rancher/mirrored-pause:3.6"], "sizeBytes": 253243}],
                "nodeInfo": {"kubeletVersion": "v1.32.4+k3s1"},
            },
        }))
        .unwrap();
        let v = node_view(n);
        assert_eq!(
            (
                v.name.as_str(),
                v.resource_version.as_str(),
                v.unschedulable
            ),
            ("pi5", "48213", true)
        );
        assert_eq!(v.annotations["nodemedic.io/cordoned-by"], "nodemedic");
        assert_eq!(v.conditions.len(), 2);
        let ready = &v.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status),
            ("Ready", ConditionStatus::True)
        );
        assert_eq!(
            ready.last_heartbeat_time,
            Some(UNIX_EPOCH + Duration::from_secs(1_764_000_000))
        );
        assert_eq!(v.conditions[1].status, ConditionStatus::Unknown);
        assert_eq!(
            (
                v.conditions[1].reason.as_str(),
                v.conditions[1].last_transition_time
            ),
            ("", None)
        );
        let bare: NodeWire = serde_json::from_value(json!({"metadata": {"name": "pi4"}})).unwrap();
        let b = node_view(bare);
        assert!(!b.unschedulable && b.conditions.is_empty());
    }

    #[test]
    fn pods_are_reduced_to_what_drain_and_eviction_need() {
        let pod: PodWire = serde_json::from_value(json!({
            "metadata": {
                "name": "svclb-traefik-x7k2p", "namespace": "kube-system",
                "uid": "5f1d2c3b-0a9e-4b7c-8d6e-1f2a3b4c5d6e",
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "svclb-traefik", "uid": "u1", "controller": true}
                ],
            },
            "status": {"phase": "Running", "qosClass": "BestEffort"},
        }))
        .unwrap();
        let v = pod_view(pod);
        assert_eq!(v.key(), "kube-system/svclb-traefik-x7k2p");
        assert_eq!(v.uid, "5f1d2c3b-0a9e-4b7c-8d6e-1f2a3b4c5d6e");
        assert_eq!(v.qos_class, "BestEffort");
        assert_eq!(v.controller_kind.as_deref(), Some("DaemonSet"));
        assert!(!v.mirror && !v.terminating);
        assert_eq!(v.phase, "Running");
        let mirror: PodWire = serde_json::from_value(json!({
            "metadata": {
                "name": "etcd-pi5", "namespace": "kube-system",
                "annotations": {"kubernetes.io/config.mirror": "3c1e"},
                "deletionTimestamp": "2025-11-24T16:00:00Z",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "pi5", "uid": "n", "controller": false}],
            },
        }))
        .unwrap();
        let m = pod_view(mirror);
        assert!(m.mirror && m.terminating);
        assert_eq!(
            (m.uid.as_str(), m.qos_class.as_str()),
            ("", ""),
            "no status: unknown QoS"
        );
        assert_eq!(
            m.controller_kind, None,
            "a non-controller owner is not a controller"
        );
    }
}
