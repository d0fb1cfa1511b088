//! `[mounts]`: which mounts the hung-mount detector watches, how it probes them, and what
//! the lazy-unmount remedy may touch. [`FsTypeSet`] is the parsed form of `fstypes`.

use serde::{Deserialize, Serialize};
use std::path::{Component, PathBuf};
use std::time::Duration;

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

/// Filesystems that can block callers when a server or daemon goes away. `fuse.*` covers
/// every FUSE subtype: a dead FUSE daemon hangs its callers the same way a dead NFS server does.
pub(crate) const DEFAULT_NETWORK_FSTYPES: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "fuse.sshfs",
    "ceph",
    "glusterfs",
    "9p",
    "fuse.*",
];

/// Threads the pool may hold at most: one per hung mount, so 32 covers a node with many
/// network mounts while bounding the damage of a storage outage to 32 parked threads.
pub(crate) const DEFAULT_MAX_PROBE_THREADS: u32 = 32;

/// Default deadline of one `umount2` call: the call only takes mount-table locks (and for
/// `MNT_FORCE` on NFS, kills outstanding RPCs), so it returns in milliseconds unless the
/// kernel itself is wedged; 5 s leaves room for a loaded Pi.
pub(crate) const DEFAULT_UNMOUNT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ProbeChoice {
    Statfs,
    Stat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ControlPlane {
    Auto,
    Yes,
    No,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountsSection {
    pub(crate) enabled: bool,
    pub(crate) interval: ConfigDuration,
    pub(crate) probe_timeout: ConfigDuration,
    pub(crate) probe: ProbeChoice,
    pub(crate) fstypes: Vec<String>,
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) max_probe_threads: u32,
    pub(crate) recover_probes: u32,
    pub(crate) control_plane: ControlPlane,
    /// Never lazily unmounted, nor anything under or above them.
    pub(crate) protected: Vec<PathBuf>,
    pub(crate) allow_kubelet_unmount: bool,
    /// Kubelet's root directory (`--root-dir`), guarded by the unmount remedy besides
    /// `/var/lib/kubelet`, with its canonical path and bind-mount aliases.
    pub(crate) kubelet_root: PathBuf,
    pub(crate) force_nfs: bool,
    pub(crate) unmount_timeout: ConfigDuration,
}

impl Default for MountsSection {
    fn default() -> Self {
        MountsSection {
            enabled: true,
            interval: ConfigDuration::secs(10),
            // A healthy NFS statfs answers in milliseconds; 2 s is generous on Wi-Fi.
            probe_timeout: ConfigDuration::secs(2),
            // statfs always reaches the server; stat may be answered from cache.
            probe: ProbeChoice::Statfs,
            fstypes: DEFAULT_NETWORK_FSTYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            paths: Vec::new(),
            max_probe_threads: DEFAULT_MAX_PROBE_THREADS,
            recover_probes: 2,
            control_plane: ControlPlane::Auto,
            protected: Vec::new(),
            // Pod volumes belong to kubelet; detaching them behind its back breaks pods.
            allow_kubelet_unmount: false,
            kubelet_root: PathBuf::from("/var/lib/kubelet"),
            // MNT_FORCE fails every outstanding NFS request with EIO: data loss for
            // writers, so only on request.
            force_nfs: false,
            unmount_timeout: ConfigDuration(DEFAULT_UNMOUNT_TIMEOUT),
        }
    }
}

impl MountsSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        if !self.kubelet_root.is_absolute() {
            v.push(format!(
                "mounts.kubelet_root: {:?} is not an absolute path",
                self.kubelet_root
            ));
        }
        dur_range(v, "mounts.interval", self.interval, 1_000, 3_600_000);
        dur_range(v, "mounts.probe_timeout", self.probe_timeout, 100, 60_000);
        range(
            v,
            "mounts.max_probe_threads",
            self.max_probe_threads.into(),
            1,
            256,
        );
        range(
            v,
            "mounts.recover_probes",
            self.recover_probes.into(),
            1,
            100,
        );
        if let Err(e) = FsTypeSet::new(&self.fstypes) {
            v.push(format!("key `mounts.fstypes`: {e}"));
        }
        if let Some(p) = self.paths.iter().find(|p| !p.is_absolute()) {
            v.push(format!(
                "key `mounts.paths`: \"{}\" must be an absolute path",
                p.display()
            ));
        }
        dur_range(
            v,
            "mounts.unmount_timeout",
            self.unmount_timeout,
            100,
            60_000,
        );
        for p in &self.protected {
            let dotdot = p.components().any(|c| c == Component::ParentDir);
            if !p.is_absolute() || dotdot {
                v.push(format!(
                    "key `mounts.protected`: \"{}\" must be an absolute path without `..`, such as \"/mnt/backup\"",
                    p.display()
                ));
            }
        }
    }
}

