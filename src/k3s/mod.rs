//! k3s itself while it runs (issue 20): a wedged-but-alive k3s, a crash-looping k3s, a
//! failed unit, and whether a reboot would let pods shut down gracefully.
//!
//! | file | what |
//! |---|---|
//! | [`probe`] | liveness probes on their own threads, each within its deadline, never stacked |
//! | [`http_probe`] | the kubelet's `/healthz` and etcd's `/health` over loopback HTTP |
//! | [`unit`] | the unit's state from systemd over D-Bus (ActiveState, Result, MainPID, NRestarts) |
//! | [`signals`] | the unit's journal reduced to signals (PLEG, etcd slow disk, the last fatal line) |
//! | [`judge`] | pure: `K3sUnresponsive`, `K3sCrashLooping`, `K3sUnitFailed` |
//! | [`readiness`] | the kubelet's graceful node shutdown against logind: `GracefulShutdownIneffective` |
//! | [`detector`] | the pass that ties them together |
//! | [`metrics`] | `nodemedic_k3s_*` |
//!
//! The apiserver probe needs the Kubernetes credentials, which belong to `kube`: the
//! daemon's wiring builds it and hands it in as a [`probe::LivenessProbe`]. The CRI result
//! is the runtime detector's, handed over through [`crate::model::CriHealth`]. The journal
//! follower is the shared edge [`crate::edge::journal`].

pub mod detector;
pub(crate) mod http_probe;
pub(crate) mod judge;
pub mod metrics;
pub mod probe;
pub mod readiness;
pub(crate) mod signals;
pub mod unit;
