//! Hung network mounts: discovery (`mountinfo`), evidence that never touches the mount
//! (`mountstats`, `dstate`), and a prober on a bounded thread pool that cannot hang the
//! daemon (`prober`).

pub mod detector;
pub mod dstate;
pub mod mountinfo;
pub mod mountstats;
pub mod prober;
pub mod verdict;
