//! Quantiles of a Prometheus histogram over a sliding window, from the deltas of its
//! cumulative bucket counters, the way `histogram_quantile(0.99, rate(x_bucket[5m]))` does.
//!
//! Counters only grow while the process lives. A bucket that shrinks means etcd (k3s)
//! restarted and its counters began again: the difference with an older snapshot would be
//! negative garbage, so a reset (or a changed bucket layout) empties the window and it
//! starts again from the new snapshot. Until the window holds two snapshots there is no
//! quantile: "unknown", not "fast".

use std::collections::VecDeque;
use std::time::Duration;

use super::etcd_text::Histogram;

/// What [`HistogramWindow::push`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Appended,
    /// The counters went backwards or the buckets changed: the window starts again.
    Reset,
}

#[derive(Clone, Debug)]
pub(crate) struct HistogramWindow {
    span: Duration,
    /// (monotonic time, snapshot), oldest first. Holds one snapshot at or before
    /// `newest - span` as the baseline, and everything after it.
    snaps: VecDeque<(Duration, Histogram)>,
    pub(crate) resets: u64,
}

impl HistogramWindow {
    pub(crate) fn new(span: Duration) -> Self {
        HistogramWindow {
            span,
            snaps: VecDeque::new(),
            resets: 0,
        }
    }

    pub(crate) fn push(&mut self, at: Duration, h: Histogram) -> Pushed {
        let reset = self.snaps.back().is_some_and(|(t, prev)| {
            at < *t
                || prev.buckets.len() != h.buckets.len()
                || prev
                    .buckets
                    .iter()
                    .zip(&h.buckets)
                    .any(|(p, n)| p.0 != n.0 || n.1 < p.1)
        });
        if reset {
            self.snaps.clear();
            self.resets += 1;
        } else if self
            .snaps
            .back()
            .is_some_and(|(t, _)| at.saturating_sub(*t) > self.span)
        {
            // A gap longer than the window (etcd unreachable): a delta across it would
            // speak of the gap, not of the last window.
            self.snaps.clear();
        }
        self.snaps.push_back((at, h));
        // Keep exactly one snapshot at or before the window's start as the baseline.
        let start = at.saturating_sub(self.span);
        while self.snaps.len() > 2 && self.snaps[1].0 <= start {
            self.snaps.pop_front();
        }
        if reset {
            Pushed::Reset
        } else {
            Pushed::Appended
        }
    }

    /// The time the current quantile covers (newest minus baseline).
    #[cfg(test)]
    pub(crate) fn covered(&self) -> Duration {
        match (self.snaps.front(), self.snaps.back()) {
            (Some(a), Some(b)) => b.0.saturating_sub(a.0),
            _ => Duration::ZERO,
        }
    }

    /// The `q` quantile (0-1) of the observations made in the window, in the histogram's
    /// unit. None with fewer than two snapshots or no observation in between.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let (first, last) = (&self.snaps.front()?.1, &self.snaps.back()?.1);
        if self.snaps.len() < 2 {
            return None;
        }
        let delta: Vec<(f64, f64)> = last
            .buckets
            .iter()
            .zip(&first.buckets)
            .map(|(n, o)| (n.0, n.1 - o.1))
            .collect();
        quantile(q, &delta)
    }
}

