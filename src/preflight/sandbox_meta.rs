//! Decoding of the CRI plugin's metadata that containerd keeps in its container records, and
//! classification of those records into pod sandboxes and containers (pure: bytes in, values
//! out).
//!
//! The CRI plugin stores every pod sandbox and every container as a plain containerd container
//! record. It marks the kind with the label `io.cri-containerd.kind` (`sandbox` or `container`)
//! and keeps its own metadata as JSON inside the record's extension map
//! (`io.cri-containerd.sandbox.metadata`, `io.cri-containerd.container.metadata`), shaped
//! `{"Version":"v1","Metadata":{"ID":..,"Name":..,...}}`. On start the CRI plugin reloads every
//! record and reserves each `Name`; a second record with the same name makes the whole plugin
//! fail (`failed to recover state: failed to reserve sandbox name ...`, containerd issues 6095, 10848).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Label the CRI plugin puts on every record it owns; its value says sandbox or container.
pub const KIND_LABEL: &str = "io.cri-containerd.kind";
/// `KIND_LABEL` value of a pod sandbox record.
pub const KIND_SANDBOX: &str = "sandbox";
/// `KIND_LABEL` value of an application container record.
pub const KIND_CONTAINER: &str = "container";
/// Extension key holding the sandbox metadata JSON.
pub const SANDBOX_METADATA_KEY: &str = "io.cri-containerd.sandbox.metadata";
/// Extension key holding the container metadata JSON.
pub const CONTAINER_METADATA_KEY: &str = "io.cri-containerd.container.metadata";
/// The only metadata version the CRI plugin (1.5 to 2.x) reads back.
pub const METADATA_VERSION: &str = "v1";

/// The parts of a sandbox name `<pod>_<namespace>_<uid>_<attempt>`. Kubernetes forbids `_`
/// in pod names, namespaces and uids, so the split is unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodName {
    pub pod: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
}

impl PodName {
    /// Splits a sandbox name; `None` when it does not have the CRI shape.
    pub fn parse(name: &str) -> Option<PodName> {
        let mut it = name.rsplitn(4, '_');
        let attempt = it.next()?.parse().ok()?;
        let uid = it.next()?;
        let namespace = it.next()?;
        let pod = it.next()?;
        if [pod, namespace, uid].iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(PodName {
            pod: pod.to_string(),
            namespace: namespace.to_string(),
            uid: uid.to_string(),
            attempt,
        })
    }
}

/// What the CRI plugin knows about a pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxMeta {
    pub id: String,
    /// The reserved name, `<pod>_<namespace>_<uid>_<attempt>`.
    pub name: String,
    /// `name` split into its parts, when it has the CRI shape.
    pub pod: Option<PodName>,
    /// Network namespace path, empty for host-network pods.
    pub netns: String,
    /// Pod IP, empty for host-network pods or when networking never came up.
    pub ip: String,
    pub additional_ips: Vec<String>,
}

/// What the CRI plugin knows about an application container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerMeta {
    pub id: String,
    /// The reserved name, `<container>_<pod>_<namespace>_<uid>_<attempt>`.
    pub name: String,
    pub sandbox_id: String,
}

/// Why a record's CRI metadata cannot be used. The CRI plugin skips or rejects such records
/// (`failed to get metadata for stored sandbox`), so nothing but us will ever clean them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum MetaError {
    #[error("the record has no {0} extension")]
    Missing(&'static str),
    #[error("the metadata is not valid JSON: {0}")]
    NotJson(String),
    #[error("the metadata version is {0:?}, only \"v1\" is readable")]
    UnknownVersion(String),
    #[error("the metadata has an empty {0} field")]
    EmptyField(&'static str),
    #[error("the metadata says id {meta} but the record is {record}")]
    IdMismatch { record: String, meta: String },
}

#[derive(Deserialize)]
struct Versioned<T> {
    #[serde(rename = "Version", default)]
    version: String,
    #[serde(rename = "Metadata")]
    metadata: T,
}

#[derive(Deserialize)]
struct RawSandbox {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "NetNSPath", default)]
    netns: Option<String>,
    #[serde(rename = "IP", default)]
    ip: Option<String>,
    #[serde(rename = "AdditionalIPs", default)]
    additional_ips: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawContainer {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "SandboxID", default)]
    sandbox_id: String,
}

