//! The connection table: who may connect, and whom to drop when every slot is taken.
//!
//! Three rules keep a scraper served while clients misbehave (issue 18: 32 clients that
//! never read, or a slowloris, kept `/metrics` from 95-100% of probes):
//!
//! - **per-peer limit**: one address holds at most `per_peer` connections; more are closed
//!   at once. Prometheus uses one per target, so a handful is plenty for any real client.
//! - **no refusal when full**: a new connection is always taken; when the table is full,
//!   the connection that has done least for its slot is closed instead ([`victim`]). So a
//!   flood from many addresses (many pods) cannot lock a scraper out: its connection sends
//!   its request at once and is served in about a millisecond, while the flood's own
//!   connections are the ones that wait for headers or for a reader.
//! - **deadlines** (in `serve`): headers within `header_timeout`, no write stalled longer
//!   than `write_timeout`, and no connection older than `lifetime`.
//!
//! Pure bookkeeping: the caller passes the time and carries out the closes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What one connection has done, updated by its task and read by [`Slots::admit`].
#[derive(Debug, Default)]
pub(crate) struct ConnProgress {
    /// Requests whose headers arrived in full.
    pub(crate) requests: AtomicU64,
    /// Milliseconds since the table's epoch at which the pending write began, plus one;
    /// 0 while no write waits for the client to read.
    write_blocked_since: AtomicU64,
    /// The write deadline closed the connection.
    pub(crate) write_timed_out: AtomicBool,
}

impl ConnProgress {
    pub(crate) fn write_blocked(&self, since_epoch: Duration) {
        let ms = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX - 1);
        let _ = self.write_blocked_since.compare_exchange(
            0,
            ms + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    pub(crate) fn write_unblocked(&self) {
        self.write_blocked_since.store(0, Ordering::Relaxed);
    }

    fn blocked_since(&self) -> Option<u64> {
        match self.write_blocked_since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }
}

/// One open connection.
struct Conn {
    peer: IpAddr,
    opened: Instant,
    progress: Arc<ConnProgress>,
    close: Arc<Notify>,
}

/// The answer for a new connection.
pub(crate) enum Admit {
    /// Over the per-peer limit: close it now.
    PeerLimit,
    /// Serve it; `evict` is the connection that had to make room, to be told to close.
    Admitted {
        id: u64,
        progress: Arc<ConnProgress>,
        close: Arc<Notify>,
        evict: Option<Arc<Notify>>,
    },
}

pub(crate) struct Slots {
    max: usize,
    per_peer: usize,
    epoch: Instant,
    next_id: u64,
    conns: BTreeMap<u64, Conn>,
}

impl Slots {
    pub(crate) fn new(max: usize, per_peer: usize) -> Slots {
        Slots {
            max: max.max(1),
            per_peer: per_peer.max(1),
            epoch: Instant::now(),
            next_id: 0,
            conns: BTreeMap::new(),
        }
    }

    /// Time since the table was made, the scale of [`ConnProgress::write_blocked`].
    pub(crate) fn since_epoch(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }

    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    pub(crate) fn open(&self) -> usize {
        self.conns.len()
    }

    /// Takes a new connection from `peer` at `now`.
    pub(crate) fn admit(&mut self, peer: IpAddr, now: Instant) -> Admit {
        let peer = canonical(peer);
        if self.conns.values().filter(|c| c.peer == peer).count() >= self.per_peer {
            return Admit::PeerLimit;
        }
        let evict = if self.conns.len() >= self.max {
            let epoch_now = self.since_epoch(now);
            let candidates: Vec<EvictionCandidate> = self
                .conns
                .iter()
                .map(|(id, c)| EvictionCandidate {
                    id: *id,
                    age: now.saturating_duration_since(c.opened),
                    requests: c.progress.requests.load(Ordering::Relaxed),
                    write_blocked_for: c
                        .progress
                        .blocked_since()
                        .map(|ms| epoch_now.saturating_sub(Duration::from_millis(ms))),
                })
                .collect();
            victim(&candidates).and_then(|id| self.conns.remove(&id).map(|c| c.close))
        } else {
            None
        };
        let id = self.next_id;
        self.next_id += 1;
        let progress = Arc::new(ConnProgress::default());
        let close = Arc::new(Notify::new());
        self.conns.insert(
            id,
            Conn {
                peer,
                opened: now,
                progress: progress.clone(),
                close: close.clone(),
            },
        );
        Admit::Admitted {
            id,
            progress,
            close,
            evict,
        }
    }

