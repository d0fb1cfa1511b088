//! The `state_dir` detector: publishes `StateDirUnusable` while the last write to the
//! state directory failed (see `state::health`), and while it holds, tries a small write
//! every pass to notice the directory coming back.

use std::time::Duration;

use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::model::{Condition, ConditionKind};
use crate::state::StateDirHealth;

/// Rare enough to spare an SD card, soon enough that a remount is noticed within a minute.
const CHECK_EVERY: Duration = Duration::from_secs(30);

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
        CHECK_EVERY
    }

    fn sample(&mut self) -> Result<Sample, String> {
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
}
