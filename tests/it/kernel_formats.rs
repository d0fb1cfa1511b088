//! Kernel-message coverage taken from the kernel's own sources (issue 19 point 1), and the
//! records whose text a user chooses (issue 18 point 1).
//!
//! `tests/fixtures/kernel-formats/<version>/<family>.jsonl` hold every printk-family format
//! of the files behind each event kind, extracted from Debian's linux-source packages by
//! `scripts/kernel-formats/refresh.sh` (see the README there). This module instantiates
//! each format with plausible arguments (a small printf interpreter, `args.toml` for the
//! values that matter), feeds the line to the classifier as a kernel record would be fed
//! (alone for a head; after a head of its kind for a follow-up line), and checks it
//! against `kinds.toml` (the kind each format must produce) and `ignore.toml` (formats
//! that must produce nothing, each with its reason). Every format must be covered by
//! one of the two, and every rule must still match a format of some version.
//!
//! Only the classifier's public API is used (`Classifier::feed` and the serialised
//! verdict, the same JSON `nodemedic classify` prints), so this keeps compiling when the
//! classifier's internals move or gain kinds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use nodemedic::kernel::classify::Classifier;
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kernel-formats")
}

/// The family whose formats must never be heads (issue 18): not part of the coverage.
const CARRIERS: &str = "user-text-carriers";

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

/// One extracted format (see scripts/kernel-formats/extract.py for the fields).
#[derive(Debug, Clone, Deserialize)]
struct Format {
    file: String,
    line: u32,
    function: Option<String>,
    #[serde(rename = "macro")]
    macro_: String,
    level: String,
    prefix: String,
    format: String,
    #[serde(default)]
    suffix: String,
    args: Vec<String>,
    #[serde(default)]
    cont: bool,
    #[serde(default)]
    #[allow(dead_code)]
    pieces: u32,
    #[serde(skip)]
    family: String,
    #[serde(skip)]
    version: String,
}

impl Format {
    fn whole(&self) -> String {
        format!("{}{}{}", self.prefix, self.format, self.suffix)
    }

    fn at(&self) -> String {
        format!(
            "{}:{} {}()",
            self.file,
            self.line,
            self.function.as_deref().unwrap_or("?")
        )
    }
}

/// Every version directory's formats, in version order.
fn load_formats() -> Vec<Format> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures/kernel-formats exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && p.join("manifest.json").exists())
        .collect();
    versions.sort_by_key(|p| version_key(&p.file_name().unwrap().to_string_lossy()));
    assert!(
        versions.len() >= 3,
        "expected the 6.1, 6.12 and 7.2 fixtures in {}; run scripts/kernel-formats/refresh.sh",
        fixtures().display()
    );
    let mut out = Vec::new();
    for dir in versions {
        let version = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        for path in files {
            let family = path.file_stem().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let mut f: Format = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{}:{}: {e}", path.display(), n + 1);
                });
                f.family.clone_from(&family);
                f.version.clone_from(&version);
                out.push(f);
            }
        }
    }
    out
}

fn version_key(v: &str) -> Vec<u32> {
    v.split('.').filter_map(|p| p.parse().ok()).collect()
}

// ---------------------------------------------------------------------------------
// Rules: kinds.toml, ignore.toml, args.toml
// ---------------------------------------------------------------------------------

/// A selector of formats; every field given must hold. Shared by `[[expect]]` (with
/// `kind`, optional `role`) and `[[ignore]]` (with `reason`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    kind: Option<String>,
    /// `head`, `continuation` or `any` (default): how the format must be recognised.
    role: Option<String>,
    reason: Option<String>,
    family: Option<String>,
    /// Glob (`*` only) on the path in the kernel tree.
    file: Option<String>,
    /// Globs of paths the rule does not apply to.
    #[serde(default)]
    not_files: Vec<String>,
    #[serde(default)]
    functions: Vec<String>,
    /// Functions the rule does not apply to.
    #[serde(default)]
    not_functions: Vec<String>,
    /// Globs on the printing call (`pr_*`, `ext4_error*`).
    #[serde(default)]
    macros: Vec<String>,
    #[serde(default)]
    levels: Vec<String>,
    /// The call's own format, exactly (one, or a list).
    format: Option<String>,
    #[serde(default)]
    formats: Vec<String>,
    /// Any of these substrings of prefix + format.
    #[serde(default)]
    contains: Vec<String>,
    /// Prefix + format starts with this.
    starts_with: Option<String>,
    /// Only unjoined `KERN_CONT` pieces (true) or only whole lines (false).
    cont: Option<bool>,
}

