//! Which mounts the hung-mount prober watches: every mount whose fstype is in the network
//! set (`mounts.fstypes`), plus the paths the operator listed, one probe per superblock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::mounts::{FsTypeSet, MountsConfigError};
use crate::formats::mountinfo::{MountEntry, is_hard_nfs, unprivileged_fuse_owner};

/// Why a path is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WatchReason {
    /// Its fstype is in the network set.
    NetworkFs,
    /// The operator listed it, whatever its fstype (or even if it is not a mount point).
    ListedPath,
}

/// A path to probe, with what is known about the mount behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchTarget {
    pub path: PathBuf,
    pub reason: WatchReason,
    /// The mount at `path`, when `path` is a mount point.
    pub mount: Option<MountEntry>,
    /// Risk flag: a hung hard NFS mount never gives up on its own.
    pub(crate) hard_nfs: bool,
    /// Other mount points of the same superblock (e.g. kubelet binds of one NFS share). They
    /// hang and recover together with `path`, so they are not probed separately.
    pub(crate) also_mounted_on: Vec<PathBuf>,
    /// The unprivileged user who owns the FUSE mount behind `path` (`user_id=` != 0 of the
    /// mount at `path`, or of the mount it lies under for a listed path).
    pub(crate) user_owner: Option<u32>,
}

/// Which mounts to watch: every mount whose fstype is in `fstypes`, plus listed paths.
/// The default watches the default network fstypes and no extra paths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WatchPolicy {
    fstypes: FsTypeSet,
    paths: Vec<PathBuf>,
}

impl WatchPolicy {
    pub fn new(fstypes: FsTypeSet, paths: Vec<PathBuf>) -> Result<WatchPolicy, MountsConfigError> {
        if let Some(path) = paths.iter().find(|p| !p.is_absolute()) {
            return Err(MountsConfigError::RelativeWatchPath { path: path.clone() });
        }
        Ok(WatchPolicy { fstypes, paths })
    }

    /// Why `entry` is watched, if it is.
    pub(crate) fn reason(&self, entry: &MountEntry) -> Option<WatchReason> {
        if self.paths.contains(&entry.mount_point) {
            Some(WatchReason::ListedPath)
        } else if self.fstypes.matches(&entry.fstype) {
            Some(WatchReason::NetworkFs)
        } else {
            None
        }
    }

    /// The paths to probe for this mount table, in table order, listed paths that are not
    /// mount points last.
    ///
    /// Only the topmost mount at a mount point is reachable by path, so an over-mounted entry
    /// (a later line with the same mount point) hides earlier ones. Network mounts that share
    /// a superblock (same major:minor) are probed once, through the mount of the filesystem
    /// root if there is one.
    pub fn targets(&self, entries: &[MountEntry]) -> Vec<WatchTarget> {
        let mut topmost: HashMap<&Path, usize> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            topmost.insert(e.mount_point.as_path(), i);
        }
        let visible = entries
            .iter()
            .enumerate()
            .filter(|(i, e)| topmost.get(e.mount_point.as_path()) == Some(i))
            .map(|(_, e)| e);

        let mut targets: Vec<WatchTarget> = Vec::new();
        let mut by_device: HashMap<(u32, u32), usize> = HashMap::new();
        for entry in visible {
            let Some(reason) = self.reason(entry) else {
                continue;
            };
            if reason == WatchReason::NetworkFs
                && let Some(&at) = by_device.get(&(entry.major, entry.minor))
            {
                let kept = &mut targets[at];
                let prefer_new = kept.mount.as_ref().is_some_and(MountEntry::is_subtree_bind)
                    && !entry.is_subtree_bind();
                if prefer_new {
                    let old = std::mem::replace(&mut kept.path, entry.mount_point.clone());
                    kept.also_mounted_on.push(old);
                    kept.mount = Some(entry.clone());
                } else {
                    kept.also_mounted_on.push(entry.mount_point.clone());
                }
                continue;
            }
            if reason == WatchReason::NetworkFs {
                by_device.insert((entry.major, entry.minor), targets.len());
            }
            targets.push(WatchTarget {
                path: entry.mount_point.clone(),
                reason,
                hard_nfs: is_hard_nfs(entry),
                mount: Some(entry.clone()),
                also_mounted_on: Vec::new(),
                user_owner: unprivileged_fuse_owner(entry),
            });
        }
        for path in &self.paths {
            if !targets.iter().any(|t| t.path == *path) {
                targets.push(WatchTarget {
                    path: path.clone(),
                    reason: WatchReason::ListedPath,
                    mount: None,
                    hard_nfs: false,
                    also_mounted_on: Vec::new(),
                    user_owner: covering_mount(entries, path).and_then(unprivileged_fuse_owner),
                });
            }
        }
        targets
    }
}

