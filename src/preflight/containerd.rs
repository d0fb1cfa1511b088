//! The containerd edge: the [`ContainerStore`] trait (list records and tasks, delete a record,
//! its stopped task and its own rootfs snapshot), the real implementation over containerd's
//! gRPC API on a unix socket, and a recording fake.
//!
//! Every call has a deadline (the smaller of the per-call timeout and what is left of the
//! preflight budget), enforced twice: as the gRPC `grpc-timeout` for containerd and as a
//! local timer, so a containerd that accepts but never answers cannot hold k3s back.
//!
//! Only two things are ever deleted: container records, and the one snapshot a record names
//! as its own rootfs, and only while that snapshot is *active* (a container's writable layer).
//! Image layers are *committed* snapshots and are refused, so image content survives.

use super::sandbox_meta::{BundleProbe, Record, TaskState};
use super::sandbox_store::StoreEntry;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::{
    DeleteContainerRequest, DeleteTaskRequest, ListContainersRequest, ListNamespacesRequest,
    ListTasksRequest,
    containers_client::ContainersClient,
    snapshots::{
        Kind as SnapshotKind, RemoveSnapshotRequest, StatSnapshotRequest,
        snapshots_client::SnapshotsClient,
    },
    tasks_client::TasksClient,
};
use containerd_client::types::v1::Status as ProcessStatus;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Largest reply we accept: a `ListStream` message holds one container with its OCI spec
/// (tens of KiB); tonic's 4 MiB default is plenty but a hostile spec must not be unbounded.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Runtime plugins whose bundle directories may hold an `init.pid` (v2 shims, legacy v1).
const RUNTIME_STATE_DIRS: [&str; 2] = [
    "io.containerd.runtime.v2.task",
    "io.containerd.runtime.v1.linux",
];

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("containerd at {socket} did not answer {what} within {timeout:?}; is it hung?")]
    Timeout {
        socket: String,
        what: String,
        timeout: Duration,
    },
    #[error("cannot connect to containerd at {socket}: {error}")]
    Connect { socket: String, error: String },
    #[error("containerd refused {what}: {error}")]
    Call { what: String, error: String },
    #[error("the preflight time budget ran out before {what}")]
    BudgetSpent { what: String },
}

/// Outcome of a deletion; deleting twice is not an error (idempotent preflight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deleted {
    Removed,
    AlreadyGone,
}

/// Outcome of a snapshot removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "kind", rename_all = "snake_case")]
pub enum SnapshotRemoval {
    Removed,
    AlreadyGone,
    /// Not an active snapshot (an image layer or a view): refused.
    Refused(String),
}

/// The containerd operations preflight needs, in one namespace.
pub trait ContainerStore {
    /// Every container record (sandboxes and containers alike).
    fn list_records(&mut self) -> Result<Vec<Record>, StoreError>;
    /// The init task of every container that has one, by container id.
    fn list_tasks(&mut self) -> Result<BTreeMap<String, TaskState>, StoreError>;
    /// What the task bundle of `id` says about its process (for tasks the list missed).
    fn bundle_probe(&mut self, id: &str) -> BundleProbe;
    /// Deletes the (stopped) task of `id`, so no runtime state points at a deleted record.
    fn delete_task(&mut self, id: &str) -> Result<Deleted, StoreError>;
    /// Deletes the container record `id`.
    fn delete_record(&mut self, id: &str) -> Result<Deleted, StoreError>;
    /// Removes the snapshot `key` of `snapshotter` if, and only if, it is active.
    fn remove_active_snapshot(
        &mut self,
        snapshotter: &str,
        key: &str,
    ) -> Result<SnapshotRemoval, StoreError>;
    /// containerd 2.x's sandbox store ([`super::sandbox_store`]); `Ok(None)` where there is
    /// none (1.6).
    fn list_store_entries(&mut self) -> Result<Option<Vec<StoreEntry>>, StoreError> {
        Ok(None)
    }
    /// Deletes the sandbox store entry `id`; "already gone" where there is no store.
    fn delete_store_entry(&mut self, _id: &str) -> Result<Deleted, StoreError> {
        Ok(Deleted::AlreadyGone)
    }
    /// The snapshot and image calls of the desync check ([`super::snapshots`]), where
    /// available.
    fn snapshot_api(&mut self) -> Option<&mut dyn super::snapshots::SnapshotApi> {
        None
    }
    /// The id of every container record and sandbox store entry in every namespace of this
    /// containerd root, with its namespace ([`super::reservations`], rule 6).
    fn ids_in_every_namespace(&mut self) -> Result<BTreeMap<String, String>, StoreError>;
}

