//! The `state_dir` detector: publishes `StateDirUnusable` while the last write to the
//! state directory failed (see `state::health`), and while it holds, tries a small write
//! every pass to notice the directory coming back. While the directory is healthy it
//! sleeps until a writer reports a failure (the health's eventfd), so it costs no wake-up.

use std::os::fd::RawFd;
use std::time::Duration;

use crate::detect::{CheckNote, Detector, NoteLevel, Sample, WakeOn};
use crate::model::{Condition, ConditionKind};
use crate::state::StateDirHealth;

/// While failing: rare enough to spare an SD card, soon enough that a remount is noticed
/// within a minute. Also the healthy pace when no eventfd could be had.
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// While healthy with the eventfd: only a ceiling (a failure wakes the detector at once);
/// the thread vouches for the wait, so it never wakes just to beat.
const HEALTHY_CEILING: Duration = Duration::from_secs(3600);

/// Publishes `StateDirUnusable` while the last write to the state directory failed.
pub(crate) struct StateDirDetector {
    health: StateDirHealth,
}

impl StateDirDetector {
    pub(crate) fn new(health: StateDirHealth) -> Self {
        StateDirDetector { health }
    }
}

impl Detector for StateDirDetector {
    fn name(&self) -> &'static str {
        "state_dir"
    }

    fn interval(&self) -> Duration {
        if self.health.failure().is_none() && self.health.wake_fd().is_some() {
            HEALTHY_CEILING
        } else {
            CHECK_EVERY
        }
    }

    fn wake_fd(&self) -> Option<(RawFd, WakeOn)> {
        self.health.wake_fd().map(|fd| (fd, WakeOn::Readable))
    }

    fn sample(&mut self) -> Result<Sample, String> {
        // Re-armed before reading the state: a failure reported after this wakes the next
        // wait, one reported before is read below.
        self.health.take_wake();
        if self.health.failure().is_some() {
            self.health.probe();
        }
        let dir = self.health.dir().display().to_string();
        let Some(f) = self.health.failure() else {
            return Ok(Sample {
                info: serde_json::json!({"dir": dir, "writable": true}),
                notes: vec![CheckNote::new(NoteLevel::Ok, "state directory", "writable")],
                ..Default::default()
            });
        };
        Ok(Sample {
            conditions: vec![Condition::new(
                ConditionKind::StateDirUnusable,
                dir.clone(),
                f.reason(),
                format!(
                    "{} failed: {}; running degraded: detection and metrics go on, state is kept in memory, no action runs that cannot be recorded first; free space or remount {dir} read-write",
                    f.what, f.error
                ),
            )],
            info: serde_json::json!({"dir": dir, "writable": false, "error": f.error, "what": f.what}),
            notes: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn the_condition_holds_while_writes_fail_and_clears_once_the_probe_succeeds() {
        let d = tempfile::tempdir().unwrap();
        let h = StateDirHealth::new(d.path());
        let mut det = StateDirDetector::new(h.clone());
        assert!(det.sample().unwrap().conditions.is_empty());
        let gone = StateDirHealth::new(&d.path().join("missing/dir"));
        gone.failed(
            "the audit trail",
            &io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let s = StateDirDetector::new(gone.clone()).sample().unwrap();
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].kind, ConditionKind::StateDirUnusable);
        assert!(
            s.conditions[0].message.contains("degraded"),
            "{:?}",
            s.conditions
        );
        // Writable again: the probe of this pass clears it.
        h.failed(
            "saving state.json",
            &io::Error::from_raw_os_error(libc::EROFS),
        );
        assert!(det.sample().unwrap().conditions.is_empty());
    }

    #[test]
    fn a_healthy_directory_sleeps_until_a_write_fails_and_then_checks_on_a_timer() {
        use crate::edge::eventfd::readable;
        let d = tempfile::tempdir().unwrap();
        let gone = StateDirHealth::new(&d.path().join("missing/dir"));
        let mut det = StateDirDetector::new(gone.clone());
        assert!(det.sample().unwrap().conditions.is_empty());
        assert_eq!(det.interval(), HEALTHY_CEILING);
        let (fd, on) = det.wake_fd().expect("an eventfd");
        assert_eq!(on, WakeOn::Readable);
        assert!(!readable(fd), "nothing failed yet");
        gone.failed(
            "the audit trail",
            &io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(readable(fd), "the first failure wakes the detector");
        assert_eq!(det.interval(), CHECK_EVERY);
        // The pass re-arms the fd; its own failing probe does not wake it again (no spin).
        assert_eq!(det.sample().unwrap().conditions.len(), 1);
        assert!(!readable(fd));
        gone.failed(
            "saving state.json",
            &io::Error::from_raw_os_error(libc::EROFS),
        );
        assert!(!readable(fd), "a failure that goes on is not news");
        assert_eq!(det.interval(), CHECK_EVERY);
    }
}