/// The topmost mount that `path` lies on: the longest mount point that is `path` or one of
/// its ancestors (by components), the later line winning among equals (over-mounts).
fn covering_mount<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for e in entries {
        if path.starts_with(&e.mount_point)
            && best.is_none_or(|b| {
                e.mount_point.components().count() >= b.mount_point.components().count()
            })
        {
            best = Some(e);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::mountinfo::parse_mountinfo;
    use crate::formats::mountinfo::tests::{EXT4_ROOT, HARD_NFS4, SOFT_NFS3, SSHFS};

    #[test]
    fn relative_watch_paths_are_rejected() {
        let err = WatchPolicy::new(FsTypeSet::default(), vec!["mnt/x".into()]).unwrap_err();
        assert_eq!(
            err,
            MountsConfigError::RelativeWatchPath {
                path: "mnt/x".into()
            }
        );
    }

    fn table(lines: &[&str]) -> Vec<MountEntry> {
        let t = parse_mountinfo(lines.join("\n").as_bytes());
        assert_eq!(t.malformed, 0);
        t.entries
    }

    #[test]
    fn targets_pick_network_mounts_and_listed_paths_regardless_of_fstype() {
        let entries = table(&[
            EXT4_ROOT,
            HARD_NFS4,
            SOFT_NFS3,
            SSHFS,
            "500 27 179:3 / /data rw - ext4 /dev/sda1 rw",
        ]);
        let policy = WatchPolicy::new(
            FsTypeSet::default(),
            vec!["/data".into(), "/var/lib/backup-staging".into()],
        )
        .unwrap();
        let t = policy.targets(&entries);
        let paths: Vec<_> = t.iter().map(|t| t.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/mnt/backup",
                "/srv/media",
                "/home/pi/remote files",
                "/data",
                "/var/lib/backup-staging"
            ]
        );
        let reasons: Vec<_> = t.iter().map(|t| t.reason).collect();
        use WatchReason::*;
        assert_eq!(
            reasons,
            [NetworkFs, NetworkFs, NetworkFs, ListedPath, ListedPath]
        );
        assert_eq!(
            t.iter().map(|t| t.hard_nfs).collect::<Vec<_>>(),
            [true, false, false, false, false]
        );
        assert_eq!(t[3].mount.as_ref().unwrap().fstype, "ext4");
        assert!(t[4].mount.is_none());
    }

    #[test]
    fn binds_of_one_nfs_superblock_are_probed_once_through_the_root_mount() {
        let entries = table(&[
            "1203 1190 0:61 /pods/a /var/lib/kubelet/pods/a/vol rw - nfs4 nas:/b rw,hard",
            HARD_NFS4,
            "1204 1190 0:61 /pods/b /var/lib/kubelet/pods/b/vol rw - nfs4 nas:/b rw,hard",
        ]);
        let t = WatchPolicy::default().targets(&entries);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].path, PathBuf::from("/mnt/backup"));
        assert_eq!(
            t[0].also_mounted_on,
            vec![
                PathBuf::from("/var/lib/kubelet/pods/a/vol"),
                PathBuf::from("/var/lib/kubelet/pods/b/vol")
            ]
        );
        assert!(t[0].hard_nfs);
    }

    #[test]
    fn an_overmounted_network_mount_is_not_a_target_because_its_path_reaches_the_top_mount() {
        let entries = table(&[HARD_NFS4, "900 812 0:90 / /mnt/backup rw - tmpfs tmpfs rw"]);
        assert!(WatchPolicy::default().targets(&entries).is_empty());
    }
}
