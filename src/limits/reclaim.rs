//! The opt-in disk reclaim step (`reclaim_disk`, DiskSpaceLow only): vacuum the journal to
//! `limits.reclaim_journal_size`, and have the container runtime remove images no container
//! uses. Each half runs only when what it frees lives on the filesystem that is short of
//! space: vacuuming the journal does nothing for a full containerd partition, and removing
//! images (which costs re-pulls over a Pi's link) does nothing for a full `/var/log`.
//!
//! The engine has already applied the switch, the dry run, the daily cap, the pause and the
//! post-boot grace (images of pods not yet restarted after a boot look unused); this file
//! only does the work, under one deadline, and says what it did.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::LimitsSection;

/// Where journald keeps its persistent journal.
pub(crate) const JOURNAL_DIR: &str = "/var/log/journal";

/// The image half, implemented over CRI at the daemon's wiring (`runtime::images`).
pub(crate) trait ImagePruner: Send + Sync {
    /// Removes images no container uses, within `deadline`; says what it removed and kept.
    fn prune(&self, deadline: Instant) -> Result<String, String>;
}

/// Runs `journalctl --vacuum-size=<size>`; injectable for tests.
pub(crate) type Vacuum = Box<dyn Fn(&str, Duration) -> Result<String, String> + Send + Sync>;

/// The device of a path, if it exists.
pub(crate) type DeviceOf = Box<dyn Fn(&Path) -> Option<u64> + Send + Sync>;

pub(crate) struct Reclaimer {
    pub(crate) cfg: LimitsSection,
    /// Paths (the subject, the journal, containerd's root) are looked up under it.
    pub(crate) host_root: PathBuf,
    /// containerd's root: where the images are.
    pub(crate) images_root: PathBuf,
    pub(crate) images: Option<Box<dyn ImagePruner>>,
    pub(crate) vacuum: Vacuum,
    pub(crate) device_of: DeviceOf,
}

/// The real vacuum: journalctl under the deadline.
pub(crate) fn journalctl_vacuum() -> Vacuum {
    Box::new(|size: &str, timeout: Duration| {
        let argv = ["journalctl".to_string(), format!("--vacuum-size={size}")];
        crate::edge::command::run_for_output(&argv, timeout)
    })
}

/// The real device lookup: st_dev of the path (local paths only: the reclaim runs on a
/// node whose k3s and journal are local).
pub(crate) fn st_dev() -> DeviceOf {
    Box::new(|p: &Path| nix::sys::stat::stat(p).ok().map(|s| s.st_dev))
}

impl Reclaimer {
    /// Frees what it can on the filesystem of `subject`.
    pub(crate) fn reclaim(&self, subject: &str) -> Result<String, String> {
        let deadline = Instant::now() + self.cfg.reclaim_timeout.get();
        let rooted = |p: &Path| self.host_root.join(p.strip_prefix("/").unwrap_or(p));
        let Some(dev) = (self.device_of)(&rooted(Path::new(subject))) else {
            return Err(format!("cannot stat {subject}: nothing reclaimed"));
        };
        let same = |p: &Path| (self.device_of)(&rooted(p)) == Some(dev);
        let mut done = Vec::new();
        let mut failed = Vec::new();
        if self.cfg.reclaim_journal_size.is_empty() {
            done.push("journal left alone (limits.reclaim_journal_size = \"\")".to_string());
        } else if same(Path::new(JOURNAL_DIR)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match (self.vacuum)(&self.cfg.reclaim_journal_size, left) {
                Ok(said) => done.push(format!(
                    "journal vacuumed to {}: {}",
                    self.cfg.reclaim_journal_size,
                    if said.is_empty() {
                        "done"
                    } else {
                        said.as_str()
                    }
                )),
                Err(e) => failed.push(format!("journal vacuum failed: {e}")),
            }
        } else {
            done.push(format!("journal not on {subject}'s filesystem: left alone"));
        }
        match (&self.images, self.cfg.reclaim_images) {
            (_, false) => done.push("images left alone (limits.reclaim_images = false)".into()),
            (None, true) => {
                failed.push("no container runtime connection: images not pruned".into())
            }
            (Some(_), true) if !same(&self.images_root) => done.push(format!(
                "images ({}) not on {subject}'s filesystem: left alone",
                self.images_root.display()
            )),
            (Some(p), true) => match p.prune(deadline) {
                Ok(said) => done.push(said),
                Err(e) => failed.push(format!("image pruning failed: {e}")),
            },
        }
        let all: Vec<String> = done.into_iter().chain(failed.iter().cloned()).collect();
        if failed.is_empty() {
            Ok(all.join("; "))
        } else {
            Err(all.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Pruner(Arc<Mutex<u32>>);
    impl ImagePruner for Pruner {
        fn prune(&self, _deadline: Instant) -> Result<String, String> {
            *self.0.lock().unwrap() += 1;
            Ok("removed 2 unused image(s)".into())
        }
    }

    /// `/` and the journal on device 1, containerd's root on device 2.
    fn reclaimer(calls: Arc<Mutex<Vec<String>>>, pruned: Arc<Mutex<u32>>) -> Reclaimer {
        Reclaimer {
            cfg: LimitsSection::default(),
            host_root: "/".into(),
            images_root: "/var/lib/rancher/k3s/agent/containerd".into(),
            images: Some(Box::new(Pruner(pruned))),
            vacuum: Box::new(move |size, _| {
                calls.lock().unwrap().push(size.to_string());
                Ok("Vacuuming done, freed 24.0M of archived journals".into())
            }),
            device_of: Box::new(|p| {
                if p.starts_with("/var/lib/rancher") {
                    Some(2)
                } else {
                    Some(1)
                }
            }),
        }
    }

    #[test]
    fn only_what_lives_on_the_full_filesystem_is_reclaimed() {
        let (calls, pruned) = (Arc::default(), Arc::default());
        let r = reclaimer(Arc::clone(&calls), Arc::clone(&pruned));
        let said = r.reclaim("/").unwrap();
        assert_eq!(*calls.lock().unwrap(), vec!["100M".to_string()]);
        assert_eq!(*pruned.lock().unwrap(), 0, "images are not on /");
        assert!(
            said.contains("freed 24.0M") && said.contains("not on /'s filesystem"),
            "{said}"
        );

        let said = r.reclaim("/var/lib/rancher/k3s").unwrap();
        assert_eq!(
            calls.lock().unwrap().len(),
            1,
            "the journal is not on k3s's filesystem"
        );
        assert_eq!(*pruned.lock().unwrap(), 1);
        assert!(said.contains("removed 2 unused image(s)"), "{said}");
    }

    #[test]
    fn a_failed_half_fails_the_step_and_says_what_the_other_did() {
        let (calls, pruned) = (Arc::default(), Arc::default());
        let mut r = reclaimer(calls, pruned);
        r.vacuum =
            Box::new(|_, _| Err("cannot start `journalctl`: No such file or directory".into()));
        r.device_of = Box::new(|_| Some(1));
        let e = r.reclaim("/").unwrap_err();
        assert!(
            e.contains("journal vacuum failed") && e.contains("removed 2 unused"),
            "{e}"
        );
        r.device_of = Box::new(|_| None);
        assert!(
            r.reclaim("/gone")
                .unwrap_err()
                .contains("cannot stat /gone")
        );
    }
}
