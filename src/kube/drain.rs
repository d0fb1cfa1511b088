//! Drain: evict every pod that can move, until a deadline, and say what is left.
//!
//! Pods go through the policy/v1 Eviction API, never plain deletes, so
//! PodDisruptionBudgets are honoured: a 429 means "not now", and the pod is retried every
//! `retry_interval` until the deadline. The drain never decides what happens next; it
//! returns what remains and the escalation policy chooses (reboot anyway, wait, give up).
//! Which pods are skipped is pure ([`classify`]); the loop is thin orchestration.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::api::{Capabilities, EvictOutcome, KubeError, NodeApi, PodView};

/// kubectl drain waits 5 s between eviction attempts that a PodDisruptionBudget refused.
pub(crate) const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// A Pi running a handful of pods drains in well under a minute; beyond five minutes a
/// PDB is not going to let go and the policy should decide.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainOptions {
    pub deadline: Duration,
    pub retry_interval: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            deadline: DEFAULT_DEADLINE,
            retry_interval: DEFAULT_RETRY_INTERVAL,
        }
    }
}

/// Why a pod is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The DaemonSet controller would recreate it on this node at once.
    DaemonSet,
    /// The API mirror of a static pod; kubelet owns it and eviction does nothing.
    Mirror,
    /// Succeeded or Failed: holds no resources, nothing to move.
    Finished,
    /// No controller would recreate it elsewhere (a bare pod): evicting it deletes the
    /// workload. Only with the explicit `nodemedic.io/evictable: "true"` annotation.
    Bare,
}

/// Why a pod is still on the node when the deadline passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemainReason {
    /// A PodDisruptionBudget refused (429); the API's message.
    Blocked(String),
    /// Eviction accepted or deletion pending; still terminating.
    Terminating,
    /// The eviction call failed (API down, forbidden, ...).
    Failed(String),
    /// The deadline passed before it was tried.
    NotAttempted,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DrainReport {
    /// `namespace/name` of pods whose eviction the API accepted.
    pub evicted: Vec<String>,
    pub skipped: Vec<(String, Skip)>,
    pub remaining: Vec<(String, RemainReason)>,
    /// At least one call failed because the API was unavailable.
    pub(crate) api_unavailable: bool,
}

impl DrainReport {
    pub fn complete(&self) -> bool {
        self.remaining.is_empty()
    }
}

pub(crate) fn classify(pod: &PodView) -> Option<Skip> {
    if pod.mirror {
        Some(Skip::Mirror)
    } else if pod.controller_kind.as_deref() == Some("DaemonSet") {
        Some(Skip::DaemonSet)
    } else if matches!(pod.phase.as_str(), "Succeeded" | "Failed") {
        Some(Skip::Finished)
    } else if pod.controller_kind.is_none() && !pod.evictable {
        Some(Skip::Bare)
    } else {
        None
    }
}

