//! The kernel detector: `/dev/kmsg` records -> classifier -> conditions, plus counters.
//!
//! Trust: only facility-0 records count. Userspace (as root) can write to `/dev/kmsg`,
//! but its records carry facility 1, so a forged "rcu: INFO: ..." line cannot trigger
//! anything unless `accept_non_kernel_facilities` (for tests only) is set.
//!
//! Which conditions the events raise, and when they clear, is the pure [`super::judge`];
//! this file does the I/O (the log, the counters, the cursor) and hands facts on: OOM kills
//! to whoever counts them ([`OomKillSink`]), NFS servers down to the mounts detector
//! ([`NfsServersDown`]).
//!
//! No record is counted twice across daemon restarts within one boot: the last sequence
//! number is kept with the boot id and its record's timestamp in `kmsg-cursor.json`, on a
//! tmpfs so it costs the SD card nothing ([`super::cursor`]). A saved cursor is checked
//! against the ring: ahead of its newest record, or naming a record with another
//! timestamp, it is discarded and the log re-read, never trusted to skip everything.
//!
//! Waking: the read blocks in poll(2) until a record arrives or the next thing falls due
//! (the counters, a condition's quiet period, a splat's end), so a quiet kernel costs about
//! one wake-up a minute, and a record still ends the wait at once.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::classify::{
    Classifier, Event, EventKind, FALLBACK_HZ, NfsServerTracker, hz_from_kconfig,
};
use super::counters::{self, Counters, SYSCTLS};
use super::cursor::{Cursor, CursorStore};
use super::judge::KernelJudge;
use super::kmsg_record::KmsgRecord;
use super::metrics::{EventKindLabels, KernelMetrics};
use super::source::{DevKmsg, KmsgRead, KmsgSource};
use crate::config::KernelSection;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::{Clock, HostFiles};
use crate::liveness::StopFd;
use crate::model::{
    Condition, ConditionKind, HungTaskWaits, LimitHit, LimitHits, NfsServersDown, StorageEvent,
    StorageEvents,
};

/// How often the kernel's counters are read while they are the only witness: the log is
/// unreadable or the kernel stopped printing hung-task reports.
pub(crate) const COUNTERS_EVERY: Duration = Duration::from_secs(10);
/// How often they are read while the log speaks: they then only confirm what the log
/// said first (and show in `check`), so a minute costs no detection.
pub(crate) const COUNTERS_QUIET_EVERY: Duration = Duration::from_secs(60);
/// Longest wait for a record when nothing else falls due: a ceiling, not a heartbeat
/// (the detector vouches for its wait, issue 24).
pub(crate) const MAX_IDLE_WAIT: Duration = Duration::from_secs(300);
/// How long to wait for follow-up lines before closing an open splat: the kernel prints
/// a splat in one burst, so a short silence means it is complete.
pub(crate) const SPLAT_IDLE: Duration = Duration::from_millis(300);
/// Retry opening `/dev/kmsg` this often after a failure.
pub(crate) const REOPEN_EVERY: Duration = Duration::from_secs(60);

/// Counts one kernel OOM kill, given the killed task's cgroup (`task_memcg=`); handed in at
/// the daemon's wiring (the memory metrics count them).
pub(crate) type OomKillSink = Box<dyn FnMut(&str) + Send>;

pub(crate) struct KernelDetector {
    cfg: KernelSection,
    files: Arc<dyn HostFiles>,
    clock: Arc<dyn Clock>,
    source: Option<Box<dyn KmsgSource>>,
    open_error: Option<String>,
    last_open_try: Option<Duration>,
    open_fn: OpenSource,
    classifier: Classifier,
    hz: u32,
    hz_source: String,
    metrics: Option<KernelMetrics>,
    oom_kills: Option<OomKillSink>,
    storage: Option<StorageEvents>,
    nfs: NfsServerTracker,
    nfs_view: NfsServersDown,
    limit_hits: LimitHits,
    cursor: Option<CursorStore>,
    /// The last record processed (sequence number and kernel timestamp).
    last_seq: Option<u64>,
    last_ts: Option<u64>,
    /// The cursor loaded at start, until the ring has confirmed it.
    unconfirmed: Option<Cursor>,
    /// The highest sequence number seen (also of skipped records): a higher one after a
    /// gap means records were overwritten unread.
    seen_seq: Option<u64>,
    /// The highest sequence number read from the ring itself.
    newest_read: Option<u64>,
    /// Why the cursor must be discarded, found while reading; acted on after the pass.
    rebase: Option<String>,
    rebased: u64,
    stop: Option<StopFd>,
    /// How long the next pass may wait for a record.
    next_wait: Duration,
    started_mono: Duration,
    judge: KernelJudge,
    counters: Counters,
    counters_read_mono: Option<Duration>,
    /// The sysctls `check` shows, read with the counters (not on every pass).
    sysctl_notes: Vec<CheckNote>,
    splat_open_since: Option<Duration>,
    pub(crate) events_seen: u64,
    /// Asked about each hung-task report: is the task waiting on a user's FUSE mount?
    hung_waits: Option<Arc<dyn HungTaskWaits>>,
}

/// Opens the kernel log; injectable so tests can script it.
pub(crate) type OpenSource = Box<dyn Fn() -> std::io::Result<Box<dyn KmsgSource>> + Send>;

pub(crate) struct KernelDeps {
    pub(crate) files: Arc<dyn HostFiles>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Option<KernelMetrics>,
    /// Where OOM kills are counted; None: not counted.
    pub(crate) oom_kills: Option<OomKillSink>,
    /// Where storage and power events go (the storage detector); None: nowhere.
    pub(crate) storage: Option<StorageEvents>,
    pub(crate) boot_id: String,
    /// None: no cursor persistence (`check`).
    pub(crate) state_dir: Option<PathBuf>,
    /// Where the cursor is rewritten after every pass (a tmpfs); None: the state dir only.
    pub(crate) runtime_dir: Option<PathBuf>,
    /// None: open `<host_root>/dev/kmsg`.
    pub(crate) source: Option<OpenSource>,
}

