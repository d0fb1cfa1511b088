//! Checks the dependency rules written in the crate's doc (`lib.rs`): every `crate::` path
//! (and every `super::` path that leaves its top-level module) in every file under `src/`
//! is an import of one top-level module by another, and must be allowed by [`rules`]. A
//! rule nobody checks drifts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The shared vocabulary and edges: they import nothing of the crate but each other as
/// listed.
const LEAVES: &[&str] = &["model", "formats", "edge", "timefmt", "config"];
/// The shared services every subsystem may use.
const SERVICES: &[&str] = &[
    "hub",
    "detect",
    "state",
    "audit",
    "liveness",
    "metrics",
    "logging",
    "http",
    "keepalive",
];
/// Subsystems: each imports only the shared core (leaves and services) and itself.
const SUBSYSTEMS: &[&str] = &[
    "kernel",
    "limits",
    "mounts",
    "memory",
    "runtime",
    "storage",
    "power",
    "preflight",
    "kube",
    "watchdog",
    "k3s",
    "clock",
    "datastore",
    "certs",
];

/// (module, what it may import besides itself). `None`: everything (only the daemon and
/// the commands, which wire the rest together).
fn rules() -> BTreeMap<&'static str, Option<BTreeSet<&'static str>>> {
    let core: BTreeSet<&str> = LEAVES.iter().chain(SERVICES).copied().collect();
    let mut r = BTreeMap::new();
    for m in ["model", "formats", "edge", "timefmt", "cli"] {
        r.insert(m, Some(BTreeSet::new()));
    }
    r.insert("config", Some(BTreeSet::from(["model"])));
    // The pure engine: the vocabulary and its config, nothing else.
    r.insert("policy", Some(BTreeSet::from(["model", "config"])));
    for m in SERVICES {
        let mut allowed = core.clone();
        if *m == "state" {
            // state.json carries the engine's state (`policy::engine::PolicyState`).
            allowed.insert("policy");
        }
        r.insert(*m, Some(allowed));
    }
    for m in SUBSYSTEMS {
        r.insert(*m, Some(core.clone()));
    }
    // The acting layer: joins the engine's decisions to the cluster (kube) and the reboot
    // path (watchdog); detector subsystems' actuators are handed in by the daemon's wiring.
    let mut remedy = core.clone();
    remedy.extend(["policy", "kube", "watchdog"]);
    r.insert("remedy", Some(remedy));
    r.insert("daemon", None);
    r.insert("commands", None);
    r
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/kernel/classify/rcu.rs` is `[kernel, classify, rcu]`,
/// `src/remedy/mod.rs` is `[remedy]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// Every other top-level module `text` refers to, with the line it does it on.
fn imports(module: &[String], text: &str) -> Vec<(String, usize)> {
    let top = module[0].as_str();
    let mut out = Vec::new();
    // Inline modules (`mod tests {`) deepen `super::`; rustfmt closes each with a `}` at
    // the indentation it opened with.
    let mut inline: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        if inline.last().is_some_and(|i| line == format!("{i}}}")) {
            inline.pop();
        }
        if t.starts_with("//") {
            continue;
        }
        let head = t
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ");
        if head.starts_with("mod ") && t.ends_with('{') {
            inline.push(indent.to_string());
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let before = &rest[..i];
            let after = &rest[i + "crate::".len()..];
            rest = after;
            if before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `nodemedic_crate::`
            }
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                out.push((name, n + 1));
            }
        }
        let depth = module.len() + inline.len();
        let mut rest = line;
        while let Some(i) = rest.find("super::") {
            let mut after = &rest[i..];
            let mut k = 0;
            while let Some(a) = after.strip_prefix("super::") {
                k += 1;
                after = a;
            }
            rest = after;
            if k >= depth {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name != top {
                    out.push((name, n + 1));
                }
            }
        }
    }
    out
}

