//! The repair plan: from the classified containerd records and CNI files to a list of
//! removals, each with the reason it is safe and needed (pure; no I/O, no clock).
//!
//! Rules, in order of precedence:
//! 1. Nothing that is not provably dead is removed: a sandbox or container whose task runs,
//!    whose pause process still exists, or whose state could not be read is kept. A sandbox
//!    with a container that is not dead is kept too (the pod still runs something).
//! 2. Duplicate names (two records claiming one sandbox or container name) make the CRI plugin
//!    fail at start (`failed to recover state: failed to reserve sandbox name`). In every mode
//!    the dead claimants go; the live one is kept, or, if all are dead, the newest.
//! 3. Dead records whose CRI metadata is missing or unreadable go in every mode: the CRI
//!    plugin cannot load them (`failed to get metadata for stored sandbox`), so nothing else
//!    will ever clean them.
//! 4. After a reboot (see [`decide_mode`]) every dead sandbox goes with its containers: its
//!    processes, netns and mounts died with the old boot, and its record only holds the name
//!    `<pod>_<ns>_<uid>_<attempt>` that the kubelet's retry will collide with
//!    (`failed to reserve sandbox name`). After a mere k3s restart dead sandboxes are left to the kubelet, which stops
//!    and removes them through CRI with a proper network teardown.
//! 5. Corrupt CNI result files go in every mode; a valid one goes only with its removed
//!    sandbox. IP reservations follow [`super::reservations`]: only a dead CRI sandbox's, on
//!    one of k3s's networks, and only when the containerd inventory is complete.

use super::cni::{CniInventory, ResultState};
use super::sandbox_meta::Inventory;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

/// Whether the node rebooted since containerd last ran, or only k3s restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    AfterReboot,
    AfterRestart,
}

/// Decides the mode. A reboot kills every process, so any live sandbox proves k3s merely
/// restarted (`KillMode=process` leaves shims running). With none alive, it is a reboot
/// unless this boot's reboot cleanup already completed (`cleaned_boot_id`, from the last
/// report): then k3s restarted after its pods died, and the kubelet should clean up.
pub fn decide_mode(
    boot_id: Option<&str>,
    cleaned_boot_id: Option<&str>,
    not_dead_sandboxes: usize,
) -> (Mode, String) {
    if not_dead_sandboxes > 0 {
        return (
            Mode::AfterRestart,
            format!(
                "{not_dead_sandboxes} sandbox(es) still alive: k3s restarted, the node did not reboot"
            ),
        );
    }
    match (boot_id, cleaned_boot_id) {
        (Some(b), Some(c)) if b == c => (
            Mode::AfterRestart,
            format!("the reboot cleanup for boot {b} already ran: k3s restarted within this boot"),
        ),
        (Some(b), _) => (
            Mode::AfterReboot,
            format!("no sandbox alive and no cleanup yet for boot {b}: first start after a boot"),
        ),
        (None, _) => (
            Mode::AfterReboot,
            "no sandbox alive and the boot id is unreadable: treated as first start after a boot"
                .into(),
        ),
    }
}

/// One removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Delete the container record (after its stopped task, if any) and its own rootfs
    /// snapshot.
    RemoveContainer {
        id: String,
        name: Option<String>,
        snapshotter: String,
        snapshot_key: String,
    },
    /// Delete the sandbox record (after its stopped task, if any) and its own rootfs snapshot.
    RemoveSandbox {
        id: String,
        name: Option<String>,
        ip: Option<String>,
        snapshotter: String,
        snapshot_key: String,
    },
    RemoveCniResult {
        path: PathBuf,
    },
    ReleaseIp {
        path: PathBuf,
        network: String,
        ip: String,
        owner: Option<String>,
    },
}

