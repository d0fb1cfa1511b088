//! kine's `Slow SQL` lines, and how many fell within the window. Pure.
//!
//! kine (k3s's sqlite shim) logs every query slower than 500 ms at info level as
//! `Slow SQL (started: <time>) (total time: <duration>): <query> : <args>` (kine
//! pkg/drivers/generic); in k3s's journal it is logrus's `msg="Slow SQL (started: ..."`.
//! The match wants both parenthesised parts, so a query text that merely contains the
//! words does not count.

use std::collections::VecDeque;
use std::time::Duration;

use crate::model::{Condition, ConditionKind};

/// True for a kine slow-query line, in any of the shapes journald hands over.
pub(crate) fn is_slow_sql(line: &str) -> bool {
    line.find("Slow SQL (started: ")
        .is_some_and(|i| line[i..].contains(") (total time: "))
}

/// The `total time` of a slow-query line, as kine printed it (Go duration text).
pub(crate) fn total_time(line: &str) -> Option<&str> {
    let i = line.find("(total time: ")? + "(total time: ".len();
    let rest = &line[i..];
    rest.find(')').map(|j| &rest[..j])
}

pub(crate) struct SlowSqlWindow {
    window: Duration,
    raise_at: u32,
    seen: VecDeque<Duration>,
    last_total: Option<String>,
}

impl SlowSqlWindow {
    pub(crate) fn new(window: Duration, raise_at: u32) -> Self {
        SlowSqlWindow {
            window,
            raise_at,
            seen: VecDeque::new(),
            last_total: None,
        }
    }

    /// Records the slow-query lines among `lines`, read at monotonic `now`; returns how
    /// many there were.
    pub(crate) fn record<'a>(
        &mut self,
        now: Duration,
        lines: impl IntoIterator<Item = &'a str>,
    ) -> u64 {
        let mut n = 0;
        for l in lines.into_iter().filter(|l| is_slow_sql(l)) {
            self.seen.push_back(now);
            self.last_total = total_time(l).map(String::from);
            n += 1;
        }
        // Never more than needed to judge: a flood must not grow memory.
        while self.seen.len() > self.raise_at as usize * 4 + 16 {
            self.seen.pop_front();
        }
        n
    }

    /// Lines within the window ending at `now`, and the condition they call for.
    pub(crate) fn judge(&mut self, now: Duration) -> (u32, Option<Condition>) {
        let start = now.saturating_sub(self.window);
        while self.seen.front().is_some_and(|t| *t < start) {
            self.seen.pop_front();
        }
        let n = self.seen.len() as u32;
        let c = (n >= self.raise_at).then(|| {
            Condition::new(
                ConditionKind::KineSlowSql,
                "",
                "SlowSQL",
                format!(
                    "kine logged {n} `Slow SQL` lines in the last {} (each query over 500 ms{}): the API server waits on \
                     sqlite, usually an SD card; move /var/lib/rancher/k3s/server/db to faster storage, or to etcd",
                    crate::config::ConfigDuration(self.window),
                    self.last_total
                        .as_ref()
                        .map(|t| format!("; the last took {t}"))
                        .unwrap_or_default()
                ),
            )
        });
        (n, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOURNAL: &str = r#"time="2025-03-02T10:00:01Z" level=info msg="Slow SQL (started: 2025-03-02 10:00:00.123456789 +0000 UTC m=+1234.5) (total time: 1.234567s): SELECT * FROM ( SELECT ... ) : [[/registry/leases/kube-system/k3s 0 0 1]]""#;

    #[test]
    fn kine_lines_match_in_every_shape_and_lookalikes_do_not() {
        assert!(is_slow_sql(JOURNAL));
        assert_eq!(total_time(JOURNAL), Some("1.234567s"));
        assert!(is_slow_sql(
            "Slow SQL (started: 2025-03-02 10:00:00 +0000 UTC) (total time: 612ms): INSERT INTO kine ..."
        ));
        for no in [
            "msg=\"Slow SQL\"",
            "level=info msg=\"creating Slow SQL (started: dashboard\"",
            "Slow SQL started: x total time: 1s",
            "",
        ] {
            assert!(!is_slow_sql(no), "{no}");
        }
    }

    #[test]
    fn ten_lines_in_two_minutes_raise_and_the_window_lets_them_go() {
        let mut w = SlowSqlWindow::new(Duration::from_secs(120), 10);
        let s = Duration::from_secs;
        for i in 0..9 {
            assert_eq!(
                w.record(s(i * 10), [JOURNAL, "level=info msg=\"other\""]),
                1
            );
        }
        assert_eq!(w.judge(s(90)).0, 9);
        assert!(w.judge(s(90)).1.is_none());
        w.record(s(100), [JOURNAL]);
        let (n, c) = w.judge(s(100));
        assert_eq!(n, 10);
        let c = c.unwrap();
        assert_eq!(c.kind, ConditionKind::KineSlowSql);
        assert!(c.message.contains("1.234567s"), "{}", c.message);
        // Two minutes after the first ones, they have left the window.
        assert!(w.judge(s(121)).1.is_none());
    }

    #[test]
    fn a_flood_keeps_memory_bounded() {
        let mut w = SlowSqlWindow::new(Duration::from_secs(120), 10);
        w.record(Duration::ZERO, std::iter::repeat_n(JOURNAL, 100_000));
        assert!(w.seen.len() <= 56);
        assert!(w.judge(Duration::ZERO).1.is_some());
    }
}
