//! Node Events: de-duplicated, rate-limited, bounded, and safe to retry.
//!
//! An RCU stall can repeat dozens of times an hour. Like client-go's event correlator, an
//! identical event (same type, reason and message) within [`DEDUP_WINDOW`] bumps `count`
//! and `lastTimestamp` of the existing Event instead of creating another, and new Events
//! pass a token bucket. Occurrences only change this in-memory log; writes happen when the
//! caller flushes [`EventLog::pending`], so while the API is down repeats coalesce into
//! one write with the final count, and a create that reached the API but whose answer was
//! lost is retried under the same name (409, not a duplicate).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::api::{EventType, NodeEvent};

/// kube-apiserver keeps Events for one hour (`--event-ttl` default); a repeat after that
/// starts a new Event instead of bumping one the API has already deleted.
pub(crate) const DEDUP_WINDOW: Duration = Duration::from_secs(3600);

/// client-go's spam filter: a burst of 25 new Events per source and object...
pub(crate) const BURST: u32 = 25;
/// ...then one more every 5 minutes.
pub(crate) const REFILL_EVERY: Duration = Duration::from_secs(300);

/// Distinct Events remembered; bounds memory while the API is down for days.
pub(crate) const MAX_TRACKED: usize = 64;

/// An occurrence to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventDraft {
    pub(crate) type_: EventType,
    /// CamelCase, e.g. `RCUStall`, `Cordoned`, `RebootLockAcquired`.
    pub(crate) reason: String,
    pub(crate) message: String,
}

impl EventDraft {
    pub fn new(type_: EventType, reason: impl Into<String>, message: impl Into<String>) -> Self {
        EventDraft {
            type_,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// What [`EventLog::record`] did with an occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    New {
        name: String,
    },
    Repeat {
        name: String,
        count: u32,
    },
    /// Over the rate limit: counted, not sent.
    RateLimited,
    /// Every tracked Event still waits to be written: counted, not sent.
    Full,
}

/// One write the caller should make.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PendingWrite {
    pub(crate) event: NodeEvent,
    /// Create (first write) or update the count of an existing Event.
    pub(crate) create: bool,
}

#[derive(Clone, Debug)]
struct Tracked {
    event: NodeEvent,
    created: bool,
    written_count: u32,
    last_mono: Duration,
}

impl Tracked {
    fn dirty(&self) -> bool {
        !self.created || self.written_count != self.event.count
    }
}

#[derive(Clone, Debug)]
pub(crate) struct EventLog {
    node: String,
    tracked: Vec<Tracked>,
    tokens: u32,
    refilled_at: Duration,
    seq: u64,
    dropped: u64,
}

impl EventLog {
    pub fn new(node: impl Into<String>, now_mono: Duration) -> Self {
        EventLog {
            node: node.into(),
            tracked: Vec::new(),
            tokens: BURST,
            refilled_at: now_mono,
            seq: 0,
            dropped: 0,
        }
    }

    pub(crate) fn record(
        &mut self,
        draft: EventDraft,
        wall: SystemTime,
        mono: Duration,
    ) -> Recorded {
        self.refill(mono);
        let same = |t: &Tracked| {
            t.event.type_ == draft.type_
                && t.event.reason == draft.reason
                && t.event.message == draft.message
        };
        if let Some(i) = self.tracked.iter().position(same) {
            let t = &mut self.tracked[i];
            if t.dirty() || mono.saturating_sub(t.last_mono) < DEDUP_WINDOW {
                t.event.count = t.event.count.saturating_add(1);
                t.event.last = wall;
                t.last_mono = mono;
                return Recorded::Repeat {
                    name: t.event.name.clone(),
                    count: t.event.count,
                };
            }
            self.tracked.remove(i);
        }
        if self.tokens == 0 {
            self.dropped += 1;
            return Recorded::RateLimited;
        }
        if self.tracked.len() >= MAX_TRACKED {
            match self.tracked.iter().position(|t| !t.dirty()) {
                Some(oldest_clean) => {
                    self.tracked.remove(oldest_clean);
                }
                None => {
                    self.dropped += 1;
                    return Recorded::Full;
                }
            }
        }
        self.tokens -= 1;
        self.seq += 1;
        let name = event_name(&self.node, wall, self.seq);
        self.tracked.push(Tracked {
            event: NodeEvent {
                name: name.clone(),
                node: self.node.clone(),
                type_: draft.type_,
                reason: draft.reason,
                message: draft.message,
                count: 1,
                first: wall,
                last: wall,
            },
            created: false,
            written_count: 0,
            last_mono: mono,
        });
        Recorded::New { name }
    }

