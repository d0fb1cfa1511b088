//! Configuration: one TOML file, default `/etc/nodemedic/config.toml`.
//!
//! Two layers, as in ripgrep: serde structs with `deny_unknown_fields` catch unknown keys
//! and wrong types (with the exact key path from `serde_path_to_error`), then
//! [`Config::validate`] checks ranges and cross-field rules. Every error names the file, the
//! key, the bad value and what is allowed; `main` maps it to exit 78 (EX_CONFIG) so systemd's
//! `RestartPreventExitStatus=78` stops a restart loop on a typo.
//!
//! The default config text (`config/default.toml`) is hand-written with comments; a unit
//! test keeps it identical to `Config::default()` and checks it lists every key.
//!
//! # Layout and naming
//! One file per table: `kernel.rs` is `[kernel]`, `ladder.rs` the `[policy.ladders]` steps,
//! `actions.rs` the top-level `mode` and `[actions.*]`; the small `[log]`, `[audit]` and
//! `[health]` tables live here with the loader. Each table is a `XxxSection`: the raw serde
//! form with its defaults and its own `validate`. A subsystem that runs with a derived,
//! validated form calls it `XxxConfig` (`policy::engine::PolicyConfig`,
//! `preflight::PreflightConfig`, `watchdog::WatchdogConfig`, `memory::judge::AssessConfig`)
//! and builds it from its section. The defaults an operator sees are declared here, so
//! nothing in `config/` imports a subsystem: every subsystem imports its section instead.

pub(crate) mod actions;
pub(crate) mod checks;
pub mod clock;
pub(crate) mod duration;
pub(crate) mod k3s;
pub(crate) mod kernel;
pub(crate) mod kubernetes;
pub(crate) mod ladder;
pub(crate) mod limits;
pub mod memory;
pub mod mounts;
pub(crate) mod policy;
pub(crate) mod power;
pub mod preflight;
pub mod remedy;
pub mod runtime;
pub mod storage;
pub(crate) mod watchdog;
// Datastore and certificates (issue 22).
pub(crate) mod certificates;
pub(crate) mod etcd;
pub(crate) mod kine;
pub(crate) mod servers;

pub(crate) use actions::{ActionSection, ActionsSection, RunMode};
pub(crate) use certificates::CertificatesSection;
pub use clock::ClockSection;
pub use duration::ConfigDuration;
pub(crate) use etcd::EtcdSection;
pub use k3s::K3sSection;
pub(crate) use kernel::KernelSection;
pub(crate) use kine::KineSection;
pub(crate) use kubernetes::KubernetesSection;
pub(crate) use limits::LimitsSection;
pub use memory::MemorySection;
pub use mounts::MountsSection;
pub(crate) use policy::PolicySection;
pub(crate) use power::PowerSection;
pub use preflight::PreflightSection;
pub use remedy::RemedySection;
pub use runtime::RuntimeSection;
pub(crate) use servers::ServersSection;
pub use storage::StorageSection;
pub(crate) use watchdog::WatchdogSection;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use checks::{dur_range, range};

