//! Memory pressure: PSI when the kernel has it, MemAvailable/SwapFree when it does not
//! (the Raspberry Pi default: `psi=1` is not on the kernel command line).
//!
//! `psi`, `meminfo`, `vmstat` are pure parsers and `judge` is the pure judgement with
//! hysteresis; [`detector`] is the detector that reads the files through `HostFiles` and
//! feeds them in. The response (cordon while the condition holds, uncordon our own cordon
//! when it clears) belongs to the policy; this detector only raises `MemoryPressure`.

pub mod detector;
pub(crate) mod judge;
pub(crate) mod meminfo;
pub mod metrics;
pub(crate) mod pod_usage;
pub(crate) mod psi;
pub(crate) mod trigger;
pub(crate) mod vmstat;