/// top module -> (imported top module -> first place it is imported).
fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_path_buf();
        if rel == Path::new("main.rs") || rel == Path::new("lib.rs") {
            continue;
        }
        let module = module_path(&rel);
        let text = std::fs::read_to_string(&f).unwrap();
        let entry = g.entry(module[0].clone()).or_default();
        for (name, line) in imports(&module, &text) {
            entry
                .entry(name)
                .or_insert_with(|| format!("src/{}:{line}", rel.display()));
        }
    }
    g
}

/// The top-level modules `lib.rs` declares.
fn declared() -> BTreeSet<String> {
    std::fs::read_to_string(src_dir().join("lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub ")
                .or_else(|| l.strip_prefix("pub(crate) "))
                .unwrap_or(l);
            l.strip_prefix("mod ")
        })
        .map(|l| l.trim_end_matches(';').to_string())
        .filter(|m| m != "architecture")
        .collect()
}

#[test]
fn every_module_has_a_place_in_the_rules() {
    let placed: BTreeSet<String> = rules().keys().map(|k| k.to_string()).collect();
    assert_eq!(
        declared(),
        placed,
        "every top-level module in lib.rs must have a rule here and in lib.rs's doc"
    );
}

#[test]
fn every_folder_imports_only_what_the_rules_allow() {
    let rules = rules();
    let mut broken = Vec::new();
    for (module, imports) in graph() {
        let Some(Some(allowed)) = rules.get(module.as_str()) else {
            continue;
        };
        for (to, at) in imports {
            if !allowed.contains(to.as_str()) {
                broken.push(format!("{module} imports {to} at {at}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports the dependency rules (lib.rs) forbid:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn folders_import_each_other_without_cycles() {
    let g = graph();
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for to in g.get(m).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(to, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(cycle) = visit(m, &g, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn a_forbidden_import_is_seen_wherever_it_is_written() {
    // The checker itself: `crate::` paths anywhere on a line, and `super::` paths that
    // climb out of the top-level module (from a file, or from an inline test module).
    let m = |p: &str| module_path(Path::new(p));
    let found = |p: &str, text: &str| -> Vec<String> {
        imports(&m(p), text).into_iter().map(|(n, _)| n).collect()
    };
    assert_eq!(
        found("kernel/detector.rs", "use crate::memory::MemoryMetrics;"),
        ["memory"]
    );
    assert_eq!(
        found(
            "kernel/detector.rs",
            "    let x = crate::mounts::f(crate::kernel::g());"
        ),
        ["mounts"]
    );
    assert_eq!(found("kernel/mod.rs", "use super::hub::Hub;"), ["hub"]);
    assert!(found("kernel/detector.rs", "use super::classify::Event;").is_empty());
    assert_eq!(
        found(
            "kernel/detector.rs",
            "mod tests {\n    use super::super::super::hub::Hub;\n}"
        ),
        ["hub"]
    );
    assert!(found("kernel/detector.rs", "mod tests {\n    use super::*;\n}").is_empty());
    assert!(found("kernel/detector.rs", "// see crate::memory").is_empty());
}

#[test]
fn no_type_name_is_defined_twice() {
    // Two `Action`s or two `Outcome`s make a reader (and every `use`) guess which is meant.
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            let t = t
                .strip_prefix("pub(crate) ")
                .or_else(|| t.strip_prefix("pub(super) "))
                .or_else(|| t.strip_prefix("pub "))
                .unwrap_or(t);
            let Some(rest) = ["struct ", "enum ", "trait "]
                .iter()
                .find_map(|k| t.strip_prefix(k))
                .or_else(|| {
                    (!line.starts_with(' '))
                        .then(|| t.strip_prefix("type "))
                        .flatten()
                })
            else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                let at = format!("{}:{}", f.strip_prefix(&src).unwrap().display(), n + 1);
                seen.entry(name).or_default().push(at);
            }
        }
    }
    let twice: Vec<String> = seen
        .into_iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(name, at)| format!("{name}: {}", at.join(", ")))
        .collect();
    assert!(
        twice.is_empty(),
        "type names defined twice:\n  {}",
        twice.join("\n  ")
    );
}
