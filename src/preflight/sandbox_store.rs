//! containerd 2.x's sandbox store (the Sandbox API, `containerd.services.sandbox.v1.Store`).
//!
//! containerd 2.x keeps every pod sandbox twice: as the container record of its pause
//! container (the only copy 1.x has) and as an entry in the sandbox store, whose `metadata`
//! extension holds the same versioned CRI metadata JSON. On start the CRI plugin first loads
//! the records, then every store entry it has not loaded from a record
//! (`internal/cri/server/restart.go`, 2.0 to 2.3):
//! - an entry whose record is gone comes back as a NotReady pod: a sandbox whose record alone
//!   was removed is listed again after the next restart;
//! - an entry whose `metadata` cannot be read ends CRI's start with `failed to recover state:
//!   failed to get metadata for stored sandbox "<id>"` (containerd 10848, k3s 11973); 2.0
//!   also failed on an entry without any metadata, 2.1 deletes those itself.
//!
//! So on 2.x a sandbox is removed completely only when its record, its task and its store
//! entry are gone ([`remove_entry`] after the record), and a dead store entry without its
//! record is removed for its own reason ([`plan_orphans`], `Reason::SandboxStoreOrphan`). A
//! record without a store entry is normal on 2.x (a sandbox created by 1.x before an upgrade:
//! CRI loads it from the record) and is judged like any record. containerd 1.6 has no store
//! (`Unimplemented`); 1.7 serves an empty one: both leave everything as it was.
//!
//! Only entries of the `podsandbox` sandboxer (CRI's pause-container sandboxes, the default)
//! are expected to have a record; entries of other sandboxers (the experimental `shim` mode
//! keeps none) are never touched.

use super::containerd::{ContainerStore, Deleted, GrpcStore, StoreError};
use super::plan::{Action, Item, Plan, Reason};
use super::report::ItemResult;
use super::sandbox_meta::{Liveness, MetaError, SandboxMeta, decode_sandbox};
use crate::edge::sandbox_store as edge;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The store entry's extension holding the CRI metadata (`podsandbox.MetadataKey`).
pub(crate) const STORE_METADATA_KEY: &str = "metadata";
/// The store entry's label holding the sandbox name.
pub(crate) const STORE_NAME_LABEL: &str = "name";
/// Sandboxers whose sandboxes have a pause-container record: CRI's default `podsandbox`
/// (an empty sandboxer is what entries written before the field existed carry).
pub(crate) const RECORD_SANDBOXERS: [&str; 2] = ["podsandbox", ""];

/// One sandbox store entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreEntry {
    pub(crate) id: String,
    pub(crate) sandboxer: String,
    /// The `name` label, when set.
    pub(crate) name: Option<String>,
    /// The decoded `metadata` extension.
    pub(crate) meta: Result<SandboxMeta, MetaError>,
    pub(crate) created_unix_nanos: i64,
}

impl StoreEntry {
    /// From the API's message.
    pub(crate) fn from_proto(s: containerd_client::types::Sandbox) -> StoreEntry {
        let meta = decode_sandbox(
            &s.sandbox_id,
            s.extensions
                .get(STORE_METADATA_KEY)
                .map(|a| a.value.as_slice()),
        );
        StoreEntry {
            created_unix_nanos: s
                .created_at
                .map(|t| {
                    t.seconds
                        .saturating_mul(1_000_000_000)
                        .saturating_add(t.nanos as i64)
                })
                .unwrap_or(0),
            name: s.labels.get(STORE_NAME_LABEL).cloned(),
            sandboxer: s.sandboxer,
            id: s.sandbox_id,
            meta,
        }
    }

    /// True for entries CRI pairs with a pause-container record.
    pub(crate) fn expects_record(&self) -> bool {
        RECORD_SANDBOXERS.contains(&self.sandboxer.as_str())
    }

