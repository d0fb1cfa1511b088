//! Following a unit's journal without ever blocking the caller: [`UnitJournal`].
//!
//! The real follower ([`JournalctlFollow`]) runs `journalctl --follow --output=json` with
//! the caller's matches as a child process, and a reader thread that parses each entry and
//! hands it over a bounded channel. [`UnitJournal::read_new`] only drains that channel, so
//! a detector's pass costs nothing when nothing was logged, and a slow or stuck journal
//! (a journal file on a dying SD card) can only make the lines late, never the detector.
//! When journalctl exits it is started again after a back-off (5 s doubling to 5 min),
//! continuing after the last cursor it delivered, so nothing is read twice or skipped.
//!
//! Why a child process and not sd-journal in-process: the journal files are mmapped by the
//! reader, and their pages would count in nodemedic's own RSS (goal: under 10 MiB); and a
//! read fault on a damaged journal file kills the reader, which here is journalctl.
//!
//! Reuse: any subsystem that follows a unit's log builds a [`FollowSpec`] (the `journalctl`
//! matches, e.g. `_SYSTEMD_UNIT=k3s.service + SYSLOG_IDENTIFIER=k3s`) and keeps a
//! `Box<dyn UnitJournal>`; tests hand in a [`FakeJournal`]. The k3s detector uses it for
//! k3s's kubelet and etcd lines; the datastore detector can follow kine's `Slow SQL` lines
//! the same way.
//!
//! Trust: `_UID` and `_SYSTEMD_UNIT` are set by journald from the writer's credentials and
//! cgroup (systemd.journal-fields(7), "trusted fields"); `SYSLOG_IDENTIFIER` is whatever
//! the writer chose. A caller that acts on a line should require one of the trusted ones
//! (see [`JournalEntry::trusted_for`]).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Entries buffered between two reads; beyond this the reader drops (and counts) entries
/// rather than stall journalctl. A busy k3s logs a few lines a second; detectors read
/// every few seconds. The buffer grows with what waits and shrinks as it is read: a
/// preallocated channel of this many entries held 512 KiB, all of it resident (issue 20).
pub(crate) const CHANNEL_ENTRIES: usize = 4096;

/// The reader's side of the buffer: sends until `CHANNEL_ENTRIES` wait unread.
struct BoundedTx {
    tx: Sender<JournalEntry>,
    waiting: Arc<AtomicUsize>,
}

impl BoundedTx {
    /// False when the buffer is full (the entry is dropped); Err when the reader is gone.
    fn send(&self, e: JournalEntry) -> Result<bool, ()> {
        if self.waiting.load(Ordering::Acquire) >= CHANNEL_ENTRIES {
            return Ok(false);
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.tx.send(e).map(|()| true).map_err(|_| ())
    }
}
/// A journal entry line longer than this is cut (journald's own line limit is 48 KiB by
/// default, LineMax= in journald.conf(5)).
pub(crate) const MAX_LINE_BYTES: usize = 64 << 10;
/// First restart delay after journalctl exits, doubled up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A journalctl that ran this long was healthy: the next restart starts at the first delay.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The fields of one journal entry that nodemedic reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    pub message: String,
    /// `__REALTIME_TIMESTAMP`, microseconds since the epoch.
    pub realtime_usec: u64,
    /// `_UID` (trusted).
    pub uid: Option<u32>,
    /// `_SYSTEMD_UNIT` (trusted).
    pub unit: Option<String>,
    /// `SYSLOG_IDENTIFIER` (chosen by the writer).
    pub identifier: Option<String>,
    /// `PRIORITY`, syslog level 0 (emerg) to 7 (debug).
    pub priority: Option<u8>,
    /// `__CURSOR`: where to continue after this entry.
    #[serde(skip)]
    pub cursor: Option<String>,
}

impl JournalEntry {
    /// Parses one line of `journalctl --output=json`. Fields journald stored as bytes
    /// (not valid UTF-8) come as arrays of numbers and are decoded lossily.
    pub fn from_json(line: &str) -> Option<JournalEntry> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let text = |k: &str| -> Option<String> {
            match v.get(k)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(a) => {
                    let bytes: Vec<u8> = a
                        .iter()
                        .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect();
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            }
        };
        Some(JournalEntry {
            message: text("MESSAGE")?,
            realtime_usec: text("__REALTIME_TIMESTAMP")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            uid: text("_UID").and_then(|t| t.parse().ok()),
            unit: text("_SYSTEMD_UNIT"),
            identifier: text("SYSLOG_IDENTIFIER"),
            priority: text("PRIORITY").and_then(|t| t.parse().ok()),
            cursor: text("__CURSOR"),
        })
    }

    /// Written by `unit` itself (journald's cgroup attribution) or by root: a line an
    /// unprivileged user wrote with `logger -t k3s` is neither.
    pub fn trusted_for(&self, unit: &str) -> bool {
        self.unit.as_deref() == Some(unit) || self.uid == Some(0)
    }
}

