//! The private containerd's config, from k3s's generated one (issue 16, point 3).
//!
//! k3s writes `agent/etc/containerd/config.toml` from a template: on containerd 1.x
//! `version = 2` from `config.toml.tmpl`, importing `config.toml.d/*.toml`; on 2.x
//! `version = 3` from `config-v3.toml.tmpl`, importing `config-v3.toml.d/*.toml`, with CRI
//! split into `io.containerd.grpc.v1.cri`, `io.containerd.cri.v1.runtime` and
//! `io.containerd.cri.v1.images`. Operators add drop-ins there: runtimes, `disabled_plugins`,
//! `proxy_plugins` snapshotters (stargz, a custom one). The private instance must see the
//! same snapshotters as k3s's containerd (it removes snapshots through them), but must never
//! start CRI or bind anything k3s's containerd owns.
//!
//! So the base config is kept with these changes: `disabled_plugins` becomes ours (every CRI
//! plugin, NRI, tracing, `opt`) plus the base's; `required_plugins` is dropped (a required
//! CRI plugin would stop the start); listeners of k3s's own are dropped (`ttrpc.address`,
//! `grpc.tcp_address`, `debug.address`, `metrics.address`); relative `imports` are made
//! absolute (the rendered file lives elsewhere). containerd itself then merges the drop-ins
//! exactly as for k3s: lists are appended in 1.6 to 2.x (`mergeConfig`), so a drop-in's
//! `disabled_plugins` only adds to ours, and `proxy_plugins` tables are merged. A drop-in
//! that would undo our changes (a ttrpc or TCP listener, a required plugin we disable) or
//! that does not parse, or an import pattern with a wildcard in a directory (which this
//! check cannot list), makes the private instance use the minimal config instead, and the
//! report says why.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// The config the private instance runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Rendered {
    pub(crate) text: String,
    /// Why the minimal config is used instead of k3s's, when it is.
    pub(crate) fallback: Option<String>,
    /// What of k3s's drop-ins containerd merges in (for the report).
    pub(crate) merged: Vec<String>,
}

/// Keys of k3s's containerd that open listeners the private instance must not open.
const LISTENERS: [(&str, &str); 4] = [
    ("ttrpc", "address"),
    ("grpc", "tcp_address"),
    ("debug", "address"),
    ("metrics", "address"),
];

fn minimal(disabled: &[&str], why: String) -> Rendered {
    let mut t = toml::Table::new();
    t.insert("version".into(), toml::Value::Integer(2));
    t.insert("disabled_plugins".into(), strings(disabled.iter().copied()));
    Rendered {
        text: header(&t),
        fallback: Some(why),
        merged: vec![],
    }
}

fn strings<'a>(it: impl IntoIterator<Item = &'a str>) -> toml::Value {
    toml::Value::Array(
        it.into_iter()
            .map(|s| toml::Value::String(s.to_string()))
            .collect(),
    )
}

fn header(t: &toml::Table) -> String {
    format!(
        "# written by nodemedic preflight: k3s's containerd config with CRI disabled\n{}",
        toml::to_string(t).unwrap_or_default()
    )
}

fn listener(t: &toml::Table, table: &str, key: &str) -> bool {
    t.get(table)
        .and_then(|v| v.get(key))
        .and_then(|v| v.as_str())
        .is_some_and(|s| !s.is_empty())
}

/// Renders the private config from k3s's config `base` (its path, for relative imports, and
/// text); `disabled` are the plugins the private instance disables.
pub(crate) fn render(base: Option<(&Path, &str)>, disabled: &[&str]) -> Rendered {
    let Some((path, text)) = base else {
        return minimal(disabled, "no k3s containerd config".into());
    };
    let mut t: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return minimal(disabled, format!("k3s containerd config unparsable: {e}")),
    };
    let mut list: Vec<String> = disabled.iter().map(|s| s.to_string()).collect();
    for p in t
        .get("disabled_plugins")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
    {
        if !list.iter().any(|x| x == p) {
            list.push(p.to_string());
        }
    }
    t.insert(
        "disabled_plugins".into(),
        strings(list.iter().map(String::as_str)),
    );
    t.remove("required_plugins");
    for (table, key) in LISTENERS {
        if let Some(toml::Value::Table(sub)) = t.get_mut(table) {
            sub.remove(key);
        }
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut merged = Vec::new();
    if let Some(imports) = t.get("imports").and_then(|v| v.as_array()).cloned() {
        let mut absolute = Vec::new();
        for pattern in imports.iter().filter_map(|v| v.as_str()) {
            let abs = if Path::new(pattern).is_absolute() {
                PathBuf::from(pattern)
            } else {
                dir.join(pattern)
            };
            let files = match expand(&abs) {
                Ok(f) => f,
                Err(why) => return minimal(disabled, why),
            };
            for f in files {
                match check_dropin(&f, disabled) {
                    Ok(Some(what)) => merged.push(what),
                    Ok(None) => {}
                    Err(why) => return minimal(disabled, why),
                }
            }
            absolute.push(abs.display().to_string());
        }
        t.insert(
            "imports".into(),
            strings(absolute.iter().map(String::as_str)),
        );
    }
    Rendered {
        text: header(&t),
        fallback: None,
        merged,
    }
}

