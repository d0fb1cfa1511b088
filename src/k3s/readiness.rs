//! Reboot readiness: would the kubelet's graceful node shutdown work if the node rebooted?
//!
//! The kubelet's node shutdown manager (pkg/kubelet/nodeshutdown, Linux) takes a *delay*
//! inhibitor lock from logind for `shutdown-grace-period`; on `PrepareForShutdown` it
//! evicts pods, then releases the lock. logind waits for delay locks at most
//! `InhibitDelayMaxSec` (5 s by default, logind.conf(5)). So the shutdown is graceful only
//! when all three hold:
//!
//! 1. the grace period is configured (> 0): k3s `--kubelet-arg=shutdown-grace-period=...`
//!    in `/etc/rancher/k3s/config.yaml`, `config.yaml.d/*.yaml` or the unit's `ExecStart=`,
//!    or `shutdownGracePeriod` in a kubelet config file;
//! 2. a delay inhibitor for `shutdown` is registered with logind (the kubelet is running and
//!    logind is reachable);
//! 3. `InhibitDelayMaxSec` is at least the grace period (the kubelet tries to raise it with
//!    a logind.conf.d drop-in and a logind reload, which fails on a read-only /etc).
//!
//! Configured but not effective raises `GracefulShutdownIneffective` with the fix. Not
//! configured at all is only a `nodemedic check` note. The parsing and the judgement are
//! pure; [`discover_grace`] reads the files, [`Logind`] asks logind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::edge::HostFiles;
use crate::edge::dbus::{Bus, DbusError};

use super::unit::UnitProperties;

/// k3s's kubelet configuration drop-in directory (k3s 1.29+).
pub(crate) const K3S_KUBELET_DROPINS: &str = "var/lib/rancher/k3s/agent/etc/kubelet.conf.d";
pub(crate) const K3S_CONFIG: &str = "etc/rancher/k3s/config.yaml";
pub(crate) const K3S_CONFIG_DROPINS: &str = "etc/rancher/k3s/config.yaml.d";

/// A Go duration (`30s`, `1m30s`, `1.5h`, `500ms`, `0`), as the kubelet parses flags.
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim().trim_matches(['"', '\'']);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Some(Duration::from_secs_f64(total))
}

/// The value of `shutdown-grace-period` among kubelet arguments (`key=value`, with or
/// without leading dashes); the last one wins, as with repeated flags.
pub(crate) fn grace_in_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<Duration> {
    let mut g = None;
    for a in args {
        if let Some(v) = a
            .trim_start_matches('-')
            .strip_prefix("shutdown-grace-period=")
        {
            g = parse_go_duration(v);
        }
    }
    g
}

/// The kubelet `config=` file named among kubelet arguments, if any.
pub(crate) fn config_in_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<String> {
    args.into_iter()
        .filter_map(|a| {
            a.trim_start_matches('-')
                .strip_prefix("config=")
                .map(str::to_string)
        })
        .last()
}

/// Applies one k3s config file to the kubelet argument list: `kubelet-arg` replaces what
/// earlier files set, `kubelet-arg+` appends (k3s's config file merge rules).
pub(crate) fn apply_k3s_config(text: &str, args: &mut Vec<String>) -> Result<(), String> {
    if text.trim().is_empty() {
        return Ok(());
    }
    let v: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let Some(map) = v.as_object() else {
        return Ok(());
    };
    let list = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        }
    };
    if let Some(v) = map.get("kubelet-arg") {
        *args = list(v);
    }
    if let Some(v) = map.get("kubelet-arg+") {
        args.extend(list(v));
    }
    Ok(())
}

/// `shutdownGracePeriod` of a kubelet config file (KubeletConfiguration YAML).
pub(crate) fn grace_in_kubelet_config(text: &str) -> Option<Duration> {
    let v: serde_json::Value = serde_saphyr::from_str(text).ok()?;
    parse_go_duration(v.get("shutdownGracePeriod")?.as_str()?)
}

