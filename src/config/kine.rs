//! `[kine]`: k3s's sqlite datastore on single-server clusters (kine), its sizes, its
//! `Slow SQL` log lines and the opt-in VACUUM before k3s starts.

use serde::{Deserialize, Serialize};

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

pub(crate) const DEFAULT_DB: &str = "/var/lib/rancher/k3s/server/db/state.db";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KineSection {
    pub(crate) enabled: bool,
    /// kine's sqlite file; its `-wal` beside it.
    pub(crate) db: String,
    pub(crate) interval: ConfigDuration,
    /// The unit whose journal carries kine's `Slow SQL` lines.
    pub(crate) journal_unit: String,
    /// This many `Slow SQL` lines within `slow_sql_window` raise `KineSlowSQL`.
    pub(crate) slow_sql_count: u32,
    pub(crate) slow_sql_window: ConfigDuration,
    /// `nodemedic preflight` compacts the database with VACUUM (after a passing
    /// `PRAGMA integrity_check`) when true, in act mode, at most every
    /// `vacuum_min_interval`.
    pub(crate) vacuum_before_start: bool,
    /// Integrity check and VACUUM together; past it the VACUUM is interrupted (SQLite rolls
    /// it back, the file is unchanged) and k3s starts.
    pub(crate) vacuum_budget: ConfigDuration,
    pub(crate) vacuum_min_interval: ConfigDuration,
}

impl Default for KineSection {
    fn default() -> Self {
        KineSection {
            enabled: true,
            db: DEFAULT_DB.into(),
            // Two stats and a look at the journal reader's queue: cheap.
            interval: ConfigDuration::secs(10),
            journal_unit: "k3s.service".into(),
            // kine logs `Slow SQL` for any query over 500 ms; a few are normal on an SD card
            // (compaction), ten in two minutes means the API server is waiting on the disk.
            slow_sql_count: 10,
            slow_sql_window: ConfigDuration::secs(120),
            vacuum_before_start: false,
            // k3s's unit has TimeoutStartSec=0, but every second here is API downtime.
            vacuum_budget: ConfigDuration::secs(60),
            vacuum_min_interval: ConfigDuration::secs(7 * 86_400),
        }
    }
}

impl KineSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        if !self.db.starts_with('/') || self.db.contains("..") {
            v.push(format!(
                "key `kine.db` = \"{}\" must be an absolute path such as \"{DEFAULT_DB}\"",
                self.db
            ));
        }
        if !self.journal_unit.ends_with(".service") {
            v.push(format!(
                "key `kine.journal_unit` = \"{}\" must be a unit name ending in .service, such as \"k3s.service\"",
                self.journal_unit
            ));
        }
        dur_range(v, "kine.interval", self.interval, 1_000, 600_000);
        range(
            v,
            "kine.slow_sql_count",
            self.slow_sql_count.into(),
            1,
            100_000,
        );
        dur_range(
            v,
            "kine.slow_sql_window",
            self.slow_sql_window,
            10_000,
            86_400_000,
        );
        dur_range(
            v,
            "kine.vacuum_budget",
            self.vacuum_budget,
            1_000,
            3_600_000,
        );
        dur_range(
            v,
            "kine.vacuum_min_interval",
            self.vacuum_min_interval,
            0,
            365 * 86_400_000,
        );
    }
}
