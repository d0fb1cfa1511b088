//! The optional response to `MemoryPressure`: evict the BestEffort pod using the most
//! memory, through the Eviction API so PodDisruptionBudgets are honoured.
//!
//! BestEffort pods asked for no memory, so they are the first the kubelet itself would
//! evict; doing it while pressure is still a stall, rather than waiting for the kubelet's
//! hard threshold or the kernel's OOM killer, keeps the pods that did ask for memory
//! alive. nodemedic never kills a process: the pod is evicted gracefully and its
//! controller may start it elsewhere (the node is cordoned by then).
//!
//! The ranking is pure ([`candidates`]): pods are matched to their cgroup's working set by
//! UID, and only pods that can move and that use at least the configured minimum count.
//! One call evicts at most one pod; a pod a PDB protects (429) or that is already gone
//! (404) passes the turn to the next largest, at most [`MAX_ATTEMPTS`] times.

use super::api::{Capabilities, EvictOutcome, KubeError, NodeApi, PodView};
use super::drain::{Skip, classify};
use crate::model::{PodUsage, mib};

/// Each refused attempt is one API call under memory pressure; more than a few
/// PDB-protected BestEffort pods on one small node is unusual, and the action's cooldown
/// brings another turn.
pub(crate) const MAX_ATTEMPTS: usize = 5;

pub(crate) const BEST_EFFORT: &str = "BestEffort";

/// A pod that may be evicted, with its working set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) pod: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) working_set: u64,
}

/// What one call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EvictResult {
    /// The API accepted the eviction of `pod`. `passed` lists larger pods that a PDB
    /// protected or that were already gone, with why.
    Evicted {
        pod: String,
        working_set: u64,
        passed: Vec<(String, String)>,
    },
    /// Every candidate tried was refused by a PDB or was gone.
    NoneEvicted { passed: Vec<(String, String)> },
    /// Nothing worth evicting: why.
    NoCandidate(String),
}

impl EvictResult {
    /// The metric's `result` label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            EvictResult::Evicted { .. } => "evicted",
            EvictResult::NoneEvicted { .. } => "blocked",
            EvictResult::NoCandidate(_) => "no_candidate",
        }
    }

    pub(crate) fn describe(&self) -> String {
        let passed = |p: &[(String, String)]| {
            p.iter()
                .map(|(pod, why)| format!("{pod} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            EvictResult::Evicted {
                pod,
                working_set,
                passed: p,
            } => {
                let mut s = format!(
                    "evicted BestEffort pod {pod}, the largest that could move ({} working set)",
                    mib(*working_set)
                );
                if !p.is_empty() {
                    s.push_str(&format!("; passed over: {}", passed(p)));
                }
                s
            }
            EvictResult::NoneEvicted { passed: p } => {
                format!("no BestEffort pod could be evicted: {}", passed(p))
            }
            EvictResult::NoCandidate(why) => format!("nothing evicted: {why}"),
        }
    }
}

