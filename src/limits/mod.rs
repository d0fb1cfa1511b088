//! The node's own limits: PIDs, file handles, conntrack entries, disk space and inodes of
//! the filesystems k3s lives on, and zombie processes (issue 24). Small boards run out of
//! these long before they run out of memory.
//!
//! `procfs` (parsers) and `judge` (thresholds, hysteresis) are pure; `statfs` is the
//! statvfs edge with a deadline; `detector` does the reading; `reclaim` is the opt-in
//! disk reclaim step's journal half (the image half is `runtime::images`, joined at the
//! daemon's wiring). The kernel's own "table full" and "file-max reached" lines come from
//! the kernel detector through `model::LimitHits`.

pub(crate) mod detector;
pub(crate) mod judge;
pub(crate) mod metrics;
pub(crate) mod procfs;
pub(crate) mod reclaim;
pub(crate) mod statfs;