impl KernelDetector {
    /// Hung-task reports are checked against `w`: one whose task waits only on FUSE mounts
    /// unprivileged users own raises `UserMountHung` instead of `KernelHungTasks`.
    pub(crate) fn with_hung_task_waits(mut self, w: Arc<dyn HungTaskWaits>) -> Self {
        self.hung_waits = Some(w);
        self
    }

    /// The NFS servers this detector last saw down, as a view others may read.
    pub(crate) fn nfs_servers_down(&self) -> NfsServersDown {
        self.nfs_view.clone()
    }

    /// The kernel's "limit reached" lines this detector saw, as a view others may read.
    pub(crate) fn limit_hits(&self) -> LimitHits {
        self.limit_hits.clone()
    }

    pub fn new(cfg: KernelSection, d: KernelDeps) -> Self {
        let (hz, hz_source) = learn_hz(&cfg, d.files.as_ref());
        let open_fn = d.source.unwrap_or_else(|| {
            let path = d.files.path("dev/kmsg");
            Box::new(move || DevKmsg::open(&path).map(|k| Box::new(k) as Box<dyn KmsgSource>))
        });
        let mut cursor = d
            .state_dir
            .as_deref()
            .map(|s| CursorStore::new(s, d.runtime_dir.as_deref(), &d.boot_id));
        let loaded = cursor.as_mut().and_then(|c| c.load());
        let now = d.clock.monotonic();
        let judge = KernelJudge::new(cfg.clone());
        KernelDetector {
            cfg,
            files: d.files,
            clock: d.clock,
            source: None,
            open_error: None,
            last_open_try: None,
            open_fn,
            classifier: Classifier::new(),
            hz,
            hz_source,
            metrics: d.metrics,
            oom_kills: d.oom_kills,
            storage: d.storage,
            nfs: NfsServerTracker::new(),
            nfs_view: NfsServersDown::default(),
            limit_hits: LimitHits::default(),
            cursor,
            last_seq: loaded.as_ref().map(|c| c.last_seq),
            last_ts: loaded.as_ref().and_then(|c| c.ts_usec),
            // Records between the cursor and the ring's oldest were overwritten unread.
            seen_seq: loaded.as_ref().map(|c| c.last_seq),
            unconfirmed: loaded,
            newest_read: None,
            rebase: None,
            rebased: 0,
            stop: None,
            next_wait: Duration::ZERO,
            started_mono: now,
            judge,
            counters: Counters::default(),
            counters_read_mono: None,
            sysctl_notes: Vec::new(),
            splat_open_since: None,
            events_seen: 0,
            hung_waits: None,
        }
    }

    fn ensure_open(&mut self, now: Duration) {
        if self.source.is_some() || self.last_open_try.is_some_and(|t| now < t + REOPEN_EVERY) {
            return;
        }
        self.last_open_try = Some(now);
        match (self.open_fn)() {
            Ok(mut s) => {
                if self.open_error.take().is_some() {
                    log::info!("kernel log readable again");
                }
                if let Some(stop) = &self.stop {
                    s.set_stop(stop.clone());
                }
                self.source = Some(s);
            }
            Err(e) => {
                if self.open_error.is_none() {
                    log::error!(
                        "{e}; kernel log detection is blind, falling back to kernel counters"
                    );
                }
                self.open_error = Some(e.to_string());
            }
        }
    }

    /// Turns a complete event into held conditions, metrics, OOM counts and NFS state.
    /// `replay`: a record a previous process in this boot already counted, read again
    /// only to rebuild what is held (issue 17, point 3): no metric, no OOM count.
    fn apply(&mut self, e: &Event, now: Duration, replay: bool) {
        match e.kind {
            EventKind::RcuStall | EventKind::OomKill if replay => {}
            EventKind::RcuStall => {
                if let (Some(s), Some(m)) = (e.stall_secs(self.hz), &self.metrics) {
                    m.rcu_stall_seconds.observe(s);
                }
            }
            EventKind::OomKill => {
                if let Some(record) = &mut self.oom_kills {
                    record(e.fields.cgroup.as_deref().unwrap_or_default());
                }
            }
            EventKind::ConntrackTableFull | EventKind::FileMaxReached => {
                let hit = if e.kind == EventKind::ConntrackTableFull {
                    LimitHit::ConntrackTableFull
                } else {
                    LimitHit::FileMax
                };
                let at = e.first_ts_usec.map(Duration::from_micros).unwrap_or(now);
                self.limit_hits.record(hit, at.min(now));
            }
            EventKind::FsError
            | EventKind::FsReadonly
            | EventKind::BlockIoError
            | EventKind::MmcError
            | EventKind::UsbStorageReset
            | EventKind::Undervoltage => {
                if let Some(q) = &self.storage {
                    let at = e.first_ts_usec.map_or(now, Duration::from_micros).min(now);
                    q.push(StorageEvent {
                        kind: e.kind.as_str(),
                        device: e.fields.device.clone(),
                        cleared: e.fields.cleared == Some(true),
                        detail: e.fields.detail.clone().unwrap_or_default(),
                        mono: at,
                    });
                }
            }
            EventKind::NfsNotResponding | EventKind::NfsRecovered => {
                self.nfs.apply(e);
                self.nfs_view.set(
                    self.nfs
                        .down_servers()
                        .into_iter()
                        .map(String::from)
                        .collect(),
                );
            }
            _ => {}
        }
        let user_wait = match (e.kind, e.fields.pid, &self.hung_waits) {
            (EventKind::HungTask, Some(pid), Some(w)) => w.user_fuse_wait(pid),
            _ => None,
        };
        match user_wait {
            Some(w) => self.judge.hung_on_user_fuse(e, &w, now),
            None => self.judge.apply(e, self.hz, now),
        }
    }

