//! The storage verdict, pure.
//!
//! - `StorageErrors` (subject: the device the kernel named): `error_burst` storage errors
//!   on a device that backs a watched filesystem within `error_window`, or one filesystem
//!   error or read-only remount, raise it; it clears after `quiet` without an error on
//!   the device. Its message names the mounts the device backs and, when the kernel
//!   reported under-voltage within `undervoltage_window` before, names that as the likely
//!   cause (reason `LikelyUndervoltage`).
//! - `ReadOnlyFilesystem` (subject: the mount point): a read-only remount of a watched
//!   filesystem, mountinfo's `emergency_ro`, a write probe failing with EROFS or EIO, or a
//!   probe that hangs, raise it; only a write probe that succeeds clears it (a filesystem
//!   nodemedic cannot probe, a pod volume, clears when mountinfo no longer says
//!   `emergency_ro` and no read-only remount came since).
//!
//! Events on devices that back no watched filesystem are counted (metrics) and raise
//! nothing.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use super::probe::WriteOutcome;
use crate::config::StorageSection;
use crate::model::{Condition, ConditionKind};

/// At most this many devices are tracked; a storm over more keeps the ones in trouble.
const MAX_DEVICES: usize = 64;

#[derive(Clone, Debug)]
pub(crate) struct StorageJudgeConfig {
    pub(crate) burst: usize,
    pub(crate) window: Duration,
    pub(crate) quiet: Duration,
    pub(crate) undervoltage_window: Duration,
}

