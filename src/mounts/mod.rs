//! Hung network mounts: discovery (`mountinfo`), evidence that never touches the mount
//! (`mountstats`, `dstate`), a prober on a bounded thread pool that cannot hang the
//! daemon (`prober`), the per-mount verdict with hysteresis (`judge`), the detector that
//! combines them (`detector`), and the lazy-unmount remedy (`unmount`) with its record of
//! what it detached (`detached`).

pub mod detached;
pub mod detector;
pub mod dstate;
pub(crate) mod hung_wait;
pub(crate) mod judge;
pub mod metrics;
pub(crate) mod mountstats;
pub mod prober;
pub mod unmount;
pub mod watch;