impl Rule {
    fn selects(&self, f: &Format) -> bool {
        let whole = f.whole();
        self.family.as_ref().is_none_or(|x| *x == f.family)
            && self.file.as_ref().is_none_or(|g| glob(g, &f.file))
            && !self.not_files.iter().any(|g| glob(g, &f.file))
            && (self.functions.is_empty()
                || f.function
                    .as_ref()
                    .is_some_and(|n| self.functions.contains(n)))
            && !f
                .function
                .as_ref()
                .is_some_and(|n| self.not_functions.contains(n))
            && (self.macros.is_empty() || self.macros.iter().any(|g| glob(g, &f.macro_)))
            && (self.levels.is_empty() || self.levels.contains(&f.level))
            && self.format.as_ref().is_none_or(|x| *x == f.format)
            && (self.formats.is_empty() || self.formats.contains(&f.format))
            && (self.contains.is_empty() || self.contains.iter().any(|c| whole.contains(c)))
            && self
                .starts_with
                .as_ref()
                .is_none_or(|s| whole.starts_with(s))
            && self.cont.is_none_or(|c| c == f.cont)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(k) = &self.kind {
            parts.push(format!("kind={k}"));
        }
        if let Some(r) = &self.reason {
            parts.push(format!("reason={r:?}"));
        }
        for (k, v) in [
            ("family", &self.family),
            ("file", &self.file),
            ("format", &self.format),
            ("starts_with", &self.starts_with),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v:?}"));
            }
        }
        for (k, v) in [
            ("functions", &self.functions),
            ("macros", &self.macros),
            ("contains", &self.contains),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={v:?}"));
            }
        }
        parts.join(" ")
    }
}

/// `*` matches any run of characters; everything else is literal.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || !s[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kinds {
    /// Lines that open a splat of each kind, fed before a follow-up line.
    headers: BTreeMap<String, Vec<String>>,
    expect: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ignores {
    ignore: Vec<Rule>,
}

/// A value for every argument whose C expression is `expr`, or contains `contains`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArgRule {
    family: Option<String>,
    file: Option<String>,
    expr: Option<String>,
    contains: Option<String>,
    value: String,
}

impl ArgRule {
    fn fits(&self, f: &Format, expr: &str) -> bool {
        self.family.as_ref().is_none_or(|x| *x == f.family)
            && self.file.as_ref().is_none_or(|g| glob(g, &f.file))
            && self.expr.as_ref().is_none_or(|e| e == expr)
            && self
                .contains
                .as_ref()
                .is_none_or(|c| expr.contains(c.as_str()))
            && (self.expr.is_some() || self.contains.is_some())
    }
}

/// Values for one format's arguments by C expression; each override of a format is one
/// more instantiation of it (instead of the default one). `expect = "none"` marks an
/// instantiation that must not be a head of any kind (an argument changes the meaning:
/// `new` vs `reset` USB device).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Override {
    file: String,
    format: String,
    values: BTreeMap<String, String>,
    expect: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    arg: Vec<ArgRule>,
    #[serde(rename = "override", default)]
    overrides: Vec<Override>,
}

fn load_toml<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------
// Instantiation: a printf interpreter with the kernel's %p extensions
// ---------------------------------------------------------------------------------

struct Conv<'a> {
    flags: &'a str,
    width: Option<Option<usize>>, // Some(None): `*`
    prec: Option<Option<usize>>,
    conv: char,
    ext: &'a str,
}

/// Splits a format into literal text and conversions.
fn parse_format(fmt: &str) -> Vec<Result<String, Conv<'_>>> {
    let mut out = Vec::new();
    let b = fmt.as_bytes();
    let mut lit = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            let ch = fmt[i..].chars().next().unwrap();
            lit.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let start = i;
        i += 1;
        let fs = i;
        while i < b.len() && b"-+ #0".contains(&b[i]) {
            i += 1;
        }
        let flags = &fmt[fs..i];
        let num = |i: &mut usize| -> Option<Option<usize>> {
            if *i < b.len() && b[*i] == b'*' {
                *i += 1;
                return Some(None);
            }
            let s = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            (*i > s).then(|| fmt[s..*i].parse().ok())
        };
        let width = num(&mut i);
        let prec = if i < b.len() && b[i] == b'.' {
            i += 1;
            Some(num(&mut i).unwrap_or(Some(0)))
        } else {
            None
        };
        for len in ["hh", "ll", "h", "l", "L", "z", "j", "t"] {
            if fmt[i..].starts_with(len) {
                i += len.len();
                break;
            }
        }
        let Some(&c) = b.get(i) else {
            lit.push_str(&fmt[start..]);
            break;
        };
        i += 1;
        if c == b'%' {
            lit.push('%');
            continue;
        }
        if !b"diouxXcspn".contains(&c) {
            lit.push_str(&fmt[start..i]);
            continue;
        }
        let es = i;
        if c == b'p' {
            while i < b.len() && (b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
        }
        if !lit.is_empty() {
            out.push(Ok(std::mem::take(&mut lit)));
        }
        out.push(Err(Conv {
            flags,
            width,
            prec,
            conv: c as char,
            ext: &fmt[es..i],
        }));
    }
    if !lit.is_empty() {
        out.push(Ok(lit));
    }
    out
}

