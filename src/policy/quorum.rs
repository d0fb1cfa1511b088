//! The quorum rail: a k3s server never restarts k3s or reboots in a way that costs the
//! cluster its etcd quorum, and never while another server is down.
//!
//! etcd needs a majority of its members (`members / 2 + 1`) to write. On the usual small
//! cluster of three servers, one member down is fine and two is an outage; on two servers,
//! any one down is an outage (which is why etcd's docs ask for an odd number). A restart or
//! reboot takes this member down for a minute or more, so, for an action that would do so
//! (`restart_k3s`, `reboot`) on a server:
//!
//! | rule | hold |
//! |---|---|
//! | the other servers cannot be seen (API unreachable and no fresh view from the local etcd) | `quorum_unknown` |
//! | another server is down or unhealthy (a reboot may go ahead when `[servers] allow_reboot_with_peer_down`) | `quorum` |
//! | the healthy other members would be fewer than a majority (two members: always) | `quorum` |
//! | a restart while another node holds the cluster lease | `lease_unavailable` |
//!
//! A single server (no other server, sqlite or one etcd member) has no quorum to lose:
//! its restarts and reboots follow the ladder. Agents are not members: the rail does not
//! apply to them. The holds are transient: the step waits, audited once, and goes ahead as
//! soon as the peers are healthy again. The view is filled by the cluster side
//! (`remedy::cluster`): other servers from the Kubernetes API (label
//! `node-role.kubernetes.io/control-plane` or `etcd`; healthy = `Ready` and, for etcd
//! members, k3s's own `EtcdIsVoter` condition True), or, with the API unreachable, from the
//! local etcd's peer connections.

use super::engine::{Hold, Lease};
use crate::model::Remedy;

/// Another server as the cluster side sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerPeer {
    pub(crate) name: String,
    /// An etcd member.
    pub(crate) etcd: bool,
    pub(crate) healthy: bool,
    /// Why it is not healthy, for the audit.
    pub(crate) why: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum ServerView {
    /// An agent (or no k3s): the rule does not apply.
    #[default]
    NotAServer,
    /// A server whose peers cannot be seen right now.
    Unknown,
    /// A server, whether it is an etcd member itself, and every other server.
    Known {
        self_etcd: bool,
        peers: Vec<ServerPeer>,
    },
}

impl ServerView {
    /// (etcd members including this one, healthy other members).
    pub(crate) fn members(&self) -> Option<(usize, usize)> {
        match self {
            ServerView::Known { self_etcd, peers } => {
                let m = usize::from(*self_etcd) + peers.iter().filter(|p| p.etcd).count();
                let h = peers.iter().filter(|p| p.etcd && p.healthy).count();
                Some((m, h))
            }
            _ => None,
        }
    }
}

pub(crate) fn majority(members: usize) -> usize {
    members / 2 + 1
}

/// The hold for `action` on this node, if the rule forbids it now.
pub(crate) fn hold(
    view: &ServerView,
    lease: Lease,
    action: Remedy,
    allow_reboot_with_peer_down: bool,
) -> Option<Hold> {
    if !matches!(action, Remedy::RestartK3s | Remedy::Reboot) {
        return None;
    }
    let reboot_override = action == Remedy::Reboot && allow_reboot_with_peer_down;
    let (self_etcd, peers) = match view {
        ServerView::NotAServer => return None,
        ServerView::Unknown if reboot_override => return None,
        ServerView::Unknown => return Some(Hold::QuorumUnknown),
        ServerView::Known { self_etcd, peers } => (*self_etcd, peers),
    };
    if peers.is_empty() {
        return None;
    }
    if !reboot_override {
        if peers.iter().any(|p| !p.healthy) {
            return Some(Hold::Quorum);
        }
        let (m, healthy_others) = view.members().unwrap_or((0, 0));
        if self_etcd && healthy_others < majority(m) {
            return Some(Hold::Quorum);
        }
    }
    // One server at a time: a restart takes the lease a reboot takes (the engine's
    // lease rail covers reboots); not held yet means asked for and waited on.
    if action == Remedy::RestartK3s && lease == Lease::Pending {
        return Some(Hold::LeaseUnavailable);
    }
    None
}

