//! Crash-safe file replacement: write a temp file in the same directory, fsync it, rename
//! it over the target, fsync the directory. A reader (or the next boot after a power cut)
//! sees either the old or the new content, never a truncated mix. This matters because the
//! reboot budget lives in such a file: losing it could allow a reboot loop.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically and durably. Mode 0600: state may name pods and paths.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        crate::metrics::state_bytes_written(bytes.len());
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// fsyncs a directory so a rename or a new file in it survives a power cut.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// One temp name per process and target, so two writers never share a temp file and a
/// crashed writer's leftover is overwritten by the next write.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(path).join(format!(".{name}.tmp.{}", std::process::id()))
}

/// Removes temp files a crashed writer left behind (any pid).
pub(crate) fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.tmp.");
    if let Ok(rd) = fs::read_dir(parent_dir(path)) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Removes, from `dir`, the temp files of atomic writes whose writer is gone: a daemon or
/// `nodemedic preflight` killed mid-write leaves `.<name>.tmp.<pid>`, and nothing else
/// would ever remove it. A temp file of a live process (a preflight writing right now) is
/// left alone. Returns the names removed.
pub(crate) fn remove_dead_writers_temps(dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return removed;
    };
    let me = std::process::id();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_writer_pid(&name) else {
            continue;
        };
        if (pid == me || !process_alive(pid)) && fs::remove_file(e.path()).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// The writer's pid of a temp name `.<name>.tmp.<pid>` (see [`temp_path`]).
fn temp_writer_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, pid) = rest.rsplit_once(".tmp.")?;
    pid.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; EPERM means it does.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_content_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two, longer").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two, longer");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn failed_write_keeps_the_old_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"old").unwrap();
        // Target is a directory name inside a missing dir: the rename cannot succeed.
        let bad = d.path().join("missing").join("state.json");
        assert!(write_atomic(&bad, b"new").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
    }

    #[test]
    fn stale_temps_from_crashed_writers_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        fs::write(d.path().join(".state.json.tmp.12345"), b"partial").unwrap();
        fs::write(d.path().join("other"), b"keep").unwrap();
        remove_stale_temps(&p);
        assert!(!d.path().join(".state.json.tmp.12345").exists());
        assert!(d.path().join("other").exists());
    }

    #[test]
    fn temps_of_dead_writers_are_removed_and_a_live_writers_temp_is_kept() {
        let d = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22: this pid cannot exist.
        let dead = 4_999_999;
        let live = std::os::unix::process::parent_id();
        for name in [
            format!(".kmsg-cursor.json.tmp.{dead}"),
            format!(".clean-shutdown.json.tmp.{dead}"),
            format!(".preflight-totals.json.tmp.{live}"),
            format!(".state.json.tmp.{}", std::process::id()),
            "audit.jsonl".to_string(),
            ".tmp.notours".to_string(),
        ] {
            fs::write(d.path().join(name), b"x").unwrap();
        }
        let mut removed = remove_dead_writers_temps(d.path());
        removed.sort();
        assert_eq!(
            removed,
            vec![
                format!(".clean-shutdown.json.tmp.{dead}"),
                format!(".kmsg-cursor.json.tmp.{dead}"),
                format!(".state.json.tmp.{}", std::process::id()),
            ]
        );
        assert!(
            d.path()
                .join(format!(".preflight-totals.json.tmp.{live}"))
                .exists()
        );
        assert!(d.path().join("audit.jsonl").exists());
    }
}
