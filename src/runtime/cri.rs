//! The runtime side: while k3s runs, a dead (NotReady) sandbox can still hold the name the
//! kubelet retries with (`failed to reserve sandbox name "<name>": name "<name>" is reserved
//! for "<id>"`, gRPC code Unknown, so matched on text). StopPodSandbox +
//! RemovePodSandbox of exactly that id frees the name and its pod IP, with CRI's own network
//! teardown. This module finds such conflicts (pure) and removes one sandbox when told, over
//! CRI on k3s's socket, with a deadline on every call.
//!
//! `failed to reserve container name` is deliberately not handled: it is transient during a
//! slow CreateContainer on a slow SD card and clears itself.

use crate::edge::grpc::connect_unix;
use crate::formats::name_reservation;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandboxState, PodSandboxStatusRequest, RemovePodSandboxRequest,
    StopPodSandboxRequest,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

/// One CRI call; StopPodSandbox runs the CNI teardown, which takes ~0.3 s on a Pi.
pub(crate) const DEFAULT_CRI_TIMEOUT: Duration = Duration::from_secs(10);

/// A pod sandbox as CRI lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxInfo {
    pub id: String,
    pub(crate) pod: String,
    pub(crate) namespace: String,
    pub(crate) uid: String,
    pub(crate) attempt: u32,
    pub ready: bool,
    pub(crate) created_at_nanos: i64,
}

impl SandboxInfo {
    /// The name CRI reserves for this sandbox: `<pod>_<namespace>_<uid>_<attempt>`.
    pub fn name(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.pod, self.namespace, self.uid, self.attempt
        )
    }
}

/// A NotReady sandbox that holds a name another sandbox (or the kubelet's retry) needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub(crate) name: String,
    /// The NotReady sandbox to stop and remove.
    pub(crate) stale_id: String,
    /// The other claimant, when the listing shows one.
    pub(crate) other_id: Option<String>,
}

/// Parses the runtime error `failed to reserve sandbox name "N": name "N" is reserved for "ID"`
/// into (name, id). Container-name reservations are not matched (they are transient).
pub fn parse_reserved_error(msg: &str) -> Option<(String, String)> {
    name_reservation::sandbox_conflict(&name_reservation::parse(msg)?)
}

/// Name conflicts visible in a listing: sandboxes with the same metadata (pod, namespace,
/// uid, attempt) where an older one is NotReady. The newest claimant, or a Ready one, stays.
pub fn find_conflicts(list: &[SandboxInfo]) -> Vec<Conflict> {
    let mut by_name: BTreeMap<String, Vec<&SandboxInfo>> = BTreeMap::new();
    for s in list {
        by_name.entry(s.name()).or_default().push(s);
    }
    let mut out = Vec::new();
    for (name, mut group) in by_name {
        if group.len() < 2 {
            continue;
        }
        group.sort_by(|a, b| {
            b.ready
                .cmp(&a.ready)
                .then(b.created_at_nanos.cmp(&a.created_at_nanos))
                .then(a.id.cmp(&b.id))
        });
        let keep = group[0];
        for s in &group[1..] {
            if !s.ready {
                out.push(Conflict {
                    name: name.clone(),
                    stale_id: s.id.clone(),
                    other_id: Some(keep.id.clone()),
                });
            }
        }
    }
    out
}

/// Why a CRI call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriError {
    #[error("CRI at {socket} did not answer {what} within {timeout:?}")]
    Timeout {
        socket: PathBuf,
        what: String,
        timeout: Duration,
    },
    #[error("CRI at {socket} failed {what}: {error}")]
    Call {
        socket: PathBuf,
        what: String,
        error: String,
    },
    #[error("sandbox {id} is {found}, not the NotReady {expected}: left alone")]
    NotTheStaleSandbox {
        id: String,
        expected: String,
        found: String,
    },
}

/// The CRI operations the runtime repair needs.
pub trait CriRuntime {
    fn list_sandboxes(&mut self) -> Result<Vec<SandboxInfo>, CriError>;
    /// (ready, name) of one sandbox; `None` when it no longer exists.
    fn sandbox_status(&mut self, id: &str) -> Result<Option<(bool, String)>, CriError>;
    fn stop_sandbox(&mut self, id: &str) -> Result<(), CriError>;
    fn remove_sandbox(&mut self, id: &str) -> Result<(), CriError>;
    /// After CRI removed sandbox `id`: deletes what containerd still holds of it (its
    /// container record and, on 2.x, its sandbox store entry, see [`remove_cri_leftovers`])
    /// and names what that was.
    fn remove_leftovers(&mut self, _id: &str) -> Result<Vec<&'static str>, CriError> {
        Ok(vec![])
    }
}

