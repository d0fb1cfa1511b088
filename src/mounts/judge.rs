//! Is a watched mount hung? The per-mount decision behind `NetworkMountHung`, pure: it
//! takes this pass's probe outcome and the growth of the mount's RPC counters, and keeps
//! the hysteresis state between passes.
//!
//! Two kinds of evidence raise it:
//! - the probe is stuck past its deadline (the strongest sign, raised at once: the
//!   deadline already is the debounce);
//! - the RPC counters in `/proc/self/mountstats` show the server answering nothing for
//!   [`RPC_STALL_INTERVALS`] intervals in a row: transmissions went out and not one reply
//!   came back, or an RPC hit its major timeout. This catches a dead server even when the
//!   probe is answered from a cache (`probe = "stat"`) or no probe could run (thread cap).
//!
//! It clears only after `recover_probes` consecutive clean passes: the probe answered and
//! the counters show neither a stall nor trouble (retransmissions or a growing backlog).
//! So a server that limps back, still retransmitting, keeps the condition until it is
//! really well, and a node does not flap between cordoned and schedulable.

use serde::Serialize;

use super::mountstats::RpcGrowth;

/// Intervals in a row with no reply at all (or major timeouts) before the RPC evidence
/// alone raises the condition: one interval can end between a request and its reply.
pub(crate) const RPC_STALL_INTERVALS: u32 = 2;

/// What the prober said about the mount this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum ProbeOutcome {
    Ok,
    /// Returned an error quickly (ENOTCONN, ESTALE, ...): broken, but not hanging callers.
    Failed,
    Stuck,
    /// No probe could run (thread cap): no evidence either way.
    NotProbed,
}

/// What one interval of RPC counter growth says about the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct RpcSigns {
    /// Requests were sent and no reply came back, or an RPC hit its major timeout.
    pub(crate) stalled: bool,
    /// Retransmissions happened or the transport backlog grew: slow or lossy.
    pub(crate) struggling: bool,
}

impl RpcSigns {
    pub(crate) fn from_growth(g: &RpcGrowth) -> RpcSigns {
        // A remount resets the counters: this interval says nothing.
        if g.reset {
            return RpcSigns::default();
        }
        RpcSigns {
            stalled: g.major_timeouts > 0 || (g.sends > 0 && g.recvs == 0),
            struggling: g.retransmissions > 0 || g.backlog_u > 0,
        }
    }

    pub(crate) fn any(&self) -> bool {
        self.stalled || self.struggling
    }
}

/// Why the condition is held, as its Kubernetes-style reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) enum HungReason {
    #[default]
    ProbeTimeout,
    RpcNotAnswering,
}

impl HungReason {
    pub fn name(self) -> &'static str {
        match self {
            HungReason::ProbeTimeout => "ProbeTimeout",
            HungReason::RpcNotAnswering => "RpcNotAnswering",
        }
    }
}

/// Hysteresis state of one mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct MountVerdict {
    pub(crate) hung: bool,
    /// The strongest evidence seen while held; kept while hysteresis holds it.
    pub(crate) reason: HungReason,
    /// Consecutive clean passes (probe answered, RPC counters quiet).
    pub(crate) good_streak: u32,
    /// Consecutive intervals with [`RpcSigns::stalled`].
    pub(crate) stall_streak: u32,
}

impl MountVerdict {
    /// Takes one pass. `rpc` is `None` for mounts without RPC statistics (not NFS) or on
    /// the first sample.
    pub(crate) fn step(&mut self, probe: ProbeOutcome, rpc: Option<RpcSigns>, recover_probes: u32) {
        let rpc = rpc.unwrap_or_default();
        self.stall_streak = if rpc.stalled {
            self.stall_streak.saturating_add(1)
        } else {
            0
        };
        if probe == ProbeOutcome::Stuck {
            self.raise(HungReason::ProbeTimeout);
            return;
        }
        if self.stall_streak >= RPC_STALL_INTERVALS {
            self.raise(HungReason::RpcNotAnswering);
            return;
        }
        match probe {
            ProbeOutcome::Ok if !rpc.any() => {
                self.good_streak = self.good_streak.saturating_add(1);
                if self.good_streak >= recover_probes {
                    self.hung = false;
                }
            }
            // No probe, no evidence: neither clears nor resets the streak.
            ProbeOutcome::NotProbed if !rpc.any() => {}
            _ => self.good_streak = 0,
        }
    }