pub(crate) const DEFAULT_PATH: &str = "/etc/nodemedic/config.toml";
pub(crate) const DEFAULT_TEXT: &str = include_str!("default.toml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub(crate) fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub(crate) mode: RunMode,
    /// Defaults to the hostname, as k3s does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node_name: Option<String>,
    pub(crate) listen: String,
    pub(crate) state_dir: PathBuf,
    /// Root under which `/proc`, `/sys`, `/dev` and `/boot` are read. Tests point it at a
    /// fixture tree; production leaves it at `/`.
    pub(crate) host_root: PathBuf,
    /// Per-boot files on a tmpfs (the kmsg cursor): written often, so never on the SD card.
    pub(crate) runtime_dir: PathBuf,
    pub(crate) log: LogSection,
    pub(crate) audit: AuditSection,
    pub(crate) health: HealthSection,
    pub(crate) actions: ActionsSection,
    pub(crate) kernel: KernelSection,
    pub(crate) memory: MemorySection,
    pub(crate) mounts: MountsSection,
    pub(crate) policy: PolicySection,
    pub(crate) preflight: PreflightSection,
    pub(crate) kubernetes: KubernetesSection,
    pub(crate) watchdog: WatchdogSection,
    pub(crate) remedy: RemedySection,
    pub(crate) runtime: RuntimeSection,
    pub(crate) limits: LimitsSection,
    pub(crate) k3s: K3sSection,
    pub(crate) clock: ClockSection,
    pub(crate) etcd: EtcdSection,
    pub(crate) kine: KineSection,
    pub(crate) certificates: CertificatesSection,
    pub(crate) servers: ServersSection,
    pub(crate) storage: StorageSection,
    pub(crate) power: PowerSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSection {
    pub(crate) level: LogLevel,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuditSection {
    pub(crate) max_entries: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthSection {
    /// A loop silent for longer than this is "stuck": /healthz says 503 and systemd
    /// keep-alives stop, so systemd restarts a wedged daemon.
    pub(crate) stuck_after: ConfigDuration,
}

/// Bounds on the audit trail: enough for weeks of a noisy node, small on an SD card.
pub(crate) const AUDIT_MAX_ENTRIES: (u32, u32) = (10, 1_000_000);

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: RunMode::Observe,
            node_name: None,
            // Like node_exporter's :9100, reachable by the in-cluster Prometheus.
            listen: "0.0.0.0:9847".into(),
            state_dir: "/var/lib/nodemedic".into(),
            host_root: "/".into(),
            runtime_dir: "/run/nodemedic".into(),
            log: LogSection::default(),
            audit: AuditSection::default(),
            health: HealthSection::default(),
            actions: ActionsSection::default(),
            kernel: Default::default(),
            memory: Default::default(),
            mounts: Default::default(),
            policy: Default::default(),
            preflight: Default::default(),
            kubernetes: Default::default(),
            watchdog: Default::default(),
            remedy: Default::default(),
            runtime: Default::default(),
            limits: Default::default(),
            k3s: Default::default(),
            clock: Default::default(),
            etcd: Default::default(),
            kine: Default::default(),
            certificates: Default::default(),
            servers: Default::default(),
            storage: Default::default(),
            power: Default::default(),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: LogLevel::Info,
        }
    }
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection { max_entries: 1000 }
    }
}

impl Default for HealthSection {
    fn default() -> Self {
        // Loops beat every second or so; 30 s tolerates a slow SD card without
        // restarting a daemon that is merely slow.
        HealthSection {
            stuck_after: ConfigDuration::secs(30),
        }
    }
}

/// A config problem, ready to print. `file` is what the operator passed or the default.
#[derive(Debug)]
pub struct ConfigError {
    pub(crate) file: PathBuf,
    pub(crate) problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error in {}:", self.file.display())?;
        if let [one] = self.problems.as_slice() {
            write!(f, " {one}")
        } else {
            for p in &self.problems {
                write!(f, "\n  - {p}")?;
            }
            Ok(())
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where the config came from, for logs and `/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOrigin {
    File(PathBuf),
    /// The default path did not exist: built-in defaults.
    BuiltIn,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::File(p) => write!(f, "{}", p.display()),
            ConfigOrigin::BuiltIn => write!(f, "built-in defaults ({DEFAULT_PATH} not present)"),
        }
    }
}

/// Loads the config. `explicit` is `--config`: a missing explicit file is an error (a typo
/// must not silently run defaults), a missing default file means built-in defaults.
pub fn load(explicit: Option<&Path>) -> Result<(Config, ConfigOrigin), ConfigError> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_PATH));
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|e| ConfigError {
                file: path.into(),
                problems: vec![format!(
                    "the file is not valid UTF-8 (byte offset {}); save it as UTF-8 text",
                    e.utf8_error().valid_up_to()
                )],
            })?;
            parse(&text, path).map(|c| (c, ConfigOrigin::File(path.into())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            Ok((Config::default(), ConfigOrigin::BuiltIn))
        }
        Err(e) => Err(ConfigError {
            file: path.into(),
            problems: vec![format!(
                "cannot read the file: {e}; check the path and that it is readable by root"
            )],
        }),
    }
}

/// Parses and validates config text. `file` is only used in messages.
pub(crate) fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let err = |p: String| ConfigError {
        file: file.into(),
        problems: vec![p],
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        err(format!(
            "{}not valid TOML: {}",
            at_line(text, e.span()),
            e.message().trim()
        ))
    })?;
    let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        let path = e.path().to_string();
        err(describe_serde_error(
            &path,
            inner.message(),
            &at_line(text, inner.span()),
        ))
    })?;
    let problems = cfg.validate();
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError {
            file: file.into(),
            problems,
        })
    }
}

fn at_line(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: ")
        }
        None => String::new(),
    }
}

/// Turns serde's message into one that names the key and what is allowed.
fn describe_serde_error(path: &str, msg: &str, at: &str) -> String {
    let msg = msg.trim();
    // serde: "unknown field `x`, expected one of `a`, `b`".
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        // serde_path_to_error's path already ends with the unknown key; older ones did not.
        let key = if path.is_empty() || path == "." {
            name.to_string()
        } else if path == name || path.ends_with(&format!(".{name}")) {
            path.to_string()
        } else {
            format!("{path}.{name}")
        };
        let allowed = tail
            .trim_start_matches(',')
            .trim()
            .trim_start_matches("expected one of ")
            .trim_start_matches("expected ")
            .replace('`', "");
        return format!("{at}unknown key `{key}`; allowed keys here: {allowed}");
    }
    let key = if path.is_empty() || path == "." {
        "(top level)"
    } else {
        path
    };
    format!("{at}key `{key}`: {msg}")
}

