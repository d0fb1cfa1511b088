//! Kubernetes integration: what the cluster sees of this node, and the cluster-wide
//! reboot lock.
//!
//! nodemedic works without Kubernetes; everything here is optional and must never make
//! the node worse. Three rules shape the module:
//! - **The API being unreachable is not the node being sick.** A k3s server restart, an
//!   etcd hiccup or a partition makes the API vanish while the node is fine (medik8s
//!   self-node-remediation asks its peers before believing otherwise). Every call has a
//!   deadline, wishes are queued and coalesced while the API is away ([`queue`]), retries
//!   back off with jitter, and the reason shows in metrics, never as a node condition.
//! - **Never undo what an operator did.** Cordons carry ownership annotations
//!   ([`cordon`]); conditions carry a prefix so kubelet's are never touched
//!   ([`conditions`]).
//! - **Locks expire.** The reboot lock is a Lease that a dead holder cannot keep
//!   ([`lease`]); kured's never-expiring lock is its users' top complaint.
//!
//! Layout: pure decisions (`conditions`, `cordon`, `lease`, `events`, `queue`, and
//! `drain::classify`) take what was read plus `now` and return what to write; [`api`] is
//! the one edge trait, [`client`] its kube-rs implementation, [`fake`] its recording fake;
//! [`sync`] runs bounded passes over it; [`credentials`] finds what to connect with.

pub mod api;
pub(crate) mod client;
pub(crate) mod conditions;
pub(crate) mod cordon;
pub mod credentials;
pub mod drain;
pub(crate) mod events;
pub(crate) mod evict_besteffort;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
pub mod lease;
pub mod metrics;
pub(crate) mod queue;
pub mod readyz;
pub mod sync;

pub use api::{
    Capabilities, ConditionStatus, CordonChange, EventType, EvictOutcome, KubeError, LeaseView,
    NodeApi, NodeCondition, NodeEvent, NodeView, PodView,
};
pub use client::{KubeClient, Timeouts};
pub use conditions::DesiredCondition;
pub use cordon::{CordonOutcome, CordonOwner};
pub use credentials::{CredentialSource, CredentialsError, Discovery};
pub use drain::{DrainOptions, DrainReport, drain};
pub use events::EventDraft;
pub use lease::{LeaseConfig, LockWant};
pub use metrics::KubeMetrics;
pub use sync::{LockStatus, NodeSync, Now, SyncConfig, SyncReport};
