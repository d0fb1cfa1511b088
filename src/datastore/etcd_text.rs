//! etcd's `/metrics` text, reduced to the readings the judge needs. Pure: text in,
//! [`EtcdReadings`] out. The text format is parsed by the `prometheus-parse` crate; this
//! file only picks series and checks their shape.
//!
//! Every reading is optional: an etcd of another version, or a scrape cut short, may lack
//! a series, and a missing series is "unknown", never zero.

use std::collections::BTreeSet;

use prometheus_parse::{Scrape, Value};

pub(crate) const WAL_FSYNC: &str = "etcd_disk_wal_fsync_duration_seconds";
pub(crate) const BACKEND_COMMIT: &str = "etcd_disk_backend_commit_duration_seconds";
pub(crate) const LEADER_CHANGES: &str = "etcd_server_leader_changes_seen_total";
pub(crate) const HAS_LEADER: &str = "etcd_server_has_leader";
pub(crate) const DB_SIZE: &str = "etcd_mvcc_db_total_size_in_bytes";
pub(crate) const DB_IN_USE: &str = "etcd_mvcc_db_total_size_in_use_in_bytes";
pub(crate) const QUOTA: &str = "etcd_server_quota_backend_bytes";
/// Gauge, 1 per open connection to a peer (`Remote` label).
pub(crate) const ACTIVE_PEERS: &str = "etcd_network_active_peers";
/// Counters per peer ever talked to since the member started (`To` / `Remote` labels).
const PEER_SENT: &str = "etcd_network_peer_sent_bytes_total";
const DISCONNECTED_PEERS: &str = "etcd_network_disconnected_peers_total";

/// The families read here. etcd's page is 100-300 KB in ~200 families (gRPC, Go runtime,
/// process); only lines of these reach the parser (which builds a map of labels for every
/// sample it sees), so a scrape's transient heap is a few dozen samples, not the whole page
/// (on a 125 KB page of 1,153 lines, 48 reach it, and the daemon's anonymous RSS is
/// ~0.3 MiB lower; BENCHMARKS.md, "Datastore detectors").
const WANTED: [&str; 10] = [
    WAL_FSYNC,
    BACKEND_COMMIT,
    LEADER_CHANGES,
    HAS_LEADER,
    DB_SIZE,
    DB_IN_USE,
    QUOTA,
    ACTIVE_PEERS,
    PEER_SENT,
    DISCONNECTED_PEERS,
];

/// Whether a line of the text format belongs to a [`WANTED`] family: its `# HELP` /
/// `# TYPE` line, a sample, or a histogram's `_bucket` / `_sum` / `_count` sample.
fn wanted(line: &str) -> bool {
    let name = match line.strip_prefix('#') {
        Some(rest) => {
            let mut w = rest.split_whitespace();
            match w.next() {
                Some("HELP" | "TYPE") => w.next().unwrap_or(""),
                _ => return false,
            }
        }
        None => line
            .split(|c: char| c == '{' || c.is_whitespace())
            .next()
            .unwrap_or(""),
    };
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    WANTED.contains(&name) || WANTED.contains(&base)
}

