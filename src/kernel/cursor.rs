//! Where the kernel detector remembers the last `/dev/kmsg` record it processed, so a
//! restarted daemon never counts a record twice in one boot, without wearing the SD card.
//!
//! The cursor only means something within one boot (sequence numbers restart at every
//! boot), so its home is a tmpfs: `<runtime_dir>/kmsg-cursor.json` (default
//! `/run/nodemedic`), rewritten after every pass that read new records. That costs no disk
//! write at all and keeps the guarantee exact, even after a crash. The state directory's
//! copy is written only on a clean stop (fsynced), or, when the runtime directory cannot
//! be used, at most every [`DURABLE_EVERY`]: after a crash in that fallback, records of the
//! last few minutes may be counted again, which the log says once.
//!
//! A cursor carries the kernel timestamp of its record and the state directory it belongs
//! to, so the detector can check it against the ring (see `detector.rs`): a record with
//! that sequence number and a different timestamp, or a sequence number beyond the ring's
//! newest, is not this boot's cursor.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::state::atomic_file::write_atomic;

pub(crate) const CURSOR_FILE: &str = "kmsg-cursor.json";
/// How often the state directory's copy is rewritten when the runtime directory cannot
/// be used: 288 small writes a day at most, instead of one per kernel record.
pub(crate) const DURABLE_EVERY: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) boot_id: String,
    pub(crate) last_seq: u64,
    /// The kernel timestamp (µs since boot) of record `last_seq`; absent in cursors written
    /// by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ts_usec: Option<u64>,
    /// The state directory of the daemon that wrote it: two daemons (a test's and the
    /// node's) never take each other's cursor from a shared runtime directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) state_dir: Option<String>,
}

/// The cursor's two homes and when each was last written.
pub(crate) struct CursorStore {
    runtime: Option<PathBuf>,
    durable: PathBuf,
    owner: String,
    boot_id: String,
    /// The runtime directory was usable at the last try.
    runtime_ok: bool,
    saved_volatile: Option<u64>,
    saved_durable: Option<u64>,
    durable_saved_mono: Option<Duration>,
    /// Why the runtime directory is not used, once it failed.
    fallback: Option<String>,
    /// The last save error, logged once per distinct error, not on every pass.
    error: Option<String>,
    /// How many times a save problem was logged (tests: once per distinct error).
    logged: u32,
}

impl CursorStore {
    /// `runtime_dir`: None when there is none (the durable copy is then the only one).
    pub(crate) fn new(state_dir: &Path, runtime_dir: Option<&Path>, boot_id: &str) -> Self {
        CursorStore {
            runtime: runtime_dir.map(|d| d.join(CURSOR_FILE)),
            durable: state_dir.join(CURSOR_FILE),
            owner: state_dir.display().to_string(),
            boot_id: boot_id.to_string(),
            runtime_ok: runtime_dir.is_some(),
            saved_volatile: None,
            saved_durable: None,
            durable_saved_mono: None,
            fallback: None,
            error: None,
            logged: 0,
        }
    }

    /// The newest cursor of this boot (and, from the runtime directory, of this state
    /// directory) found in either home.
    pub(crate) fn load(&mut self) -> Option<Cursor> {
        let read = |p: &Path| {
            std::fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Cursor>(&b).ok())
                .filter(|c| c.boot_id == self.boot_id)
        };
        let volatile = self
            .runtime
            .as_deref()
            .and_then(read)
            .filter(|c| c.state_dir.as_deref() == Some(self.owner.as_str()));
        let durable = read(&self.durable);
        self.saved_volatile = volatile.as_ref().map(|c| c.last_seq);
        self.saved_durable = durable.as_ref().map(|c| c.last_seq);
        match (volatile, durable) {
            (Some(v), Some(d)) => Some(if v.last_seq >= d.last_seq { v } else { d }),
            (v, d) => v.or(d),
        }
    }

    fn cursor(&self, seq: u64, ts_usec: Option<u64>) -> Cursor {
        Cursor {
            boot_id: self.boot_id.clone(),
            last_seq: seq,
            ts_usec,
            state_dir: Some(self.owner.clone()),
        }
    }

    /// After a pass: the runtime copy whenever the sequence moved; the durable copy only
    /// in the fallback, and then at most every [`DURABLE_EVERY`].
    pub(crate) fn after_pass(&mut self, seq: u64, ts_usec: Option<u64>, now: Duration) {
        if self.runtime_ok && self.saved_volatile != Some(seq) {
            match self.write_volatile(&self.cursor(seq, ts_usec)) {
                Ok(()) => {
                    self.saved_volatile = Some(seq);
                    self.ok();
                    return;
                }
                Err(e) => {
                    self.runtime_ok = false;
                    let why = format!(
                        "{e}; keeping the kmsg cursor in the state directory instead, written at most every {} min (after a crash, up to that much of the kernel log may be counted again)",
                        DURABLE_EVERY.as_secs() / 60
                    );
                    log::warn!("{why}");
                    self.logged += 1;
                    self.fallback = Some(why);
                }
            }
        }
        if self.runtime_ok {
            return;
        }
        let due = self
            .durable_saved_mono
            .is_none_or(|t| now >= t + DURABLE_EVERY);
        if due && self.saved_durable != Some(seq) {
            self.save_durable(seq, ts_usec, now);
        }
    }

    /// On a clean stop: both copies, the durable one fsynced.
    pub(crate) fn on_stop(&mut self, seq: u64, ts_usec: Option<u64>, now: Duration) {
        if self.runtime_ok && self.saved_volatile != Some(seq) {
            let _ = self.write_volatile(&self.cursor(seq, ts_usec));
        }
        if self.saved_durable != Some(seq) {
            self.save_durable(seq, ts_usec, now);
        }
    }

    fn save_durable(&mut self, seq: u64, ts_usec: Option<u64>, now: Duration) {
        let c = self.cursor(seq, ts_usec);
        match serde_json::to_vec(&c)
            .map_err(std::io::Error::other)
            .and_then(|b| write_atomic(&self.durable, &b))
        {
            Ok(()) => {
                self.saved_durable = Some(seq);
                self.durable_saved_mono = Some(now);
                self.ok();
            }
            Err(e) => {
                // Not retried before the next period: a read-only state fs must not cost a
                // failed write on every pass.
                self.durable_saved_mono = Some(now);
                self.failed(format!("cannot save the kmsg cursor: {e}"));
            }
        }
    }

    /// tmpfs: temp file and rename (atomic), no fsync (nothing to make durable).
    fn write_volatile(&self, c: &Cursor) -> std::io::Result<()> {
        let path = self.runtime.as_deref().expect("only with a runtime dir");
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| annotate(e, dir))?;
        let tmp = dir.join(format!(".{CURSOR_FILE}.tmp.{}", std::process::id()));
        let bytes = serde_json::to_vec(c).map_err(std::io::Error::other)?;
        let r = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r.map_err(|e| annotate(e, path))
    }

    fn failed(&mut self, msg: String) {
        if self.error.as_ref() != Some(&msg) {
            log::warn!("{msg}");
            self.logged += 1;
        }
        self.error = Some(msg);
    }

    fn ok(&mut self) {
        if self.error.take().is_some() {
            log::info!("the kmsg cursor is saved again");
        }
    }

    /// The current save error, or why the runtime directory is not used, for `/status`.
    pub(crate) fn error(&self) -> Option<&str> {
        self.error.as_deref().or(self.fallback.as_deref())
    }

    /// Forgets what was saved (after a re-base: the next pass writes afresh).
    pub(crate) fn forget_saved(&mut self) {
        self.saved_volatile = None;
        self.saved_durable = None;
    }
}

