//! An in-process fake kube-apiserver speaking the real wire protocol over plain HTTP on
//! 127.0.0.1, enough for nodemedic's client and for `kubectl` (which the tests use as an
//! oracle, so the fake cannot drift from real API behaviour unnoticed).
//!
//! What it implements, as the real server does:
//! - discovery (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`), `/version` and
//!   `/readyz` (plain `ok`);
//! - a generic object store with resourceVersions, uids, creationTimestamps, namespaces
//!   that must exist, 404/409/422 answers as `Status` objects;
//! - GET/LIST (fieldSelector), POST, PUT (optimistic concurrency), PATCH in the three
//!   patch types (strategic merge with merge keys such as `status.conditions` by `type`
//!   and `$patch: delete`; JSON merge; JSON patch), a `metadata.resourceVersion` in a patch
//!   is a precondition, DELETE;
//! - the `nodes/status` subresource (only status changes apply; the main resource ignores
//!   status changes), the `pods/eviction` subresource (201, 429 while a PDB blocks, 404);
//! - Nodes, Pods, Events, Leases, Namespaces, DaemonSets, PodDisruptionBudgets, and the
//!   RBAC kinds (stored, not enforced: [`rbac_allows`] evaluates them for tests).
//!
//! Test controls: every request is recorded; the server can refuse connections, answer
//! 503, or accept and never answer; evictions and write conflicts can be scripted.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How the fake API answers right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    Up,
    /// Nothing listens: connections are refused (k3s stopped).
    Refuse,
    /// Every request gets 503 ServiceUnavailable (apiserver up, etcd not).
    Unavailable,
    /// Connections are accepted and requests read, but never answered (partition).
    Hang,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: String,
    /// The status answered (0 if the request was never answered).
    pub status: u16,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A request in the terms the RBAC authorizer uses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RbacRequest {
    pub verb: String,
    pub group: String,
    /// `pods`, or `pods/eviction` for a subresource.
    pub resource: String,
    pub namespace: String,
    /// Empty for collections (list, create).
    pub name: String,
}