impl StorageJudgeConfig {
    pub(crate) fn from_section(s: &StorageSection) -> Self {
        StorageJudgeConfig {
            burst: s.error_burst.max(1) as usize,
            window: s.error_window.get(),
            quiet: s.quiet.get(),
            undervoltage_window: s.undervoltage_window.get(),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Device {
    recent: VecDeque<Duration>,
    last: Duration,
    raised: bool,
    mounts: Vec<String>,
    last_detail: String,
    /// Under-voltage seen within the window before this episode's errors.
    undervoltage: bool,
}

#[derive(Clone, Debug)]
struct ReadOnly {
    reason: &'static str,
    message: String,
    /// Only a successful probe clears it (the filesystem is probed).
    probed: bool,
}

/// One storage event, as the detector hands it in after attribution.
#[derive(Clone, Debug)]
pub(crate) struct Attributed<'a> {
    pub(crate) kind: &'a str,
    pub(crate) device: &'a str,
    pub(crate) detail: &'a str,
    /// The watched mounts the device backs: (mount point, source, probed).
    pub(crate) mounts: Vec<(PathBuf, String, bool)>,
}

#[derive(Debug)]
pub(crate) struct StorageJudge {
    cfg: StorageJudgeConfig,
    devices: BTreeMap<String, Device>,
    read_only: BTreeMap<PathBuf, ReadOnly>,
    last_undervoltage: Option<Duration>,
}

impl StorageJudge {
    pub(crate) fn new(cfg: StorageJudgeConfig) -> Self {
        StorageJudge {
            cfg,
            devices: BTreeMap::new(),
            read_only: BTreeMap::new(),
            last_undervoltage: None,
        }
    }

    pub(crate) fn undervoltage(&mut self, now: Duration, cleared: bool) {
        if !cleared {
            self.last_undervoltage = Some(now);
        }
    }

    fn recent_undervoltage(&self, now: Duration) -> bool {
        self.last_undervoltage
            .is_some_and(|t| now.saturating_sub(t) <= self.cfg.undervoltage_window)
    }

    /// A storage event; true when it is about a watched filesystem (probe it now).
    pub(crate) fn event(&mut self, e: &Attributed<'_>, now: Duration) -> bool {
        if e.mounts.is_empty() {
            return false;
        }
        let uv = self.recent_undervoltage(now);
        if !self.devices.contains_key(e.device) && self.devices.len() >= MAX_DEVICES {
            // Forget the quietest device that is not raised.
            if let Some(k) = self
                .devices
                .iter()
                .filter(|(_, d)| !d.raised)
                .min_by_key(|(_, d)| d.last)
                .map(|(k, _)| k.clone())
            {
                self.devices.remove(&k);
            } else {
                return true;
            }
        }
        let d = self.devices.entry(e.device.to_string()).or_default();
        d.recent.push_back(now);
        while d
            .recent
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > self.cfg.window)
        {
            d.recent.pop_front();
        }
        d.last = now;
        d.last_detail = format!("{}: {}", e.kind, e.detail);
        d.mounts = e
            .mounts
            .iter()
            .map(|(m, src, _)| format!("{} ({src})", m.display()))
            .collect();
        let at_once = matches!(e.kind, "fs_error" | "fs_readonly");
        if !d.raised && (at_once || d.recent.len() >= self.cfg.burst) {
            d.raised = true;
            d.undervoltage = uv;
        } else if d.raised && uv {
            d.undervoltage = true;
        }
        if e.kind == "fs_readonly" {
            for (m, src, probed) in &e.mounts {
                self.read_only.insert(
                    m.clone(),
                    ReadOnly {
                        reason: "RemountedReadOnly",
                        message: format!("the kernel remounted {} ({src}) read-only", m.display()),
                        probed: *probed,
                    },
                );
            }
        }
        true
    }

    /// mountinfo's view of a watched filesystem, every pass.
    pub(crate) fn mount_state(
        &mut self,
        mount: &PathBuf,
        source: &str,
        emergency_ro: bool,
        probed: bool,
    ) {
        if emergency_ro {
            self.read_only.entry(mount.clone()).or_insert(ReadOnly {
                reason: "EmergencyReadOnly",
                message: format!(
                    "mountinfo says {} ({source}) is emergency_ro",
                    mount.display()
                ),
                probed,
            });
        } else if !probed
            && self
                .read_only
                .get(mount)
                .is_some_and(|r| r.reason == "EmergencyReadOnly")
        {
            self.read_only.remove(mount);
        }
    }

    /// A write probe's outcome for a watched filesystem.
    pub(crate) fn probe(&mut self, mount: &PathBuf, source: &str, o: &WriteOutcome) {
        let (reason, what) = match o {
            WriteOutcome::Ok => {
                self.read_only.remove(mount);
                return;
            }
            WriteOutcome::Failed {
                errno: Some(libc::EROFS),
                ..
            } => (
                "ProbeReadOnly",
                "a write probe failed: read-only (EROFS)".to_string(),
            ),
            WriteOutcome::Failed {
                errno: Some(libc::EIO),
                ..
            } => (
                "ProbeIOError",
                "a write probe failed: I/O error (EIO)".to_string(),
            ),
            WriteOutcome::Stuck => (
                "ProbeHung",
                "a write probe has not returned: the filesystem is stuck".to_string(),
            ),
            WriteOutcome::Failed { .. } | WriteOutcome::NotProbed(_) => return,
        };
        let r = self.read_only.entry(mount.clone()).or_insert(ReadOnly {
            reason,
            message: String::new(),
            probed: true,
        });
        r.reason = reason;
        r.probed = true;
        r.message = format!("{} ({source}): {what}", mount.display());
    }

    /// Ends quiet StorageErrors and forgets old errors.
    pub(crate) fn tick(&mut self, now: Duration) {
        let (window, quiet) = (self.cfg.window, self.cfg.quiet);
        self.devices.retain(|_, d| {
            while d
                .recent
                .front()
                .is_some_and(|t| now.saturating_sub(*t) > window)
            {
                d.recent.pop_front();
            }
            let idle = now.saturating_sub(d.last);
            if d.raised && idle >= quiet {
                d.raised = false;
            }
            d.raised || !d.recent.is_empty()
        });
    }

    pub(crate) fn conditions(&self) -> Vec<Condition> {
        let mut v: Vec<Condition> = self
            .devices
            .iter()
            .filter(|(_, d)| d.raised)
            .map(|(dev, d)| {
                let mut msg = format!(
                    "{} storage error(s) on {dev} in the last {}s, backing {}; last: {}",
                    d.recent.len(),
                    self.cfg.window.as_secs(),
                    d.mounts.join(", "),
                    d.last_detail
                );
                if d.undervoltage {
                    msg.push_str(
                        "; under-voltage shortly before: the likely cause (check the power supply)",
                    );
                }
                Condition::new(
                    ConditionKind::StorageErrors,
                    dev.clone(),
                    if d.undervoltage {
                        "LikelyUndervoltage"
                    } else {
                        "DeviceErrors"
                    },
                    msg,
                )
            })
            .collect();
        v.extend(self.read_only.iter().map(|(m, r)| {
            Condition::new(
                ConditionKind::ReadOnlyFilesystem,
                m.display().to_string(),
                r.reason,
                r.message.clone(),
            )
        }));
        v
    }

    /// Forgets read-only verdicts of filesystems no longer mounted or watched.
    pub(crate) fn keep_mounts(&mut self, watched: &[&PathBuf]) {
        self.read_only.retain(|m, _| watched.contains(&m));
    }

    pub(crate) fn is_read_only(&self, mount: &PathBuf) -> bool {
        self.read_only.contains_key(mount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StorageJudgeConfig {
        StorageJudgeConfig {
            burst: 3,
            window: Duration::from_secs(600),
            quiet: Duration::from_secs(1800),
            undervoltage_window: Duration::from_secs(600),
        }
    }

    fn ev<'a>(kind: &'a str, dev: &'a str, mounts: &[&str]) -> Attributed<'a> {
        Attributed {
            kind,
            device: dev,
            detail: "x",
            mounts: mounts
                .iter()
                .map(|m| (PathBuf::from(m), format!("/dev/{dev}"), true))
                .collect(),
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn errors_raise_at_the_burst_and_clear_after_the_quiet_period() {
        let mut j = StorageJudge::new(cfg());
        assert!(j.event(&ev("block_io_error", "sda", &["/"]), 10 * S));
        assert!(j.event(&ev("block_io_error", "sda", &["/"]), 11 * S));
        assert!(j.conditions().is_empty());
        j.event(&ev("mmc_error", "sda", &["/"]), 12 * S);
        let c = j.conditions();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, ConditionKind::StorageErrors);
        assert_eq!(c[0].subject, "sda");
        assert_eq!(c[0].reason, "DeviceErrors");
        assert!(c[0].message.contains("/ (/dev/sda)"), "{}", c[0].message);
        j.tick(12 * S + Duration::from_secs(1799));
        assert_eq!(j.conditions().len(), 1);
        j.tick(12 * S + Duration::from_secs(1800));
        assert!(j.conditions().is_empty());
        // Two errors far apart never raise.
        j.event(&ev("block_io_error", "sda", &["/"]), 5000 * S);
        j.event(&ev("block_io_error", "sda", &["/"]), 6000 * S);
        j.event(&ev("block_io_error", "sda", &["/"]), 7000 * S);
        assert!(j.conditions().is_empty());
    }

    #[test]
    fn a_device_behind_nothing_watched_raises_nothing() {
        let mut j = StorageJudge::new(cfg());
        for i in 0..100 {
            assert!(!j.event(&ev("mmc_error", "mmc0", &[]), i * S));
        }
        assert!(j.conditions().is_empty());
    }

    #[test]
    fn a_read_only_remount_raises_both_and_only_a_successful_probe_clears_read_only() {
        let mut j = StorageJudge::new(cfg());
        j.undervoltage(5 * S, false);
        j.event(
            &ev("fs_readonly", "loop3", &["/var/lib/rancher/k3s"]),
            10 * S,
        );
        let c = j.conditions();
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].reason, "LikelyUndervoltage");
        assert!(c[0].message.contains("under-voltage"));
        assert_eq!(c[1].kind, ConditionKind::ReadOnlyFilesystem);
        assert_eq!(c[1].subject, "/var/lib/rancher/k3s");
        let m = PathBuf::from("/var/lib/rancher/k3s");
        j.mount_state(&m, "/dev/loop3", false, true);
        j.probe(
            &m,
            "/dev/loop3",
            &WriteOutcome::Failed {
                errno: Some(libc::EROFS),
                error: "ro".into(),
            },
        );
        assert_eq!(j.conditions()[1].reason, "ProbeReadOnly");
        j.probe(&m, "/dev/loop3", &WriteOutcome::NotProbed("cap".into()));
        assert!(j.is_read_only(&m));
        j.probe(&m, "/dev/loop3", &WriteOutcome::Ok);
        assert!(!j.is_read_only(&m));
    }

    #[test]
    fn emergency_ro_and_hung_probes_are_read_only() {
        let mut j = StorageJudge::new(cfg());
        let m = PathBuf::from("/");
        j.mount_state(&m, "/dev/sda2", true, true);
        assert_eq!(j.conditions()[0].reason, "EmergencyReadOnly");
        // Probed: mountinfo alone does not clear it.
        j.mount_state(&m, "/dev/sda2", false, true);
        assert!(j.is_read_only(&m));
        j.probe(&m, "/dev/sda2", &WriteOutcome::Stuck);
        assert_eq!(j.conditions()[0].reason, "ProbeHung");
        j.probe(&m, "/dev/sda2", &WriteOutcome::Ok);
        assert!(j.conditions().is_empty());
        // A pod volume (not probed) clears with mountinfo.
        let v = PathBuf::from("/var/lib/kubelet/pods/y/volumes/v");
        j.mount_state(&v, "/dev/sdb", true, false);
        assert!(j.is_read_only(&v));
        j.mount_state(&v, "/dev/sdb", false, false);
        assert!(!j.is_read_only(&v));
    }
}
