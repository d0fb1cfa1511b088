//! The other k3s servers, for the quorum rail (`policy::quorum`): who they are, whether
//! they are healthy, and the cluster lease a server's k3s restart goes under.
//!
//! Where the view comes from, best first:
//! 1. the Kubernetes API, read by the Kubernetes task each pass on a server: Nodes labelled
//!    `node-role.kubernetes.io/control-plane` (servers) and `node-role.kubernetes.io/etcd`
//!    (etcd members). A server is healthy when `Ready` is True and, for an etcd member,
//!    the `EtcdIsVoter` condition k3s's etcd leader keeps on every etcd Node (k3s
//!    pkg/etcd: True = healthy voting member; False = unhealthy, learner or not a member)
//!    is True; a k3s too old to set it is judged by `Ready` alone;
//! 2. with the API unreachable, this node's own etcd member (its metrics: peers it has
//!    talked to, peers connected now), but only with a member count learnt from the API
//!    earlier in this run, or no peer at all (a single member): a member that has never
//!    connected to a peer does not show in those metrics, so they alone can undercount;
//! 3. a sqlite (kine) server is the only server there is.
//!
//! Anything else is `Unknown`, and the rail holds restarts and reboots until it is known.

use crate::kube::api::{ConditionStatus, NodeApi, NodeView};
use crate::kube::lease::LockWant;
use crate::model::{ConditionKind, LocalEtcdView};
use crate::policy::engine::{Decision, Lease};
use crate::policy::quorum::{ServerPeer, ServerView};

use super::cluster::ClusterLink;
use super::error::{ActionError, Target};
use super::policy_loop::PolicyLoop;

pub(crate) const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
pub(crate) const ETCD_LABEL: &str = "node-role.kubernetes.io/etcd";
pub(crate) const ETCD_VOTER_CONDITION: &str = "EtcdIsVoter";
/// An API view older than this is not used: the Kubernetes task lists every
/// `sync_interval` (15 s), so four missed passes mean the API is away.
const API_VIEW_FRESH_SECS: u64 = 60;
/// The etcd detector scrapes every 30 s; four missed scrapes and its view is stale.
const LOCAL_VIEW_FRESH_SECS: u64 = 120;
/// A restart's lease is released once the node is back (k3s active, Node Ready), not
/// sooner than this after the restart: k3s takes most of a minute to start on a Pi.
const RESTART_LEASE_MIN_SECS: u64 = 60;

/// What this node is, set once at the daemon's wiring.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServerFacts {
    /// `/var/lib/rancher/k3s/server` exists.
    pub(crate) is_server: bool,
    /// Its etcd data dir exists: this node is an etcd member.
    pub(crate) self_etcd: bool,
    /// kine's sqlite file exists and no etcd: a single server by construction.
    pub(crate) sqlite: bool,
    /// This node's name, to leave it out of the peers.
    pub(crate) node: String,
    pub(crate) local_etcd: Option<LocalEtcdView>,
}

#[derive(Default)]
pub(crate) struct ServerSide {
    pub(crate) facts: ServerFacts,
    /// (unix time, peers or why they could not be listed) from the last API pass.
    api: Option<(u64, Result<Vec<ServerPeer>, String>)>,
    /// etcd members (this node included) in the last good API view of this run.
    api_members: Option<usize>,
    /// When a restart taken under the cluster lease happened (unix time).
    restart_lease_since: Option<u64>,
}

