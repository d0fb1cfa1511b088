//! `pause-annotation.json`: the pause annotation as the daemon last saw it on its Node.
//!
//! `nodemedic preflight` runs before k3s (`ExecStartPre=`), so no API answers it; the daemon
//! writes this file (atomic replace) whenever what it sees changes, and preflight honours the
//! last state written, as the daemon's own engine does while the API is away.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

pub(crate) const PAUSE_ANNOTATION_FILE: &str = "pause-annotation.json";
/// A real file is about 150 bytes.
const MAX_BYTES: u64 = 64 << 10;

/// What the daemon saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SeenPause {
    /// The annotation key (`kubernetes.pause_annotation`) the state is about.
    pub(crate) annotation: String,
    /// Its value, `None` when the Node does not carry it.
    pub(crate) value: Option<String>,
    /// Whether that value pauses automatic actions (anything but "false", "0", "no").
    pub(crate) paused: bool,
    /// Wall clock (unix seconds) when the daemon saw it so.
    pub(crate) seen_unix: u64,
}

/// Reads the last state; `Ok(None)` when the daemon never wrote one.
pub(crate) fn read(dir: &Path) -> Result<Option<SeenPause>, String> {
    let path = dir.join(PAUSE_ANNOTATION_FILE);
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

/// Writes the state atomically (temp file, fsync, rename).
pub(crate) fn write(dir: &Path, s: &SeenPause) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut bytes = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    super::atomic_file::write_atomic(&dir.join(PAUSE_ANNOTATION_FILE), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_read_back_and_a_missing_file_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), Ok(None));
        let s = SeenPause {
            annotation: "nodemedic.io/pause".into(),
            value: Some("maintenance".into()),
            paused: true,
            seen_unix: 1_700_000_000,
        };
        write(d.path(), &s).unwrap();
        assert_eq!(read(d.path()), Ok(Some(s)));
        std::fs::write(d.path().join(PAUSE_ANNOTATION_FILE), "{").unwrap();
        assert!(read(d.path()).unwrap_err().contains("is not valid"));
    }
}
