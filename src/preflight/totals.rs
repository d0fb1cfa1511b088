//! Preflight's contribution to `preflight-totals.json` (the file itself, read by the
//! daemon's metrics, is `state::preflight_totals`): which label each removal counts under,
//! and adding one run.

use super::plan::{Action, Reason};
use super::report::{ItemReport, ItemResult};
pub use crate::state::preflight_totals::{
    CNI_KINDS, IMAGE_REASONS, SANDBOX_REASONS, TOTALS_FILE, Totals, read, write,
};
use std::path::Path;

/// Adds `n` images removed for `reason` to the totals file (after [`record`] of the run).
pub(crate) fn record_images(dir: &Path, reason: &str, n: u64) -> std::io::Result<()> {
    let mut t = read(dir).ok().flatten().unwrap_or_default();
    *t.images_removed.entry(reason.to_string()).or_default() += n;
    write(dir, &t)
}

/// The `reason` label for a removed sandbox, None for anything that is not a sandbox.
pub(crate) fn sandbox_reason(action: &Action, reason: &Reason) -> Option<&'static str> {
    if !matches!(action, Action::RemoveSandbox { .. }) {
        return None;
    }
    Some(match reason {
        Reason::DuplicateName { .. } => "duplicate_name",
        Reason::UnusableMetadata { .. } => "unusable_metadata",
        Reason::SandboxStoreOrphan { .. } => "sandbox_store_orphan",
        _ => "dead_after_reboot",
    })
}

/// The `kind` label for a removed CNI file, None for records.
pub(crate) fn cni_kind(action: &Action, reason: &Reason) -> Option<&'static str> {
    match (action, reason) {
        (Action::RemoveCniResult { .. }, Reason::ResultOfRemovedSandbox { .. }) => {
            Some("removed_sandbox_result")
        }
        (Action::RemoveCniResult { .. }, _) => Some("corrupt_result"),
        (Action::ReleaseIp { .. }, Reason::UnownedReservationAfterReboot) => {
            Some("unowned_reservation")
        }
        (Action::ReleaseIp { .. }, Reason::OrphanReservationAfterReboot { .. }) => {
            Some("orphan_reservation_after_reboot")
        }
        (Action::ReleaseIp { .. }, _) => Some("stale_reservation"),
        _ => None,
    }
}

/// Adds one run to `prev` (pure). Only removals this run made count (`Done`; an item found
/// already gone was removed by someone else).
pub(crate) fn add_run(
    prev: &Totals,
    items: &[ItemReport],
    finished_unix: u64,
    duration_seconds: f64,
    outcome: &str,
) -> Totals {
    let mut t = prev.clone();
    t.version = crate::state::preflight_totals::VERSION;
    t.runs += 1;
    t.last_run_unix = finished_unix;
    t.last_duration_seconds = duration_seconds;
    t.last_outcome = outcome.to_string();
    for i in items.iter().filter(|i| i.result == ItemResult::Done) {
        let (a, r) = (&i.item.action, &i.item.reason);
        if let Some(label) = sandbox_reason(a, r) {
            *t.sandboxes_removed.entry(label.into()).or_default() += 1;
        } else if let Some(label) = cni_kind(a, r) {
            *t.cni_files_removed.entry(label.into()).or_default() += 1;
        } else if matches!(a, Action::RemoveContainer { .. }) {
            t.containers_removed += 1;
        }
    }
    t
}