    /// Handles one record's bytes. Returns true when it produced a new event head.
    fn record(&mut self, bytes: &[u8], now: Duration) {
        let Ok(rec) = KmsgRecord::parse(bytes) else {
            return;
        };
        self.note_seq(rec.seq);
        // Already counted before a daemon restart in this boot: read again only to
        // rebuild the held conditions (they age from the kernel's timestamps, so an old
        // stall has already cleared), never counted twice.
        let replay = self.last_seq.is_some_and(|last| rec.seq <= last);
        if replay {
            // Only if the cursor is this ring's: its own record must carry the timestamp
            // it saved; otherwise the cursor is discarded and nothing is replayed from it.
            if let Some(c) = &self.unconfirmed
                && c.last_seq == rec.seq
                && c.ts_usec.is_some_and(|t| t != rec.ts_usec)
            {
                self.rebase = Some(format!(
                    "the saved kmsg cursor names record {} at {} µs, but the kernel log has it at {} µs",
                    rec.seq,
                    c.ts_usec.unwrap_or_default(),
                    rec.ts_usec
                ));
                return;
            }
        } else {
            self.last_seq = Some(rec.seq);
            self.last_ts = Some(rec.ts_usec);
        }
        if !rec.is_kernel() && !self.cfg.accept_non_kernel_facilities {
            if let (Some(m), false) = (&self.metrics, replay) {
                m.ignored_records.inc();
            }
            return;
        }
        if let (Some(m), false) = (&self.metrics, replay) {
            m.records.inc();
        }
        let started_mono = self.started_mono;
        // Only a record's first line can be a head; a name with a newline in it cannot
        // start a kernel message (Classifier::feed_record).
        let (events_seen, metrics) = (&mut self.events_seen, &self.metrics);
        self.classifier
            .feed_record(&rec.text, Some(rec.ts_usec), |v| {
                if let (Some(kind), false, false) = (v.kind, v.continuation, replay) {
                    // Count at the head line: detection must not wait for the splat to end.
                    *events_seen += 1;
                    if let Some(m) = metrics {
                        m.events
                            .get_or_create(&EventKindLabels {
                                kind: kind.as_str().into(),
                            })
                            .inc();
                        let ts = Duration::from_micros(rec.ts_usec);
                        if ts >= started_mono {
                            m.detect_delay.observe(now.saturating_sub(ts).as_secs_f64());
                        }
                    }
                }
            });
        self.splat_open_since = self.classifier.open_event().map(|_| now);
        self.drain_events(now, replay);
    }

    /// Counts records overwritten unread: the gap since the highest sequence number seen.
    fn note_seq(&mut self, seq: u64) {
        self.newest_read = Some(self.newest_read.map_or(seq, |n| n.max(seq)));
        if let Some(prev) = self.seen_seq {
            if seq > prev + 1
                && let Some(m) = &self.metrics
            {
                m.lost_records.inc_by(seq - prev - 1);
            }
            self.seen_seq = Some(prev.max(seq));
        } else {
            self.seen_seq = Some(seq);
        }
    }

    /// At the end of the ring: a cursor beyond its newest record cannot be this boot's
    /// (a restored or forged file): it would skip every record for the rest of the boot.
    fn confirm_cursor(&mut self, newest: u64) {
        let Some(c) = self.unconfirmed.take() else {
            return;
        };
        if c.last_seq > newest && self.rebase.is_none() {
            self.rebase = Some(format!(
                "the saved kmsg cursor (record {}) is ahead of the kernel log's newest record ({newest})",
                c.last_seq
            ));
        }
    }

    /// Discards the cursor and reads the ring again from its oldest record, as on a first
    /// start: a record counted twice is better than a stall never seen.
    fn rebase_now(&mut self, why: String) {
        log::error!("{why}; discarding it and reading the kernel log from its oldest record");
        self.rebased += 1;
        if let Some(m) = &self.metrics {
            m.cursor_rebased.inc();
        }
        self.last_seq = None;
        self.last_ts = None;
        self.seen_seq = None;
        self.newest_read = None;
        self.unconfirmed = None;
        if let Some(c) = &mut self.cursor {
            c.forget_saved();
        }
        // A new fd starts at the oldest record.
        self.source = None;
        self.last_open_try = None;
    }

    /// How long the next pass may wait for a record: until the counters, a condition's
    /// quiet end or (with the log blind) the reopen fall due, at most [`MAX_IDLE_WAIT`].
    fn idle_wait(&self, now: Duration) -> Duration {
        if self.splat_open_since.is_some() {
            return SPLAT_IDLE;
        }
        let mut until = now + MAX_IDLE_WAIT;
        match self.counters_read_mono {
            Some(t) => until = until.min(t + self.counters_every()),
            None => until = now,
        }
        if let Some(t) = self.judge.next_clear() {
            until = until.min(t);
        }
        until.saturating_sub(now)
    }

    fn counters_every(&self) -> Duration {
        let log_speaks = self.open_error.is_none()
            && self.counters.hung_task_warnings != Some(0)
            && !self.judge.reports_suppressed();
        if log_speaks {
            COUNTERS_QUIET_EVERY
        } else {
            COUNTERS_EVERY
        }
    }

    fn drain_events(&mut self, now: Duration, replay: bool) {
        while let Some(e) = self.classifier.pop_event() {
            self.apply(&e, now, replay);
        }
    }

