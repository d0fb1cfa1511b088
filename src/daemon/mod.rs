//! The daemon (`nodemedic run`): [`run`] is its lifecycle (state, listener, threads,
//! signals, stop), [`wiring`] what it is made of (real edges, detectors and actuators from
//! the config; `check` builds from it too), [`boot_end`] how the previous boot ended,
//! decided at the first start in a boot, [`shutdown_linger`] the watchdog through a reboot
//! nodemedic asked for.

pub(crate) mod boot_end;
pub(crate) mod footprint;
pub mod run;
pub(crate) mod shutdown_linger;
pub(crate) mod signals;
pub(crate) mod state_dir;
pub(crate) mod watchdog_intent;
pub(crate) mod wiring;

#[cfg(test)]
mod kernel_replay;

pub use run::{DaemonError, run};