/// BestEffort pods that can move and use at least `min_bytes`, largest first (ties by
/// name, so the choice is deterministic). Err says why there is none.
pub(crate) fn candidates(
    pods: &[PodView],
    usage: &[PodUsage],
    min_bytes: u64,
) -> Result<Vec<Candidate>, String> {
    let best_effort: Vec<&PodView> = pods
        .iter()
        .filter(|p| {
            p.qos_class == BEST_EFFORT
                && !p.terminating
                // One pod under memory pressure, chosen and measured: a bare one too, as
                // before (drain, which moves everything, leaves bare pods alone).
                && matches!(classify(p), None | Some(Skip::Bare))
        })
        .collect();
    if best_effort.is_empty() {
        return Err("no movable BestEffort pod runs on this node (DaemonSet, static and finished pods are never evicted)".into());
    }
    let mut measured: Vec<Candidate> = best_effort
        .iter()
        .filter_map(|p| {
            let u = usage.iter().find(|u| !p.uid.is_empty() && u.uid == p.uid)?;
            Some(Candidate {
                pod: p.key(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                working_set: u.working_set,
            })
        })
        .collect();
    if measured.is_empty() {
        return Err(format!(
            "{} BestEffort pod(s) on this node, but none has a memory cgroup under the BestEffort QoS group",
            best_effort.len()
        ));
    }
    measured.sort_by(|a, b| b.working_set.cmp(&a.working_set).then(a.pod.cmp(&b.pod)));
    let top = measured[0].clone();
    measured.retain(|c| c.working_set >= min_bytes);
    if measured.is_empty() {
        return Err(format!(
            "the largest BestEffort pod, {}, uses {}, under the {} minimum (memory.evict_min_working_set_mib): evicting it would not relieve the pressure",
            top.pod,
            mib(top.working_set),
            mib(min_bytes)
        ));
    }
    Ok(measured)
}

/// Lists this node's pods and evicts the largest BestEffort one that may go. Err only when
/// the API could not be asked (unreachable, forbidden).
pub(crate) async fn evict_largest<A: NodeApi>(
    api: &A,
    node: &str,
    caps: &Capabilities,
    usage: &[PodUsage],
    min_bytes: u64,
) -> Result<EvictResult, KubeError> {
    if !caps.evict {
        return Err(KubeError::NotPermitted {
            action: "evicting a BestEffort pod",
            identity: caps.identity.clone(),
        });
    }
    let pods = api.list_pods_on_node(node).await?;
    let list = match candidates(&pods, usage, min_bytes) {
        Ok(l) => l,
        Err(why) => return Ok(EvictResult::NoCandidate(why)),
    };
    let mut passed = Vec::new();
    for c in list.into_iter().take(MAX_ATTEMPTS) {
        match api.evict_pod(&c.namespace, &c.name).await? {
            EvictOutcome::Evicted => {
                return Ok(EvictResult::Evicted {
                    pod: c.pod,
                    working_set: c.working_set,
                    passed,
                });
            }
            EvictOutcome::Blocked { message } => {
                passed.push((c.pod, format!("PodDisruptionBudget: {message}")))
            }
            EvictOutcome::Gone => passed.push((c.pod, "already gone".into())),
        }
    }
    Ok(EvictResult::NoneEvicted { passed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::fake::{ApiCall, FakeNodeApi};

    const MIB: u64 = 1 << 20;

    fn pod(name: &str, qos: &str, owner: Option<&str>) -> PodView {
        PodView {
            namespace: "apps".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            qos_class: qos.into(),
            controller_kind: owner.map(String::from),
            mirror: false,
            phase: "Running".into(),
            terminating: false,
            evictable: false,
        }
    }

    fn used(name: &str, mib: u64) -> PodUsage {
        PodUsage {
            uid: format!("uid-{name}"),
            working_set: mib * MIB,
        }
    }

    #[test]
    fn only_movable_besteffort_pods_with_enough_memory_rank_largest_first() {
        let mut finished = pod("batch-done", BEST_EFFORT, Some("Job"));
        finished.phase = "Succeeded".into();
        let mut leaving = pod("leaving", BEST_EFFORT, Some("ReplicaSet"));
        leaving.terminating = true;
        let pods = vec![
            pod("small", BEST_EFFORT, Some("ReplicaSet")),
            pod("prometheus", "Burstable", Some("StatefulSet")),
            pod("scraper", BEST_EFFORT, Some("ReplicaSet")),
            pod("svclb", BEST_EFFORT, Some("DaemonSet")),
            pod("tie-b", BEST_EFFORT, None),
            pod("tie-a", BEST_EFFORT, None),
            finished,
            leaving,
        ];
        let usage = vec![
            used("small", 8),
            used("prometheus", 700),
            used("scraper", 300),
            used("svclb", 900),
            used("tie-a", 64),
            used("tie-b", 64),
            used("batch-done", 500),
            used("leaving", 800),
        ];
        let got: Vec<String> = candidates(&pods, &usage, 32 * MIB)
            .unwrap()
            .into_iter()
            .map(|c| c.pod)
            .collect();
        assert_eq!(got, ["apps/scraper", "apps/tie-a", "apps/tie-b"]);
    }

    #[test]
    fn no_candidate_says_why() {
        let burstable = vec![pod("db", "Burstable", None)];
        let e = candidates(&burstable, &[used("db", 500)], 0).unwrap_err();
        assert!(e.contains("no movable BestEffort pod"), "{e}");

        let unmeasured = vec![pod("web", BEST_EFFORT, None)];
        let e = candidates(&unmeasured, &[used("other", 500)], 0).unwrap_err();
        assert!(e.contains("none has a memory cgroup"), "{e}");

        let small = vec![pod("web", BEST_EFFORT, None)];
        let e = candidates(&small, &[used("web", 10)], 32 * MIB).unwrap_err();
        assert!(
            e.contains("apps/web") && e.contains("10.0 MiB") && e.contains("32.0 MiB"),
            "{e}"
        );
    }

    fn api_with(pods: &[PodView]) -> FakeNodeApi {
        let api = FakeNodeApi::new("pi1");
        for p in pods {
            api.add_pod(p.clone());
        }
        api
    }

    #[tokio::test]
    async fn the_largest_besteffort_pod_is_evicted_and_only_it() {
        let pods = [
            pod("a", BEST_EFFORT, None),
            pod("b", BEST_EFFORT, None),
            pod("c", BEST_EFFORT, None),
        ];
        let api = api_with(&pods);
        let usage = [used("a", 100), used("b", 300), used("c", 200)];
        let r = evict_largest(&api, "pi1", &Capabilities::full("sa"), &usage, 0)
            .await
            .unwrap();
        assert_eq!(
            r,
            EvictResult::Evicted {
                pod: "apps/b".into(),
                working_set: 300 * MIB,
                passed: vec![]
            }
        );
        let evictions: Vec<ApiCall> = api
            .calls()
            .into_iter()
            .filter(|c| matches!(c, ApiCall::Evict(_)))
            .collect();
        assert_eq!(evictions, [ApiCall::Evict("apps/b".into())]);
        assert!(r.describe().contains("apps/b") && r.describe().contains("300.0 MiB"));
    }

    #[tokio::test]
    async fn a_pdb_refusal_passes_the_turn_to_the_next_largest() {
        let pods = [
            pod("big", BEST_EFFORT, None),
            pod("next", BEST_EFFORT, None),
        ];
        let api = api_with(&pods);
        api.script_eviction("apps", "big", &[429]);
        let usage = [used("big", 400), used("next", 100)];
        let r = evict_largest(&api, "pi1", &Capabilities::full("sa"), &usage, 0)
            .await
            .unwrap();
        match &r {
            EvictResult::Evicted { pod, passed, .. } => {
                assert_eq!(pod, "apps/next");
                assert_eq!(passed.len(), 1);
                assert!(passed[0].0 == "apps/big" && passed[0].1.contains("disruption budget"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            r.describe().contains("passed over: apps/big"),
            "{}",
            r.describe()
        );
    }

    #[tokio::test]
    async fn when_every_candidate_is_protected_nothing_is_forced() {
        let pods: Vec<PodView> = (0..7)
            .map(|i| pod(&format!("p{i}"), BEST_EFFORT, None))
            .collect();
        let api = api_with(&pods);
        let usage: Vec<PodUsage> = (0..7).map(|i| used(&format!("p{i}"), 100 + i)).collect();
        for p in &pods {
            api.script_eviction(&p.namespace, &p.name, &[429]);
        }
        let r = evict_largest(&api, "pi1", &Capabilities::full("sa"), &usage, 0)
            .await
            .unwrap();
        let EvictResult::NoneEvicted { passed } = &r else {
            panic!("{r:?}")
        };
        assert_eq!(passed.len(), MAX_ATTEMPTS, "bounded attempts");
        assert_eq!(passed[0].0, "apps/p6", "largest first");
        assert_eq!(r.label(), "blocked");
        assert_eq!(api.pods().len(), 7, "no pod removed");
    }

    #[tokio::test]
    async fn the_kubelet_identity_may_not_evict_and_the_api_is_not_asked() {
        let api = api_with(&[pod("a", BEST_EFFORT, None)]);
        let e = evict_largest(
            &api,
            "pi1",
            &Capabilities::kubelet("system:node:pi1"),
            &[used("a", 100)],
            0,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("system:node:pi1"), "{e}");
        assert!(api.calls().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_api_is_an_error_not_a_silent_no_op() {
        let api = api_with(&[pod("a", BEST_EFFORT, None)]);
        api.set_down(true);
        let e = evict_largest(&api, "pi1", &Capabilities::full("sa"), &[used("a", 100)], 0)
            .await
            .unwrap_err();
        assert!(e.api_unavailable(), "{e}");
    }
}