fn annotate(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(state: &Path, run: Option<&Path>) -> CursorStore {
        CursorStore::new(state, run, "boot-a")
    }

    #[test]
    fn passes_write_only_the_runtime_copy_and_a_clean_stop_both() {
        let d = tempfile::tempdir().unwrap();
        let (state, run) = (d.path().join("state"), d.path().join("run"));
        std::fs::create_dir_all(&state).unwrap();
        let mut s = store(&state, Some(&run));
        assert_eq!(s.load(), None);
        for seq in 1..=50 {
            s.after_pass(seq, Some(seq * 10), Duration::from_secs(seq));
        }
        assert!(
            !state.join(CURSOR_FILE).exists(),
            "no SD-card write per pass"
        );
        let mut again = store(&state, Some(&run));
        assert_eq!(
            again.load().map(|c| (c.last_seq, c.ts_usec)),
            Some((50, Some(500)))
        );
        s.on_stop(51, Some(510), Duration::from_secs(60));
        let mut durable_only = store(&state, None);
        assert_eq!(durable_only.load().map(|c| c.last_seq), Some(51));
    }

    #[test]
    fn another_state_dirs_or_another_boots_cursor_is_not_taken() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let mut sa = store(&a, Some(&run));
        sa.after_pass(7, None, Duration::ZERO);
        assert_eq!(store(&b, Some(&run)).load(), None, "a's cursor is not b's");
        assert_eq!(
            CursorStore::new(&a, Some(&run), "boot-b").load(),
            None,
            "nor another boot's"
        );
        assert_eq!(store(&a, Some(&run)).load().map(|c| c.last_seq), Some(7));
    }

    #[test]
    fn without_a_usable_runtime_dir_the_state_copy_is_written_at_most_every_period() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        // A file where the runtime directory should be: it cannot be created.
        let run = d.path().join("not-a-dir");
        std::fs::write(&run, "x").unwrap();
        let mut s = store(&state, Some(&run));
        s.after_pass(1, None, Duration::from_secs(1000));
        assert!(
            s.error().unwrap().contains("state directory instead"),
            "{:?}",
            s.error()
        );
        let read = || {
            let mut r = store(&state, None);
            r.load().map(|c| c.last_seq)
        };
        assert_eq!(read(), Some(1), "the first pass saves");
        s.after_pass(2, None, Duration::from_secs(1010));
        s.after_pass(3, None, Duration::from_secs(1200));
        assert_eq!(read(), Some(1), "not again within the period");
        s.after_pass(4, None, Duration::from_secs(1000) + DURABLE_EVERY);
        assert_eq!(read(), Some(4));
    }

    #[test]
    fn a_read_only_state_dir_is_reported_once_not_on_every_pass() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("missing/state");
        let mut s = store(&state, None);
        s.on_stop(1, None, Duration::ZERO);
        let first = s.error().unwrap().to_string();
        assert!(first.contains("cannot save the kmsg cursor"), "{first}");
        // A day of passes, a failed retry every 5 minutes: still one log line.
        for i in 2..1440 {
            s.after_pass(i, None, Duration::from_secs(i * 60));
        }
        assert_eq!(s.error(), Some(first.as_str()));
        assert_eq!(s.logged, 1, "logged once, then only on change");
        std::fs::create_dir_all(&state).unwrap();
        s.after_pass(2000, None, Duration::from_secs(2000 * 60));
        assert_eq!(s.error(), None, "saved again");
        assert_eq!(store(&state, None).load().map(|c| c.last_seq), Some(2000));
    }
}