/// Connects a gRPC channel to a unix socket within `timeout` ([`crate::edge::grpc`]).
pub async fn connect_unix(socket: &Path, timeout: Duration) -> Result<Channel, StoreError> {
    use crate::edge::grpc::{self, ConnectError};
    grpc::connect_unix(socket, timeout)
        .await
        .map_err(|e| match e {
            ConnectError::Timeout { socket, timeout } => StoreError::Timeout {
                socket,
                what: "connect".into(),
                timeout,
            },
            ConnectError::Connect { socket, error } => StoreError::Connect { socket, error },
        })
}

/// The real store: containerd's gRPC API over a unix socket, driven by a private
/// current-thread runtime so callers stay synchronous.
pub struct GrpcStore {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    socket: PathBuf,
    namespace: String,
    call_timeout: Duration,
    deadline: Option<Instant>,
    /// containerd's state dir (where task bundles live) and the proc root, for bundle probes.
    state_dir: PathBuf,
    proc_root: PathBuf,
}

impl GrpcStore {
    /// Connects to `socket`. `deadline` caps every later call as well.
    pub fn connect(
        socket: &Path,
        namespace: &str,
        call_timeout: Duration,
        deadline: Option<Instant>,
        state_dir: &Path,
        proc_root: &Path,
    ) -> Result<GrpcStore, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Connect {
                socket: socket.display().to_string(),
                error: format!("cannot build the I/O runtime: {e}"),
            })?;
        let t = cap(call_timeout, deadline).ok_or_else(|| StoreError::BudgetSpent {
            what: "connecting to containerd".into(),
        })?;
        let channel = rt.block_on(connect_unix(socket, t))?;
        Ok(GrpcStore {
            rt,
            channel,
            socket: socket.to_path_buf(),
            namespace: namespace.to_string(),
            call_timeout,
            deadline,
            state_dir: state_dir.to_path_buf(),
            proc_root: proc_root.to_path_buf(),
        })
    }

    /// The gRPC channel, for the API edges in other modules (sandbox store, snapshots).
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The containerd namespace every call is made in.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Runs one call under the deadline and hands back containerd's own status, for callers
    /// that treat codes other than NotFound specially; a local timeout or a spent budget is
    /// the `Err`.
    pub(crate) fn call_raw<T, F>(
        &self,
        what: &str,
        f: impl FnOnce(Duration) -> F,
    ) -> Result<Result<T, tonic::Status>, StoreError>
    where
        F: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let t = cap(self.call_timeout, self.deadline).ok_or_else(|| StoreError::BudgetSpent {
            what: what.to_string(),
        })?;
        match self
            .rt
            .block_on(async move { tokio::time::timeout(t, f(t)).await })
        {
            Ok(Err(s)) if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                Err(StoreError::Timeout {
                    socket: self.socket.display().to_string(),
                    what: what.to_string(),
                    timeout: t,
                })
            }
            Ok(r) => Ok(r),
            Err(_) => Err(StoreError::Timeout {
                socket: self.socket.display().to_string(),
                what: what.to_string(),
                timeout: t,
            }),
        }
    }

    /// A refused call as a [`StoreError`].
    pub(crate) fn status_error(&self, what: &str, s: tonic::Status) -> StoreError {
        StoreError::Call {
            what: what.to_string(),
            error: format!("{:?}: {}", s.code(), s.message()),
        }
    }

    pub(crate) fn request<T>(&self, msg: T, t: Duration) -> Request<T> {
        crate::edge::grpc::namespaced(msg, &self.namespace, t)
    }

    /// Runs one call under the deadline; `NotFound` maps to `Ok(None)`.
    fn call<T, F>(&self, what: &str, f: impl FnOnce(Duration) -> F) -> Result<Option<T>, StoreError>
    where
        F: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let t = cap(self.call_timeout, self.deadline).ok_or_else(|| StoreError::BudgetSpent {
            what: what.to_string(),
        })?;
        match self
            .rt
            .block_on(async move { tokio::time::timeout(t, f(t)).await })
        {
            Ok(Ok(v)) => Ok(Some(v)),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(None),
            // tonic reports its own request timeout as `Cancelled: Timeout expired`.
            Ok(Err(s)) if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                Err(StoreError::Timeout {
                    socket: self.socket.display().to_string(),
                    what: what.to_string(),
                    timeout: t,
                })
            }
            Ok(Err(s)) => Err(StoreError::Call {
                what: what.to_string(),
                error: format!("{:?}: {}", s.code(), s.message()),
            }),
            Err(_) => Err(StoreError::Timeout {
                socket: self.socket.display().to_string(),
                what: what.to_string(),
                timeout: t,
            }),
        }
    }
    /// Runs one deleting call under the deadline; `NotFound` means it is already gone.
    fn delete<T, F>(&self, what: &str, f: impl FnOnce(Duration) -> F) -> Result<Deleted, StoreError>
    where
        F: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        Ok(match self.call(what, f)? {
            Some(_) => Deleted::Removed,
            None => Deleted::AlreadyGone,
        })
    }
}

