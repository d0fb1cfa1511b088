//! The storage detector: takes the kernel's storage events as they come (the kernel
//! detector pushes them into `model::StorageEvents` and wakes this thread), attributes
//! each to the watched filesystems its device backs, write-probes `/`, the k3s data dir
//! and the state dir every `probe_interval` and at once after an error on one of them, and
//! publishes `StorageErrors` and `ReadOnlyFilesystem`. It never touches a watched
//! filesystem on its own thread: mountinfo and sysfs are read, the probes run on the
//! bounded pool behind [`WriteProbes`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::attribution::{BlockDev, BlockTable, Watched, mounts_of, watched};
use super::judge::{Attributed, StorageJudge, StorageJudgeConfig};
use super::metrics::StorageMetrics;
use super::probe::{PROBE_DIR, WriteOutcome, WriteProbes};
use crate::config::StorageSection;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::{Clock, HostFiles};
use crate::formats::mountinfo::parse_mountinfo;
use crate::model::StorageEvents;

/// The longest wait between passes: mountinfo is re-read at least this often (a newly
/// mounted filesystem is watched from then on; with the mounts detector on, its change
/// of the mount table wakes this one at once), and it bounds how long the heartbeat
/// vouches for a wait on a condition variable that cannot wedge. Errors on a watched
/// filesystem come as kernel events and wake it at once too (issue 24: wake-ups).
const MAX_WAIT: Duration = Duration::from_secs(300);

pub struct StorageDetector {
    cfg: StorageSection,
    state_dir: PathBuf,
    files: Arc<dyn HostFiles>,
    clock: Arc<dyn Clock>,
    queue: StorageEvents,
    probes: Option<Box<dyn WriteProbes>>,
    judge: StorageJudge,
    metrics: Option<StorageMetrics>,
    next_probe: Option<Duration>,
    probe_now: bool,
    /// The last probe of each watched mount point: outcome and duration.
    last: BTreeMap<PathBuf, (WriteOutcome, Duration)>,
    first: bool,
    counted: u64,
    dropped: u64,
}

impl StorageDetector {
    /// How long the next pass may wait for kernel events.
    fn wait_for(&self, now: Duration) -> Duration {
        match (&self.probes, self.next_probe) {
            (Some(_), Some(t)) => t.saturating_sub(now).min(MAX_WAIT),
            // No probe to run (probing off, or never yet): only kernel events wake it.
            _ => MAX_WAIT,
        }
    }

    pub fn new(
        cfg: StorageSection,
        state_dir: PathBuf,
        files: Arc<dyn HostFiles>,
        clock: Arc<dyn Clock>,
        queue: StorageEvents,
        probes: Option<Box<dyn WriteProbes>>,
        metrics: Option<StorageMetrics>,
    ) -> Self {
        StorageDetector {
            judge: StorageJudge::new(StorageJudgeConfig::from_section(&cfg)),
            probes: probes.filter(|_| cfg.probe),
            cfg,
            state_dir,
            files,
            clock,
            queue,
            metrics,
            next_probe: None,
            probe_now: false,
            last: BTreeMap::new(),
            first: true,
            counted: 0,
            dropped: 0,
        }
    }

    fn block_table(&self) -> BlockTable {
        let names = self.files.list("sys/class/block").unwrap_or_default();
        BlockTable(
            names
                .into_iter()
                .filter_map(|n| {
                    let base = format!("sys/class/block/{n}");
                    let dev = self.files.read_string(&format!("{base}/dev")).ok()?;
                    let (maj, min) = dev.trim().split_once(':')?;
                    Some(BlockDev {
                        dev: (maj.parse().ok()?, min.parse().ok()?),
                        sys_path: std::fs::read_link(self.files.path(&base)).unwrap_or_default(),
                        holders: self
                            .files
                            .list(&format!("{base}/holders"))
                            .unwrap_or_default(),
                        name: n,
                    })
                })
                .collect(),
        )
    }

    fn probe_dir(&self, w: &Watched) -> Option<PathBuf> {
        let target = w.probe_target.as_ref()?;
        Some(if w.roles.contains(&"state") {
            self.state_dir.join(PROBE_DIR)
        } else {
            target.join(PROBE_DIR)
        })
    }
}

