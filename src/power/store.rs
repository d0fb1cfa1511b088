//! `power-state.json` in the state directory: what the power detector must not forget.
//! The totals survive reboots; the per-boot count and the alarm's state are kept with the
//! boot id, so a daemon restart in the same boot counts no episode twice, and the next boot
//! can tell whether the supply was sagging (or the CPU throttling) when this one ended
//! (`boot_end`). Atomic replace; a missing or corrupt file starts from zero (reported).

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

pub(crate) const POWER_FILE: &str = "power-state.json";
/// A real file is a few hundred bytes.
const MAX_BYTES: u64 = 1 << 16;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PowerRecord {
    /// The boot the per-boot fields belong to.
    pub(crate) boot_id: String,
    pub(crate) saved_unix: u64,
    /// The under-voltage alarm as last seen.
    pub(crate) alarm: bool,
    pub(crate) episodes_boot: u64,
    pub(crate) episodes_total: u64,
    pub(crate) last_rise_unix: Option<u64>,
    pub(crate) last_fall_unix: Option<u64>,
    /// `ThermalThrottling` was held.
    pub(crate) throttling: bool,
    /// What made it hot, as its condition said.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) throttling_why: String,
    /// The firmware's last GET_THROTTLED answer.
    pub(crate) firmware_flags: Option<u32>,
}

/// Reads the record; `Ok(None)` when there is none yet.
pub(crate) fn read(dir: &Path) -> Result<Option<PowerRecord>, String> {
    let path = dir.join(POWER_FILE);
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    f.take(MAX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        format!(
            "{} is not valid ({e}); its counts start again from zero",
            path.display()
        )
    })
}

pub(crate) fn write(dir: &Path, r: &PowerRecord) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    crate::state::atomic_file::write_atomic(&dir.join(POWER_FILE), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_corrupt_one_is_named() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), Ok(None));
        let r = PowerRecord {
            boot_id: "b1".into(),
            alarm: true,
            episodes_boot: 2,
            episodes_total: 9,
            ..Default::default()
        };
        write(d.path(), &r).unwrap();
        assert_eq!(read(d.path()), Ok(Some(r)));
        std::fs::write(d.path().join(POWER_FILE), "{\"alarm\": tr").unwrap();
        assert!(
            read(d.path())
                .unwrap_err()
                .contains("power-state.json is not valid")
        );
    }
}