/// The per-call timeout, shortened to what is left before `deadline`; `None` when spent.
fn cap(call: Duration, deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(call),
        Some(d) => {
            let left = d.checked_duration_since(Instant::now())?;
            (!left.is_zero()).then(|| call.min(left))
        }
    }
}

fn nanos(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map(|t| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(t.nanos as i64)
    })
    .unwrap_or(0)
}

impl ContainerStore for GrpcStore {
    fn list_records(&mut self) -> Result<Vec<Record>, StoreError> {
        let what = "listing containers";
        let mut client = ContainersClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let out = self.call(what, |t| {
            let req = self.request(ListContainersRequest { filters: vec![] }, t);
            async move {
                let mut stream = client.list_stream(req).await?.into_inner();
                let mut v = Vec::new();
                while let Some(m) = stream.message().await? {
                    if let Some(c) = m.container {
                        v.push(c);
                    }
                }
                Ok(v)
            }
        })?;
        Ok(out
            .unwrap_or_default()
            .into_iter()
            .map(|c| Record {
                created_unix_nanos: nanos(c.created_at.as_ref()),
                labels: c.labels.into_iter().collect(),
                extensions: c
                    .extensions
                    .into_iter()
                    .map(|(k, v)| (k, v.value))
                    .collect(),
                snapshotter: c.snapshotter,
                snapshot_key: c.snapshot_key,
                id: c.id,
            })
            .collect())
    }

    fn list_tasks(&mut self) -> Result<BTreeMap<String, TaskState>, StoreError> {
        let mut client =
            TasksClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let out = self.call("listing tasks", |t| {
            let req = self.request(
                ListTasksRequest {
                    filter: String::new(),
                },
                t,
            );
            async move { Ok(client.list(req).await?.into_inner().tasks) }
        })?;
        Ok(task_map(out.unwrap_or_default()))
    }

    fn bundle_probe(&mut self, id: &str) -> BundleProbe {
        probe_bundle(&self.state_dir, &self.namespace, id, &self.proc_root)
    }

    fn delete_task(&mut self, id: &str) -> Result<Deleted, StoreError> {
        let mut client = TasksClient::new(self.channel.clone());
        self.delete(&format!("deleting the task of {id}"), |t| {
            let req = self.request(
                DeleteTaskRequest {
                    container_id: id.to_string(),
                },
                t,
            );
            async move { client.delete(req).await }
        })
    }

    fn delete_record(&mut self, id: &str) -> Result<Deleted, StoreError> {
        let mut client = ContainersClient::new(self.channel.clone());
        self.delete(&format!("deleting container record {id}"), |t| {
            let req = self.request(DeleteContainerRequest { id: id.to_string() }, t);
            async move { client.delete(req).await }
        })
    }