/// Splits a command line as systemd does for `ExecStart=`: whitespace-separated words,
/// single and double quotes, backslash escapes.
fn split_command(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The `--kubelet-arg` values of the effective `ExecStart=` in unit file texts (the unit
/// file, then its drop-ins; an empty `ExecStart=` resets, as in systemd).
pub(crate) fn kubelet_args_in_units<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut exec: Option<String> = None;
    for text in texts {
        // Lines continued with a trailing backslash are one line.
        let joined = text.replace("\\\n", " ");
        let mut in_service = false;
        for l in joined.lines().map(str::trim) {
            if l.starts_with('[') {
                in_service = l == "[Service]";
                continue;
            }
            if !in_service {
                continue;
            }
            if let Some(v) = l.strip_prefix("ExecStart=") {
                exec = (!v.trim().is_empty()).then(|| v.to_string());
            }
        }
    }
    let Some(exec) = exec else {
        return vec![];
    };
    let words = split_command(exec.trim_start_matches(['-', '@', ':', '+', '!']));
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if let Some(v) = w.strip_prefix("--kubelet-arg=") {
            out.push(v.to_string());
        } else if w == "--kubelet-arg"
            && let Some(v) = it.next()
        {
            out.push(v.clone());
        }
    }
    out
}

/// Where the grace period came from, and its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct GraceSetting {
    pub(crate) grace_secs: u64,
    pub(crate) source: String,
}

/// Reads the k3s config files, the unit's `ExecStart=` and kubelet config files for the
/// configured grace period. Unreadable files count as absent; broken YAML is reported in
/// the second value (for `nodemedic check`).
pub(crate) fn discover_grace(
    files: &dyn HostFiles,
    unit: Option<&UnitProperties>,
) -> (Option<GraceSetting>, Vec<String>) {
    let mut problems = Vec::new();
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    let mut args: Vec<String> = Vec::new();
    let mut from = Vec::new();
    let mut k3s_files = vec![K3S_CONFIG.to_string()];
    if let Ok(mut names) = files.list(K3S_CONFIG_DROPINS) {
        names.retain(|n| n.ends_with(".yaml") || n.ends_with(".yml"));
        names.sort();
        k3s_files.extend(
            names
                .into_iter()
                .map(|n| format!("{K3S_CONFIG_DROPINS}/{n}")),
        );
    }
    for f in &k3s_files {
        if let Ok(text) = files.read_string(f) {
            let before = args.clone();
            if let Err(e) = apply_k3s_config(&text, &mut args) {
                problems.push(format!("/{f}: {e}"));
            } else if args != before {
                from.push(format!("/{f}"));
            }
        }
    }
    if let Some(u) = unit {
        let texts: Vec<String> = std::iter::once(&u.fragment_path)
            .chain(&u.drop_in_paths)
            .filter(|p| !p.is_empty())
            .filter_map(|p| files.read_string(&rel(p)).ok())
            .collect();
        let unit_args = kubelet_args_in_units(texts.iter().map(String::as_str));
        if grace_in_args(unit_args.iter().map(String::as_str)).is_some() {
            from.push(format!("{} ExecStart=", u.fragment_path));
        }
        args.extend(unit_args);
    }
    if let Some(g) = grace_in_args(args.iter().map(String::as_str)) {
        return (
            Some(GraceSetting {
                grace_secs: g.as_secs(),
                source: format!("--kubelet-arg=shutdown-grace-period in {}", from.join(", ")),
            }),
            problems,
        );
    }
    // Kubelet config files: k3s's drop-in directory overrides the config= file.
    let mut config_files = Vec::new();
    if let Some(c) = config_in_args(args.iter().map(String::as_str)) {
        config_files.push(rel(&c));
    }
    if let Ok(mut names) = files.list(K3S_KUBELET_DROPINS) {
        names.retain(|n| n.ends_with(".conf"));
        names.sort();
        config_files.extend(
            names
                .into_iter()
                .map(|n| format!("{K3S_KUBELET_DROPINS}/{n}")),
        );
    }
    let mut found = None;
    for f in config_files {
        if let Some(g) = files
            .read_string(&f)
            .ok()
            .and_then(|t| grace_in_kubelet_config(&t))
        {
            found = Some(GraceSetting {
                grace_secs: g.as_secs(),
                source: format!("shutdownGracePeriod in /{f}"),
            });
        }
    }
    (found, problems)
}