/// Why a removal is planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// Dead since the reboot; its name would block the kubelet's next RunPodSandbox.
    DeadAfterReboot { why: String },
    /// Another record claims the same name; `kept` is the claimant that stays.
    DuplicateName { claimed: String, kept: String },
    /// The CRI metadata is missing or unreadable.
    UnusableMetadata { error: String },
    /// Belongs to a sandbox this plan removes.
    SandboxRemoved { sandbox: String },
    /// Its sandbox record no longer exists and the node rebooted.
    OrphanAfterReboot { sandbox: String },
    /// A result cache file libcni cannot decode.
    CorruptCniResult { detail: String },
    /// The cached result of a sandbox this plan removes.
    ResultOfRemovedSandbox { sandbox: String },
    /// The owning sandbox is not alive.
    StaleReservation { sandbox: String },
    /// No readable owner, and the node rebooted so nothing can hold it.
    UnownedReservationAfterReboot,
    /// containerd 2.x: a dead sandbox store entry whose container record is gone
    /// ([`super::sandbox_store`]); `fatal` when its metadata is unreadable.
    SandboxStoreOrphan { metadata: String, fatal: bool },
    /// After a reboot, a reservation on k3s's network whose owner no namespace of this
    /// containerd root knows, written before this boot began, with no netns or veth left:
    /// the leak of a CNI DEL that failed before the kubelet removed the sandbox (k3s 4682,
    /// [`super::reservations`]).
    OrphanReservationAfterReboot {
        owner: String,
        written_unix: u64,
        boot_unix: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    #[serde(flatten)]
    pub action: Action,
    #[serde(flatten)]
    pub reason: Reason,
}

/// The repair plan, with what was deliberately left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub mode: Mode,
    pub mode_reason: String,
    pub items: Vec<Item>,
    /// Problems seen but not acted on, each with why.
    pub left_alone: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Builds the plan. `inv` is `None` when containerd's records could not be read: then only
/// corrupt CNI result files are planned.
pub fn build(inv: Option<&Inventory>, cni: &CniInventory, mode: Mode, mode_reason: &str) -> Plan {
    let mut plan = Plan {
        mode,
        mode_reason: mode_reason.to_string(),
        items: Vec::new(),
        left_alone: Vec::new(),
    };
    let mut removed_sandboxes: BTreeSet<String> = BTreeSet::new();
    if let Some(inv) = inv {
        plan_records(inv, mode, &mut plan, &mut removed_sandboxes);
    } else {
        plan.left_alone.push(
            "containerd records unknown: no sandbox, container or IP reservation is touched".into(),
        );
    }
    plan_cni(cni, &removed_sandboxes, &mut plan);
    plan
}