/// The peers in two label-selected Node lists, this node left out.
pub(crate) fn peers_from_nodes(
    servers: &[NodeView],
    etcd: &[NodeView],
    me: &str,
) -> Vec<ServerPeer> {
    let mut names: Vec<&NodeView> = servers.iter().chain(etcd).collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    names.dedup_by(|a, b| a.name == b.name);
    names
        .into_iter()
        .filter(|n| n.name != me)
        .map(|n| {
            let is_etcd = etcd.iter().any(|e| e.name == n.name);
            let cond = |t: &str| n.conditions.iter().find(|c| c.type_ == t);
            let mut why = Vec::new();
            match cond("Ready") {
                Some(c) if c.status == ConditionStatus::True => {}
                Some(c) => why.push(format!("Ready {}", c.status.as_str())),
                None => why.push("no Ready condition".into()),
            }
            if is_etcd
                && let Some(c) = cond(ETCD_VOTER_CONDITION)
                && c.status != ConditionStatus::True
            {
                why.push(format!(
                    "{ETCD_VOTER_CONDITION} {} ({})",
                    c.status.as_str(),
                    c.reason
                ));
            }
            ServerPeer {
                name: n.name.clone(),
                etcd: is_etcd,
                healthy: why.is_empty(),
                why: why.join(", "),
            }
        })
        .collect()
}

/// Lists the servers through the API (two label-selected lists).
pub(crate) async fn list_peers<A: NodeApi>(api: &A, me: &str) -> Result<Vec<ServerPeer>, String> {
    let servers = api
        .list_nodes(CONTROL_PLANE_LABEL)
        .await
        .map_err(|e| e.to_string())?;
    let etcd = api
        .list_nodes(ETCD_LABEL)
        .await
        .map_err(|e| e.to_string())?;
    Ok(peers_from_nodes(&servers, &etcd, me))
}

/// The view from what is known, at `now` (unix seconds). Pure.
pub(crate) fn view(side: &ServerSide, now: u64) -> ServerView {
    let f = &side.facts;
    if !f.is_server {
        return ServerView::NotAServer;
    }
    if let Some((at, Ok(peers))) = &side.api
        && now.saturating_sub(*at) <= API_VIEW_FRESH_SECS
    {
        return ServerView::Known {
            self_etcd: f.self_etcd,
            peers: peers.clone(),
        };
    }
    if f.self_etcd
        && let Some(l) = f.local_etcd.as_ref().and_then(LocalEtcdView::get)
        && l.answering
        && now.saturating_sub(l.at_unix) <= LOCAL_VIEW_FRESH_SECS
    {
        let seen = 1 + l.peers_known as usize;
        let members = match side.api_members {
            Some(m) => m.max(seen),
            None if l.peers_known == 0 => 1,
            None => return ServerView::Unknown,
        };
        let active = (l.peers_active as usize).min(members - 1);
        let peers = (0..members - 1)
            .map(|i| ServerPeer {
                name: format!("etcd peer {}", i + 1),
                etcd: true,
                healthy: i < active,
                why: if i < active {
                    String::new()
                } else {
                    "not connected to this member".into()
                },
            })
            .collect();
        return ServerView::Known {
            self_etcd: true,
            peers,
        };
    }
    if f.sqlite && !f.self_etcd {
        return ServerView::Known {
            self_etcd: false,
            peers: Vec::new(),
        };
    }
    ServerView::Unknown
}

impl ClusterLink {
    pub(crate) fn set_server_facts(&self, facts: ServerFacts) {
        self.servers().facts = facts;
    }

    /// Whether the Kubernetes task should list the servers (only a server needs them).
    pub(crate) fn wants_servers(&self) -> Option<String> {
        let s = self.servers();
        s.facts.is_server.then(|| s.facts.node.clone())
    }

    /// The Kubernetes task's listing.
    pub(crate) fn note_servers(&self, now: u64, r: Result<Vec<ServerPeer>, String>) {
        let mut s = self.servers();
        if let Ok(peers) = &r {
            s.api_members =
                Some(usize::from(s.facts.self_etcd) + peers.iter().filter(|p| p.etcd).count());
        }
        s.api = Some((now, r));
    }

    pub(crate) fn server_view(&self, now: u64) -> ServerView {
        view(&self.servers(), now)
    }
}

impl PolicyLoop {
    pub(super) fn server_view(&self, now: u64) -> ServerView {
        self.act.cluster.server_view(now)
    }

