//! The k3s datastore of a server: embedded etcd or kine's sqlite.

pub(crate) mod etcd_detector;
pub(crate) mod etcd_judge;
pub(crate) mod etcd_text;
pub(crate) mod histogram;
pub(crate) mod journal;
pub(crate) mod kine_detector;
pub(crate) mod metrics;
pub(crate) mod scrape;
pub(crate) mod slow_sql;
pub(crate) mod vacuum;