/// Prometheus's `histogram_quantile` on cumulative `(le, count)` buckets: the bucket the
/// rank falls in, linearly interpolated between its bounds (the lowest bucket from 0); a
/// rank in the `+Inf` bucket answers the highest finite bound, as Prometheus does.
pub(crate) fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|b| b.1 >= rank)?;
    let (le, count) = buckets[i];
    if le == f64::INFINITY {
        return Some(if i == 0 { 0.0 } else { buckets[i - 1].0 });
    }
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(le);
    }
    Some(lower + (le - lower) * (rank - below) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(counts: &[f64]) -> Histogram {
        let les = [0.008, 0.016, 0.032, 0.064, 0.128, 0.256, f64::INFINITY];
        Histogram {
            buckets: les.iter().copied().zip(counts.iter().copied()).collect(),
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn quantile_interpolates_inside_the_bucket_like_prometheus() {
        // 100 observations: 90 under 8 ms, 10 between 128 and 256 ms.
        let b = [
            (0.008, 90.0),
            (0.016, 90.0),
            (0.128, 90.0),
            (0.256, 100.0),
            (f64::INFINITY, 100.0),
        ];
        // rank 99 is the 9th of 10 in (0.128, 0.256]: 0.128 + 0.128 * 9/10.
        let p99 = quantile(0.99, &b).unwrap();
        assert!((p99 - 0.2432).abs() < 1e-9, "{p99}");
        let p50 = quantile(0.5, &b).unwrap();
        assert!((p50 - 0.008 * 50.0 / 90.0).abs() < 1e-9, "{p50}");
        // Everything beyond the last finite bound: the bound, as Prometheus answers.
        assert_eq!(
            quantile(0.99, &[(0.5, 0.0), (f64::INFINITY, 4.0)]),
            Some(0.5)
        );
        assert_eq!(quantile(0.99, &[(0.5, 0.0), (f64::INFINITY, 0.0)]), None);
    }

    #[test]
    fn the_window_uses_only_the_last_span_of_observations() {
        let mut w = HistogramWindow::new(300 * S);
        // First 10 minutes: all fast.
        w.push(Duration::ZERO, h(&[0., 0., 0., 0., 0., 0., 0.]));
        assert_eq!(w.quantile(0.99), None, "one snapshot is no window");
        w.push(
            300 * S,
            h(&[1000., 1000., 1000., 1000., 1000., 1000., 1000.]),
        );
        assert!(w.quantile(0.99).unwrap() < 0.008);
        // Then 100 slow fsyncs (128-256 ms) in the next 5 minutes.
        w.push(
            600 * S,
            h(&[1000., 1000., 1000., 1000., 1000., 1100., 1100.]),
        );
        let p = w.quantile(0.99).unwrap();
        assert!(p > 0.128 && p <= 0.256, "{p}");
        assert_eq!(w.covered(), 300 * S);
        // Five quiet-but-fast minutes later the slow ones have left the window.
        w.push(
            900 * S,
            h(&[2000., 2000., 2000., 2000., 2000., 2100., 2100.]),
        );
        assert!(w.quantile(0.99).unwrap() < 0.008);
    }

    #[test]
    fn a_counter_reset_restarts_the_window_instead_of_giving_garbage() {
        let mut w = HistogramWindow::new(300 * S);
        w.push(
            Duration::ZERO,
            h(&[5000., 5000., 5000., 5000., 5000., 5000., 5000.]),
        );
        w.push(
            30 * S,
            h(&[5100., 5100., 5100., 5100., 5100., 5100., 5100.]),
        );
        assert!(w.quantile(0.99).is_some());
        // k3s restarted: the counters start again from small numbers.
        assert_eq!(
            w.push(60 * S, h(&[3., 3., 3., 3., 3., 3., 3.])),
            Pushed::Reset
        );
        assert_eq!(w.resets, 1);
        assert_eq!(w.quantile(0.99), None, "a single snapshot after the reset");
        w.push(90 * S, h(&[50., 50., 50., 50., 50., 50., 50.]));
        // Only the observations since the reset count; all under 8 ms.
        assert!(w.quantile(0.99).unwrap() < 0.008);
        // A changed bucket layout is a reset too.
        let other = Histogram {
            buckets: vec![(0.1, 70.0), (f64::INFINITY, 70.0)],
        };
        assert_eq!(w.push(120 * S, other), Pushed::Reset);
    }

    #[test]
    fn a_gap_longer_than_the_window_starts_it_again() {
        let mut w = HistogramWindow::new(300 * S);
        w.push(Duration::ZERO, h(&[0., 0., 0., 0., 0., 0., 0.]));
        w.push(30 * S, h(&[0., 0., 0., 0., 0., 100., 100.]));
        assert!(w.quantile(0.99).unwrap() > 0.128);
        assert_eq!(
            w.push(1000 * S, h(&[900., 900., 900., 900., 900., 1000., 1000.])),
            Pushed::Appended
        );
        assert_eq!(w.quantile(0.99), None, "nothing spans the gap");
        assert_eq!(w.resets, 0, "a gap is not a counter reset");
    }

    #[test]
    fn no_observation_in_the_window_means_no_quantile() {
        let mut w = HistogramWindow::new(300 * S);
        w.push(Duration::ZERO, h(&[7., 7., 7., 7., 7., 7., 7.]));
        w.push(30 * S, h(&[7., 7., 7., 7., 7., 7., 7.]));
        assert_eq!(w.quantile(0.99), None);
    }
}