/// One logind inhibitor lock (`ListInhibitors`: what, who, why, mode, uid, pid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Inhibitor {
    pub what: String,
    pub who: String,
    pub why: String,
    pub mode: String,
    pub uid: u32,
    pub pid: u32,
}

/// logind's view, as an edge.
pub trait Logind: Send {
    fn inhibitors(&mut self) -> Result<Vec<Inhibitor>, DbusError>;
    /// `InhibitDelayMaxUSec`.
    fn inhibit_delay_max(&mut self) -> Result<Duration, DbusError>;
}

const LOGIND: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";
const LOGIND_MANAGER: &str = "org.freedesktop.login1.Manager";

/// logind on the system bus (the connection shared with the unit reader).
pub(crate) struct LogindBus {
    pub(crate) bus: Arc<Mutex<Bus>>,
}

impl Logind for LogindBus {
    fn inhibitors(&mut self) -> Result<Vec<Inhibitor>, DbusError> {
        let mut bus = self.bus.lock().unwrap_or_else(|p| p.into_inner());
        let raw: Vec<(String, String, String, String, u32, u32)> =
            bus.call(LOGIND, LOGIND_PATH, LOGIND_MANAGER, "ListInhibitors", &())?;
        Ok(raw
            .into_iter()
            .map(|(what, who, why, mode, uid, pid)| Inhibitor {
                what,
                who,
                why,
                mode,
                uid,
                pid,
            })
            .collect())
    }

    fn inhibit_delay_max(&mut self) -> Result<Duration, DbusError> {
        let mut bus = self.bus.lock().unwrap_or_else(|p| p.into_inner());
        let usec: u64 = bus.property(LOGIND, LOGIND_PATH, LOGIND_MANAGER, "InhibitDelayMaxUSec")?;
        Ok(Duration::from_micros(usec))
    }
}

#[cfg(any(test, feature = "fakes"))]
/// Scripted logind answers.
#[derive(Clone)]
pub struct FakeLogind {
    pub inhibitors: Result<Vec<Inhibitor>, DbusError>,
    pub delay_max: Result<Duration, DbusError>,
}

#[cfg(any(test, feature = "fakes"))]
impl Logind for FakeLogind {
    fn inhibitors(&mut self) -> Result<Vec<Inhibitor>, DbusError> {
        self.inhibitors.clone()
    }
    fn inhibit_delay_max(&mut self) -> Result<Duration, DbusError> {
        self.delay_max.clone()
    }
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "readiness")]
pub(crate) enum Readiness {
    /// No grace period: a reboot stops pods without draining them (a note, not a problem:
    /// nothing configured is broken).
    NotConfigured,
    Effective {
        grace_secs: u64,
        delay_max_secs: u64,
    },
    /// Configured but would not work: why, and what to do.
    Ineffective {
        grace_secs: u64,
        problems: Vec<String>,
    },
}