    fn poll_counters(&mut self, now: Duration) {
        if self
            .counters_read_mono
            .is_some_and(|t| now < t + self.counters_every())
        {
            return;
        }
        let prev = self.counters;
        let prev_read = self.counters_read_mono;
        let cur = counters::read(self.files.as_ref());
        self.sysctl_notes = SYSCTLS
            .iter()
            .filter_map(|(name, why)| {
                counters::sysctl(self.files.as_ref(), name)
                    .map(|v| CheckNote::new(NoteLevel::Info, *name, format!("{v}: {why}")))
            })
            .collect();
        let first = prev_read.is_none();
        self.counters_read_mono = Some(now);
        self.counters = cur;
        if let Some(m) = &self.metrics {
            m.rcu_stall_count
                .set(cur.rcu_stall_count.map_or(-1, |v| v as i64));
            m.hung_task_detect_count
                .set(cur.hung_task_detect_count.map_or(-1, |v| v as i64));
            m.hung_task_warnings
                .set(cur.hung_task_warnings.unwrap_or(-1));
        }
        if first {
            return;
        }
        // The counters see what the log may not (printk_devkmsg=off, warnings exhausted).
        // When the log already reported since the last read, it said more: keep its words.
        let since = prev_read.unwrap_or_default();
        if let Some(n) =
            counters::increase(prev.rcu_stall_count, cur.rcu_stall_count).filter(|n| *n > 0)
        {
            self.judge.counter_rose(
                ConditionKind::KernelRcuStall,
                now,
                since,
                "RCUStallCounter",
                format!("the kernel's rcu_stall_count rose by {n}"),
            );
        }
        if let Some(n) = counters::increase(prev.hung_task_detect_count, cur.hung_task_detect_count)
            .filter(|n| *n > 0)
        {
            self.judge.counter_rose(
                ConditionKind::KernelHungTasks,
                now,
                since,
                "HungTaskCounter",
                format!("the kernel's hung_task_detect_count rose by {n}"),
            );
        }
    }

    fn conditions(&mut self, now: Duration) -> Vec<Condition> {
        let mut v = self.judge.conditions(now);
        if let Some(e) = &self.open_error {
            v.push(Condition::new(
                ConditionKind::KernelLogBlind,
                "",
                "KmsgUnavailable",
                format!("{e}; using kernel counters only"),
            ));
        } else if self.counters.hung_task_warnings == Some(0) || self.judge.reports_suppressed() {
            let fallback = if self.counters.hung_task_detect_count.is_some() {
                "still counting through hung_task_detect_count"
            } else {
                "this kernel has no hung_task_detect_count, so hung tasks go unseen"
            };
            v.push(Condition::new(
                ConditionKind::KernelLogBlind,
                "",
                "HungTaskReportsExhausted",
                format!("the kernel stopped printing hung-task reports (kernel.hung_task_warnings=0); {fallback}; fix: sysctl kernel.hung_task_warnings=-1"),
            ));
        }
        v
    }

    fn notes(&self) -> Vec<CheckNote> {
        let mut n = vec![CheckNote::new(
            NoteLevel::Info,
            "HZ",
            format!("{} ({})", self.hz, self.hz_source),
        )];
        if self.cfg.accept_non_kernel_facilities {
            n.push(CheckNote::new(
                NoteLevel::Warn,
                "trust",
                "accept_non_kernel_facilities is on: userspace lines in /dev/kmsg are trusted (testing only)",
            ));
        }
        n.extend(self.sysctl_notes.iter().cloned());
        let c = self.counters;
        for (name, v) in [
            ("rcu_stall_count", c.rcu_stall_count),
            ("hung_task_detect_count", c.hung_task_detect_count),
        ] {
            n.push(match v {
                Some(v) => CheckNote::new(NoteLevel::Info, name, v.to_string()),
                None => CheckNote::new(
                    NoteLevel::Info,
                    name,
                    "not provided by this kernel (log-based detection only)",
                ),
            });
        }
        n
    }
}

/// HZ from config, /proc/config.gz, or /boot/config-<release>; else the classifier's
/// conservative fallback (100 makes jiffies look longer, never shorter).
fn learn_hz(cfg: &KernelSection, files: &dyn HostFiles) -> (u32, String) {
    if cfg.hz != 0 {
        return (cfg.hz, "kernel.hz in the config".into());
    }
    if let Ok(gz) = files.read("proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .is_ok()
            && let Some(hz) = hz_from_kconfig(&text)
        {
            return (hz, "/proc/config.gz".into());
        }
    }
    if let Ok(rel) = files.read_string("proc/sys/kernel/osrelease") {
        let p = format!("boot/config-{}", rel.trim());
        if let Some(hz) = files.read_string(&p).ok().and_then(|t| hz_from_kconfig(&t)) {
            return (hz, format!("/{p}"));
        }
    }
    (
        FALLBACK_HZ,
        format!("unknown; assuming {FALLBACK_HZ}, set kernel.hz to be exact"),
    )
}

impl Detector for KernelDetector {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn interval(&self) -> Duration {
        // Streaming: `sample` itself waits for records. Without a log there is nothing to
        // wait on: pace the counters and the reopen between passes.
        if self.source.is_some() || self.last_open_try.is_none() {
            Duration::ZERO
        } else {
            COUNTERS_EVERY
        }
    }

    fn blocks_for(&self) -> Duration {
        if self.source.is_some() {
            self.next_wait
        } else {
            Duration::ZERO
        }
    }