    /// Writes still owed to the API, oldest first.
    pub(crate) fn pending(&self) -> Vec<PendingWrite> {
        self.tracked
            .iter()
            .filter(|t| t.dirty())
            .map(|t| PendingWrite {
                event: t.event.clone(),
                create: !t.created,
            })
            .collect()
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.tracked.iter().filter(|t| t.dirty()).count()
    }

    /// The API accepted the Event `name` with `count`.
    pub(crate) fn written(&mut self, name: &str, count: u32) {
        if let Some(t) = self.find(name) {
            t.created = true;
            t.written_count = count;
        }
    }

    /// A create answered 409: an earlier attempt did reach the API. Its count may be
    /// stale, so the next flush updates it.
    pub(crate) fn already_exists(&mut self, name: &str) {
        if let Some(t) = self.find(name) {
            t.created = true;
            t.written_count = 0;
        }
    }

    /// An update answered 404: the API expired the Event; create it again.
    pub(crate) fn missing(&mut self, name: &str) {
        if let Some(t) = self.find(name) {
            t.created = false;
        }
    }

    /// Occurrences not sent because of the rate limit or the bound.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    fn find(&mut self, name: &str) -> Option<&mut Tracked> {
        self.tracked.iter_mut().find(|t| t.event.name == name)
    }

    fn refill(&mut self, mono: Duration) {
        let elapsed = mono.saturating_sub(self.refilled_at);
        let add = (elapsed.as_secs() / REFILL_EVERY.as_secs()) as u32;
        if add > 0 {
            self.tokens = self.tokens.saturating_add(add).min(BURST);
            self.refilled_at += REFILL_EVERY * add;
        }
        if self.tokens == BURST {
            self.refilled_at = mono;
        }
    }
}

