//! What nodemedic wants the cluster to show, kept while the API is down, and when to try
//! again.
//!
//! "API unreachable" is a cluster problem, not a node problem (medik8s
//! self-node-remediation asks its peers before it believes otherwise), so nothing here
//! ever blocks or escalates. Desired state is coalesced: the latest set of conditions, the
//! latest cordon wish and the latest lock wish win; Events coalesce in `events::EventLog`.
//! A sync pass applies whatever is still owed; failures back off exponentially with jitter
//! so several nodes do not hammer an API server that is coming back up.

use std::collections::BTreeSet;
use std::time::Duration;

use super::conditions::DesiredCondition;
use super::cordon::CordonWant;
use super::lease::LockWant;

/// First retry after one second: most outages are a k3s restart, over in 10-30 s.
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_secs(1);

/// Retry at least once a minute, so conditions reach the API within a minute of it coming
/// back; five agents once a minute is no load even for a Pi control plane.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The parts of the desired state a sync pass applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ActionKind {
    Conditions,
    Cordon,
    Lease,
    Events,
}

impl ActionKind {
    pub(crate) const ALL: [ActionKind; 4] = [
        ActionKind::Conditions,
        ActionKind::Cordon,
        ActionKind::Lease,
        ActionKind::Events,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActionKind::Conditions => "conditions",
            ActionKind::Cordon => "cordon",
            ActionKind::Lease => "lease",
            ActionKind::Events => "events",
        }
    }
}

/// The latest wishes, and which of them the API has not confirmed yet.
#[derive(Clone, Debug)]
pub(crate) struct Desired {
    conditions: Vec<DesiredCondition>,
    cordon: Option<CordonWant>,
    /// An operator uncordoned our cordon while we still wanted it; we leave it that way
    /// until our wish goes back to `Released`.
    cordon_overridden: bool,
    lock: LockWant,
    dirty: BTreeSet<ActionKind>,
}

impl Default for Desired {
    fn default() -> Self {
        Desired {
            conditions: Vec::new(),
            cordon: None,
            cordon_overridden: false,
            lock: LockWant::Untouched,
            // A fresh daemon publishes its (possibly empty) set once, clearing leftovers.
            dirty: BTreeSet::from([ActionKind::Conditions]),
        }
    }
}

impl Desired {
    pub fn set_conditions(&mut self, conditions: Vec<DesiredCondition>) {
        if conditions != self.conditions {
            self.conditions = conditions;
            self.dirty.insert(ActionKind::Conditions);
        }
    }

    pub(crate) fn set_cordon(&mut self, want: CordonWant) {
        if self.cordon.as_ref() == Some(&want) {
            return;
        }
        if want == CordonWant::Released {
            self.cordon_overridden = false;
        }
        self.cordon = Some(want);
        self.dirty.insert(ActionKind::Cordon);
    }

    pub(crate) fn set_lock(&mut self, want: LockWant) {
        if self.lock != want {
            self.lock = want;
            self.dirty.insert(ActionKind::Lease);
        }
    }

    pub(crate) fn conditions(&self) -> &[DesiredCondition] {
        &self.conditions
    }

    /// The cordon wish to apply: `Released` while an operator override stands.
    /// None until the daemon has said anything about cordoning.
    pub(crate) fn effective_cordon(&self) -> Option<CordonWant> {
        match &self.cordon {
            Some(CordonWant::Cordoned { .. }) if self.cordon_overridden => {
                Some(CordonWant::Released)
            }
            other => other.clone(),
        }
    }

    pub(crate) fn operator_overrode_cordon(&mut self) {
        self.cordon_overridden = true;
    }

    pub(crate) fn lock(&self) -> LockWant {
        self.lock
    }

    pub(crate) fn is_dirty(&self, kind: ActionKind) -> bool {
        self.dirty.contains(&kind)
    }

    pub(crate) fn applied(&mut self, kind: ActionKind) {
        self.dirty.remove(&kind);
    }
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random.
#[derive(Clone, Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
    next_at: Option<Duration>,
}

impl Backoff {
    /// Time left before the next attempt, or None when one may start now.
    pub(crate) fn retry_in(&self, now_mono: Duration) -> Option<Duration> {
        self.next_at
            .and_then(|at| at.checked_sub(now_mono))
            .filter(|d| !d.is_zero())
    }

    /// Records a failure at `now_mono`; returns the delay before the next attempt.
    pub(crate) fn failed(&mut self, now_mono: Duration, jitter: &mut Jitter) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let d = delay(self.failures, jitter.next_unit());
        self.next_at = Some(now_mono + d);
        d
    }

    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.next_at = None;
    }

    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