/// Reads, adds this run and writes back; a corrupt file restarts from zero (logged).
pub(crate) fn record(
    dir: &Path,
    items: &[ItemReport],
    finished_unix: u64,
    duration_seconds: f64,
    outcome: &str,
) -> std::io::Result<Totals> {
    let prev = match read(dir) {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => {
            log::warn!("preflight: {e}; counting again from zero");
            Totals::default()
        }
    };
    let t = add_run(&prev, items, finished_unix, duration_seconds, outcome);
    write(dir, &t)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::plan::Item;

    fn report(action: Action, reason: Reason, result: ItemResult) -> ItemReport {
        let item = Item { action, reason };
        ItemReport {
            text: item.to_string(),
            item,
            result,
        }
    }

    fn sandbox() -> Action {
        Action::RemoveSandbox {
            id: "a".repeat(64),
            name: None,
            ip: None,
            snapshotter: String::new(),
            snapshot_key: String::new(),
        }
    }

    #[test]
    fn only_removals_this_run_made_are_counted_by_reason_and_kind() {
        let items = vec![
            report(
                sandbox(),
                Reason::DeadAfterReboot { why: "x".into() },
                ItemResult::Done,
            ),
            report(
                sandbox(),
                Reason::DuplicateName {
                    claimed: "n".into(),
                    kept: "b".repeat(64),
                },
                ItemResult::Done,
            ),
            report(
                sandbox(),
                Reason::DeadAfterReboot { why: "x".into() },
                ItemResult::AlreadyGone,
            ),
            report(
                sandbox(),
                Reason::DeadAfterReboot { why: "x".into() },
                ItemResult::Withheld("cap".into()),
            ),
            report(
                Action::RemoveCniResult { path: "/r".into() },
                Reason::CorruptCniResult {
                    detail: "empty".into(),
                },
                ItemResult::Done,
            ),
            report(
                Action::ReleaseIp {
                    path: "/n/10.0.0.1".into(),
                    network: "cbr0".into(),
                    ip: "10.0.0.1".into(),
                    owner: None,
                },
                Reason::UnownedReservationAfterReboot,
                ItemResult::Done,
            ),
            report(
                Action::RemoveContainer {
                    id: "c".repeat(64),
                    name: None,
                    snapshotter: String::new(),
                    snapshot_key: String::new(),
                },
                Reason::SandboxRemoved {
                    sandbox: "a".repeat(64),
                },
                ItemResult::Done,
            ),
        ];
        let t1 = add_run(&Totals::default(), &items, 100, 0.25, "completed");
        assert_eq!(t1.runs, 1);
        assert_eq!(t1.sandboxes_removed["dead_after_reboot"], 1);
        assert_eq!(t1.sandboxes_removed["duplicate_name"], 1);
        assert_eq!(t1.cni_files_removed["corrupt_result"], 1);
        assert_eq!(t1.cni_files_removed["unowned_reservation"], 1);
        assert_eq!(t1.containers_removed, 1);
        let t2 = add_run(&t1, &items[..1], 200, 0.5, "completed");
        assert_eq!(t2.sandboxes_removed["dead_after_reboot"], 2);
        assert_eq!(
            (t2.runs, t2.last_run_unix, t2.last_duration_seconds),
            (2, 200, 0.5)
        );
    }

    #[test]
    fn every_label_produced_is_in_the_bounded_sets() {
        use crate::preflight::plan::Reason as R;
        let reasons = [
            R::DeadAfterReboot { why: String::new() },
            R::DuplicateName {
                claimed: String::new(),
                kept: String::new(),
            },
            R::UnusableMetadata {
                error: String::new(),
            },
            R::SandboxRemoved {
                sandbox: String::new(),
            },
            R::OrphanAfterReboot {
                sandbox: String::new(),
            },
            R::CorruptCniResult {
                detail: String::new(),
            },
            R::ResultOfRemovedSandbox {
                sandbox: String::new(),
            },
            R::StaleReservation {
                sandbox: String::new(),
            },
            R::UnownedReservationAfterReboot,
            R::SandboxStoreOrphan {
                metadata: String::new(),
                fatal: false,
            },
            R::OrphanReservationAfterReboot {
                owner: String::new(),
                written_unix: 0,
                boot_unix: 0,
            },
        ];
        let actions = [
            sandbox(),
            Action::RemoveCniResult { path: "/r".into() },
            Action::ReleaseIp {
                path: "/n".into(),
                network: String::new(),
                ip: String::new(),
                owner: None,
            },
        ];
        for a in &actions {
            for r in &reasons {
                if let Some(l) = sandbox_reason(a, r) {
                    assert!(SANDBOX_REASONS.contains(&l), "{l}");
                }
                if let Some(l) = cni_kind(a, r) {
                    assert!(CNI_KINDS.contains(&l), "{l}");
                }
            }
        }
        // The after-reboot release of an orphan reservation is counted under its own kind.
        assert_eq!(
            cni_kind(&actions[2], reasons.last().unwrap()),
            Some("orphan_reservation_after_reboot")
        );
    }

    #[test]
    fn a_corrupt_file_restarts_from_zero_and_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), Ok(None));
        std::fs::write(d.path().join(TOTALS_FILE), b"{\"runs\": 4").unwrap();
        assert!(read(d.path()).unwrap_err().contains("not valid"));
        let t = record(d.path(), &[], 7, 0.1, "completed").unwrap();
        assert_eq!(t.runs, 1);
        assert_eq!(read(d.path()).unwrap(), Some(t));
    }
}