struct Instantiator<'a> {
    args: &'a Args,
}

/// Injected text for the carriers test: replaces every string-like argument.
#[derive(Clone, Copy)]
struct Inject<'a> {
    text: &'a str,
}

impl Instantiator<'_> {
    /// The line(s) the kernel prints for `f`, one per override (or one by default), each
    /// with the override's `expect` if it has one.
    fn lines(&self, f: &Format) -> Vec<(String, Option<&str>)> {
        let overrides: Vec<&Override> = self
            .args
            .overrides
            .iter()
            .filter(|o| o.file == f.file && o.format == f.format)
            .collect();
        if overrides.is_empty() {
            return vec![(self.render(f, None, None), None)];
        }
        overrides
            .iter()
            .map(|o| (self.render(f, Some(&o.values), None), o.expect.as_deref()))
            .collect()
    }

    fn render(
        &self,
        f: &Format,
        values: Option<&BTreeMap<String, String>>,
        inject: Option<Inject>,
    ) -> String {
        let whole = f.whole();
        let mut args = f.args.iter().map(String::as_str);
        let mut out = String::new();
        for piece in parse_format(&whole) {
            let c = match piece {
                Ok(lit) => {
                    out.push_str(&lit);
                    continue;
                }
                Err(c) => c,
            };
            let mut width = c.width.flatten();
            let mut prec = c.prec.flatten();
            let mut expr = None;
            // `*` takes an argument, except where one macro expands to two
            // (`cpumask_pr_args(m)` is `nr_cpu_ids, cpumask_bits(m)`).
            let star_pair = |e: &str| e.contains("_pr_args(") || e.starts_with("BTRFS_QGROUP_FMT");
            if c.width == Some(None) {
                let e = args.next().unwrap_or("");
                if star_pair(e) {
                    expr = Some(e);
                } else {
                    width = self.value(f, e, 'd', values).parse().ok();
                }
            }
            if c.prec == Some(None) && expr.is_none() {
                let e = args.next().unwrap_or("");
                prec = self.value(f, e, 'd', values).parse().ok();
            }
            let e = match expr {
                Some(e) => e,
                None => args.next().unwrap_or(""),
            };
            let text = match (c.conv, c.ext) {
                ('s', _) | ('p', "V" | "D" | "D2" | "D3" | "D4" | "d" | "d2" | "d3" | "d4") => {
                    match inject {
                        Some(inj) => {
                            // comm is TASK_COMM_LEN - 1 = 15 bytes (include/linux/sched.h).
                            if e.contains("comm") {
                                truncate(inj.text, 15).to_string()
                            } else {
                                inj.text.to_string()
                            }
                        }
                        None => self.value(f, e, 's', values),
                    }
                }
                ('p', ext) => pointer(ext, &self.value(f, e, 'p', values), width),
                ('c', _) => {
                    let v = self.value(f, e, 'c', values);
                    v.chars().next().unwrap_or('.').to_string()
                }
                (conv, _) => integer(conv, c.flags, &self.value(f, e, conv, values), prec),
            };
            let text = match (c.conv, prec) {
                ('s', Some(p)) => truncate(&text, p).to_string(),
                _ => text,
            };
            out.push_str(&pad(
                &text,
                c.flags,
                if c.conv == 'p' { None } else { width },
            ));
        }
        out
    }

    /// A plausible value for the argument written `expr` in C.
    fn value(
        &self,
        f: &Format,
        expr: &str,
        conv: char,
        values: Option<&BTreeMap<String, String>>,
    ) -> String {
        let expr = expr.trim();
        if let Some(v) = values.and_then(|m| m.get(expr)) {
            return v.clone();
        }
        if expr == "__func__" || expr == "function" || expr == "func" {
            return f.function.clone().unwrap_or_else(|| "func".into());
        }
        if expr == "__LINE__" || expr == "line" {
            return f.line.to_string();
        }
        if let Some(r) = self.args.arg.iter().find(|r| r.fits(f, expr)) {
            return r.value.clone();
        }
        // A C integer literal is its own value (`42`, `0x1f`, `16U`).
        let digits = expr.trim_end_matches(['u', 'U', 'l', 'L']);
        let is_int = digits.strip_prefix("0x").map_or_else(
            || !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
            |h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()),
        );
        if is_int && conv != 's' {
            return digits.to_string();
        }
        if conv == 's'
            && let Some(lit) = first_string_literal(expr)
        {
            return lit;
        }
        if conv == 'c'
            && let Some(ch) = expr.strip_prefix('\'').and_then(|r| r.chars().next())
        {
            return ch.to_string();
        }
        match conv {
            's' => last_identifier(expr),
            'p' => String::new(),
            'c' => ".".into(),
            _ => "1".into(),
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn pad(s: &str, flags: &str, width: Option<usize>) -> String {
    let w = width.unwrap_or(0);
    let len = s.chars().count();
    if len >= w {
        return s.to_string();
    }
    let fill = " ".repeat(w - len);
    if flags.contains('-') {
        format!("{s}{fill}")
    } else if flags.contains('0')
        && !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        let (sign, digits) = s.strip_prefix('-').map_or(("", s), |d| ("-", d));
        format!("{sign}{}{digits}", "0".repeat(w - len))
    } else {
        format!("{fill}{s}")
    }
}