    /// `restart_k3s`, under the cluster lease when the restart takes down one of several
    /// servers, or renews certificates (every node's were issued the same day: without
    /// the lease they would all restart in the same window). Never waits for the lease in
    /// the tick: the engine's `lease_unavailable` rail holds a server's restart until the
    /// lease is granted; a rotation restart without it asks for it and is retried after
    /// the cooldown (an unavailable, retryable error).
    pub(super) fn restart_k3s(
        &mut self,
        d: &Decision,
        beat: &dyn Fn(),
    ) -> Result<String, ActionError> {
        let now = self.clock.unix_secs();
        let view = self.server_view(now);
        let several = matches!(&view, ServerView::Known { peers, .. } if !peers.is_empty());
        let rotation = d.kind == Some(ConditionKind::K3sCertificateRotationDue);
        let cluster = self.act.cluster.clone();
        let mut note = String::new();
        if several || rotation {
            let api_up = cluster.readings().api_up == Some(true);
            match cluster.lease(self.cfg.reboot_lease).0 {
                Lease::Held => {
                    cluster.servers().restart_lease_since = Some(now);
                    note = format!(
                        "; holding the cluster lease ({})",
                        crate::policy::quorum::describe(&view)
                    );
                }
                Lease::Pending => {
                    cluster.want_lock(LockWant::Hold);
                    return Err(ActionError::unavailable(
                        Target::Cluster,
                        format!(
                            "the cluster lease is not held yet ({}); asked for it, not restarting k3s now",
                            cluster
                                .readings()
                                .last_error
                                .unwrap_or_else(|| "another node may hold it".into())
                        ),
                    ));
                }
                Lease::NotNeeded if rotation && !api_up => {
                    return Err(ActionError::unavailable(
                        Target::Cluster,
                        "the Kubernetes API is unreachable, so the cluster lease cannot be taken: no restart for certificate rotation now (it must go one node at a time)",
                    ));
                }
                Lease::NotNeeded => {
                    note = "; restarting without the cluster lease (kubernetes.reboot_lease, or the API is unreachable)".into();
                }
            }
        }
        let r = self.execute_bounded(d, beat);
        if r.is_err() && cluster.servers().restart_lease_since.take().is_some() {
            cluster.want_lock(LockWant::Release);
        }
        r.map(|ok| format!("{ok}{note}"))
    }

    /// Gives back a restart's lease once the node is back: k3s active, the API answering
    /// and the Node Ready. The lease expires by itself if the node never comes back.
    pub(super) fn release_restart_lease(&self, now: u64) {
        let cluster = &self.act.cluster;
        let Some(since) = cluster.servers().restart_lease_since else {
            return;
        };
        if now.saturating_sub(since) < RESTART_LEASE_MIN_SECS {
            return;
        }
        let r = cluster.readings();
        let k3s_up = self.cfg.k3s_unit.as_ref().is_none_or(|u| {
            self.act.services.active_state(u) == Ok(super::services::UnitState::Active)
        });
        if k3s_up && r.api_up == Some(true) && r.node_ready == Some(true) {
            cluster.servers().restart_lease_since = None;
            cluster.want_lock(LockWant::Release);
            log::info!("k3s is back after the restart: cluster lease released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::api::NodeCondition;
    use crate::model::LocalEtcd;
    use std::collections::BTreeMap;

    fn node(name: &str, ready: &str, voter: Option<(&str, &str)>) -> NodeView {
        let c = |t: &str, s: &str, r: &str| NodeCondition {
            type_: t.into(),
            status: ConditionStatus::parse(s),
            reason: r.into(),
            message: String::new(),
            last_transition_time: None,
            last_heartbeat_time: None,
        };
        let mut conditions = vec![c("Ready", ready, "KubeletReady")];
        if let Some((s, r)) = voter {
            conditions.push(c(ETCD_VOTER_CONDITION, s, r));
        }
        NodeView {
            name: name.into(),
            resource_version: "1".into(),
            unschedulable: false,
            annotations: BTreeMap::new(),
            conditions,
        }
    }

    #[test]
    fn peers_are_healthy_when_ready_and_a_voting_etcd_member() {
        let servers = [
            node("pi1", "True", Some(("True", "MemberNotLearner"))),
            node("pi2", "True", Some(("False", "Unhealthy"))),
            node("pi3", "Unknown", Some(("True", "MemberNotLearner"))),
            node("pi4", "True", None),
        ];
        let etcd = [servers[0].clone(), servers[1].clone(), servers[2].clone()];
        let p = peers_from_nodes(&servers, &etcd, "pi1");
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].name.as_str(), p[0].etcd, p[0].healthy),
            ("pi2", true, false)
        );
        assert!(
            p[0].why.contains("EtcdIsVoter False (Unhealthy)"),
            "{:?}",
            p[0]
        );
        assert_eq!((p[1].name.as_str(), p[1].healthy), ("pi3", false));
        assert!(p[1].why.contains("Ready Unknown"));
        assert_eq!(
            (p[2].name.as_str(), p[2].etcd, p[2].healthy),
            ("pi4", false, true)
        );
    }