/// The audit's words for a view, e.g. "3 etcd members, 1 other unhealthy: pi2 (NotReady)".
pub(crate) fn describe(view: &ServerView) -> String {
    match view {
        ServerView::NotAServer => "not a server".into(),
        ServerView::Unknown => {
            "the other servers cannot be seen (Kubernetes API unreachable, local etcd silent)"
                .into()
        }
        ServerView::Known { peers, .. } if peers.is_empty() => "the only server".into(),
        ServerView::Known { peers, .. } => {
            let (m, h) = view.members().unwrap_or((0, 0));
            let bad: Vec<String> = peers
                .iter()
                .filter(|p| !p.healthy)
                .map(|p| format!("{} ({})", p.name, p.why))
                .collect();
            format!(
                "{m} etcd member(s), {h} other(s) healthy, majority {}{}",
                majority(m),
                if bad.is_empty() {
                    String::new()
                } else {
                    format!("; unhealthy: {}", bad.join(", "))
                }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::clock::At;
    use super::super::engine::{Decision, Inputs, PolicyState, Verdict, decide};
    use super::super::policy_config;
    use super::*;
    use crate::config::{Config, RunMode};
    use crate::model::ConditionKind;
    use proptest::prelude::*;
    use std::time::Duration;

    fn peer(name: &str, etcd: bool, healthy: bool) -> ServerPeer {
        ServerPeer {
            name: name.into(),
            etcd,
            healthy,
            why: if healthy {
                String::new()
            } else {
                "NotReady".into()
            },
        }
    }

    fn three(healthy: [bool; 2]) -> ServerView {
        ServerView::Known {
            self_etcd: true,
            peers: vec![peer("pi2", true, healthy[0]), peer("pi3", true, healthy[1])],
        }
    }

    const R: Remedy = Remedy::RestartK3s;
    const B: Remedy = Remedy::Reboot;

    #[test]
    fn three_servers_all_healthy_may_restart_and_reboot_one_at_a_time() {
        let v = three([true, true]);
        assert_eq!(hold(&v, Lease::Held, R, false), None);
        assert_eq!(hold(&v, Lease::Held, B, false), None);
        assert_eq!(
            hold(&v, Lease::Pending, R, false),
            Some(Hold::LeaseUnavailable)
        );
        assert_eq!(hold(&v, Lease::Held, Remedy::Cordon, false), None);
    }

    #[test]
    fn with_another_server_down_nothing_goes_down_unless_the_operator_opts_in_to_the_reboot() {
        let v = three([true, false]);
        assert_eq!(hold(&v, Lease::Held, R, false), Some(Hold::Quorum));
        assert_eq!(hold(&v, Lease::Held, B, false), Some(Hold::Quorum));
        assert_eq!(hold(&v, Lease::Held, B, true), None);
        assert_eq!(
            hold(&v, Lease::Held, R, true),
            Some(Hold::Quorum),
            "the opt-in is for reboots"
        );
        assert!(describe(&v).contains("pi3 (NotReady)"), "{}", describe(&v));
    }

    #[test]
    fn two_members_lose_quorum_with_either_down_so_neither_restarts() {
        let v = ServerView::Known {
            self_etcd: true,
            peers: vec![peer("pi2", true, true)],
        };
        assert_eq!(hold(&v, Lease::Held, R, false), Some(Hold::Quorum));
        assert_eq!(hold(&v, Lease::Held, B, false), Some(Hold::Quorum));
    }

    #[test]
    fn a_single_server_and_an_agent_follow_their_ladders() {
        let single = ServerView::Known {
            self_etcd: true,
            peers: vec![],
        };
        assert_eq!(hold(&single, Lease::NotNeeded, R, false), None);
        assert_eq!(hold(&single, Lease::Pending, R, false), None);
        assert_eq!(hold(&ServerView::NotAServer, Lease::Held, B, false), None);
    }

    #[test]
    fn an_unseen_cluster_holds_until_it_can_be_seen() {
        assert_eq!(
            hold(&ServerView::Unknown, Lease::NotNeeded, R, false),
            Some(Hold::QuorumUnknown)
        );
        assert_eq!(
            hold(&ServerView::Unknown, Lease::NotNeeded, B, false),
            Some(Hold::QuorumUnknown)
        );
        assert_eq!(hold(&ServerView::Unknown, Lease::NotNeeded, B, true), None);
    }

    #[test]
    fn servers_without_etcd_still_never_go_down_two_at_a_time() {
        // Two servers on an external datastore: no etcd majority, but one is down.
        let v = ServerView::Known {
            self_etcd: false,
            peers: vec![peer("pi2", false, false)],
        };
        assert_eq!(hold(&v, Lease::Held, R, false), Some(Hold::Quorum));
        let v = ServerView::Known {
            self_etcd: false,
            peers: vec![peer("pi2", false, true)],
        };
        assert_eq!(hold(&v, Lease::Held, R, false), None);
    }

    #[test]
    fn the_engine_audits_a_quorum_hold_once_and_restarts_when_the_peer_is_back() {
        let c = policy_config(&Config {
            mode: RunMode::Act,
            ..Default::default()
        });
        let mut st = PolicyState::default();
        let t0 = 1_800_000_000;
        let key = (ConditionKind::EtcdNearQuota, String::new());
        let at = |t: u64, servers: ServerView| Inputs {
            now: At::new(t, t),
            since_boot: Duration::from_secs(7200),
            held: vec![key.clone()],
            paused: false,
            clock_sane: true,
            lease: Lease::Held,
            restarting: false,
            cluster: None,
            servers,
        };
        // The episode begins at t0; its restart step is due 5 minutes later.
        assert!(decide(&c, &mut st, &at(t0, three([true, true]))).is_empty());
        let mut holds = Vec::new();
        for k in 0..10 {
            for d in decide(&c, &mut st, &at(t0 + 300 + k * 30, three([true, false]))) {
                holds.push(d.verdict);
            }
        }
        assert_eq!(holds, vec![Verdict::Held(Hold::Quorum)], "recorded once");
        let ds = decide(&c, &mut st, &at(t0 + 700, three([true, true])));
        assert_eq!(ds.len(), 1);
        assert_eq!(
            (ds[0].action, ds[0].verdict),
            (Remedy::RestartK3s, Verdict::Go)
        );
    }

    fn arb_view() -> impl Strategy<Value = ServerView> {
        prop_oneof![
            1 => Just(ServerView::NotAServer),
            1 => Just(ServerView::Unknown),
            8 => (any::<bool>(), prop::collection::vec((any::<bool>(), prop::bool::weighted(0.7)), 0..7))
                .prop_map(|(self_etcd, ps)| ServerView::Known {
                    self_etcd,
                    peers: ps
                        .into_iter()
                        .enumerate()
                        .map(|(i, (etcd, healthy))| peer(&format!("s{i}"), etcd, healthy))
                        .collect(),
                }),
        ]
    }

    /// Healthy etcd members left while this node is down, and whether every other server
    /// is up: what a restart or a reboot started now would leave.
    fn after_going_down(view: &ServerView) -> Option<(usize, usize, bool)> {
        match view {
            ServerView::Known { peers, .. } => {
                let (m, h) = view.members()?;
                Some((m, h, peers.iter().all(|p| p.healthy)))
            }
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The safety rule as the engine applies it, over random cluster states and ladders
        /// with restarts and reboots due: with the default config, nodemedic never starts a
        /// restart or a reboot of a server that would leave fewer than a majority of etcd
        /// members healthy (a single member excepted: it has no quorum to keep), never one
        /// while another server is down (never two servers down), and never one blind.
        #[test]
        fn never_a_restart_or_reboot_that_loses_etcd_quorum_or_takes_two_servers_down(
            views in prop::collection::vec(arb_view(), 1..30),
            leases in prop::collection::vec(0usize..3, 30),
            kinds in prop::collection::vec(0usize..3, 30),
            dry in any::<bool>(),
        ) {
            let mut c = policy_config(&Config { mode: RunMode::Act, ..Default::default() });
            c.rules.get_mut(&Remedy::Reboot).unwrap().dry_run = dry;
            for r in c.rules.values_mut() {
                r.max_per_day = 1000;
            }
            c.cooldown = Duration::ZERO;
            c.reboot_min_interval = Duration::ZERO;
            let step = |s: &str| crate::config::ladder::Step::parse(s).unwrap();
            c.ladders.kernel_rcu_stall = vec![step("restart_k3s@0s"), step("reboot@0s")];
            c.ladders.kernel_hard_lockup = vec![step("reboot@0s")];
            let mut st = PolicyState::default();
            let t0 = 1_800_000_000;
            for (i, view) in views.iter().enumerate() {
                let kind = [ConditionKind::KernelRcuStall, ConditionKind::KernelHardLockup, ConditionKind::EtcdNearQuota][kinds[i]];
                let inp = Inputs {
                    now: At::new(t0 + i as u64 * 60, t0 + i as u64 * 60),
                    since_boot: Duration::from_secs(7200),
                    // A fresh episode each tick, so its first (@0s) steps are due now.
                    held: vec![(kind, format!("e{i}"))],
                    paused: false,
                    clock_sane: true,
                    lease: [Lease::Held, Lease::Pending, Lease::NotNeeded][leases[i]],
                    restarting: false,
                    cluster: None,
                    servers: view.clone(),
                };
                let ds: Vec<Decision> = decide(&c, &mut st, &inp);
                for d in ds.iter().filter(|d| matches!(d.action, Remedy::RestartK3s | Remedy::Reboot) && d.verdict == Verdict::Go) {
                    prop_assert!(*view != ServerView::Unknown, "blind {d:?}");
                    if let Some((m, healthy_others, all_up)) = after_going_down(view) {
                        prop_assert!(all_up, "another server is down: {d:?} {view:?}");
                        if m >= 2 {
                            prop_assert!(healthy_others >= majority(m), "quorum lost: {d:?} {view:?}");
                        }
                    }
                }
            }
        }
    }
}