/// What one [`UnitJournal::read_new`] found.
#[derive(Debug, Default)]
pub struct JournalBatch {
    pub entries: Vec<JournalEntry>,
    /// Entries dropped since the last read because the buffer was full.
    pub dropped: u64,
    /// Why nothing can be read right now (journalctl missing, exited), if so.
    pub error: Option<String>,
}

/// A followed journal. `read_new` never blocks.
pub trait UnitJournal: Send {
    fn read_new(&mut self) -> JournalBatch;
}

/// What to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowSpec {
    /// journalctl match arguments, e.g. `["_SYSTEMD_UNIT=k3s.service", "+",
    /// "SYSLOG_IDENTIFIER=k3s"]` (`+` is journalctl's OR).
    pub matches: Vec<String>,
    /// On the first start, entries this far back are delivered too (the caller tells old
    /// from new by `realtime_usec`). Later starts continue after the last cursor.
    pub backlog: Duration,
    /// The program; `journalctl` on PATH normally.
    pub program: String,
    /// Only entries whose message matches this (journalctl's `--grep`, a PCRE2 pattern):
    /// journalctl filters, so the reader wakes only for those, however much the unit logs.
    pub grep: Option<String>,
}

/// journalctl as a child process with a reader thread; see the module docs.
pub struct JournalctlFollow {
    spec: FollowSpec,
    running: Option<JournalChild>,
    /// Last cursor delivered, shared with the reader thread.
    cursor: Arc<Mutex<Option<String>>>,
    dropped: Arc<Mutex<u64>>,
    next_start: Option<Instant>,
    backoff: Duration,
    last_error: Option<String>,
}

struct JournalChild {
    child: Child,
    rx: Receiver<JournalEntry>,
    waiting: Arc<AtomicUsize>,
    started: Instant,
}

impl JournalctlFollow {
    pub fn new(spec: FollowSpec) -> Self {
        JournalctlFollow {
            spec,
            running: None,
            cursor: Arc::default(),
            dropped: Arc::default(),
            next_start: None,
            backoff: FIRST_BACKOFF,
            last_error: None,
        }
    }

    /// The command line for the next start (pure, for tests and the log).
    pub(crate) fn argv(spec: &FollowSpec, cursor: Option<&str>) -> Vec<String> {
        let mut a = vec![
            "--follow".to_string(),
            "--output=json".into(),
            "--all".into(),
            "--no-pager".into(),
            "--quiet".into(),
            "--output-fields=MESSAGE,_UID,_SYSTEMD_UNIT,SYSLOG_IDENTIFIER,PRIORITY".into(),
        ];
        match cursor {
            Some(c) => a.push(format!("--after-cursor={c}")),
            None => {
                a.push(format!("--since=-{}s", spec.backlog.as_secs()));
                // --since alone still shows only the last 10 lines with --follow.
                a.push("--lines=all".into());
            }
        }
        if let Some(g) = &spec.grep {
            a.push(format!("--grep={g}"));
        }
        a.extend(spec.matches.iter().cloned());
        a
    }

    fn start(&mut self) -> Result<(), String> {
        let cursor = self
            .cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let argv = Self::argv(&self.spec, cursor.as_deref());
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // journalctl dies with the thread that started it (the detector), never orphaned.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.spec.program))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let tx = BoundedTx {
            tx,
            waiting: waiting.clone(),
        };
        let (cursor, dropped) = (self.cursor.clone(), self.dropped.clone());
        let spawned = std::thread::Builder::new()
            .name("journal-reader".into())
            .stack_size(256 << 10)
            .spawn(move || read_entries(stdout, tx, cursor, dropped));
        if let Err(e) = spawned {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("cannot start the journal reader thread: {e}"));
        }
        self.running = Some(JournalChild {
            child,
            rx,
            waiting,
            started: Instant::now(),
        });
        Ok(())
    }

    fn schedule_restart(&mut self, why: String) {
        self.next_start = Some(Instant::now() + self.backoff);
        self.last_error = Some(format!(
            "{why}; starting it again in {} s",
            self.backoff.as_secs()
        ));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// The reader thread: one JSON entry per line; ends at EOF (journalctl exited).
fn read_entries(
    out: impl Read,
    tx: BoundedTx,
    cursor: Arc<Mutex<Option<String>>>,
    dropped: Arc<Mutex<u64>>,
) {
    let mut r = BufReader::new(out);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut r)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') {
            // Longer than the limit: skip the rest of this entry.
            let mut rest = Vec::new();
            if r.read_until(b'\n', &mut rest).unwrap_or(0) == 0 {
                return;
            }
            continue;
        }
        let Some(e) = JournalEntry::from_json(String::from_utf8_lossy(&buf).trim_end()) else {
            continue;
        };
        if let Some(c) = &e.cursor {
            *cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        }
        match tx.send(e) {
            Ok(true) => {}
            Ok(false) => *dropped.lock().unwrap_or_else(|p| p.into_inner()) += 1,
            Err(()) => return,
        }
    }
}

