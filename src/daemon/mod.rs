//! The daemon (`nodemedic run`): [`run`] is its lifecycle (state, listener, threads,
//! signals, stop), [`wiring`] what it is made of (real edges, detectors and actuators from
//! the config; `check` builds from it too).

pub mod run;
pub(crate) mod signals;
pub(crate) mod state_dir;
pub(crate) mod wiring;

#[cfg(test)]
mod kernel_replay;

pub use run::{DaemonError, run};