impl Detector for StorageDetector {
    fn name(&self) -> &'static str {
        "storage"
    }

    /// Streaming: `sample` waits for kernel events (or the next probe) itself.
    fn interval(&self) -> Duration {
        Duration::ZERO
    }

    /// Until the next probe (kernel events and the stop end the wait sooner), at most
    /// [`MAX_WAIT`]: the thread's heartbeat vouches for it, so it never wakes just to beat.
    fn blocks_for(&self) -> Duration {
        if self.first {
            return Duration::ZERO;
        }
        self.wait_for(self.clock.monotonic())
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let now = self.clock.monotonic();
        if !self.first {
            self.queue.wait(self.wait_for(now));
        }
        self.first = false;
        let now = self.clock.monotonic();
        let mi = self
            .files
            .read("proc/self/mountinfo")
            .map_err(|e| format!("reading mountinfo: {e}"))?;
        let table = parse_mountinfo(&mi);
        let watched = watched(
            &table.entries,
            &self.cfg.k3s_data_dir,
            &self.state_dir,
            &self.cfg.kubelet_dir,
        );
        let probing = self.probes.is_some();

        let (events, dropped) = self.queue.drain();
        self.dropped += dropped;
        let mut blocks: Option<BlockTable> = None;
        for e in &events {
            if e.kind == "undervoltage" {
                self.judge.undervoltage(now, e.cleared);
                continue;
            }
            self.counted += 1;
            let device = e.device.as_deref().unwrap_or("unknown");
            let blocks = blocks.get_or_insert_with(|| self.block_table());
            let on = mounts_of(blocks, &watched, device);
            if let Some(m) = &self.metrics {
                m.error(device, !on.is_empty());
            }
            let a = Attributed {
                kind: e.kind,
                device,
                detail: &e.detail,
                mounts: on
                    .iter()
                    .map(|w| {
                        (
                            w.mount_point.clone(),
                            w.source.clone(),
                            probing && w.probe_target.is_some(),
                        )
                    })
                    .collect(),
            };
            if self.judge.event(&a, now) {
                self.probe_now = true;
            }
        }
        for w in &watched {
            self.judge.mount_state(
                &w.mount_point,
                &w.source,
                w.emergency_ro,
                probing && w.probe_target.is_some(),
            );
        }

        if self.probes.is_some() && (self.probe_now || self.next_probe.is_none_or(|t| now >= t)) {
            let targets: Vec<(&Watched, PathBuf)> = watched
                .iter()
                .filter_map(|w| self.probe_dir(w).map(|d| (w, d)))
                .collect();
            let dirs: Vec<PathBuf> = targets.iter().map(|(_, d)| d.clone()).collect();
            let deadline = self.cfg.probe_deadline.get();
            let outcomes = self
                .probes
                .as_mut()
                .map(|p| p.probe_all(&dirs, deadline))
                .unwrap_or_default();
            for ((w, _), (o, took)) in targets.iter().zip(outcomes) {
                self.judge.probe(&w.mount_point, &w.source, &o);
                self.last.insert(w.mount_point.clone(), (o, took));
            }
            self.probe_now = false;
            self.next_probe = Some(self.clock.monotonic() + self.cfg.probe_interval.get());
        }
        let points: Vec<&PathBuf> = watched.iter().map(|w| &w.mount_point).collect();
        self.judge.keep_mounts(&points);
        self.last.retain(|m, _| points.contains(&m));
        self.judge.tick(now);

        let mut notes = Vec::new();
        let mut info = Vec::new();
        let mut series = Vec::new();
        for w in &watched {
            let ro = self.judge.is_read_only(&w.mount_point);
            let last = self.last.get(&w.mount_point);
            let probe = match last {
                Some((WriteOutcome::Ok, d)) => format!("write probe ok in {} ms", d.as_millis()),
                // The directory the probe writes in is made one level deep, never its
                // parent: the state dir is missing until the daemon first starts (a
                // `check` right after install), which says nothing of the filesystem.
                Some((
                    WriteOutcome::Failed {
                        errno: Some(libc::ENOENT),
                        ..
                    },
                    _,
                )) => format!(
                    "not probed: {} does not exist (the daemon makes it at start)",
                    self.probe_dir(w)
                        .as_deref()
                        .and_then(Path::parent)
                        .unwrap_or(&w.mount_point)
                        .display()
                ),
                Some((WriteOutcome::Failed { error, .. }, _)) => {
                    format!("write probe failed: {error}")
                }
                Some((WriteOutcome::Stuck, d)) => {
                    format!("write probe stuck for {} s", d.as_secs())
                }
                Some((WriteOutcome::NotProbed(why), _)) => format!("not probed: {why}"),
                None if w.probe_target.is_some() && probing => "not probed yet".into(),
                None => "not probed (pod volume or probe off)".into(),
            };
            let state = if ro { "READ-ONLY" } else { "writable" };
            let failed = matches!(last, Some((WriteOutcome::Failed { errno, .. }, _)) if *errno != Some(libc::ENOENT));
            notes.push(CheckNote::new(
                if ro || failed {
                    NoteLevel::Warn
                } else {
                    NoteLevel::Ok
                },
                w.mount_point.display().to_string(),
                format!(
                    "{state}: {} {} {}:{} ({}); {probe}",
                    w.fstype,
                    w.source,
                    w.dev.0,
                    w.dev.1,
                    w.roles.join(", ")
                ),
            ));
            info.push(json!({
                "mount": w.mount_point,
                "source": w.source,
                "fstype": w.fstype,
                "dev": format!("{}:{}", w.dev.0, w.dev.1),
                "roles": w.roles,
                "emergency_ro": w.emergency_ro,
                "read_only": ro,
                "probe": probe,
            }));
            series.push((
                w.mount_point.display().to_string(),
                !ro,
                last.map(|(_, d)| d.as_secs_f64()),
            ));
        }
        if let Some(m) = &self.metrics {
            m.mounts(&series);
        }
        Ok(Sample {
            conditions: self.judge.conditions(),
            info: json!({
                "mounts": info,
                "storage_events": self.counted,
                "events_dropped": self.dropped,
            }),
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{FakeClock, FakeFiles};
    use crate::model::{ConditionKind, StorageEvent};
    use crate::storage::probe::FakeWriteProbes;

    const MOUNTINFO: &str = "22 1 179:2 / / rw,relatime - ext4 /dev/mmcblk0p2 rw\n\
        24 22 7:3 / /var/lib/rancher/k3s rw - ext4 /dev/loop3 rw\n";

    fn det(
        files: FakeFiles,
        probes: FakeWriteProbes,
    ) -> (StorageDetector, StorageEvents, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::new(1_000_000, Duration::from_secs(100)));
        let q = StorageEvents::default();
        let d = StorageDetector::new(
            StorageSection {
                // Shorter than `quiet` (30 min), so a probe comes before errors go quiet.
                probe_interval: crate::config::ConfigDuration::secs(30),
                ..StorageSection::default()
            },
            "/var/lib/nodemedic".into(),
            Arc::new(files),
            clock.clone(),
            q.clone(),
            Some(Box::new(probes)),
            None,
        );
        (d, q, clock)
    }

    fn files() -> FakeFiles {
        FakeFiles::with(&[
            ("proc/self/mountinfo", MOUNTINFO),
            ("sys/class/block/mmcblk0p2/dev", "179:2\n"),
            ("sys/class/block/loop3/dev", "7:3\n"),
        ])
    }

    fn ev(kind: &'static str, dev: &str) -> StorageEvent {
        StorageEvent {
            kind,
            device: Some(dev.into()),
            cleared: false,
            detail: "x".into(),
            mono: Duration::ZERO,
        }
    }

    #[test]
    fn between_probes_the_detector_waits_for_events_until_the_next_probe_not_every_2_s() {
        let (mut d, q, clock) = det(files(), FakeWriteProbes::default());
        assert_eq!(
            d.blocks_for(),
            Duration::ZERO,
            "the first pass runs at once"
        );
        d.sample().unwrap();
        assert_eq!(
            d.blocks_for(),
            Duration::from_secs(30),
            "until the next probe"
        );
        clock.advance(Duration::from_secs(20));
        assert_eq!(d.blocks_for(), Duration::from_secs(10));
        // A kernel event ends the wait at once.
        q.push(ev("io_error", "loop3"));
        let t0 = std::time::Instant::now();
        d.sample().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        // So does the daemon's stop.
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            q2.wake();
        });
        let t0 = std::time::Instant::now();
        d.sample().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }

    #[test]
    fn a_state_dir_not_made_yet_is_not_probed_rather_than_a_failed_filesystem() {
        let probes = FakeWriteProbes::default();
        probes.set(
            PathBuf::from("/var/lib/nodemedic").join(PROBE_DIR),
            WriteOutcome::Failed {
                errno: Some(libc::ENOENT),
                error: "No such file or directory (os error 2)".into(),
            },
        );
        let (mut d, _q, clock) = det(files(), probes.clone());
        let s = d.sample().unwrap();
        assert!(s.conditions.is_empty(), "{:?}", s.conditions);
        let root = &s.notes[0];
        assert_eq!(root.level, NoteLevel::Ok, "{root:?}");
        assert!(
            root.detail.contains(
                "not probed: /var/lib/nodemedic does not exist (the daemon makes it at start)"
            ),
            "{root:?}"
        );
        // Any other failure stays a warning.
        probes.set(
            PathBuf::from("/var/lib/nodemedic").join(PROBE_DIR),
            WriteOutcome::Failed {
                errno: Some(libc::ENOSPC),
                error: "No space left on device (os error 28)".into(),
            },
        );
        clock.advance(Duration::from_secs(31));
        let s = d.sample().unwrap();
        assert_eq!(s.notes[0].level, NoteLevel::Warn, "{:?}", s.notes[0]);
        assert!(s.notes[0].detail.contains("write probe failed: No space"));
    }

    #[test]
    fn a_read_only_remount_of_the_k3s_data_dir_raises_and_a_probe_clears_it() {
        let probes = FakeWriteProbes::default();
        let (mut d, q, clock) = det(files(), probes.clone());
        let s = d.sample().unwrap();
        assert!(s.conditions.is_empty(), "{:?}", s.conditions);
        assert_eq!(s.notes.len(), 2);
        assert!(s.notes[0].detail.contains("writable"), "{:?}", s.notes);
        let k3s = PathBuf::from("/var/lib/rancher/k3s").join(PROBE_DIR);
        probes.set(
            &k3s,
            WriteOutcome::Failed {
                errno: Some(libc::EROFS),
                error: "Read-only file system".into(),
            },
        );
        q.push(ev("fs_error", "loop3"));
        q.push(ev("fs_readonly", "loop3"));
        let s = d.sample().unwrap();
        let kinds: Vec<_> = s
            .conditions
            .iter()
            .map(|c| (c.kind, c.subject.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (ConditionKind::StorageErrors, "loop3", "DeviceErrors"),
                (
                    ConditionKind::ReadOnlyFilesystem,
                    "/var/lib/rancher/k3s",
                    "ProbeReadOnly"
                )
            ]
        );
        // The root's probe goes to the state dir, nodemedic's own.
        assert!(
            s.notes[0].detail.contains("write probe ok"),
            "{:?}",
            s.notes
        );
        probes.set(&k3s, WriteOutcome::Ok);
        // The next periodic probe is due: the pass does not wait for events.
        clock.advance(Duration::from_secs(31));
        let t0 = std::time::Instant::now();
        let s = d.sample().unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "waited past the probe's time"
        );
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].kind, ConditionKind::StorageErrors);
    }

    #[test]
    fn an_empty_sd_slot_is_counted_and_raises_nothing() {
        let (mut d, q, _) = det(files(), FakeWriteProbes::default());
        d.sample().unwrap();
        for _ in 0..50 {
            q.push(ev("mmc_error", "mmc1"));
        }
        let s = d.sample().unwrap();
        assert!(s.conditions.is_empty());
        assert_eq!(s.info["storage_events"], 50);
    }
}
