//! What operators scrape, alert and graph: the Prometheus rules (promtool check and unit
//! tests), the PrometheusRule and scrape manifests, the Grafana dashboard, `promtool check
//! metrics` on a live scrape of the real daemon, and that every metric the rules and the
//! dashboard use is one the daemon exports (or is named below as pending or conditional).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::support::nspawn::which;
use super::support::{Daemon, require};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Metrics the rules and dashboard use that other work in progress adds to the daemon.
/// Once one is exported this test fails until it is removed from here.
const PENDING: &[&str] = &[];

/// Metrics registered only when their feature is on, so absent from a default scrape:
/// the Kubernetes client's and the hardware watchdog feeder's; and the power detector's
/// per-zone and firmware families, empty on a machine without thermal zones or
/// `/dev/vcio` (this one). Checked against the source.
const CONDITIONAL: &[&str] = &[
    "nodemedic_kube_api_up",
    "nodemedic_node_cordoned",
    "nodemedic_reboot_lease_held",
    "nodemedic_watchdog_last_keepalive_timestamp_seconds",
    "nodemedic_watchdog_timeout_seconds",
    "nodemedic_thermal_zone_temperature_celsius",
    "nodemedic_thermal_zone_passive_trip_celsius",
    "nodemedic_firmware_throttled",
    // Only where a k3s unit is installed (the k3s detector runs).
    "nodemedic_k3s_probe_up",
    "nodemedic_k3s_unit_restarts",
    "nodemedic_k3s_log_events_total",
];

/// Families registered at start but empty, hence not printed, until the first remediation
/// decision (taken, dry-run or suppressed). Checked against the source.
const EVENT_DRIVEN: &[&str] = &[
    "nodemedic_remediation_actions_total",
    "nodemedic_actions_suppressed_total",
    "nodemedic_reboots_total",
    // One series per certificate file found: none on a machine without k3s.
    "nodemedic_k3s_certificate_expiry_seconds",
    // A series per device appears with the device's first kernel storage error.
    "nodemedic_storage_errors_total",
];

/// promtool's lint findings on names the daemon exports today, to be fixed in the daemon
/// (gauges named `_count` read as a summary's or histogram's count). The test fails when
/// the findings differ from this list, so it shrinks as they are fixed.
const KNOWN_LINT: &[&str] = &[];

fn promtool() -> bool {
    require(
        which("promtool").is_some(),
        "promtool (apt package prometheus)",
    )
}

