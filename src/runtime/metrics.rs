//! The container-runtime metrics, registered into the daemon's registry:
//!
//! | metric | source |
//! |---|---|
//! | `nodemedic_sandboxes{state}` | the runtime detector's last CRI listing (`ready`, `notready`) |
//! | `nodemedic_runtime_up` | 1 when the last CRI listing succeeded, else 0 (also with no runtime socket) |
//! | `nodemedic_sandboxes_removed_total{reason}` | preflight's totals file plus the daemon's own runtime removals (`name_reserved`) |
//! | `nodemedic_cni_files_removed_total{kind}` | preflight's totals file |
//! | `nodemedic_images_removed_total{reason}` | preflight's totals file |
//! | `nodemedic_preflight_duration_seconds` | the last preflight run (0 until one ran) |
//! | `nodemedic_preflight_last_run_timestamp_seconds` | unix time the last preflight run ended (0 until one ran) |
//!
//! Preflight runs in its own short process, so its figures come from the file it owns
//! (`preflight-totals.json`, see [`crate::state::preflight_totals`]); [`RuntimeMetrics::refresh_preflight`]
//! re-reads it only when its size or mtime changed, and the runtime detector calls it on a
//! timer, never per scrape. File totals are turned into counter increments against what
//! was last applied, so counters never go down even if the file is reset.

use crate::metrics::GaugeF;
use crate::state::preflight_totals::{self as totals, CNI_KINDS, SANDBOX_REASONS, Totals};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub(crate) state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub(crate) kind: String,
}

/// What was last applied from the totals file.
#[derive(Default)]
struct Applied {
    /// (len, mtime) of the file when last read: unchanged means nothing to do.
    stamp: Option<(u64, SystemTime)>,
    sandboxes: BTreeMap<String, u64>,
    cni: BTreeMap<String, u64>,
    images: BTreeMap<String, u64>,
}

#[derive(Clone)]
pub struct RuntimeMetrics {
    pub(crate) sandboxes: Family<StateLabels, Gauge>,
    pub(crate) runtime_up: Gauge,
    pub(crate) sandboxes_removed: Family<ReasonLabels, Counter>,
    pub(crate) cni_files_removed: Family<KindLabels, Counter>,
    pub(crate) images_removed: Family<ReasonLabels, Counter>,
    pub(crate) preflight_duration: GaugeF,
    pub(crate) preflight_last_run: GaugeF,
    applied: Arc<Mutex<Applied>>,
}

impl RuntimeMetrics {
    /// Registers every runtime metric; every label value has a series from the start.
    pub fn register(reg: &mut Registry) -> Self {
        let m = RuntimeMetrics {
            sandboxes: Family::default(),
            runtime_up: Gauge::default(),
            sandboxes_removed: Family::default(),
            cni_files_removed: Family::default(),
            images_removed: Family::default(),
            preflight_duration: GaugeF::default(),
            preflight_last_run: GaugeF::default(),
            applied: Arc::default(),
        };
        reg.register(
            "nodemedic_sandboxes",
            "Pod sandboxes by CRI state (ready, notready) in the last listing",
            m.sandboxes.clone(),
        );
        reg.register(
            "nodemedic_runtime_up",
            "1 when the last CRI listing of the container runtime succeeded",
            m.runtime_up.clone(),
        );
        reg.register(
            "nodemedic_sandboxes_removed",
            "Dead sandboxes removed, by reason (preflight reasons, and name_reserved at runtime)",
            m.sandboxes_removed.clone(),
        );
        reg.register(
            "nodemedic_cni_files_removed",
            "CNI result files and IP reservations removed by preflight, by kind",
            m.cni_files_removed.clone(),
        );
        reg.register(
            "nodemedic_images_removed",
            "Image records preflight removed because a layer snapshot lost its directory, by reason",
            m.images_removed.clone(),
        );
        reg.register_with_unit(
            "nodemedic_preflight_duration",
            "Duration of the last nodemedic preflight run (0 until one ran)",
            Unit::Seconds,
            m.preflight_duration.clone(),
        );
        reg.register_with_unit(
            "nodemedic_preflight_last_run_timestamp",
            "Unix time the last nodemedic preflight run ended (0 until one ran)",
            Unit::Seconds,
            m.preflight_last_run.clone(),
        );
        for s in ["ready", "notready"] {
            let _ = m.sandboxes.get_or_create(&StateLabels { state: s.into() });
        }
        for r in SANDBOX_REASONS {
            let _ = m
                .sandboxes_removed
                .get_or_create(&ReasonLabels { reason: r.into() });
        }
        for k in CNI_KINDS {
            let _ = m
                .cni_files_removed
                .get_or_create(&KindLabels { kind: k.into() });
        }
        for r in totals::IMAGE_REASONS {
            let _ = m
                .images_removed
                .get_or_create(&ReasonLabels { reason: r.into() });
        }
        m
    }

