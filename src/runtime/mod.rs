//! The container runtime while k3s runs: a NotReady sandbox that holds the name the kubelet
//! retries with is stopped and removed through CRI, by exact id. [`detector`] raises
//! `SandboxNameReserved` (from the listing and containerd's log, [`log_tail`]) and
//! `ContainerRuntimeDown`; [`resolve`] is the actuator the policy executor calls, over the
//! CRI edge in [`cri`]. The offline repair before k3s starts is [`crate::preflight`].

pub mod cri;
pub mod detector;
pub(crate) mod images;
pub(crate) mod judge;
pub mod log_tail;
pub mod metrics;
pub mod resolve;