/// A cumulative histogram: `(le, count)` sorted by `le`, the last bucket `+Inf`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Histogram {
    pub(crate) buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Observations in total (the `+Inf` bucket).
    #[cfg(test)]
    pub(crate) fn total(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    /// Checks the shape the quantile maths relies on: at least one bucket, `le` strictly
    /// increasing and ending at `+Inf`, counts finite, non-negative and cumulative.
    fn check(&self, name: &str) -> Result<(), String> {
        let b = &self.buckets;
        if b.is_empty() || b.last().is_some_and(|l| l.0 != f64::INFINITY) {
            return Err(format!("{name} has no +Inf bucket"));
        }
        if b.iter().any(|(_, c)| !c.is_finite() || *c < 0.0) {
            return Err(format!("{name} has a negative or non-finite bucket count"));
        }
        if b.windows(2).any(|w| w[1].0 <= w[0].0 || w[1].1 < w[0].1) {
            return Err(format!("{name}'s buckets are not cumulative"));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct EtcdReadings {
    pub(crate) wal_fsync: Option<Histogram>,
    pub(crate) backend_commit: Option<Histogram>,
    pub(crate) leader_changes: Option<f64>,
    pub(crate) has_leader: Option<bool>,
    pub(crate) db_size: Option<f64>,
    pub(crate) db_in_use: Option<f64>,
    pub(crate) quota: Option<f64>,
    /// Other members this one has talked to since it started (None: no peer series at all,
    /// which on etcd 3.4+ means a single-member cluster).
    pub(crate) peers_known: u32,
    pub(crate) peers_active: u32,
    /// Histograms that were present but malformed, with why; they read as missing.
    pub(crate) problems: Vec<String>,
}

impl EtcdReadings {
    /// The series the judge wants and the scrape lacked, for `/status` and `check`.
    pub(crate) fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        let mut miss = |present: bool, name| {
            if !present {
                m.push(name);
            }
        };
        miss(self.wal_fsync.is_some(), WAL_FSYNC);
        miss(self.backend_commit.is_some(), BACKEND_COMMIT);
        miss(self.leader_changes.is_some(), LEADER_CHANGES);
        miss(self.db_size.is_some(), DB_SIZE);
        miss(self.quota.is_some(), QUOTA);
        m
    }
}

/// Parses the text of one scrape. Err only when nothing in it is a metric (an HTML error
/// page, a truncated body): a scrape with some series missing is still a scrape.
pub(crate) fn parse(text: &str) -> Result<EtcdReadings, String> {
    let read = |keep: fn(&str) -> bool| {
        Scrape::parse(text.lines().filter(|l| keep(l)).map(|l| Ok(l.to_string())))
            .map_err(|e| format!("cannot read the metrics text: {e}"))
    };
    let scrape = read(wanted)?;
    // None of the wanted families: a page of other metrics (every series missing) or not
    // a metrics page at all; only this rare case parses the whole text to tell which.
    if scrape.samples.is_empty() && read(|_| true)?.samples.is_empty() {
        return Err(format!(
            "no metric samples in {} bytes of response (not a Prometheus text page?)",
            text.len()
        ));
    }
    let mut r = EtcdReadings::default();
    let mut known = BTreeSet::new();
    let mut active = BTreeSet::new();
    for s in &scrape.samples {
        let scalar = match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        };
        match (s.metric.as_str(), scalar) {
            (LEADER_CHANGES, Some(v)) => r.leader_changes = Some(v),
            (HAS_LEADER, Some(v)) => r.has_leader = Some(v >= 1.0),
            (DB_SIZE, Some(v)) => r.db_size = Some(v),
            (DB_IN_USE, Some(v)) => r.db_in_use = Some(v),
            (QUOTA, Some(v)) => r.quota = Some(v),
            (ACTIVE_PEERS, Some(v)) => {
                if let Some(p) = s.labels.get("Remote") {
                    known.insert(p.to_string());
                    if v >= 1.0 {
                        active.insert(p.to_string());
                    }
                }
            }
            (PEER_SENT, _) => {
                if let Some(p) = s.labels.get("To") {
                    known.insert(p.to_string());
                }
            }
            (DISCONNECTED_PEERS, _) => {
                if let Some(p) = s.labels.get("Remote") {
                    known.insert(p.to_string());
                }
            }
            _ => {}
        }
    }
    r.peers_known = known.len() as u32;
    r.peers_active = active.len() as u32;
    for (name, slot) in [
        (WAL_FSYNC, &mut r.wal_fsync),
        (BACKEND_COMMIT, &mut r.backend_commit),
    ] {
        match histogram(&scrape, name) {
            Ok(h) => *slot = h,
            Err(e) => r.problems.push(e),
        }
    }
    Ok(r)
}

/// The histogram `name`, summed over label sets (etcd has one; a relabelled exporter may
/// split it). Buckets come typed (`# TYPE ... histogram`) or, without a TYPE line, as
/// untyped `name_bucket{le=...}` samples.
fn histogram(scrape: &Scrape, name: &str) -> Result<Option<Histogram>, String> {
    let mut sum: Vec<(f64, f64)> = Vec::new();
    let mut add = |le: f64, count: f64| match sum.iter_mut().find(|b| b.0 == le) {
        Some(b) => b.1 += count,
        None => sum.push((le, count)),
    };
    let bucket_name = format!("{name}_bucket");
    let mut found = false;
    for s in &scrape.samples {
        match &s.value {
            Value::Histogram(hs) if s.metric == name => {
                found = true;
                for h in hs {
                    add(h.less_than, h.count);
                }
            }
            Value::Untyped(v) | Value::Counter(v) if s.metric == bucket_name => {
                if let Some(le) = s.labels.get("le").and_then(parse_le) {
                    found = true;
                    add(le, *v);
                }
            }
            _ => {}
        }
    }
    if !found {
        return Ok(None);
    }
    sum.sort_by(|a, b| a.0.total_cmp(&b.0));
    let h = Histogram { buckets: sum };
    h.check(name)?;
    Ok(Some(h))
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok().filter(|v: &f64| v.is_finite()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shape of a k3s v1.32 server's etcd page (etcd 3.5), trimmed to the series that
    /// matter plus some that do not. `wal` and `commit` are cumulative bucket counts for
    /// le = 0.001 .. 8.192 (etcd's exponential buckets, 0.001 x 2^i) and +Inf.
    pub(crate) fn page(
        wal: &[u64; 15],
        commit: &[u64; 15],
        leader_changes: u64,
        db: u64,
    ) -> String {
        let mut t = String::new();
        t.push_str("# HELP etcd_cluster_version Which version is running. 1 for 'cluster_version' label with current cluster version\n# TYPE etcd_cluster_version gauge\netcd_cluster_version{cluster_version=\"3.5\"} 1\n");
        for (name, counts) in [(WAL_FSYNC, wal), (BACKEND_COMMIT, commit)] {
            t.push_str(&format!(
                "# HELP {name} The latency distributions.\n# TYPE {name} histogram\n"
            ));
            for (i, c) in counts.iter().enumerate() {
                let le = if i == 14 {
                    "+Inf".to_string()
                } else {
                    format!("{}", 0.001 * f64::from(1u32 << i))
                };
                t.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {c}\n"));
            }
            t.push_str(&format!("{name}_sum 12.5\n{name}_count {}\n", counts[14]));
        }
        t.push_str(&format!("# HELP {LEADER_CHANGES} The number of leader changes seen.\n# TYPE {LEADER_CHANGES} counter\n{LEADER_CHANGES} {leader_changes}\n"));
        t.push_str(&format!("# TYPE {HAS_LEADER} gauge\n{HAS_LEADER} 1\n"));
        t.push_str(&format!("# TYPE {DB_SIZE} gauge\n{DB_SIZE} {db}\n"));
        t.push_str(&format!(
            "# TYPE {DB_IN_USE} gauge\n{DB_IN_USE} {}\n",
            db / 2
        ));
        t.push_str(&format!("# TYPE {QUOTA} gauge\n{QUOTA} 2.147483648e+09\n"));
        t.push_str("# TYPE etcd_network_active_peers gauge\netcd_network_active_peers{Local=\"8e9e05c52164694d\",Remote=\"91bc3c398fb3c146\"} 1\netcd_network_active_peers{Local=\"8e9e05c52164694d\",Remote=\"fd422379fda50e48\"} 0\n");
        t.push_str("# TYPE etcd_network_peer_sent_bytes_total counter\netcd_network_peer_sent_bytes_total{To=\"91bc3c398fb3c146\"} 1.234e+06\netcd_network_peer_sent_bytes_total{To=\"fd422379fda50e48\"} 9000\n");
        t.push_str("# TYPE go_goroutines gauge\ngo_goroutines 187\n");
        t
    }

    pub(crate) const FAST: [u64; 15] = [
        900, 990, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000,
    ];

    #[test]
    fn a_k3s_etcd_page_gives_every_reading() {
        let r = parse(&page(&FAST, &FAST, 2, 104_857_600)).unwrap();
        let wal = r.wal_fsync.as_ref().unwrap();
        assert_eq!(wal.buckets.len(), 15);
        assert_eq!(wal.buckets[0], (0.001, 900.0));
        assert_eq!(wal.buckets[14], (f64::INFINITY, 1000.0));
        assert_eq!(wal.total(), 1000.0);
        assert!(r.backend_commit.is_some());
        assert_eq!(r.leader_changes, Some(2.0));
        assert_eq!(r.has_leader, Some(true));
        assert_eq!(r.db_size, Some(104_857_600.0));
        assert_eq!(r.db_in_use, Some(52_428_800.0));
        assert_eq!(r.quota, Some(2_147_483_648.0));
        assert_eq!((r.peers_known, r.peers_active), (2, 1));
        assert!(r.missing().is_empty() && r.problems.is_empty(), "{r:?}");
    }

    #[test]
    fn missing_series_read_as_unknown_not_zero() {
        let text = "# TYPE etcd_server_has_leader gauge\netcd_server_has_leader 0\n";
        let r = parse(text).unwrap();
        assert_eq!(r.has_leader, Some(false));
        assert_eq!(r.wal_fsync, None);
        assert_eq!(r.db_size, None);
        assert_eq!(r.peers_known, 0);
        assert_eq!(
            r.missing(),
            vec![WAL_FSYNC, BACKEND_COMMIT, LEADER_CHANGES, DB_SIZE, QUOTA]
        );
    }

    #[test]
    fn buckets_without_a_type_line_are_still_a_histogram() {
        let text = format!(
            "{WAL_FSYNC}_bucket{{le=\"0.01\"}} 5\n{WAL_FSYNC}_bucket{{le=\"0.1\"}} 9\n{WAL_FSYNC}_bucket{{le=\"+Inf\"}} 10\n"
        );
        let r = parse(&text).unwrap();
        assert_eq!(
            r.wal_fsync.unwrap().buckets,
            vec![(0.01, 5.0), (0.1, 9.0), (f64::INFINITY, 10.0)]
        );
    }

    #[test]
    fn a_malformed_histogram_is_reported_and_reads_as_missing() {
        // Counts fall from one bucket to the next: not cumulative.
        let text = format!(
            "# TYPE {WAL_FSYNC} histogram\n{WAL_FSYNC}_bucket{{le=\"0.01\"}} 9\n{WAL_FSYNC}_bucket{{le=\"0.1\"}} 5\n{WAL_FSYNC}_bucket{{le=\"+Inf\"}} 10\n"
        );
        let r = parse(&text).unwrap();
        assert_eq!(r.wal_fsync, None);
        assert!(r.problems[0].contains("not cumulative"), "{:?}", r.problems);
        // No +Inf bucket.
        let text = format!("# TYPE {WAL_FSYNC} histogram\n{WAL_FSYNC}_bucket{{le=\"0.01\"}} 9\n");
        let r = parse(&text).unwrap();
        assert!(r.problems[0].contains("+Inf"), "{:?}", r.problems);
    }

    #[test]
    fn only_the_read_families_reach_the_parser() {
        assert!(wanted(
            "# TYPE etcd_disk_wal_fsync_duration_seconds histogram"
        ));
        assert!(wanted(
            "# HELP etcd_server_quota_backend_bytes Current backend quota."
        ));
        assert!(wanted(
            "etcd_disk_backend_commit_duration_seconds_bucket{le=\"0.001\"} 3"
        ));
        assert!(wanted("etcd_disk_wal_fsync_duration_seconds_count 9"));
        assert!(wanted("etcd_mvcc_db_total_size_in_bytes 1.2e+07"));
        for other in [
            "# TYPE grpc_server_handled_total counter",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\"} 12",
            "go_goroutines 187",
            "etcd_disk_wal_fsync_duration_seconds_extra 1",
            "# some other comment",
            "",
        ] {
            assert!(!wanted(other), "{other:?}");
        }
        // A real page's bulk around the series changes nothing.
        let mut padded = String::from("# TYPE grpc_server_handled_total counter\n");
        for i in 0..500 {
            padded.push_str(&format!(
                "grpc_server_handled_total{{grpc_code=\"OK\",grpc_method=\"M{i}\"}} {i}\n"
            ));
        }
        padded.push_str(&page(&FAST, &FAST, 2, 104_857_600));
        assert_eq!(
            parse(&padded).unwrap(),
            parse(&page(&FAST, &FAST, 2, 104_857_600)).unwrap()
        );
        // A page of other metrics only is still a page, with every series missing.
        let r = parse("# TYPE go_goroutines gauge\ngo_goroutines 187\n").unwrap();
        assert_eq!(r.missing().len(), 5);
    }

    #[test]
    fn a_page_that_is_not_metrics_is_an_error() {
        for text in [
            "",
            "<html><body>404 page not found</body></html>\n",
            "# only a comment\n",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