impl Config {
    /// Range and cross-field checks. Returns every problem, not just the first.
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            v.push(format!(
                "key `listen` = \"{}\" is not a socket address; expected IP:PORT such as \"0.0.0.0:9847\" or \"127.0.0.1:9847\"",
                self.listen
            ));
        }
        if let Some(n) = &self.node_name
            && (n.is_empty()
                || n.len() > 253
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            v.push(format!(
                    "key `node_name` = \"{n}\" is not a valid Kubernetes node name; expected 1-253 characters of a-z, 0-9, '-' and '.'"
                ));
        }
        if !self.state_dir.is_absolute() {
            v.push(format!(
                "key `state_dir` = \"{}\" must be an absolute path",
                self.state_dir.display()
            ));
        }
        if !self.runtime_dir.is_absolute() {
            v.push(format!(
                "key `runtime_dir` = \"{}\" must be an absolute path (on a tmpfs, such as \"/run/nodemedic\")",
                self.runtime_dir.display()
            ));
        }
        if !self.host_root.is_absolute() {
            v.push(format!(
                "key `host_root` = \"{}\" must be an absolute path (\"/\" in production)",
                self.host_root.display()
            ));
        }
        range(
            &mut v,
            "audit.max_entries",
            self.audit.max_entries.into(),
            AUDIT_MAX_ENTRIES.0.into(),
            AUDIT_MAX_ENTRIES.1.into(),
        );
        dur_range(
            &mut v,
            "health.stuck_after",
            self.health.stuck_after,
            5_000,
            3_600_000,
        );
        for (name, a) in self.actions.all() {
            range(
                &mut v,
                &format!("actions.{name}.max_per_day"),
                a.max_per_day.into(),
                0,
                10_000,
            );
            if let Some(n) = a.max_per_subject_per_day {
                if actions::PER_SUBJECT_ACTIONS.contains(&name) {
                    range(
                        &mut v,
                        &format!("actions.{name}.max_per_subject_per_day"),
                        n.into(),
                        0,
                        10_000,
                    );
                } else {
                    v.push(format!(
                        "key `actions.{name}.max_per_subject_per_day`: {name} acts on the whole node, not on one subject; the key applies only to {}",
                        actions::PER_SUBJECT_ACTIONS.join(" and ")
                    ));
                }
            }
        }
        // Every section checks its own keys; a section that is never asked is a config
        // error that only shows up at 3 a.m.
        self.kernel.validate(&mut v);
        self.memory.validate(&mut v);
        self.mounts.validate(&mut v);
        self.policy.validate(&mut v);
        self.preflight.validate(&mut v);
        self.kubernetes.validate(&mut v);
        self.watchdog.validate(&mut v);
        self.remedy.validate(&mut v);
        self.runtime.validate(&mut v);
        self.limits.validate(&mut v);
        self.k3s.validate(&mut v);
        self.clock.validate(&mut v);
        self.etcd.validate(&mut v);
        self.kine.validate(&mut v);
        self.certificates.validate(&mut v);
        self.storage.validate(&mut v);
        self.power.validate(&mut v);
        v
    }

    #[cfg(test)]
    /// True when `action` may really run: act mode, enabled, not dry-run.
    pub(crate) fn action_live(&self, a: &ActionSection) -> bool {
        self.mode == RunMode::Act && a.enabled && !a.dry_run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/etc/nodemedic/config.toml"))
    }

    #[test]
    fn empty_file_gives_observe_mode_defaults() {
        let c = p("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.mode, RunMode::Observe);
    }

    #[test]
    fn default_text_parses_to_exactly_the_built_in_defaults() {
        assert_eq!(p(DEFAULT_TEXT).unwrap(), Config::default());
    }

    #[test]
    fn default_text_lists_every_key_the_config_has() {
        fn keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    let key = format!("{prefix}{k}");
                    keys(&format!("{key}."), v, out);
                    out.push(key);
                }
            }
        }
        let mut want = Vec::new();
        keys(
            "",
            &toml::Value::try_from(Config::default()).unwrap(),
            &mut want,
        );
        let mut have = Vec::new();
        keys(
            "",
            &DEFAULT_TEXT
                .parse::<toml::Table>()
                .map(toml::Value::Table)
                .unwrap(),
            &mut have,
        );
        want.sort();
        have.sort();
        assert_eq!(have, want);
    }

    #[test]
    fn a_per_subject_cap_is_accepted_only_on_per_subject_actions() {
        let c = p("[actions.unmount]\nenabled = true\nmax_per_subject_per_day = 1\n").unwrap();
        assert_eq!(c.actions.unmount.per_subject_cap(), 1);
        assert_eq!(
            p("[actions.remove_sandboxes]\nenabled = true\n")
                .unwrap()
                .actions
                .remove_sandboxes
                .per_subject_cap(),
            3
        );
        let e = p("[actions.reboot]\nmax_per_subject_per_day = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("actions.reboot.max_per_subject_per_day")
                && e.contains("unmount and remove_sandboxes"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_path_and_the_allowed_keys() {
        let e = p("[audit]\nmax_entries = 10\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/nodemedic/config.toml"), "{e}");
        assert!(e.contains("unknown key `audit.bogus`"), "{e}");
        assert!(e.contains("max_entries"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = p("colour = \"red\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown key `colour`"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key_and_the_expected_type() {
        let e = p("[audit]\nmax_entries = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `audit.max_entries`"), "{e}");
        assert!(e.contains("\"lots\"") || e.contains("lots"), "{e}");
        assert!(e.contains("u32") || e.contains("integer"), "{e}");
    }

    #[test]
    fn negative_duration_names_the_key_and_the_allowed_forms() {
        let e = p("[health]\nstuck_after = -5\n").unwrap_err().to_string();
        assert!(e.contains("key `health.stuck_after`"), "{e}");
        assert!(e.contains("negative"), "{e}");
        assert!(e.contains("\"30s\""), "{e}");
    }

    #[test]
    fn out_of_range_values_are_all_reported_with_the_allowed_range() {
        let e = p("listen = \"nope\"\n[audit]\nmax_entries = 1\n[health]\nstuck_after = \"1s\"\n")
            .unwrap_err();
        assert_eq!(e.problems.len(), 3, "{e}");
        let s = e.to_string();
        assert!(
            s.contains("`audit.max_entries` = 1 is out of range; allowed 10 to 1000000"),
            "{s}"
        );
        assert!(
            s.contains("`health.stuck_after` = \"1s\" is out of range; allowed 5s to 1h"),
            "{s}"
        );
        assert!(s.contains("`listen` = \"nope\""), "{s}");
    }

    #[test]
    fn bad_mode_lists_the_allowed_modes() {
        let e = p("mode = \"heal\"\n").unwrap_err().to_string();
        assert!(e.contains("key `mode`"), "{e}");
        assert!(e.contains("observe") && e.contains("act"), "{e}");
    }

    #[test]
    fn broken_toml_reports_the_line() {
        let e = p("mode = \"act\"\n[audit\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn actions_run_only_in_act_mode_when_enabled_and_not_dry_run() {
        let mut c = Config::default();
        assert!(
            !c.action_live(&c.actions.cordon),
            "observe mode acts on nothing"
        );
        c.mode = RunMode::Act;
        assert!(c.action_live(&c.actions.cordon));
        assert!(!c.action_live(&c.actions.drain), "drain is off by default");
        c.actions.cordon.dry_run = true;
        assert!(!c.action_live(&c.actions.cordon));
    }
}