/// Evicts all movable pods of `node` until none remain or `opts.deadline` passes.
/// Each API call is bounded by the implementation's own deadline as well.
pub async fn drain<A: NodeApi>(
    api: &A,
    node: &str,
    caps: &Capabilities,
    opts: DrainOptions,
) -> Result<DrainReport, KubeError> {
    if !caps.evict {
        return Err(KubeError::NotPermitted {
            action: "evicting pods (drain)",
            identity: caps.identity.clone(),
        });
    }
    let end = tokio::time::Instant::now() + opts.deadline;
    let mut report = DrainReport::default();
    let mut evicted: BTreeSet<String> = BTreeSet::new();
    let mut failed: BTreeMap<String, RemainReason> = BTreeMap::new();
    let mut last_seen: Vec<PodView> = Vec::new();
    let mut listed = false;

    loop {
        match tokio::time::timeout_at(end, api.list_pods_on_node(node)).await {
            Err(_) => break,
            Ok(Err(e)) if e.api_unavailable() => report.api_unavailable = true,
            Ok(Err(e)) => return Err(e),
            Ok(Ok(pods)) => {
                listed = true;
                report.skipped = pods
                    .iter()
                    .filter_map(|p| classify(p).map(|s| (p.key(), s)))
                    .collect();
                last_seen = pods.into_iter().filter(|p| classify(p).is_none()).collect();
                if last_seen.is_empty() {
                    break;
                }
                for pod in &last_seen {
                    let key = pod.key();
                    if pod.terminating || evicted.contains(&key) {
                        continue;
                    }
                    let res =
                        tokio::time::timeout_at(end, api.evict_pod(&pod.namespace, &pod.name))
                            .await;
                    let reason = match res {
                        Err(_) => break,
                        Ok(Ok(EvictOutcome::Evicted | EvictOutcome::Gone)) => {
                            failed.remove(&key);
                            evicted.insert(key);
                            continue;
                        }
                        Ok(Ok(EvictOutcome::Blocked { message })) => RemainReason::Blocked(message),
                        Ok(Err(e)) => {
                            report.api_unavailable |= e.api_unavailable();
                            RemainReason::Failed(e.to_string())
                        }
                    };
                    failed.insert(key, reason);
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            break;
        }
        tokio::time::sleep_until((now + opts.retry_interval).min(end)).await;
    }

    report.evicted = evicted.iter().cloned().collect();
    report.remaining = last_seen
        .iter()
        .map(|p| {
            let key = p.key();
            let why = if p.terminating || evicted.contains(&key) {
                RemainReason::Terminating
            } else {
                failed.remove(&key).unwrap_or(RemainReason::NotAttempted)
            };
            (key, why)
        })
        .collect();
    if !listed {
        report.remaining.push((
            format!("{node}/*"),
            RemainReason::Failed("could not list the pods on this node".into()),
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::fake::FakeNodeApi;

    fn pod(ns: &str, name: &str, owner: Option<&str>) -> PodView {
        PodView {
            namespace: ns.into(),
            name: name.into(),
            uid: String::new(),
            qos_class: "Burstable".into(),
            controller_kind: owner.map(str::to_string),
            mirror: false,
            phase: "Running".into(),
            terminating: false,
            evictable: false,
        }
    }

    // Real time, kept short: the crate's tokio has no test-util clock.
    fn opts() -> DrainOptions {
        DrainOptions {
            deadline: Duration::from_millis(600),
            retry_interval: Duration::from_millis(20),
        }
    }

    #[test]
    fn daemonset_mirror_and_finished_pods_are_skipped() {
        assert_eq!(
            classify(&pod(
                "kube-system",
                "svclb-traefik-x7k2p",
                Some("DaemonSet")
            )),
            Some(Skip::DaemonSet)
        );
        let mut m = pod("kube-system", "etcd-pi5", Some("Node"));
        m.mirror = true;
        assert_eq!(classify(&m), Some(Skip::Mirror));
        let mut done = pod("backup", "nightly-29391-abcde", Some("Job"));
        done.phase = "Succeeded".into();
        assert_eq!(classify(&done), Some(Skip::Finished));
        assert_eq!(
            classify(&pod("monitoring", "prometheus-0", Some("StatefulSet"))),
            None
        );
        assert_eq!(
            classify(&pod("default", "debug-shell", None)),
            Some(Skip::Bare),
            "a bare pod is not evicted: nothing would recreate it (issue 17, point 7)"
        );
        let mut allowed = pod("default", "debug-shell", None);
        allowed.evictable = true;
        assert_eq!(classify(&allowed), None, "unless its owner says so");
    }

    #[tokio::test]
    async fn a_pdb_refusal_is_retried_until_the_eviction_succeeds() {
        let api = FakeNodeApi::new("pi4");
        api.add_pod(pod("monitoring", "prometheus-0", Some("StatefulSet")));
        api.add_pod(pod("kube-system", "svclb-traefik-x7k2p", Some("DaemonSet")));
        api.script_eviction("monitoring", "prometheus-0", &[429, 429]);
        let r = drain(&api, "pi4", &Capabilities::full("test"), opts())
            .await
            .unwrap();
        assert!(r.complete(), "{r:?}");
        assert_eq!(r.evicted, ["monitoring/prometheus-0"]);
        assert_eq!(
            r.skipped,
            [(
                "kube-system/svclb-traefik-x7k2p".to_string(),
                Skip::DaemonSet
            )]
        );
        assert_eq!(api.eviction_attempts("monitoring", "prometheus-0"), 3);
    }

    #[tokio::test]
    async fn what_a_pdb_still_blocks_at_the_deadline_is_reported_not_forced() {
        let api = FakeNodeApi::new("pi4");
        api.add_pod(pod(
            "longhorn-system",
            "instance-manager-e-1",
            Some("ReplicaSet"),
        ));
        api.add_pod(pod("default", "web-7d9f", Some("ReplicaSet")));
        api.script_eviction("longhorn-system", "instance-manager-e-1", &[429; 100]);
        let r = drain(&api, "pi4", &Capabilities::full("test"), opts())
            .await
            .unwrap();
        assert_eq!(r.evicted, ["default/web-7d9f"]);
        assert_eq!(r.remaining.len(), 1);
        let (key, why) = &r.remaining[0];
        assert_eq!(key, "longhorn-system/instance-manager-e-1");
        assert!(
            matches!(why, RemainReason::Blocked(m) if m.contains("disruption budget")),
            "{why:?}"
        );
        let attempts = api.eviction_attempts("longhorn-system", "instance-manager-e-1");
        assert!(
            attempts >= 3,
            "retried every interval until the deadline: {attempts}"
        );
    }

    #[tokio::test]
    async fn a_refusal_seen_earlier_is_reported_even_if_the_last_round_was_cut_short() {
        let api = FakeNodeApi::new("pi4");
        api.add_pod(pod(
            "longhorn-system",
            "instance-manager-e-1",
            Some("ReplicaSet"),
        ));
        api.script_eviction("longhorn-system", "instance-manager-e-1", &[429; 1000]);
        // Round one: list, evict (429). Round two: list, then the eviction call hangs
        // until the deadline.
        api.hang_after(3);
        let opts = DrainOptions {
            deadline: Duration::from_millis(300),
            retry_interval: Duration::from_millis(10),
        };
        let r = drain(&api, "pi4", &Capabilities::full("test"), opts)
            .await
            .unwrap();
        assert_eq!(
            api.eviction_attempts("longhorn-system", "instance-manager-e-1"),
            1,
            "the second never got an answer"
        );
        assert!(
            matches!(&r.remaining[..], [(_, RemainReason::Blocked(_))]),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_api_ends_the_drain_at_the_deadline_with_a_report() {
        let api = FakeNodeApi::new("pi4");
        api.add_pod(pod("default", "web-7d9f", Some("ReplicaSet")));
        api.set_down(true);
        let t0 = std::time::Instant::now();
        let r = drain(&api, "pi4", &Capabilities::full("test"), opts())
            .await
            .unwrap();
        assert!(r.api_unavailable && !r.complete(), "{r:?}");
        assert!(t0.elapsed() < opts().deadline + Duration::from_millis(300));
    }

    #[tokio::test]
    async fn the_kubelet_identity_cannot_drain() {
        let api = FakeNodeApi::new("pi4");
        let caps = Capabilities::kubelet("k3s kubelet");
        let e = drain(&api, "pi4", &caps, opts()).await.unwrap_err();
        assert!(matches!(e, KubeError::NotPermitted { .. }));
        assert!(api.calls().is_empty(), "refused before any API call");
    }
}
