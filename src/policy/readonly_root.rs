//! Rail: a read-only root filesystem (issue 19). While `ReadOnlyFilesystem` holds for `/`:
//!
//! - k3s is never restarted, whatever ladder asks: it cannot start on a read-only root,
//!   and a restart loses the pods' state for nothing (the step is skipped, and audited);
//! - the node reboots at most once per episode, whatever ladder asks: a reboot runs fsck
//!   and often brings the root back, but a dying SD card goes read-only again after it,
//!   and a reboot loop on it helps nobody. A second reboot is held back, and the engine
//!   then raises `NeedsHuman`.
//!
//! The episode survives the reboot (it is in `state.json`) and ends only once the root
//! has stayed writable for `policy.reboot_verify_window`, so a root that is read-only
//! again in the next boot is the same episode.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::engine::Hold;
use crate::model::{ConditionKey, ConditionKind, Remedy};

/// Persisted: one read-only-root episode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RootReadOnly {
    pub(crate) since_unix: u64,
    /// The last tick that saw the root read-only.
    pub(crate) last_seen_unix: u64,
    /// The episode's one reboot went ahead.
    pub(crate) rebooted: bool,
}

fn root_held(held: &[ConditionKey]) -> bool {
    held.iter()
        .any(|(k, s)| *k == ConditionKind::ReadOnlyFilesystem && s == "/")
}

/// Starts, extends or ends the episode from this tick's held conditions; `keep` is how
/// long the root must stay writable for the episode to end. An episode starts at the
/// first tick that sees the root read-only.
pub(crate) fn track(
    ep: &mut Option<RootReadOnly>,
    held: &[ConditionKey],
    now: u64,
    keep: Duration,
) {
    match (root_held(held), ep.as_mut()) {
        (true, Some(e)) => e.last_seen_unix = now,
        (true, None) => {
            *ep = Some(RootReadOnly {
                since_unix: now,
                last_seen_unix: now,
                rebooted: false,
            })
        }
        (false, Some(e)) if now.saturating_sub(e.last_seen_unix) > keep.as_secs() => *ep = None,
        (false, _) => {}
    }
}

/// What this rail holds `action` back with, while the root is read-only.
pub(crate) fn hold(
    ep: &Option<RootReadOnly>,
    held: &[ConditionKey],
    action: Remedy,
) -> Option<Hold> {
    let ep = ep.as_ref()?;
    if !root_held(held) {
        return None;
    }
    match action {
        Remedy::RestartK3s => Some(Hold::RootReadOnly),
        Remedy::Reboot if ep.rebooted => Some(Hold::RootReadOnlyRebooted),
        _ => None,
    }
}

/// A reboot went ahead: the episode's one reboot is used.
pub(crate) fn rebooted(ep: &mut Option<RootReadOnly>) {
    if let Some(e) = ep {
        e.rebooted = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Vec<ConditionKey> {
        vec![(ConditionKind::ReadOnlyFilesystem, "/".into())]
    }

    #[test]
    fn one_reboot_per_episode_and_no_k3s_restart_while_the_root_is_read_only() {
        let keep = Duration::from_secs(1800);
        let mut ep = None;
        track(&mut ep, &root(), 120, keep);
        assert_eq!(ep.as_ref().map(|e| e.since_unix), Some(120));
        assert_eq!(
            hold(&ep, &root(), Remedy::RestartK3s),
            Some(Hold::RootReadOnly)
        );
        assert_eq!(hold(&ep, &root(), Remedy::Reboot), None);
        assert_eq!(hold(&ep, &root(), Remedy::Cordon), None);
        rebooted(&mut ep);
        assert_eq!(
            hold(&ep, &root(), Remedy::Reboot),
            Some(Hold::RootReadOnlyRebooted)
        );
        // The next boot: writable for a while (the daemon just started), then read-only
        // again within the window: the same episode, no second reboot.
        track(&mut ep, &[], 400, keep);
        assert!(ep.is_some());
        assert_eq!(
            hold(&ep, &[], Remedy::Reboot),
            None,
            "not held while writable"
        );
        track(&mut ep, &root(), 500, keep);
        assert_eq!(
            hold(&ep, &root(), Remedy::Reboot),
            Some(Hold::RootReadOnlyRebooted)
        );
        // Writable for longer than the window: the episode is over.
        track(&mut ep, &[], 500 + 1801, keep);
        assert!(ep.is_none());
        // Another mount read-only is not the root.
        let other = vec![(ConditionKind::ReadOnlyFilesystem, "/var/lib/rancher".into())];
        track(&mut ep, &other, 5000, keep);
        assert!(ep.is_none());
        assert_eq!(hold(&ep, &other, Remedy::RestartK3s), None);
    }
}
