//! Mounts nodemedic detached, shared between the unmount actuator (which records them) and
//! the hung-mount detector (which keeps `NetworkMountHung` raised for them).
//!
//! Why it exists: `umount2(MNT_DETACH)` removes a dead mount from the mount table at once,
//! so new accesses fail fast, but tasks already sleeping in the dead filesystem's wait
//! functions stay in D state until the server comes back or the node reboots. Without this
//! record the detector would see the mount vanish and clear the condition as if the node
//! had healed.
//!
//! The daemon creates one `Arc<DetachedMounts>` and hands it to both
//! [`crate::mounts::detector::MountsDetector::with_detached`] and the actuator
//! ([`crate::mounts::unmount::MountDetacher`]). It lives in memory only: after a restart
//! the census still shows the blocked tasks (as D-state counts in `/status` and metrics),
//! but no condition names the mount any more.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// What is remembered about one detached mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct DetachedMount {
    pub(crate) mount_point: PathBuf,
    /// `nfs4`, `fuse.sshfs`, ...: decides which D-state wait class still counts for it.
    pub(crate) fstype: String,
    pub(crate) source: String,
}

/// The set of mounts detached by nodemedic whose stuck tasks may still be blocked.
#[derive(Debug, Default)]
pub struct DetachedMounts {
    inner: Mutex<BTreeMap<PathBuf, DetachedMount>>,
}

impl DetachedMounts {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<PathBuf, DetachedMount>> {
        // Every update is one map operation, so the map is consistent even after a panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers a mount the actuator detached (replacing an older record at that path).
    pub(crate) fn record(&self, mount: DetachedMount) {
        self.lock().insert(mount.mount_point.clone(), mount);
    }

    /// Forgets a mount once no task is blocked on it any more; true if it was known.
    pub(crate) fn forget(&self, mount_point: &Path) -> bool {
        self.lock().remove(mount_point).is_some()
    }

    pub(crate) fn contains(&self, mount_point: &Path) -> bool {
        self.lock().contains_key(mount_point)
    }

    /// Every remembered mount, sorted by path.
    pub(crate) fn list(&self) -> Vec<DetachedMount> {
        self.lock().values().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> DetachedMount {
        DetachedMount {
            mount_point: p.into(),
            fstype: t.into(),
            source: "nas:/x".into(),
        }
    }

    #[test]
    fn records_are_listed_by_path_replaced_at_the_same_path_and_forgotten() {
        let d = DetachedMounts::default();
        assert!(d.is_empty());
        d.record(m("/mnt/b", "nfs4"));
        d.record(m("/mnt/a", "fuse.sshfs"));
        d.record(m("/mnt/b", "nfs"));
        let l = d.list();
        assert_eq!(l, vec![m("/mnt/a", "fuse.sshfs"), m("/mnt/b", "nfs")]);
        assert!(d.contains(Path::new("/mnt/a")));
        assert!(d.forget(Path::new("/mnt/a")));
        assert!(!d.forget(Path::new("/mnt/a")));
        assert_eq!(d.list().len(), 1);
    }
}