    fn raise(&mut self, reason: HungReason) {
        self.hung = true;
        self.reason = reason;
        self.good_streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::mountstats::{growth, parse_mountstats};

    /// One `/proc/self/mountstats` sample of a hard NFSv4.2 mount over TCP (statvers 1.1).
    fn sample(age: u64, sends: u64, recvs: u64, backlog: u64, ops: &[(u64, u64, u64)]) -> String {
        let mut s = format!(
            "device nas.lan:/volume1/backup mounted on /mnt/backup with fstype nfs4 statvers=1.1\n\
             \topts:\trw,vers=4.2,hard,proto=tcp,timeo=600,retrans=2\n\
             \tage:\t{age}\n\
             \tRPC iostats version: 1.1  p/v: 100003/4 (nfs)\n\
             \txprt:\ttcp 887 0 2 0 11 {sends} {recvs} 0 {} {backlog} 65536 0 0\n\
             \tper-op statistics\n",
            sends * 2
        );
        for (name, (n, trans, timeouts)) in ["GETATTR", "READ", "WRITE"].iter().zip(ops) {
            s.push_str(&format!(
                "\t{name:>12}: {n} {trans} {timeouts} 0 0 0 0 0 0\n"
            ));
        }
        s
    }

    /// RPC signs of each interval of a series of samples (fixture text in, signs out).
    fn signs(samples: &[String]) -> Vec<RpcSigns> {
        let rpc: Vec<_> = samples
            .iter()
            .map(|t| {
                let table = parse_mountstats(t.as_bytes());
                assert_eq!(table.malformed, 0, "{t}");
                table.mounts[0].rpc.clone().unwrap()
            })
            .collect();
        rpc.windows(2)
            .map(|w| RpcSigns::from_growth(&growth(&w[0], &w[1])))
            .collect()
    }

    const QUIET: RpcSigns = RpcSigns {
        stalled: false,
        struggling: false,
    };

    #[test]
    fn growth_signs_tell_a_silent_server_from_a_slow_one_and_from_a_healthy_one() {
        let ok = [(100, 100, 0), (50, 50, 0), (10, 10, 0)];
        let s = signs(&[
            sample(100, 5000, 5000, 0, &ok),
            // healthy traffic
            sample(
                110,
                5300,
                5300,
                0,
                &[(350, 350, 0), (50, 50, 0), (10, 10, 0)],
            ),
            // server silent: 6 sends, no reply, op counters frozen
            sample(
                120,
                5306,
                5300,
                0,
                &[(350, 350, 0), (50, 50, 0), (10, 10, 0)],
            ),
            // server back but retransmitting, backlog grew
            sample(
                130,
                5400,
                5390,
                40,
                &[(430, 433, 0), (50, 50, 0), (12, 12, 0)],
            ),
            // a soft mount gave up on one request: major timeout
            sample(
                140,
                5401,
                5391,
                40,
                &[(431, 434, 1), (50, 50, 0), (12, 12, 0)],
            ),
            // idle
            sample(
                150,
                5401,
                5391,
                40,
                &[(431, 434, 1), (50, 50, 0), (12, 12, 0)],
            ),
            // remounted: counters restart
            sample(3, 12, 12, 0, &[(2, 2, 0), (0, 0, 0), (0, 0, 0)]),
        ]);
        assert_eq!(
            s,
            vec![
                QUIET,
                RpcSigns {
                    stalled: true,
                    struggling: false
                },
                RpcSigns {
                    stalled: false,
                    struggling: true
                },
                RpcSigns {
                    stalled: true,
                    struggling: false
                },
                QUIET,
                QUIET,
            ]
        );
    }

    #[test]
    fn a_stuck_probe_raises_at_once_and_two_clean_passes_clear() {
        let mut v = MountVerdict::default();
        v.step(ProbeOutcome::Stuck, None, 2);
        assert!(v.hung);
        assert_eq!(v.reason, HungReason::ProbeTimeout);
        v.step(ProbeOutcome::Ok, None, 2);
        assert!(v.hung, "one good pass is not enough");
        v.step(ProbeOutcome::Ok, Some(QUIET), 2);
        assert!(!v.hung);
    }

    #[test]
    fn a_server_silent_for_two_intervals_raises_even_while_the_probe_answers() {
        let stalled = RpcSigns {
            stalled: true,
            struggling: false,
        };
        let mut v = MountVerdict::default();
        v.step(ProbeOutcome::Ok, Some(stalled), 2);
        assert!(!v.hung, "one silent interval can be a reply in flight");
        v.step(ProbeOutcome::Ok, Some(QUIET), 2);
        v.step(ProbeOutcome::Ok, Some(stalled), 2);
        assert!(!v.hung, "the streak restarted");
        v.step(ProbeOutcome::NotProbed, Some(stalled), 2);
        assert!(v.hung);
        assert_eq!(v.reason, HungReason::RpcNotAnswering);
    }

    #[test]
    fn a_limping_server_keeps_the_condition_until_its_counters_are_quiet() {
        let limping = RpcSigns {
            stalled: false,
            struggling: true,
        };
        let mut v = MountVerdict::default();
        v.step(ProbeOutcome::Stuck, None, 2);
        for _ in 0..5 {
            v.step(ProbeOutcome::Ok, Some(limping), 2);
            assert!(v.hung, "retransmissions still growing");
        }
        assert_eq!(v.reason, HungReason::ProbeTimeout, "kept while held");
        v.step(ProbeOutcome::Ok, Some(QUIET), 2);
        v.step(ProbeOutcome::Ok, Some(limping), 2);
        v.step(ProbeOutcome::Ok, Some(QUIET), 2);
        assert!(v.hung, "the clean streak must be unbroken");
        v.step(ProbeOutcome::Ok, Some(QUIET), 2);
        assert!(!v.hung);
    }

    #[test]
    fn fast_failures_break_the_clean_streak_and_missing_probes_do_not_count_either_way() {
        let mut v = MountVerdict::default();
        v.step(ProbeOutcome::Stuck, None, 2);
        v.step(ProbeOutcome::Ok, None, 2);
        v.step(ProbeOutcome::Failed, None, 2);
        v.step(ProbeOutcome::Ok, None, 2);
        assert!(v.hung, "the failure reset the streak");
        v.step(ProbeOutcome::NotProbed, None, 2);
        assert_eq!(v.good_streak, 1, "no evidence: streak kept");
        v.step(ProbeOutcome::Ok, None, 2);
        assert!(!v.hung);
        // A fast failure alone never raises: it does not hang callers.
        let mut v = MountVerdict::default();
        for _ in 0..5 {
            v.step(ProbeOutcome::Failed, None, 2);
        }
        assert!(!v.hung);
    }

    #[test]
    fn a_dead_servers_fixture_series_raises_and_a_recovery_series_clears() {
        // The whole path from mountstats text to the verdict, probe answering from cache.
        let ok = [(100, 100, 0), (50, 50, 0), (10, 10, 0)];
        let dead = signs(&[
            sample(100, 5000, 5000, 0, &ok),
            sample(110, 5004, 5000, 0, &ok),
            sample(120, 5009, 5000, 3, &ok),
        ]);
        let mut v = MountVerdict::default();
        for s in &dead {
            v.step(ProbeOutcome::Ok, Some(*s), 2);
        }
        assert!(v.hung);
        assert_eq!(v.reason, HungReason::RpcNotAnswering);
        let back = signs(&[
            sample(120, 5009, 5000, 3, &ok),
            sample(
                130,
                5100,
                5100,
                3,
                &[(180, 190, 0), (50, 50, 0), (10, 10, 0)],
            ),
            sample(
                140,
                5200,
                5200,
                3,
                &[(280, 290, 0), (50, 50, 0), (10, 10, 0)],
            ),
            sample(
                150,
                5300,
                5300,
                3,
                &[(380, 390, 0), (50, 50, 0), (10, 10, 0)],
            ),
        ]);
        v.step(ProbeOutcome::Ok, Some(back[0]), 2);
        assert!(v.hung, "the replies came with retransmissions");
        v.step(ProbeOutcome::Ok, Some(back[1]), 2);
        assert!(v.hung);
        v.step(ProbeOutcome::Ok, Some(back[2]), 2);
        assert!(!v.hung);
    }
}
