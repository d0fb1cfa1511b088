//! Kernel distress: RCU stalls, lockups, hung tasks, NFS client faults and OOM kills from
//! `/dev/kmsg`, plus the kernel's own counters where it has them.
//!
//! `kmsg_record` (record format), `line_format` (saved-log prefixes) and `classify` (the
//! splat-grouping classifier) are pure; the reader and detector do the I/O.

pub mod classify;
pub(crate) mod counters;
pub(crate) mod cursor;
pub mod detector;
pub(crate) mod judge;
pub(crate) mod kmsg_record;
pub(crate) mod line_format;
pub mod metrics;
pub mod source;
pub(crate) mod summary;