    /// The connection ended (or was evicted: then it is already gone).
    pub(crate) fn release(&mut self, id: u64) {
        self.conns.remove(&id);
    }
}

/// `::ffff:10.0.0.1` and `10.0.0.1` are one peer.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What the eviction choice looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EvictionCandidate {
    pub(crate) id: u64,
    pub(crate) age: Duration,
    pub(crate) requests: u64,
    /// How long its pending write has waited for the client to read.
    pub(crate) write_blocked_for: Option<Duration>,
}

/// Which connection gives up its slot: first one that never sent a whole request
/// (slowloris), the oldest of them; else the one whose write has waited longest for a
/// reader; else the oldest (an idle keep-alive). A connection being served right now
/// sent its request and writes without waiting, so it comes last.
pub(crate) fn victim(c: &[EvictionCandidate]) -> Option<u64> {
    let never_asked = c.iter().filter(|c| c.requests == 0).max_by_key(|c| c.age);
    let stalled = c
        .iter()
        .filter_map(|c| c.write_blocked_for.map(|w| (w, c)))
        .max_by_key(|(w, _)| *w)
        .map(|(_, c)| c);
    never_asked
        .or(stalled)
        .or_else(|| c.iter().max_by_key(|c| c.age))
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn admitted(a: Admit) -> (u64, Arc<ConnProgress>, Option<Arc<Notify>>) {
        match a {
            Admit::Admitted {
                id,
                progress,
                evict,
                ..
            } => (id, progress, evict),
            Admit::PeerLimit => panic!("refused"),
        }
    }

    #[test]
    fn a_peer_over_its_limit_is_refused_while_another_peer_is_taken() {
        let mut s = Slots::new(32, 2);
        let t = Instant::now();
        admitted(s.admit(ip(1), t));
        admitted(s.admit(ip(1), t));
        assert!(matches!(s.admit(ip(1), t), Admit::PeerLimit));
        // IPv4-mapped IPv6 is the same peer.
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(matches!(s.admit(mapped, t), Admit::PeerLimit));
        let (_, _, evict) = admitted(s.admit(ip(2), t));
        assert!(evict.is_none());
        assert_eq!(s.open(), 3);
    }

    #[test]
    fn a_full_table_takes_the_newcomer_and_closes_one_that_never_sent_a_request() {
        let mut s = Slots::new(3, 4);
        let t0 = Instant::now();
        let (a, pa, _) = admitted(s.admit(ip(1), t0));
        let (b, _, _) = admitted(s.admit(ip(2), t0 + Duration::from_secs(1)));
        let (_c, pc, _) = admitted(s.admit(ip(3), t0 + Duration::from_secs(2)));
        pa.requests.store(1, Ordering::Relaxed);
        pc.requests.store(1, Ordering::Relaxed);
        let (_, _, evict) = admitted(s.admit(ip(4), t0 + Duration::from_secs(3)));
        assert!(evict.is_some(), "full: someone must go");
        assert_eq!(s.open(), 3);
        // b (never sent a request) went, a (older but served) stayed.
        assert!(s.conns.contains_key(&a) && !s.conns.contains_key(&b));
    }

    #[test]
    fn victims_are_slowloris_first_then_the_longest_stalled_writer_then_the_oldest() {
        let c = |id, age, requests, blocked: Option<u64>| EvictionCandidate {
            id,
            age: Duration::from_secs(age),
            requests,
            write_blocked_for: blocked.map(Duration::from_secs),
        };
        assert_eq!(
            victim(&[
                c(1, 50, 3, Some(9)),
                c(2, 5, 0, None),
                c(3, 9, 0, None),
                c(4, 60, 1, None)
            ]),
            Some(3)
        );
        assert_eq!(
            victim(&[c(1, 50, 3, Some(2)), c(2, 5, 1, Some(4)), c(4, 60, 1, None)]),
            Some(2)
        );
        assert_eq!(
            victim(&[c(1, 50, 3, None), c(4, 60, 1, None), c(5, 1, 1, None)]),
            Some(4)
        );
        assert_eq!(victim(&[]), None);
    }

    #[test]
    fn write_blocked_keeps_the_first_start_until_unblocked() {
        let p = ConnProgress::default();
        assert_eq!(p.blocked_since(), None);
        p.write_blocked(Duration::from_millis(0));
        p.write_blocked(Duration::from_millis(500));
        assert_eq!(p.blocked_since(), Some(0));
        p.write_unblocked();
        p.write_blocked(Duration::from_millis(700));
        assert_eq!(p.blocked_since(), Some(700));
    }
}