    /// Re-reads `preflight-totals.json` in `state_dir` if it changed since the last call.
    /// `Ok(true)` when new totals were applied; a missing file is `Ok(false)`.
    pub(crate) fn refresh_preflight(&self, state_dir: &Path) -> Result<bool, String> {
        let path = state_dir.join(totals::TOTALS_FILE);
        let stamp = match std::fs::metadata(&path) {
            Ok(md) => (md.len(), md.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(format!("cannot stat {}: {e}", path.display())),
        };
        if self.applied.lock().unwrap_or_else(|p| p.into_inner()).stamp == Some(stamp) {
            return Ok(false);
        }
        let Some(t) = totals::read(state_dir)? else {
            return Ok(false);
        };
        self.apply(&t);
        self.applied.lock().unwrap_or_else(|p| p.into_inner()).stamp = Some(stamp);
        Ok(true)
    }

    /// Applies file totals: counters grow by what the file gained since the last apply.
    pub(crate) fn apply(&self, t: &Totals) {
        let mut a = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        for label in SANDBOX_REASONS {
            let now = t.sandboxes_removed.get(label).copied().unwrap_or(0);
            let before = a.sandboxes.insert(label.into(), now).unwrap_or(0);
            if now > before {
                self.sandboxes_removed
                    .get_or_create(&ReasonLabels {
                        reason: label.into(),
                    })
                    .inc_by(now - before);
            }
        }
        for label in CNI_KINDS {
            let now = t.cni_files_removed.get(label).copied().unwrap_or(0);
            let before = a.cni.insert(label.into(), now).unwrap_or(0);
            if now > before {
                self.cni_files_removed
                    .get_or_create(&KindLabels { kind: label.into() })
                    .inc_by(now - before);
            }
        }
        for label in totals::IMAGE_REASONS {
            let now = t.images_removed.get(label).copied().unwrap_or(0);
            let before = a.images.insert(label.into(), now).unwrap_or(0);
            if now > before {
                self.images_removed
                    .get_or_create(&ReasonLabels {
                        reason: label.into(),
                    })
                    .inc_by(now - before);
            }
        }
        if t.runs > 0 {
            self.preflight_duration.set(t.last_duration_seconds);
            self.preflight_last_run.set(t.last_run_unix as f64);
        }
    }

    /// Counts sandboxes the daemon removed for a name-reservation conflict
    /// ([`super::resolve::resolve_conflicts`]).
    pub(crate) fn removed_at_runtime(&self, n: u64) {
        self.sandboxes_removed
            .get_or_create(&ReasonLabels {
                reason: "name_reserved".into(),
            })
            .inc_by(n);
    }

    /// The last listing's counts.
    pub(crate) fn set_sandboxes(&self, ready: usize, notready: usize) {
        for (s, n) in [("ready", ready), ("notready", notready)] {
            self.sandboxes
                .get_or_create(&StateLabels { state: s.into() })
                .set(n as i64);
        }
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.runtime_up.set(i64::from(up));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::encode;

    fn totals(dead: u64, corrupt: u64, runs: u64) -> Totals {
        Totals {
            runs,
            last_run_unix: 1_763_700_000,
            last_duration_seconds: 0.125,
            sandboxes_removed: [("dead_after_reboot".to_string(), dead)].into(),
            cni_files_removed: [("corrupt_result".to_string(), corrupt)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_series_exists_from_the_start_with_conventional_names() {
        let mut reg = Registry::default();
        let m = RuntimeMetrics::register(&mut reg);
        let text = encode(&reg);
        for want in [
            "nodemedic_sandboxes{state=\"ready\"} 0",
            "nodemedic_sandboxes{state=\"notready\"} 0",
            "nodemedic_runtime_up 0",
            "nodemedic_sandboxes_removed_total{reason=\"name_reserved\"} 0",
            "nodemedic_sandboxes_removed_total{reason=\"dead_after_reboot\"} 0",
            "nodemedic_cni_files_removed_total{kind=\"stale_reservation\"} 0",
            "nodemedic_sandboxes_removed_total{reason=\"sandbox_store_orphan\"} 0",
            "nodemedic_images_removed_total{reason=\"snapshot_missing\"} 0",
            "nodemedic_preflight_duration_seconds 0",
            "nodemedic_preflight_last_run_timestamp_seconds 0",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        let mut with_images = Totals::default();
        with_images
            .images_removed
            .insert("snapshot_missing".into(), 2);
        m.apply(&with_images);
        assert!(
            encode(&reg).contains("nodemedic_images_removed_total{reason=\"snapshot_missing\"} 2")
        );
    }

    #[test]
    fn file_totals_become_counter_increments_that_never_go_down() {
        let mut reg = Registry::default();
        let m = RuntimeMetrics::register(&mut reg);
        m.removed_at_runtime(2);
        m.apply(&totals(3, 1, 1));
        m.apply(&totals(5, 1, 2));
        let text = encode(&reg);
        assert!(
            text.contains("nodemedic_sandboxes_removed_total{reason=\"dead_after_reboot\"} 5"),
            "{text}"
        );
        assert!(text.contains("nodemedic_sandboxes_removed_total{reason=\"name_reserved\"} 2"));
        assert!(text.contains("nodemedic_cni_files_removed_total{kind=\"corrupt_result\"} 1"));
        assert!(text.contains("nodemedic_preflight_duration_seconds 0.125"));
        assert!(text.contains("nodemedic_preflight_last_run_timestamp_seconds 1763700000"));
        // The file was reset (corrupt, rewritten from zero): the counter stays, then grows.
        m.apply(&totals(1, 0, 1));
        m.apply(&totals(2, 0, 2));
        let text = encode(&reg);
        assert!(
            text.contains("nodemedic_sandboxes_removed_total{reason=\"dead_after_reboot\"} 6"),
            "{text}"
        );
    }

    #[test]
    fn refresh_reads_the_file_only_when_it_changed() {
        let d = tempfile::tempdir().unwrap();
        let mut reg = Registry::default();
        let m = RuntimeMetrics::register(&mut reg);
        assert_eq!(m.refresh_preflight(d.path()), Ok(false), "no file yet");
        totals::write(d.path(), &totals(4, 0, 1)).unwrap();
        assert_eq!(m.refresh_preflight(d.path()), Ok(true));
        assert_eq!(m.refresh_preflight(d.path()), Ok(false), "unchanged");
        totals::write(d.path(), &totals(40, 0, 2)).unwrap();
        assert_eq!(m.refresh_preflight(d.path()), Ok(true), "a different size");
        let text = encode(&reg);
        assert!(
            text.contains("nodemedic_sandboxes_removed_total{reason=\"dead_after_reboot\"} 40"),
            "{text}"
        );
    }

    #[test]
    fn sandbox_counts_and_up_are_gauges() {
        let mut reg = Registry::default();
        let m = RuntimeMetrics::register(&mut reg);
        m.set_sandboxes(3, 1);
        m.set_up(true);
        let text = encode(&reg);
        assert!(text.contains("nodemedic_sandboxes{state=\"ready\"} 3"));
        assert!(text.contains("nodemedic_sandboxes{state=\"notready\"} 1"));
        assert!(text.contains("nodemedic_runtime_up 1"));
    }
}