/// Stops and removes exactly `id`, after checking it still is the NotReady sandbox named
/// `expected_name` (a Ready sandbox, or another name, is never touched). `Ok(false)` when it
/// is already gone.
pub fn remove_stale_sandbox(
    cri: &mut dyn CriRuntime,
    id: &str,
    expected_name: &str,
) -> Result<bool, CriError> {
    match cri.sandbox_status(id)? {
        None => return Ok(false),
        Some((false, name)) if name == expected_name => {}
        Some((ready, name)) => {
            return Err(CriError::NotTheStaleSandbox {
                id: id.to_string(),
                expected: expected_name.to_string(),
                found: format!("{} {name}", if ready { "Ready" } else { "NotReady" }),
            });
        }
    }
    cri.stop_sandbox(id)?;
    cri.remove_sandbox(id)?;
    // Done only when neither the record nor the store entry is left.
    let left = cri.remove_leftovers(id)?;
    if !left.is_empty() {
        log::warn!(
            "runtime repair: CRI removed sandbox {id} but left its {}: deleted",
            left.join(" and ")
        );
    }
    log::info!("runtime repair: stopped and removed NotReady sandbox {id} ({expected_name})");
    Ok(true)
}

/// CRI over a unix socket, every call under `timeout`.
pub struct GrpcCri {
    rt: tokio::runtime::Runtime,
    pub(crate) client: RuntimeServiceClient<Channel>,
    /// The image service on the same connection (the disk reclaim's image half).
    pub(crate) images: ImageServiceClient<Channel>,
    /// The same socket serves containerd's own API (records, sandbox store).
    channel: Channel,
    socket: PathBuf,
    timeout: Duration,
}

impl GrpcCri {
    pub fn connect(socket: &Path, timeout: Duration) -> Result<GrpcCri, CriError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CriError::Call {
                socket: socket.to_path_buf(),
                what: "setup".into(),
                error: e.to_string(),
            })?;
        let ch = rt
            .block_on(connect_unix(socket, timeout))
            .map_err(|e| CriError::Call {
                socket: socket.to_path_buf(),
                what: "connect".into(),
                error: e.to_string(),
            })?;
        Ok(GrpcCri {
            rt,
            images: ImageServiceClient::new(ch.clone()),
            client: RuntimeServiceClient::new(ch.clone()),
            channel: ch,
            socket: socket.to_path_buf(),
            timeout,
        })
    }

    pub(crate) fn call<T, F>(&self, what: &str, fut: F) -> Result<Option<T>, CriError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let t = self.timeout;
        match self
            .rt
            .block_on(async move { tokio::time::timeout(t, fut).await })
        {
            Ok(Ok(r)) => Ok(Some(r.into_inner())),
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => Ok(None),
            // tonic's own request timeout (set on the endpoint) ends a call as Cancelled
            // "Timeout expired" before our timer fires: the same deadline.
            Ok(Err(s))
                if s.code() == tonic::Code::DeadlineExceeded
                    || (s.code() == tonic::Code::Cancelled && s.message().contains("Timeout")) =>
            {
                Err(CriError::Timeout {
                    socket: self.socket.clone(),
                    what: what.into(),
                    timeout: t,
                })
            }
            Ok(Err(s)) => Err(CriError::Call {
                socket: self.socket.clone(),
                what: what.into(),
                error: format!("{:?}: {}", s.code(), s.message()),
            }),
            Err(_) => Err(CriError::Timeout {
                socket: self.socket.clone(),
                what: what.into(),
                timeout: t,
            }),
        }
    }

    pub(crate) fn req<T>(&self, m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        r.set_timeout(self.timeout);
        r
    }
}

impl CriRuntime for GrpcCri {
    fn list_sandboxes(&mut self) -> Result<Vec<SandboxInfo>, CriError> {
        let mut c = self.client.clone();
        let req = self.req(ListPodSandboxRequest::default());
        let items = self
            .call("ListPodSandbox", c.list_pod_sandbox(req))?
            .map(|r| r.items)
            .unwrap_or_default();
        Ok(items
            .into_iter()
            .map(|p| {
                let m = p.metadata.unwrap_or_default();
                SandboxInfo {
                    ready: p.state == PodSandboxState::SandboxReady as i32,
                    id: p.id,
                    pod: m.name,
                    namespace: m.namespace,
                    uid: m.uid,
                    attempt: m.attempt,
                    created_at_nanos: p.created_at,
                }
            })
            .collect())
    }

