//! Which planned removals one preflight run may carry out (pure).
//!
//! The plan says what is dead and why; this says whether the operator allows it. There are
//! two kinds, each with its own switch (`actions.remove_sandboxes`, `actions.clean_cni`:
//! mode, `enabled`, `dry_run`, `max_per_day = 0`) and its own per-run cap
//! (`preflight.max_sandbox_records`, `preflight.max_cni_files`):
//! - containerd records: sandboxes and containers;
//! - CNI files: result cache files and IP reservations.
//!
//! A run that would remove more of a kind than its cap removes *none* of that kind and says
//! why: a real node has at most a few hundred pods' worth of state, so a plan beyond that
//! means our judgement of "dead" is wrong (a wrong boot id, a misread bundle dir), and a
//! partial mass deletion would be the worst of both. The operator reads the plan in the
//! report, then raises the cap or removes by hand.
//!
//! A CNI result file planned only because its sandbox is removed
//! ([`Reason::ResultOfRemovedSandbox`]) is withheld when sandbox removal is: the sandbox
//! stays, and its teardown may still want its cached result.

use super::plan::{Action, Plan, Reason};
use serde::Serialize;

/// k3s's default `max-pods` is 110: after a reboot a full node leaves ~110 dead sandboxes
/// plus their containers (a few hundred records). More than this is not a node's worth.
pub(crate) const DEFAULT_MAX_SANDBOX_RECORDS: u32 = 500;
/// About three CNI files per pod (network result, loopback result, IP reservation).
pub(crate) const DEFAULT_MAX_CNI_FILES: u32 = 500;

/// The two kinds of removal, each with its own switch and cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    SandboxRecords,
    CniFiles,
    /// Images whose layer snapshot lost its directory ([`super::snapshots`]), with that chain.
    BrokenImages,
}

impl Kind {
    pub(crate) fn of(action: &Action) -> Kind {
        match action {
            Action::RemoveContainer { .. } | Action::RemoveSandbox { .. } => Kind::SandboxRecords,
            Action::RemoveCniResult { .. } | Action::ReleaseIp { .. } => Kind::CniFiles,
        }
    }

    /// For logs and the printed summary.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::SandboxRecords => "sandbox records",
            Kind::CniFiles => "CNI files",
            Kind::BrokenImages => "broken images",
        }
    }

    fn cap_key(self) -> &'static str {
        match self {
            Kind::SandboxRecords => "preflight.max_sandbox_records",
            Kind::CniFiles => "preflight.max_cni_files",
            Kind::BrokenImages => "preflight.max_broken_images",
        }
    }
}

/// What the operator allows for one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// Why this kind is not removed (observe mode, a switched-off action...); None: allowed.
    pub(crate) withheld: Option<String>,
    /// Most removals of this kind one run may make.
    pub(crate) cap: u32,
}

impl Switch {
    pub fn allowed(cap: u32) -> Self {
        Switch {
            withheld: None,
            cap,
        }
    }
    pub fn withheld(why: impl Into<String>, cap: u32) -> Self {
        Switch {
            withheld: Some(why.into()),
            cap,
        }
    }
}

/// The decision for one kind, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindDecision {
    pub kind: Kind,
    /// Removals of this kind the plan holds (after dependent withholding).
    pub planned: usize,
    pub(crate) cap: u32,
    pub allowed: bool,
    pub reason: String,
}

/// Decides every item of `plan`: per item `None` (go ahead) or `Some(why withheld)`.
pub(crate) fn decide(
    plan: &Plan,
    records: &Switch,
    cni: &Switch,
) -> (Vec<KindDecision>, Vec<Option<String>>) {
    let mut per_item: Vec<Option<String>> = vec![None; plan.items.len()];
    let records_why = kind_verdict(plan, Kind::SandboxRecords, records, &per_item);
    let mut decisions = vec![records_why.0];
    if let Some(why) = &records_why.1 {
        for (i, item) in plan.items.iter().enumerate() {
            if Kind::of(&item.action) == Kind::SandboxRecords {
                per_item[i] = Some(why.clone());
            } else if matches!(item.reason, Reason::ResultOfRemovedSandbox { .. }) {
                per_item[i] = Some("its sandbox is not removed in this run".into());
            }
        }
    }
    let cni_why = kind_verdict(plan, Kind::CniFiles, cni, &per_item);
    if let Some(why) = &cni_why.1 {
        for (i, item) in plan.items.iter().enumerate() {
            if Kind::of(&item.action) == Kind::CniFiles && per_item[i].is_none() {
                per_item[i] = Some(why.clone());
            }
        }
    }
    decisions.push(cni_why.0);
    (decisions, per_item)
}

/// The decision for `kind`, counting items not already withheld.
fn kind_verdict(
    plan: &Plan,
    kind: Kind,
    sw: &Switch,
    per_item: &[Option<String>],
) -> (KindDecision, Option<String>) {
    let planned = plan
        .items
        .iter()
        .zip(per_item)
        .filter(|(i, w)| Kind::of(&i.action) == kind && w.is_none())
        .count();
    let why = if planned == 0 {
        None
    } else if let Some(w) = &sw.withheld {
        Some(w.clone())
    } else if planned > sw.cap as usize {
        Some(format!(
            "{planned} removals planned, over the cap of {} per run ({}): none done, since that many means the judgement of \"dead\" is probably wrong; check the plan in the report, then raise the cap or remove by hand",
            sw.cap,
            kind.cap_key()
        ))
    } else {
        None
    };
    let reason = match (&why, planned) {
        (Some(w), _) => w.clone(),
        (None, 0) => "nothing planned".into(),
        (None, n) => format!("{n} within the cap of {}", sw.cap),
    };
    (
        KindDecision {
            kind,
            planned,
            cap: sw.cap,
            allowed: why.is_none(),
            reason,
        },
        why,
    )
}