    fn remove_active_snapshot(
        &mut self,
        snapshotter: &str,
        key: &str,
    ) -> Result<SnapshotRemoval, StoreError> {
        let mut client = SnapshotsClient::new(self.channel.clone());
        let mut c2 = client.clone();
        let info = self.call(&format!("reading snapshot {snapshotter}/{key}"), |t| {
            let req = self.request(
                StatSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: key.to_string(),
                },
                t,
            );
            async move { Ok(c2.stat(req).await?.into_inner().info) }
        })?;
        let Some(info) = info.flatten() else {
            return Ok(SnapshotRemoval::AlreadyGone);
        };
        match SnapshotKind::try_from(info.kind) {
            Ok(SnapshotKind::Active) => {}
            k => {
                return Ok(SnapshotRemoval::Refused(
                    k.map(|k| k.as_str_name().to_string())
                        .unwrap_or_else(|_| info.kind.to_string()),
                ));
            }
        }
        let r = self.delete(&format!("removing snapshot {snapshotter}/{key}"), |t| {
            let req = self.request(
                RemoveSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: key.to_string(),
                },
                t,
            );
            async move { client.remove(req).await }
        })?;
        Ok(match r {
            Deleted::Removed => SnapshotRemoval::Removed,
            Deleted::AlreadyGone => SnapshotRemoval::AlreadyGone,
        })
    }

    fn list_store_entries(&mut self) -> Result<Option<Vec<StoreEntry>>, StoreError> {
        super::sandbox_store::grpc_list(self)
    }

    fn delete_store_entry(&mut self, id: &str) -> Result<Deleted, StoreError> {
        super::sandbox_store::grpc_delete(self, id)
    }

    fn snapshot_api(&mut self) -> Option<&mut dyn super::snapshots::SnapshotApi> {
        Some(self)
    }

    fn ids_in_every_namespace(&mut self) -> Result<BTreeMap<String, String>, StoreError> {
        let mut namespaces = NamespacesClient::new(self.channel.clone());
        let names: Vec<String> = self
            .call("listing containerd's namespaces", |t| {
                let req = self.request(
                    ListNamespacesRequest {
                        filter: String::new(),
                    },
                    t,
                );
                async move { Ok(namespaces.list(req).await?.into_inner().namespaces) }
            })?
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.name)
            .collect();
        let mut ids = BTreeMap::new();
        for ns in names {
            let what = format!("listing the containers of namespace {ns}");
            let mut client = ContainersClient::new(self.channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let records = self.call(&what, |t| {
                let req = crate::edge::grpc::namespaced(
                    ListContainersRequest { filters: vec![] },
                    &ns,
                    t,
                );
                async move {
                    let mut stream = client.list_stream(req).await?.into_inner();
                    let mut v = Vec::new();
                    while let Some(m) = stream.message().await? {
                        v.extend(m.container.map(|c| c.id));
                    }
                    Ok(v)
                }
            })?;
            let what = format!("listing the sandbox store of namespace {ns}");
            let entries = match self.call_raw(&what, |t| {
                crate::edge::sandbox_store::list(self.channel(), &ns, t)
            })? {
                Ok(e) => e.unwrap_or_default(),
                Err(st) => return Err(self.status_error(&what, st)),
            };
            for id in records
                .unwrap_or_default()
                .into_iter()
                .chain(entries.into_iter().map(|e| e.sandbox_id))
            {
                ids.entry(id).or_insert_with(|| ns.clone());
            }
        }
        Ok(ids)
    }
}

/// The task list by container id. containerd's `Tasks.List` answers one `Process` per task
/// with the container id in `id` and `container_id` left empty (services/tasks in 1.6 to 2.x);
/// a process whose `container_id` is set and differs from its `id` is an exec, which says
/// nothing about whether the container runs.
pub fn task_map(
    processes: Vec<containerd_client::types::v1::Process>,
) -> BTreeMap<String, TaskState> {
    let mut m = BTreeMap::new();
    for p in processes {
        let id = match (p.id.is_empty(), p.container_id.is_empty()) {
            (false, true) => p.id,
            (_, false) if p.id.is_empty() || p.id == p.container_id => p.container_id,
            _ => continue,
        };
        let st = match ProcessStatus::try_from(p.status) {
            Ok(ProcessStatus::Stopped) => TaskState::Stopped,
            Ok(ProcessStatus::Unknown) | Err(_) => TaskState::Unknown {
                error: format!("containerd reports status {}", p.status),
            },
            Ok(_) => TaskState::Running { pid: p.pid },
        };
        m.insert(id, st);
    }
    m
}