fn plan_records(inv: &Inventory, mode: Mode, plan: &mut Plan, removed: &mut BTreeSet<String>) {
    // Sandboxes with a container that is not dead must stay (rule 1).
    let mut busy: BTreeMap<&str, &str> = BTreeMap::new();
    for c in &inv.containers {
        if let (Ok(m), false) = (&c.meta, c.liveness.is_dead()) {
            busy.insert(m.sandbox_id.as_str(), c.id.as_str());
        }
    }
    let mut sandbox_reason: BTreeMap<usize, Reason> = BTreeMap::new();
    for (name, idxs) in inv.duplicate_sandbox_names() {
        let alive: Vec<usize> = idxs
            .iter()
            .copied()
            .filter(|&i| !inv.sandboxes[i].liveness.is_dead())
            .collect();
        if alive.len() > 1 {
            plan.left_alone.push(format!(
                "sandbox name {name} is claimed by {} records that are not dead: not fixable before k3s starts",
                alive.len()
            ));
        }
        let kept = alive.first().copied().unwrap_or(idxs[0]);
        for &i in &idxs {
            if i != kept && inv.sandboxes[i].liveness.is_dead() {
                sandbox_reason.insert(
                    i,
                    Reason::DuplicateName {
                        claimed: name.clone(),
                        kept: inv.sandboxes[kept].id.clone(),
                    },
                );
            }
        }
    }
    for (i, s) in inv.sandboxes.iter().enumerate() {
        if sandbox_reason.contains_key(&i) {
            continue;
        }
        match (&s.meta, s.liveness.is_dead()) {
            (Err(e), true) => {
                sandbox_reason.insert(
                    i,
                    Reason::UnusableMetadata {
                        error: e.to_string(),
                    },
                );
            }
            (Err(e), false) => plan.left_alone.push(format!(
                "sandbox {} has unusable metadata ({e}) but is not dead: kept",
                short(&s.id)
            )),
            (Ok(_), true) if mode == Mode::AfterReboot => {
                let why = match &s.liveness {
                    super::sandbox_meta::Liveness::Dead(w) => w.clone(),
                    _ => String::new(),
                };
                sandbox_reason.insert(i, Reason::DeadAfterReboot { why });
            }
            _ => {}
        }
    }
    // Rule 1 again: a sandbox with a container still running stays.
    sandbox_reason.retain(|&i, _| {
        let s = &inv.sandboxes[i];
        match busy.get(s.id.as_str()) {
            Some(c) => {
                plan.left_alone.push(format!(
                    "sandbox {} is dead but its container {} is not: kept",
                    short(&s.id),
                    short(c)
                ));
                false
            }
            None => true,
        }
    });
    for &i in sandbox_reason.keys() {
        removed.insert(inv.sandboxes[i].id.clone());
    }

    // Containers: those of removed sandboxes, duplicates, unusable metadata, orphans.
    let all_sandboxes: BTreeSet<&str> = inv.sandboxes.iter().map(|s| s.id.as_str()).collect();
    let mut container_reason: BTreeMap<usize, Reason> = BTreeMap::new();
    for (name, idxs) in inv.duplicate_container_names() {
        let alive: Vec<usize> = idxs
            .iter()
            .copied()
            .filter(|&i| !inv.containers[i].liveness.is_dead())
            .collect();
        let kept = alive.first().copied().unwrap_or(idxs[0]);
        for &i in &idxs {
            if i != kept && inv.containers[i].liveness.is_dead() {
                container_reason.insert(
                    i,
                    Reason::DuplicateName {
                        claimed: name.clone(),
                        kept: inv.containers[kept].id.clone(),
                    },
                );
            }
        }
    }
    for (i, c) in inv.containers.iter().enumerate() {
        if container_reason.contains_key(&i) || !c.liveness.is_dead() {
            if !c.liveness.is_dead() && c.meta.is_err() {
                plan.left_alone.push(format!(
                    "container {} has unusable metadata but is not dead: kept",
                    short(&c.id)
                ));
            }
            continue;
        }
        let reason = match &c.meta {
            Err(e) => Some(Reason::UnusableMetadata {
                error: e.to_string(),
            }),
            Ok(m) if removed.contains(&m.sandbox_id) => Some(Reason::SandboxRemoved {
                sandbox: m.sandbox_id.clone(),
            }),
            Ok(m)
                if mode == Mode::AfterReboot && !all_sandboxes.contains(m.sandbox_id.as_str()) =>
            {
                Some(Reason::OrphanAfterReboot {
                    sandbox: m.sandbox_id.clone(),
                })
            }
            Ok(_) => None,
        };
        if let Some(r) = reason {
            container_reason.insert(i, r);
        }
    }
    // Containers first: a sandbox record goes only after everything in it.
    for (i, reason) in container_reason {
        let c = &inv.containers[i];
        plan.items.push(Item {
            action: Action::RemoveContainer {
                id: c.id.clone(),
                name: c.meta.as_ref().ok().map(|m| m.name.clone()),
                snapshotter: c.snapshotter.clone(),
                snapshot_key: c.snapshot_key.clone(),
            },
            reason,
        });
    }
    for (i, reason) in sandbox_reason {
        let s = &inv.sandboxes[i];
        let meta = s.meta.as_ref().ok();
        plan.items.push(Item {
            action: Action::RemoveSandbox {
                id: s.id.clone(),
                name: meta.map(|m| m.name.clone()),
                ip: meta.map(|m| m.ip.clone()).filter(|ip| !ip.is_empty()),
                snapshotter: s.snapshotter.clone(),
                snapshot_key: s.snapshot_key.clone(),
            },
            reason,
        });
    }
}

