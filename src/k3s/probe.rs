//! Liveness probes that cannot hang the detector, with the mount prober's discipline:
//!
//! - each probe runs on its own short-lived thread, never on the detector's;
//! - the detector waits at most the probe's deadline, then counts it as failed (`Stuck`)
//!   and walks away;
//! - a probe still out is never joined by a second one of the same kind: while it runs,
//!   every pass reports it `Stuck` with how long it has been out, and when it finally
//!   returns its answer is what the next pass sees. At most one thread per probe exists.
//!
//! The probes themselves ([`LivenessProbe`]) are given the deadline and are expected to
//! keep it (socket timeouts); the runner does not rely on that.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What one probe call found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "answer", content = "detail")]
pub enum ProbeAnswer {
    /// Healthy; the detail is what answered ("HTTP 200 ok").
    Ok(String),
    /// Nothing listens (ECONNREFUSED): down, or still starting or already stopping.
    Refused(String),
    /// Answered badly, or failed otherwise (a timeout, a reset, HTTP 500 with reasons).
    Failed(String),
}

/// One liveness check of a k3s component.
pub trait LivenessProbe: Send + Sync {
    /// `kubelet`, `apiserver`, `etcd`: the metric label and the name in messages.
    fn name(&self) -> &'static str;
    /// What is probed, for messages (`http://127.0.0.1:10248/healthz`).
    fn target(&self) -> String;
    /// One check, to finish within `deadline`.
    fn check(&self, deadline: Duration) -> ProbeAnswer;
}

/// A probe round's outcome for one probe, as the detector sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FlightOutcome {
    Answered {
        answer: ProbeAnswer,
        took: Duration,
    },
    /// Out past its deadline, this long so far; no second probe was started.
    Stuck {
        out_for: Duration,
    },
}

/// Extra wait beyond the probe's own deadline, so a probe that times out by itself is
/// reported with its own error rather than raced by the runner.
pub(crate) const RUNNER_GRACE: Duration = Duration::from_millis(250);
/// A probe thread needs little: a socket and a few KiB of buffers (the apiserver probe,
/// TLS on a current-thread runtime, the most).
const PROBE_THREAD_STACK: usize = 512 << 10;

#[derive(Default)]
struct FlightSlot {
    /// Start of the probe in flight, if any.
    running: Option<Instant>,
    /// The last answer not yet collected.
    done: Option<(ProbeAnswer, Duration)>,
}

/// One probe and its single flight.
pub(crate) struct SingleFlight {
    probe: Arc<dyn LivenessProbe>,
    slot: Arc<(Mutex<FlightSlot>, Condvar)>,
    timeout: Duration,
}