fn integer(conv: char, flags: &str, value: &str, prec: Option<usize>) -> String {
    let v = value.trim();
    let n: i128 = if let Some(h) = v.strip_prefix("0x") {
        i128::from_str_radix(h, 16).unwrap_or(1)
    } else {
        v.parse().unwrap_or(1)
    };
    let mut s = match conv {
        'x' => format!("{:x}", n.max(0)),
        'X' => format!("{:X}", n.max(0)),
        'o' => format!("{:o}", n.max(0)),
        'u' => n.max(0).to_string(),
        _ => n.to_string(),
    };
    if let Some(p) = prec
        && s.len() < p
    {
        s = format!("{}{s}", "0".repeat(p - s.len()));
    }
    if flags.contains('#') && matches!(conv, 'x' | 'X') && n != 0 {
        s = format!("0x{s}");
    }
    if flags.contains('+') && matches!(conv, 'd' | 'i') && n >= 0 {
        s = format!("+{s}");
    }
    s
}

/// The kernel's `%p` extensions (Documentation/core-api/printk-formats.rst).
fn pointer(ext: &str, value: &str, width: Option<usize>) -> String {
    if !value.is_empty() && !ext.starts_with('b') {
        return value.to_string();
    }
    let e = ext.as_bytes().first().copied().unwrap_or(b' ');
    match e {
        b'S' | b'B' => "ext4_lookup+0x24/0x80".into(),
        b's' => "ext4_lookup".into(),
        b'x' => "ffff000012345678".into(),
        b'K' => "0000000000000000".into(),
        b'g' => "sda2".into(),
        b'e' => "-EIO".into(),
        b'U' => "4c0b1d2e-6a7f-4b8c-9d0e-1f2a3b4c5d6e".into(),
        b'I' | b'i' if ext.contains('S') => "192.168.1.10:2049".into(),
        b'I' | b'i' => "192.168.1.10".into(),
        b'M' | b'm' => "dc:a6:32:01:02:03".into(),
        b'a' => "0x00000000fe340000".into(),
        b'R' | b'r' => "[mem 0xfe340000-0xfe3400ff]".into(),
        b'O' => "/soc/mmc@7e300000".into(),
        b't' => "2026-01-01T00:00:00".into(),
        b'h' => vec!["00"; width.unwrap_or(4).min(16)].join(" "),
        b'b' if ext.contains('l') => {
            if value.is_empty() {
                "0-3".into()
            } else {
                value.to_string()
            }
        }
        b'b' => "f".into(),
        b'G' => "GFP_KERNEL".into(),
        b'f' => "/soc/mmc@7e300000".into(),
        _ => "00000000a1b2c3d4".into(),
    }
}

fn first_string_literal(expr: &str) -> Option<String> {
    let start = expr.find('"')?;
    let rest = &expr[start + 1..];
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => return None,
            },
            c => out.push(c),
        }
    }
    None
}

fn last_identifier(expr: &str) -> String {
    let mut last = "";
    for tok in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if tok
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            last = tok;
        }
    }
    if last.is_empty() {
        "x".into()
    } else {
        last.to_string()
    }
}

// ---------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------

/// What the classifier said about a line: its kind (the serialised name, as `nodemedic
/// classify` prints it) and whether it continued an open splat.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Said {
    kind: Option<String>,
    continuation: bool,
}

fn said(v: impl serde::Serialize) -> Said {
    let v = serde_json::to_value(v).expect("a verdict serialises");
    Said {
        kind: v["kind"].as_str().map(str::to_string),
        continuation: v["continuation"].as_bool().unwrap_or(false),
    }
}

