//! Name-reservation conflicts from containerd's log.
//!
//! After an unclean reboot the conflict is invisible in a CRI listing: only the dead
//! (NotReady) sandbox is listed, and the kubelet's RunPodSandbox with the same name fails
//! before a second record exists. containerd logs each failure (k3s writes containerd's log
//! to `/var/lib/rancher/k3s/agent/containerd/containerd.log`):
//!
//! ```text
//! time="..." level=error msg="RunPodSandbox for &PodSandboxMetadata{Name:web-0,...} failed, error" error="failed to reserve sandbox name \"web-0_default_<uid>_0\": name \"web-0_default_<uid>_0\" is reserved for \"<64-hex id>\""
//! ```
//!
//! This module reads the lines appended since the last pass ([`FileTail`]) and extracts
//! (name, holder id) ([`reserved_sandbox_in_line`]). A line is only a *report*: the
//! detector confirms it over CRI (the holder exists, is NotReady and has that name) before
//! raising anything, so a forged or stale line can never cause a removal by itself.
//!
//! `failed to recover state: failed to reserve sandbox name` is not taken: that one is fatal
//! at containerd start (CRI never comes up) and is preflight's to repair before k3s starts.

use std::io::{Read, Seek, SeekFrom};

use crate::formats::name_reservation;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Most bytes read per pass: a log growing faster than this is skipped ahead (the kubelet
/// repeats a conflict every 10-15 s, so a skipped one comes back).
pub(crate) const MAX_READ_PER_PASS: u64 = 1 << 20;
/// On the first read, this much of the existing log is read too, so a daemon restarted
/// during a conflict sees the kubelet's recent failures at once.
pub(crate) const INITIAL_TAIL: u64 = 64 << 10;

/// Lines a log source gained since the last call.
pub(crate) trait LogSource: Send {
    fn read_new(&mut self) -> Result<Vec<String>, String>;
}

/// Follows a file by offset; a new inode (rotation) or a shorter file (truncation) starts
/// again from its beginning. Only whole lines are returned.
pub(crate) struct FileTail {
    path: PathBuf,
    /// (inode, offset of the next unread byte).
    pos: Option<(u64, u64)>,
}

impl FileTail {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileTail {
            path: path.into(),
            pos: None,
        }
    }
}

impl LogSource for FileTail {
    fn read_new(&mut self) -> Result<Vec<String>, String> {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            // No k3s here, or the log was rotated away: nothing new.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(format!("cannot open {}: {e}", self.path.display())),
        };
        let md = f
            .metadata()
            .map_err(|e| format!("cannot stat {}: {e}", self.path.display()))?;
        let (ino, len) = (md.ino(), md.len());
        let (mut start, mut skip_partial) = match self.pos {
            Some((i, off)) if i == ino && off <= len => (off, false),
            Some(_) => (0, false),
            None => {
                let s = len.saturating_sub(INITIAL_TAIL);
                (s, s > 0)
            }
        };
        if len - start > MAX_READ_PER_PASS {
            start = len - MAX_READ_PER_PASS;
            skip_partial = true;
        }
        f.seek(SeekFrom::Start(start))
            .map_err(|e| format!("cannot seek {}: {e}", self.path.display()))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        f.take(len - start)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let mut from = 0;
        if skip_partial {
            from = buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |p| p + 1);
        }
        // Keep an unfinished last line for the next pass.
        let end = buf
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
            .max(from);
        self.pos = Some((ino, start + end as u64));
        Ok(buf[from..end]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect())
    }
}

#[cfg(any(test, feature = "fakes"))]
/// A scripted log for tests: each call returns the next batch.
#[derive(Default)]
pub struct FakeLog {
    pub batches: std::collections::VecDeque<Vec<String>>,
}

#[cfg(any(test, feature = "fakes"))]
impl LogSource for FakeLog {
    fn read_new(&mut self) -> Result<Vec<String>, String> {
        Ok(self.batches.pop_front().unwrap_or_default())
    }
}