fn versioned<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, MetaError> {
    let v: Versioned<T> =
        serde_json::from_slice(bytes).map_err(|e| MetaError::NotJson(e.to_string()))?;
    if v.version != METADATA_VERSION {
        return Err(MetaError::UnknownVersion(v.version));
    }
    Ok(v.metadata)
}

fn check_id(record_id: &str, meta_id: &str) -> Result<(), MetaError> {
    if meta_id.is_empty() {
        return Err(MetaError::EmptyField("ID"));
    }
    if meta_id != record_id {
        return Err(MetaError::IdMismatch {
            record: record_id.to_string(),
            meta: meta_id.to_string(),
        });
    }
    Ok(())
}

/// Decodes the sandbox metadata extension of the record `record_id`.
pub fn decode_sandbox(record_id: &str, ext: Option<&[u8]>) -> Result<SandboxMeta, MetaError> {
    let raw: RawSandbox = versioned(ext.ok_or(MetaError::Missing(SANDBOX_METADATA_KEY))?)?;
    check_id(record_id, &raw.id)?;
    if raw.name.is_empty() {
        return Err(MetaError::EmptyField("Name"));
    }
    Ok(SandboxMeta {
        pod: PodName::parse(&raw.name),
        id: raw.id,
        name: raw.name,
        netns: raw.netns.unwrap_or_default(),
        ip: raw.ip.unwrap_or_default(),
        additional_ips: raw.additional_ips.unwrap_or_default(),
    })
}

/// Decodes the container metadata extension of the record `record_id`.
pub fn decode_container(record_id: &str, ext: Option<&[u8]>) -> Result<ContainerMeta, MetaError> {
    let raw: RawContainer = versioned(ext.ok_or(MetaError::Missing(CONTAINER_METADATA_KEY))?)?;
    check_id(record_id, &raw.id)?;
    if raw.name.is_empty() {
        return Err(MetaError::EmptyField("Name"));
    }
    if raw.sandbox_id.is_empty() {
        return Err(MetaError::EmptyField("SandboxID"));
    }
    Ok(ContainerMeta {
        id: raw.id,
        name: raw.name,
        sandbox_id: raw.sandbox_id,
    })
}

/// A containerd container record, as the store hands it over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Extension values (the `Any.value` bytes) by key.
    pub extensions: BTreeMap<String, Vec<u8>>,
    pub snapshotter: String,
    pub snapshot_key: String,
    /// Creation time in unix nanoseconds; 0 when unknown.
    pub created_unix_nanos: i64,
}

/// The state of a record's task as containerd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// Created, running, paused or pausing: the shim holds a process.
    Running { pid: u32 },
    /// The task exists but its process has exited.
    Stopped,
    /// containerd has no task for the record (after a reboot: none at all).
    Absent,
    /// The task could not be asked about (shim hung, call timed out).
    Unknown { error: String },
}

/// Whether a record still has something running. Only `Dead` records may ever be removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "liveness", content = "why", rename_all = "snake_case")]
pub enum Liveness {
    Alive(String),
    Dead(String),
    /// Not provably dead: treated as alive.
    Unknown(String),
}

impl Liveness {
    pub fn is_dead(&self) -> bool {
        matches!(self, Liveness::Dead(_))
    }
}

/// What the task's bundle directory says. Bundles live on tmpfs under containerd's state dir
/// (`/run/k3s/containerd/io.containerd.runtime.v2.task/<ns>/<id>`), so a reboot removes them;
/// one that exists belongs to this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleProbe {
    /// No bundle directory.
    NoBundle,
    /// The bundle's `init.pid` names this process; `alive` says whether it still exists.
    Pid { pid: u32, alive: bool },
    /// A bundle directory without a readable `init.pid`.
    NoPid,
}