/// Judges the setting against logind's answers (pure).
pub(crate) fn judge(
    grace: Option<&GraceSetting>,
    inhibitors: &Result<Vec<Inhibitor>, DbusError>,
    delay_max: &Result<Duration, DbusError>,
) -> Readiness {
    let Some(g) = grace.filter(|g| g.grace_secs > 0) else {
        return Readiness::NotConfigured;
    };
    let mut problems = Vec::new();
    let logind_down = |e: &DbusError| {
        format!(
            "logind cannot be asked ({e}): without systemd-logind the kubelet takes no delay inhibitor and pods get no graceful shutdown; start systemd-logind (systemctl start systemd-logind)"
        )
    };
    match inhibitors {
        Err(e) => problems.push(logind_down(e)),
        Ok(list) => {
            let kubelet_lock = list
                .iter()
                .any(|i| i.mode == "delay" && i.what.split(':').any(|w| w == "shutdown"));
            if !kubelet_lock {
                problems.push(format!(
                    "no delay inhibitor for shutdown is registered with logind, though {} sets {} s: the kubelet did not take one (see `systemd-inhibit --list`, and the k3s journal for \"node shutdown manager\")",
                    g.source, g.grace_secs
                ));
            }
        }
    }
    match delay_max {
        Err(e) if inhibitors.is_ok() => problems.push(logind_down(e)),
        Err(_) => {}
        Ok(max) if max.as_secs() < g.grace_secs => problems.push(format!(
            "logind's InhibitDelayMaxSec is {} s, shorter than shutdown-grace-period {} s: logind stops waiting before the kubelet has stopped the pods; set InhibitDelayMaxSec={}s in /etc/systemd/logind.conf.d/99-kubelet.conf and run `systemctl reload systemd-logind`",
            max.as_secs(),
            g.grace_secs,
            g.grace_secs
        )),
        Ok(_) => {}
    }
    if problems.is_empty() {
        Readiness::Effective {
            grace_secs: g.grace_secs,
            delay_max_secs: delay_max.as_ref().map_or(0, |d| d.as_secs()),
        }
    } else {
        Readiness::Ineffective {
            grace_secs: g.grace_secs,
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeFiles;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn go_durations_parse_as_the_kubelet_does() {
        assert_eq!(parse_go_duration("30s"), Some(S(30)));
        assert_eq!(parse_go_duration("1m30s"), Some(S(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(S(5400)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("\"2m\""), Some(S(120)));
        assert_eq!(parse_go_duration("30"), None, "Go requires a unit");
        assert_eq!(parse_go_duration("soon"), None);
    }

    #[test]
    fn k3s_config_files_replace_or_append_kubelet_args_and_the_last_grace_wins() {
        let mut args = Vec::new();
        apply_k3s_config(
            "write-kubeconfig-mode: \"0644\"\nkubelet-arg:\n  - max-pods=110\n  - shutdown-grace-period=30s\n",
            &mut args,
        )
        .unwrap();
        assert_eq!(grace_in_args(args.iter().map(String::as_str)), Some(S(30)));
        apply_k3s_config("kubelet-arg+: \"--shutdown-grace-period=1m\"\n", &mut args).unwrap();
        assert_eq!(args.len(), 3);
        assert_eq!(grace_in_args(args.iter().map(String::as_str)), Some(S(60)));
        apply_k3s_config("kubelet-arg: [\"max-pods=50\"]\n", &mut args).unwrap();
        assert_eq!(args, ["max-pods=50"], "a plain key replaces");
        assert!(apply_k3s_config("kubelet-arg: [unclosed\n", &mut args).is_err());
    }

    #[test]
    fn exec_start_kubelet_args_are_found_in_the_install_scripts_layout() {
        // What get.k3s.io writes: one quoted argument per continued line.
        let unit = "[Unit]\nDescription=k3s\n[Service]\nType=notify\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--kubelet-arg=shutdown-grace-period=45s' \\\n\t'--kubelet-arg' 'shutdown-grace-period-critical-pods=15s' \\\n";
        let args = kubelet_args_in_units([unit]);
        assert_eq!(
            args,
            [
                "shutdown-grace-period=45s",
                "shutdown-grace-period-critical-pods=15s"
            ]
        );
        assert_eq!(grace_in_args(args.iter().map(String::as_str)), Some(S(45)));
        // A drop-in that resets and replaces ExecStart= wins.
        let dropin = "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s agent\n";
        assert!(kubelet_args_in_units([unit, dropin]).is_empty());
    }

    #[test]
    fn the_grace_period_is_discovered_from_config_files_the_unit_or_kubelet_config() {
        let files = FakeFiles::with(&[
            (K3S_CONFIG, "token: x\n"),
            (
                "etc/rancher/k3s/config.yaml.d/50-shutdown.yaml",
                "kubelet-arg+:\n- shutdown-grace-period=2m\n",
            ),
        ]);
        let (g, problems) = discover_grace(&files, None);
        let g = g.unwrap();
        assert_eq!(g.grace_secs, 120);
        assert!(
            g.source
                .contains("/etc/rancher/k3s/config.yaml.d/50-shutdown.yaml"),
            "{}",
            g.source
        );
        assert!(problems.is_empty());

        let files = FakeFiles::with(&[(
            "etc/systemd/system/k3s.service",
            "[Service]\nExecStart=/usr/local/bin/k3s server --kubelet-arg=shutdown-grace-period=30s\n",
        )]);
        let unit = UnitProperties {
            fragment_path: "/etc/systemd/system/k3s.service".into(),
            ..Default::default()
        };
        let (g, _) = discover_grace(&files, Some(&unit));
        assert_eq!(g.unwrap().grace_secs, 30);

        let files = FakeFiles::with(&[
            (
                K3S_CONFIG,
                "kubelet-arg: [\"config=/etc/rancher/k3s/kubelet.yaml\"]\n",
            ),
            (
                "etc/rancher/k3s/kubelet.yaml",
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nshutdownGracePeriod: 20s\n",
            ),
        ]);
        let (g, _) = discover_grace(&files, None);
        let g = g.unwrap();
        assert_eq!(g.grace_secs, 20);
        assert!(g.source.contains("kubelet.yaml"));

        let (g, problems) = discover_grace(&FakeFiles::with(&[(K3S_CONFIG, "a: [\n")]), None);
        assert!(g.is_none());
        assert!(problems[0].contains("not valid YAML"), "{problems:?}");
    }

    fn kubelet_lock() -> Inhibitor {
        Inhibitor {
            what: "shutdown".into(),
            who: "kubelet".into(),
            why: "Kubelet needs time to handle node shutdown".into(),
            mode: "delay".into(),
            uid: 0,
            pid: 812,
        }
    }

    fn grace(s: u64) -> GraceSetting {
        GraceSetting {
            grace_secs: s,
            source: "--kubelet-arg=shutdown-grace-period in /etc/rancher/k3s/config.yaml".into(),
        }
    }

    #[test]
    fn readiness_needs_the_lock_and_a_long_enough_inhibit_delay() {
        assert_eq!(
            judge(None, &Ok(vec![]), &Ok(S(5))),
            Readiness::NotConfigured
        );
        assert_eq!(
            judge(Some(&grace(30)), &Ok(vec![kubelet_lock()]), &Ok(S(30))),
            Readiness::Effective {
                grace_secs: 30,
                delay_max_secs: 30
            }
        );
        let Readiness::Ineffective { problems, .. } =
            judge(Some(&grace(30)), &Ok(vec![kubelet_lock()]), &Ok(S(5)))
        else {
            panic!()
        };
        assert!(
            problems[0].contains("InhibitDelayMaxSec is 5 s")
                && problems[0].contains("InhibitDelayMaxSec=30s"),
            "{problems:?}"
        );
        let Readiness::Ineffective { problems, .. } =
            judge(Some(&grace(30)), &Ok(vec![]), &Ok(S(60)))
        else {
            panic!()
        };
        assert!(problems[0].contains("no delay inhibitor"), "{problems:?}");
        let block = Inhibitor {
            mode: "block".into(),
            ..kubelet_lock()
        };
        assert!(matches!(
            judge(Some(&grace(30)), &Ok(vec![block]), &Ok(S(60))),
            Readiness::Ineffective { .. }
        ));
        let down = Err(DbusError::NoService("org.freedesktop.login1".into()));
        let Readiness::Ineffective { problems, .. } = judge(
            Some(&grace(30)),
            &down,
            &down.clone().map(|_: Vec<Inhibitor>| S(0)),
        ) else {
            panic!()
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("start systemd-logind"));
    }
}