    fn sandbox_status(&mut self, id: &str) -> Result<Option<(bool, String)>, CriError> {
        let mut c = self.client.clone();
        let req = self.req(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        });
        let r = self.call(&format!("PodSandboxStatus {id}"), c.pod_sandbox_status(req))?;
        Ok(r.and_then(|r| r.status).map(|s| {
            let m = s.metadata.unwrap_or_default();
            (
                s.state == PodSandboxState::SandboxReady as i32,
                format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt),
            )
        }))
    }

    fn stop_sandbox(&mut self, id: &str) -> Result<(), CriError> {
        let mut c = self.client.clone();
        let req = self.req(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        });
        self.call(&format!("StopPodSandbox {id}"), c.stop_pod_sandbox(req))
            .map(|_| ())
    }

    fn remove_sandbox(&mut self, id: &str) -> Result<(), CriError> {
        let mut c = self.client.clone();
        let req = self.req(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        });
        self.call(&format!("RemovePodSandbox {id}"), c.remove_pod_sandbox(req))
            .map(|_| ())
    }

    fn remove_leftovers(&mut self, id: &str) -> Result<Vec<&'static str>, CriError> {
        let fut = remove_cri_leftovers(self.channel.clone(), id, self.timeout);
        match self
            .rt
            .block_on(async { tokio::time::timeout(self.timeout, fut).await })
        {
            Ok(Ok(left)) => Ok(left),
            Ok(Err(error)) => Err(CriError::Call {
                socket: self.socket.clone(),
                what: format!("deleting what CRI left of sandbox {id}"),
                error,
            }),
            Err(_) => Err(CriError::Timeout {
                socket: self.socket.clone(),
                what: format!("checking what CRI left of sandbox {id}"),
                timeout: self.timeout,
            }),
        }
    }
}

/// The containerd namespace of CRI's records (k3s's containerd).
const CRI_NAMESPACE: &str = "k8s.io";

