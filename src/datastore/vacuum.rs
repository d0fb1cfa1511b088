//! The opt-in VACUUM of kine's sqlite file, as a step of `nodemedic preflight`: before
//! k3s starts, so nothing holds the database.
//!
//! Why opt-in: kine deletes rows but sqlite never gives the pages back, so a busy
//! single-server cluster's `state.db` grows to gigabytes and every query reads more of the
//! SD card. VACUUM rewrites the file compactly, but it rewrites all of it, needs free space
//! for a second copy, and holds k3s's start while it runs.
//!
//! The order, and why:
//! 1. `[kine] vacuum_before_start`, act mode, no pause file, and not within
//!    `vacuum_min_interval` of the last run (the cap); `--dry-run` only says what it would do;
//! 2. free space on the file's filesystem for two copies of the database and its WAL;
//! 3. an exclusive lock, taken without waiting: if anything holds the file, hands off;
//! 4. `PRAGMA integrity_check`: anything but `ok` and nothing is written (VACUUM of a
//!    corrupt file can lose what is left; a human decides);
//! 5. `VACUUM`, then a WAL checkpoint that truncates the WAL.
//!
//! Steps 4 and 5 run under `vacuum_budget`: SQLite's progress handler, called from inside
//! the running statement, stops it at the deadline, and an interrupted VACUUM is rolled
//! back by SQLite: the file is as it was. The outcome goes to the journal, stdout and `kine-vacuum.json` in the state
//! dir, which the daemon's kine metrics read.
//!
//! SQLite through `rusqlite` linked to the system's libsqlite3 (Debian `libsqlite3-0`,
//! a dependency the package declares), not the bundled copy: bundling adds about 1 MiB to
//! a binary that must stay under 10 MiB, for a step most nodes never run (README, "Binary
//! size").

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::config::{Config, RunMode};

/// The file in the state dir recording the last run.
pub(crate) const STATE_FILE: &str = "kine-vacuum.json";

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum VacuumOutcome {
    Done {
        before: u64,
        after: u64,
        took: Duration,
    },
    /// Not attempted, and why (not allowed, too soon, no space, in use).
    Skipped(String),
    /// `integrity_check` did not answer `ok`: nothing was written.
    Corrupt(String),
    /// The budget ran out; SQLite rolled back, the file is unchanged.
    Interrupted(String),
    Failed(String),
}

impl VacuumOutcome {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            VacuumOutcome::Done { .. } => "done",
            VacuumOutcome::Skipped(_) => "skipped",
            VacuumOutcome::Corrupt(_) => "corrupt",
            VacuumOutcome::Interrupted(_) => "interrupted",
            VacuumOutcome::Failed(_) => "failed",
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            VacuumOutcome::Done {
                before,
                after,
                took,
            } => format!(
                "VACUUM done in {} ms: {} -> {} MiB",
                took.as_millis(),
                before >> 20,
                after >> 20
            ),
            VacuumOutcome::Skipped(w) => format!("VACUUM skipped: {w}"),
            VacuumOutcome::Corrupt(w) => format!(
                "VACUUM NOT run: PRAGMA integrity_check reports {w}; the database is left as it is: back it up and repair it by hand"
            ),
            VacuumOutcome::Interrupted(w) => {
                format!("VACUUM interrupted ({w}); SQLite rolled it back, the file is unchanged")
            }
            VacuumOutcome::Failed(w) => format!("VACUUM failed: {w}"),
        }
    }
}

/// What `kine-vacuum.json` keeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct VacuumRecord {
    /// Unix time of the last attempt that got as far as the database (not skipped).
    pub(crate) last_unix: u64,
    pub(crate) last_result: String,
    pub(crate) last_message: String,
    /// Attempts by result label, ever.
    pub(crate) counts: std::collections::BTreeMap<String, u64>,
}

