//! Cluster-wide restraint (issue 17, point 8): a shared cause (the NAS dies, a power strip
//! browns out, a switch fails) shows up as the same problem on several Nodes at once.
//! Every Node cordoning itself would leave nowhere to schedule anything, and every Node
//! restarting or rebooting would make it worse. Pure: functions of what the other Nodes
//! say ([`ClusterView`]).

use super::engine::{ClusterView, PolicyConfig};
use crate::model::{ConditionKind, Remedy};

/// Cordoning (or draining) this Node would leave fewer schedulable Nodes than
/// `min_schedulable_nodes`.
pub(crate) fn below_min_schedulable(cfg: &PolicyConfig, c: &ClusterView, a: Remedy) -> bool {
    matches!(a, Remedy::Cordon | Remedy::Drain)
        && c.this_schedulable
        && c.schedulable.saturating_sub(1) < cfg.min_schedulable_nodes
}

/// The cluster has too few Nodes for cordoning (or draining) this one ever to leave
/// `min_schedulable_nodes` schedulable, whatever the others do: waiting for them is
/// pointless, so the step is skipped and the ladder goes on (a one-Node cluster still
/// gets its restart and reboot steps).
pub(crate) fn too_few_nodes(cfg: &PolicyConfig, c: &ClusterView, a: Remedy) -> bool {
    matches!(a, Remedy::Cordon | Remedy::Drain)
        && c.this_schedulable
        && c.nodes.saturating_sub(1) < cfg.min_schedulable_nodes
}

/// Actions held while a problem is correlated across the cluster.
pub(crate) fn held_when_correlated(a: Remedy) -> bool {
    matches!(
        a,
        Remedy::RestartK3s
            | Remedy::Reboot
            | Remedy::Unmount
            | Remedy::Drain
            | Remedy::EvictBestEffort
    )
}

/// The same problem kind is held on at least half of the Nodes (this one included).
pub(crate) fn correlated(c: &ClusterView, kind: ConditionKind) -> bool {
    let elsewhere = c.held_elsewhere.get(&kind).copied().unwrap_or(0);
    c.nodes >= 2 && elsewhere >= 1 && (elsewhere + 1) * 2 >= c.nodes
}
