//! `[memory]`: the memory-pressure detector's thresholds. The judgement that applies them,
//! with why these defaults, is `memory::judge`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

/// Span each stall ratio covers. Matches avg10's horizon, so numbers read like the
/// `avg10` operators know, but computed exactly; short enough that a 30 s sustain is
/// made of several independent windows.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// A threshold must be exceeded on every tick for this long to raise. Same duration as
/// systemd-oomd's DefaultMemoryPressureDurationSec: long enough to ride out a container
/// start or a compaction burst.
pub(crate) const DEFAULT_SUSTAIN: Duration = Duration::from_secs(30);
/// Everything must stay below the clear thresholds this long to clear: four sustains, so
/// a cordon is not lifted between two waves of a workload that keeps coming back.
pub(crate) const DEFAULT_CALM: Duration = Duration::from_secs(120);
/// `full` >= 10%: the whole node (API server, etcd heartbeats) frozen one second in ten.
/// oomd's 60% is kill territory; we cordon long before that.
pub(crate) const DEFAULT_RAISE_FULL: f64 = 0.10;
/// `some` >= 40%: some task waits on memory most of the time (steady reclaim or refaults
/// from the SD card); below this `some` is common on busy, healthy nodes.
pub(crate) const DEFAULT_RAISE_SOME: f64 = 0.40;
/// Fallback: MemAvailable below 10% of MemTotal, earlyoom's default.
pub(crate) const DEFAULT_RAISE_MEM_AVAILABLE: f64 = 0.10;
/// Fallback: and (when there is swap) SwapFree below 10% of SwapTotal, earlyoom's default.
pub(crate) const DEFAULT_RAISE_SWAP_FREE: f64 = 0.10;
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    pub(crate) enabled: bool,
    pub(crate) interval: ConfigDuration,
    pub(crate) window: ConfigDuration,
    pub(crate) sustain: ConfigDuration,
    pub(crate) calm: ConfigDuration,
    pub(crate) raise_full_percent: u32,
    pub(crate) raise_some_percent: u32,
    pub(crate) raise_mem_available_percent: u32,
    pub(crate) raise_swap_free_percent: u32,
    /// The eviction step leaves BestEffort pods with a smaller working set alone.
    pub(crate) evict_min_working_set_mib: u32,
    /// A cgroup v2 directory whose `memory.pressure` can raise the condition on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) watched_cgroup: Option<String>,
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection {
            enabled: true,
            // PSI averages refresh every 2 s; sampling faster adds cost, not information.
            interval: ConfigDuration::secs(2),
            window: ConfigDuration(DEFAULT_WINDOW),
            sustain: ConfigDuration(DEFAULT_SUSTAIN),
            calm: ConfigDuration(DEFAULT_CALM),
            raise_full_percent: pct(DEFAULT_RAISE_FULL),
            raise_some_percent: pct(DEFAULT_RAISE_SOME),
            raise_mem_available_percent: pct(DEFAULT_RAISE_MEM_AVAILABLE),
            raise_swap_free_percent: pct(DEFAULT_RAISE_SWAP_FREE),
            // 32 MiB is 3% of a 1 GB board's memory: a smaller pod frees too little to
            // end a stall, and evicting it would only interrupt it.
            evict_min_working_set_mib: 32,
            watched_cgroup: None,
        }
    }
}

fn pct(f: f64) -> u32 {
    (f * 100.0).round() as u32
}

impl MemorySection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        dur_range(v, "memory.interval", self.interval, 500, 60_000);
        dur_range(v, "memory.window", self.window, 2_000, 600_000);
        dur_range(v, "memory.sustain", self.sustain, 0, 3_600_000);
        dur_range(v, "memory.calm", self.calm, 0, 86_400_000);
        range(
            v,
            "memory.raise_full_percent",
            self.raise_full_percent.into(),
            1,
            100,
        );
        range(
            v,
            "memory.raise_some_percent",
            self.raise_some_percent.into(),
            1,
            100,
        );
        range(
            v,
            "memory.raise_mem_available_percent",
            self.raise_mem_available_percent.into(),
            1,
            99,
        );
        range(
            v,
            "memory.raise_swap_free_percent",
            self.raise_swap_free_percent.into(),
            1,
            99,
        );
        range(
            v,
            "memory.evict_min_working_set_mib",
            self.evict_min_working_set_mib.into(),
            0,
            1 << 20,
        );
        if let Some(w) = &self.watched_cgroup
            && (!w.starts_with('/') || w.contains(".."))
        {
            v.push(format!(
                    "key `memory.watched_cgroup` = \"{w}\" must be an absolute cgroup v2 directory such as \"/sys/fs/cgroup/system.slice/k3s.service\""
                ));
        }
    }
}