/// Feeds one kernel record the way the kernel detector does (`Classifier::feed_record`:
/// only the first line can be a head, the lines after an embedded newline only continue).
/// Returns each line's verdict.
fn feed_record(c: &mut Classifier, text: &str) -> Vec<Said> {
    let mut out = Vec::new();
    c.feed_record(text, None, |v| out.push(said(v)));
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Head,
    Continuation,
    Missing,
}

/// Checks one instantiated line against the kind it must produce.
fn check(line: &str, kind: &str, role: &str, headers: &[String]) -> (Outcome, Said) {
    let mut alone_said = Said {
        kind: None,
        continuation: false,
    };
    if role != "continuation" {
        let mut c = Classifier::new();
        let said = feed_record(&mut c, line);
        alone_said = said[0].clone();
        if said[0].kind.as_deref() == Some(kind) && !said[0].continuation {
            return (Outcome::Head, alone_said);
        }
    }
    if role != "head" {
        let mut c = Classifier::new();
        for h in headers {
            feed_record(&mut c, h);
        }
        let said = feed_record(&mut c, line);
        if said[0].kind.as_deref() == Some(kind) && said[0].continuation {
            return (Outcome::Continuation, said[0].clone());
        }
        if role == "continuation" {
            alone_said = said[0].clone();
        }
    }
    (Outcome::Missing, alone_said)
}

// ---------------------------------------------------------------------------------
// The coverage report
// ---------------------------------------------------------------------------------