/// Delay after `failures` consecutive failures (>= 1), `unit` in [0, 1).
pub(crate) fn delay(failures: u32, unit: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = BACKOFF_FIRST.saturating_mul(1 << exp).min(BACKOFF_MAX);
    let half = base / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// xorshift64*: enough randomness to spread retries, no dependency, seeded by the caller
/// (tests pass a constant, the daemon its pid and boot time).
#[derive(Clone, Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Jitter(seed | 1)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::api::ConditionStatus;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_the_jitter_band() {
        assert_eq!(delay(1, 0.0), S / 2);
        assert_eq!(delay(1, 1.0), S);
        assert_eq!(delay(3, 0.0), 2 * S);
        assert_eq!(delay(3, 0.5), 3 * S);
        assert_eq!(delay(7, 0.999_999).as_secs(), 59);
        assert_eq!(delay(60, 1.0), BACKOFF_MAX);
        assert_eq!(delay(u32::MAX, 0.0), BACKOFF_MAX / 2);
    }

    #[test]
    fn backoff_blocks_until_the_delay_passes_and_resets_on_success() {
        let mut b = Backoff::default();
        let mut j = Jitter::new(7);
        assert_eq!(b.retry_in(100 * S), None);
        let d = b.failed(100 * S, &mut j);
        assert!(d >= S / 2 && d <= S);
        assert_eq!(b.retry_in(100 * S), Some(d));
        assert_eq!(b.retry_in(100 * S + d), None);
        let d2 = b.failed(100 * S + d, &mut j);
        assert!(d2 >= S && d2 <= 2 * S, "{d2:?}");
        assert_eq!(b.failures(), 2);
        b.succeeded();
        assert_eq!((b.failures(), b.retry_in(Duration::ZERO)), (0, None));
    }

    #[test]
    fn jitter_is_uniform_enough_and_deterministic_per_seed() {
        let mut a = Jitter::new(42);
        let mut b = Jitter::new(42);
        let xs: Vec<f64> = (0..1000).map(|_| a.next_unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.45..0.55).contains(&mean), "{mean}");
        assert_eq!(xs[0], b.next_unit());
        assert_ne!(Jitter::new(1).next_unit(), Jitter::new(2).next_unit());
    }

    #[test]
    fn the_latest_conditions_win_and_only_changes_mark_them_owed() {
        let mut d = Desired::default();
        assert!(
            d.is_dirty(ActionKind::Conditions),
            "a fresh daemon publishes once"
        );
        d.applied(ActionKind::Conditions);
        d.set_conditions(vec![]);
        assert!(!d.is_dirty(ActionKind::Conditions));
        let c = DesiredCondition::new(
            "MemoryPressure",
            ConditionStatus::True,
            "MemAvailableLow",
            "6%",
        );
        d.set_conditions(vec![c.clone()]);
        d.set_conditions(vec![c.clone(), c.clone()]);
        assert!(d.is_dirty(ActionKind::Conditions));
        assert_eq!(d.conditions().len(), 2);
    }

    #[test]
    fn an_operator_override_stands_until_our_wish_is_released() {
        let mut d = Desired::default();
        assert_eq!(d.effective_cordon(), None);
        d.set_cordon(CordonWant::Cordoned {
            reason: "MemoryPressure".into(),
        });
        d.operator_overrode_cordon();
        assert_eq!(d.effective_cordon(), Some(CordonWant::Released));
        d.set_cordon(CordonWant::Cordoned {
            reason: "KernelRCUStall".into(),
        });
        assert_eq!(
            d.effective_cordon(),
            Some(CordonWant::Released),
            "a new reason is the same wish"
        );
        d.set_cordon(CordonWant::Released);
        d.set_cordon(CordonWant::Cordoned {
            reason: "KernelRCUStall".into(),
        });
        assert_eq!(
            d.effective_cordon(),
            Some(CordonWant::Cordoned {
                reason: "KernelRCUStall".into()
            })
        );
    }

    #[test]
    fn lock_wishes_mark_the_lease_owed() {
        let mut d = Desired::default();
        assert_eq!(d.lock(), LockWant::Untouched);
        d.set_lock(LockWant::Hold);
        assert!(d.is_dirty(ActionKind::Lease));
        d.applied(ActionKind::Lease);
        d.set_lock(LockWant::Hold);
        assert!(!d.is_dirty(ActionKind::Lease));
    }
}
