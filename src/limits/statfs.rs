//! The statvfs edge. A watched path on a local filesystem is asked inline (statvfs answers
//! from the superblock's counters, without I/O); one on a network or FUSE mount, or an
//! unknown kind, is asked on a thread the detector waits for only until a deadline, and
//! never a second time while the first is still stuck: the discipline of the mount prober,
//! so a dead NFS server can never hang this detector.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::judge::FsStat;

/// Filesystems whose statvfs never leaves the machine.
pub(crate) const LOCAL_FSTYPES: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "vfat", "exfat", "tmpfs", "ramfs", "overlay",
    "zfs", "squashfs", "jfs", "reiserfs", "nilfs2", "bcachefs", "erofs",
];

pub(crate) trait FsStats: Send {
    /// statvfs and st_dev of `path`; `local`: its filesystem is one of [`LOCAL_FSTYPES`].
    fn stat(&mut self, path: &Path, local: bool, timeout: Duration) -> Result<FsStat, String>;
}

fn statvfs_now(path: &Path) -> Result<FsStat, String> {
    let dev = nix::sys::stat::stat(path)
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .st_dev;
    let v =
        nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs {}: {e}", path.display()))?;
    // fsblkcnt_t, fsfilcnt_t and c_ulong are 32 bits on armhf (the Pi's 32-bit OS).
    Ok(FsStat {
        dev,
        frsize: v.fragment_size() as u64,
        blocks: v.blocks() as u64,
        bavail: v.blocks_available() as u64,
        files: v.files() as u64,
        ffree: v.files_free() as u64,
    })
}

/// Real: statvfs(2), on a thread for anything that may not be local.
#[derive(Default)]
pub(crate) struct RealFsStats {
    /// A probe still running past its deadline, per path: no second one is started.
    stuck: HashMap<PathBuf, (mpsc::Receiver<Result<FsStat, String>>, Instant)>,
}

impl FsStats for RealFsStats {
    fn stat(&mut self, path: &Path, local: bool, timeout: Duration) -> Result<FsStat, String> {
        if let Some((rx, since)) = self.stuck.get(path) {
            match rx.try_recv() {
                Err(mpsc::TryRecvError::Empty) => {
                    return Err(format!(
                        "statvfs {} has not answered for {}s (not asked again until it does)",
                        path.display(),
                        since.elapsed().as_secs()
                    ));
                }
                // It answered late, or its thread died: ask afresh.
                _ => {
                    self.stuck.remove(path);
                }
            }
        }
        if local {
            return statvfs_now(path);
        }
        let (tx, rx) = mpsc::channel();
        let p = path.to_path_buf();
        std::thread::Builder::new()
            .name("limits-statfs".into())
            .spawn(move || {
                let _ = tx.send(statvfs_now(&p));
            })
            .map_err(|e| format!("cannot start a statvfs thread: {e}"))?;
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => {
                self.stuck.insert(path.to_path_buf(), (rx, Instant::now()));
                Err(format!(
                    "statvfs {} did not answer within {} ms",
                    path.display(),
                    timeout.as_millis()
                ))
            }
        }
    }
}

#[cfg(test)]
/// Fake: answers from a map (a missing path is an error), recording each question.
#[derive(Default)]
pub struct FakeFsStats {
    pub(crate) answers: std::sync::Arc<std::sync::Mutex<HashMap<PathBuf, Result<FsStat, String>>>>,
    pub asked: std::sync::Arc<std::sync::Mutex<Vec<(PathBuf, bool)>>>,
}

#[cfg(test)]
impl FsStats for FakeFsStats {
    fn stat(&mut self, path: &Path, local: bool, _timeout: Duration) -> Result<FsStat, String> {
        self.asked.lock().unwrap().push((path.to_path_buf(), local));
        self.answers
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_else(|| {
                Err(format!(
                    "stat {}: ENOENT: No such file or directory",
                    path.display()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_directory_is_measured_and_two_paths_on_one_filesystem_share_a_device() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let mut s = RealFsStats::default();
        let a = s.stat(d.path(), true, Duration::from_secs(2)).unwrap();
        let b = s
            .stat(&d.path().join("sub"), false, Duration::from_secs(2))
            .unwrap();
        assert_eq!(a.dev, b.dev);
        assert!(
            a.blocks > 0 && a.bavail <= a.blocks && a.frsize > 0,
            "{a:?}"
        );
        let e = s
            .stat(&d.path().join("missing"), true, Duration::from_secs(2))
            .unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