    /// The sandbox name, from the metadata or else the label.
    pub(crate) fn sandbox_name(&self) -> Option<String> {
        self.meta
            .as_ref()
            .ok()
            .map(|m| m.name.clone())
            .or_else(|| self.name.clone())
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Adds to `plan` every dead store entry of a record-keeping sandboxer whose record is gone
/// (pure). `records` are the ids of every container record; `live(id)` is the entry's
/// liveness from its task (its id is the pause container's). An entry that is not provably
/// dead, or belongs to another sandboxer, is reported in `left_alone` and kept.
pub(crate) fn plan_orphans(
    plan: &mut Plan,
    entries: &[StoreEntry],
    records: &BTreeSet<&str>,
    mut live: impl FnMut(&str) -> Liveness,
) {
    for e in entries.iter().filter(|e| !records.contains(e.id.as_str())) {
        if !e.expects_record() {
            plan.left_alone.push(format!(
                "sandbox store entry {} of sandboxer {:?} has no container record, as that sandboxer keeps none: kept",
                short(&e.id),
                e.sandboxer
            ));
            continue;
        }
        let liveness = live(&e.id);
        if !liveness.is_dead() {
            plan.left_alone.push(format!(
                "sandbox store entry {} has no container record but is not dead ({liveness:?}): kept",
                short(&e.id)
            ));
            continue;
        }
        let metadata = match &e.meta {
            Ok(_) => "readable".to_string(),
            Err(err) => err.to_string(),
        };
        let meta = e.meta.as_ref().ok();
        plan.items.push(Item {
            action: Action::RemoveSandbox {
                id: e.id.clone(),
                name: e.sandbox_name(),
                ip: meta.map(|m| m.ip.clone()).filter(|ip| !ip.is_empty()),
                snapshotter: String::new(),
                snapshot_key: String::new(),
            },
            reason: Reason::SandboxStoreOrphan {
                metadata,
                fatal: e.meta.is_err(),
            },
        });
    }
}

/// What preflight's inventory knows about the sandbox store.
#[derive(Debug, Clone, Default)]
pub struct StoreView {
    /// Every entry; `None` where containerd has no store (1.6) or it was not listed.
    pub(crate) entries: Option<Vec<StoreEntry>>,
    /// Liveness of the entries that have no container record, by id.
    pub(crate) orphan_liveness: BTreeMap<String, Liveness>,
}

impl StoreView {
    /// Plans the removal of dead orphan entries ([`plan_orphans`]).
    pub(crate) fn plan(&self, plan: &mut Plan) {
        let Some(entries) = &self.entries else { return };
        let orphans: Vec<StoreEntry> = entries
            .iter()
            .filter(|e| self.orphan_liveness.contains_key(&e.id))
            .cloned()
            .collect();
        // Every other entry has its record (that is how orphans were found).
        let records: BTreeSet<&str> = entries
            .iter()
            .filter(|e| !self.orphan_liveness.contains_key(&e.id))
            .map(|e| e.id.as_str())
            .collect();
        plan_orphans(plan, &orphans, &records, |id| {
            self.orphan_liveness
                .get(id)
                .cloned()
                .unwrap_or_else(|| Liveness::Unknown("not probed".into()))
        });
    }
}

/// Completes the removal of sandbox `id` after its task and record were handled (`record`):
/// its store entry goes too, and the item is done only when both are gone. Where there is
/// no store (1.x) the entry is "already gone" and the record's result stands.
pub(crate) fn with_store_entry(
    store: &mut dyn ContainerStore,
    id: &str,
    record: ItemResult,
) -> ItemResult {
    if matches!(record, ItemResult::Failed(_)) {
        // The record is still there: its entry stays with it, so CRI sees a whole sandbox.
        return record;
    }
    match (store.delete_store_entry(id), record) {
        (Err(e), _) => ItemResult::Failed(format!(
            "the record is gone but its sandbox store entry is not: {e}"
        )),
        (Ok(Deleted::Removed), _) => ItemResult::Done,
        (Ok(Deleted::AlreadyGone), r) => r,
    }
}

/// `Store.List` on the real store ([`crate::edge::sandbox_store`]); `Ok(None)` when
/// containerd has no sandbox store (1.6).
pub(crate) fn grpc_list(s: &GrpcStore) -> Result<Option<Vec<StoreEntry>>, StoreError> {
    let what = "listing the sandbox store";
    match s.call_raw(what, |t| edge::list(s.channel(), s.namespace(), t))? {
        Ok(list) => Ok(list.map(|l| l.into_iter().map(StoreEntry::from_proto).collect())),
        Err(st) => Err(s.status_error(what, st)),
    }
}

/// `Store.Delete` on the real store; NotFound (and a store that does not exist) is
/// "already gone".
pub(crate) fn grpc_delete(s: &GrpcStore, id: &str) -> Result<Deleted, StoreError> {
    let what = format!("deleting sandbox store entry {id}");
    match s.call_raw(&what, |t| edge::delete(s.channel(), s.namespace(), id, t))? {
        Ok(true) => Ok(Deleted::Removed),
        Ok(false) => Ok(Deleted::AlreadyGone),
        Err(st) => Err(s.status_error(&what, st)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::plan::Mode;

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn entry(c: char, sandboxer: &str, meta: Option<&str>) -> StoreEntry {
        let mut s = containerd_client::types::Sandbox {
            sandbox_id: id(c),
            sandboxer: sandboxer.into(),
            ..Default::default()
        };
        s.labels
            .insert("name".into(), format!("web-{c}_default_u{c}_0"));
        if let Some(m) = meta {
            s.extensions.insert(
                STORE_METADATA_KEY.into(),
                prost_types::Any {
                    type_url:
                        "github.com/containerd/containerd/v2/internal/cri/store/sandbox/Metadata"
                            .into(),
                    value: m.replace("@ID@", &id(c)).into_bytes(),
                },
            );
        }
        StoreEntry::from_proto(s)
    }

    const META: &str =
        r#"{"Version":"v1","Metadata":{"ID":"@ID@","Name":"web-x_default_ux_0","IP":"10.42.0.7"}}"#;

    fn empty_plan() -> Plan {
        Plan {
            mode: Mode::AfterRestart,
            mode_reason: "r".into(),
            items: vec![],
            left_alone: vec![],
        }
    }

    #[test]
    fn the_store_metadata_is_the_records_versioned_json() {
        let e = entry('a', "podsandbox", Some(META));
        let m = e.meta.as_ref().unwrap();
        assert_eq!(
            (m.name.as_str(), m.ip.as_str()),
            ("web-x_default_ux_0", "10.42.0.7")
        );
        assert!(e.expects_record());
        let bad = entry('b', "podsandbox", Some(r#"{"Version":"v0","Metadata":{}}"#));
        assert!(matches!(bad.meta, Err(MetaError::UnknownVersion(_))));
        assert_eq!(bad.sandbox_name().as_deref(), Some("web-b_default_ub_0"));
        assert!(matches!(
            entry('c', "", None).meta,
            Err(MetaError::Missing(_))
        ));
        assert!(!entry('d', "shim", Some(META)).expects_record());
    }

    #[test]
    fn dead_entries_without_a_record_go_with_their_own_reason_and_nothing_else_does() {
        let entries = vec![
            entry('a', "podsandbox", Some(META)), // has its record
            entry('b', "podsandbox", Some(META)), // orphan, dead
            entry('c', "podsandbox", Some("{\"Version\":\"v9\"")), // orphan, unreadable
            entry('d', "podsandbox", Some(META)), // orphan, task running
            entry('e', "shim", Some(META)),       // another sandboxer
        ];
        let (a, d) = (id('a'), id('d'));
        let records: BTreeSet<&str> = [a.as_str()].into();
        let mut plan = empty_plan();
        plan_orphans(&mut plan, &entries, &records, |i| {
            if i == d {
                Liveness::Alive("task running, pid 9".into())
            } else {
                Liveness::Dead("no task".into())
            }
        });
        let planned: Vec<(&str, &Reason)> = plan
            .items
            .iter()
            .map(|i| match &i.action {
                Action::RemoveSandbox { id, .. } => (id.as_str(), &i.reason),
                a => panic!("{a:?}"),
            })
            .collect();
        assert_eq!(planned.len(), 2, "{plan:?}");
        assert_eq!(planned[0].0, id('b'));
        assert_eq!(
            planned[0].1,
            &Reason::SandboxStoreOrphan {
                metadata: "readable".into(),
                fatal: false
            }
        );
        assert_eq!(planned[1].0, id('c'));
        assert!(matches!(
            planned[1].1,
            Reason::SandboxStoreOrphan { fatal: true, .. }
        ));
        assert!(
            planned[1]
                .1
                .to_string()
                .contains("failed to get metadata for stored sandbox")
        );
        assert_eq!(plan.left_alone.len(), 2, "{:?}", plan.left_alone);
        assert!(plan.left_alone[0].contains("not dead"));
        assert!(plan.left_alone[1].contains("\"shim\""));
        match &plan.items[0].action {
            Action::RemoveSandbox {
                name,
                ip,
                snapshot_key,
                ..
            } => {
                assert_eq!(name.as_deref(), Some("web-x_default_ux_0"));
                assert_eq!(ip.as_deref(), Some("10.42.0.7"));
                assert!(
                    snapshot_key.is_empty(),
                    "no record, so no rootfs snapshot of its own"
                );
            }
            _ => unreachable!(),
        }
    }
}