pub(crate) fn read_record(state_dir: &Path) -> VacuumRecord {
    std::fs::read(state_dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn wal_of(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// Free bytes for an unprivileged... for root, on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64, String> {
    let s =
        nix::sys::statvfs::statvfs(dir).map_err(|e| format!("statvfs {}: {e}", dir.display()))?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Which statement is running, for the budget check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    IntegrityCheck,
    Vacuum,
}

/// SQLite calls the progress handler every this many virtual-machine instructions: well
/// under a millisecond of work, so the budget is kept to within that. (VACUUM copies
/// tables with SQLite's transfer optimisation, a handful of instructions per row: a
/// coarser step could let a whole table's copy run past the deadline.)
const PROGRESS_EVERY: i32 = 1_000;

/// Integrity check then VACUUM of `db`, both within `budget`. Nothing else is checked
/// here (switches, cap, pause: [`preflight_step`]).
pub(crate) fn vacuum(db: &Path, budget: Duration) -> VacuumOutcome {
    let started = Instant::now();
    vacuum_until(db, budget, move |_| started.elapsed() >= budget)
}

/// As [`vacuum`], stopping (SQLite rolls back) when `stop` answers true for the running
/// phase. SQLite asks through its progress handler, from inside the running statement.
pub(crate) fn vacuum_until(
    db: &Path,
    budget: Duration,
    stop: impl FnMut(Phase) -> bool + Send + 'static,
) -> VacuumOutcome {
    if !db.exists() {
        return VacuumOutcome::Skipped(format!(
            "{} does not exist (not a sqlite server)",
            db.display()
        ));
    }
    let started = Instant::now();
    let before = size(db) + size(&wal_of(db));
    let dir = db.parent().unwrap_or(Path::new("/"));
    match free_bytes(dir) {
        Ok(free) if free < before.saturating_mul(2) => {
            return VacuumOutcome::Skipped(format!(
                "{} MiB free on {}, VACUUM needs {} MiB (two copies of the database)",
                free >> 20,
                dir.display(),
                before.saturating_mul(2) >> 20
            ));
        }
        Ok(_) => {}
        Err(e) => return VacuumOutcome::Failed(e),
    }
    let conn = match Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => return VacuumOutcome::Failed(format!("cannot open {}: {e}", db.display())),
    };
    let _ = conn.busy_timeout(Duration::ZERO);
    if let Err(e) = conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;") {
        return VacuumOutcome::Skipped(format!(
            "{} is in use ({e}); is k3s running?",
            db.display()
        ));
    }
    let phase = std::sync::Arc::new(std::sync::Mutex::new(Phase::IntegrityCheck));
    let p = phase.clone();
    let mut stop = stop;
    conn.progress_handler(
        PROGRESS_EVERY,
        Some(move || stop(*p.lock().unwrap_or_else(|e| e.into_inner()))),
    );
    let interrupted = |e: &rusqlite::Error| matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::OperationInterrupted);
    let budget_text = crate::config::ConfigDuration(budget);
    let check: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect());
    match check {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => {}
        Ok(rows) => {
            let shown: Vec<String> = rows.into_iter().take(5).collect();
            return VacuumOutcome::Corrupt(shown.join("; "));
        }
        Err(e) if interrupted(&e) => {
            return VacuumOutcome::Interrupted(format!(
                "integrity_check still running at the {budget_text} budget"
            ));
        }
        Err(e) => return VacuumOutcome::Corrupt(format!("integrity_check failed: {e}")),
    }
    *phase.lock().unwrap_or_else(|e| e.into_inner()) = Phase::Vacuum;
    if let Err(e) = conn.execute_batch("VACUUM") {
        return if interrupted(&e) {
            VacuumOutcome::Interrupted(format!("VACUUM still running at the {budget_text} budget"))
        } else {
            VacuumOutcome::Failed(e.to_string())
        };
    }
    conn.progress_handler(0, None::<fn() -> bool>);
    // In WAL mode the compacted pages sit in the WAL until a checkpoint.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    drop(conn);
    VacuumOutcome::Done {
        before,
        after: size(db) + size(&wal_of(db)),
        took: started.elapsed(),
    }
}