/// (name, holder id) from a runtime RunPodSandbox failure in containerd's, k3s's or the
/// kubelet's log syntax (quotes escaped zero, one or two times).
pub(crate) fn reserved_sandbox_in_line(line: &str) -> Option<(String, String)> {
    let r = name_reservation::parse(line)?;
    if r.recover_state {
        return None;
    }
    name_reservation::sandbox_conflict(&r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const ID: &str = "d3a1f0c2b4e6a8c0d2f4b6a8c0e2d4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8";
    const NAME: &str =
        "longhorn-csi-plugin-x7k2p_longhorn-system_5d0c6e2a-8b1f-4c3d-9e7a-2f4b6d8c0a1e_0";

    #[test]
    fn containerd_k3s_and_kubelet_lines_yield_the_name_and_its_holder() {
        for line in [
            format!(
                r#"time="2026-11-21T17:35:41.123456789Z" level=error msg="RunPodSandbox for &PodSandboxMetadata{{Name:longhorn-csi-plugin-x7k2p,Attempt:0,}} failed, error" error="failed to reserve sandbox name \"{NAME}\": name \"{NAME}\" is reserved for \"{ID}\"""#
            ),
            format!(
                r#"E1121 17:35:41.123456    1234 log.go:32] "RunPodSandbox from runtime service failed" err="rpc error: code = Unknown desc = failed to reserve sandbox name \"{NAME}\": name \"{NAME}\" is reserved for \"{ID}\"""#
            ),
            format!(
                r#"E1121 17:35:41.123456    1234 pod_workers.go:1301] "Error syncing pod, skipping" err="failed to \"CreatePodSandbox\" with CreatePodSandboxError: \"Failed to create sandbox: rpc error: code = Unknown desc = failed to reserve sandbox name \\\"{NAME}\\\": name \\\"{NAME}\\\" is reserved for \\\"{ID}\\\"\"""#
            ),
        ] {
            assert_eq!(
                reserved_sandbox_in_line(&line),
                Some((NAME.to_string(), ID.to_string())),
                "{line}"
            );
        }
    }

    #[test]
    fn recovery_failures_container_names_and_other_lines_are_not_runtime_conflicts() {
        for line in [
            format!(
                r#"time="..." level=fatal msg="failed to recover state: failed to reserve sandbox name \"{NAME}\": name \"{NAME}\" is reserved for \"{ID}\"""#
            ),
            format!(
                r#"error="failed to reserve container name \"app_{NAME}\": name \"app_{NAME}\" is reserved for \"{ID}\"""#
            ),
            "level=info msg=\"RunPodSandbox for web-0 returns sandbox id\"".into(),
            String::new(),
        ] {
            assert_eq!(reserved_sandbox_in_line(&line), None, "{line}");
        }
    }

    #[test]
    fn the_tail_returns_whole_new_lines_and_follows_truncation_and_rotation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("containerd.log");
        let mut t = FileTail::new(&p);
        assert_eq!(t.read_new(), Ok(vec![]), "no file yet");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(b"one\ntwo\nthr").unwrap();
        assert_eq!(t.read_new().unwrap(), vec!["one", "two"]);
        assert_eq!(t.read_new().unwrap(), Vec::<String>::new());
        f.write_all(b"ee\nfour\n").unwrap();
        assert_eq!(t.read_new().unwrap(), vec!["three", "four"]);
        // Truncated in place (copytruncate): start again at 0.
        f.set_len(0).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all(b"five\n").unwrap();
        assert_eq!(t.read_new().unwrap(), vec!["five"]);
        // Rotated: a new file under the name.
        std::fs::rename(&p, d.path().join("containerd.log.1")).unwrap();
        std::fs::write(&p, b"six\n").unwrap();
        assert_eq!(t.read_new().unwrap(), vec!["six"]);
    }

    #[test]
    fn a_long_existing_log_is_read_only_from_its_recent_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("containerd.log");
        let old = "x".repeat(99) + "\n";
        let mut text = old.repeat((INITIAL_TAIL as usize / 100) * 3);
        text.push_str("recent\n");
        std::fs::write(&p, &text).unwrap();
        let lines = FileTail::new(&p).read_new().unwrap();
        assert_eq!(lines.last().map(String::as_str), Some("recent"));
        assert!(
            lines.len() <= INITIAL_TAIL as usize / 100 + 1,
            "{}",
            lines.len()
        );
        assert!(
            lines.iter().all(|l| l == "recent" || l.len() == 99),
            "no partial first line"
        );
    }
}