impl SingleFlight {
    pub fn new(probe: Arc<dyn LivenessProbe>, timeout: Duration) -> Self {
        SingleFlight {
            probe,
            slot: Arc::default(),
            timeout,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.probe.name()
    }

    pub(crate) fn target(&self) -> String {
        self.probe.target()
    }

    /// Starts a probe unless one is still out (or an answer waits to be collected).
    /// Returns whether a new one started.
    pub(crate) fn start(&self) -> bool {
        let (lock, cv) = &*self.slot;
        let mut s = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if s.running.is_some() || s.done.is_some() {
            return false;
        }
        let started = Instant::now();
        s.running = Some(started);
        drop(s);
        let (probe, slot, timeout) = (self.probe.clone(), self.slot.clone(), self.timeout);
        let spawned = std::thread::Builder::new()
            .name(format!("probe-{}", probe.name()))
            .stack_size(PROBE_THREAD_STACK)
            .spawn(move || {
                let answer =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| probe.check(timeout)))
                        .unwrap_or_else(|_| ProbeAnswer::Failed("the probe panicked".into()));
                let (lock, cv) = &*slot;
                let mut s = lock.lock().unwrap_or_else(PoisonError::into_inner);
                s.running = None;
                s.done = Some((answer, started.elapsed()));
                cv.notify_all();
            });
        if let Err(e) = spawned {
            let mut s = lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.running = None;
            s.done = Some((
                ProbeAnswer::Failed(format!("cannot start a probe thread: {e}")),
                Duration::ZERO,
            ));
            cv.notify_all();
        }
        true
    }

    /// Waits for the answer until the probe's deadline (plus [`RUNNER_GRACE`]) from its
    /// start, and takes it; a probe still out then is `Stuck`. None: no probe was started.
    pub(crate) fn collect(&self) -> Option<FlightOutcome> {
        let (lock, cv) = &*self.slot;
        let mut s = lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some((answer, took)) = s.done.take() {
                return Some(FlightOutcome::Answered { answer, took });
            }
            let started = s.running?;
            let until = started + self.timeout + RUNNER_GRACE;
            let now = Instant::now();
            if now >= until {
                return Some(FlightOutcome::Stuck {
                    out_for: now - started,
                });
            }
            s = cv
                .wait_timeout(s, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
/// A scripted probe: answers from a queue (the last answer repeats), optionally blocking
/// until released, and counts calls (so tests see that nothing is stacked).
pub struct ScriptedProbe {
    pub name: &'static str,
    pub answers: Mutex<std::collections::VecDeque<ProbeAnswer>>,
    pub calls: std::sync::atomic::AtomicU32,
    /// While true, `check` blocks (a wedged endpoint), ignoring its deadline.
    pub hold: Arc<(Mutex<bool>, Condvar)>,
}

#[cfg(any(test, feature = "fakes"))]
impl ScriptedProbe {
    pub fn new(name: &'static str, answers: Vec<ProbeAnswer>) -> Self {
        ScriptedProbe {
            name,
            answers: Mutex::new(answers.into()),
            calls: Default::default(),
            hold: Arc::default(),
        }
    }
    pub fn set_hold(&self, on: bool) {
        let (m, cv) = &*self.hold;
        *m.lock().unwrap() = on;
        cv.notify_all();
    }
}

#[cfg(any(test, feature = "fakes"))]
impl LivenessProbe for ScriptedProbe {
    fn name(&self) -> &'static str {
        self.name
    }
    fn target(&self) -> String {
        format!("scripted {}", self.name)
    }
    fn check(&self, _deadline: Duration) -> ProbeAnswer {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (m, cv) = &*self.hold;
        let mut held = m.lock().unwrap();
        while *held {
            held = cv.wait(held).unwrap();
        }
        drop(held);
        let mut q = self.answers.lock().unwrap();
        if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q.front()
                .cloned()
                .unwrap_or_else(|| ProbeAnswer::Ok("scripted".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn an_answer_within_the_deadline_is_collected_once() {
        let p = Arc::new(ScriptedProbe::new(
            "kubelet",
            vec![ProbeAnswer::Ok("HTTP 200 ok".into())],
        ));
        let f = SingleFlight::new(p.clone(), Duration::from_secs(5));
        assert!(f.collect().is_none(), "nothing started yet");
        assert!(f.start());
        match f.collect().unwrap() {
            FlightOutcome::Answered { answer, .. } => {
                assert_eq!(answer, ProbeAnswer::Ok("HTTP 200 ok".into()))
            }
            o => panic!("{o:?}"),
        }
        assert!(f.collect().is_none(), "taken");
        assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wedged_probe_is_stuck_past_its_deadline_and_never_stacked() {
        let p = Arc::new(ScriptedProbe::new(
            "kubelet",
            vec![ProbeAnswer::Failed("HTTP 500".into())],
        ));
        p.set_hold(true);
        let f = SingleFlight::new(p.clone(), Duration::from_millis(50));
        assert!(f.start());
        let t = Instant::now();
        let first = f.collect().unwrap();
        assert!(matches!(first, FlightOutcome::Stuck { .. }), "{first:?}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the caller walked away"
        );
        // Later passes: still stuck, no second probe.
        for _ in 0..3 {
            assert!(!f.start(), "a probe is still out");
            match f.collect().unwrap() {
                FlightOutcome::Stuck { out_for } => {
                    assert!(out_for >= Duration::from_millis(50))
                }
                o => panic!("{o:?}"),
            }
        }
        assert_eq!(p.calls.load(Ordering::SeqCst), 1);
        // Released: its answer is what the next pass collects; then probing resumes.
        p.set_hold(false);
        let end = Instant::now() + Duration::from_secs(10);
        let got = loop {
            if let Some(FlightOutcome::Answered { answer, .. }) = f.collect() {
                break answer;
            }
            assert!(Instant::now() < end);
        };
        assert_eq!(got, ProbeAnswer::Failed("HTTP 500".into()));
        assert!(f.start());
        assert!(matches!(f.collect(), Some(FlightOutcome::Answered { .. })));
        assert_eq!(p.calls.load(Ordering::SeqCst), 2);
    }
}