fn path(rel: &str) -> PathBuf {
    Path::new(REPO).join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs promtool; returns (success, stdout + stderr).
fn run_promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const RULES: &str = "packaging/prometheus/nodemedic-rules.yaml";

#[test]
fn promtool_accepts_the_alerting_rules() {
    if !promtool() {
        return;
    }
    let (ok, out) = run_promtool(&["check", "rules", path(RULES).to_str().unwrap()], None);
    assert!(ok, "{out}");
}

#[test]
fn promtool_unit_tests_of_the_alerting_rules_pass() {
    if !promtool() {
        return;
    }
    let tests = path("packaging/prometheus/nodemedic-rules.test.yaml");
    let (ok, out) = run_promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

/// (alert name, its lines) for each `- alert:` block of the rules file.
fn alert_blocks(rules: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            out.push((name.to_string(), Vec::new()));
        } else if let Some((_, lines)) = out.last_mut() {
            lines.push(line.trim().to_string());
        }
    }
    out
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_and_is_unit_tested() {
    let rules = read(RULES);
    let tests = read("packaging/prometheus/nodemedic-rules.test.yaml");
    let blocks = alert_blocks(&rules);
    assert!(blocks.len() >= 15, "{} alerts", blocks.len());
    for (name, lines) in &blocks {
        let has = |p: &str| lines.iter().any(|l| l.starts_with(p));
        assert!(
            has("severity: critical") || has("severity: warning") || has("severity: info"),
            "{name} has no severity"
        );
        assert!(has("summary: "), "{name} has no summary");
        assert!(has("runbook: "), "{name} has no runbook");
        assert!(
            tests.contains(&format!(
                "alertname: {name}\n    exp_alerts:\n    - exp_labels"
            )),
            "{name} is never tested firing in nodemedic-rules.test.yaml"
        );
    }
}

#[test]
fn the_prometheusrule_manifest_wraps_exactly_the_rules_file() {
    let manifest = read("packaging/k8s/prometheusrule.yaml");
    let rules = read(RULES);
    let head_end = manifest.find("\nspec:\n").expect("no spec:") + "\nspec:\n".len();
    let body: String = rules[rules.find("groups:").unwrap()..]
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    assert!(
        manifest[head_end..] == body,
        "packaging/k8s/prometheusrule.yaml is out of date: run scripts/gen-prometheusrule.sh"
    );
    assert!(manifest.contains("kind: PrometheusRule"));
}

/// The port the daemon listens on by default (`listen` in the default config).
fn default_port() -> String {
    let cfg = read("src/config/default.toml");
    let listen = cfg
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .expect("listen in the default config");
    listen
        .trim_end_matches('"')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_scrape_jobs_target_the_default_port_and_the_plain_one_parses_with_promtool() {
    let port = default_port();
    let plain = read("packaging/prometheus/scrape-config.yaml");
    let operator = read("packaging/k8s/scrape-config.yaml");
    for (name, text) in [("plain", &plain), ("ScrapeConfig", &operator)] {
        assert!(
            text.contains(&format!("replacement: '${{1}}:{port}'")),
            "the {name} job does not scrape port {port}"
        );
    }
    assert!(operator.contains("replacement: nodemedic") && plain.contains("job_name: nodemedic"));
    if !promtool() {
        return;
    }
    // Debian's promtool is built without Kubernetes discovery: check everything else with
    // a static target in its place, together with the rules file.
    let discovery = "    kubernetes_sd_configs:\n      - role: node\n";
    assert!(plain.contains(discovery));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    fs::write(
        &cfg,
        format!(
            "{}rule_files:\n  - {}\n",
            plain.replace(
                discovery,
                "    static_configs:\n      - targets: ['10.0.0.1:10250']\n"
            ),
            path(RULES).display()
        ),
    )
    .unwrap();
    let (ok, out) = run_promtool(&["check", "config", cfg.to_str().unwrap()], None);
    assert!(ok, "{out}");
}

/// The scrape as Prometheus reads it, in the classic text format promtool 2.x lints. The
/// daemon serves OpenMetrics only, which promtool's parser rejects (`info` type); the
/// translation is the one Prometheus applies when ingesting it: counter families get their
/// `_total` name, an info family becomes a gauge named `_info`, `# UNIT` and `# EOF` go.
fn as_prometheus_text(openmetrics: &str) -> String {
    let types: Vec<(String, String)> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|r| r.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let type_of = |n: &str| types.iter().find(|(m, _)| m == n).map(|(_, t)| t.as_str());
    let mut out = String::new();
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)));
        if let Some((kind, rest)) = meta {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, text) = match (type_of(name), kind) {
                (Some("counter"), _) => (format!("{name}_total"), text.to_string()),
                (Some("info"), "TYPE") => (format!("{name}_info"), "gauge".to_string()),
                (Some("info"), _) => (format!("{name}_info"), text.to_string()),
                _ => (name.to_string(), text.to_string()),
            };
            out.push_str(&format!("# {kind} {name} {text}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_openmetrics_translation_renames_counter_and_info_families_as_prometheus_does() {
    let om = "# HELP a_x Things.\n# TYPE a_x counter\na_x_total 1\n# HELP b Build.\n# TYPE b info\nb_info{v=\"1\"} 1\n# UNIT c_seconds seconds\n# EOF\n";
    assert_eq!(
        as_prometheus_text(om),
        "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total 1\n# HELP b_info Build.\n# TYPE b_info gauge\nb_info{v=\"1\"} 1\n"
    );
}

/// A scrape of the real daemon with every detector on and one watched path, so that the
/// per-mount series exist too; taken once every detector has completed a pass.
fn live_scrape() -> String {
    let watched = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &format!("[mounts]\npaths = [\"{}\"]\n", watched.path().display()),
        &[],
    );
    // Every detector whose metrics the rules use has made its first pass (those sharing
    // the periodic thread make theirs one after another).
    d.wait_metrics(std::time::Duration::from_secs(20), |m| {
        ["kernel", "memory", "mounts", "limits", "storage"]
            .iter()
            .all(|det| {
                m.contains(&format!(
                    "nodemedic_detector_last_run_timestamp_seconds{{detector=\"{det}\"}}"
                ))
            })
            && m.contains("nodemedic_mount_up{")
    })
    .expect("no complete scrape within 20 s")
}

#[test]
fn promtool_check_metrics_finds_only_the_known_naming_problems_in_a_live_scrape() {
    if !promtool() {
        return;
    }
    let scrape = live_scrape();
    let (_, out) = run_promtool(&["check", "metrics"], Some(&as_prometheus_text(&scrape)));
    let found: BTreeSet<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let known: BTreeSet<&str> = KNOWN_LINT.iter().copied().collect();
    assert_eq!(
        found, known,
        "promtool check metrics findings differ from KNOWN_LINT (remove fixed ones)"
    );
}