    fn stop_on(&mut self, stop: StopFd) {
        if let Some(s) = &mut self.source {
            s.set_stop(stop.clone());
        }
        self.stop = Some(stop);
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let now = self.clock.monotonic();
        self.ensure_open(now);
        if let Some(mut src) = self.source.take() {
            // A record ends the wait at once, so a longer idle wait costs no detection
            // delay, only fewer wake-ups.
            let mut wait = self.next_wait;
            // Drain what is there (bounded, so the heartbeat keeps beating under a flood).
            for _ in 0..10_000 {
                match src.read(wait) {
                    Ok(KmsgRead::Record(b)) => {
                        let now = self.clock.monotonic();
                        self.record(&b, now);
                        wait = Duration::ZERO;
                    }
                    // Counted by the sequence gap at the next record (EPIPE says only
                    // that some were lost, not how many).
                    Ok(KmsgRead::Lost) => wait = Duration::ZERO,
                    Ok(KmsgRead::Idle) => {
                        // Silence: a splat still open is complete.
                        if self.classifier.open_event().is_some() {
                            self.classifier.flush();
                            self.drain_events(self.clock.monotonic(), false);
                        }
                        self.splat_open_since = None;
                        if let Some(newest) = self.newest_read {
                            self.confirm_cursor(newest);
                        }
                        break;
                    }
                    Err(e) => {
                        self.open_error = Some(format!("reading the kernel log failed: {e}"));
                        self.last_open_try = Some(now);
                        // `src` is dropped here: the next pass reopens after REOPEN_EVERY.
                        return Err(e.to_string());
                    }
                }
            }
            self.source = Some(src);
            if let Some(why) = self.rebase.take() {
                self.rebase_now(why);
            }
        }
        let now = self.clock.monotonic();
        self.poll_counters(now);
        if let (Some(c), Some(seq)) = (&mut self.cursor, self.last_seq) {
            c.after_pass(seq, self.last_ts, now);
        }
        let conditions = self.conditions(now);
        self.next_wait = self.idle_wait(now);
        Ok(Sample {
            conditions,
            info: serde_json::json!({
                "kmsg": self.open_error.clone().unwrap_or_else(|| "reading".into()),
                "hz": self.hz,
                "events_seen": self.events_seen,
                "last_seq": self.last_seq,
                "cursor": {
                    "save_error": self.cursor.as_ref().and_then(|c| c.error()),
                    "rebased": self.rebased,
                },
                "counters": self.counters,
                "nfs_servers_down": self.nfs.down_servers(),
            }),
            notes: self.notes(),
        })
    }
}