fn plan_cni(cni: &CniInventory, removed: &BTreeSet<String>, plan: &mut Plan) {
    for r in &cni.results {
        let reason = match &r.state {
            ResultState::Empty => Some(Reason::CorruptCniResult {
                detail: "zero-length file".into(),
            }),
            ResultState::Corrupt(d) => Some(Reason::CorruptCniResult { detail: d.clone() }),
            ResultState::Valid {
                container_id: Some(id),
            } if removed.contains(id) => Some(Reason::ResultOfRemovedSandbox {
                sandbox: id.clone(),
            }),
            ResultState::Valid { .. } => None,
        };
        if let Some(reason) = reason {
            plan.items.push(Item {
                action: Action::RemoveCniResult {
                    path: r.path.clone(),
                },
                reason,
            });
        }
    }
    for (path, err) in &cni.unreadable {
        plan.left_alone
            .push(format!("{} could not be read: {err}", path.display()));
    }
    // IP reservations are judged by [`super::reservations`], which also knows k3s's networks
    // and containerd 2.x's sandbox store.
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::RemoveContainer { id, name, .. } => {
                write!(f, "remove container {}", short(id))?;
                if let Some(n) = name {
                    write!(f, " ({n})")?;
                }
                Ok(())
            }
            Action::RemoveSandbox { id, name, ip, .. } => {
                write!(f, "remove sandbox {}", short(id))?;
                match (name, ip) {
                    (Some(n), Some(ip)) => write!(f, " ({n}, ip {ip})"),
                    (Some(n), None) => write!(f, " ({n})"),
                    _ => Ok(()),
                }
            }
            Action::RemoveCniResult { path } => write!(f, "remove CNI result {}", path.display()),
            Action::ReleaseIp {
                path, network, ip, ..
            } => write!(f, "release IP {ip} on {network} ({})", path.display()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::DeadAfterReboot { why } => write!(
                f,
                "dead since the reboot ({why}); its name would block the kubelet's next RunPodSandbox"
            ),
            Reason::DuplicateName { claimed, kept } => write!(
                f,
                "another record ({}) claims the name {claimed}; duplicates make CRI recovery fail",
                short(kept)
            ),
            Reason::UnusableMetadata { error } => {
                write!(
                    f,
                    "its CRI metadata is unusable ({error}); CRI cannot load it"
                )
            }
            Reason::SandboxRemoved { sandbox } => {
                write!(f, "its sandbox {} is removed", short(sandbox))
            }
            Reason::OrphanAfterReboot { sandbox } => write!(
                f,
                "its sandbox {} no longer exists and it died in the reboot",
                short(sandbox)
            ),
            Reason::CorruptCniResult { detail } => {
                write!(f, "corrupt result cache ({detail}) breaks pod teardown")
            }
            Reason::ResultOfRemovedSandbox { sandbox } => {
                write!(f, "cached result of removed sandbox {}", short(sandbox))
            }
            Reason::StaleReservation { sandbox } => {
                write!(f, "owner {} is not a live sandbox", short(sandbox))
            }
            Reason::UnownedReservationAfterReboot => {
                write!(f, "no readable owner, and nothing survives a reboot")
            }
            Reason::SandboxStoreOrphan {
                fatal: true,
                metadata,
            } => write!(
                f,
                "sandbox store entry without its container record, metadata unreadable ({metadata}); containerd 2.x fails CRI's start with \"failed to get metadata for stored sandbox\""
            ),
            Reason::SandboxStoreOrphan { fatal: false, .. } => write!(
                f,
                "sandbox store entry without its container record; containerd 2.x would list it again as a NotReady pod"
            ),
            Reason::OrphanReservationAfterReboot {
                owner,
                written_unix,
                boot_unix,
            } => write!(
                f,
                "owner {} is known in no namespace of this containerd root, the reservation was written {} s before this boot began and no network namespace or veth of it is left (a failed CNI DEL)",
                short(owner),
                boot_unix.saturating_sub(*written_unix)
            ),
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.action, self.reason)
    }
}

