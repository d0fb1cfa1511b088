//! The kine detector (`[kine]`): on a k3s server whose datastore is sqlite (kine's
//! `state.db` exists), the sizes of the database and its WAL, and `KineSlowSQL` (a
//! warning) at `slow_sql_count` `Slow SQL` lines within `slow_sql_window` in the k3s
//! unit's journal. Also exports the outcome of preflight's opt-in VACUUM (its record in the
//! state dir).
//!
//! The journal reader starts only once the database is seen, so an agent or an etcd
//! server runs no `journalctl`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::journal::{FollowedLines, KineJournal};
use super::metrics::{DatastoreResultLabels, KineMetrics};
use super::slow_sql::SlowSqlWindow;
use crate::config::KineSection;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::{Clock, HostFiles};
use std::sync::Arc;

pub(crate) struct KineDeps {
    pub(crate) files: Arc<dyn HostFiles>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Option<KineMetrics>,
    /// Where preflight records its VACUUM; None for one-shot commands.
    pub(crate) state_dir: Option<PathBuf>,
    /// None: `journalctl --follow` on `journal_unit`, started when the database is seen.
    pub(crate) journal: Option<Box<dyn KineJournal>>,
}

pub(crate) struct KineDetector {
    cfg: KineSection,
    deps: KineDeps,
    window: SlowSqlWindow,
    /// Counts already added to the vacuum counters, by result.
    vacuums_counted: std::collections::BTreeMap<String, u64>,
    /// The last pass found no database: not a k3s server on sqlite (yet).
    absent: bool,
}

/// While there is no database, passes are this many intervals apart: a server's sqlite
/// grows over weeks, so a k3s installed later is seen within 30 s at the default 10 s,
/// on the shared thread's 30 s tick of the clock and limits detectors (issue 24).
pub(crate) const ABSENT_SLOWDOWN: u32 = 3;

impl KineDetector {
    pub(crate) fn new(cfg: KineSection, deps: KineDeps) -> Self {
        KineDetector {
            window: SlowSqlWindow::new(cfg.slow_sql_window.get(), cfg.slow_sql_count),
            cfg,
            deps,
            vacuums_counted: Default::default(),
            absent: false,
        }
    }

    fn size(&self, rel: &str) -> Option<u64> {
        std::fs::metadata(self.deps.files.path(rel))
            .ok()
            .map(|m| m.len())
    }

    fn refresh_vacuum_metrics(&mut self) {
        let (Some(m), Some(dir)) = (&self.deps.metrics, &self.deps.state_dir) else {
            return;
        };
        let rec = super::vacuum::read_record(dir);
        m.vacuum_last.set(rec.last_unix as f64);
        for (result, n) in &rec.counts {
            let seen = self.vacuums_counted.entry(result.clone()).or_default();
            if *n > *seen {
                m.vacuums
                    .get_or_create(&DatastoreResultLabels {
                        result: result.clone(),
                    })
                    .inc_by(*n - *seen);
                *seen = *n;
            }
        }
    }
}

