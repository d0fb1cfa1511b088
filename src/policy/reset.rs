//! `nodemedic reset`: an operator says the cause is fixed. Pure: which `NeedsHuman` marks
//! go, with the memory of repairs that did not help those problems, and nothing else
//! changes (the history, the budget and the ladders stay as they are).

use super::engine::PolicyState;

/// Clears `NeedsHuman` for the episodes `what` names (`""` or `"all"`: every one; else the
/// episodes whose key starts with it, e.g. `KernelRCUStall` or `NetworkMountHung:/mnt/nas`)
/// and a failed post-boot check (always: it is not an episode). Returns what was cleared,
/// for the audit.
pub(crate) fn reset(st: &mut PolicyState, what: &str) -> Vec<String> {
    let all = what.is_empty() || what == "all";
    let mut cleared = Vec::new();
    for (k, e) in st.episodes.iter_mut() {
        if e.needs_human && (all || k.to_string().starts_with(what)) {
            e.needs_human = false;
            cleared.push(k.to_string());
        }
    }
    if st.verification_failed.take().is_some() {
        cleared.push("post-boot verification".into());
    }
    // The cause is fixed (a new SD card): repairs that did not help before may now.
    let before = st.ineffective.len();
    st.ineffective
        .retain(|m| !(all || m.problem.starts_with(what) || what.starts_with(&m.problem)));
    if st.ineffective.len() != before {
        cleared.push(format!(
            "the memory of {} repair(s) that did not help",
            before - st.ineffective.len()
        ));
    }
    cleared
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConditionKind, EpisodeKey};
    use crate::policy::engine::Episode;
    use proptest::prelude::*;

    fn state(eps: &[(ConditionKind, &str, bool, usize)], failed: bool) -> PolicyState {
        let mut st = PolicyState::default();
        for (k, s, nh, step) in eps {
            st.episodes.insert(
                EpisodeKey::new(*k, *s),
                Episode {
                    needs_human: *nh,
                    next_step: *step,
                    ..Episode::starting(crate::policy::engine::At::new(0, 0))
                },
            );
        }
        if failed {
            st.verification_failed = Some("NOT healthy".into());
        }
        st.history.insert(
            crate::model::Remedy::Reboot,
            vec![crate::policy::engine::Acted {
                at: crate::policy::engine::At::new(1, 1),
                subject: None,
            }],
        );
        st
    }

    #[test]
    fn reset_clears_the_named_episodes_and_a_failed_check() {
        let mut st = state(
            &[
                (ConditionKind::KernelRcuStall, "", true, 3),
                (ConditionKind::NetworkMountHung, "/mnt/a", true, 2),
                (ConditionKind::NetworkMountHung, "/mnt/b", false, 1),
            ],
            true,
        );
        let c = reset(&mut st, "NetworkMountHung:/mnt/a");
        assert_eq!(c, vec!["NetworkMountHung:/mnt/a", "post-boot verification"]);
        assert!(st.episodes[&EpisodeKey::new(ConditionKind::KernelRcuStall, "")].needs_human);
        assert_eq!(reset(&mut st, "all"), vec!["KernelRCUStall"]);
        assert!(reset(&mut st, "").is_empty());
    }

    #[test]
    fn reset_forgets_the_repairs_that_did_not_help_the_problems_it_names() {
        let mut st = state(&[], false);
        let now = crate::policy::engine::At::new(5, 5);
        for k in [
            ConditionKind::KernelRcuStall,
            ConditionKind::NetworkMountHung,
        ] {
            crate::policy::repairs::remember_failure(&mut st, k, crate::model::Remedy::Reboot, now);
        }
        let c = reset(&mut st, "NetworkMountHung:/mnt/a");
        assert_eq!(c, vec!["the memory of 1 repair(s) that did not help"]);
        assert_eq!(st.ineffective.len(), 1);
        assert_eq!(st.ineffective[0].problem, "KernelRCUStall");
        reset(&mut st, "all");
        assert!(st.ineffective.is_empty());
    }

    fn kinds() -> impl Strategy<Value = ConditionKind> {
        prop::sample::select(vec![
            ConditionKind::KernelRcuStall,
            ConditionKind::MemoryPressure,
            ConditionKind::NetworkMountHung,
        ])
    }

    proptest! {
        /// After a reset nothing it named needs a human, nothing it did not name changed,
        /// and no ladder position, history or budget moved.
        #[test]
        fn reset_clears_exactly_what_it_names_and_nothing_else(
            eps in prop::collection::vec((kinds(), prop::sample::select(vec!["", "/mnt/a", "/mnt/b"]), any::<bool>(), 0usize..4), 0..6),
            failed in any::<bool>(),
            what in prop::sample::select(vec!["", "all", "NetworkMountHung", "NetworkMountHung:/mnt/a", "MemoryPressure", "Nothing"]),
        ) {
            let eps: Vec<_> = eps.iter().map(|(k, s, n, st)| (*k, *s, *n, *st)).collect();
            let before = state(&eps, failed);
            let mut st = before.clone();
            let cleared = reset(&mut st, what);
            let all = what.is_empty() || what == "all";
            for (k, e) in &st.episodes {
                let b = &before.episodes[k];
                let named = all || k.to_string().starts_with(what);
                prop_assert_eq!(e.needs_human, b.needs_human && !named);
                prop_assert_eq!(e.next_step, b.next_step);
            }
            prop_assert_eq!(&st.history, &before.history);
            prop_assert!(st.verification_failed.is_none());
            let want = before.episodes.iter().filter(|(k, e)| e.needs_human && (all || k.to_string().starts_with(what))).count()
                + usize::from(failed);
            prop_assert_eq!(cleared.len(), want);
        }
    }
}
