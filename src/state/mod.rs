//! Persisted state in the state directory (default `/var/lib/nodemedic`):
//!
//! | file | writer | why it must survive a reboot |
//! |---|---|---|
//! | `state.json` | the daemon | reboot budget, boot history, kmsg cursor, counters |
//! | `audit.jsonl`, `audit.1.jsonl` | the daemon | what was done and why, read after an outage |
//! | `daemon.lock` | the daemon | one daemon per state dir |
//! | `clean-shutdown.json` | `nodemedic shutdown-marker` | did the previous boot end cleanly? |
//! | `preflight-totals.json` | `nodemedic preflight` | what preflight removed, for the daemon's metrics ([`preflight_totals`]) |
//! | `reboot-intent.json` | the daemon | it was about to reboot or let the watchdog reset the board ([`reboot_intent`]) |
//! | `pause-annotation.json` | the daemon | the pause annotation it last saw, for preflight, which runs before the API ([`pause_annotation`]) |
//!
//! Every write is atomic ([`atomic_file`]). A state file that cannot be parsed is moved
//! aside (kept for forensics), reported, and replaced by defaults that are never a reason to
//! act: `recovered_at` is set so the policy can treat the reboot budget as spent.

pub(crate) mod atomic_file;
pub(crate) mod health;
pub(crate) mod pause_annotation;
pub(crate) mod preflight_totals;
pub(crate) mod reboot_intent;
pub(crate) mod safe_read;

pub use health::StateDirHealth;
use safe_read::{ReadError, read_regular};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::model::CounterKey;

pub const STATE_FILE: &str = "state.json";
pub(crate) const LOCK_FILE: &str = "daemon.lock";
/// Written at system shutdown (`nodemedic shutdown-marker`, from a shutdown unit) with the
/// boot id that is ending; its absence for the previous boot means an unclean shutdown
/// (power cut, hardware watchdog reset, kernel panic).
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown.json";
/// Bumped when the layout changes incompatibly; older files are migrated or reset.
pub(crate) const SCHEMA: u32 = 1;
/// Reboot records kept: far more than any budget window needs, still tiny.
pub(crate) const MAX_REBOOT_RECORDS: usize = 64;
/// A real `state.json` is a few KiB (64 reboot records, one episode per held problem);
/// anything near this is not ours, and reading it whole would cost the node its memory.
pub(crate) const MAX_STATE_BYTES: u64 = 1 << 20;
/// The clean-shutdown marker is one boot id and a time.
const MAX_MARKER_BYTES: u64 = 4096;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistedState {
    pub(crate) schema: u32,
    /// Boot id (`/proc/sys/kernel/random/boot_id`) when the daemon last ran.
    pub(crate) boot_id: Option<String>,
    /// The boot before that one, set when the daemon first starts in a new boot.
    pub(crate) previous_boot_id: Option<String>,
    /// Wall clock (unix seconds) last seen by the daemon: a clock earlier than this after a
    /// boot means a board without RTC has not synced time yet.
    pub(crate) last_seen_unix: u64,
    /// Reboots nodemedic initiated, newest last (bounded).
    pub(crate) reboots: Vec<RebootRecord>,
    /// Last `/dev/kmsg` sequence number processed, per boot, so a daemon restart never
    /// counts a kernel record twice.
    pub(crate) kmsg_cursor: Option<KmsgCursor>,
    /// Counters that must survive restarts and reboots (e.g. `unclean_shutdowns`).
    pub counters: BTreeMap<CounterKey, u64>,
    /// Set when a corrupt state file was replaced by defaults (unix seconds).
    pub(crate) recovered_at: Option<u64>,
    /// Whether the previous boot ended with a clean shutdown (None: unknown, first boot).
    pub(crate) last_shutdown_clean: Option<bool>,
    /// The escalation engine's episodes, action history and reboot bookkeeping.
    pub(crate) policy: crate::policy::engine::PolicyState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShutdownMarker {
    pub(crate) boot_id: String,
    pub(crate) at_unix: u64,
}

/// Records that the boot `boot_id` is shutting down cleanly (atomic write + fsync).
pub(crate) fn mark_clean_shutdown(dir: &Path, boot_id: &str, now_unix: u64) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let m = ShutdownMarker {
        boot_id: boot_id.to_string(),
        at_unix: now_unix,
    };
    atomic_file::write_atomic(
        &dir.join(CLEAN_SHUTDOWN_FILE),
        &serde_json::to_vec(&m).map_err(io::Error::other)?,
    )
}