impl Detector for KineDetector {
    fn name(&self) -> &'static str {
        "kine"
    }

    /// Stats of local files and a drain of the journal follower's channel: bounded, as the
    /// limits detector's local statvfs (shared periodic thread).
    fn shares_timer(&self) -> bool {
        true
    }

    fn interval(&self) -> Duration {
        if self.absent {
            self.cfg.interval.get() * ABSENT_SLOWDOWN
        } else {
            self.cfg.interval.get()
        }
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let db = self.cfg.db.trim_start_matches('/').to_string();
        let db_size = self.size(&db);
        self.absent = db_size.is_none();
        let Some(db_size) = db_size else {
            return Ok(Sample {
                info: json!({"sqlite": false, "db": self.cfg.db}),
                ..Default::default()
            });
        };
        let wal_size = self.size(&format!("{db}-wal")).unwrap_or(0);
        let now = self.deps.clock.monotonic();
        if self.deps.journal.is_none() {
            self.deps.journal = Some(Box::new(FollowedLines::new(
                &self.cfg.journal_unit,
                "Slow SQL",
            )));
        }
        let journal = self.deps.journal.as_mut().expect("set above").drain();
        let mut notes = Vec::new();
        let (new, journal_error) = match &journal {
            Ok(lines) => (
                self.window.record(now, lines.iter().map(String::as_str)),
                None,
            ),
            Err(e) => {
                notes.push(CheckNote::new(
                    NoteLevel::Warn,
                    "k3s journal",
                    format!(
                        "cannot read {}'s journal for `Slow SQL`: {e}",
                        self.cfg.journal_unit
                    ),
                ));
                (0, Some(e.clone()))
            }
        };
        let (in_window, condition) = self.window.judge(now);
        if let Some(m) = &self.deps.metrics {
            m.db_size.set(db_size as i64);
            m.wal_size.set(wal_size as i64);
            m.slow_sql.inc_by(new);
            m.slow_sql_in_window.set(i64::from(in_window));
            m.journal_up.set(i64::from(journal_error.is_none()));
        }
        self.refresh_vacuum_metrics();
        Ok(Sample {
            conditions: condition.into_iter().collect(),
            info: json!({
                "sqlite": true,
                "db": self.cfg.db,
                "db_size_bytes": db_size,
                "wal_size_bytes": wal_size,
                "slow_sql_in_window": in_window,
                "journal_error": journal_error,
            }),
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::journal::FakeKineJournal;
    use super::*;
    use crate::edge::{FakeClock, RootedFiles};
    use crate::model::ConditionKind;

    const SLOW: &str = "time=\"2025-03-02T10:00:01Z\" level=info msg=\"Slow SQL (started: 2025-03-02 10:00:00 +0000 UTC) (total time: 2.1s): SELECT 1\"";

    #[test]
    fn without_a_database_the_detector_slows_to_the_absent_pace_until_one_appears() {
        let root = tempfile::tempdir().unwrap();
        let mut d = KineDetector::new(
            KineSection::default(),
            KineDeps {
                files: Arc::new(RootedFiles::new(root.path())),
                clock: Arc::new(FakeClock::new(0, Duration::from_secs(10))),
                metrics: None,
                state_dir: None,
                journal: Some(Box::new(FakeKineJournal::default())),
            },
        );
        let every = KineSection::default().interval.get();
        assert_eq!(d.interval(), every, "before its first pass");
        assert_eq!(d.sample().unwrap().info["sqlite"], false);
        assert_eq!(d.interval(), every * 3);
        let dbdir = root.path().join("var/lib/rancher/k3s/server/db");
        std::fs::create_dir_all(&dbdir).unwrap();
        std::fs::write(dbdir.join("state.db"), vec![0u8; 4096]).unwrap();
        assert_eq!(d.sample().unwrap().info["sqlite"], true);
        assert_eq!(
            d.interval(),
            every,
            "a server's database is watched at its own pace"
        );
    }

    #[test]
    fn sizes_come_from_the_sqlite_files_and_ten_slow_lines_raise_the_warning() {
        let root = tempfile::tempdir().unwrap();
        let dbdir = root.path().join("var/lib/rancher/k3s/server/db");
        std::fs::create_dir_all(&dbdir).unwrap();
        std::fs::write(dbdir.join("state.db"), vec![0u8; 8192]).unwrap();
        std::fs::write(dbdir.join("state.db-wal"), vec![0u8; 4096]).unwrap();
        let journal = FakeKineJournal::default();
        {
            let mut b = journal.batches.lock().unwrap();
            b.push_back(Ok(vec![SLOW.to_string(); 4]));
            b.push_back(Err("journalctl exited".into()));
            b.push_back(Ok(vec![SLOW.to_string(); 6]));
        }
        let clock = Arc::new(FakeClock::new(0, Duration::from_secs(10)));
        let mut reg = prometheus_client::registry::Registry::default();
        let mut d = KineDetector::new(
            KineSection::default(),
            KineDeps {
                files: Arc::new(RootedFiles::new(root.path())),
                clock: clock.clone(),
                metrics: Some(KineMetrics::register(&mut reg)),
                state_dir: None,
                journal: Some(Box::new(journal)),
            },
        );
        let s = d.sample().unwrap();
        assert!(s.conditions.is_empty());
        assert_eq!(s.info["db_size_bytes"], 8192);
        assert_eq!(s.info["wal_size_bytes"], 4096);
        clock.advance(Duration::from_secs(10));
        let s = d.sample().unwrap();
        assert_eq!(s.notes.len(), 1, "the journal error is a check note");
        clock.advance(Duration::from_secs(10));
        let s = d.sample().unwrap();
        assert_eq!(s.conditions[0].kind, ConditionKind::KineSlowSql);
        let text = crate::metrics::encode(&reg);
        assert!(text.contains("nodemedic_kine_db_size_bytes 8192"), "{text}");
        assert!(text.contains("nodemedic_kine_slow_sql_total 10"), "{text}");
        // Two minutes later the window is empty again.
        clock.advance(Duration::from_secs(121));
        assert!(d.sample().unwrap().conditions.is_empty());
    }

    #[test]
    fn without_a_sqlite_file_nothing_runs() {
        let root = tempfile::tempdir().unwrap();
        let mut d = KineDetector::new(
            KineSection::default(),
            KineDeps {
                files: Arc::new(RootedFiles::new(root.path())),
                clock: Arc::new(FakeClock::default()),
                metrics: None,
                state_dir: None,
                journal: None,
            },
        );
        let s = d.sample().unwrap();
        assert_eq!(s.info["sqlite"], false);
        assert!(d.deps.journal.is_none(), "no journalctl without a database");
    }
}