/// The decision for `planned` removals of a kind that is not a plan item (broken images).
pub(crate) fn decide_count(kind: Kind, planned: usize, sw: &Switch) -> KindDecision {
    let why = if planned == 0 {
        None
    } else if let Some(w) = &sw.withheld {
        Some(w.clone())
    } else if planned > sw.cap as usize {
        Some(format!(
            "{planned} removals planned, over the cap of {} per run ({}): none done; check the report, then raise the cap or remove by hand",
            sw.cap,
            kind.cap_key()
        ))
    } else {
        None
    };
    KindDecision {
        kind,
        planned,
        cap: sw.cap,
        allowed: why.is_none(),
        reason: match (why, planned) {
            (Some(w), _) => w,
            (None, 0) => "nothing planned".into(),
            (None, n) => format!("{n} within the cap of {}", sw.cap),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::plan::{Item, Mode};

    fn sandbox(n: usize) -> Item {
        Item {
            action: Action::RemoveSandbox {
                id: format!("{n:064x}"),
                name: None,
                ip: None,
                snapshotter: String::new(),
                snapshot_key: String::new(),
            },
            reason: Reason::DeadAfterReboot {
                why: "no task".into(),
            },
        }
    }

    fn result_of(n: usize) -> Item {
        Item {
            action: Action::RemoveCniResult {
                path: format!("/var/lib/cni/results/cbr0-{n:064x}-eth0").into(),
            },
            reason: Reason::ResultOfRemovedSandbox {
                sandbox: format!("{n:064x}"),
            },
        }
    }

    fn corrupt(n: usize) -> Item {
        Item {
            action: Action::RemoveCniResult {
                path: format!("/var/lib/cni/results/x{n}").into(),
            },
            reason: Reason::CorruptCniResult {
                detail: "zero-length file".into(),
            },
        }
    }

    fn plan(items: Vec<Item>) -> Plan {
        Plan {
            mode: Mode::AfterReboot,
            mode_reason: String::new(),
            items,
            left_alone: vec![],
        }
    }

    #[test]
    fn within_both_caps_everything_goes() {
        let p = plan(vec![sandbox(1), result_of(1), corrupt(2)]);
        let (d, per) = decide(&p, &Switch::allowed(10), &Switch::allowed(10));
        assert!(per.iter().all(Option::is_none));
        assert_eq!((d[0].planned, d[1].planned), (1, 2));
        assert!(d.iter().all(|d| d.allowed));
    }

    #[test]
    fn over_the_cap_removes_none_of_that_kind_and_says_why() {
        let p = plan(vec![sandbox(1), sandbox(2), sandbox(3), corrupt(4)]);
        let (d, per) = decide(&p, &Switch::allowed(2), &Switch::allowed(10));
        assert!(!d[0].allowed);
        assert!(
            d[0].reason
                .contains("3 removals planned, over the cap of 2"),
            "{}",
            d[0].reason
        );
        assert!(d[0].reason.contains("preflight.max_sandbox_records"));
        assert!(per[..3].iter().all(Option::is_some));
        assert_eq!(per[3], None, "the CNI kind is judged on its own");
    }

    #[test]
    fn a_withheld_sandbox_kind_keeps_its_cached_results_but_not_corrupt_ones() {
        let p = plan(vec![sandbox(1), result_of(1), corrupt(2)]);
        let (d, per) = decide(
            &p,
            &Switch::withheld("actions.remove_sandboxes.enabled = false", 10),
            &Switch::allowed(1),
        );
        assert_eq!(
            per[0].as_deref(),
            Some("actions.remove_sandboxes.enabled = false")
        );
        assert_eq!(
            per[1].as_deref(),
            Some("its sandbox is not removed in this run")
        );
        assert_eq!(per[2], None);
        assert_eq!(
            d[1].planned, 1,
            "the dependent result does not count against the cap"
        );
        assert!(d[1].allowed);
    }

    #[test]
    fn a_withheld_cni_kind_leaves_records_alone_in_the_decision() {
        let p = plan(vec![sandbox(1), corrupt(2)]);
        let (d, per) = decide(
            &p,
            &Switch::allowed(10),
            &Switch::withheld("actions.clean_cni.dry_run = true", 10),
        );
        assert_eq!(
            per,
            vec![None, Some("actions.clean_cni.dry_run = true".into())]
        );
        assert!(d[0].allowed && !d[1].allowed);
    }

    #[test]
    fn an_empty_kind_is_allowed_whatever_its_switch() {
        let (d, per) = decide(
            &plan(vec![]),
            &Switch::withheld("x", 0),
            &Switch::withheld("y", 0),
        );
        assert!(per.is_empty());
        assert!(d.iter().all(|d| d.allowed && d.reason == "nothing planned"));
    }

    #[test]
    fn broken_images_have_their_own_cap_and_switch() {
        let d = decide_count(Kind::BrokenImages, 3, &Switch::allowed(2));
        assert!(!d.allowed);
        assert!(
            d.reason
                .contains("over the cap of 2 per run (preflight.max_broken_images)"),
            "{}",
            d.reason
        );
        assert!(decide_count(Kind::BrokenImages, 2, &Switch::allowed(2)).allowed);
        let off = decide_count(
            Kind::BrokenImages,
            1,
            &Switch::withheld("mode is \"observe\"", 20),
        );
        assert_eq!(
            (off.allowed, off.reason.as_str()),
            (false, "mode is \"observe\"")
        );
        let none = decide_count(Kind::BrokenImages, 0, &Switch::withheld("x", 20));
        assert!(none.allowed && none.reason == "nothing planned");
    }
}
