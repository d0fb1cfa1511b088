//! `preflight-totals.json`: preflight's cumulative counters, for the daemon's metrics.
//!
//! Preflight is a short process run before k3s (`ExecStartPre=`); the daemon runs all the
//! time and owns `/metrics` and `state.json`. So preflight never writes the daemon's file:
//! it keeps its own totals here (atomic replace), and the daemon's
//! `runtime::metrics::RuntimeMetrics` re-reads this file when it changes. Counters are by
//! bounded label sets ([`SANDBOX_REASONS`], [`CNI_KINDS`], [`IMAGE_REASONS`]) so a scrape never grows.
//!
//! A corrupt or missing file starts the totals again from zero (reported); the daemon then
//! sees a total go down and keeps its own counter where it was (counters never decrease).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

pub const TOTALS_FILE: &str = "preflight-totals.json";
pub(crate) const VERSION: u32 = 1;
/// A real file is a few hundred bytes; a huge one is not ours.
const MAX_BYTES: u64 = 1 << 20;

/// `reason` label values of `nodemedic_sandboxes_removed_total`: the preflight reasons of
/// `preflight::plan::Reason` for sandboxes, and `name_reserved` for the daemon's runtime repair.
pub const SANDBOX_REASONS: [&str; 5] = [
    "dead_after_reboot",
    "duplicate_name",
    "unusable_metadata",
    "sandbox_store_orphan",
    "name_reserved",
];
/// `kind` label values of `nodemedic_cni_files_removed_total`.
pub const CNI_KINDS: [&str; 5] = [
    "corrupt_result",
    "removed_sandbox_result",
    "stale_reservation",
    "unowned_reservation",
    "orphan_reservation_after_reboot",
];

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub(crate) version: u32,
    /// Preflight runs, dry runs included.
    pub runs: u64,
    pub(crate) last_run_unix: u64,
    pub(crate) last_duration_seconds: f64,
    /// `completed`, `dry_run`, `refused`, `containerd_unavailable`, `timed_out`.
    pub(crate) last_outcome: String,
    /// Sandbox records removed, by reason ([`SANDBOX_REASONS`]).
    pub sandboxes_removed: BTreeMap<String, u64>,
    /// Container records removed with them (no metric; for the operator).
    pub(crate) containers_removed: u64,
    /// CNI files removed, by kind ([`CNI_KINDS`]).
    pub cni_files_removed: BTreeMap<String, u64>,
    /// Image records removed, by reason ([`IMAGE_REASONS`]).
    pub images_removed: BTreeMap<String, u64>,
}

/// `reason` label values of `nodemedic_images_removed_total`.
pub const IMAGE_REASONS: [&str; 1] = ["snapshot_missing"];

/// Reads the totals; `Ok(None)` when there is no file yet.
pub fn read(dir: &Path) -> Result<Option<Totals>, String> {
    let path = dir.join(TOTALS_FILE);
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    f.take(MAX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{} is not valid ({e})", path.display()))
}

/// Writes the totals atomically (temp file, fsync, rename).
pub fn write(dir: &Path, t: &Totals) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut bytes = serde_json::to_vec_pretty(t).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    crate::state::atomic_file::write_atomic(&dir.join(TOTALS_FILE), &bytes)
}