/// Reads `init.pid` from the task bundle of `id` under containerd's state dir and checks the
/// process under `proc_root`. Ids are containerd's own, but a `/` would escape the bundle dir,
/// so such an id is treated as having no bundle.
pub fn probe_bundle(state_dir: &Path, namespace: &str, id: &str, proc_root: &Path) -> BundleProbe {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return BundleProbe::NoBundle;
    }
    for rt in RUNTIME_STATE_DIRS {
        let dir = state_dir.join(rt).join(namespace).join(id);
        if !dir.is_dir() {
            continue;
        }
        let pid = std::fs::read_to_string(dir.join("init.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&p| p > 0);
        return match pid {
            Some(pid) => BundleProbe::Pid {
                pid,
                alive: process_alive(proc_root, pid),
            },
            None => BundleProbe::NoPid,
        };
    }
    BundleProbe::NoBundle
}

/// True when `<proc_root>/<pid>/stat` exists and the process is not a zombie (a killed pause
/// process whose parent died stays a zombie until reaped, and is as dead as it gets).
pub fn process_alive(proc_root: &Path, pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) else {
        return false;
    };
    // `pid (comm) S ...`: comm may hold spaces and parentheses, so split at the last `)`.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x") | None)
}

#[cfg(any(test, feature = "fakes"))]
/// One call made on the [`FakeStore`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    ListRecords,
    ListTasks,
    BundleProbe(String),
    DeleteTask(String),
    DeleteRecord(String),
    RemoveSnapshot { snapshotter: String, key: String },
    ListStore,
    DeleteStoreEntry(String),
    ListEveryNamespace,
}

#[cfg(any(test, feature = "fakes"))]
/// A scripted, recording [`ContainerStore`] for tests.
#[derive(Debug, Default)]
pub struct FakeStore {
    pub records: Vec<Record>,
    pub tasks: BTreeMap<String, TaskState>,
    pub bundles: BTreeMap<String, BundleProbe>,
    /// Snapshots by (snapshotter, key) with their kind (`ACTIVE`, `COMMITTED`, ...).
    pub snapshots: BTreeMap<(String, String), String>,
    /// When set, listing fails with this error.
    pub list_error: Option<StoreError>,
    /// Ids whose record deletion fails.
    pub failing_deletes: Vec<String>,
    /// The sandbox store (2.x); `None`: containerd has none (1.6).
    pub store_entries: Option<Vec<StoreEntry>>,
    /// Ids of records and store entries of namespaces other than the one served, by namespace.
    pub other_namespaces: BTreeMap<String, Vec<String>>,
    /// When set, listing every namespace fails with this error.
    pub namespaces_error: Option<StoreError>,
    pub calls: Vec<Call>,
}

#[cfg(any(test, feature = "fakes"))]
impl ContainerStore for FakeStore {
    fn list_records(&mut self) -> Result<Vec<Record>, StoreError> {
        self.calls.push(Call::ListRecords);
        match &self.list_error {
            Some(e) => Err(e.clone()),
            None => Ok(self.records.clone()),
        }
    }

    fn list_tasks(&mut self) -> Result<BTreeMap<String, TaskState>, StoreError> {
        self.calls.push(Call::ListTasks);
        Ok(self.tasks.clone())
    }

    fn bundle_probe(&mut self, id: &str) -> BundleProbe {
        self.calls.push(Call::BundleProbe(id.to_string()));
        self.bundles
            .get(id)
            .copied()
            .unwrap_or(BundleProbe::NoBundle)
    }

    fn delete_task(&mut self, id: &str) -> Result<Deleted, StoreError> {
        self.calls.push(Call::DeleteTask(id.to_string()));
        Ok(match self.tasks.remove(id) {
            Some(_) => Deleted::Removed,
            None => Deleted::AlreadyGone,
        })
    }

