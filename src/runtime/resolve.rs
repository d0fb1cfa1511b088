//! The `remove_sandboxes` actuator for a `SandboxNameReserved` episode.
//!
//! # API for the policy executor
//!
//! ```text
//! let mut cri = nodemedic::runtime::resolve::connect(&cfg.runtime)?;          // GrpcCri, 10 s per call
//! match nodemedic::runtime::resolve::resolve_conflicts(&mut cri, &condition.subject, MAX_PER_CONFLICT) {
//!     Ok(removed) => { metrics.removed_at_runtime(removed.len() as u64); /* audit `removed` */ }
//!     Err(e) => { /* audit e.to_string(); e.removed() lists what was done before the error */ }
//! }
//! ```
//!
//! - `subject` is the condition's subject: the sandbox name `<pod>_<namespace>_<uid>_<attempt>`.
//! - Removes (CRI StopPodSandbox, then RemovePodSandbox, by exact id) every **NotReady**
//!   sandbox with exactly that name; a Ready one is never touched. Each is re-checked with
//!   PodSandboxStatus right before it is stopped.
//! - More NotReady holders than `cap`: nothing is removed ([`ResolveError::OverCap`]). One
//!   name is normally held by one dead sandbox; many means something else is wrong.
//! - `Ok(vec![])`: no NotReady sandbox holds the name any more (resolved meanwhile).
//! - Dry-run and observe mode are the executor's business: this function always acts.
//! - Blocking, with a deadline on every call (the connection's timeout); run it on a plain
//!   thread, not on the async runtime.
//!
//! Stop before remove, through CRI rather than containerd's records, because StopPodSandbox
//! runs the CNI teardown: the pod's IP reservation and result cache go with it, which deleting the record directly would leak.

use super::cri::{CriError, CriRuntime, DEFAULT_CRI_TIMEOUT, GrpcCri, remove_stale_sandbox};
use crate::config::RuntimeSection;
use serde::Serialize;

/// Recommended cap per conflict: one holder is the rule; a second covers a duplicate
/// record left by a time jump (containerd issue 10842).
pub const MAX_PER_CONFLICT: usize = 2;

/// One sandbox removed, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub id: String,
    pub name: String,
    pub created_at_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("\"{0}\" is not a sandbox name (<pod>_<namespace>_<uid>_<attempt>); nothing removed")]
    BadSubject(String),
    #[error("listing sandboxes failed, nothing removed: {0}")]
    List(Box<CriError>),
    #[error(
        "{found} NotReady sandboxes hold the name {name}, more than the cap of {cap}: nothing removed; inspect them with crictl pods --name and remove by hand"
    )]
    OverCap {
        name: String,
        found: usize,
        cap: usize,
    },
    #[error("removing sandbox {id} ({name}) failed after {} removal(s): {error}", removed.len())]
    Failed {
        id: String,
        name: String,
        error: Box<CriError>,
        removed: Vec<Removed>,
    },
}

impl ResolveError {
    /// What was removed before the error (for the audit trail).
    pub fn removed(&self) -> &[Removed] {
        match self {
            ResolveError::Failed { removed, .. } => removed,
            _ => &[],
        }
    }
}

/// CRI on the runtime socket of `cfg`, with the repair deadline per call (StopPodSandbox
/// runs the CNI teardown, slower than a listing).
pub fn connect(cfg: &RuntimeSection) -> Result<GrpcCri, CriError> {
    GrpcCri::connect(&cfg.socket, DEFAULT_CRI_TIMEOUT)
}

/// True for `<pod>_<namespace>_<uid>_<attempt>`: four non-empty parts, a numeric attempt.
/// Pod names, namespaces and uids never contain `_` (DNS-1123 names, RFC 4122 uids).
pub fn is_sandbox_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('_').collect();
    parts.len() == 4
        && parts.iter().all(|p| !p.is_empty())
        && parts[3].bytes().all(|b| b.is_ascii_digit())
}

