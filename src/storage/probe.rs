//! The write probe: create, fsync and unlink a small file in a nodemedic-owned directory
//! on a filesystem the node needs. A read-only filesystem answers EROFS (also when
//! mountinfo still says `rw`, as an ext4 emergency read-only does), a dead device EIO, and
//! a wedged one never answers: the probe runs on the mount prober's bounded pool (handed
//! in at the daemon's wiring as a [`WriteProbes`]), with a deadline, never stacked.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory the probe writes in, made by nodemedic: `<dir>/.nodemedic-write-probe`.
pub const PROBE_DIR: &str = ".nodemedic-write-probe";

/// One probe, blocking: mkdir (one level: a missing parent is `ENOENT`, never created),
/// create, write, fsync, unlink.
pub fn write_probe(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let file = dir.join("probe");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)?;
    f.write_all(b"nodemedic write probe\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(&file)
}

/// What one probe of one filesystem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Ok,
    Failed {
        errno: Option<i32>,
        error: String,
    },
    /// Outstanding past its deadline (its thread is parked in the kernel).
    Stuck,
    /// No probe could be started (the pool is full).
    NotProbed(String),
}

/// Probes the given directories with a deadline; one outcome per directory, in order,
/// with how long the probe took (or has been outstanding). A directory whose last probe
/// has not returned is `Stuck` without a new probe.
pub trait WriteProbes: Send {
    fn probe_all(&mut self, dirs: &[PathBuf], deadline: Duration) -> Vec<(WriteOutcome, Duration)>;
}

/// Scripted outcomes, for tests.
#[cfg(any(test, feature = "fakes"))]
#[derive(Clone, Default)]
pub struct FakeWriteProbes(
    pub std::sync::Arc<std::sync::Mutex<std::collections::HashMap<PathBuf, WriteOutcome>>>,
);

#[cfg(any(test, feature = "fakes"))]
impl FakeWriteProbes {
    pub fn set(&self, dir: impl Into<PathBuf>, o: WriteOutcome) {
        self.0.lock().unwrap().insert(dir.into(), o);
    }
}

#[cfg(any(test, feature = "fakes"))]
impl WriteProbes for FakeWriteProbes {
    fn probe_all(
        &mut self,
        dirs: &[PathBuf],
        _deadline: Duration,
    ) -> Vec<(WriteOutcome, Duration)> {
        let m = self.0.lock().unwrap();
        dirs.iter()
            .map(|d| {
                (
                    m.get(d).cloned().unwrap_or(WriteOutcome::Ok),
                    Duration::ZERO,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_leaves_its_directory_empty_and_never_creates_a_missing_parent() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join(PROBE_DIR);
        write_probe(&d).unwrap();
        write_probe(&d).unwrap();
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        let missing = t.path().join("no/such").join(PROBE_DIR);
        let e = write_probe(&missing).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(!t.path().join("no").exists());
    }
}