impl UnitJournal for JournalctlFollow {
    fn read_new(&mut self) -> JournalBatch {
        let mut batch = JournalBatch::default();
        if self.running.is_none() {
            if self.next_start.is_some_and(|t| Instant::now() < t) {
                batch.error = self.last_error.clone();
                return batch;
            }
            if let Err(e) = self.start() {
                self.schedule_restart(e);
                batch.error = self.last_error.clone();
                return batch;
            }
        }
        let run = self.running.as_mut().expect("started above");
        let mut ended = false;
        loop {
            match run.rx.try_recv() {
                Ok(e) => {
                    run.waiting.fetch_sub(1, Ordering::AcqRel);
                    batch.entries.push(e);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            let mut run = self.running.take().expect("running");
            let _ = run.child.kill();
            let status = run
                .child
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            if run.started.elapsed() >= HEALTHY_RUN {
                self.backoff = FIRST_BACKOFF;
            }
            self.schedule_restart(format!("{} exited ({status})", self.spec.program));
            batch.error = self.last_error.clone();
        } else {
            self.last_error = None;
        }
        batch.dropped =
            std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|p| p.into_inner()));
        batch
    }
}

impl Drop for JournalctlFollow {
    fn drop(&mut self) {
        if let Some(mut r) = self.running.take() {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
/// Scripted batches, one per read; afterwards empty batches.
#[derive(Default)]
pub struct FakeJournal {
    pub batches: std::collections::VecDeque<Vec<JournalEntry>>,
}

#[cfg(any(test, feature = "fakes"))]
impl UnitJournal for FakeJournal {
    fn read_new(&mut self) -> JournalBatch {
        JournalBatch {
            entries: self.batches.pop_front().unwrap_or_default(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_text_or_byte_array_fields_and_trust_comes_from_trusted_fields() {
        let e = JournalEntry::from_json(
            r#"{"__CURSOR":"s=abc;i=1","__REALTIME_TIMESTAMP":"1763700000123456","MESSAGE":"E0101 PLEG is not healthy","_UID":"0","_SYSTEMD_UNIT":"k3s.service","SYSLOG_IDENTIFIER":"k3s","PRIORITY":"6"}"#,
        )
        .unwrap();
        assert_eq!(e.message, "E0101 PLEG is not healthy");
        assert_eq!(e.realtime_usec, 1_763_700_000_123_456);
        assert_eq!(e.priority, Some(6));
        assert_eq!(e.cursor.as_deref(), Some("s=abc;i=1"));
        assert!(e.trusted_for("k3s.service"));
        let bytes = JournalEntry::from_json(
            r#"{"MESSAGE":[104,105,255],"_UID":"1000","SYSLOG_IDENTIFIER":"k3s"}"#,
        )
        .unwrap();
        assert_eq!(bytes.message, "hi\u{fffd}");
        assert!(
            !bytes.trusted_for("k3s.service"),
            "a user's `logger -t k3s` is not k3s"
        );
        assert!(JournalEntry::from_json(r#"{"MESSAGE":null}"#).is_none());
        assert!(JournalEntry::from_json("not json").is_none());
    }

    #[test]
    fn the_buffer_holds_at_most_channel_entries_and_counts_what_it_drops() {
        let extra = 10;
        let text: String = (0..CHANNEL_ENTRIES + extra)
            .map(|i| format!("{{\"__CURSOR\":\"i={i}\",\"MESSAGE\":\"line {i}\"}}\n"))
            .collect();
        let (tx, rx) = channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let (cursor, dropped) = (Arc::default(), Arc::new(Mutex::new(0)));
        read_entries(
            text.as_bytes(),
            BoundedTx {
                tx,
                waiting: waiting.clone(),
            },
            cursor,
            dropped.clone(),
        );
        assert_eq!(waiting.load(Ordering::SeqCst), CHANNEL_ENTRIES);
        assert_eq!(*dropped.lock().unwrap(), extra as u64);
        let got: Vec<JournalEntry> = rx.try_iter().collect();
        assert_eq!(got.len(), CHANNEL_ENTRIES);
        assert_eq!(
            got[0].message, "line 0",
            "the oldest are kept, the newest dropped"
        );
    }

    #[test]
    fn the_first_start_reads_the_backlog_and_restarts_continue_after_the_cursor() {
        let spec = FollowSpec {
            matches: vec![
                "_SYSTEMD_UNIT=k3s.service".into(),
                "+".into(),
                "SYSLOG_IDENTIFIER=k3s".into(),
            ],
            backlog: Duration::from_secs(1200),
            program: "journalctl".into(),
            grep: None,
        };
        let first = JournalctlFollow::argv(&spec, None);
        assert!(first.contains(&"--since=-1200s".to_string()), "{first:?}");
        assert!(!first.iter().any(|a| a.starts_with("--grep")));
        let grep = FollowSpec {
            grep: Some("Slow SQL".into()),
            ..spec.clone()
        };
        assert!(JournalctlFollow::argv(&grep, None).contains(&"--grep=Slow SQL".to_string()));
        assert!(first.ends_with(&spec.matches));
        let again = JournalctlFollow::argv(&spec, Some("s=1;i=2"));
        assert!(again.contains(&"--after-cursor=s=1;i=2".to_string()));
        assert!(!again.iter().any(|a| a.starts_with("--since")));
    }

    /// A stand-in journalctl: prints two entries, one too long, then exits.
    fn fake_program(dir: &std::path::Path, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("journalctl");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    #[test]
    fn a_follower_delivers_entries_without_blocking_and_restarts_after_its_child_exits() {
        let d = tempfile::tempdir().unwrap();
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let log = d.path().join("args");
        let prog = fake_program(
            d.path(),
            &format!(
                r#"echo "$@" >> {log}
echo '{{"__CURSOR":"c1","MESSAGE":"one","_UID":"0"}}'
echo '{{"MESSAGE":"{long}"}}'
echo '{{"__CURSOR":"c3","MESSAGE":"three","_UID":"0"}}'"#,
                log = log.display()
            ),
        );
        let mut f = JournalctlFollow::new(FollowSpec {
            matches: vec!["SYSLOG_IDENTIFIER=k3s".into()],
            backlog: Duration::from_secs(60),
            program: prog,
            grep: None,
        });
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        let mut error = None;
        while Instant::now() < end {
            let b = f.read_new();
            got.extend(b.entries.into_iter().map(|e| e.message));
            if b.error.is_some() {
                error = b.error;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(got, ["one", "three"], "the over-long entry is skipped");
        let error = error.expect("the exit is reported");
        assert!(
            error.contains("exited") && error.contains("again in 5 s"),
            "{error}"
        );
        // Within the back-off nothing is started, and read_new returns at once.
        let t = Instant::now();
        let b = f.read_new();
        assert!(b.entries.is_empty() && t.elapsed() < Duration::from_millis(100));
        let args = std::fs::read_to_string(&log).unwrap();
        assert_eq!(args.lines().count(), 1, "{args}");
        assert!(args.contains("--since=-60s"), "{args}");
        // The restart continues after the last cursor delivered.
        f.next_start = Some(Instant::now());
        let _ = f.read_new();
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&log).unwrap().lines().count() < 2 {
            assert!(Instant::now() < end, "not restarted");
            std::thread::sleep(Duration::from_millis(20));
        }
        let args = std::fs::read_to_string(&log).unwrap();
        assert!(
            args.lines().nth(1).unwrap().contains("--after-cursor=c3"),
            "{args}"
        );
    }

    #[test]
    fn a_missing_program_is_an_error_with_a_back_off_not_a_panic() {
        let mut f = JournalctlFollow::new(FollowSpec {
            matches: vec![],
            backlog: Duration::ZERO,
            program: "/nonexistent/journalctl".into(),
            grep: None,
        });
        let b = f.read_new();
        let e = b.error.unwrap();
        assert!(e.contains("cannot start /nonexistent/journalctl"), "{e}");
        assert_eq!(f.backoff, FIRST_BACKOFF * 2);
    }
}