/// The files an import pattern names. containerd uses Go's `filepath.Glob`; k3s's patterns
/// have a wildcard only in the file name (`config-v3.toml.d/*.toml`), which is all this
/// supports: `*` and `?` in the last component.
fn expand(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err(format!(
            "import {} has a wildcard in a directory, which preflight cannot check",
            pattern.display()
        ));
    }
    if !name.contains(['*', '?', '[']) {
        return Ok(if pattern.exists() {
            vec![pattern.to_path_buf()]
        } else {
            vec![]
        });
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// `*` and `?` matching of one path component (no character classes: `[` is refused above).
fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some('?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    // Go's Glob does not match a leading dot with `*` either.
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    m(&p, &n)
}

/// Checks one drop-in: `Err(why)` when it would undo what the private instance needs,
/// `Ok(Some(what))` when it brings something worth reporting.
fn check_dropin(path: &Path, disabled: &[&str]) -> Result<Option<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("drop-in {} unreadable: {e}", path.display()))?;
    let t: toml::Table = text
        .parse()
        .map_err(|e| format!("drop-in {} unparsable: {e}", path.display()))?;
    for (table, key) in LISTENERS {
        if listener(&t, table, key) {
            return Err(format!(
                "drop-in {} sets {table}.{key}, which k3s's containerd owns",
                path.display()
            ));
        }
    }
    if let Some(req) = t.get("required_plugins").and_then(|v| v.as_array())
        && let Some(p) = req
            .iter()
            .filter_map(|v| v.as_str())
            .find(|p| disabled.contains(p))
    {
        return Err(format!(
            "drop-in {} requires plugin {p}, which the private containerd disables",
            path.display()
        ));
    }
    let mut what = Vec::new();
    if let Some(d) = t.get("disabled_plugins").and_then(|v| v.as_array()) {
        let names: Vec<&str> = d.iter().filter_map(|v| v.as_str()).collect();
        what.push(format!("disabled_plugins {names:?}"));
    }
    if let Some(p) = t.get("proxy_plugins").and_then(|v| v.as_table()) {
        let names: Vec<&String> = p.keys().collect();
        what.push(format!("proxy_plugins {names:?}"));
    }
    Ok((!what.is_empty()).then(|| {
        format!(
            "{}: {}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            what.join(", ")
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISABLED: &[&str] = &["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"];

    /// The shape k3s generates on containerd 2.x.
    const K3S_V3: &str = r#"# File generated by k3s. DO NOT EDIT. Use config-v3.toml.tmpl instead.
version = 3
imports = ["__DIR__/config-v3.toml.d/*.toml"]
root = "/var/lib/rancher/k3s/agent/containerd"
state = "/run/k3s/containerd"

[grpc]
  address = "/run/k3s/containerd/containerd.sock"

[plugins.'io.containerd.internal.v1.opt']
  path = "/var/lib/rancher/k3s/agent/containerd"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "10010"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  disable_snapshot_annotations = true
"#;

    fn setup(dropins: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, String) {
        let d = tempfile::tempdir().unwrap();
        let drop = d.path().join("config-v3.toml.d");
        std::fs::create_dir_all(&drop).unwrap();
        for (n, t) in dropins {
            std::fs::write(drop.join(n), t).unwrap();
        }
        let text = K3S_V3.replace("__DIR__", &d.path().display().to_string());
        let path = d.path().join("config.toml");
        std::fs::write(&path, &text).unwrap();
        (d, path, text)
    }

    fn disabled_of(text: &str) -> Vec<String> {
        let t: toml::Table = text.parse().unwrap();
        t["disabled_plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn k3s_v3_config_keeps_its_shape_and_imports_with_cri_disabled() {
        let (_d, path, text) = setup(&[
            (
                "10-runtime.toml",
                "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.crun]\nruntime_type = \"io.containerd.runc.v2\"\n",
            ),
            (
                "50-disable.toml",
                "disabled_plugins = [\"io.containerd.snapshotter.v1.btrfs\"]\n",
            ),
            (
                "60-stargz.toml",
                "[proxy_plugins.stargz]\ntype = \"snapshot\"\naddress = \"/run/containerd-stargz-grpc/containerd-stargz-grpc.sock\"\n",
            ),
            (".hidden.toml", "version = = broken"),
            ("notes.txt", "not toml"),
        ]);
        let r = render(Some((&path, &text)), DISABLED);
        assert_eq!(r.fallback, None);
        assert_eq!(
            r.merged,
            vec![
                "50-disable.toml: disabled_plugins [\"io.containerd.snapshotter.v1.btrfs\"]",
                "60-stargz.toml: proxy_plugins [\"stargz\"]"
            ]
        );
        let t: toml::Table = r.text.parse().unwrap();
        assert_eq!(t["version"].as_integer(), Some(3));
        assert_eq!(disabled_of(&r.text), DISABLED);
        assert!(
            t["imports"][0]
                .as_str()
                .unwrap()
                .ends_with("config-v3.toml.d/*.toml")
        );
        assert_eq!(
            t["plugins"]["io.containerd.cri.v1.images"]["snapshotter"].as_str(),
            Some("overlayfs")
        );
    }

    #[test]
    fn base_disabled_plugins_and_listeners_are_merged_or_dropped_not_a_fallback() {
        let base = "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"x.y\"]\nrequired_plugins = [\"io.containerd.grpc.v1.cri\"]\n[ttrpc]\n  address = \"/run/k3s/containerd/containerd.sock.ttrpc\"\n[grpc]\n  tcp_address = \"0.0.0.0:1234\"\n  address = \"/run/k3s/containerd/containerd.sock\"\n[metrics]\n  address = \"127.0.0.1:1338\"\n";
        let r = render(Some((Path::new("/etc/x/config.toml"), base)), DISABLED);
        assert_eq!(r.fallback, None);
        assert_eq!(
            disabled_of(&r.text),
            vec![
                "io.containerd.grpc.v1.cri",
                "io.containerd.cri.v1.runtime",
                "x.y"
            ]
        );
        let t: toml::Table = r.text.parse().unwrap();
        assert!(t.get("required_plugins").is_none());
        assert!(t["ttrpc"].get("address").is_none());
        assert!(t["grpc"].get("tcp_address").is_none());
        assert!(t["metrics"].get("address").is_none());
        assert!(
            t["grpc"].get("address").is_some(),
            "overridden by --address anyway"
        );
    }

    #[test]
    fn dropins_that_would_undo_the_private_setup_mean_the_minimal_config() {
        for (dropin, why) in [
            (
                "[ttrpc]\naddress = \"/run/k3s/containerd/containerd.sock.ttrpc\"\n",
                "ttrpc.address",
            ),
            (
                "required_plugins = [\"io.containerd.cri.v1.runtime\"]\n",
                "requires plugin io.containerd.cri.v1.runtime",
            ),
            (
                "[debug]\naddress = \"/run/k3s/containerd/debug.sock\"\n",
                "debug.address",
            ),
            ("version = = 3", "unparsable"),
        ] {
            let (_d, path, text) = setup(&[("70-x.toml", dropin)]);
            let r = render(Some((&path, &text)), DISABLED);
            assert!(
                r.fallback.as_deref().unwrap().contains(why),
                "{:?}",
                r.fallback
            );
            assert!(r.fallback.as_deref().unwrap().contains("70-x.toml"));
            let t: toml::Table = r.text.parse().unwrap();
            assert_eq!(t["version"].as_integer(), Some(2));
            assert!(t.get("imports").is_none());
            assert_eq!(disabled_of(&r.text), DISABLED);
        }
        let r = render(
            Some((
                Path::new("/etc/c.toml"),
                "version = 2\nimports = [\"/etc/*/x.toml\"]\n",
            )),
            DISABLED,
        );
        assert!(r.fallback.unwrap().contains("wildcard in a directory"));
        assert!(render(None, DISABLED).fallback.is_some());
    }

    #[test]
    fn relative_imports_are_made_absolute() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("config.toml.d")).unwrap();
        let path = d.path().join("config.toml");
        let r = render(
            Some((&path, "version = 2\nimports = [\"config.toml.d/*.toml\"]\n")),
            DISABLED,
        );
        let t: toml::Table = r.text.parse().unwrap();
        assert_eq!(
            t["imports"][0].as_str().unwrap(),
            d.path().join("config.toml.d/*.toml").display().to_string()
        );
    }

    #[test]
    fn globs_match_like_go_for_simple_patterns() {
        assert!(glob_match("*.toml", "10-a.toml"));
        assert!(!glob_match("*.toml", "10-a.toml.bak"));
        assert!(!glob_match("*.toml", ".hidden.toml"));
        assert!(glob_match("1?-*.toml", "10-a.toml"));
        assert!(glob_match("x.toml", "x.toml"));
    }
}