    fn delete_record(&mut self, id: &str) -> Result<Deleted, StoreError> {
        self.calls.push(Call::DeleteRecord(id.to_string()));
        if self.failing_deletes.iter().any(|f| f == id) {
            return Err(StoreError::Call {
                what: format!("deleting container record {id}"),
                error: "Unavailable: scripted failure".into(),
            });
        }
        let before = self.records.len();
        self.records.retain(|r| r.id != id);
        Ok(if self.records.len() < before {
            Deleted::Removed
        } else {
            Deleted::AlreadyGone
        })
    }

    fn remove_active_snapshot(
        &mut self,
        snapshotter: &str,
        key: &str,
    ) -> Result<SnapshotRemoval, StoreError> {
        self.calls.push(Call::RemoveSnapshot {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        });
        let k = (snapshotter.to_string(), key.to_string());
        match self.snapshots.get(&k).map(String::as_str) {
            None => Ok(SnapshotRemoval::AlreadyGone),
            Some("ACTIVE") => {
                self.snapshots.remove(&k);
                Ok(SnapshotRemoval::Removed)
            }
            Some(other) => Ok(SnapshotRemoval::Refused(other.to_string())),
        }
    }

    fn list_store_entries(&mut self) -> Result<Option<Vec<StoreEntry>>, StoreError> {
        self.calls.push(Call::ListStore);
        Ok(self.store_entries.clone())
    }

    fn delete_store_entry(&mut self, id: &str) -> Result<Deleted, StoreError> {
        self.calls.push(Call::DeleteStoreEntry(id.to_string()));
        let Some(entries) = self.store_entries.as_mut() else {
            return Ok(Deleted::AlreadyGone);
        };
        let before = entries.len();
        entries.retain(|e| e.id != id);
        Ok(if entries.len() < before {
            Deleted::Removed
        } else {
            Deleted::AlreadyGone
        })
    }