    fn side(facts: ServerFacts) -> ServerSide {
        ServerSide {
            facts,
            ..Default::default()
        }
    }

    #[test]
    fn the_view_prefers_a_fresh_api_listing_then_the_local_member_then_unknown() {
        let local = LocalEtcdView::default();
        let mut s = side(ServerFacts {
            is_server: true,
            self_etcd: true,
            node: "pi1".into(),
            local_etcd: Some(local.clone()),
            ..Default::default()
        });
        assert_eq!(view(&s, 1000), ServerView::Unknown);
        let peers = vec![
            ServerPeer {
                name: "pi2".into(),
                etcd: true,
                healthy: true,
                why: String::new(),
            },
            ServerPeer {
                name: "pi3".into(),
                etcd: true,
                healthy: true,
                why: String::new(),
            },
        ];
        s.api = Some((1000, Ok(peers.clone())));
        s.api_members = Some(3);
        assert_eq!(
            view(&s, 1030),
            ServerView::Known {
                self_etcd: true,
                peers
            }
        );
        // The API went away; the local member sees one of its two peers.
        local.set(LocalEtcd {
            at_unix: 1100,
            answering: true,
            peers_known: 1,
            peers_active: 1,
        });
        let v = view(&s, 1120);
        let ServerView::Known { peers, .. } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(peers.len(), 2, "the member count from the API is kept");
        assert_eq!(peers.iter().filter(|p| p.healthy).count(), 1);
        // Local view stale too: unknown.
        assert_eq!(view(&s, 1300), ServerView::Unknown);
    }

    #[test]
    fn without_an_api_count_only_a_lone_member_or_sqlite_is_known() {
        let local = LocalEtcdView::default();
        let s = side(ServerFacts {
            is_server: true,
            self_etcd: true,
            local_etcd: Some(local.clone()),
            ..Default::default()
        });
        local.set(LocalEtcd {
            at_unix: 10,
            answering: true,
            peers_known: 2,
            peers_active: 2,
        });
        assert_eq!(view(&s, 20), ServerView::Unknown, "could undercount");
        local.set(LocalEtcd {
            at_unix: 10,
            answering: true,
            peers_known: 0,
            peers_active: 0,
        });
        assert_eq!(
            view(&s, 20),
            ServerView::Known {
                self_etcd: true,
                peers: vec![]
            }
        );
        let sqlite = side(ServerFacts {
            is_server: true,
            sqlite: true,
            ..Default::default()
        });
        assert_eq!(
            view(&sqlite, 20),
            ServerView::Known {
                self_etcd: false,
                peers: vec![]
            }
        );
        let agent = side(ServerFacts::default());
        assert_eq!(view(&agent, 20), ServerView::NotAServer);
    }
}