impl Recorded {
    /// This request as RBAC sees it; None for discovery and other non-resource URLs.
    pub fn rbac(&self) -> Option<RbacRequest> {
        let segs: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let (group, rest) = match segs.as_slice() {
            ["api", "v1", rest @ ..] if !rest.is_empty() => ("", rest),
            ["apis", g, _, rest @ ..] if !rest.is_empty() => (*g, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, tail @ ..] if !tail.is_empty() => (*ns, tail),
            other => ("", other),
        };
        let (resource, name) = match rest {
            [plural] => (plural.to_string(), ""),
            [plural, name] => (plural.to_string(), *name),
            [plural, name, sub] => (format!("{plural}/{sub}"), *name),
            _ => return None,
        };
        let watch = query_param(&self.query, "watch").is_some_and(|w| w == "true" || w == "1");
        let verb = match (self.method.as_str(), name.is_empty()) {
            ("GET", true) if watch => "watch",
            ("GET", true) => "list",
            ("GET", false) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "deletecollection",
            ("DELETE", false) => "delete",
            _ => return None,
        };
        Some(RbacRequest {
            verb: verb.into(),
            group: group.into(),
            resource,
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

fn rule_allows(rule: &Value, req: &RbacRequest) -> bool {
    let has = |field: &str, want: &str| {
        rule[field]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == want || v == "*"))
    };
    let names_ok = match rule["resourceNames"].as_array() {
        None => true,
        Some(a) if a.is_empty() => true,
        // Named rules never match requests without a name (list, create).
        Some(a) => !req.name.is_empty() && a.iter().any(|v| v == req.name.as_str()),
    };
    has("apiGroups", &req.group)
        && has("resources", &req.resource)
        && has("verbs", &req.verb)
        && names_ok
}

/// A resource the fake serves.
#[derive(Clone, Copy, Debug)]
struct Res {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
}

impl Res {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `leases.coordination.k8s.io`, as Status messages name resources.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const RESOURCES: &[Res] = &[
    Res {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
        subresources: &[],
    },
    Res {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short: &["no"],
        subresources: &[("status", "Node", &["get", "patch", "update"])],
    },
    Res {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short: &["po"],
        subresources: &[
            ("eviction", "Eviction", &["create"]),
            ("status", "Pod", &["get", "patch", "update"]),
        ],
    },
    Res {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        subresources: &[],
    },
    Res {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short: &[],
        subresources: &[],
    },
    Res {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short: &["pdb"],
        subresources: &[],
    },
    Res {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short: &["sa"],
        subresources: &[],
    },
    Res {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short: &[],
        subresources: &[],
    },
    Res {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short: &[],
        subresources: &[],
    },
    Res {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short: &[],
        subresources: &[],
    },
    Res {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short: &[],
        subresources: &[],
    },
    Res {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short: &[],
        subresources: &[],
    },
    Res {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        namespaced: true,
        short: &["ds"],
        subresources: &[],
    },
];

fn find_res(group: &str, version: &str, plural: &str) -> Option<&'static Res> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

fn res(plural: &str) -> &'static Res {
    RESOURCES
        .iter()
        .find(|r| r.plural == plural)
        .expect("known resource")
}

/// Fields each resource accepts in a fieldSelector (the real server refuses others).
fn selectable(plural: &str, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || match plural {
            "pods" => matches!(field, "spec.nodeName" | "status.phase"),
            "events" => {
                field.starts_with("involvedObject.")
                    || matches!(field, "reason" | "type" | "source" | "reportingComponent")
            }
            _ => false,
        }
}

type Key = (&'static str, String, String);

struct Store {
    objects: BTreeMap<Key, Value>,
    revision: u64,
    uids: u64,
    requests: Vec<Recorded>,
    eviction_scripts: BTreeMap<(String, String), VecDeque<u16>>,
    pdb_blocks: BTreeMap<(String, String), String>,
    conflicts: BTreeMap<String, u32>,
    availability: Availability,
}

enum Cmd {
    Availability(Availability, std::sync::mpsc::Sender<()>),
}

/// A running fake API server; stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A socket bound to `addr` but not listening: it keeps the port reserved while the
/// kernel answers every connection attempt with a reset ("connection refused").
/// SO_REUSEPORT lets it bind while the listener still holds the port, so the port is
/// never free for another test to take during a simulated outage.
fn reserve(addr: SocketAddr) -> TcpSocket {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_reuseaddr(true).expect("SO_REUSEADDR");
    sock.set_reuseport(true).expect("SO_REUSEPORT");
    match sock.bind(addr) {
        Ok(()) => sock,
        Err(e) => panic!("cannot bind the fake API port {addr}: {e}"),
    }
}

async fn accept(l: &Option<TcpListener>) -> std::io::Result<tokio::net::TcpStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

impl FakeApiServer {
    /// Starts on 127.0.0.1 with an ephemeral port and namespaces `default`,
    /// `kube-system`, `kube-public` and `kube-node-lease`.
    pub fn start() -> FakeApiServer {
        let store = Arc::new(Mutex::new(Store {
            objects: BTreeMap::new(),
            revision: 100,
            uids: 0,
            requests: Vec::new(),
            eviction_scripts: BTreeMap::new(),
            pdb_blocks: BTreeMap::new(),
            conflicts: BTreeMap::new(),
            availability: Availability::Up,
        }));
        let (cmds, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let st = store.clone();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    // Bound once, here, and never released while the server lives: a
                    // port probed and re-bound later can be taken by a parallel test.
                    let first = reserve(SocketAddr::from(([127, 0, 0, 1], 0)));
                    let addr = first.local_addr().unwrap();
                    let mut listener = Some(first.listen(64).expect("listen"));
                    let mut reserved: Option<TcpSocket> = None;
                    ready_tx.send(addr).unwrap();
                    let mut conns = JoinSet::new();
                    loop {
                        tokio::select! {
                            cmd = rx.recv() => match cmd {
                                None => break,
                                Some(Cmd::Availability(a, ack)) => {
                                    lock(&st).availability = a;
                                    // Entering an outage ends pooled keep-alive connections and
                                    // hanging requests. Coming back (or answering 503) keeps
                                    // them, as a real server that never went away does.
                                    if matches!(a, Availability::Refuse | Availability::Hang) {
                                        conns.abort_all();
                                    }
                                    if a == Availability::Refuse {
                                        if listener.is_some() {
                                            reserved = Some(reserve(addr));
                                            listener = None;
                                        }
                                    } else if listener.is_none() {
                                        let sock = reserved.take().unwrap_or_else(|| reserve(addr));
                                        listener = Some(sock.listen(64).expect("listen again"));
                                    }
                                    let _ = ack.send(());
                                }
                            },
                            conn = accept(&listener) => {
                                let Ok(stream) = conn else { continue };
                                let st = st.clone();
                                conns.spawn(async move {
                                    let svc = service_fn(move |req| handle(st.clone(), req));
                                    let _ = http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), svc)
                                        .await;
                                });
                            }
                            Some(_) = conns.join_next(), if !conns.is_empty() => {}
                        }
                    }
                    conns.abort_all();
                });
            })
            .expect("spawn the fake API server");
        let addr = ready_rx.recv().expect("fake API server started");
        let server = FakeApiServer {
            addr,
            store,
            cmds,
            thread: Some(thread),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            server.put(
                "namespaces",
                "",
                json!({"metadata": {"name": ns}, "status": {"phase": "Active"}}),
            );
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server (no auth, plain HTTP), as kubectl and kube read it.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: default
current-context: fake
users:
- name: fake
  user: {{}}
",
            self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> PathBuf {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, self.kubeconfig()).unwrap();
        path.to_path_buf()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Inserts or replaces an object directly (no admission, no conflict checks).
    pub fn put(&self, plural: &str, namespace: &str, mut obj: Value) -> Value {
        let r = res(plural);
        let mut s = self.store();
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        stamp_new(&mut s, r, namespace, &mut obj);
        s.objects
            .insert((r.plural, namespace.into(), name), obj.clone());
        obj
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let r = res(plural);
        self.store()
            .objects
            .get(&(r.plural, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Changes a stored object as another writer would; bumps its resourceVersion.
    pub fn edit(&self, plural: &str, namespace: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let r = res(plural);
        let mut s = self.store();
        s.revision += 1;
        let rv = s.revision.to_string();
        let obj = s
            .objects
            .get_mut(&(r.plural, namespace.to_string(), name.to_string()))
            .expect("object exists");
        f(obj);
        obj["metadata"]["resourceVersion"] = json!(rv);
    }

    pub fn list(&self, plural: &str) -> Vec<Value> {
        let r = res(plural);
        self.store()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == r.plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A k3s server node as kubelet registers it, with kubelet's four conditions.
    pub fn add_node(&self, name: &str) -> Value {
        let t = now_rfc3339();
        let cond = |type_: &str, status: &str, reason: &str, message: &str| {
            json!({"type": type_, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": t, "lastTransitionTime": t})
        };
        self.put(
            "nodes",
            "",
            json!({
                "metadata": {
                    "name": name,
                    "labels": {
                        "beta.kubernetes.io/arch": "arm64",
                        "kubernetes.io/arch": "arm64",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "node-role.kubernetes.io/control-plane": "true",
                        "node.kubernetes.io/instance-type": "k3s",
                    },
                    "annotations": {
                        "k3s.io/node-args": "[\"server\",\"--disable\",\"servicelb\"]",
                        "node.alpha.kubernetes.io/ttl": "0",
                        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                    },
                },
                "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"], "providerID": format!("k3s://{name}")},
                "status": {
                    "conditions": [
                        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                    ],
                    "addresses": [
                        {"type": "InternalIP", "address": "192.168.1.50"},
                        {"type": "Hostname", "address": name},
                    ],
                    "nodeInfo": {
                        "architecture": "arm64",
                        "kernelVersion": "6.17.0-1004-raspi",
                        "kubeletVersion": "v1.32.4+k3s1",
                        "kubeProxyVersion": "v1.32.4+k3s1",
                        "containerRuntimeVersion": "containerd://2.0.4-k3s2",
                        "operatingSystem": "linux",
                        "osImage": "Ubuntu 25.10",
                    },
                },
            }),
        )
    }

    pub fn node(&self, name: &str) -> Value {
        self.get("nodes", "", name).expect("node exists")
    }

    /// A pod bound to `node`. `owner` is the controller `(kind, name)`; `mirror` marks a
    /// static pod's mirror.
    pub fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        owner: Option<(&str, &str)>,
        mirror: bool,
    ) -> Value {
        let mut meta = json!({"name": name, "namespace": namespace, "labels": {"app": name}});
        if let Some((kind, owner_name)) = owner {
            let api_version = match kind {
                "Node" => "v1",
                "Job" => "batch/v1",
                _ => "apps/v1",
            };
            meta["ownerReferences"] = json!([{
                "apiVersion": api_version, "kind": kind, "name": owner_name,
                "uid": format!("00000000-0000-4000-8000-{:012x}", owner_name.len()),
                "controller": true, "blockOwnerDeletion": true,
            }]);
        }
        if mirror {
            meta["annotations"] = json!({
                "kubernetes.io/config.mirror": "8f2e3c0a9b1d",
                "kubernetes.io/config.source": "file",
            });
        }
        self.put(
            "pods",
            namespace,
            json!({
                "metadata": meta,
                "spec": {"nodeName": node, "containers": [{"name": "main", "image": "docker.io/library/busybox:1.36"}]},
                "status": {"phase": "Running"},
            }),
        )
    }

    /// A DaemonSet object (kubectl drain checks that a pod's DaemonSet exists).
    pub fn add_daemonset(&self, namespace: &str, name: &str) {
        self.put(
            "daemonsets",
            namespace,
            json!({"metadata": {"name": name, "namespace": namespace},
                   "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}),
        );
    }

    pub fn pod_exists(&self, namespace: &str, name: &str) -> bool {
        self.get("pods", namespace, name).is_some()
    }

    /// Events in `namespace`, oldest first.
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        self.list("events")
            .into_iter()
            .filter(|e| e["metadata"]["namespace"] == namespace)
            .collect()
    }

    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get("leases", namespace, name)
    }

    /// The next evictions of this pod answer these codes (429 = a PDB refuses), then the
    /// usual behaviour resumes.
    pub fn script_eviction(&self, namespace: &str, pod: &str, codes: &[u16]) {
        self.store().eviction_scripts.insert(
            (namespace.into(), pod.into()),
            codes.iter().copied().collect(),
        );
    }

    /// A PodDisruptionBudget named `pdb` refuses every eviction of this pod until
    /// [`FakeApiServer::unblock_eviction`].
    pub fn block_eviction(&self, namespace: &str, pod: &str, pdb: &str) {
        self.put(
            "poddisruptionbudgets",
            namespace,
            json!({"metadata": {"name": pdb, "namespace": namespace}, "spec": {"minAvailable": 1}}),
        );
        self.store()
            .pdb_blocks
            .insert((namespace.into(), pod.into()), pdb.into());
    }

    pub fn unblock_eviction(&self, namespace: &str, pod: &str) {
        self.store()
            .pdb_blocks
            .remove(&(namespace.into(), pod.into()));
    }

    /// The next `n` writes (PUT/PATCH) to `plural` lose a race: another writer bumps the
    /// object first, and the write answers 409 Conflict.
    pub fn script_conflicts(&self, plural: &str, n: u32) {
        self.store().conflicts.insert(plural.into(), n);
    }

    /// Changes availability; returns once the server behaves the new way.
    pub fn set_availability(&self, a: Availability) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.cmds
            .send(Cmd::Availability(a, tx))
            .expect("server running");
        rx.recv().expect("server acknowledged");
    }

    /// Whether the stored RBAC objects let ServiceAccount `namespace/name` make `req`, as
    /// the real authorizer decides: rules of roles bound to the subject (RoleBindings only
    /// in their namespace), matched by group, resource, verb and resourceNames.
    pub fn rbac_allows(&self, namespace: &str, name: &str, req: &RbacRequest) -> bool {
        let s = self.store();
        let bound = |b: &Value| {
            b["subjects"].as_array().is_some_and(|subs| {
                subs.iter().any(|x| {
                    x["kind"] == "ServiceAccount"
                        && x["name"] == name
                        && x["namespace"] == namespace
                })
            })
        };
        let rules_of = |plural: &'static str, ns: &str, role: &str| -> Vec<Value> {
            s.objects
                .get(&(plural, ns.to_string(), role.to_string()))
                .and_then(|r| r["rules"].as_array().cloned())
                .unwrap_or_default()
        };
        let mut grants: Vec<(Option<String>, Vec<Value>)> = Vec::new();
        for ((plural, ns, _), b) in &s.objects {
            if !bound(b) {
                continue;
            }
            let role = b["roleRef"]["name"].as_str().unwrap_or("");
            let cluster_role = b["roleRef"]["kind"] == "ClusterRole";
            match *plural {
                "clusterrolebindings" if cluster_role => {
                    grants.push((None, rules_of("clusterroles", "", role)))
                }
                "rolebindings" if cluster_role => {
                    grants.push((Some(ns.clone()), rules_of("clusterroles", "", role)))
                }
                "rolebindings" => grants.push((Some(ns.clone()), rules_of("roles", ns, role))),
                _ => {}
            }
        }
        grants.iter().any(|(scope, rules)| {
            scope.as_ref().is_none_or(|ns| *ns == req.namespace)
                && rules.iter().any(|r| rule_allows(r, req))
        })
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.store().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.store().requests.clear();
    }

    /// Recorded requests with this method whose path contains `needle`.
    pub fn requests_to(&self, method: &str, needle: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.contains(needle))
            .collect()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        // Closing the channel ends the accept loop.
        let (tx, _) = mpsc::unbounded_channel();
        self.cmds = tx;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn stamp_new(s: &mut Store, r: &Res, namespace: &str, obj: &mut Value) {
    s.revision += 1;
    s.uids += 1;
    let m = obj["metadata"].as_object_mut().expect("metadata");
    m.entry("uid")
        .or_insert_with(|| json!(format!("6f1c2e4a-0000-4000-8000-{:012x}", s.uids)));
    m.insert("resourceVersion".into(), json!(s.revision.to_string()));
    m.entry("creationTimestamp")
        .or_insert_with(|| json!(now_rfc3339()));
    if r.namespaced {
        m.insert("namespace".into(), json!(namespace));
    } else {
        m.remove("namespace");
    }
    obj["kind"] = json!(r.kind);
    obj["apiVersion"] = json!(r.api_version());
    if r.plural == "pods" && obj["status"]["qosClass"].is_null() {
        let q = qos_class(obj);
        obj["status"]["qosClass"] = json!(q);
    }
}

/// The Node condition of type `type_` in a Node object read from the server.
pub fn condition(node: &Value, type_: &str) -> Option<Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// `status.qosClass` as the API server sets it when a pod is created
/// (pkg/apis/core/helper/qos): no requests or limits anywhere is BestEffort; every
/// container with cpu and memory limits equal to its requests is Guaranteed; anything else
/// Burstable. Simplified: init containers and pod-level resources are not considered.
fn qos_class(pod: &Value) -> &'static str {
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let res = |c: &Value, kind: &str, r: &str| c["resources"][kind][r].as_str().map(String::from);
    let any = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|k| {
            c["resources"][*k]
                .as_object()
                .is_some_and(|m| !m.is_empty())
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = res(c, "limits", r);
            // A limit without a request defaults the request to the limit.
            limit.is_some() && res(c, "requests", r).is_none_or(|q| Some(q) == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

// ----------------------------------------------------------------------------------------
// HTTP

type Resp = Response<Full<Bytes>>;

fn respond(code: u16, body: &Value) -> Resp {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A `Status` failure in the shape the real API server sends.
fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> (u16, Value) {
    let mut v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        v["details"] = d;
    }
    (code, v)
}

fn not_found(r: &Res, name: &str) -> (u16, Value) {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", r.qualified()),
        Some(json!({"name": name, "group": r.group, "kind": r.plural})),
    )
}

fn conflict(r: &Res, name: &str) -> (u16, Value) {
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            r.qualified()
        ),
        Some(json!({"name": name, "group": r.group, "kind": r.plural})),
    )
}

fn invalid(r: &Res, name: &str, field: &str, why: &str) -> (u16, Value) {
    status(
        422,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {field}: {why}", r.kind),
        Some(json!({"name": name, "group": r.group, "kind": r.kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": why, "field": field}]})),
    )
}

fn bad_request(msg: &str) -> (u16, Value) {
    status(400, "BadRequest", msg, None)
}

async fn handle(
    store: Arc<Mutex<Store>>,
    req: Request<Incoming>,
) -> Result<Resp, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let (availability, idx) = {
        let mut s = lock(&store);
        s.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body_text,
            status: 0,
        });
        (s.availability, s.requests.len() - 1)
    };
    // The health endpoint answers plain text, as the real server's does.
    if path == "/readyz" && matches!(availability, Availability::Up | Availability::Refuse) {
        if let Some(r) = lock(&store).requests.get_mut(idx) {
            r.status = 200;
        }
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap());
    }
    let (code, value) = match availability {
        Availability::Hang => std::future::pending().await,
        Availability::Unavailable => status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        ),
        Availability::Up | Availability::Refuse => {
            let mut s = lock(&store);
            route(&mut s, &method, &path, &query, &content_type, &body)
        }
    };
    if let Some(r) = lock(&store).requests.get_mut(idx) {
        r.status = code;
    }
    Ok(respond(code, &value))
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(
    s: &mut Store,
    method: &Method,
    path: &str,
    query: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Value) {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|x| !x.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => return (200, version()),
        ["api"] => {
            return (
                200,
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "192.168.1.50:6443"}]}),
            );
        }
        ["apis"] => return (200, group_list()),
        _ => {}
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        ["apis", g] => return group_doc(g),
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            );
        }
    };
    if rest.is_empty() {
        return resource_list(group, version);
    }
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns), tail),
        other => (None, other),
    };
    let Some(r) = find_res(group, version, rest[0]) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    };
    if !r.namespaced && namespace.is_some() {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    }
    let ns = namespace.unwrap_or("");
    match (method.as_str(), &rest[1..]) {
        ("GET", []) => list(s, r, namespace, query),
        ("POST", []) => create(s, r, ns, body),
        ("GET", [name]) => get(s, r, ns, name),
        ("PUT", [name]) => update(s, r, ns, name, body, None),
        ("PATCH", [name]) => patch(s, r, ns, name, content_type, body, None),
        ("DELETE", [name]) => delete(s, r, ns, name),
        ("GET", [name, "status"]) if r.subresources.iter().any(|x| x.0 == "status") => {
            get(s, r, ns, name)
        }
        ("PUT", [name, "status"]) if r.subresources.iter().any(|x| x.0 == "status") => {
            update(s, r, ns, name, body, Some("status"))
        }
        ("PATCH", [name, "status"]) if r.subresources.iter().any(|x| x.0 == "status") => {
            patch(s, r, ns, name, content_type, body, Some("status"))
        }
        ("POST", [name, "eviction"]) if r.plural == "pods" => evict(s, ns, name, body),
        (m, _) => status(
            405,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource ({m})"),
            None,
        ),
    }
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.4+k3s1",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-04-24T00:00:00Z", "goVersion": "go1.23.6", "compiler": "gc",
        "platform": "linux/arm64",
    })
}

