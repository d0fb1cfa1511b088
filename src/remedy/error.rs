//! What went wrong when an actuator acted: typed, naming what it acted on, and saying
//! whether trying again later can help (as [`crate::kube::api::KubeError::api_unavailable`]
//! does for the API). The loop audits the sentence and the engine re-arms a step whose
//! failure is [`ActionError::retryable`].

use std::fmt;

/// What an action acts on; every error names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A systemd unit (`restart_k3s`, post-boot verification).
    Unit(String),
    /// A mount point (`unmount`).
    Mount(String),
    /// A pod sandbox name (`remove_sandboxes`).
    Sandbox(String),
    /// A filesystem short of space, named by a watched path on it (`reclaim_disk`).
    Filesystem(String),
    /// BestEffort pods' memory cgroups (the eviction step).
    PodCgroups,
    /// This Node through the Kubernetes API (cordon, drain, eviction).
    Cluster,
    /// The machine itself (reboot).
    Node,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unit(u) => write!(f, "unit {u}"),
            Target::Mount(m) => write!(f, "mount {m}"),
            Target::Sandbox(s) => write!(f, "sandbox {s}"),
            Target::Filesystem(p) => write!(f, "filesystem of {p}"),
            Target::PodCgroups => f.write_str("BestEffort pod cgroups"),
            Target::Cluster => f.write_str("the Kubernetes API"),
            Target::Node => f.write_str("the node"),
        }
    }
}

/// Why an action did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ActionError {
    /// What carries the action could not be reached or did not answer in time (PID 1 or
    /// D-Bus wedged, the containerd socket gone, a syscall past its deadline): nothing was
    /// changed, and the same step may work later.
    #[error("{target} unavailable: {detail}")]
    Unavailable { target: Target, detail: String },
    /// A guard or an operator's choice said no (a protected path, a k3s an operator
    /// stopped, no credentials, over a cap): trying again changes nothing until a human
    /// does.
    #[error("{target}: refused: {why}")]
    Refused { target: Target, why: String },
    /// Tried, and it failed.
    #[error("{target}: failed: {detail}")]
    Failed { target: Target, detail: String },
}

impl ActionError {
    pub(crate) fn unavailable(target: Target, detail: impl Into<String>) -> Self {
        ActionError::Unavailable {
            target,
            detail: detail.into(),
        }
    }

    pub(crate) fn refused(target: Target, why: impl Into<String>) -> Self {
        ActionError::Refused {
            target,
            why: why.into(),
        }
    }

    pub(crate) fn failed(target: Target, detail: impl Into<String>) -> Self {
        ActionError::Failed {
            target,
            detail: detail.into(),
        }
    }

    /// True when the same step may succeed if tried again later: the engine re-arms it
    /// (after the cooldown, within the cap) instead of moving up the ladder.
    pub(crate) fn retryable(&self) -> bool {
        matches!(self, ActionError::Unavailable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_edge_is_worth_retrying_and_every_error_names_its_target() {
        let u = ActionError::unavailable(Target::Unit("k3s.service".into()), "timed out");
        let r = ActionError::refused(Target::Mount("/".into()), "the root filesystem");
        let f = ActionError::failed(Target::Sandbox("web-0_default_u_1".into()), "EIO");
        assert!(u.retryable() && !r.retryable() && !f.retryable());
        assert_eq!(u.to_string(), "unit k3s.service unavailable: timed out");
        assert_eq!(r.to_string(), "mount /: refused: the root filesystem");
        assert_eq!(f.to_string(), "sandbox web-0_default_u_1: failed: EIO");
    }
}
