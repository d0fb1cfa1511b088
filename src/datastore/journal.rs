//! The k3s unit's journal as lines, read without ever blocking the reader: a
//! `journalctl --follow` child feeds a thread that queues its lines; the detector drains
//! the queue on each pass.
//!
//! The shared unit-journal reader is `edge::journal` (`UnitJournal`, issue 20); this
//! minimal one predates it and sits behind a small edge of its own ([`KineJournal`]) so the
//! kine detector can move over by swapping the implementation at the wiring.
//!
//! `--grep` makes journalctl filter: nodemedic wakes only for matching lines, however much
//! k3s logs. `--lines=0` starts at the end: what was logged before the daemon started is
//! not counted again after each restart. The child is restarted (at most every
//! [`RESTART_EVERY`]) when it exits, so a journald restart costs a gap, not the feature.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines kept between two drains; beyond it the oldest go (and are counted as dropped).
const MAX_QUEUED: usize = 10_000;
/// A journalctl that exits is started again no sooner than this.
pub(crate) const RESTART_EVERY: Duration = Duration::from_secs(30);

/// The edge: lines the unit logged since the last call.
pub(crate) trait KineJournal: Send {
    /// Lines since the last call (oldest first), or why the journal cannot be read now.
    fn drain(&mut self) -> Result<Vec<String>, String>;
}

#[derive(Default)]
struct LineQueue {
    lines: VecDeque<String>,
    dropped: u64,
    /// The child's stderr, when it said something (e.g. "No journal files were found").
    error: Option<String>,
    ended: bool,
}

/// Real: `journalctl --unit <unit> --follow --lines=0 --output=cat --grep <pattern>`.
pub(crate) struct JournalctlGrep {
    argv: Vec<String>,
    child: Option<Child>,
    queue: Arc<Mutex<LineQueue>>,
    last_start: Option<Instant>,
}

impl JournalctlGrep {
    pub(crate) fn new(unit: &str, grep: &str) -> Self {
        Self::with_command(
            [
                "journalctl",
                "--unit",
                unit,
                "--follow",
                "--lines=0",
                "--output=cat",
                "--no-pager",
                "--grep",
                grep,
            ]
            .map(String::from)
            .to_vec(),
        )
    }

    /// Any command that prints lines and keeps running (tests use a shell loop).
    pub(crate) fn with_command(argv: Vec<String>) -> Self {
        JournalctlGrep {
            argv,
            child: None,
            queue: Arc::default(),
            last_start: None,
        }
    }

    fn start(&mut self) -> Result<(), String> {
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.argv[0]))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        *self.queue.lock().unwrap_or_else(|p| p.into_inner()) = LineQueue::default();
        let q = self.queue.clone();
        std::thread::Builder::new()
            .name("k3s-journal".into())
            .spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let mut g = q.lock().unwrap_or_else(|p| p.into_inner());
                    if g.lines.len() >= MAX_QUEUED {
                        g.lines.pop_front();
                        g.dropped += 1;
                    }
                    g.lines.push_back(line);
                }
                q.lock().unwrap_or_else(|p| p.into_inner()).ended = true;
            })
            .map_err(|e| format!("cannot start the journal reader thread: {e}"))?;
        let q = self.queue.clone();
        std::thread::Builder::new()
            .name("k3s-journal-err".into())
            .spawn(move || {
                if let Some(Ok(l)) = BufReader::new(err).lines().next() {
                    q.lock().unwrap_or_else(|p| p.into_inner()).error = Some(l);
                }
            })
            .map_err(|e| format!("cannot start the journal reader thread: {e}"))?;
        self.child = Some(child);
        Ok(())
    }
}

impl KineJournal for JournalctlGrep {
    fn drain(&mut self) -> Result<Vec<String>, String> {
        let (lines, ended, error) = {
            let mut g = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut g.lines), g.ended, g.error.clone())
        };
        if ended && let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.child.is_none() {
            if self.last_start.is_some_and(|t| t.elapsed() < RESTART_EVERY) {
                return Err(format!(
                    "{} exited{}; restarting it within {}",
                    self.argv[0],
                    error.map(|e| format!(" ({e})")).unwrap_or_default(),
                    crate::config::ConfigDuration(RESTART_EVERY)
                ));
            }
            self.last_start = Some(Instant::now());
            self.start()?;
        }
        Ok(lines.into())
    }
}

impl Drop for JournalctlGrep {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
/// Hands out scripted batches of lines.
#[derive(Clone, Default)]
pub(crate) struct FakeKineJournal {
    pub(crate) batches: Arc<Mutex<VecDeque<Drained>>>,
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

    fn drain_until(j: &mut JournalctlGrep, want: usize) -> Vec<String> {
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(20);
        while got.len() < want && Instant::now() < end {
            got.extend(j.drain().unwrap());
            std::thread::yield_now();
        }
        got
    }

    #[test]
    fn a_following_child_feeds_lines_without_blocking_the_drain() {
        // Two lines, then silence forever: the drain must keep returning at once.
        let mut j = JournalctlGrep::with_command(
            [
                "sh",
                "-c",
                "echo 'Slow SQL (started: x) (total time: 2s): q'; echo other; exec sleep 600",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert!(
            j.drain().unwrap().is_empty(),
            "the first drain starts the child"
        );
        let got = drain_until(&mut j, 2);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(super::super::slow_sql::is_slow_sql(&got[0]));
        for _ in 0..100 {
            assert!(j.drain().unwrap().is_empty());
        }
    }

    #[test]
    fn a_child_that_exits_is_reported_and_not_restarted_in_a_loop() {
        let mut j = JournalctlGrep::with_command(
            [
                "sh",
                "-c",
                "echo 'No journal files were found.' >&2; exit 1",
            ]
            .map(String::from)
            .to_vec(),
        );
        j.drain().unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        // The exit and its stderr line arrive on two threads: wait for both.
        let e = loop {
            match j.drain() {
                Err(e) if e.contains("No journal files") => break e,
                _ if Instant::now() > end => panic!("no error reported"),
                _ => std::thread::yield_now(),
            }
        };
        assert!(
            e.contains("exited") && e.contains("No journal files"),
            "{e}"
        );
        assert!(j.drain().is_err(), "no restart before RESTART_EVERY");
    }
}
