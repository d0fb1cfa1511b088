//! `mode` and `[actions.*]`: whether nodemedic acts at all, and the switch, dry run and daily
//! cap of each remediation.

use serde::{Deserialize, Serialize};

/// Observe-only is the default: a fresh install must never touch a running node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RunMode {
    #[default]
    Observe,
    Act,
}

/// One switch per remediation. An action runs only when `mode = "act"` and its `enabled`
/// is true; `dry_run` logs and counts it without doing it; `max_per_day` caps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ActionSection {
    pub(crate) enabled: bool,
    pub(crate) dry_run: bool,
    pub(crate) max_per_day: u32,
    /// Per-subject actions only (`unmount` a mount point, `remove_sandboxes` a sandbox
    /// name): the cap for one subject in a rolling 24 h, under the node-wide
    /// `max_per_day` (default [`DEFAULT_MAX_PER_SUBJECT`]). Each subject also has its own
    /// cooldown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_per_subject_per_day: Option<u32>,
}

impl ActionSection {
    /// The per-subject cap in force.
    pub(crate) fn per_subject_cap(&self) -> u32 {
        self.max_per_subject_per_day
            .unwrap_or(DEFAULT_MAX_PER_SUBJECT)
    }
}

/// The actions that act on one subject each (see `model::Remedy::per_subject`).
pub(crate) const PER_SUBJECT_ACTIONS: [&str; 2] = ["unmount", "remove_sandboxes"];

/// A subject cleaned three times a day is not being cleaned up: something recreates the
/// problem, and a human should look (the node-wide cap still bounds the total).
pub(crate) const DEFAULT_MAX_PER_SUBJECT: u32 = 3;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ActionsSection {
    pub(crate) cordon: ActionSection,
    pub(crate) drain: ActionSection,
    pub(crate) restart_k3s: ActionSection,
    pub(crate) reboot: ActionSection,
    pub(crate) unmount: ActionSection,
    pub(crate) remove_sandboxes: ActionSection,
    pub(crate) clean_cni: ActionSection,
    pub(crate) evict_besteffort: ActionSection,
    pub(crate) reclaim_disk: ActionSection,
    pub(crate) reset_failed_k3s: ActionSection,
}

impl ActionSection {
    const fn on(max_per_day: u32) -> Self {
        ActionSection {
            enabled: true,
            dry_run: false,
            max_per_day,
            max_per_subject_per_day: None,
        }
    }
    const fn off(max_per_day: u32) -> Self {
        ActionSection {
            enabled: false,
            dry_run: false,
            max_per_day,
            max_per_subject_per_day: None,
        }
    }
    const fn per_subject(mut self) -> Self {
        self.max_per_subject_per_day = Some(DEFAULT_MAX_PER_SUBJECT);
        self
    }
}

impl Default for ActionSection {
    fn default() -> Self {
        ActionSection::off(1)
    }
}

impl Default for ActionsSection {
    fn default() -> Self {
        // Caps are per rolling 24 h. Disruptive, cluster-visible actions are few; local
        // clean-ups are bounded but generous because each one is surgical.
        ActionsSection {
            cordon: ActionSection::on(10),
            drain: ActionSection::off(3),
            restart_k3s: ActionSection::on(3),
            reboot: ActionSection::on(3),
            unmount: ActionSection::off(10).per_subject(),
            remove_sandboxes: ActionSection::on(200).per_subject(),
            clean_cni: ActionSection::on(1000),
            // Optional (issue: never kill, only ask the API): a node that needs more than
            // six evictions a day has a placement problem that evicting does not fix.
            evict_besteffort: ActionSection::off(6),
            // Opt-in and dry-run first: removing images costs re-pulls over a Pi's link,
            // and a journal vacuum loses history. Four a day is one per cooldown-spaced
            // episode of a disk that keeps filling; more means a human must look.
            reclaim_disk: ActionSection {
                enabled: false,
                dry_run: true,
                max_per_day: 4,
                max_per_subject_per_day: None,
            },
            // Restorative (starts what systemd gave up on), but a unit that keeps failing
            // after three fresh starts a day needs a human, not a fourth.
            reset_failed_k3s: ActionSection::on(3),
        }
    }
}

impl ActionsSection {
    /// (name, config) for every action, in a fixed order for reports and metrics.
    pub(crate) fn all(&self) -> [(&'static str, &ActionSection); 10] {
        [
            ("cordon", &self.cordon),
            ("drain", &self.drain),
            ("restart_k3s", &self.restart_k3s),
            ("reboot", &self.reboot),
            ("unmount", &self.unmount),
            ("remove_sandboxes", &self.remove_sandboxes),
            ("clean_cni", &self.clean_cni),
            ("evict_besteffort", &self.evict_besteffort),
            ("reclaim_disk", &self.reclaim_disk),
            ("reset_failed_k3s", &self.reset_failed_k3s),
        ]
    }
}
