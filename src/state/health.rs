//! Is the state directory writable? A full or read-only SD card is exactly when a node
//! needs its watchdog most, so a state directory that cannot be written is not a reason to
//! exit (issue 18: exit 1, five restarts, then no detection at all). Every writer reports
//! here; while the last write failed, the daemon runs degraded: it detects, serves
//! metrics, keeps its state in memory, raises the `StateDirUnusable` warning, and the
//! policy loop runs no action whose audit record it could not write first. The daemon's
//! `state_dir` detector (`daemon::state_dir`) publishes the condition and, while it holds,
//! calls [`StateDirHealth::probe`] now and then to notice the directory coming back
//! (nothing else may be writing).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::atomic_file::write_atomic;
use crate::edge::eventfd::EventFd;

/// The file the recovery probe writes (then removes).
pub(crate) const PROBE_FILE: &str = ".write-probe";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// What was being written: `state.json`, `the audit trail`, ...
    pub(crate) what: String,
    pub(crate) error: String,
    /// What the error was; wrapped errors (`write_atomic` adds the path) keep the kind
    /// but lose the errno.
    pub(crate) kind: io::ErrorKind,
}

impl Failure {
    /// The condition's reason for this failure.
    pub(crate) fn reason(&self) -> &'static str {
        match self.kind {
            io::ErrorKind::ReadOnlyFilesystem => "ReadOnlyFilesystem",
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => "NoSpace",
            io::ErrorKind::PermissionDenied => "PermissionDenied",
            _ => "WriteFailed",
        }
    }
}

/// Shared by every writer of the state directory.
#[derive(Clone, Debug)]
pub struct StateDirHealth {
    dir: PathBuf,
    failing: Arc<Mutex<Option<Failure>>>,
    /// Signalled when a failure starts: the `state_dir` detector sleeps on it instead of
    /// checking on a timer (issue 24: a healthy directory costs no wake-up).
    failed_fd: Arc<Option<EventFd>>,
}

impl StateDirHealth {
    pub fn new(dir: &Path) -> StateDirHealth {
        StateDirHealth {
            dir: dir.to_path_buf(),
            failing: Arc::default(),
            failed_fd: Arc::new(EventFd::new()),
        }
    }

    /// Readable from the start of a failure until [`Self::take_wake`]; None without an
    /// eventfd (the detector then checks on its timer).
    pub(crate) fn wake_fd(&self) -> Option<std::os::fd::RawFd> {
        self.failed_fd.as_ref().as_ref().map(EventFd::raw)
    }

    /// Resets [`Self::wake_fd`].
    pub(crate) fn take_wake(&self) {
        if let Some(e) = self.failed_fd.as_ref() {
            e.drain();
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A write succeeded. Returns true when this ends a failure (log it once).
    pub(crate) fn ok(&self) -> bool {
        let was = self
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(f) = &was {
            log::info!(
                "state directory {} is writable again (it failed with: {}); leaving degraded mode",
                self.dir.display(),
                f.error
            );
        }
        was.is_some()
    }

    /// A write failed. Logged when the failure is new or its error changed, so a
    /// read-only card does not fill the journal (issue 18: 35 lines a minute).
    pub(crate) fn failed(&self, what: &str, e: &io::Error) {
        let f = Failure {
            what: what.to_string(),
            error: e.to_string(),
            kind: e.kind(),
        };
        let mut g = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let changed = g.as_ref().is_none_or(|old| old.kind != f.kind);
        if g.is_none()
            && let Some(e) = self.failed_fd.as_ref()
        {
            e.signal();
        }
        if changed {
            log::error!(
                "state directory {} unusable: {} failed: {}; running degraded: detection and metrics go on, state is kept in memory, and no action runs that cannot be recorded first",
                self.dir.display(),
                f.what,
                f.error
            );
        }
        *g = Some(f);
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Tries a small write and reports it.
    pub(crate) fn probe(&self) {
        let p = self.dir.join(PROBE_FILE);
        match write_atomic(&p, b"nodemedic write probe\n") {
            Ok(()) => {
                let _ = std::fs::remove_file(&p);
                self.ok();
            }
            Err(e) => self.failed("a test write", &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_holds_until_a_write_succeeds_and_the_probe_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let h = StateDirHealth::new(d.path());
        assert!(h.failure().is_none());
        h.failed(
            "saving state.json",
            &io::Error::from_raw_os_error(libc::EROFS),
        );
        assert_eq!(h.failure().unwrap().reason(), "ReadOnlyFilesystem");
        h.probe();
        assert!(h.failure().is_none(), "the temp dir is writable");
        assert!(!d.path().join(PROBE_FILE).exists());
        let gone = StateDirHealth::new(&d.path().join("missing/dir"));
        gone.failed(
            "the audit trail",
            &io::Error::from_raw_os_error(libc::ENOSPC),
        );
        gone.probe();
        // The probe's own error: the directory is missing.
        assert_eq!(gone.failure().unwrap().kind, io::ErrorKind::NotFound);
    }

    #[test]
    fn reasons_follow_the_errno() {
        let f = |errno| Failure {
            what: String::new(),
            error: String::new(),
            kind: io::Error::from_raw_os_error(errno).kind(),
        };
        assert_eq!(f(libc::EROFS).reason(), "ReadOnlyFilesystem");
        assert_eq!(f(libc::ENOSPC).reason(), "NoSpace");
        assert_eq!(f(libc::EACCES).reason(), "PermissionDenied");
        assert_eq!(f(libc::EIO).reason(), "WriteFailed");
    }
}