/// Removes exactly the NotReady sandboxes that hold the name `subject` (see the module doc).
pub fn resolve_conflicts(
    cri: &mut dyn CriRuntime,
    subject: &str,
    cap: usize,
) -> Result<Vec<Removed>, ResolveError> {
    if !is_sandbox_name(subject) {
        return Err(ResolveError::BadSubject(subject.to_string()));
    }
    let mut holders: Vec<Removed> = cri
        .list_sandboxes()
        .map_err(|e| ResolveError::List(Box::new(e)))?
        .into_iter()
        .filter(|s| !s.ready && s.name() == subject)
        .map(|s| Removed {
            name: s.name(),
            id: s.id,
            created_at_nanos: s.created_at_nanos,
        })
        .collect();
    if holders.len() > cap {
        return Err(ResolveError::OverCap {
            name: subject.to_string(),
            found: holders.len(),
            cap,
        });
    }
    holders.sort_by_key(|h| h.created_at_nanos);
    let mut removed = Vec::with_capacity(holders.len());
    for h in holders {
        match remove_stale_sandbox(cri, &h.id, subject) {
            Ok(true) => removed.push(h),
            // Gone between the listing and the status check: nothing to do.
            Ok(false) => {}
            Err(error) => {
                return Err(ResolveError::Failed {
                    id: h.id,
                    name: h.name,
                    error: Box::new(error),
                    removed,
                });
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cri::SandboxInfo;
    use std::collections::BTreeMap;

    /// A CRI that records calls; statuses follow the listing unless overridden.
    #[derive(Default)]
    struct RecordingCri {
        list: Vec<SandboxInfo>,
        /// Status answers that differ from the listing (changed meanwhile).
        status_override: BTreeMap<String, Option<(bool, String)>>,
        fail_stop: Option<String>,
        calls: Vec<String>,
    }

    impl CriRuntime for RecordingCri {
        fn list_sandboxes(&mut self) -> Result<Vec<SandboxInfo>, CriError> {
            self.calls.push("list".into());
            Ok(self.list.clone())
        }
        fn sandbox_status(&mut self, id: &str) -> Result<Option<(bool, String)>, CriError> {
            self.calls.push(format!("status {}", &id[..1]));
            if let Some(o) = self.status_override.get(id) {
                return Ok(o.clone());
            }
            Ok(self
                .list
                .iter()
                .find(|s| s.id == id)
                .map(|s| (s.ready, s.name())))
        }
        fn stop_sandbox(&mut self, id: &str) -> Result<(), CriError> {
            self.calls.push(format!("stop {}", &id[..1]));
            if self.fail_stop.as_deref() == Some(id) {
                return Err(CriError::Call {
                    socket: "/run/k3s/containerd/containerd.sock".into(),
                    what: format!("StopPodSandbox {id}"),
                    error: "Unknown: scripted".into(),
                });
            }
            Ok(())
        }
        fn remove_sandbox(&mut self, id: &str) -> Result<(), CriError> {
            self.calls.push(format!("remove {}", &id[..1]));
            self.list.retain(|s| s.id != id);
            Ok(())
        }
    }

    fn sb(c: char, pod: &str, ready: bool, created: i64) -> SandboxInfo {
        SandboxInfo {
            id: std::iter::repeat_n(c, 64).collect(),
            pod: pod.into(),
            namespace: "default".into(),
            uid: format!("uid-{pod}"),
            attempt: 0,
            ready,
            created_at_nanos: created,
        }
    }

    const NAME: &str = "web-0_default_uid-web-0_0";

    #[test]
    fn exactly_the_notready_holders_of_the_name_are_stopped_then_removed() {
        let mut cri = RecordingCri {
            list: vec![
                sb('a', "web-0", false, 5),
                sb('b', "web-0", true, 9),
                sb('c', "web-1", false, 1),
                sb('d', "web-0", false, 2),
            ],
            ..Default::default()
        };
        let removed = resolve_conflicts(&mut cri, NAME, MAX_PER_CONFLICT).unwrap();
        let ids: Vec<char> = removed
            .iter()
            .map(|r| r.id.chars().next().unwrap())
            .collect();
        assert_eq!(
            ids,
            vec!['d', 'a'],
            "oldest first, never the Ready b or the other pod c"
        );
        assert_eq!(
            cri.calls,
            vec![
                "list", "status d", "stop d", "remove d", "status a", "stop a", "remove a"
            ]
        );
        assert!(removed.iter().all(|r| r.name == NAME));
    }

    #[test]
    fn more_holders_than_the_cap_removes_nothing() {
        let mut cri = RecordingCri {
            list: vec![sb('a', "web-0", false, 1), sb('d', "web-0", false, 2)],
            ..Default::default()
        };
        let e = resolve_conflicts(&mut cri, NAME, 1).unwrap_err();
        assert!(
            matches!(
                e,
                ResolveError::OverCap {
                    found: 2,
                    cap: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(cri.calls, vec!["list"]);
        assert!(e.to_string().contains("nothing removed"));
    }

    #[test]
    fn a_holder_that_became_ready_meanwhile_is_left_and_reported() {
        let a = sb('a', "web-0", false, 1);
        let mut cri = RecordingCri {
            status_override: [(a.id.clone(), Some((true, NAME.to_string())))].into(),
            list: vec![a],
            ..Default::default()
        };
        let e = resolve_conflicts(&mut cri, NAME, 2).unwrap_err();
        assert!(
            matches!(&e, ResolveError::Failed { error, .. } if matches!(**error, CriError::NotTheStaleSandbox { .. })),
            "{e}"
        );
        assert!(!cri.calls.iter().any(|c| c.starts_with("stop")));
    }

    #[test]
    fn a_failed_stop_reports_what_was_already_removed() {
        let a = sb('a', "web-0", false, 1);
        let d = sb('d', "web-0", false, 2);
        let mut cri = RecordingCri {
            fail_stop: Some(d.id.clone()),
            list: vec![a, d],
            ..Default::default()
        };
        let e = resolve_conflicts(&mut cri, NAME, 2).unwrap_err();
        assert_eq!(e.removed().len(), 1);
        assert!(e.to_string().contains("after 1 removal(s)"), "{e}");
        assert!(!cri.calls.contains(&"remove d".to_string()));
    }

    #[test]
    fn nothing_to_do_when_the_name_is_free_or_held_only_by_a_ready_sandbox() {
        let mut cri = RecordingCri {
            list: vec![sb('b', "web-0", true, 9)],
            ..Default::default()
        };
        assert_eq!(resolve_conflicts(&mut cri, NAME, 2), Ok(vec![]));
        assert_eq!(cri.calls, vec!["list"]);
    }

    #[test]
    fn a_subject_that_is_not_a_sandbox_name_is_refused_before_any_call() {
        let mut cri = RecordingCri::default();
        for bad in [
            "",
            "/mnt/nas",
            "web-0_default_uid",
            "a_b_c_x",
            "a__c_0",
            "a_b_c_0_1",
        ] {
            assert!(
                matches!(
                    resolve_conflicts(&mut cri, bad, 2),
                    Err(ResolveError::BadSubject(_))
                ),
                "{bad}"
            );
        }
        assert!(cri.calls.is_empty());
        assert!(is_sandbox_name(NAME));
    }
}