/// After CRI's RemovePodSandbox of `id` on a running containerd: deletes the sandbox's
/// container record and (2.x) its sandbox store entry if either is still there, and names
/// what was left. CRI removes both itself (`sandbox_remove.go`), so this finds nothing unless
/// a removal went half-way; then the sandbox would come back at the next restart (the store
/// entry as a NotReady pod, containerd 2.x `internal/cri/server/restart.go`).
pub async fn remove_cri_leftovers(
    channel: Channel,
    id: &str,
    timeout: Duration,
) -> Result<Vec<&'static str>, String> {
    use crate::edge::grpc::namespaced;
    use crate::edge::sandbox_store as store;
    use containerd_client::services::v1::{
        DeleteContainerRequest, GetContainerRequest, containers_client::ContainersClient,
    };
    let gone = |s: &tonic::Status| matches!(s.code(), Code::NotFound | Code::Unimplemented);
    let mut left = Vec::new();
    let mut containers = ContainersClient::new(channel.clone());
    let get = namespaced(
        GetContainerRequest { id: id.into() },
        CRI_NAMESPACE,
        timeout,
    );
    match containers.get(get).await {
        Ok(_) => {
            let del = namespaced(
                DeleteContainerRequest { id: id.into() },
                CRI_NAMESPACE,
                timeout,
            );
            match containers.delete(del).await {
                Ok(_) => left.push("container record"),
                Err(s) if gone(&s) => {}
                Err(s) => return Err(format!("deleting its container record: {s}")),
            }
        }
        Err(s) if gone(&s) => {}
        Err(s) => return Err(format!("reading its container record: {s}")),
    }
    match store::exists(channel.clone(), CRI_NAMESPACE, id, timeout).await {
        Ok(true) => match store::delete(channel, CRI_NAMESPACE, id, timeout).await {
            Ok(true) => left.push("sandbox store entry"),
            Ok(false) => {}
            Err(s) => return Err(format!("deleting its sandbox store entry: {s}")),
        },
        Ok(false) => {}
        Err(s) => return Err(format!("reading its sandbox store entry: {s}")),
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "d3a1f0c2b4e6a8c0d2f4b6a8c0e2d4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8";

    #[test]
    fn reserved_sandbox_name_error_yields_name_and_holder() {
        let msg = format!(
            "rpc error: code = Unknown desc = failed to reserve sandbox name \"longhorn-csi-plugin-x7k2p_longhorn-system_5d0c6e2a-8b1f-4c3d-9e7a-2f4b6d8c0a1e_0\": name \"longhorn-csi-plugin-x7k2p_longhorn-system_5d0c6e2a-8b1f-4c3d-9e7a-2f4b6d8c0a1e_0\" is reserved for \"{ID}\""
        );
        assert_eq!(
            parse_reserved_error(&msg),
            Some((
                "longhorn-csi-plugin-x7k2p_longhorn-system_5d0c6e2a-8b1f-4c3d-9e7a-2f4b6d8c0a1e_0"
                    .into(),
                ID.into()
            ))
        );
    }

    #[test]
    fn container_name_and_other_errors_are_not_sandbox_conflicts() {
        for m in [
            format!(
                "failed to reserve container name \"app_web-0_default_u_0\": name \"app_web-0_default_u_0\" is reserved for \"{ID}\""
            ),
            "failed to reserve sandbox name \"x_y_z_0\"".into(),
            "failed to reserve sandbox name \"x_y_z_0\": name \"x_y_z_0\" is reserved for \"short\"".into(),
            String::new(),
        ] {
            assert_eq!(parse_reserved_error(&m), None, "{m}");
        }
    }

    fn sb(id: char, attempt: u32, ready: bool, created: i64) -> SandboxInfo {
        SandboxInfo {
            id: std::iter::repeat_n(id, 64).collect(),
            pod: "web-0".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            attempt,
            ready,
            created_at_nanos: created,
        }
    }

    #[test]
    fn same_metadata_with_an_older_notready_sandbox_is_a_conflict() {
        let list = vec![
            sb('a', 0, false, 1),
            sb('b', 0, true, 2),
            sb('c', 1, false, 3),
        ];
        let c = find_conflicts(&list);
        assert_eq!(
            c,
            vec![Conflict {
                name: "web-0_default_u1_0".into(),
                stale_id: list[0].id.clone(),
                other_id: Some(list[1].id.clone()),
            }]
        );
    }

    #[test]
    fn different_attempts_and_two_ready_claimants_are_not_conflicts() {
        assert!(find_conflicts(&[sb('a', 0, false, 1), sb('b', 1, true, 2)]).is_empty());
        assert!(find_conflicts(&[sb('a', 0, true, 1), sb('b', 0, true, 2)]).is_empty());
    }

    #[derive(Default)]
    struct FakeCri {
        status: BTreeMap<String, (bool, String)>,
        calls: Vec<String>,
    }

    impl CriRuntime for FakeCri {
        fn list_sandboxes(&mut self) -> Result<Vec<SandboxInfo>, CriError> {
            Ok(vec![])
        }
        fn sandbox_status(&mut self, id: &str) -> Result<Option<(bool, String)>, CriError> {
            self.calls.push(format!("status {id}"));
            Ok(self.status.get(id).cloned())
        }
        fn stop_sandbox(&mut self, id: &str) -> Result<(), CriError> {
            self.calls.push(format!("stop {id}"));
            Ok(())
        }
        fn remove_sandbox(&mut self, id: &str) -> Result<(), CriError> {
            self.calls.push(format!("remove {id}"));
            self.status.remove(id);
            Ok(())
        }
    }

    #[test]
    fn only_the_named_notready_sandbox_is_stopped_and_removed() {
        let mut f = FakeCri::default();
        f.status
            .insert("s1".into(), (false, "web-0_default_u1_0".into()));
        f.status
            .insert("s2".into(), (true, "web-1_default_u2_0".into()));
        assert_eq!(
            remove_stale_sandbox(&mut f, "s1", "web-0_default_u1_0"),
            Ok(true)
        );
        assert_eq!(f.calls, vec!["status s1", "stop s1", "remove s1"]);
        assert_eq!(
            remove_stale_sandbox(&mut f, "s1", "web-0_default_u1_0"),
            Ok(false)
        );
        assert!(matches!(
            remove_stale_sandbox(&mut f, "s2", "web-1_default_u2_0"),
            Err(CriError::NotTheStaleSandbox { .. })
        ));
        f.status
            .insert("s3".into(), (false, "other_default_u3_0".into()));
        assert!(remove_stale_sandbox(&mut f, "s3", "web-0_default_u1_0").is_err());
        assert!(!f.calls.iter().any(|c| c == "stop s2" || c == "stop s3"));
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_messages_never_panics(s in ".{0,300}") {
            let _ = parse_reserved_error(&s);
        }
    }
}