impl fmt::Display for Plan {
    /// The dry-run output: one line per removal, then what was left alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::AfterReboot => "after reboot",
            Mode::AfterRestart => "after k3s restart",
        };
        writeln!(f, "mode: {mode} ({})", self.mode_reason)?;
        if self.items.is_empty() {
            writeln!(f, "nothing to remove")?;
        }
        for i in &self.items {
            writeln!(f, "would {i}")?;
        }
        for l in &self.left_alone {
            writeln!(f, "left alone: {l}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::cni::{Reservation, ResultFile};
    use crate::preflight::sandbox_meta::{
        Container, ContainerMeta, Liveness, MetaError, Sandbox, SandboxMeta,
    };

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn dead() -> Liveness {
        Liveness::Dead("no task".into())
    }

    fn alive() -> Liveness {
        Liveness::Alive("task running, pid 812".into())
    }

    fn sandbox(c: char, name: &str, created: i64, liveness: Liveness) -> Sandbox {
        Sandbox {
            id: id(c),
            meta: Ok(SandboxMeta {
                id: id(c),
                name: name.into(),
                pod: None,
                netns: String::new(),
                ip: format!("10.42.0.{}", c as u8),
                additional_ips: vec![],
            }),
            liveness,
            created_unix_nanos: created,
            snapshotter: "overlayfs".into(),
            snapshot_key: id(c),
        }
    }

    fn container(c: char, name: &str, sb: char, liveness: Liveness) -> Container {
        Container {
            id: id(c),
            meta: Ok(ContainerMeta {
                id: id(c),
                name: name.into(),
                sandbox_id: id(sb),
            }),
            liveness,
            created_unix_nanos: 1,
            snapshotter: "overlayfs".into(),
            snapshot_key: id(c),
        }
    }

    /// The plan for `inv` in `mode` with no CNI state to judge.
    fn plan(inv: &Inventory, mode: Mode) -> Plan {
        build(Some(inv), &CniInventory::default(), mode, "r")
    }

    fn removed_ids(p: &Plan) -> Vec<String> {
        p.items
            .iter()
            .filter_map(|i| match &i.action {
                Action::RemoveContainer { id, .. } | Action::RemoveSandbox { id, .. } => {
                    Some(id.clone())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn any_live_sandbox_means_restart_whatever_the_boot_marker_says() {
        let (m, why) = decide_mode(Some("b1"), None, 3);
        assert_eq!(m, Mode::AfterRestart);
        assert!(why.contains("3 sandbox"));
    }

    #[test]
    fn no_live_sandbox_and_no_cleanup_this_boot_means_reboot() {
        assert_eq!(decide_mode(Some("b2"), Some("b1"), 0).0, Mode::AfterReboot);
        assert_eq!(decide_mode(Some("b2"), None, 0).0, Mode::AfterReboot);
        assert_eq!(decide_mode(None, Some("b1"), 0).0, Mode::AfterReboot);
    }

    #[test]
    fn cleanup_already_done_this_boot_means_restart() {
        let (m, why) = decide_mode(Some("b1"), Some("b1"), 0);
        assert_eq!(m, Mode::AfterRestart);
        assert!(why.contains("b1"));
    }

    #[test]
    fn after_reboot_every_dead_sandbox_goes_with_its_containers_first() {
        let inv = Inventory {
            sandboxes: vec![
                sandbox('a', "web-0_default_u1_0", 1, dead()),
                sandbox('b', "db-0_default_u2_0", 2, dead()),
            ],
            containers: vec![container('c', "app_web-0_default_u1_0", 'a', dead())],
            foreign: vec!["not-cri".into()],
        };
        let p = plan(&inv, Mode::AfterReboot);
        assert_eq!(removed_ids(&p), vec![id('c'), id('a'), id('b')]);
        assert_eq!(
            p.items[0].reason,
            Reason::SandboxRemoved { sandbox: id('a') }
        );
        assert!(matches!(p.items[1].reason, Reason::DeadAfterReboot { .. }));
        assert_eq!(
            p.items[1].action,
            Action::RemoveSandbox {
                id: id('a'),
                name: Some("web-0_default_u1_0".into()),
                ip: Some("10.42.0.97".into()),
                snapshotter: "overlayfs".into(),
                snapshot_key: id('a'),
            }
        );
    }

    #[test]
    fn after_restart_dead_sandboxes_are_left_to_the_kubelet() {
        let inv = Inventory {
            sandboxes: vec![sandbox('a', "web-0_default_u1_0", 1, dead())],
            containers: vec![container('c', "app_web-0_default_u1_0", 'a', dead())],
            foreign: vec![],
        };
        let p = plan(&inv, Mode::AfterRestart);
        assert!(p.is_empty(), "{p}");
    }

    #[test]
    fn live_records_are_never_removed_in_any_mode() {
        let inv = Inventory {
            sandboxes: vec![
                sandbox('a', "web-0_default_u1_0", 1, alive()),
                sandbox(
                    'b',
                    "web-1_default_u2_0",
                    1,
                    Liveness::Unknown("deadline".into()),
                ),
            ],
            containers: vec![
                container('c', "app_web-0_default_u1_0", 'a', alive()),
                container(
                    'd',
                    "app_web-1_default_u2_0",
                    'b',
                    Liveness::Unknown("x".into()),
                ),
            ],
            foreign: vec![],
        };
        for mode in [Mode::AfterReboot, Mode::AfterRestart] {
            let p = plan(&inv, mode);
            assert!(p.is_empty(), "{p}");
        }
    }

    #[test]
    fn duplicate_names_keep_the_live_claimant_and_remove_dead_ones_even_after_restart() {
        let inv = Inventory {
            sandboxes: vec![
                sandbox('a', "web-0_default_u1_0", 9, dead()),
                sandbox('b', "web-0_default_u1_0", 1, alive()),
                sandbox('c', "web-0_default_u1_0", 5, dead()),
            ],
            containers: vec![],
            foreign: vec![],
        };
        let p = plan(&inv, Mode::AfterRestart);
        assert_eq!(removed_ids(&p), vec![id('a'), id('c')]);
        for i in &p.items {
            assert_eq!(
                i.reason,
                Reason::DuplicateName {
                    claimed: "web-0_default_u1_0".into(),
                    kept: id('b')
                }
            );
        }
    }

    #[test]
    fn all_dead_duplicates_keep_the_newest_after_restart() {
        let inv = Inventory {
            sandboxes: vec![
                sandbox('a', "web-0_default_u1_0", 100, dead()),
                sandbox('b', "web-0_default_u1_0", 200, dead()),
            ],
            containers: vec![container('c', "app_web-0_default_u1_0", 'a', dead())],
            foreign: vec![],
        };
        let p = plan(&inv, Mode::AfterRestart);
        assert_eq!(removed_ids(&p), vec![id('c'), id('a')]);
        assert_eq!(
            p.items[0].reason,
            Reason::SandboxRemoved { sandbox: id('a') }
        );
    }

    #[test]
    fn two_live_claimants_are_reported_and_kept() {
        let inv = Inventory {
            sandboxes: vec![
                sandbox('a', "web-0_default_u1_0", 1, alive()),
                sandbox('b', "web-0_default_u1_0", 2, alive()),
            ],
            containers: vec![],
            foreign: vec![],
        };
        let p = plan(&inv, Mode::AfterRestart);
        assert!(p.is_empty());
        assert!(p.left_alone[0].contains("claimed by 2 records"));
    }

    #[test]
    fn dead_sandbox_with_unusable_metadata_goes_but_a_live_one_stays() {
        let mut broken = sandbox('a', "", 1, dead());
        broken.meta = Err(MetaError::Missing("io.cri-containerd.sandbox.metadata"));
        let mut live_broken = sandbox('b', "", 1, alive());
        live_broken.meta = Err(MetaError::NotJson("EOF".into()));
        let inv = Inventory {
            sandboxes: vec![broken, live_broken],
            containers: vec![],
            foreign: vec![],
        };
        let p = plan(&inv, Mode::AfterRestart);
        assert_eq!(removed_ids(&p), vec![id('a')]);
        assert!(
            matches!(&p.items[0].reason, Reason::UnusableMetadata { error } if error.contains("no io.cri-containerd.sandbox.metadata"))
        );
        assert_eq!(
            p.items[0].action,
            Action::RemoveSandbox {
                id: id('a'),
                name: None,
                ip: None,
                snapshotter: "overlayfs".into(),
                snapshot_key: id('a')
            }
        );
        assert!(p.left_alone[0].contains("not dead"));
    }

    #[test]
    fn dead_sandbox_with_a_running_container_is_kept() {
        let inv = Inventory {
            sandboxes: vec![sandbox('a', "web-0_default_u1_0", 1, dead())],
            containers: vec![container('c', "app_web-0_default_u1_0", 'a', alive())],
            foreign: vec![],
        };
        let p = plan(&inv, Mode::AfterReboot);
        assert!(p.is_empty(), "{p}");
        assert!(p.left_alone[0].contains("its container"));
    }

    #[test]
    fn orphan_containers_go_only_after_reboot() {
        let inv = Inventory {
            sandboxes: vec![],
            containers: vec![container('c', "app_web-0_default_u1_0", 'z', dead())],
            foreign: vec![],
        };
        let p = plan(&inv, Mode::AfterReboot);
        assert_eq!(
            p.items[0].reason,
            Reason::OrphanAfterReboot { sandbox: id('z') }
        );
        let p = plan(&inv, Mode::AfterRestart);
        assert!(p.is_empty());
    }

    #[test]
    fn duplicate_container_names_remove_the_dead_older_one() {
        let mut old = container('c', "app_web-0_default_u1_0", 'a', dead());
        old.created_unix_nanos = 1;
        let mut new = container('d', "app_web-0_default_u1_0", 'a', dead());
        new.created_unix_nanos = 2;
        let inv = Inventory {
            sandboxes: vec![sandbox('a', "web-0_default_u1_0", 1, alive())],
            containers: vec![old, new],
            foreign: vec![],
        };
        let p = plan(&inv, Mode::AfterRestart);
        assert_eq!(removed_ids(&p), vec![id('c')]);
    }

    fn reservation(ip: &str, owner: Option<String>) -> Reservation {
        Reservation {
            path: PathBuf::from(format!("/var/lib/cni/networks/cbr0/{ip}")),
            network: "cbr0".into(),
            ip: ip.parse().unwrap(),
            owner,
            ifname: Some("eth0".into()),
            modified_unix: None,
        }
    }

    fn cni_fixture() -> CniInventory {
        CniInventory {
            results: vec![
                ResultFile {
                    path: "/var/lib/cni/results/cbr0-x-eth0".into(),
                    state: ResultState::Empty,
                },
                ResultFile {
                    path: "/var/lib/cni/results/cbr0-y-eth0".into(),
                    state: ResultState::Corrupt("EOF while parsing".into()),
                },
                ResultFile {
                    path: format!("/var/lib/cni/results/cbr0-{}-eth0", id('a')).into(),
                    state: ResultState::Valid {
                        container_id: Some(id('a')),
                    },
                },
                ResultFile {
                    path: format!("/var/lib/cni/results/cbr0-{}-eth0", id('b')).into(),
                    state: ResultState::Valid {
                        container_id: Some(id('b')),
                    },
                },
            ],
            reservations: vec![
                reservation("10.42.0.2", Some(id('a'))),
                reservation("10.42.0.3", Some(id('b'))),
                reservation("10.42.0.4", Some(id('e'))),
                reservation("10.42.0.5", Some("some-other-tool".into())),
                reservation("10.42.0.6", None),
            ],
            unreadable: vec![],
        }
    }

    #[test]
    fn cni_cleanup_keeps_what_live_sandboxes_own() {
        let inv = Inventory {
            sandboxes: vec![
                sandbox('a', "web-0_default_u1_0", 1, dead()),
                sandbox('b', "db-0_default_u2_0", 1, alive()),
            ],
            containers: vec![],
            foreign: vec![],
        };
        let p = build(Some(&inv), &cni_fixture(), Mode::AfterRestart, "r");
        let lines: Vec<String> = p.items.iter().map(|i| i.to_string()).collect();
        // Reservations are planned by preflight::reservations (issue 16), not here.
        assert_eq!(p.items.len(), 2, "{lines:#?}");
        assert!(lines[0].contains("cbr0-x-eth0") && lines[0].contains("zero-length"));
        assert!(lines[1].contains("cbr0-y-eth0") && lines[1].contains("EOF while parsing"));
    }

    #[test]
    fn after_reboot_results_of_removed_sandboxes_and_unowned_reservations_go_too() {
        let inv = Inventory {
            sandboxes: vec![sandbox('a', "web-0_default_u1_0", 1, dead())],
            containers: vec![],
            foreign: vec![],
        };
        let p = build(Some(&inv), &cni_fixture(), Mode::AfterReboot, "r");
        let reasons: Vec<&Reason> = p.items.iter().map(|i| &i.reason).collect();
        assert!(reasons.contains(&&Reason::ResultOfRemovedSandbox { sandbox: id('a') }));
        // No reservation here: preflight::reservations judges them.
        assert!(
            !p.items
                .iter()
                .any(|i| matches!(i.action, Action::ReleaseIp { .. }))
        );
    }

    #[test]
    fn unknown_inventory_touches_only_corrupt_results() {
        let p = build(None, &cni_fixture(), Mode::AfterReboot, "r");
        assert_eq!(p.items.len(), 2);
        assert!(
            p.items
                .iter()
                .all(|i| matches!(i.reason, Reason::CorruptCniResult { .. }))
        );
        assert!(p.left_alone[0].contains("unknown"));
    }

    #[test]
    fn serialized_items_have_no_duplicate_keys() {
        let items = vec![
            Item {
                action: Action::RemoveSandbox {
                    id: id('a'),
                    name: Some("n".into()),
                    ip: None,
                    snapshotter: "overlayfs".into(),
                    snapshot_key: id('a'),
                },
                reason: Reason::DuplicateName {
                    claimed: "n".into(),
                    kept: id('b'),
                },
            },
            Item {
                action: Action::ReleaseIp {
                    path: "/x".into(),
                    network: "cbr0".into(),
                    ip: "10.42.0.2".into(),
                    owner: Some(id('a')),
                },
                reason: Reason::StaleReservation { sandbox: id('a') },
            },
        ];
        for i in items {
            let text = serde_json::to_string(&i).unwrap();
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text).unwrap();
            // A duplicate key would collapse into one map entry.
            assert_eq!(map.len(), text.matches("\":").count(), "{text}");
        }
    }

    #[test]
    fn dry_run_text_names_each_removal_and_its_reason() {
        let inv = Inventory {
            sandboxes: vec![sandbox('a', "web-0_default_u1_0", 1, dead())],
            containers: vec![],
            foreign: vec![],
        };
        let p = build(
            Some(&inv),
            &CniInventory::default(),
            Mode::AfterReboot,
            "first start",
        );
        let text = p.to_string();
        assert_eq!(
            text,
            "mode: after reboot (first start)\nwould remove sandbox aaaaaaaaaaaa (web-0_default_u1_0, ip 10.42.0.97): dead since the reboot (no task); its name would block the kubelet's next RunPodSandbox\n"
        );
        let empty = build(
            Some(&Inventory::default()),
            &CniInventory::default(),
            Mode::AfterRestart,
            "x",
        );
        assert_eq!(
            empty.to_string(),
            "mode: after k3s restart (x)\nnothing to remove\n"
        );
    }
}
