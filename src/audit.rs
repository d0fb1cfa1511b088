//! The audit trail: every decision (taken, dry-run, suppressed, failed) as one JSON line in
//! `audit.jsonl` in the state directory, fsynced before the action it describes runs, so
//! the record of a reboot survives the reboot. Bounded: when the current file reaches
//! `max_entries` lines it is renamed to `audit.1.jsonl` (replacing the older one), so at
//! most two files of `max_entries` lines exist. A torn last line (power cut mid-append) is
//! skipped and counted on read, never fatal.
//!
//! A torn line never swallows the next record: after an append that failed (ENOSPC can
//! leave part of a line, issue 18) or a start that found the file not ending in a
//! newline, the next record is written as one `write(2)` starting with a newline. Opening
//! the trail writes nothing, so a read-only state directory can still be read.

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
    /// Written before an action runs; the action runs only once this is on disk. The
    /// outcome follows in a record of its own.
    Started,
    Done,
    Failed,
    DryRun,
    Suppressed,
}

impl AuditOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Recorded => "recorded",
            AuditOutcome::Started => "started",
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
    /// The current file may end inside a line: start the next record on a line of its own.
    needs_newline: bool,
    health: Option<crate::state::StateDirHealth>,
}

impl AuditLog {
    pub(crate) fn open(dir: &Path, max_entries: u32) -> io::Result<AuditLog> {
        let current = dir.join(CURRENT);
        let (lines_in_current, needs_newline) = match fs::read(&current) {
            Ok(bytes) => (
                bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count() as u32,
                // A power cut mid-append leaves a line without its newline.
                bytes.last().is_some_and(|b| *b != b'\n'),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, false),
            Err(e) => return Err(e),
        };
        Ok(AuditLog {
            dir: dir.to_path_buf(),
            max_entries: max_entries.max(1),
            lines_in_current,
            needs_newline,
            health: None,
        })
    }

    /// A trail whose current file could not be read: its lines are not counted (rotation
    /// comes later) and the next record starts on a line of its own.
    pub(crate) fn unread(dir: &Path, max_entries: u32) -> AuditLog {
        AuditLog {
            dir: dir.to_path_buf(),
            max_entries: max_entries.max(1),
            lines_in_current: 0,
            needs_newline: true,
            health: None,
        }
    }

    /// Reports every append to `health` (the daemon's degraded mode).
    pub(crate) fn with_health(mut self, health: crate::state::StateDirHealth) -> Self {
        self.health = Some(health);
        self
    }

    /// Appends one entry durably (fsync) before returning.
    pub(crate) fn append(&mut self, entry: &AuditEntry) -> io::Result<()> {
        let r = self.try_append(entry);
        if let Some(h) = &self.health {
            match &r {
                Ok(()) => {
                    h.ok();
                }
                Err(e) => h.failed("appending to the audit trail", e),
            }
        }
        r
    }

    fn try_append(&mut self, entry: &AuditEntry) -> io::Result<()> {
        if self.lines_in_current >= self.max_entries {
            fs::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
            sync_dir(&self.dir)?;
            self.lines_in_current = 0;
            self.needs_newline = false;
        }
        let mut line = Vec::new();
        if self.needs_newline {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let path = self.dir.join(CURRENT);
        let created = !path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        // One write(2) of a whole line: O_APPEND makes it land after any earlier line. If
        // any of it fails, part of it may be in the file: the next record starts afresh.
        let written = f.write_all(&line).and_then(|()| f.sync_data());
        if let Err(e) = written {
            self.needs_newline = true;
            return Err(e);
        }
        self.needs_newline = false;
        crate::metrics::state_bytes_written(line.len());
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

    /// Root to mount a filesystem; skipped loudly elsewhere, never under CI (`CI=true`).
    fn root_or_skip(what: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("CI must not skip: {what} needs root");
        }
        eprintln!("\n*** SKIP: {what} needs root; this test did NOT run ***\n");
        false
    }

    /// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
    struct TinyFs(tempfile::TempDir);

    impl TinyFs {
        fn mount(size: &str) -> TinyFs {
            let d = tempfile::tempdir().unwrap();
            nix::mount::mount(
                Some("tmpfs"),
                d.path(),
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={size},mode=0700").as_str()),
            )
            .unwrap();
            TinyFs(d)
        }
    }

    impl Drop for TinyFs {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// Writes `path` until the filesystem is full.
    fn fill(path: &Path) {
        let mut f = File::create(path).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling: {e}"),
            }
        }
    }

    #[test]
    fn enospc_mid_append_never_costs_a_record_written_after_space_comes_back() {
        if !root_or_skip("mounting a tiny tmpfs") {
            return;
        }
        let fs = TinyFs::mount("64k");
        let dir = fs.0.path();
        let mut a = AuditLog::open(dir, 100).unwrap();
        a.append(&entry(1)).unwrap();
        fill(&dir.join("filler"));
        // A record bigger than a page: part of it fits in the file's last page, the rest
        // finds no space, so the write is cut short and then fails.
        let mut big = entry(2);
        big.evidence = serde_json::Value::String("x".repeat(3 * 4096));
        let e = a.append(&big).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        let text = fs::read(dir.join(CURRENT)).unwrap();
        assert_ne!(
            text.last(),
            Some(&b'\n'),
            "a fragment was left (the case under test)"
        );

        fs::remove_file(dir.join("filler")).unwrap();
        a.append(&entry(3)).unwrap();
        a.append(&entry(4)).unwrap();
        let (t, bad) = read_tail(dir, 10);
        assert_eq!(
            t.iter().map(|e| e.unix as u32).collect::<Vec<_>>(),
            vec![1, 3, 4],
            "every record written after space came back is readable"
        );
        assert_eq!(bad, 1, "only the fragment is unreadable");

        // The same after a restart that finds the fragment at the end.
        fill(&dir.join("filler"));
        let _ = a.append(&big);
        fs::remove_file(dir.join("filler")).unwrap();
        let mut a = AuditLog::open(dir, 100).unwrap();
        a.append(&entry(5)).unwrap();
        let (t, _) = read_tail(dir, 10);
        assert_eq!(t.last().unwrap().unix as u32, 5);
    }

    #[test]
    fn opening_the_trail_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(CURRENT), b"{\"torn").unwrap();
        let before = fs::metadata(d.path().join(CURRENT)).unwrap().len();
        let mut a = AuditLog::open(d.path(), 100).unwrap();
        assert_eq!(fs::metadata(d.path().join(CURRENT)).unwrap().len(), before);
        a.append(&entry(7)).unwrap();
        let (t, bad) = read_tail(d.path(), 10);
        assert_eq!((t.len(), bad), (1, 1));
    }
}