    fn ids_in_every_namespace(&mut self) -> Result<BTreeMap<String, String>, StoreError> {
        self.calls.push(Call::ListEveryNamespace);
        if let Some(e) = &self.namespaces_error {
            return Err(e.clone());
        }
        let own = self
            .records
            .iter()
            .map(|r| r.id.clone())
            .chain(self.store_entries.iter().flatten().map(|e| e.id.clone()))
            .map(|id| (id, "k8s.io".to_string()));
        let others = self
            .other_namespaces
            .iter()
            .flat_map(|(ns, ids)| ids.iter().map(move |id| (id.clone(), ns.clone())));
        Ok(own.chain(others).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_probe_reads_init_pid_and_checks_the_process() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let proc_root = d.path().join("proc");
        let id = "a".repeat(64);
        let bundle = state.join("io.containerd.runtime.v2.task/k8s.io").join(&id);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::create_dir_all(proc_root.join("4321")).unwrap();
        std::fs::write(
            proc_root.join("4321/stat"),
            "4321 (pause) S 4300 4321 4321 0 -1",
        )
        .unwrap();
        assert_eq!(
            probe_bundle(&state, "k8s.io", &id, &proc_root),
            BundleProbe::NoPid
        );
        std::fs::write(bundle.join("init.pid"), "4321").unwrap();
        assert_eq!(
            probe_bundle(&state, "k8s.io", &id, &proc_root),
            BundleProbe::Pid {
                pid: 4321,
                alive: true
            }
        );
        std::fs::write(bundle.join("init.pid"), "999999\n").unwrap();
        assert_eq!(
            probe_bundle(&state, "k8s.io", &id, &proc_root),
            BundleProbe::Pid {
                pid: 999999,
                alive: false
            }
        );
        assert_eq!(
            probe_bundle(&state, "k8s.io", &"b".repeat(64), &proc_root),
            BundleProbe::NoBundle
        );
        assert_eq!(
            probe_bundle(&state, "k8s.io", "../../etc", &proc_root),
            BundleProbe::NoBundle
        );
    }

    #[test]
    fn zombies_and_missing_processes_are_not_alive() {
        let d = tempfile::tempdir().unwrap();
        for (pid, stat) in [
            (10, "10 (pause) S 1 10 10 0 -1"),
            (11, "11 (weird ) Z name) Z 1 11 11 0 -1"),
            (12, "12 (a) b) R 1 12"),
            (13, "garbage"),
        ] {
            std::fs::create_dir_all(d.path().join(pid.to_string())).unwrap();
            std::fs::write(d.path().join(format!("{pid}/stat")), stat).unwrap();
        }
        assert!(process_alive(d.path(), 10));
        assert!(!process_alive(d.path(), 11));
        assert!(process_alive(d.path(), 12));
        assert!(!process_alive(d.path(), 13));
        assert!(!process_alive(d.path(), 14));
        assert!(process_alive(Path::new("/proc"), std::process::id()));
    }

    #[test]
    fn tasks_are_keyed_by_their_own_id_since_container_id_is_left_empty() {
        use containerd_client::types::v1::Process;
        let p = |id: &str, container_id: &str, status: ProcessStatus, pid: u32| Process {
            id: id.into(),
            container_id: container_id.into(),
            status: status as i32,
            pid,
            ..Default::default()
        };
        let m = task_map(vec![
            // What containerd 1.6, 1.7 and 2.x answer: id set, container_id empty.
            p("a", "", ProcessStatus::Running, 41),
            p("b", "", ProcessStatus::Stopped, 0),
            p("c", "", ProcessStatus::Unknown, 0),
            // Older shapes, and an exec process that must not count.
            p("", "d", ProcessStatus::Paused, 43),
            p("e", "e", ProcessStatus::Running, 44),
            p("exec-1", "a", ProcessStatus::Stopped, 0),
            p("", "", ProcessStatus::Running, 45),
        ]);
        assert_eq!(m["a"], TaskState::Running { pid: 41 });
        assert_eq!(m["b"], TaskState::Stopped);
        assert!(matches!(m["c"], TaskState::Unknown { .. }));
        assert_eq!(m["d"], TaskState::Running { pid: 43 });
        assert_eq!(m["e"], TaskState::Running { pid: 44 });
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn spent_budget_gives_no_call_time() {
        assert_eq!(
            cap(Duration::from_secs(2), None),
            Some(Duration::from_secs(2))
        );
        let past = Instant::now() - Duration::from_millis(5);
        assert_eq!(cap(Duration::from_secs(2), Some(past)), None);
        let soon = Instant::now() + Duration::from_millis(300);
        assert!(cap(Duration::from_secs(2), Some(soon)).unwrap() <= Duration::from_millis(300));
    }

    #[test]
    fn fake_refuses_committed_snapshots_and_records_calls() {
        let mut f = FakeStore::default();
        f.snapshots.insert(
            ("overlayfs".into(), "sha256:abc".into()),
            "COMMITTED".into(),
        );
        f.snapshots
            .insert(("overlayfs".into(), "c1".into()), "ACTIVE".into());
        assert_eq!(
            f.remove_active_snapshot("overlayfs", "sha256:abc").unwrap(),
            SnapshotRemoval::Refused("COMMITTED".into())
        );
        assert_eq!(
            f.remove_active_snapshot("overlayfs", "c1").unwrap(),
            SnapshotRemoval::Removed
        );
        assert_eq!(
            f.remove_active_snapshot("overlayfs", "c1").unwrap(),
            SnapshotRemoval::AlreadyGone
        );
        assert_eq!(f.calls.len(), 3);
    }

    #[test]
    fn connecting_to_a_missing_socket_fails_fast_with_the_path() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("nothing.sock");
        let t0 = Instant::now();
        let e = rt
            .block_on(connect_unix(&sock, Duration::from_secs(2)))
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(e.to_string().contains("nothing.sock"), "{e}");
    }

    #[test]
    fn a_socket_that_never_answers_times_out() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("silent.sock");
        // Accepts connections (backlog) but never speaks HTTP/2.
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t0 = Instant::now();
        let r = GrpcStore::connect(
            &sock,
            "k8s.io",
            Duration::from_millis(300),
            None,
            d.path(),
            d.path(),
        );
        let e = match r {
            Ok(mut s) => s.list_records().unwrap_err(),
            Err(e) => e,
        };
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(
            matches!(e, StoreError::Timeout { .. } | StoreError::Connect { .. }),
            "{e}"
        );
    }
}
