//! Logging: native journald (with structured fields from `log`'s key-values, e.g.
//! `DETECTOR=kernel`, `ACTION=cordon`) when stderr is connected to the journal, readable
//! stderr lines otherwise. A hand-rolled filter instead of env_logger: our own targets at
//! the configured level, library noise (kube, tonic, hyper, h2, rustls) at warn.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct Logger {
    level: LevelFilter,
    journal: Option<systemd_journal_logger::JournalLog>,
}

fn is_ours(target: &str) -> bool {
    target.starts_with("nodemedic")
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        let max = if is_ours(m.target()) {
            self.level
        } else {
            self.level.min(LevelFilter::Warn)
        };
        m.level() <= max
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        if let Some(j) = &self.journal {
            j.log(r);
            return;
        }
        let mut line = format!("{} {}", level_word(r.level()), r.args());
        struct Kv<'a>(&'a mut String);
        impl<'kvs> log::kv::VisitSource<'kvs> for Kv<'_> {
            fn visit_pair(
                &mut self,
                k: log::kv::Key<'kvs>,
                v: log::kv::Value<'kvs>,
            ) -> Result<(), log::kv::Error> {
                self.0.push_str(&format!(" {k}={v}"));
                Ok(())
            }
        }
        let _ = r.key_values().visit(&mut Kv(&mut line));
        if !is_ours(r.target()) {
            line.push_str(&format!(" [{}]", r.target()));
        }
        line.push('\n');
        // One write per line so concurrent threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn level_word(l: Level) -> &'static str {
    match l {
        Level::Error => "error:",
        Level::Warn => "warning:",
        Level::Info => "info:",
        Level::Debug => "debug:",
        Level::Trace => "trace:",
    }
}

/// Installs the logger once. `prefer_stderr` keeps one-shot commands on stderr even
/// under systemd, where their output is captured anyway.
pub(crate) fn init(level: LevelFilter, prefer_stderr: bool) {
    let journal = if !prefer_stderr && systemd_journal_logger::connected_to_journal() {
        systemd_journal_logger::JournalLog::new()
            .ok()
            .map(|j| j.with_syslog_identifier("nodemedic".into()))
    } else {
        None
    };
    if log::set_boxed_logger(Box::new(Logger { level, journal })).is_ok() {
        log::set_max_level(level.max(LevelFilter::Warn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(l: &Logger, target: &str, level: Level) -> bool {
        l.enabled(&Metadata::builder().target(target).level(level).build())
    }

    #[test]
    fn library_noise_stays_at_warn_while_our_targets_follow_the_configured_level() {
        let l = Logger {
            level: LevelFilter::Debug,
            journal: None,
        };
        assert!(enabled(&l, "nodemedic::kernel::detector", Level::Debug));
        assert!(!enabled(&l, "nodemedic::kernel::detector", Level::Trace));
        for noisy in [
            "hyper::proto::h1",
            "kube_client::client",
            "tonic::transport",
            "h2::codec",
            "rustls::conn",
        ] {
            assert!(
                !enabled(&l, noisy, Level::Info),
                "{noisy} info must be filtered"
            );
            assert!(
                enabled(&l, noisy, Level::Warn),
                "{noisy} warnings must pass"
            );
        }
        let quiet = Logger {
            level: LevelFilter::Error,
            journal: None,
        };
        assert!(
            !enabled(&quiet, "hyper::proto::h1", Level::Warn),
            "never louder than the configured level"
        );
    }
}