/// Every `nodemedic_*` name in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("nodemedic_") {
        let start = i + pos;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if before_ok {
            into.insert(expr[start..end].to_string());
        }
        i = end;
    }
}

/// The PromQL of every alert (one line each) and every dashboard target.
fn used_exprs() -> Vec<String> {
    let rules = read(RULES);
    let mut exprs: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(|e| {
            assert!(
                !e.starts_with('|') && !e.starts_with('>'),
                "one-line exprs only"
            );
            e.to_string()
        })
        .collect();
    for p in dashboard_panels(&dashboard()) {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap_or_default().to_string());
        }
    }
    exprs
}

/// Series names a scrape offers a query: samples seen, plus those a family declares even
/// with no sample yet (a counter's `_total`, an info's `_info`, a histogram's parts).
fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            match kind {
                "counter" => drop(names.insert(format!("{name}_total"))),
                "info" => drop(names.insert(format!("{name}_info"))),
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                }
                _ => drop(names.insert(name.to_string())),
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Whether `name` (or its family name without `_total`) is a string literal in src/.
fn registered_in_source(name: &str) -> bool {
    fn walk(dir: &Path, needles: &[String]) -> bool {
        fs::read_dir(dir).unwrap().flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p, needles)
            } else {
                p.extension().is_some_and(|x| x == "rs")
                    && fs::read_to_string(&p).is_ok_and(|t| needles.iter().any(|n| t.contains(n)))
            }
        })
    }
    let family = name.strip_suffix("_total").unwrap_or(name);
    walk(
        &path("src"),
        &[format!("\"{name}\""), format!("\"{family}\"")],
    )
}

#[test]
fn every_metric_the_rules_and_dashboard_use_is_in_a_live_scrape_or_named_pending_or_conditional() {
    let mut used = BTreeSet::new();
    for e in used_exprs() {
        metric_names(&e, &mut used);
    }
    assert!(
        used.len() > 25,
        "only {} metric names found: {used:?}",
        used.len()
    );
    let exported = exported_names(&live_scrape());
    let pending: BTreeSet<String> = PENDING.iter().map(|s| s.to_string()).collect();
    let conditional: BTreeSet<String> = CONDITIONAL
        .iter()
        .chain(EVENT_DRIVEN)
        .map(|s| s.to_string())
        .collect();

    let unknown: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(*n) && !pending.contains(*n) && !conditional.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "used by the rules or the dashboard but not exported: {unknown:?}"
    );
    let landed: Vec<&String> = pending.intersection(&exported).collect();
    assert!(
        landed.is_empty(),
        "now exported, remove from PENDING: {landed:?}"
    );
    for n in pending.iter().chain(&conditional) {
        assert!(
            used.contains(n),
            "{n} is listed but no rule or panel uses it"
        );
    }
    for n in &conditional {
        assert!(
            registered_in_source(n),
            "{n} is listed as conditional or event-driven but nothing in src/ registers it"
        );
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("packaging/grafana/nodemedic-dashboard.json"))
        .expect("the dashboard is valid JSON")
}

/// Every panel, including those nested in collapsed rows.
fn dashboard_panels(d: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for nested in p["panels"].as_array().into_iter().flatten() {
            out.push(nested.clone());
        }
        out.push(p.clone());
    }
    out
}

#[test]
fn the_grafana_dashboard_parses_and_every_panel_has_a_valid_query() {
    let d = dashboard();
    let panels = dashboard_panels(&d);
    let mut ids = BTreeSet::new();
    let mut recording = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for p in &panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        assert!(
            p["gridPos"]["w"].as_u64().is_some(),
            "panel {id} has no gridPos"
        );
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default();
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("panel `{title}` has no target"));
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.is_empty(), "panel `{title}` has an empty query");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel `{title}`");
            // Grafana's variables, replaced by what they expand to, for promtool.
            let promql = expr
                .replace("$instance", ".*")
                .replace("$__rate_interval", "5m");
            recording.push_str(&format!(
                "      - record: dashboard:panel{id}:{}\n        expr: '{}'\n",
                t["refId"].as_str().unwrap_or("A"),
                promql.replace('\'', "''")
            ));
        }
    }
    assert!(panels.len() > 10, "{} panels", panels.len());
    if !promtool() {
        return;
    }
    // Every query is valid PromQL: promtool parses it as a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dashboard-queries.yaml");
    fs::write(&f, &recording).unwrap();
    let (ok, out) = run_promtool(&["check", "rules", f.to_str().unwrap()], None);
    assert!(ok, "{out}\n{recording}");
}
