//! `nodemedic preflight`: the one-shot repair of containerd and CNI state after unclean
//! shutdowns, run as `ExecStartPre=-/usr/bin/nodemedic preflight` on `k3s.service`, before
//! k3s (and its containerd) starts. The daemon's online repair is [`crate::runtime`].
//!
//! [`command`] maps the config onto a run and prints the outcome; [`run`] is the run: a
//! private containerd without CRI is started on k3s's root ([`private_instance`]), its
//! records and tasks are listed ([`containerd`]), classified ([`sandbox_meta`]), the CNI
//! cache and IPAM dirs scanned ([`cni`]), a plan with a reason per removal is built
//! ([`plan`]), filtered by the per-kind switches and caps ([`gate`]), and carried out within
//! a time budget. Then, within the same budget, [`clock_sanity`] waits for a clock that is
//! behind the last time the daemon saw, and the run's counters go to [`totals`] for the
//! daemon's metrics.
//!
//! # Reboot or k3s restart?
//! `k3s.service` has `KillMode=process`: a restart leaves shims and pods running, and their
//! sandboxes, IPs and CNI results must be left alone. So liveness is judged per record, not
//! guessed globally: a record is *alive* if containerd (through the shim) reports its task
//! running, or if its task bundle (on tmpfs, so only ever from this boot) names a pause pid
//! that still runs; *unknown* (a task list that failed, a bundle without a pid) counts as
//! alive. Only provably dead records are ever removed.
//! The mode then only decides how much dead state goes ([`plan::decide_mode`]): any live
//! sandbox means "k3s restart"; none alive means "after reboot", unless the report in the
//! state dir says this boot's reboot cleanup already completed (boot id), in which case k3s
//! merely restarted after its pods died. If a containerd still serves k3s's socket or holds
//! the bolt DB lock, k3s is running or stopping: preflight refuses and touches nothing.
//!
//! # What is removed
//! - After a reboot: every dead sandbox record (its name would collide with the kubelet's
//!   retry, `failed to reserve sandbox name`), with its containers.
//! - Always: dead duplicates of a sandbox or container name (fatal at CRI start:
//!   `failed to recover state: failed to reserve sandbox name`), keeping the live or newest
//!   claimant; dead records whose CRI metadata is missing or unreadable (`failed to get
//!   metadata for stored sandbox`); containers of removed sandboxes; corrupt CNI result files;
//!   IP reservations of dead sandboxes (as below).
//! - With a removed record, its own rootfs snapshot, only if it is an *active* snapshot; on
//!   containerd 2.x a sandbox's store entry too, and dead store entries without a record
//!   ([`sandbox_store`]). IP reservations only of dead CRI sandboxes on k3s's networks,
//!   and after a reboot those a failed CNI DEL leaked before this boot ([`reservations`]).
//! - An image layer whose snapshot directory is gone: that chain and the images on it
//!   ([`snapshots`]). Every other image and snapshot stays, and the containerd root is never
//!   wiped: moving it aside costs a re-pull of every image, which only an operator may decide.
//! - A watchdog ends the run at its budget whatever blocks ([`hard_deadline`]); the private
//!   instance runs on k3s's config with its drop-ins ([`ctd_config`]).
//!
//! Measured here (containerd 1.6.20, 2-core VM): preflight with nothing to do takes ~60 ms
//! (private containerd start ~40 ms), with 100 dead sandboxes ~350 ms.

pub mod clock_sanity;
pub(crate) mod cni;
pub(crate) mod command;
pub mod containerd;
pub mod ctd_config;
pub mod gate;
pub(crate) mod hard_deadline;
pub mod plan;
pub mod private_instance;
pub(crate) mod report;
pub mod reservations;
pub mod run;
pub mod sandbox_meta;
pub mod sandbox_store;
pub mod snapshots;
pub mod totals;

pub use run::{PreflightConfig, Summary, run};