/// The preflight step: decides whether VACUUM may run, runs it, records and reports.
pub fn preflight_step(cfg: &Config, force_dry_run: bool) {
    let k = &cfg.kine;
    if !k.vacuum_before_start {
        return;
    }
    let db = cfg.host_root.join(k.db.trim_start_matches('/'));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut rec = read_record(&cfg.state_dir);
    let withheld = if !db.exists() {
        Some(format!(
            "{} does not exist (not a sqlite server)",
            db.display()
        ))
    } else if force_dry_run {
        Some("--dry-run given".into())
    } else if cfg.mode != RunMode::Act {
        Some("mode is \"observe\"".into())
    } else if Path::new(&cfg.policy.pause_file).exists() {
        Some(format!("paused by {}", cfg.policy.pause_file))
    } else if rec.last_unix > 0 && now < rec.last_unix + k.vacuum_min_interval.get().as_secs() {
        Some(format!(
            "the last one ran at {}, within kine.vacuum_min_interval = \"{}\"",
            crate::timefmt::rfc3339_utc(rec.last_unix as f64),
            k.vacuum_min_interval
        ))
    } else {
        None
    };
    let outcome = match withheld {
        Some(w) => VacuumOutcome::Skipped(format!(
            "{w}; would run PRAGMA integrity_check then VACUUM on {}",
            db.display()
        )),
        None => vacuum(&db, k.vacuum_budget.get()),
    };
    let text = format!("preflight: kine: {}", outcome.describe());
    match &outcome {
        VacuumOutcome::Corrupt(_) | VacuumOutcome::Failed(_) => log::error!("{text}"),
        VacuumOutcome::Interrupted(_) => log::warn!("{text}"),
        _ => log::info!("{text}"),
    }
    println!("{text}");
    *rec.counts.entry(outcome.label().to_string()).or_default() += 1;
    if !matches!(outcome, VacuumOutcome::Skipped(_)) {
        rec.last_unix = now;
    }
    rec.last_result = outcome.label().into();
    rec.last_message = outcome.describe();
    let path = cfg.state_dir.join(STATE_FILE);
    if let Err(e) = std::fs::create_dir_all(&cfg.state_dir).and_then(|()| {
        crate::state::atomic_file::write_atomic(
            &path,
            &serde_json::to_vec_pretty(&rec).unwrap_or_default(),
        )
    }) {
        log::warn!(
            "preflight: kine: cannot record the VACUUM in {}: {e}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kine-shaped database (kine's table and index) in WAL mode, with `rows` rows of
    /// 4 KiB and every other one deleted: half the file is free pages.
    fn kine_db(dir: &Path, rows: u32) -> PathBuf {
        let p = dir.join("state.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name INTEGER, created INTEGER,
               deleted INTEGER, create_revision INTEGER, prev_revision INTEGER, lease INTEGER,
               value BLOB, old_value BLOB);
             CREATE INDEX kine_name_index ON kine (name);",
        )
        .unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for i in 0..rows {
            tx.execute(
                "INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value, old_value)
                 VALUES (?1, 1, 0, ?1, 0, 0, zeroblob(4096), NULL)",
                [i],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        c.execute("DELETE FROM kine WHERE id % 2 = 0", []).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        p
    }

    #[test]
    fn a_sound_database_is_checked_then_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let db = kine_db(dir.path(), 2000);
        let before = size(&db);
        match vacuum(&db, Duration::from_secs(60)) {
            VacuumOutcome::Done {
                before: b, after, ..
            } => {
                assert_eq!(b, before);
                assert!(after < before * 7 / 10, "{before} -> {after}");
            }
            o => panic!("{o:?}"),
        }
        let c = Connection::open(&db).unwrap();
        let n: u32 = c
            .query_row("SELECT count(*) FROM kine", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1000, "every row is still there");
    }

    #[test]
    fn a_corrupt_database_is_never_vacuumed() {
        let dir = tempfile::tempdir().unwrap();
        let db = kine_db(dir.path(), 500);
        // Overwrite pages in the middle of the file (the table's b-tree), as a torn write
        // on an SD card would.
        let mut bytes = std::fs::read(&db).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 8192] {
            *b = 0x5a;
        }
        std::fs::write(&db, &bytes).unwrap();
        let o = vacuum(&db, Duration::from_secs(60));
        assert!(matches!(o, VacuumOutcome::Corrupt(_)), "{o:?}");
        assert_eq!(std::fs::read(&db).unwrap(), bytes, "not a byte written");
        assert!(o.describe().contains("NOT run"));
    }

    #[test]
    fn a_budget_too_short_interrupts_and_leaves_the_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let db = kine_db(dir.path(), 3000);
        let bytes = std::fs::read(&db).unwrap();
        let o = vacuum(&db, Duration::ZERO);
        assert!(
            matches!(&o, VacuumOutcome::Interrupted(w) if w.contains("integrity_check")),
            "{o:?}"
        );
        assert_eq!(std::fs::read(&db).unwrap(), bytes);
        // Past the check, stopped in the middle of the VACUUM itself: rolled back.
        let mut calls = 0;
        let o = vacuum_until(&db, Duration::from_secs(1), move |phase| {
            calls += 1;
            phase == Phase::Vacuum && calls > 3
        });
        assert!(
            matches!(&o, VacuumOutcome::Interrupted(w) if w.contains("VACUUM")),
            "{o:?}"
        );
        assert_eq!(
            std::fs::read(&db).unwrap(),
            bytes,
            "SQLite rolled the VACUUM back"
        );
        let c = Connection::open(&db).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
    }

    #[test]
    fn a_database_held_by_another_connection_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = kine_db(dir.path(), 10);
        let holder = Connection::open(&db).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE;").unwrap();
        let o = vacuum(&db, Duration::from_secs(60));
        assert!(
            matches!(&o, VacuumOutcome::Skipped(w) if w.contains("in use")),
            "{o:?}"
        );
        holder.execute_batch("COMMIT;").unwrap();
    }

    #[test]
    fn the_preflight_step_runs_only_when_allowed_and_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let dbdir = root.join("var/lib/rancher/k3s/server/db");
        std::fs::create_dir_all(&dbdir).unwrap();
        kine_db(&dbdir, 200);
        let mut cfg = Config {
            host_root: root,
            state_dir: dir.path().join("state"),
            ..Default::default()
        };
        cfg.policy.pause_file = dir.path().join("pause").display().to_string();
        cfg.kine.vacuum_before_start = true;
        preflight_step(&cfg, false);
        let r = read_record(&cfg.state_dir);
        assert_eq!((r.last_result.as_str(), r.last_unix), ("skipped", 0));
        assert!(r.last_message.contains("observe"), "{r:?}");
        cfg.mode = RunMode::Act;
        preflight_step(&cfg, false);
        let r = read_record(&cfg.state_dir);
        assert_eq!(r.last_result, "done", "{r:?}");
        assert!(r.last_unix > 0);
        preflight_step(&cfg, false);
        let r = read_record(&cfg.state_dir);
        assert_eq!(r.last_result, "skipped");
        assert!(r.last_message.contains("vacuum_min_interval"), "{r:?}");
        assert_eq!(r.counts["done"], 1);
    }
}