/// Errors in the mount-watch configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountsConfigError {
    #[error(
        "mount fstype pattern {pattern:?} is invalid: {why}; use an exact fstype such as \
         \"nfs4\" or a prefix ending in '*' such as \"fuse.*\""
    )]
    BadFsTypePattern { pattern: String, why: &'static str },
    #[error(
        "mount watch path {path:?} is not absolute; list absolute paths such as \"/mnt/backup\""
    )]
    RelativeWatchPath { path: PathBuf },
}

/// One entry of an [`FsTypeSet`]: an exact fstype or a prefix (written with a trailing `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum FsTypePattern {
    Exact(String),
    Prefix(String),
}

impl FsTypePattern {
    pub(crate) fn parse(pattern: &str) -> Result<FsTypePattern, MountsConfigError> {
        let bad = |why| MountsConfigError::BadFsTypePattern {
            pattern: pattern.to_owned(),
            why,
        };
        if pattern.is_empty() {
            return Err(bad("it is empty"));
        }
        if pattern.chars().any(char::is_whitespace) {
            return Err(bad("it contains whitespace"));
        }
        match pattern.find('*') {
            None => Ok(FsTypePattern::Exact(pattern.to_owned())),
            Some(at) if at == pattern.len() - 1 => {
                Ok(FsTypePattern::Prefix(pattern[..at].to_owned()))
            }
            Some(_) => Err(bad("'*' is only allowed at the end")),
        }
    }

    pub(crate) fn matches(&self, fstype: &str) -> bool {
        match self {
            FsTypePattern::Exact(t) => fstype == t,
            FsTypePattern::Prefix(p) => fstype.starts_with(p.as_str()),
        }
    }
}

/// The configurable set of fstypes treated as network/remote (able to hang callers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsTypeSet {
    patterns: Vec<FsTypePattern>,
}

impl FsTypeSet {
    pub fn new<I, S>(patterns: I) -> Result<FsTypeSet, MountsConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .map(|p| FsTypePattern::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(FsTypeSet { patterns })
    }

    pub(crate) fn matches(&self, fstype: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(fstype))
    }

    #[cfg(test)]
    pub(crate) fn patterns(&self) -> &[FsTypePattern] {
        &self.patterns
    }
}

impl Default for FsTypeSet {
    fn default() -> Self {
        FsTypeSet::new(DEFAULT_NETWORK_FSTYPES).expect("default fstype patterns are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_matches_network_types_and_every_fuse_subtype_only() {
        let set = FsTypeSet::default();
        for t in [
            "nfs",
            "nfs4",
            "cifs",
            "smb3",
            "fuse.sshfs",
            "ceph",
            "glusterfs",
            "9p",
            "fuse.rclone",
            "fuse.nodemedic-hang",
        ] {
            assert!(set.matches(t), "{t} should be network");
        }
        for t in [
            "ext4", "tmpfs", "fuse", "fuseblk", "overlay", "nfsd", "proc", "",
        ] {
            assert!(!set.matches(t), "{t} should not be network");
        }
    }

    #[test]
    fn custom_set_replaces_the_defaults() {
        let set = FsTypeSet::new(["nfs4", "fuse*"]).unwrap();
        assert!(set.matches("nfs4"));
        assert!(set.matches("fuse"));
        assert!(set.matches("fuseblk"));
        assert!(!set.matches("nfs"));
        assert_eq!(
            set.patterns(),
            &[
                FsTypePattern::Exact("nfs4".into()),
                FsTypePattern::Prefix("fuse".into())
            ]
        );
    }

    #[test]
    fn bad_patterns_are_rejected_with_the_pattern_named() {
        for (p, why) in [
            ("", "it is empty"),
            ("fu*se", "'*' is only allowed at the end"),
            ("nfs 4", "it contains whitespace"),
        ] {
            let err = FsTypeSet::new([p]).unwrap_err();
            assert_eq!(
                err,
                MountsConfigError::BadFsTypePattern {
                    pattern: p.to_string(),
                    why
                }
            );
            assert!(err.to_string().contains(&format!("{p:?}")));
        }
    }
}