/// `<node>.<hex>` as client-go names Events, made unique within this process by `seq`.
fn event_name(node: &str, wall: SystemTime, seq: u64) -> String {
    let nanos = wall
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{node}.{:x}", nanos.wrapping_add(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_000_000 + s)
    }
    fn mono(s: u64) -> Duration {
        Duration::from_secs(s)
    }
    fn stall() -> EventDraft {
        EventDraft::new(
            EventType::Warning,
            "RCUStall",
            "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P812 } 22 jiffies",
        )
    }

    #[test]
    fn a_first_occurrence_becomes_one_create_with_count_one() {
        let mut log = EventLog::new("pi5", mono(0));
        let Recorded::New { name } = log.record(stall(), wall(10), mono(10)) else {
            panic!()
        };
        assert!(name.starts_with("pi5."), "{name}");
        let p = log.pending();
        assert_eq!(p.len(), 1);
        assert!(p[0].create);
        let e = &p[0].event;
        assert_eq!(
            (e.node.as_str(), e.type_, e.count),
            ("pi5", EventType::Warning, 1)
        );
        assert_eq!(e.reason, "RCUStall");
        assert!(e.message.contains("{ P812 } 22 jiffies"));
        assert_eq!((e.first, e.last), (wall(10), wall(10)));
    }

    #[test]
    fn repeats_while_unwritten_coalesce_into_one_create() {
        let mut log = EventLog::new("pi5", mono(0));
        for s in 0..5 {
            log.record(stall(), wall(s), mono(s));
        }
        let p = log.pending();
        assert_eq!(p.len(), 1);
        assert!(p[0].create);
        assert_eq!(p[0].event.count, 5);
        assert_eq!((p[0].event.first, p[0].event.last), (wall(0), wall(4)));
    }

    #[test]
    fn a_repeat_after_a_write_becomes_an_update_of_the_same_event() {
        let mut log = EventLog::new("pi5", mono(0));
        let Recorded::New { name } = log.record(stall(), wall(0), mono(0)) else {
            panic!()
        };
        log.written(&name, 1);
        assert!(log.pending().is_empty());
        assert_eq!(
            log.record(stall(), wall(30), mono(30)),
            Recorded::Repeat {
                name: name.clone(),
                count: 2
            }
        );
        let p = log.pending();
        assert_eq!((p.len(), p[0].create, p[0].event.count), (1, false, 2));
        assert_eq!(p[0].event.name, name);
        assert_eq!(p[0].event.first, wall(0), "firstTimestamp is kept");
    }

    #[test]
    fn different_messages_are_different_events() {
        let mut log = EventLog::new("pi5", mono(0));
        log.record(stall(), wall(0), mono(0));
        log.record(
            EventDraft::new(
                EventType::Warning,
                "RCUStall",
                "rcu: INFO: rcu_sched self-detected stall on CPU",
            ),
            wall(1),
            mono(1),
        );
        log.record(
            EventDraft::new(EventType::Normal, "RCUStall", stall().message),
            wall(2),
            mono(2),
        );
        let names: Vec<_> = log.pending().into_iter().map(|p| p.event.name).collect();
        assert_eq!(names.len(), 3);
        assert!(names[0] != names[1] && names[1] != names[2]);
    }

    #[test]
    fn a_repeat_after_the_api_expired_the_event_starts_a_new_one() {
        let mut log = EventLog::new("pi5", mono(0));
        let Recorded::New { name: first } = log.record(stall(), wall(0), mono(0)) else {
            panic!()
        };
        log.written(&first, 1);
        let Recorded::New { name: second } = log.record(stall(), wall(3601), mono(3601)) else {
            panic!()
        };
        assert_ne!(first, second);
    }

    #[test]
    fn new_events_beyond_the_burst_are_rate_limited_until_tokens_refill() {
        let mut log = EventLog::new("pi5", mono(0));
        for i in 0..BURST {
            let d = EventDraft::new(
                EventType::Normal,
                "MountProbe",
                format!("/mnt/m{i} answered"),
            );
            assert!(matches!(
                log.record(d, wall(0), mono(0)),
                Recorded::New { .. }
            ));
            let name = log.pending().last().unwrap().event.name.clone();
            log.written(&name, 1);
        }
        let extra = EventDraft::new(EventType::Normal, "MountProbe", "/mnt/late answered");
        assert_eq!(
            log.record(extra.clone(), wall(1), mono(1)),
            Recorded::RateLimited
        );
        assert_eq!(log.dropped(), 1);
        let again = EventDraft::new(EventType::Normal, "MountProbe", "/mnt/m0 answered");
        assert!(
            matches!(
                log.record(again, wall(2), mono(2)),
                Recorded::Repeat { count: 2, .. }
            ),
            "repeats of tracked events stay free"
        );
        assert!(matches!(
            log.record(extra, wall(301), mono(301)),
            Recorded::New { .. }
        ));
    }

    #[test]
    fn the_log_is_bounded_and_keeps_unwritten_events() {
        let mut log = EventLog::new("pi5", mono(0));
        let mut t = 0;
        let mut accepted = 0;
        for i in 0..(MAX_TRACKED + 10) {
            t += 300; // one token per event
            let d = EventDraft::new(
                EventType::Warning,
                "MountHung",
                format!("/mnt/n{i} blocked"),
            );
            if matches!(log.record(d, wall(t), mono(t)), Recorded::New { .. }) {
                accepted += 1;
            }
        }
        assert_eq!(accepted, MAX_TRACKED);
        assert_eq!(log.pending_count(), MAX_TRACKED);
        assert_eq!(log.dropped(), 10);
        // Once written, old entries make room.
        for p in log.pending() {
            log.written(&p.event.name, p.event.count);
        }
        let d = EventDraft::new(EventType::Warning, "MountHung", "/mnt/fresh blocked");
        assert!(matches!(
            log.record(d, wall(t + 300), mono(t + 300)),
            Recorded::New { .. }
        ));
    }

    #[test]
    fn a_create_that_already_happened_turns_into_a_count_update() {
        let mut log = EventLog::new("pi5", mono(0));
        let Recorded::New { name } = log.record(stall(), wall(0), mono(0)) else {
            panic!()
        };
        log.already_exists(&name);
        let p = log.pending();
        assert_eq!((p.len(), p[0].create), (1, false));
        log.written(&name, 1);
        assert!(log.pending().is_empty());
        log.record(stall(), wall(5), mono(5));
        log.missing(&name);
        let p = log.pending();
        assert!(p[0].create && p[0].event.count == 2 && p[0].event.name == name);
    }
}
