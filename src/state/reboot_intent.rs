//! `reboot-intent.json`: nodemedic's own word, fsynced, that it is about to end this boot,
//! written before it asks for a reboot or stops feeding the hardware watchdog. The next
//! boot reads it to tell "nodemedic rebooted" and "a watchdog reset after a hang" from a
//! power loss: the Pi's `bcm2835_wdt` never sets the watchdog boot status, and a cold power
//! cycle wipes the kernel's ring buffer, so nothing else can.
//!
//! One file, replaced atomically. An intent that did not come true (the reboot failed to
//! start, a stuck loop recovered and the feed resumed) is withdrawn.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;

pub(crate) const INTENT_FILE: &str = "reboot-intent.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IntentKind {
    /// The ladder's reboot step: a graceful reboot (backed by the watchdog) was asked for.
    Reboot,
    /// A daemon loop is stuck: keep-alives to the hardware watchdog are withheld, so the
    /// board resets unless the loop recovers.
    WatchdogStop,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RebootIntent {
    pub(crate) boot_id: String,
    pub(crate) at_unix: u64,
    pub(crate) kind: IntentKind,
    pub(crate) reason: String,
}

/// Writes the intent (atomic replace, file and directory fsynced) before returning.
pub(crate) fn write(dir: &Path, intent: &RebootIntent) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut bytes = serde_json::to_vec(intent).map_err(io::Error::other)?;
    bytes.push(b'\n');
    super::atomic_file::write_atomic(&dir.join(INTENT_FILE), &bytes)
}

/// The intent on disk, if any is readable.
pub(crate) fn read(dir: &Path) -> Option<RebootIntent> {
    serde_json::from_slice(&std::fs::read(dir.join(INTENT_FILE)).ok()?).ok()
}

/// Removes the intent if it is this boot's of this kind (a later, different intent stays).
pub(crate) fn withdraw(dir: &Path, boot_id: &str, kind: IntentKind) -> io::Result<()> {
    match read(dir) {
        Some(i) if i.boot_id == boot_id && i.kind == kind => {
            std::fs::remove_file(dir.join(INTENT_FILE))?;
            super::atomic_file::sync_dir(dir)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_is_read_back_and_withdrawn_only_by_its_own_boot_and_kind() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), None);
        let i = RebootIntent {
            boot_id: "b1".into(),
            at_unix: 100,
            kind: IntentKind::WatchdogStop,
            reason: "loop policy stuck".into(),
        };
        write(d.path(), &i).unwrap();
        assert_eq!(read(d.path()), Some(i.clone()));
        withdraw(d.path(), "b1", IntentKind::Reboot).unwrap();
        withdraw(d.path(), "b0", IntentKind::WatchdogStop).unwrap();
        assert_eq!(read(d.path()), Some(i), "not ours to withdraw");
        withdraw(d.path(), "b1", IntentKind::WatchdogStop).unwrap();
        assert_eq!(read(d.path()), None);
    }
}
