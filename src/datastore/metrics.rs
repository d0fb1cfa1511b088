//! The datastore's metrics: etcd as this server's member sees it (scrapes, p99s, db size
//! against the quota, leader changes, alarms) and kine's sqlite (file sizes, `Slow SQL`
//! lines, the opt-in VACUUM's last run). Registered only on nodes where the detector runs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::GaugeF;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DatastoreResultLabels {
    pub(crate) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AlarmLabels {
    pub(crate) alarm: String,
}

/// The alarms etcd has (etcdserverpb.AlarmType), each with a series from the start.
pub(crate) const ALARMS: [&str; 2] = ["NOSPACE", "CORRUPT"];

#[derive(Clone)]
pub(crate) struct EtcdMetrics {
    pub(crate) up: Gauge,
    pub(crate) scrapes: Family<DatastoreResultLabels, Counter>,
    pub(crate) wal_fsync_p99: GaugeF,
    pub(crate) backend_commit_p99: GaugeF,
    pub(crate) db_size: GaugeF,
    pub(crate) db_in_use: GaugeF,
    pub(crate) quota: GaugeF,
    pub(crate) quota_ratio: GaugeF,
    pub(crate) leader_changes: Gauge,
    pub(crate) alarm: Family<AlarmLabels, Gauge>,
    pub(crate) counter_resets: Counter,
}

impl EtcdMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = EtcdMetrics {
            up: Gauge::default(),
            scrapes: Family::default(),
            wal_fsync_p99: GaugeF::default(),
            backend_commit_p99: GaugeF::default(),
            db_size: GaugeF::default(),
            db_in_use: GaugeF::default(),
            quota: GaugeF::default(),
            quota_ratio: GaugeF::default(),
            leader_changes: Gauge::default(),
            alarm: Family::default(),
            counter_resets: Counter::default(),
        };
        reg.register(
            "nodemedic_etcd_up",
            "1 when the last scrape of this server's etcd metrics succeeded",
            m.up.clone(),
        );
        reg.register(
            "nodemedic_etcd_scrapes",
            "Scrapes of etcd's metrics by result (ok, failed, timeout, busy: the previous one had not answered)",
            m.scrapes.clone(),
        );
        reg.register_with_unit(
            "nodemedic_etcd_wal_fsync_p99",
            "p99 of etcd_disk_wal_fsync_duration_seconds over [etcd] quantile_window, from histogram deltas (NaN while unknown)",
            Unit::Seconds,
            m.wal_fsync_p99.clone(),
        );
        reg.register_with_unit(
            "nodemedic_etcd_backend_commit_p99",
            "p99 of etcd_disk_backend_commit_duration_seconds over [etcd] quantile_window (NaN while unknown)",
            Unit::Seconds,
            m.backend_commit_p99.clone(),
        );
        reg.register_with_unit(
            "nodemedic_etcd_db_size",
            "etcd_mvcc_db_total_size_in_bytes (NaN while unknown)",
            Unit::Bytes,
            m.db_size.clone(),
        );
        reg.register_with_unit(
            "nodemedic_etcd_db_in_use",
            "etcd_mvcc_db_total_size_in_use_in_bytes: what defragmentation keeps (NaN while unknown)",
            Unit::Bytes,
            m.db_in_use.clone(),
        );
        reg.register_with_unit(
            "nodemedic_etcd_quota",
            "etcd_server_quota_backend_bytes (NaN while unknown)",
            Unit::Bytes,
            m.quota.clone(),
        );
        reg.register_with_unit(
            "nodemedic_etcd_quota_used",
            "etcd db size over its quota, 0-1 (NaN while unknown)",
            Unit::Other("ratio".into()),
            m.quota_ratio.clone(),
        );
        reg.register(
            "nodemedic_etcd_leader_changes_in_window",
            "Leader changes this member saw within [etcd] leader_changes_window",
            m.leader_changes.clone(),
        );
        reg.register(
            "nodemedic_etcd_alarm",
            "1 while etcd's /health names the alarm",
            m.alarm.clone(),
        );
        reg.register(
            "nodemedic_etcd_restarts_seen",
            "Times etcd's histogram counters went backwards (etcd restarted) and the p99 window started again",
            m.counter_resets.clone(),
        );
        for a in ALARMS {
            let _ = m.alarm.get_or_create(&AlarmLabels { alarm: a.into() });
        }
        for g in [
            &m.wal_fsync_p99,
            &m.backend_commit_p99,
            &m.db_size,
            &m.db_in_use,
            &m.quota,
            &m.quota_ratio,
        ] {
            g.set(f64::NAN);
        }
        m
    }

    pub(crate) fn scrape(&self, result: &str) {
        self.scrapes
            .get_or_create(&DatastoreResultLabels {
                result: result.into(),
            })
            .inc();
    }
}

/// Sets a gauge to the value, or NaN when unknown.
pub(crate) fn set_opt(g: &GaugeF, v: Option<f64>) {
    g.set(v.unwrap_or(f64::NAN));
}

#[derive(Clone)]
pub(crate) struct KineMetrics {
    pub(crate) db_size: Gauge,
    pub(crate) wal_size: Gauge,
    pub(crate) slow_sql: Counter,
    pub(crate) slow_sql_in_window: Gauge,
    pub(crate) journal_up: Gauge,
    pub(crate) vacuum_last: GaugeF,
    pub(crate) vacuums: Family<DatastoreResultLabels, Counter>,
}

impl KineMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = KineMetrics {
            db_size: Gauge::default(),
            wal_size: Gauge::default(),
            slow_sql: Counter::default(),
            slow_sql_in_window: Gauge::default(),
            journal_up: Gauge::default(),
            vacuum_last: GaugeF::default(),
            vacuums: Family::default(),
        };
        reg.register_with_unit(
            "nodemedic_kine_db_size",
            "Size of kine's sqlite file (state.db)",
            Unit::Bytes,
            m.db_size.clone(),
        );
        reg.register_with_unit(
            "nodemedic_kine_wal_size",
            "Size of kine's sqlite write-ahead log (state.db-wal)",
            Unit::Bytes,
            m.wal_size.clone(),
        );
        reg.register(
            "nodemedic_kine_slow_sql",
            "`Slow SQL` lines in the k3s unit's journal",
            m.slow_sql.clone(),
        );
        reg.register(
            "nodemedic_kine_slow_sql_in_window",
            "`Slow SQL` lines within [kine] slow_sql_window",
            m.slow_sql_in_window.clone(),
        );
        reg.register(
            "nodemedic_kine_journal_up",
            "1 while the k3s unit's journal is being read",
            m.journal_up.clone(),
        );
        reg.register_with_unit(
            "nodemedic_kine_vacuum_last_timestamp",
            "Unix time of the last VACUUM preflight ran (0: never)",
            Unit::Seconds,
            m.vacuum_last.clone(),
        );
        reg.register(
            "nodemedic_kine_vacuums",
            "Preflight VACUUM runs by result (done, failed, skipped, interrupted, corrupt)",
            m.vacuums.clone(),
        );
        m
    }
}