enum Decision<'a> {
    Expect(&'a Rule),
    Ignore(&'a Rule),
    Unreviewed,
}

fn decide<'a>(f: &Format, kinds: &'a Kinds, ignores: &'a Ignores) -> Decision<'a> {
    if let Some(r) = kinds.expect.iter().find(|r| r.selects(f)) {
        return Decision::Expect(r);
    }
    if let Some(r) = ignores.ignore.iter().find(|r| r.selects(f)) {
        return Decision::Ignore(r);
    }
    Decision::Unreviewed
}

#[derive(Default)]
struct Counts {
    found: usize,
    head: usize,
    continuation: usize,
    missing: usize,
}

struct Report {
    /// (kind, version) -> counts
    kinds: BTreeMap<(String, String), Counts>,
    /// (reason, version) -> count
    ignored: BTreeMap<(String, String), usize>,
    /// kind -> version -> "line  <- where"
    missing: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// formats that are heads of another kind than expected
    wrong_kind: Vec<String>,
    unreviewed: Vec<String>,
    /// lines recognised as heads today, by kind: the carriers test injects them
    heads: BTreeMap<String, BTreeSet<String>>,
    versions: Vec<String>,
}

fn coverage(formats: &[Format]) -> Report {
    let kinds: Kinds = load_toml("kinds.toml");
    let ignores: Ignores = load_toml("ignore.toml");
    let args: Args = load_toml("args.toml");
    let inst = Instantiator { args: &args };
    let mut r = Report {
        kinds: BTreeMap::new(),
        ignored: BTreeMap::new(),
        missing: BTreeMap::new(),
        wrong_kind: Vec::new(),
        unreviewed: Vec::new(),
        heads: BTreeMap::new(),
        versions: Vec::new(),
    };
    for f in formats {
        if !r.versions.contains(&f.version) {
            r.versions.push(f.version.clone());
        }
        if f.family == CARRIERS {
            continue;
        }
        match decide(f, &kinds, &ignores) {
            Decision::Unreviewed => r.unreviewed.push(format!(
                "{} [{}] {}: {} {:?}",
                f.version,
                f.family,
                f.at(),
                f.macro_,
                f.whole()
            )),
            Decision::Ignore(rule) => {
                *r.ignored
                    .entry((rule.reason.clone().unwrap_or_default(), f.version.clone()))
                    .or_default() += 1;
                // An ignored format must produce nothing: no head of any kind.
                for (line, _) in inst.lines(f) {
                    let mut c = Classifier::new();
                    if let Some(s) = feed_record(&mut c, &line)
                        .into_iter()
                        .find(|s| s.kind.is_some() && !s.continuation)
                    {
                        r.wrong_kind.push(format!(
                            "{} {}: {line:?} is a {} head, but ignore.toml says: {}",
                            f.version,
                            f.at(),
                            s.kind.unwrap_or_default(),
                            rule.reason.as_deref().unwrap_or_default()
                        ));
                    }
                }
            }
            Decision::Expect(rule) => {
                let kind = rule.kind.clone().expect("[[expect]] rules name a kind");
                let role = rule.role.as_deref().unwrap_or("any");
                let headers = kinds.headers.get(&kind).cloned().unwrap_or_default();
                let counts = r
                    .kinds
                    .entry((kind.clone(), f.version.clone()))
                    .or_default();
                counts.found += 1;
                // Every instantiation must pass; the format counts by its worst one.
                let mut worst = Outcome::Head;
                for (line, expect) in inst.lines(f) {
                    if expect == Some("none") {
                        let mut c = Classifier::new();
                        if let Some(s) = feed_record(&mut c, &line)
                            .into_iter()
                            .find(|s| s.kind.is_some() && !s.continuation)
                        {
                            r.wrong_kind.push(format!(
                                "{} {}: {line:?} is a {} head, expected none (args.toml override)",
                                f.version,
                                f.at(),
                                s.kind.unwrap_or_default()
                            ));
                        }
                        continue;
                    }
                    let (outcome, said) = check(&line, &kind, role, &headers);
                    worst = worst.max(outcome);
                    match outcome {
                        Outcome::Head => {
                            r.heads
                                .entry(kind.clone())
                                .or_default()
                                .insert(line.clone());
                        }
                        Outcome::Missing => {
                            if let (Some(other), false) = (&said.kind, said.continuation)
                                && *other != kind
                            {
                                r.wrong_kind.push(format!(
                                    "{} {}: {line:?} is a {other} head, expected {kind}",
                                    f.version,
                                    f.at()
                                ));
                            }
                            r.missing
                                .entry(kind.clone())
                                .or_default()
                                .entry(f.version.clone())
                                .or_default()
                                .insert(format!("{line}\n        <- {} {}", f.at(), f.macro_));
                        }
                        Outcome::Continuation => {}
                    }
                }
                match worst {
                    Outcome::Head => counts.head += 1,
                    Outcome::Continuation => counts.continuation += 1,
                    Outcome::Missing => counts.missing += 1,
                }
            }
        }
    }
    r
}

impl Report {
    fn table(&self) -> String {
        let mut s = String::new();
        let v = &self.versions;
        let _ = writeln!(
            s,
            "\nper kind and version: formats found / matched as head / as continuation / MISSING"
        );
        let _ = write!(s, "{:<30}", "kind");
        for ver in v {
            let _ = write!(s, " | {:^21}", ver);
        }
        let _ = writeln!(s);
        let kinds: BTreeSet<&String> = self.kinds.keys().map(|(k, _)| k).collect();
        for k in kinds {
            let _ = write!(s, "{k:<30}");
            for ver in v {
                match self.kinds.get(&(k.clone(), ver.clone())) {
                    Some(c) => {
                        let miss = if c.missing > 0 {
                            format!("{:>3}!", c.missing)
                        } else {
                            "   0".into()
                        };
                        let _ = write!(
                            s,
                            " | {:>4} {:>4} {:>4} {miss}",
                            c.found, c.head, c.continuation
                        );
                    }
                    None => {
                        let _ = write!(s, " | {:^21}", "-");
                    }
                }
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "\nignored, by reason and version:");
        let reasons: BTreeSet<&String> = self.ignored.keys().map(|(k, _)| k).collect();
        for reason in reasons {
            let counts: Vec<String> = v
                .iter()
                .map(|ver| {
                    format!(
                        "{:>4}",
                        self.ignored
                            .get(&(reason.clone(), ver.clone()))
                            .unwrap_or(&0)
                    )
                })
                .collect();
            let _ = writeln!(s, "  {} | {reason}", counts.join(" "));
        }
        s
    }

    fn missing_list(&self) -> String {
        let mut s = String::new();
        for (kind, by_version) in &self.missing {
            let n: usize = by_version.values().map(BTreeSet::len).sum();
            let _ = writeln!(s, "\n== {kind}: {n} instantiated lines not recognised");
            for (ver, lines) in by_version {
                for l in lines {
                    let _ = writeln!(s, "  [{ver}] {l}");
                }
            }
        }
        s
    }
}

#[test]
fn kernel_formats_from_the_sources_are_classified_or_ignored_with_a_reason() {
    let formats = load_formats();
    let r = coverage(&formats);
    println!("{}", r.table());
    let total_missing: usize = r.kinds.values().map(|c| c.missing).sum();
    let mut problems = String::new();
    if !r.unreviewed.is_empty() {
        let _ = writeln!(
            problems,
            "\n{} formats are neither expected of a kind (kinds.toml) nor ignored with a \
             reason (ignore.toml):",
            r.unreviewed.len()
        );
        for u in &r.unreviewed {
            let _ = writeln!(problems, "  {u}");
        }
    }
    if !r.wrong_kind.is_empty() {
        let _ = writeln!(problems, "\nheads of the wrong kind:");
        for w in &r.wrong_kind {
            let _ = writeln!(problems, "  {w}");
        }
    }
    if total_missing > 0 {
        let _ = writeln!(
            problems,
            "\n{total_missing} formats are not recognised as their kind:{}",
            r.missing_list()
        );
    }
    assert!(problems.is_empty(), "{}\n{problems}", r.table());
}

#[test]
fn kernel_format_rules_name_formats_that_exist() {
    let formats = load_formats();
    let kinds: Kinds = load_toml("kinds.toml");
    let ignores: Ignores = load_toml("ignore.toml");
    let args: Args = load_toml("args.toml");
    let mut stale = Vec::new();
    let rules = kinds
        .expect
        .iter()
        .map(|r| ("kinds.toml [[expect]]", r))
        .chain(ignores.ignore.iter().map(|r| ("ignore.toml [[ignore]]", r)));
    for (file, rule) in rules {
        if rule.kind.is_none() && rule.reason.is_none() {
            stale.push(format!(
                "{file}: neither kind nor reason: {}",
                rule.describe()
            ));
        }
        if rule.reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
            stale.push(format!("{file}: empty reason: {}", rule.describe()));
        }
        if !formats.iter().any(|f| rule.selects(f)) {
            stale.push(format!(
                "{file}: matches no format of any version: {}",
                rule.describe()
            ));
        }
        // Each listed format must exist where the rule's other conditions hold.
        for listed in &rule.formats {
            let exists = formats.iter().any(|f| {
                f.format == *listed
                    && Rule {
                        formats: Vec::new(),
                        ..rule_selector(rule)
                    }
                    .selects(f)
            });
            if !exists {
                stale.push(format!(
                    "{file}: listed format no longer exists: {listed:?} ({})",
                    rule.describe()
                ));
            }
        }
        if let Some(kind) = &rule.kind
            && !kinds.headers.contains_key(kind)
        {
            stale.push(format!("kinds.toml: no [headers] line for {kind}"));
        }
    }
    for o in &args.overrides {
        let named: Vec<&Format> = formats
            .iter()
            .filter(|f| f.file == o.file && f.format == o.format)
            .collect();
        if named.is_empty() {
            stale.push(format!(
                "args.toml [[override]] names no format: {} {:?}",
                o.file, o.format
            ));
        }
        for expr in o.values.keys() {
            if !named.iter().any(|f| f.args.contains(expr)) {
                stale.push(format!(
                    "args.toml [[override]] for {:?}: no argument is written {expr:?}",
                    o.format
                ));
            }
        }
        if let Some(e) = &o.expect
            && e != "none"
            && !kinds.headers.contains_key(e)
        {
            stale.push(format!(
                "args.toml [[override]] expects an unknown kind {e:?}"
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "stale or bad rules:\n{}",
        stale.join("\n")
    );
}

/// A copy of a rule's selector fields (for checking its `formats` list item by item).
fn rule_selector(r: &Rule) -> Rule {
    Rule {
        kind: None,
        role: None,
        reason: None,
        family: r.family.clone(),
        file: r.file.clone(),
        not_files: r.not_files.clone(),
        functions: r.functions.clone(),
        not_functions: r.not_functions.clone(),
        macros: r.macros.clone(),
        levels: r.levels.clone(),
        format: r.format.clone(),
        formats: r.formats.clone(),
        contains: r.contains.clone(),
        starts_with: r.starts_with.clone(),
        cont: r.cont,
    }
}

// ---------------------------------------------------------------------------------
// Issue 18: records that embed user-chosen text are never heads
// ---------------------------------------------------------------------------------

#[test]
fn records_that_carry_user_chosen_text_are_never_heads() {
    let formats = load_formats();
    let kinds: Kinds = load_toml("kinds.toml");
    let args: Args = load_toml("args.toml");
    let inst = Instantiator { args: &args };
    // What a user would name a binary or a file: every head line the classifier knows
    // today, and each kind's splat-opening line from kinds.toml (which covers the kinds
    // still to come).
    let report = coverage(&formats);
    let mut heads: BTreeMap<String, BTreeSet<String>> = report.heads;
    for (kind, lines) in &kinds.headers {
        heads
            .entry(kind.clone())
            .or_default()
            .extend(lines.iter().cloned());
    }
    let carriers: Vec<&Format> = formats.iter().filter(|f| f.family == CARRIERS).collect();
    assert!(
        carriers.len() >= 30,
        "the {CARRIERS} fixtures hold {} formats: is the family still extracted?",
        carriers.len()
    );
    let mut tried = 0usize;
    let mut forged: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for f in &carriers {
        for (kind, lines) in &heads {
            for head in lines {
                // As a name, and after a newline in the name (a new "line" inside the record).
                for text in [head.clone(), format!("x\n{head}")] {
                    let line = inst.render(f, None, Some(Inject { text: &text }));
                    tried += 1;
                    let mut c = Classifier::new();
                    let said = feed_record(&mut c, &line);
                    if let Some(s) = said.iter().find(|s| s.kind.is_some() && !s.continuation) {
                        forged
                            .entry((s.kind.clone().unwrap(), format!("{} {}", f.version, f.at())))
                            .or_default()
                            .insert(format!("{line:?} (injected a {kind} head)"));
                    }
                }
            }
        }
    }
    println!(
        "{} carrier formats x {} head lines: {tried} records tried, {} produced a head",
        carriers.len(),
        heads.values().map(BTreeSet::len).sum::<usize>(),
        forged.values().map(BTreeSet::len).sum::<usize>()
    );
    if !forged.is_empty() {
        let mut s = String::from(
            "\nkind raised | carrier format (version, where) | forged records (first 3)\n",
        );
        for ((kind, at), lines) in &forged {
            let _ = writeln!(s, "{kind:<22} | {at} | {} records", lines.len());
            for l in lines.iter().take(3) {
                let _ = writeln!(s, "      {l}");
            }
        }
        panic!("records carrying user-chosen text were classified as heads:{s}");
    }
}

// ---------------------------------------------------------------------------------
// Whole splats built from the sources' formats
// ---------------------------------------------------------------------------------

/// Each `splats/*.txt` is one splat as the kernel prints it, one record a line; header
/// lines `# expect: <kind> [<kind>...]` name the events it must give, in order, every line
/// after an event's head must continue it, and `# preamble: N` allows N lines before the
/// first head (a `cut here` separator).
#[test]
fn whole_splats_built_from_kernel_formats_group_into_their_events() {
    let dir = fixtures().join("splats");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 4, "expected the splats in {}", dir.display());
    let mut failures = String::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).unwrap();
        let header = |key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(key))
                .flat_map(|k| k.split_whitespace().map(str::to_string))
                .collect()
        };
        let expect = header("# expect:");
        let preamble: usize = header("# preamble:")
            .first()
            .map_or(0, |n| n.parse().expect("# preamble: N"));
        let mut c = Classifier::new();
        let mut got = Vec::new();
        let mut orphans = Vec::new();
        for (n, line) in text.lines().filter(|l| !l.starts_with('#')).enumerate() {
            for said in feed_record(&mut c, line) {
                match (said.kind, said.continuation) {
                    (Some(k), false) => got.push(k),
                    (Some(_), true) => {}
                    (None, _) if got.is_empty() && n < preamble => {}
                    (None, _) => orphans.push(line.to_string()),
                }
            }
        }
        let name = path.file_name().unwrap().to_string_lossy();
        if got != expect {
            let _ = writeln!(failures, "{name}: events {got:?}, expected {expect:?}");
        }
        if !orphans.is_empty() {
            let _ = writeln!(
                failures,
                "{name}: {} lines belong to no event, first: {:?}",
                orphans.len(),
                orphans[0]
            );
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
}

// ---------------------------------------------------------------------------------
// The interpreter itself
// ---------------------------------------------------------------------------------

#[test]
fn printf_interpreter_renders_kernel_conversions() {
    let args = Args {
        arg: vec![ArgRule {
            family: None,
            file: None,
            expr: None,
            contains: Some("mmc_hostname".into()),
            value: "mmc0".into(),
        }],
        overrides: Vec::new(),
    };
    let inst = Instantiator { args: &args };
    let f = |prefix: &str, format: &str, a: &[&str]| Format {
        file: "x.c".into(),
        line: 7,
        function: Some("sdhci_timeout_timer".into()),
        macro_: "pr_err".into(),
        level: "err".into(),
        prefix: prefix.into(),
        format: format.into(),
        suffix: String::new(),
        args: a.iter().map(|s| s.to_string()).collect(),
        cont: false,
        pieces: 1,
        family: "mmc".into(),
        version: "test".into(),
    };
    let render = |x: Format| inst.render(&x, None, None);
    assert_eq!(
        render(f(
            "",
            "%s: Timeout waiting for hardware interrupt.",
            &["mmc_hostname(host->mmc)"]
        )),
        "mmc0: Timeout waiting for hardware interrupt."
    );
    assert_eq!(
        render(f(
            "",
            "%s:%d %05d|%-4s|%4s|%#x|%08lx|%%|%c",
            &[
                "__func__", "__LINE__", "42", "\"ab\"", "\"cd\"", "255", "0xbeef", "'D'"
            ]
        )),
        "sdhci_timeout_timer:7 00042|ab  |  cd|0xff|0000beef|%|D"
    );
    assert_eq!(
        render(f(
            "rcu: ",
            "{ %*pbl } %.*s|%pS|%pg",
            &["cpumask_pr_args(m)", "3", "\"abcdef\"", "ip", "bdev"]
        )),
        "rcu: { 0-3 } abc|ext4_lookup+0x24/0x80|sda2"
    );
}
