//! The k3s unit's `Slow SQL` lines for the kine detector, read without ever blocking it:
//! the shared unit-journal follower (`edge::journal`, a `journalctl --follow` child and
//! its reader thread) with journalctl's `--grep`, so nodemedic wakes only for matching
//! lines however much k3s logs. Starting at the end (no backlog): what was logged before
//! the daemon started is not counted again after each restart. The follower restarts
//! journalctl after a back-off when it exits, so a journald restart costs a gap, not the
//! feature.

use std::time::Duration;

use crate::edge::journal::{FollowSpec, JournalctlFollow, UnitJournal};

/// The edge: lines the unit logged since the last call.
pub(crate) trait KineJournal: Send {
    /// Lines since the last call (oldest first), or why the journal cannot be read now.
    fn drain(&mut self) -> Result<Vec<String>, String>;
}

/// What to follow: `unit`'s own lines (`_SYSTEMD_UNIT`, set by journald from the writer's
/// cgroup, so another process cannot forge them) that match `grep`.
pub(crate) fn follow_spec(unit: &str, grep: &str) -> FollowSpec {
    FollowSpec {
        matches: vec![format!("_SYSTEMD_UNIT={unit}")],
        backlog: Duration::ZERO,
        program: "journalctl".into(),
        grep: Some(grep.into()),
    }
}

/// Real: the messages of a followed journal.
pub(crate) struct FollowedLines(Box<dyn UnitJournal>);

impl FollowedLines {
    pub(crate) fn new(unit: &str, grep: &str) -> Self {
        FollowedLines(Box::new(JournalctlFollow::new(follow_spec(unit, grep))))
    }

    #[cfg(test)]
    pub(crate) fn over(j: Box<dyn UnitJournal>) -> Self {
        FollowedLines(j)
    }
}

impl KineJournal for FollowedLines {
    fn drain(&mut self) -> Result<Vec<String>, String> {
        let b = self.0.read_new();
        match b.error {
            // Lines that came before journalctl stopped still count; the error shows on
            // the next drain if it lasts.
            Some(e) if b.entries.is_empty() => Err(e),
            _ => Ok(b.entries.into_iter().map(|e| e.message).collect()),
        }
    }
}

#[cfg(test)]
/// Hands out scripted batches of lines.
#[derive(Clone, Default)]
pub(crate) struct FakeKineJournal {
    pub(crate) batches: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Drained>>>,
}

#[cfg(test)]
type Drained = Result<Vec<String>, String>;

#[cfg(test)]
impl KineJournal for FakeKineJournal {
    fn drain(&mut self) -> Result<Vec<String>, String> {
        self.batches
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(vec![]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::journal::{JournalBatch, JournalEntry};

    #[test]
    fn kine_follows_only_the_units_own_slow_sql_lines_from_now_on() {
        let s = follow_spec("k3s.service", "Slow SQL");
        let argv = JournalctlFollow::argv(&s, None);
        assert!(argv.contains(&"--grep=Slow SQL".to_string()), "{argv:?}");
        assert!(argv.contains(&"--since=-0s".to_string()), "{argv:?}");
        assert_eq!(
            argv.last().map(String::as_str),
            Some("_SYSTEMD_UNIT=k3s.service")
        );
    }

    /// Scripted batches with their errors.
    struct Batches(std::collections::VecDeque<JournalBatch>);

    impl UnitJournal for Batches {
        fn read_new(&mut self) -> JournalBatch {
            self.0.pop_front().unwrap_or_default()
        }
    }

    #[test]
    fn the_followed_messages_are_the_lines_and_an_error_without_lines_is_an_error() {
        let entry = |m: &str| JournalEntry {
            message: m.into(),
            ..Default::default()
        };
        let exited = Some("journalctl exited; starting it again in 5 s".to_string());
        let mut j = FollowedLines::over(Box::new(Batches(
            vec![
                JournalBatch {
                    entries: vec![entry("Slow SQL (total time: 2s): q"), entry("Slow SQL 2")],
                    dropped: 0,
                    error: exited.clone(),
                },
                JournalBatch {
                    entries: vec![],
                    dropped: 0,
                    error: exited,
                },
            ]
            .into(),
        )));
        assert_eq!(
            j.drain().unwrap(),
            ["Slow SQL (total time: 2s): q", "Slow SQL 2"]
        );
        assert!(j.drain().unwrap_err().contains("journalctl exited"));
        assert_eq!(j.drain().unwrap(), Vec::<String>::new());
    }
}
