//! The audit trail: every decision (taken, dry-run, suppressed, failed) as one JSON line in
//! `audit.jsonl` in the state directory, fsynced before the action it describes runs, so
//! the record of a reboot survives the reboot. Bounded: when the current file reaches
//! `max_entries` lines it is renamed to `audit.1.jsonl` (replacing the older one), so at
//! most two files of `max_entries` lines exist. A torn last line (power cut mid-append) is
//! skipped and counted on read, never fatal.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::state::atomic_file::sync_dir;

pub(crate) const CURRENT: &str = "audit.jsonl";
pub(crate) const PREVIOUS: &str = "audit.1.jsonl";

/// What happened to a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuditOutcome {
    /// Only recorded: a detection or a condition change, no action involved.
    Recorded,
    Done,
    Failed,
    DryRun,
    Suppressed,
}

impl AuditOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Recorded => "recorded",
            AuditOutcome::Done => "done",
            AuditOutcome::Failed => "failed",
            AuditOutcome::DryRun => "dry_run",
            AuditOutcome::Suppressed => "suppressed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339 UTC.
    pub(crate) time: String,
    pub(crate) unix: f64,
    pub(crate) boot_id: String,
    /// `detect`, `condition`, or an action name (`cordon`, `reboot`, ...).
    pub action: String,
    pub(crate) problem: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    pub(crate) outcome: AuditOutcome,
    /// Why: the rule that fired, or why it was suppressed.
    pub reason: String,
    /// Evidence: kernel lines, condition messages, the decision inputs.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub(crate) evidence: serde_json::Value,
}

pub(crate) struct AuditLog {
    dir: PathBuf,
    max_entries: u32,
    lines_in_current: u32,
}

impl AuditLog {
    pub(crate) fn open(dir: &Path, max_entries: u32) -> io::Result<AuditLog> {
        let current = dir.join(CURRENT);
        let lines_in_current = match fs::read(&current) {
            Ok(bytes) => {
                // A power cut mid-append leaves a line without its newline; end it so the
                // next entry starts on a line of its own instead of being glued to it.
                if bytes.last().is_some_and(|b| *b != b'\n') {
                    let mut f = OpenOptions::new().append(true).open(&current)?;
                    f.write_all(b"\n")?;
                    f.sync_data()?;
                }
                bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count() as u32
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(AuditLog {
            dir: dir.to_path_buf(),
            max_entries: max_entries.max(1),
            lines_in_current,
        })
    }

    /// Appends one entry durably (fsync) before returning.
    pub(crate) fn append(&mut self, entry: &AuditEntry) -> io::Result<()> {
        if self.lines_in_current >= self.max_entries {
            fs::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
            sync_dir(&self.dir)?;
            self.lines_in_current = 0;
        }
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let path = self.dir.join(CURRENT);
        let created = !path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        // One write(2) of a whole line: O_APPEND makes it land after any earlier line.
        f.write_all(&line)?;
        crate::metrics::state_bytes_written(line.len());
        f.sync_data()?;
        if created {
            sync_dir(&self.dir)?;
        }
        self.lines_in_current += 1;
        Ok(())
    }

    #[cfg(test)]
    /// The newest `n` entries, oldest first, plus how many lines could not be parsed.
    pub(crate) fn tail(&self, n: usize) -> (Vec<AuditEntry>, usize) {
        read_tail(&self.dir, n)
    }
}

/// Reads the newest `n` entries of the trail in `dir` (both files), oldest first.
pub fn read_tail(dir: &Path, n: usize) -> (Vec<AuditEntry>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for name in [PREVIOUS, CURRENT] {
        let Ok(f) = File::open(dir.join(name)) else {
            continue;
        };
        for line in BufReader::new(f).split(b'\n').map_while(Result::ok) {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<AuditEntry>(&line) {
                Ok(e) => out.push(e),
                Err(_) => bad += 1,
            }
        }
    }
    let skip = out.len().saturating_sub(n);
    (out.split_off(skip), bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u32) -> AuditEntry {
        AuditEntry {
            time: crate::timefmt::rfc3339_utc(f64::from(i)),
            unix: f64::from(i),
            boot_id: "b".into(),
            action: "cordon".into(),
            problem: "MemoryPressure".into(),
            subject: String::new(),
            outcome: AuditOutcome::Suppressed,
            reason: format!("observe mode #{i}"),
            evidence: serde_json::Value::Null,
        }
    }

    #[test]
    fn entries_survive_reopening_in_order() {
        let d = tempfile::tempdir().unwrap();
        let mut a = AuditLog::open(d.path(), 100).unwrap();
        for i in 0..5 {
            a.append(&entry(i)).unwrap();
        }
        let a2 = AuditLog::open(d.path(), 100).unwrap();
        let (t, bad) = a2.tail(3);
        assert_eq!(bad, 0);
        assert_eq!(
            t.iter().map(|e| e.unix as u32).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(t[0], entry(2));
    }

    #[test]
    fn the_trail_is_bounded_to_two_files_of_max_entries() {
        let d = tempfile::tempdir().unwrap();
        let mut a = AuditLog::open(d.path(), 10).unwrap();
        for i in 0..35 {
            a.append(&entry(i)).unwrap();
        }
        let (all, _) = a.tail(1000);
        assert!(all.len() <= 20, "{}", all.len());
        assert_eq!(all.last().unwrap().unix as u32, 34, "newest kept");
        assert_eq!(all.len(), 15, "10 in previous + 5 in current");
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let mut a = AuditLog::open(d.path(), 100).unwrap();
        a.append(&entry(1)).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join(CURRENT))
            .unwrap();
        f.write_all(b"{\"time\":\"2026-").unwrap();
        let (t, bad) = read_tail(d.path(), 10);
        assert_eq!(t.len(), 1);
        assert_eq!(bad, 1);
        // The next daemon start ends the torn line, so new entries are not glued to it.
        let mut a = AuditLog::open(d.path(), 100).unwrap();
        a.append(&entry(2)).unwrap();
        let (t, bad) = read_tail(d.path(), 10);
        assert_eq!(
            t.iter().map(|e| e.unix as u32).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(bad, 1);
    }
}