/// Liveness from the task state and, for a task containerd did not report, the bundle probe.
/// Only an absent or stopped task without a live process is dead: a task list can miss a task
/// whose shim is slow, so a bundle of this boot without a readable pid is not proof of death.
pub fn liveness(task: &TaskState, bundle: BundleProbe) -> Liveness {
    match (task, bundle) {
        (TaskState::Running { pid }, _) => Liveness::Alive(format!("task running, pid {pid}")),
        (_, BundleProbe::Pid { pid, alive: true }) => {
            Liveness::Alive(format!("process {pid} from the task bundle runs"))
        }
        (TaskState::Stopped, _) => Liveness::Dead("task stopped".into()),
        (TaskState::Absent, BundleProbe::NoBundle) => Liveness::Dead("no task".into()),
        (TaskState::Absent, BundleProbe::Pid { pid, .. }) => {
            Liveness::Dead(format!("no task, process {pid} is gone"))
        }
        (TaskState::Absent, BundleProbe::NoPid) => {
            Liveness::Unknown("no task reported but a bundle of this boot exists".into())
        }
        (TaskState::Unknown { error }, _) => {
            Liveness::Unknown(format!("task state unknown: {error}"))
        }
    }
}

/// A pod sandbox record with everything the plan needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sandbox {
    pub id: String,
    pub meta: Result<SandboxMeta, MetaError>,
    pub liveness: Liveness,
    pub created_unix_nanos: i64,
    pub snapshotter: String,
    pub snapshot_key: String,
}

/// An application container record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub id: String,
    pub meta: Result<ContainerMeta, MetaError>,
    pub liveness: Liveness,
    pub created_unix_nanos: i64,
    pub snapshotter: String,
    pub snapshot_key: String,
}

/// Every CRI record in the namespace, classified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub sandboxes: Vec<Sandbox>,
    pub containers: Vec<Container>,
    /// Records without the CRI kind label (made by other clients): never touched.
    pub foreign: Vec<String>,
}

impl Inventory {
    /// Sorts records by kind; `live(id)` gives each record's liveness.
    pub fn classify(records: &[Record], mut live: impl FnMut(&str) -> Liveness) -> Inventory {
        let mut inv = Inventory::default();
        for r in records {
            match r.labels.get(KIND_LABEL).map(String::as_str) {
                Some(KIND_SANDBOX) => inv.sandboxes.push(Sandbox {
                    id: r.id.clone(),
                    meta: decode_sandbox(
                        &r.id,
                        r.extensions.get(SANDBOX_METADATA_KEY).map(Vec::as_slice),
                    ),
                    liveness: live(&r.id),
                    created_unix_nanos: r.created_unix_nanos,
                    snapshotter: r.snapshotter.clone(),
                    snapshot_key: r.snapshot_key.clone(),
                }),
                Some(KIND_CONTAINER) => inv.containers.push(Container {
                    id: r.id.clone(),
                    meta: decode_container(
                        &r.id,
                        r.extensions.get(CONTAINER_METADATA_KEY).map(Vec::as_slice),
                    ),
                    liveness: live(&r.id),
                    created_unix_nanos: r.created_unix_nanos,
                    snapshotter: r.snapshotter.clone(),
                    snapshot_key: r.snapshot_key.clone(),
                }),
                _ => inv.foreign.push(r.id.clone()),
            }
        }
        inv
    }

    /// Ids of sandboxes that are not provably dead (alive or unknown).
    pub fn not_dead_sandbox_ids(&self) -> Vec<&str> {
        self.sandboxes
            .iter()
            .filter(|s| !s.liveness.is_dead())
            .map(|s| s.id.as_str())
            .collect()
    }

    /// Sandbox names held by more than one record, each with its records' indexes into
    /// `sandboxes`, newest first (ties by id, so the order is stable).
    pub fn duplicate_sandbox_names(&self) -> Vec<(String, Vec<usize>)> {
        duplicate_names(&self.sandboxes, |s| {
            let name = s.meta.as_ref().ok().map(|m| m.name.as_str());
            (name, s.created_unix_nanos, s.id.as_str())
        })
    }

    /// Container names held by more than one record, newest first, like
    /// [`Inventory::duplicate_sandbox_names`]; duplicates are just as fatal for the CRI plugin
    /// (`failed to reserve container name`).
    pub fn duplicate_container_names(&self) -> Vec<(String, Vec<usize>)> {
        duplicate_names(&self.containers, |c| {
            let name = c.meta.as_ref().ok().map(|m| m.name.as_str());
            (name, c.created_unix_nanos, c.id.as_str())
        })
    }
}