fn groups() -> Vec<&'static str> {
    let mut g: Vec<&str> = RESOURCES
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    g.sort();
    g.dedup();
    g
}

fn group_entry(g: &str) -> Value {
    let v = RESOURCES
        .iter()
        .find(|r| r.group == g)
        .map_or("v1", |r| r.version);
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

fn group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups().into_iter().map(group_entry).collect::<Vec<_>>()})
}

fn group_doc(g: &str) -> (u16, Value) {
    if groups().contains(&g) {
        let mut v = group_entry(g);
        v["kind"] = json!("APIGroup");
        v["apiVersion"] = json!("v1");
        (200, v)
    } else {
        status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        )
    }
}

fn resource_list(group: &str, version: &str) -> (u16, Value) {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        out.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": VERBS, "shortNames": r.short,
            "storageVersionHash": "nodemedicfake",
        }));
        for (sub, kind, verbs) in r.subresources {
            let mut e = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if *sub == "eviction" {
                // kubectl drain reads the Eviction API's group and version from here.
                e["group"] = json!("policy");
                e["version"] = json!("v1");
            }
            out.push(e);
        }
    }
    if out.is_empty() {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    (
        200,
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

fn key(r: &Res, ns: &str, name: &str) -> Key {
    (r.plural, ns.to_string(), name.to_string())
}

fn lookup<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(v, |cur, k| cur.get(k))
}

fn field_matches(obj: &Value, selector: &str) -> Result<bool, String> {
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let (field, want, negate) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, false)
        } else {
            return Err(format!("invalid field selector term {term:?}"));
        };
        let have = match lookup(obj, field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        if (have == want) == negate {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `labelSelector` equality-based terms: `key`, `!key`, `key=value`, `key==value`,
/// `key!=value`, comma-separated (all must hold), against `metadata.labels`.
fn labels_match(obj: &Value, selector: &str) -> Result<bool, String> {
    let labels = obj.pointer("/metadata/labels");
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let ok = if let Some((k, v)) = term.split_once("!=") {
            get(k) != Some(v)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            get(k) == Some(v)
        } else if let Some(k) = term.strip_prefix('!') {
            get(k).is_none()
        } else if term.contains([' ', '(', ')']) {
            return Err(format!(
                "set-based label selector {term:?} is not supported by this fake"
            ));
        } else {
            get(term).is_some()
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn list(s: &mut Store, r: &Res, namespace: Option<&str>, query: &str) -> (u16, Value) {
    if query_param(query, "watch").is_some_and(|w| w == "true" || w == "1") {
        return status(
            405,
            "MethodNotAllowed",
            "watch is not supported by this fake API server",
            None,
        );
    }
    let selector = query_param(query, "fieldSelector").unwrap_or_default();
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let field = term.split(['=', '!']).next().unwrap_or("");
        if !selectable(r.plural, field) {
            return bad_request(&format!("field label not supported: {field}"));
        }
    }
    let mut items = Vec::new();
    for ((p, ns, _), obj) in &s.objects {
        if *p != r.plural || namespace.is_some_and(|n| n != ns) {
            continue;
        }
        let labelled = match labels_match(
            obj,
            &query_param(query, "labelSelector").unwrap_or_default(),
        ) {
            Ok(m) => m,
            Err(e) => return bad_request(&e),
        };
        match field_matches(obj, &selector).map(|m| m && labelled) {
            Ok(true) => {
                let mut item = obj.clone();
                // Items of a real list carry no kind/apiVersion of their own.
                if let Some(m) = item.as_object_mut() {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
                items.push(item);
            }
            Ok(false) => {}
            Err(e) => return bad_request(&e),
        }
    }
    (
        200,
        json!({
            "kind": format!("{}List", r.kind),
            "apiVersion": r.api_version(),
            "metadata": {"resourceVersion": s.revision.to_string()},
            "items": items,
        }),
    )
}

fn get(s: &mut Store, r: &Res, ns: &str, name: &str) -> (u16, Value) {
    match s.objects.get(&key(r, ns, name)) {
        Some(o) => (200, o.clone()),
        None => not_found(r, name),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, (u16, Value)> {
    serde_json::from_slice(body).map_err(|e| {
        bad_request(&format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })
}

fn namespace_exists(s: &Store, ns: &str) -> bool {
    s.objects
        .contains_key(&("namespaces", String::new(), ns.to_string()))
}

/// The checks the real server's validation makes on what nodemedic and kubectl write.
fn validate(r: &Res, name: &str, obj: &Value) -> Result<(), (u16, Value)> {
    match r.plural {
        "events" => {
            if obj["involvedObject"]["kind"]
                .as_str()
                .unwrap_or("")
                .is_empty()
            {
                return Err(invalid(r, name, "involvedObject.kind", "Required value"));
            }
            if let Some(t) = obj.get("type").and_then(Value::as_str)
                && !["Normal", "Warning"].contains(&t)
            {
                return Err(invalid(r, name, "type", "Unsupported value"));
            }
            if obj
                .get("count")
                .and_then(Value::as_i64)
                .is_some_and(|c| c < 0)
            {
                return Err(invalid(
                    r,
                    name,
                    "count",
                    "must be greater than or equal to 0",
                ));
            }
        }
        "leases" => {
            if obj["spec"]["leaseDurationSeconds"]
                .as_i64()
                .is_some_and(|d| d <= 0)
            {
                return Err(invalid(
                    r,
                    name,
                    "spec.leaseDurationSeconds",
                    "must be greater than 0",
                ));
            }
            if obj["spec"]["leaseTransitions"]
                .as_i64()
                .is_some_and(|d| d < 0)
            {
                return Err(invalid(
                    r,
                    name,
                    "spec.leaseTransitions",
                    "must be greater than or equal to 0",
                ));
            }
        }
        "nodes" => {
            if let Some(u) = obj["spec"].get("unschedulable")
                && !(u.is_boolean() || u.is_null())
            {
                return Err(invalid(r, name, "spec.unschedulable", "must be a boolean"));
            }
        }
        _ => {}
    }
    Ok(())
}

fn create(s: &mut Store, r: &Res, ns: &str, body: &[u8]) -> (u16, Value) {
    let mut obj = match parse_body(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let body_ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    if r.namespaced && !body_ns.is_empty() && body_ns != ns {
        return bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    let name = match (
        obj["metadata"]["name"].as_str(),
        obj["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) => format!("{prefix}{:05x}", s.revision % 0xfffff),
        _ => {
            return invalid(
                r,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            );
        }
    };
    if r.namespaced && !namespace_exists(s, ns) {
        return status(
            404,
            "NotFound",
            &format!("namespaces \"{ns}\" not found"),
            Some(json!({"name": ns, "kind": "namespaces"})),
        );
    }
    if let Err(e) = validate(r, &name, &obj) {
        return e;
    }
    if s.objects.contains_key(&key(r, ns, &name)) {
        return status(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", r.qualified()),
            Some(json!({"name": name, "group": r.group, "kind": r.plural})),
        );
    }
    obj["metadata"]["name"] = json!(name);
    obj["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    stamp_new(s, r, ns, &mut obj);
    s.objects.insert(key(r, ns, &name), obj.clone());
    (201, obj)
}

/// A scripted lost race: another writer bumps the object, our write must 409.
fn take_conflict(s: &mut Store, r: &Res, ns: &str, name: &str) -> bool {
    let Some(n) = s.conflicts.get_mut(r.plural).filter(|n| **n > 0) else {
        return false;
    };
    *n -= 1;
    s.revision += 1;
    let rv = s.revision.to_string();
    if let Some(o) = s.objects.get_mut(&key(r, ns, name)) {
        o["metadata"]["resourceVersion"] = json!(rv);
    }
    true
}

/// Stores `new` as the next version of `old`: identity fields kept, resourceVersion bumped,
/// and only the part the endpoint may change taken from `new`.
fn commit(
    s: &mut Store,
    r: &Res,
    ns: &str,
    name: &str,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
) -> (u16, Value) {
    if let Err(e) = validate(r, name, &new) {
        return e;
    }
    match sub {
        Some("status") => {
            let mut merged = old.clone();
            merged["status"] = new["status"].take();
            new = merged;
        }
        _ if r.subresources.iter().any(|x| x.0 == "status") => {
            // The main resource ignores status changes, as the real server does.
            new["status"] = old["status"].clone();
        }
        _ => {}
    }
    for f in ["uid", "creationTimestamp", "namespace", "name"] {
        new["metadata"][f] = old["metadata"][f].clone();
    }
    if !r.namespaced {
        new["metadata"].as_object_mut().unwrap().remove("namespace");
    }
    new["kind"] = json!(r.kind);
    new["apiVersion"] = json!(r.api_version());
    s.revision += 1;
    new["metadata"]["resourceVersion"] = json!(s.revision.to_string());
    s.objects.insert(key(r, ns, name), new.clone());
    (200, new)
}

fn update(
    s: &mut Store,
    r: &Res,
    ns: &str,
    name: &str,
    body: &[u8],
    sub: Option<&str>,
) -> (u16, Value) {
    let new = match parse_body(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    if new["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return bad_request("the name of the object does not match the name on the URL");
    }
    let raced = take_conflict(s, r, ns, name);
    let Some(old) = s.objects.get(&key(r, ns, name)).cloned() else {
        return not_found(r, name);
    };
    let want_rv = new["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if raced || (!want_rv.is_empty() && want_rv != old["metadata"]["resourceVersion"]) {
        return conflict(r, name);
    }
    commit(s, r, ns, name, &old, new, sub)
}

fn patch(
    s: &mut Store,
    r: &Res,
    ns: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
    sub: Option<&str>,
) -> (u16, Value) {
    let p = match parse_body(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let raced = take_conflict(s, r, ns, name);
    let Some(old) = s.objects.get(&key(r, ns, name)).cloned() else {
        return not_found(r, name);
    };
    let mut new = old.clone();
    let media = content_type.split(';').next().unwrap_or("").trim();
    let precondition = match media {
        "application/strategic-merge-patch+json" => {
            strategic_merge(&mut new, &p);
            p["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string)
        }
        "application/merge-patch+json" => {
            merge_patch(&mut new, &p);
            p["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string)
        }
        "application/json-patch+json" => {
            if let Err(e) = json_patch(&mut new, &p) {
                return status(422, "Invalid", &e, None);
            }
            None
        }
        other => {
            return status(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
                ),
                None,
            );
        }
    };
    if raced || precondition.is_some_and(|rv| rv != old["metadata"]["resourceVersion"]) {
        return conflict(r, name);
    }
    commit(s, r, ns, name, &old, new, sub)
}

fn delete(s: &mut Store, r: &Res, ns: &str, name: &str) -> (u16, Value) {
    match s.objects.remove(&key(r, ns, name)) {
        Some(o) => {
            s.revision += 1;
            (200, o)
        }
        None => not_found(r, name),
    }
}

fn evict(s: &mut Store, ns: &str, name: &str, body: &[u8]) -> (u16, Value) {
    let pods = res("pods");
    let ev = match parse_body(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    if ev
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != "Eviction")
    {
        return bad_request(&format!("expected an Eviction, got {}", ev["kind"]));
    }
    if ev["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return bad_request("name in URL does not match name in Eviction object");
    }
    if !s.objects.contains_key(&key(pods, ns, name)) {
        return not_found(pods, name);
    }
    let k = (ns.to_string(), name.to_string());
    let scripted = s.eviction_scripts.get_mut(&k).and_then(VecDeque::pop_front);
    let pdb = s.pdb_blocks.get(&k).cloned();
    match (scripted, pdb) {
        (Some(429), _) | (None, Some(_)) => {
            let pdb = s
                .pdb_blocks
                .get(&k)
                .cloned()
                .unwrap_or_else(|| format!("{name}-pdb"));
            status(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                Some(
                    json!({"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {pdb} needs 1 healthy pods and has 1 currently")}]}),
                ),
            )
        }
        (Some(code), _) if code >= 400 => {
            status(code, "InternalError", "scripted eviction failure", None)
        }
        _ => {
            s.objects.remove(&key(pods, ns, name));
            s.revision += 1;
            (
                201,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            )
        }
    }
}

// ----------------------------------------------------------------------------------------
// Patch semantics

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Merge keys of the lists the real API merges by key (from the Kubernetes OpenAPI
/// `x-kubernetes-patch-merge-key`); every other list is replaced.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "conditions" | "addresses" => Some("type"),
        "ownerReferences" => Some("uid"),
        "containers" | "initContainers" | "volumes" | "env" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        _ => None,
    }
}

/// Primitive lists with patch strategy "merge" (set union).
fn is_union_list(field: &str) -> bool {
    field == "finalizers"
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Kubernetes strategic merge patch, for the cases the API's built-in types need here:
/// maps merge, `null` deletes, keyed lists merge by key with `$patch: delete|replace`,
/// `$setElementOrder/*` and `$retainKeys` are accepted (and ignored), other lists replace.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(items) => {
                let slot = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                let cur = slot.as_array_mut().unwrap();
                if let Some(mk) = merge_key(k) {
                    merge_list(cur, items, mk);
                } else if is_union_list(k) {
                    for i in items {
                        if !cur.contains(i) {
                            cur.push(i.clone());
                        }
                    }
                } else {
                    *slot = strip_directives(v);
                }
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
}

fn merge_list(cur: &mut Vec<Value>, items: &[Value], mk: &str) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *cur = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip_directives)
            .collect();
        return;
    }
    for item in items {
        let id = item.get(mk);
        let pos = id.and_then(|id| cur.iter().position(|c| c.get(mk) == Some(id)));
        match (item.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(i)) => {
                cur.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic_merge(&mut cur[i], item),
            (_, None) => cur.push(strip_directives(item)),
        }
    }
}

fn pointer_tokens(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(vec![]);
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!("invalid JSON pointer {p:?}"));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent_mut<'a>(root: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = root;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("missing path element {t:?}"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("bad array index {t:?}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("array index {i} out of range"))?
            }
            _ => return Err(format!("cannot descend into {t:?}")),
        };
    }
    Ok(cur)
}

fn json_remove(root: &mut Value, path: &str) -> Result<Value, String> {
    let toks = pointer_tokens(path)?;
    let (last, parents) = toks
        .split_last()
        .ok_or("cannot remove the whole document")?;
    match parent_mut(root, parents)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("unable to remove nonexistent key: {last}")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            (i < a.len())
                .then(|| a.remove(i))
                .ok_or_else(|| format!("array index {i} out of range"))
        }
        _ => Err(format!("cannot remove from {path:?}")),
    }
}

fn json_add(root: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let toks = pointer_tokens(path)?;
    let Some((last, parents)) = toks.split_last() else {
        *root = value;
        return Ok(());
    };
    match parent_mut(root, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) if last == "-" => {
            a.push(value);
            Ok(())
        }
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            if i > a.len() {
                return Err(format!("array index {i} out of range"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("cannot add at {path:?}")),
    }
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test).
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is an array of operations")?;
    let mut work = doc.clone();
    for op in ops {
        let path = op["path"].as_str().ok_or("operation without a path")?;
        match op["op"].as_str() {
            Some("add") => json_add(&mut work, path, op["value"].clone())?,
            Some("remove") => {
                json_remove(&mut work, path)?;
            }
            Some("replace") => {
                json_remove(&mut work, path)?;
                json_add(&mut work, path, op["value"].clone())?;
            }
            Some("move") => {
                let from = op["from"].as_str().ok_or("move without from")?;
                let v = json_remove(&mut work, from)?;
                json_add(&mut work, path, v)?;
            }
            Some("copy") => {
                let from = op["from"].as_str().ok_or("copy without from")?;
                let v = work
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| format!("missing {from:?}"))?;
                json_add(&mut work, path, v)?;
            }
            Some("test") => {
                if work.pointer(path) != Some(&op["value"]) {
                    return Err(format!("test failed at {path:?}"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merge_merges_conditions_by_type_and_deletes_on_request() {
        let mut node = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            {"type": "NodeMedicKernelRCUStall", "status": "True", "reason": "RCUStallDetected"},
        ]}});
        strategic_merge(
            &mut node,
            &json!({"status": {"conditions": [
                {"type": "NodeMedicKernelRCUStall", "status": "False"},
                {"type": "NodeMedicMemoryPressure", "status": "True", "reason": "MemAvailableLow"},
            ]}}),
        );
        let c = node["status"]["conditions"].as_array().unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0]["reason"], "KubeletReady");
        assert_eq!(c[1]["status"], "False");
        assert_eq!(c[1]["reason"], "RCUStallDetected", "merged, not replaced");
        strategic_merge(
            &mut node,
            &json!({
                "$setElementOrder/conditions": [{"type": "Ready"}],
                "status": {"conditions": [{"type": "NodeMedicMemoryPressure", "$patch": "delete"}]},
            }),
        );
        assert_eq!(node["status"]["conditions"].as_array().unwrap().len(), 2);
        assert!(node.get("$setElementOrder/conditions").is_none());
    }

    #[test]
    fn strategic_merge_replaces_unkeyed_lists_and_null_removes() {
        let mut node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}], "unschedulable": true}});
        strategic_merge(
            &mut node,
            &json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}], "unschedulable": null}}),
        );
        assert_eq!(
            node,
            json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}})
        );
    }

    #[test]
    fn merge_patch_replaces_lists_wholesale() {
        let mut v = json!({"status": {"conditions": [{"type": "Ready"}, {"type": "X"}]}, "a": 1});
        merge_patch(
            &mut v,
            &json!({"status": {"conditions": [{"type": "Y"}]}, "a": null}),
        );
        assert_eq!(v, json!({"status": {"conditions": [{"type": "Y"}]}}));
    }

    #[test]
    fn json_patch_applies_all_or_nothing() {
        let mut v = json!({"metadata": {"annotations": {"a/b": "1"}}, "spec": {"x": [1, 2]}});
        json_patch(
            &mut v,
            &json!([
                {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
                {"op": "add", "path": "/spec/x/-", "value": 3},
                {"op": "test", "path": "/spec/x/0", "value": 1},
            ]),
        )
        .unwrap();
        assert_eq!(v["metadata"]["annotations"]["a/b"], "2");
        assert_eq!(v["spec"]["x"], json!([1, 2, 3]));
        let before = v.clone();
        assert!(
            json_patch(
                &mut v,
                &json!([
                    {"op": "remove", "path": "/spec/x/0"},
                    {"op": "test", "path": "/spec/x/0", "value": 99},
                ])
            )
            .is_err()
        );
        assert_eq!(v, before, "a failed test leaves the document untouched");
    }

    #[test]
    fn field_selectors_match_like_the_api() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "pi4"}, "status": {"phase": "Running"}});
        assert!(field_matches(&pod, "spec.nodeName=pi4").unwrap());
        assert!(field_matches(&pod, "spec.nodeName==pi4,status.phase!=Succeeded").unwrap());
        assert!(!field_matches(&pod, "spec.nodeName=pi5").unwrap());
        assert!(field_matches(&pod, "bogus").is_err());
        assert_eq!(
            percent_decode("spec.nodeName%3Dpi4%2Cstatus.phase%21%3DFailed"),
            "spec.nodeName=pi4,status.phase!=Failed"
        );
    }

    fn get_version(addr: SocketAddr) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr)?;
        c.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        c.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_refusing_server_keeps_its_port_and_refuses_connections() {
        let s = FakeApiServer::start();
        assert!(get_version(s.addr).unwrap().contains("v1.32.4+k3s1"));
        s.set_availability(Availability::Refuse);
        let e = get_version(s.addr).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        s.set_availability(Availability::Unavailable);
        assert!(get_version(s.addr).unwrap().starts_with("HTTP/1.1 503"));
        s.set_availability(Availability::Up);
        assert!(get_version(s.addr).unwrap().starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(1_764_000_000), "2025-11-24T16:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