impl Drop for KernelDetector {
    fn drop(&mut self) {
        let now = self.clock.monotonic();
        if let (Some(c), Some(seq)) = (&mut self.cursor, self.last_seq) {
            c.on_stop(seq, self.last_ts, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{FakeClock, FakeFiles};
    use crate::kernel::source::ScriptedKmsg;
    use prometheus_client::registry::Registry;
    use std::sync::Mutex;

    fn rec(fac: u8, seq: u64, ts_usec: u64, text: &str) -> String {
        format!("{},{seq},{ts_usec},-;{text}", (fac << 3) | 4)
    }

    /// Deps whose kernel log plays `script` on the first open (None: every open fails).
    fn deps(
        files: Arc<FakeFiles>,
        clock: Arc<FakeClock>,
        script: Option<Vec<KmsgRead>>,
        metrics: Option<KernelMetrics>,
        state_dir: Option<PathBuf>,
    ) -> KernelDeps {
        let script = Mutex::new(script.map(|s| s.into_iter().map(Ok).collect()));
        KernelDeps {
            files,
            clock,
            metrics,
            oom_kills: None,
            storage: None,
            boot_id: "boot-a".into(),
            state_dir,
            runtime_dir: None,
            source: Some(Box::new(move || match &mut *script.lock().unwrap() {
                Some(s) => Ok(Box::new(ScriptedKmsg {
                    script: std::mem::take(s),
                    reads: 0,
                }) as Box<dyn KmsgSource>),
                None => Err(std::io::Error::other(
                    "cannot open /dev/kmsg: Operation not permitted",
                )),
            })),
        }
    }

    fn records(lines: &[String]) -> Vec<KmsgRead> {
        lines
            .iter()
            .map(|l| KmsgRead::Record(l.as_bytes().to_vec()))
            .collect()
    }

    fn det(
        lines: Vec<String>,
        cfg: KernelSection,
        clock: Arc<FakeClock>,
        state: Option<PathBuf>,
    ) -> KernelDetector {
        let files = Arc::new(FakeFiles::with(&[(
            "proc/sys/kernel/hung_task_warnings",
            "10",
        )]));
        KernelDetector::new(cfg, deps(files, clock, Some(records(&lines)), None, state))
    }

    fn clock() -> Arc<FakeClock> {
        Arc::new(FakeClock::new(1_800_000_000, Duration::from_secs(1000)))
    }

    /// Sets the hung-task counter to `count`, lets its next poll come due and samples: the
    /// hung-task condition of that pass, if any.
    fn hung_after_counter(
        d: &mut KernelDetector,
        files: &FakeFiles,
        c: &FakeClock,
        count: &str,
    ) -> Option<Condition> {
        files.put("proc/sys/kernel/hung_task_detect_count", count);
        c.advance(d.counters_every());
        d.sample()
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.kind == ConditionKind::KernelHungTasks)
    }

    const NORMAL_STALL: &str = "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:";

    #[test]
    fn a_forged_userspace_stall_is_ignored_but_a_kernel_one_raises_the_condition() {
        let c = clock();
        let mut d = det(
            vec![rec(1, 1, 999_000_000, NORMAL_STALL)],
            KernelSection::default(),
            c.clone(),
            None,
        );
        assert!(
            d.sample().unwrap().conditions.is_empty(),
            "facility 1 must not count"
        );
        let mut d = det(
            vec![rec(0, 1, 999_000_000, NORMAL_STALL)],
            KernelSection::default(),
            c,
            None,
        );
        let s = d.sample().unwrap();
        assert_eq!(s.conditions.len(), 1, "{:?}", s.conditions);
        assert_eq!(s.conditions[0].kind, ConditionKind::KernelRcuStall);
        assert_eq!(s.conditions[0].reason, "RCUStall");
    }

    #[test]
    fn the_test_switch_accepts_userspace_lines() {
        let cfg = KernelSection {
            accept_non_kernel_facilities: true,
            ..Default::default()
        };
        let mut d = det(
            vec![rec(1, 1, 999_000_000, NORMAL_STALL)],
            cfg,
            clock(),
            None,
        );
        assert_eq!(d.sample().unwrap().conditions.len(), 1);
    }

    #[test]
    fn short_expedited_stalls_are_recorded_but_only_a_burst_raises() {
        let pi = "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P1234 } 21 jiffies s: 1189 root: 0x1/.";
        let cfg = KernelSection {
            hz: 250,
            short_stall_burst: 5,
            ..Default::default()
        };
        let few: Vec<String> = (1..=4)
            .map(|i| rec(0, i, 900_000_000 + i * 1_000_000, pi))
            .collect();
        let mut d = det(few, cfg.clone(), clock(), None);
        let s = d.sample().unwrap();
        assert!(
            s.conditions.is_empty(),
            "4 short stalls are normal: {:?}",
            s.conditions
        );
        assert_eq!(d.events_seen, 4);
        let many: Vec<String> = (1..=5)
            .map(|i| rec(0, i, 900_000_000 + i * 1_000_000, pi))
            .collect();
        let mut d = det(many, cfg, clock(), None);
        let s = d.sample().unwrap();
        assert_eq!(s.conditions[0].reason, "StallBurst", "{:?}", s.conditions);
    }

    #[test]
    fn a_long_expedited_stall_raises_at_once() {
        let long = "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 2-... } 5250 jiffies s: 1189 root: 0x1/.";
        let mut d = det(
            vec![rec(0, 1, 999_000_000, long)],
            KernelSection {
                hz: 250,
                ..Default::default()
            },
            clock(),
            None,
        );
        let s = d.sample().unwrap();
        assert_eq!(s.conditions[0].reason, "LongExpeditedStall");
        assert!(
            s.conditions[0].message.contains("21.000s"),
            "{}",
            s.conditions[0].message
        );
    }

    #[test]
    fn kernel_conditions_clear_after_the_quiet_period() {
        let c = clock();
        let mut d = det(
            vec![rec(0, 1, 999_000_000, NORMAL_STALL)],
            KernelSection::default(),
            c.clone(),
            None,
        );
        assert_eq!(d.sample().unwrap().conditions.len(), 1);
        c.advance(Duration::from_secs(800));
        assert_eq!(
            d.sample().unwrap().conditions.len(),
            1,
            "still within 15 min of the stall"
        );
        c.advance(Duration::from_secs(200));
        assert!(
            d.sample().unwrap().conditions.is_empty(),
            "quiet for 15 min: cleared"
        );
    }

    #[test]
    fn a_stall_logged_long_before_the_daemon_started_counts_but_does_not_hold() {
        // Kernel time 10 s, daemon now at 1000 s monotonic: 990 s ago > 900 s quiet.
        let mut d = det(
            vec![rec(0, 1, 10_000_000, NORMAL_STALL)],
            KernelSection::default(),
            clock(),
            None,
        );
        let s = d.sample().unwrap();
        assert_eq!(d.events_seen, 1);
        assert!(s.conditions.is_empty());
    }

    #[test]
    fn records_already_counted_in_this_boot_are_skipped_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (1..=3)
            .map(|i| rec(0, i, 999_000_000, NORMAL_STALL))
            .collect();
        {
            let mut d = det(
                lines.clone(),
                KernelSection::default(),
                clock(),
                Some(dir.path().into()),
            );
            d.sample().unwrap();
            assert_eq!(d.events_seen, 3);
        } // drop saves the cursor
        let mut more = lines.clone();
        more.push(rec(0, 4, 999_500_000, NORMAL_STALL));
        let mut d = det(
            more,
            KernelSection::default(),
            clock(),
            Some(dir.path().into()),
        );
        d.sample().unwrap();
        assert_eq!(d.events_seen, 1, "only seq 4 is new");
    }

    /// Issue 17, point 3: a restart within the boot rebuilds what the kernel log holds
    /// (here an RCU stall 1 s old) from records it does not count again.
    #[test]
    fn a_restart_rebuilds_the_held_conditions_without_counting_the_records_again() {
        let dir = tempfile::tempdir().unwrap();
        let lines = vec![rec(0, 1, 999_000_000, NORMAL_STALL)];
        {
            let mut d = det(
                lines.clone(),
                KernelSection::default(),
                clock(),
                Some(dir.path().into()),
            );
            assert_eq!(d.sample().unwrap().conditions.len(), 1);
        } // drop saves the cursor
        let mut d = det(
            lines,
            KernelSection::default(),
            clock(),
            Some(dir.path().into()),
        );
        let s = d.sample().unwrap();
        assert_eq!(d.events_seen, 0, "nothing counted twice");
        assert_eq!(
            s.conditions.iter().map(|c| c.kind).collect::<Vec<_>>(),
            vec![ConditionKind::KernelRcuStall],
            "the stall is still held after the restart"
        );
    }

    #[test]
    fn an_unreadable_kernel_log_is_reported_as_blind() {
        let mut d = KernelDetector::new(
            KernelSection::default(),
            deps(Arc::new(FakeFiles::default()), clock(), None, None, None),
        );
        let s = d.sample().unwrap();
        assert_eq!(s.conditions[0].kind, ConditionKind::KernelLogBlind);
        assert_eq!(s.conditions[0].reason, "KmsgUnavailable");
    }

    #[test]
    fn a_rising_hung_task_counter_raises_even_when_the_log_is_silent() {
        let files = Arc::new(FakeFiles::with(&[
            ("proc/sys/kernel/hung_task_detect_count", "2"),
            ("proc/sys/kernel/hung_task_warnings", "0"),
        ]));
        let c = clock();
        let mut d = KernelDetector::new(
            KernelSection::default(),
            deps(files.clone(), c.clone(), Some(vec![]), None, None),
        );
        let s = d.sample().unwrap();
        assert_eq!(
            s.conditions
                .iter()
                .map(|c| c.reason.as_str())
                .collect::<Vec<_>>(),
            vec!["HungTaskReportsExhausted"]
        );
        let hung = hung_after_counter(&mut d, &files, &c, "5").expect("counter must raise");
        assert!(hung.message.contains("rose by 3"), "{}", hung.message);
    }

    #[test]
    fn a_counter_rise_the_log_already_reported_keeps_the_log_message() {
        let files = Arc::new(FakeFiles::with(&[(
            "proc/sys/kernel/hung_task_detect_count",
            "4",
        )]));
        let c = clock();
        let hung = rec(
            0,
            1,
            1_000_000_000,
            "INFO: task mkdir:4242 blocked for more than 5 seconds.",
        );
        let mut d = KernelDetector::new(
            KernelSection::default(),
            deps(files.clone(), c.clone(), Some(records(&[hung])), None, None),
        );
        let s = d.sample().unwrap();
        assert!(
            s.conditions[0].message.starts_with("task mkdir:4242"),
            "{:?}",
            s.conditions
        );
        let h = hung_after_counter(&mut d, &files, &c, "5").unwrap();
        assert!(
            h.message.starts_with("task mkdir:4242"),
            "the counter must not overwrite the log: {}",
            h.message
        );
        // A later rise the log did not report is the counter's to tell.
        let h = hung_after_counter(&mut d, &files, &c, "6").unwrap();
        assert_eq!(h.reason, "HungTaskCounter");
    }

    /// Answers that task 4242 waits on a user's FUSE mount, any other task not.
    struct UserWaitsFor4242;
    impl HungTaskWaits for UserWaitsFor4242 {
        fn user_fuse_wait(&self, pid: u32) -> Option<crate::model::UserFuseWait> {
            (pid == 4242).then(|| crate::model::UserFuseWait {
                mounts: vec![("/home/eve/m".into(), 1000)],
            })
        }
    }

    #[test]
    fn a_hung_task_on_a_users_fuse_mount_raises_user_mount_hung_and_its_counter_rise_nothing() {
        // Issue 18.1: before, every hung-task report raised KernelHungTasks (restart,
        // reboot), whoever's mount the task waited on.
        let files = Arc::new(FakeFiles::with(&[(
            "proc/sys/kernel/hung_task_detect_count",
            "4",
        )]));
        let c = clock();
        let hung = rec(
            0,
            1,
            1_000_000_000,
            "INFO: task mkdir:4242 blocked for more than 5 seconds.",
        );
        let mut d = KernelDetector::new(
            KernelSection::default(),
            deps(files.clone(), c.clone(), Some(records(&[hung])), None, None),
        )
        .with_hung_task_waits(Arc::new(UserWaitsFor4242));
        let s = d.sample().unwrap();
        let kinds: Vec<_> = s
            .conditions
            .iter()
            .map(|c| (c.kind, c.reason.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![(ConditionKind::UserMountHung, "HungTaskOnUserMount")],
            "{:?}",
            s.conditions
        );
        assert!(
            s.conditions[0].message.contains("mkdir:4242")
                && s.conditions[0].message.contains("/home/eve/m (uid 1000)"),
            "{}",
            s.conditions[0].message
        );
        // The counter's rise for that same report is explained by it.
        assert_eq!(hung_after_counter(&mut d, &files, &c, "5"), None);
        // Another task's report is a kernel problem as before.
        let mut d = KernelDetector::new(
            KernelSection::default(),
            deps(
                files.clone(),
                c.clone(),
                Some(records(&[rec(
                    0,
                    2,
                    1_000_000_000,
                    "INFO: task dd:77 blocked for more than 5 seconds.",
                )])),
                None,
                None,
            ),
        )
        .with_hung_task_waits(Arc::new(UserWaitsFor4242));
        let s = d.sample().unwrap();
        assert_eq!(s.conditions[0].kind, ConditionKind::KernelHungTasks);
    }

    #[test]
    fn overwritten_records_are_counted_and_reading_goes_on() {
        let mut reg = Registry::default();
        let m = KernelMetrics::register(&mut reg);
        let script = vec![
            KmsgRead::Record(rec(0, 1, 999_000_000, "ordinary line").into_bytes()),
            KmsgRead::Lost,
            KmsgRead::Record(rec(0, 9, 999_500_000, NORMAL_STALL).into_bytes()),
        ];
        let files = Arc::new(FakeFiles::default());
        let mut d = KernelDetector::new(
            KernelSection::default(),
            deps(files, clock(), Some(script), Some(m), None),
        );
        let s = d.sample().unwrap();
        assert_eq!(
            s.conditions.len(),
            1,
            "the record after the gap is still read"
        );
        let text = crate::metrics::encode(&reg);
        // Records 2..=8 were overwritten: seven records, whatever EPIPE said.
        assert!(
            text.contains("nodemedic_kmsg_lost_records_total 7"),
            "{text}"
        );
        assert!(text.contains("nodemedic_kmsg_records_total 2"), "{text}");
    }

    /// A detector over a ring that every open reads again from its oldest record, as the
    /// real `/dev/kmsg` does, with its cursor in `state` (and `run`, when given).
    fn over_ring(
        ring: Vec<String>,
        state: &std::path::Path,
        run: Option<&std::path::Path>,
        metrics: Option<KernelMetrics>,
    ) -> KernelDetector {
        let files = Arc::new(FakeFiles::with(&[(
            "proc/sys/kernel/hung_task_warnings",
            "10",
        )]));
        KernelDetector::new(
            KernelSection::default(),
            KernelDeps {
                files,
                clock: clock(),
                metrics,
                oom_kills: None,
                boot_id: "boot-a".into(),
                state_dir: Some(state.to_path_buf()),
                runtime_dir: run.map(|r| r.to_path_buf()),
                storage: None,
                source: Some(Box::new(move || {
                    Ok(Box::new(ScriptedKmsg::records(
                        &ring.iter().map(String::as_str).collect::<Vec<_>>(),
                    )) as Box<dyn KmsgSource>)
                })),
            },
        )
    }

    fn write_cursor(state: &std::path::Path, json: &str) {
        std::fs::create_dir_all(state).unwrap();
        std::fs::write(state.join(super::super::cursor::CURSOR_FILE), json).unwrap();
    }

    fn ring3() -> Vec<String> {
        vec![
            rec(0, 1, 999_000_000, "ordinary line"),
            rec(0, 2, 999_100_000, "another"),
            rec(0, 3, 999_200_000, NORMAL_STALL),
        ]
    }

    #[test]
    fn a_cursor_ahead_of_the_ring_is_discarded_instead_of_skipping_every_record() {
        let dir = tempfile::tempdir().unwrap();
        write_cursor(dir.path(), r#"{"boot_id":"boot-a","last_seq":1000000}"#);
        let mut reg = Registry::default();
        let m = KernelMetrics::register(&mut reg);
        let mut d = over_ring(ring3(), dir.path(), None, Some(m));
        d.sample().unwrap();
        assert_eq!(d.events_seen, 0, "skipped while the cursor is believed");
        let s = d.sample().unwrap();
        assert_eq!(d.events_seen, 1, "the log is read again after the re-base");
        assert_eq!(s.conditions[0].kind, ConditionKind::KernelRcuStall);
        assert_eq!(s.info["cursor"]["rebased"], 1);
        let text = crate::metrics::encode(&reg);
        assert!(
            text.contains("nodemedic_kmsg_cursor_rebased_total 1"),
            "{text}"
        );
        // Later passes keep counting normally and never re-base again.
        d.sample().unwrap();
        assert_eq!(s.info["cursor"]["rebased"], 1);
        assert_eq!(d.events_seen, 1);
    }

    #[test]
    fn a_cursor_naming_a_record_with_another_timestamp_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        write_cursor(
            dir.path(),
            r#"{"boot_id":"boot-a","last_seq":3,"ts_usec":12345}"#,
        );
        let mut d = over_ring(ring3(), dir.path(), None, None);
        d.sample().unwrap();
        d.sample().unwrap();
        assert_eq!(d.events_seen, 1);
        // The same cursor with the right timestamp is this ring's: nothing is re-read.
        write_cursor(
            dir.path(),
            r#"{"boot_id":"boot-a","last_seq":3,"ts_usec":999200000}"#,
        );
        let mut d = over_ring(ring3(), dir.path(), None, None);
        d.sample().unwrap();
        d.sample().unwrap();
        assert_eq!(d.events_seen, 0);
    }

    #[test]
    fn records_overwritten_while_the_daemon_was_down_count_as_lost() {
        let dir = tempfile::tempdir().unwrap();
        write_cursor(dir.path(), r#"{"boot_id":"boot-a","last_seq":1}"#);
        let ring = vec![
            rec(0, 5, 999_000_000, "ordinary line"),
            rec(0, 6, 999_100_000, NORMAL_STALL),
        ];
        let mut reg = Registry::default();
        let m = KernelMetrics::register(&mut reg);
        let mut d = over_ring(ring, dir.path(), None, Some(m));
        d.sample().unwrap();
        assert_eq!(d.events_seen, 1);
        let text = crate::metrics::encode(&reg);
        assert!(
            text.contains("nodemedic_kmsg_lost_records_total 3"),
            "{text}"
        );
    }

    #[test]
    fn passes_write_the_cursor_to_the_runtime_dir_and_the_state_dir_only_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (state, run) = (dir.path().join("state"), dir.path().join("run"));
        std::fs::create_dir_all(&state).unwrap();
        let before = crate::metrics::state_bytes_for_tests();
        {
            let mut d = over_ring(ring3(), &state, Some(&run), None);
            for _ in 0..5 {
                d.sample().unwrap();
            }
            assert!(run.join("kmsg-cursor.json").exists());
            assert!(
                !state.join("kmsg-cursor.json").exists(),
                "no SD-card write per pass"
            );
            assert_eq!(crate::metrics::state_bytes_for_tests(), before);
        }
        assert!(
            state.join("kmsg-cursor.json").exists(),
            "a clean stop saves it durably"
        );
        assert!(crate::metrics::state_bytes_for_tests() > before);
        // A restart takes the runtime copy: nothing is counted again.
        let mut d = over_ring(ring3(), &state, Some(&run), None);
        d.sample().unwrap();
        d.sample().unwrap();
        assert_eq!(d.events_seen, 0);
    }

    #[test]
    fn a_quiet_log_is_waited_on_until_the_counters_or_a_condition_fall_due() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = over_ring(
            vec![rec(0, 1, 999_000_000, "ordinary line")],
            dir.path(),
            None,
            None,
        );
        assert_eq!(
            d.blocks_for(),
            Duration::ZERO,
            "the first pass reads at once"
        );
        d.sample().unwrap();
        assert_eq!(d.blocks_for(), COUNTERS_QUIET_EVERY);
        // A held condition clears `quiet` after its event: the wait ends no later. The
        // stall was logged at 999 s, "now" is 1000 s.
        let mut d = det(
            vec![rec(0, 1, 999_000_000, NORMAL_STALL)],
            KernelSection {
                quiet: crate::config::ConfigDuration::secs(30),
                ..Default::default()
            },
            clock(),
            None,
        );
        d.sample().unwrap();
        assert_eq!(d.blocks_for(), Duration::from_secs(29));
    }

    #[test]
    fn hz_is_learnt_from_a_gzipped_kernel_config() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"CONFIG_FOO=y\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n")
            .unwrap();
        let files = FakeFiles::default();
        let bytes = gz.finish().unwrap();
        // FakeFiles holds text; use a rooted dir for binary content.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/config.gz"), bytes).unwrap();
        let (hz, src) = learn_hz(
            &KernelSection::default(),
            &crate::edge::RootedFiles::new(dir.path()),
        );
        assert_eq!((hz, src.as_str()), (250, "/proc/config.gz"));
        let (hz, _) = learn_hz(&KernelSection::default(), &files);
        assert_eq!(hz, FALLBACK_HZ);
    }
}