pub(crate) fn read_clean_shutdown(dir: &Path) -> Option<ShutdownMarker> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    match read_regular(&path, MAX_MARKER_BYTES) {
        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
        Err(ReadError::Missing) => None,
        Err(e) => {
            log::warn!("ignoring {}: {e}", path.display());
            None
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootRecord {
    pub at_unix: u64,
    pub boot_id: String,
    pub problem: String,
    pub reason: String,
    /// Filled in on the next boot: did the node come back healthy?
    #[serde(default)]
    pub outcome: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KmsgCursor {
    pub(crate) boot_id: String,
    pub(crate) last_seq: u64,
}

/// What loading found, for the log and `/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadOutcome {
    Fresh,
    Loaded,
    /// The file was corrupt, unreadable or not a regular file; it was moved to `moved_to`
    /// (None: it could not be moved, e.g. on a read-only state dir) and defaults were used.
    Recovered {
        error: String,
        moved_to: Option<PathBuf>,
    },
}

pub struct StateStore {
    path: PathBuf,
    pub(crate) data: PersistedState,
    health: Option<StateDirHealth>,
}

impl StateStore {
    /// Loads `state.json` from `dir`, creating the directory if it can. A file that is not
    /// ours (corrupt, unreadable, a FIFO, a symlink, a device, oversize) is moved aside and
    /// replaced by safe defaults; a directory that cannot be written is not an error here
    /// (the daemon then runs degraded, see [`health`]).
    pub fn load(dir: &Path, now_unix: u64) -> io::Result<(StateStore, LoadOutcome)> {
        if let Err(e) = fs::create_dir_all(dir) {
            log::warn!("cannot create state dir {}: {e}", dir.display());
        }
        let path = dir.join(STATE_FILE);
        atomic_file::remove_stale_temps(&path);
        let bad = |error: String| {
            let aside = dir.join(format!("{STATE_FILE}.corrupt-{now_unix}"));
            let (error, moved_to) = match fs::rename(&path, &aside) {
                Ok(()) => (error, Some(aside)),
                Err(e) => (format!("{error}; it could not be moved aside ({e})"), None),
            };
            let mut d = fresh();
            d.recovered_at = Some(now_unix);
            (d, LoadOutcome::Recovered { error, moved_to })
        };
        let (data, outcome) = match read_regular(&path, MAX_STATE_BYTES) {
            Err(ReadError::Missing) => (fresh(), LoadOutcome::Fresh),
            // An SD card failing under it: nothing to trust, nothing to stop for.
            Err(ReadError::Io(e)) => bad(format!("it cannot be read ({e})")),
            Err(ReadError::NotOurs(what)) => bad(format!("it is {what}")),
            Ok(bytes) => match parse_state(&bytes) {
                Ok(d) => (d, LoadOutcome::Loaded),
                Err(error) => bad(error),
            },
        };
        Ok((
            StateStore {
                path,
                data,
                health: None,
            },
            outcome,
        ))
    }

    /// Reports every save to `health` (the daemon's degraded mode).
    pub fn with_health(mut self, health: StateDirHealth) -> Self {
        self.health = Some(health);
        self
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the current state atomically.
    pub fn save(&self) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(&self.data).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let r = atomic_file::write_atomic(&self.path, &bytes);
        if let Some(h) = &self.health {
            match &r {
                Ok(()) => {
                    h.ok();
                }
                Err(e) => h.failed("saving state.json", e),
            }
        }
        r
    }

    /// [`Self::save`] for callers that go on either way: with a health report the failure
    /// is logged there (once, then on change); without one, here.
    pub(crate) fn save_or_log(&self, what: &str) {
        if let Err(e) = self.save()
            && self.health.is_none()
        {
            log::error!("cannot persist {what}: {e}");
        }
    }

    pub fn bump(&mut self, counter: impl Into<CounterKey>, by: u64) -> u64 {
        let c = self.data.counters.entry(counter.into()).or_insert(0);
        *c = c.saturating_add(by);
        *c
    }

    pub(crate) fn counter(&self, counter: impl Into<CounterKey>) -> u64 {
        self.data
            .counters
            .get(&counter.into())
            .copied()
            .unwrap_or(0)
    }

    /// Records the boot the daemon is running in. Returns true when this is a new boot.
    pub(crate) fn note_boot(&mut self, boot_id: &str) -> bool {
        if self.data.boot_id.as_deref() == Some(boot_id) {
            return false;
        }
        self.data.previous_boot_id = self.data.boot_id.replace(boot_id.to_string());
        true
    }

    /// On the first start in a new boot: did the previous boot shut down cleanly? An
    /// unclean one is counted (`unclean_shutdowns`). None when there was no previous boot.
    pub(crate) fn judge_previous_shutdown(
        &mut self,
        marker: Option<&ShutdownMarker>,
    ) -> Option<bool> {
        let prev = self.data.previous_boot_id.as_deref()?;
        let clean = marker.is_some_and(|m| m.boot_id == prev);
        if !clean {
            self.bump(CounterKey::UncleanShutdowns, 1);
        }
        self.data.last_shutdown_clean = Some(clean);
        Some(clean)
    }

    pub fn push_reboot(&mut self, r: RebootRecord) {
        self.data.reboots.push(r);
        let excess = self.data.reboots.len().saturating_sub(MAX_REBOOT_RECORDS);
        self.data.reboots.drain(..excess);
    }
}

fn fresh() -> PersistedState {
    PersistedState {
        schema: SCHEMA,
        ..Default::default()
    }
}

/// Parses state bytes; any problem is a human-readable error.
pub fn parse_state(bytes: &[u8]) -> Result<PersistedState, String> {
    let d: PersistedState =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid state JSON: {e}"))?;
    if d.schema != SCHEMA {
        return Err(format!("schema {} is not the supported {SCHEMA}", d.schema));
    }
    Ok(d)
}

/// An exclusive lock on the state dir: two daemons would double-count and fight over the
/// watchdog. Held for the life of the process (the fd is leaked on purpose in `run`).
pub(crate) struct DirLock {
    _file: fs::File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> io::Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = match fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            // A read-only or full state dir: flock needs no write access, so lock the
            // existing lock file, else the directory itself (degraded mode still runs
            // one daemon per state dir).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EROFS | libc::ENOSPC | libc::EDQUOT | libc::EACCES)
                ) =>
            {
                fs::File::open(&path).or_else(|_| fs::File::open(dir))?
            }
            Err(e) => return Err(e),
        };
        // SAFETY: flock on a valid, owned fd.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another nodemedic daemon holds {} (pid {}); stop it first or use another state_dir",
                    path.display(),
                    holder.trim()
                ),
            ));
        }
        let _ = fs::write(&path, format!("{}\n", std::process::id()));
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_state_is_fresh_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, o) = StateStore::load(d.path(), 100).unwrap();
        assert_eq!(o, LoadOutcome::Fresh);
        s.bump("unclean_shutdowns", 2);
        s.note_boot("b1");
        s.save().unwrap();
        let (s2, o2) = StateStore::load(d.path(), 200).unwrap();
        assert_eq!(o2, LoadOutcome::Loaded);
        assert_eq!(s2.data, s.data);
        assert_eq!(s2.counter("unclean_shutdowns"), 2);
    }

    #[test]
    fn corrupt_state_is_moved_aside_and_replaced_by_defaults_marked_recovered() {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join(STATE_FILE),
            b"{\"schema\":1,\"reboots\":[{\"at_un",
        )
        .unwrap();
        let (s, o) = StateStore::load(d.path(), 4242).unwrap();
        match o {
            LoadOutcome::Recovered { error, moved_to } => {
                assert!(error.contains("not valid state JSON"), "{error}");
                let moved_to = moved_to.unwrap();
                assert_eq!(moved_to, d.path().join("state.json.corrupt-4242"));
                assert!(moved_to.exists());
            }
            other => panic!("expected recovery, got {other:?}"),
        }
        assert_eq!(s.data.recovered_at, Some(4242));
        assert!(s.data.reboots.is_empty());
    }

    /// What `load` made of a `state.json` that is not a state file.
    fn load_bad(make: impl FnOnce(&Path)) -> (tempfile::TempDir, StateStore, String) {
        let d = tempfile::tempdir().unwrap();
        make(&d.path().join(STATE_FILE));
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = d.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(StateStore::load(&dir, 77).unwrap());
        });
        // Only there so a regression fails instead of hanging the suite.
        let (s, o) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("loading must not block");
        let LoadOutcome::Recovered { error, moved_to } = o else {
            panic!("expected recovery, got {o:?}");
        };
        assert_eq!(
            moved_to.as_deref(),
            Some(d.path().join("state.json.corrupt-77").as_path())
        );
        assert!(!d.path().join(STATE_FILE).exists(), "moved aside");
        assert_eq!(
            s.data.recovered_at,
            Some(77),
            "reboot budget treated as spent"
        );
        (d, s, error)
    }

    #[test]
    fn a_fifo_named_state_json_is_moved_aside_instead_of_hanging_startup() {
        let (_d, _s, error) = load_bad(|p| {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
        });
        assert!(error.contains("a FIFO"), "{error}");
    }

    #[test]
    fn a_symlink_to_dev_zero_is_moved_aside_without_being_read() {
        let (d, _s, error) = load_bad(|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap());
        assert!(error.contains("symbolic link"), "{error}");
        // The link itself was moved, not what it points to.
        let aside = d.path().join("state.json.corrupt-77");
        assert!(aside.symlink_metadata().unwrap().file_type().is_symlink());
    }

    #[test]
    fn an_oversize_state_file_is_moved_aside() {
        let (_d, _s, error) = load_bad(|p| {
            let f = fs::File::create(p).unwrap();
            f.set_len(MAX_STATE_BYTES + 1).unwrap();
        });
        assert!(error.contains("more than"), "{error}");
    }

    #[test]
    fn a_state_file_from_another_schema_is_not_trusted() {
        assert!(
            parse_state(b"{\"schema\": 99}")
                .unwrap_err()
                .contains("schema 99")
        );
    }

    #[test]
    fn new_boot_shifts_the_previous_boot_id() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = StateStore::load(d.path(), 1).unwrap();
        assert!(s.note_boot("a"));
        assert!(!s.note_boot("a"));
        assert!(s.note_boot("b"));
        assert_eq!(s.data.previous_boot_id.as_deref(), Some("a"));
    }

    #[test]
    fn a_missing_or_stale_marker_means_the_previous_boot_ended_uncleanly() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = StateStore::load(d.path(), 1).unwrap();
        s.note_boot("a");
        assert_eq!(
            s.judge_previous_shutdown(None),
            None,
            "first boot: nothing to judge"
        );
        mark_clean_shutdown(d.path(), "a", 10).unwrap();
        s.note_boot("b");
        assert_eq!(
            s.judge_previous_shutdown(read_clean_shutdown(d.path()).as_ref()),
            Some(true)
        );
        s.note_boot("c");
        // The marker still names boot a: boot b ended without one.
        assert_eq!(
            s.judge_previous_shutdown(read_clean_shutdown(d.path()).as_ref()),
            Some(false)
        );
        assert_eq!(s.counter("unclean_shutdowns"), 1);
    }

    #[test]
    fn reboot_records_are_bounded_keeping_the_newest() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = StateStore::load(d.path(), 1).unwrap();
        for i in 0..(MAX_REBOOT_RECORDS as u64 + 10) {
            s.push_reboot(RebootRecord {
                at_unix: i,
                boot_id: "b".into(),
                problem: "p".into(),
                reason: "r".into(),
                outcome: None,
            });
        }
        assert_eq!(s.data.reboots.len(), MAX_REBOOT_RECORDS);
        assert_eq!(s.data.reboots[0].at_unix, 10);
    }

    const OLD_REBOOTING: &str = include_str!("../../tests/fixtures/state-c4c7a3e-rebooting.json");
    const OLD_NEXT_BOOT: &str = include_str!("../../tests/fixtures/state-c4c7a3e-next-boot.json");

    /// Loads a fixture through the store (as the daemon does), checks nothing was lost
    /// (each field against the file's own JSON), saves it and loads it again.
    fn load_fixture(text: &str) -> (PersistedState, serde_json::Value) {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(STATE_FILE), text).unwrap();
        let (s, o) = StateStore::load(d.path(), 1).unwrap();
        assert_eq!(
            o,
            LoadOutcome::Loaded,
            "the old file must load, not be recovered"
        );
        s.save().unwrap();
        let (again, _) = StateStore::load(d.path(), 2).unwrap();
        assert_eq!(again.data, s.data, "save + load round-trips");
        (s.data, serde_json::from_str(text).unwrap())
    }

    #[test]
    fn state_files_of_release_c4c7a3e_load_and_every_field_round_trips() {
        use crate::model::{ConditionKind, CounterKey, EpisodeKey, Remedy};
        let (s, j) = load_fixture(OLD_REBOOTING);
        assert_eq!(s.schema, 1);
        assert_eq!(s.boot_id.as_deref(), j["boot_id"].as_str());
        assert_eq!(s.previous_boot_id, None);
        assert_eq!(s.last_seen_unix, j["last_seen_unix"].as_u64().unwrap());
        assert_eq!(s.kmsg_cursor, None);
        assert_eq!(s.recovered_at, None);
        assert_eq!(s.last_shutdown_clean, None);
        let r = &s.reboots[0];
        let jr = &j["reboots"][0];
        assert_eq!(s.reboots.len(), 1);
        assert_eq!(r.at_unix, jr["at_unix"].as_u64().unwrap());
        assert_eq!(r.boot_id, jr["boot_id"].as_str().unwrap());
        assert_eq!(r.problem, "KernelRCUStall");
        assert_eq!(r.reason, jr["reason"].as_str().unwrap());
        assert_eq!(r.outcome, None);
        assert_eq!(
            s.counters,
            BTreeMap::from([(CounterKey::Reboots("KernelRCUStall".into()), 1)])
        );
        let p = &s.policy;
        let jp = &j["policy"];
        let keys: Vec<String> = p.episodes.keys().map(|k| k.to_string()).collect();
        let jkeys: Vec<String> = jp["episodes"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, jkeys, "episode keys are spelt as before");
        let stall = &p.episodes[&EpisodeKey::new(ConditionKind::KernelRcuStall, "")];
        let js = &jp["episodes"]["KernelRCUStall"];
        assert_eq!(stall.started.unix, js["started_unix"].as_u64().unwrap());
        assert_eq!(stall.next_step, 3);
        assert_eq!(
            stall.last_step.map(|a| a.unix),
            js["last_step_unix"].as_u64()
        );
        assert_eq!(stall.last_hold, None);
        assert!(!stall.needs_human && stall.cordoned);
        let (mk, mount) = p.episodes.iter().nth(1).unwrap();
        assert_eq!(mk.kind, ConditionKind::NetworkMountHung);
        assert!(mk.subject.starts_with("/tmp/"), "{mk}");
        let jm = &jp["episodes"][mk.to_string()];
        assert_eq!(mount.started.unix, jm["started_unix"].as_u64().unwrap());
        assert_eq!(mount.next_step, 0);
        assert_eq!(mount.last_step, None);
        assert_eq!(mount.last_hold, Some(crate::policy::engine::Hold::Cooldown));
        assert!(!mount.needs_human && !mount.cordoned);
        for (a, name) in [
            (Remedy::Cordon, "cordon"),
            (Remedy::RestartK3s, "restart_k3s"),
            (Remedy::Reboot, "reboot"),
        ] {
            let want: Vec<u64> = jp["history"][name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let got: Vec<u64> = p.history[&a].iter().map(|x| x.at.unix).collect();
            assert_eq!(got, want, "{name}");
            assert!(p.history[&a].iter().all(|x| x.subject.is_none()));
        }
        assert_eq!(p.history.len(), 3);
        assert!(p.cordoned_by_us);
        assert_eq!(p.recovered_at, None);
        let lr = p.last_reboot.as_ref().unwrap();
        assert_eq!(lr.at.unix, jp["last_reboot"][0].as_u64().unwrap());
        assert_eq!(lr.problem, "KernelRCUStall");
        assert_eq!(
            (lr.boot_id.as_deref(), lr.rebooted_into.as_deref()),
            (None, None)
        );
        assert_eq!(p.booted_after_reboot, None);
        assert_eq!(p.verification_failed, None);
        // The daemon then places the wall-clock moments on node time, by their age.
        let mut adopted = p.clone();
        let now = crate::policy::clock::At::new(s.last_seen_unix + 60, 5_000);
        crate::policy::clock::adopt_wall_times(&mut adopted, now);
        assert_eq!(
            adopted.episodes[&EpisodeKey::new(ConditionKind::KernelRcuStall, "")]
                .started
                .node,
            5_000 - (now.unix - stall.started.unix)
        );
        assert!(
            adopted
                .history
                .values()
                .flatten()
                .all(|x| x.at.node <= 5_000)
        );

        let (s, j) = load_fixture(OLD_NEXT_BOOT);
        assert_eq!(
            s.previous_boot_id.as_deref(),
            j["previous_boot_id"].as_str()
        );
        assert_eq!(s.last_shutdown_clean, Some(false));
        assert_eq!(s.counters[&CounterKey::UncleanShutdowns], 1);
        assert_eq!(s.counters.len(), 2);
        assert_eq!(s.reboots[0].outcome.as_deref(), Some("healthy ()"));
        assert!(s.policy.episodes.is_empty() && !s.policy.cordoned_by_us);
        assert_eq!(
            s.policy.booted_after_reboot.map(|a| a.unix),
            j["policy"]["booted_after_reboot"].as_u64()
        );
    }

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holder_named() {
        let d = tempfile::tempdir().unwrap();
        let _l = DirLock::acquire(d.path()).unwrap();
        // flock locks are per open file description, so a second open in-process conflicts.
        let e = DirLock::acquire(d.path())
            .err()
            .expect("second lock must fail");
        assert!(e.to_string().contains("another nodemedic daemon"), "{e}");
        assert!(
            e.to_string().contains(&std::process::id().to_string()),
            "{e}"
        );
    }
}