/// Names held by more than one of `records`, each with its holders' indexes, newest first
/// (ties by id, so the order is stable). `key` gives a record's name (`None` when its
/// metadata is unusable, so it claims no name), creation time and id.
fn duplicate_names<T>(
    records: &[T],
    key: impl Fn(&T) -> (Option<&str>, i64, &str),
) -> Vec<(String, Vec<usize>)> {
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        if let (Some(name), _, _) = key(r) {
            by_name.entry(name).or_default().push(i);
        }
    }
    by_name
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(name, mut v)| {
            v.sort_by(|&a, &b| {
                let ((_, a_created, a_id), (_, b_created, b_id)) =
                    (key(&records[a]), key(&records[b]));
                b_created.cmp(&a_created).then_with(|| a_id.cmp(b_id))
            });
            (name.to_string(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_A: &str = "3f1c0a9be27d4b6f8e0c2d5a7b9e1f3a5c7d9e1b3f5a7c9e1d3b5f7a9c1e3d5f";
    const ID_B: &str = "9a7c5e3b1d9f7a5c3e1b9d7f5a3c1e9b7d5f3a1c9e7b5d3f1a9c7e5b3d1f9a7c";

    fn sandbox_json(id: &str, name: &str) -> String {
        format!(
            r#"{{"Version":"v1","Metadata":{{"ID":"{id}","Name":"{name}","Config":{{"metadata":{{"name":"longhorn-csi-plugin-x7k2p","uid":"5d0c6e2a-8b1f-4c3d-9e7a-2f4b6d8c0a1e","namespace":"longhorn-system","attempt":2}},"hostname":"longhorn-csi-plugin-x7k2p","log_directory":"/var/log/pods/x"}},"NetNSPath":"/var/run/netns/cni-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901","IP":"10.42.0.17","AdditionalIPs":["fd00:42::11"],"RuntimeHandler":"","CNIResult":{{"Interfaces":{{}}}},"ProcessLabel":""}}}}"#
        )
    }

    const LONGHORN: &str =
        "longhorn-csi-plugin-x7k2p_longhorn-system_5d0c6e2a-8b1f-4c3d-9e7a-2f4b6d8c0a1e_2";

    #[test]
    fn sandbox_metadata_yields_id_name_parts_netns_and_ips() {
        let json = sandbox_json(ID_A, LONGHORN);
        let m = decode_sandbox(ID_A, Some(json.as_bytes())).unwrap();
        assert_eq!(m.id, ID_A);
        assert_eq!(m.name, LONGHORN);
        assert_eq!(
            m.pod,
            Some(PodName {
                pod: "longhorn-csi-plugin-x7k2p".into(),
                namespace: "longhorn-system".into(),
                uid: "5d0c6e2a-8b1f-4c3d-9e7a-2f4b6d8c0a1e".into(),
                attempt: 2,
            })
        );
        assert_eq!(
            m.netns,
            "/var/run/netns/cni-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"
        );
        assert_eq!(m.ip, "10.42.0.17");
        assert_eq!(m.additional_ips, vec!["fd00:42::11".to_string()]);
    }

    #[test]
    fn host_network_sandbox_with_null_fields_decodes_with_empty_network() {
        let json = format!(
            r#"{{"Version":"v1","Metadata":{{"ID":"{ID_B}","Name":"kube-vip-node1_kube-system_0a1b2c3d_0","Config":{{}},"NetNSPath":"","IP":"","AdditionalIPs":null,"CNIResult":null}}}}"#
        );
        let m = decode_sandbox(ID_B, Some(json.as_bytes())).unwrap();
        assert_eq!(m.name, "kube-vip-node1_kube-system_0a1b2c3d_0");
        assert_eq!(m.pod.as_ref().unwrap().pod, "kube-vip-node1");
        assert_eq!(m.pod.as_ref().unwrap().attempt, 0);
        assert_eq!(m.netns, "");
        assert_eq!(m.ip, "");
        assert!(m.additional_ips.is_empty());
    }

    #[test]
    fn missing_extension_is_reported_as_missing_metadata() {
        assert_eq!(
            decode_sandbox(ID_A, None),
            Err(MetaError::Missing(SANDBOX_METADATA_KEY))
        );
        assert_eq!(
            decode_container(ID_A, None),
            Err(MetaError::Missing(CONTAINER_METADATA_KEY))
        );
    }

    #[test]
    fn truncated_or_empty_metadata_is_not_json() {
        let json = sandbox_json(ID_A, LONGHORN);
        for bad in [
            &json.as_bytes()[..40],
            b"".as_slice(),
            b"\xff\xfe".as_slice(),
        ] {
            assert!(matches!(
                decode_sandbox(ID_A, Some(bad)),
                Err(MetaError::NotJson(_))
            ));
        }
    }

    #[test]
    fn other_metadata_versions_are_rejected() {
        let json = sandbox_json(ID_A, LONGHORN).replace("\"v1\"", "\"v2\"");
        assert_eq!(
            decode_sandbox(ID_A, Some(json.as_bytes())),
            Err(MetaError::UnknownVersion("v2".into()))
        );
    }

    #[test]
    fn metadata_for_another_id_or_without_name_is_invalid() {
        let json = sandbox_json(ID_B, LONGHORN);
        assert_eq!(
            decode_sandbox(ID_A, Some(json.as_bytes())),
            Err(MetaError::IdMismatch {
                record: ID_A.into(),
                meta: ID_B.into()
            })
        );
        let json = sandbox_json(ID_A, "");
        assert_eq!(
            decode_sandbox(ID_A, Some(json.as_bytes())),
            Err(MetaError::EmptyField("Name"))
        );
        let json = sandbox_json("", LONGHORN);
        assert_eq!(
            decode_sandbox(ID_A, Some(json.as_bytes())),
            Err(MetaError::EmptyField("ID"))
        );
    }

    #[test]
    fn container_metadata_yields_name_and_sandbox() {
        let json = format!(
            r#"{{"Version":"v1","Metadata":{{"ID":"{ID_B}","Name":"csi-plugin_longhorn-csi-plugin-x7k2p_longhorn-system_5d0c6e2a_0","SandboxID":"{ID_A}","Config":{{"metadata":{{"name":"csi-plugin"}}}},"ImageRef":"sha256:0123","LogPath":"/var/log/pods/x/csi-plugin/0.log","StopSignal":"SIGTERM"}}}}"#
        );
        let m = decode_container(ID_B, Some(json.as_bytes())).unwrap();
        assert_eq!(m.id, ID_B);
        assert_eq!(
            m.name,
            "csi-plugin_longhorn-csi-plugin-x7k2p_longhorn-system_5d0c6e2a_0"
        );
        assert_eq!(m.sandbox_id, ID_A);
    }

    #[test]
    fn container_metadata_without_sandbox_is_invalid() {
        let json =
            format!(r#"{{"Version":"v1","Metadata":{{"ID":"{ID_B}","Name":"app_p_ns_u_0"}}}}"#);
        assert_eq!(
            decode_container(ID_B, Some(json.as_bytes())),
            Err(MetaError::EmptyField("SandboxID"))
        );
    }

    #[test]
    fn pod_names_split_from_the_right_and_reject_other_shapes() {
        let p = PodName::parse("web-0_default_uid-0001_13").unwrap();
        assert_eq!(
            (
                p.pod.as_str(),
                p.namespace.as_str(),
                p.uid.as_str(),
                p.attempt
            ),
            ("web-0", "default", "uid-0001", 13)
        );
        for bad in [
            "",
            "web-0",
            "web-0_default_uid",
            "web-0_default_uid_x",
            "_default_uid_0",
            "web__uid_0",
            "web_ns_uid_-1",
        ] {
            assert_eq!(PodName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn running_task_or_live_bundle_pid_means_alive() {
        assert!(matches!(
            liveness(&TaskState::Running { pid: 4242 }, BundleProbe::NoBundle),
            Liveness::Alive(w) if w.contains("4242")
        ));
        assert!(matches!(
            liveness(&TaskState::Absent, BundleProbe::Pid { pid: 777, alive: true }),
            Liveness::Alive(w) if w.contains("777")
        ));
        assert!(matches!(
            liveness(
                &TaskState::Unknown {
                    error: "deadline".into()
                },
                BundleProbe::Pid {
                    pid: 9,
                    alive: true
                }
            ),
            Liveness::Alive(_)
        ));
    }

    #[test]
    fn absent_or_stopped_task_without_process_means_dead() {
        assert_eq!(
            liveness(&TaskState::Absent, BundleProbe::NoBundle),
            Liveness::Dead("no task".into())
        );
        assert_eq!(
            liveness(
                &TaskState::Stopped,
                BundleProbe::Pid {
                    pid: 31,
                    alive: false
                }
            ),
            Liveness::Dead("task stopped".into())
        );
        assert_eq!(
            liveness(
                &TaskState::Absent,
                BundleProbe::Pid {
                    pid: 31,
                    alive: false
                }
            ),
            Liveness::Dead("no task, process 31 is gone".into())
        );
    }

    #[test]
    fn unknown_task_state_is_never_dead() {
        let l = liveness(
            &TaskState::Unknown {
                error: "shim hung".into(),
            },
            BundleProbe::NoBundle,
        );
        assert!(!l.is_dead());
        assert!(matches!(l, Liveness::Unknown(w) if w.contains("shim hung")));
        let l = liveness(&TaskState::Absent, BundleProbe::NoPid);
        assert!(matches!(l, Liveness::Unknown(w) if w.contains("bundle")));
    }

    fn record(id: &str, kind: Option<&str>, ext: Option<(&str, String)>, created: i64) -> Record {
        let mut r = Record {
            id: id.into(),
            created_unix_nanos: created,
            snapshotter: "overlayfs".into(),
            snapshot_key: id.into(),
            ..Default::default()
        };
        if let Some(k) = kind {
            r.labels.insert(KIND_LABEL.into(), k.into());
        }
        if let Some((k, v)) = ext {
            r.extensions.insert(k.into(), v.into_bytes());
        }
        r
    }

    #[test]
    fn classify_sorts_records_by_kind_and_keeps_foreign_ones_apart() {
        let recs = vec![
            record(
                ID_A,
                Some(KIND_SANDBOX),
                Some((SANDBOX_METADATA_KEY, sandbox_json(ID_A, LONGHORN))),
                5,
            ),
            record(ID_B, Some(KIND_CONTAINER), None, 6),
            record("buildkit-xyz", None, None, 7),
        ];
        let inv = Inventory::classify(&recs, |id| {
            if id == ID_A {
                Liveness::Dead("no task".into())
            } else {
                Liveness::Alive("x".into())
            }
        });
        assert_eq!(inv.sandboxes.len(), 1);
        assert_eq!(inv.sandboxes[0].id, ID_A);
        assert_eq!(inv.sandboxes[0].meta.as_ref().unwrap().name, LONGHORN);
        assert!(inv.sandboxes[0].liveness.is_dead());
        assert_eq!(inv.sandboxes[0].snapshot_key, ID_A);
        assert_eq!(inv.sandboxes[0].created_unix_nanos, 5);
        assert_eq!(inv.containers.len(), 1);
        assert_eq!(
            inv.containers[0].meta,
            Err(MetaError::Missing(CONTAINER_METADATA_KEY))
        );
        assert_eq!(inv.foreign, vec!["buildkit-xyz".to_string()]);
        assert!(inv.not_dead_sandbox_ids().is_empty());
    }

    #[test]
    fn duplicate_names_are_grouped_newest_first() {
        let c = "c".repeat(64);
        let recs = vec![
            record(
                ID_A,
                Some(KIND_SANDBOX),
                Some((SANDBOX_METADATA_KEY, sandbox_json(ID_A, LONGHORN))),
                100,
            ),
            record(
                ID_B,
                Some(KIND_SANDBOX),
                Some((SANDBOX_METADATA_KEY, sandbox_json(ID_B, LONGHORN))),
                300,
            ),
            record(
                &c,
                Some(KIND_SANDBOX),
                Some((SANDBOX_METADATA_KEY, sandbox_json(&c, "web-0_default_u1_0"))),
                200,
            ),
        ];
        let inv = Inventory::classify(&recs, |_| Liveness::Dead("no task".into()));
        let d = inv.duplicate_sandbox_names();
        assert_eq!(d, vec![(LONGHORN.to_string(), vec![1, 0])]);
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode_sandbox(ID_A, Some(&bytes));
            let _ = decode_container(ID_A, Some(&bytes));
        }

        #[test]
        fn parsing_arbitrary_names_never_panics(s in ".{0,80}") {
            if let Some(p) = PodName::parse(&s) {
                proptest::prop_assert_eq!(format!("{}_{}_{}_{}", p.pod, p.namespace, p.uid, p.attempt).len() <= s.len(), true);
            }
        }
    }
}
