//! Pressure stall information (PSI): parsing `/proc/pressure/memory` or a cgroup2
//! `memory.pressure` file, and turning two `total=` readings into an exact stall ratio.
//!
//! The kernel prints (Documentation/accounting/psi.rst):
//!
//! ```text
//! some avg10=0.12 avg60=0.05 avg300=0.01 total=123456
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//!
//! `avg*` are percentages, exponentially averaged and recomputed only every 2 s, so the
//! assessment never decides on them. `total` is cumulative stall time in microseconds and is
//! brought up to date on every read: the difference of two totals divided by the monotonic
//! time between the reads is the exact share of that window spent stalled.
//!
//! `full` is optional here: the system-wide `cpu` file had no `full` line before 5.13, and
//! a parser shared by every PSI file should not fail on that. Lines of an unknown kind are
//! skipped so a future kernel that adds one does not blind the daemon; within a `some` or
//! `full` line every field is checked. Nothing here panics on any input.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// File name of a cgroup2 group's memory PSI.
pub(crate) const CGROUP_MEMORY_PRESSURE_FILE: &str = "memory.pressure";

/// Pods' parent cgroup under the cgroup2 root: `kubepods.slice` with the systemd cgroup
/// driver, `kubepods` with cgroupfs (k3s's default). Tried in this order.
pub(crate) const PODS_CGROUP_CANDIDATES: [&str; 2] = ["kubepods.slice", "kubepods"];

/// Longest excerpt of offending input quoted in an error; PSI lines are ~55 bytes.
const MAX_ERROR_EXCERPT: usize = 64;

/// One `some` or `full` line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct PsiLine {
    /// Percent of the last ~10 s stalled, as printed (0.00-100.00). Informational only.
    pub(crate) avg10: f64,
    /// Percent of the last ~60 s stalled, as printed.
    pub(crate) avg60: f64,
    /// Percent of the last ~300 s stalled, as printed.
    pub(crate) avg300: f64,
    /// Cumulative stall in microseconds since boot (system) or cgroup creation.
    pub(crate) total_us: u64,
}

/// One read of a PSI file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct PsiSample {
    /// Time at least one non-idle task was stalled.
    pub(crate) some: PsiLine,
    /// Time all non-idle tasks were stalled at once. `None` when the file has no `full` line.
    pub(crate) full: Option<PsiLine>,
}

/// Which line of a PSI file an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PsiLineKind {
    Some,
    Full,
}

impl PsiLineKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PsiLineKind::Some => "some",
            PsiLineKind::Full => "full",
        }
    }
}

impl std::fmt::Display for PsiLineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PsiParseError {
    #[error(
        "PSI text has no `some` line (expected `some avg10=.. avg60=.. avg300=.. total=..`); \
         the file may be empty or PSI disabled (boot with psi=1)"
    )]
    MissingSome,
    #[error("PSI line {line}: a second `{kind}` line; a PSI file has at most one")]
    DuplicateLine { line: usize, kind: PsiLineKind },
    #[error("PSI line {line} (`{kind}`): field `{field}` is missing")]
    MissingField {
        line: usize,
        kind: PsiLineKind,
        field: &'static str,
    },
    #[error("PSI line {line} (`{kind}`): field `{field}` appears twice")]
    DuplicateField {
        line: usize,
        kind: PsiLineKind,
        field: &'static str,
    },
    #[error("PSI line {line} (`{kind}`): `{token}` is not of the form key=value")]
    NotKeyValue {
        line: usize,
        kind: PsiLineKind,
        token: String,
    },
    #[error("PSI line {line} (`{kind}`): `{field}={value}` is not a {expected}")]
    BadNumber {
        line: usize,
        kind: PsiLineKind,
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Why two totals give no ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RatioError {
    #[error("no time passed between the two PSI samples; cannot compute a stall ratio")]
    EmptyWindow,
    #[error(
        "PSI total went backwards ({earlier} us -> {later} us): the cgroup was probably \
         recreated; start a new window"
    )]
    CounterWentBackwards { earlier: u64, later: u64 },
}

/// Parses the text of a PSI file.
pub(crate) fn parse_psi(text: &str) -> Result<PsiSample, PsiParseError> {
    let mut some = None;
    let mut full = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let mut tokens = raw.split_whitespace();
        let (kind, slot) = match tokens.next() {
            Some("some") => (PsiLineKind::Some, &mut some),
            Some("full") => (PsiLineKind::Full, &mut full),
            // Blank lines and kinds a future kernel may add.
            _ => continue,
        };
        if slot.is_some() {
            return Err(PsiParseError::DuplicateLine { line, kind });
        }
        *slot = Some(parse_fields(line, kind, tokens)?);
    }
    Ok(PsiSample {
        some: some.ok_or(PsiParseError::MissingSome)?,
        full,
    })
}

fn parse_fields<'a>(
    line: usize,
    kind: PsiLineKind,
    tokens: impl Iterator<Item = &'a str>,
) -> Result<PsiLine, PsiParseError> {
    const AVG_FIELDS: [&str; 3] = ["avg10", "avg60", "avg300"];
    let mut avgs: [Option<f64>; 3] = [None; 3];
    let mut total = None;
    for token in tokens {
        let Some((key, value)) = token.split_once('=') else {
            return Err(PsiParseError::NotKeyValue {
                line,
                kind,
                token: excerpt(token),
            });
        };
        if key == "total" {
            if total.is_some() {
                return Err(PsiParseError::DuplicateField {
                    line,
                    kind,
                    field: "total",
                });
            }
            total = Some(value.parse::<u64>().map_err(|_| PsiParseError::BadNumber {
                line,
                kind,
                field: "total",
                value: excerpt(value),
                expected: "whole number of microseconds",
            })?);
        } else if let Some(i) = AVG_FIELDS.iter().position(|f| *f == key) {
            let field = AVG_FIELDS[i];
            if avgs[i].is_some() {
                return Err(PsiParseError::DuplicateField { line, kind, field });
            }
            avgs[i] = Some(
                parse_percent(value).ok_or_else(|| PsiParseError::BadNumber {
                    line,
                    kind,
                    field,
                    value: excerpt(value),
                    expected: "percentage like 12.34",
                })?,
            );
        }
        // Unknown keys are skipped: forward compatible, and they carry nothing we use.
    }
    let missing = |field| PsiParseError::MissingField { line, kind, field };
    Ok(PsiLine {
        avg10: avgs[0].ok_or_else(|| missing("avg10"))?,
        avg60: avgs[1].ok_or_else(|| missing("avg60"))?,
        avg300: avgs[2].ok_or_else(|| missing("avg300"))?,
        total_us: total.ok_or_else(|| missing("total"))?,
    })
}

/// The kernel prints `%lu.%02lu`. Accept digits with at most one dot, nothing else, so
/// `inf`, `NaN`, signs and exponents are rejected rather than passed on.
fn parse_percent(value: &str) -> Option<f64> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || value.ends_with('.') {
        return None;
    }
    value.parse().ok()
}

fn excerpt(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_EXCERPT) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Share of `elapsed` spent stalled, from two `total` readings of the same line of the same
/// file: `(later - earlier) / elapsed`, in 0.0..=1.0.
///
/// The result is clamped to 1.0 because each file is read a few microseconds after its
/// monotonic timestamp is taken, so a fully stalled window can overshoot by that jitter.
/// A total that went backwards means the counter restarted (cgroup deleted and recreated);
/// that is an error rather than a huge bogus ratio.
pub(crate) fn stall_ratio(
    earlier_total_us: u64,
    later_total_us: u64,
    elapsed: Duration,
) -> Result<f64, RatioError> {
    let elapsed_us = elapsed.as_micros();
    if elapsed_us == 0 {
        return Err(RatioError::EmptyWindow);
    }
    let stalled_us =
        later_total_us
            .checked_sub(earlier_total_us)
            .ok_or(RatioError::CounterWentBackwards {
                earlier: earlier_total_us,
                later: later_total_us,
            })?;
    Ok((stalled_us as f64 / elapsed_us as f64).min(1.0))
}

/// Path of the pods' cgroup memory PSI file: `<cgroup2_root>/<candidate>/memory.pressure`
/// for the first candidate for which `exists` says yes. `exists` is the only contact with
/// the filesystem, so the caller decides how (and with what timeout) to check.
///
/// Candidates that are empty, absolute or contain `..` are skipped: `Path::join` with an
/// absolute path would silently escape the cgroup root.
pub(crate) fn find_pods_memory_pressure(
    cgroup2_root: &Path,
    candidates: &[&str],
    mut exists: impl FnMut(&Path) -> bool,
) -> Option<PathBuf> {
    candidates
        .iter()
        .filter(|c| is_plain_relative(c))
        .map(|c| cgroup2_root.join(c).join(CGROUP_MEMORY_PRESSURE_FILE))
        .find(|p| exists(p))
}

fn is_plain_relative(candidate: &str) -> bool {
    let path = Path::new(candidate);
    !candidate.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `/proc/pressure/memory` on an 8 GB Pi 5 with Prometheus landing after a cold boot.
    const PI5_SYSTEM_MEMORY: &str = "\
some avg10=12.47 avg60=8.03 avg300=2.91 total=48123991
full avg10=3.10 avg60=1.96 avg300=0.64 total=11020415
";

    /// A cgroup2 `kubepods.slice/memory.pressure` on an idle node.
    const IDLE_PODS_CGROUP: &str = "\
some avg10=0.00 avg60=0.00 avg300=0.00 total=87
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
";

    /// `/proc/pressure/cpu` on a 5.10 kernel: no `full` line.
    const CPU_WITHOUT_FULL: &str = "some avg10=2.32 avg60=2.43 avg300=1.18 total=4942605\n";

    #[test]
    fn system_memory_psi_under_load_parses_every_field() {
        let s = parse_psi(PI5_SYSTEM_MEMORY).unwrap();
        assert_eq!(s.some.avg10, 12.47);
        assert_eq!(s.some.avg60, 8.03);
        assert_eq!(s.some.avg300, 2.91);
        assert_eq!(s.some.total_us, 48_123_991);
        let full = s.full.unwrap();
        assert_eq!(full.avg10, 3.10);
        assert_eq!(full.avg60, 1.96);
        assert_eq!(full.avg300, 0.64);
        assert_eq!(full.total_us, 11_020_415);
    }

    #[test]
    fn idle_cgroup_psi_parses_to_zero_averages_and_small_totals() {
        let s = parse_psi(IDLE_PODS_CGROUP).unwrap();
        assert_eq!(s.some.avg10, 0.0);
        assert_eq!(s.some.total_us, 87);
        assert_eq!(s.full.unwrap().total_us, 0);
    }

    #[test]
    fn file_without_full_line_parses_with_full_absent() {
        let s = parse_psi(CPU_WITHOUT_FULL).unwrap();
        assert_eq!(s.some.total_us, 4_942_605);
        assert_eq!(s.full, None);
    }

    #[test]
    fn lines_in_any_order_without_trailing_newline_parse() {
        let s = parse_psi(
            "full avg10=0.50 avg60=0.10 avg300=0.02 total=900\n\
             some avg10=1.50 avg60=0.30 avg300=0.06 total=2700",
        )
        .unwrap();
        assert_eq!(s.some.total_us, 2700);
        assert_eq!(s.full.unwrap().avg10, 0.5);
    }

    #[test]
    fn unknown_line_kinds_fields_and_blank_lines_are_skipped() {
        let s = parse_psi(
            "\nsome avg10=1.00 avg60=1.00 avg300=1.00 total=5 avg3600=0.2\n\
             burst avg10=9 nonsense\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(s.some.total_us, 5);
        assert!(s.full.is_some());
    }

    #[test]
    fn empty_text_is_missing_some() {
        assert_eq!(parse_psi(""), Err(PsiParseError::MissingSome));
        assert_eq!(parse_psi("\n\n"), Err(PsiParseError::MissingSome));
    }

    #[test]
    fn full_line_alone_is_missing_some() {
        let err = parse_psi("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap_err();
        assert_eq!(err, PsiParseError::MissingSome);
        assert!(err.to_string().contains("psi=1"));
    }

    #[test]
    fn missing_total_is_named_with_its_line() {
        let err = parse_psi("some avg10=0.10 avg60=0.10 avg300=0.10\n").unwrap_err();
        assert_eq!(
            err,
            PsiParseError::MissingField {
                line: 1,
                kind: PsiLineKind::Some,
                field: "total"
            }
        );
        assert_eq!(
            err.to_string(),
            "PSI line 1 (`some`): field `total` is missing"
        );
    }

    #[test]
    fn missing_avg60_on_full_line_is_named() {
        let err = parse_psi(
            "some avg10=0.10 avg60=0.10 avg300=0.10 total=1\nfull avg10=0.10 avg300=0.10 total=1",
        )
        .unwrap_err();
        assert_eq!(
            err,
            PsiParseError::MissingField {
                line: 2,
                kind: PsiLineKind::Full,
                field: "avg60"
            }
        );
    }

    #[test]
    fn negative_or_non_numeric_total_is_rejected() {
        for bad in ["-5", "12ab", "", "1.5", "99999999999999999999999"] {
            let text = format!("some avg10=0.00 avg60=0.00 avg300=0.00 total={bad}");
            match parse_psi(&text) {
                Err(PsiParseError::BadNumber { field, value, .. }) => {
                    assert_eq!(field, "total");
                    assert_eq!(value, bad);
                }
                other => panic!("{bad:?}: expected BadNumber, got {other:?}"),
            }
        }
    }

    #[test]
    fn averages_that_are_not_plain_decimals_are_rejected() {
        for bad in [
            "inf", "NaN", "-1.00", "+1.00", "1e3", ".5", "5.", "1.2.3", "",
        ] {
            let text = format!("some avg10={bad} avg60=0.00 avg300=0.00 total=1");
            assert!(
                matches!(
                    parse_psi(&text),
                    Err(PsiParseError::BadNumber { field: "avg10", .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn token_without_equals_sign_is_named() {
        let err = parse_psi("some avg10=0.00 avg60 avg300=0.00 total=1").unwrap_err();
        assert_eq!(
            err,
            PsiParseError::NotKeyValue {
                line: 1,
                kind: PsiLineKind::Some,
                token: "avg60".into()
            }
        );
    }

    #[test]
    fn repeated_line_or_field_is_rejected() {
        let line = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n";
        assert_eq!(
            parse_psi(&format!("{line}{line}")),
            Err(PsiParseError::DuplicateLine {
                line: 2,
                kind: PsiLineKind::Some
            })
        );
        assert_eq!(
            parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=1 total=2"),
            Err(PsiParseError::DuplicateField {
                line: 1,
                kind: PsiLineKind::Some,
                field: "total"
            })
        );
    }

    #[test]
    fn huge_garbage_token_is_quoted_shortened_in_the_error() {
        let text = format!(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total={}",
            "9x".repeat(500)
        );
        let msg = parse_psi(&text).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.contains("9x9x") && msg.contains("..."));
    }

    #[test]
    fn stall_ratio_is_delta_over_elapsed() {
        // 1.5 s stalled in a 10 s window.
        let r = stall_ratio(2_000_000, 3_500_000, Duration::from_secs(10)).unwrap();
        assert!((r - 0.15).abs() < 1e-12, "{r}");
        assert_eq!(stall_ratio(7, 7, Duration::from_secs(1)).unwrap(), 0.0);
    }

    #[test]
    fn stall_ratio_overshoot_from_read_jitter_is_clamped_to_one() {
        let r = stall_ratio(0, 10_000_040, Duration::from_secs(10)).unwrap();
        assert_eq!(r, 1.0);
    }

    #[test]
    fn stall_ratio_refuses_a_counter_that_went_backwards() {
        assert_eq!(
            stall_ratio(9_000_000, 1_200, Duration::from_secs(10)),
            Err(RatioError::CounterWentBackwards {
                earlier: 9_000_000,
                later: 1_200
            })
        );
    }

    #[test]
    fn stall_ratio_refuses_an_empty_or_sub_microsecond_window() {
        assert_eq!(
            stall_ratio(0, 5, Duration::ZERO),
            Err(RatioError::EmptyWindow)
        );
        assert_eq!(
            stall_ratio(0, 5, Duration::from_nanos(999)),
            Err(RatioError::EmptyWindow)
        );
    }

    #[test]
    fn pods_pressure_file_prefers_the_systemd_slice_when_present() {
        let mut asked = Vec::new();
        let found =
            find_pods_memory_pressure(Path::new("/sys/fs/cgroup"), &PODS_CGROUP_CANDIDATES, |p| {
                asked.push(p.to_path_buf());
                true
            });
        assert_eq!(
            found,
            Some(PathBuf::from(
                "/sys/fs/cgroup/kubepods.slice/memory.pressure"
            ))
        );
        assert_eq!(asked.len(), 1);
    }

    #[test]
    fn pods_pressure_file_falls_back_to_cgroupfs_kubepods() {
        let mut asked = Vec::new();
        let found = find_pods_memory_pressure(
            Path::new("/sys/fs/cgroup/unified"),
            &PODS_CGROUP_CANDIDATES,
            |p| {
                asked.push(p.to_path_buf());
                p.ends_with("kubepods/memory.pressure")
            },
        );
        assert_eq!(
            found,
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/kubepods/memory.pressure"
            ))
        );
        assert_eq!(
            asked,
            vec![
                PathBuf::from("/sys/fs/cgroup/unified/kubepods.slice/memory.pressure"),
                PathBuf::from("/sys/fs/cgroup/unified/kubepods/memory.pressure"),
            ]
        );
    }

    #[test]
    fn no_pods_cgroup_gives_none() {
        let found =
            find_pods_memory_pressure(Path::new("/sys/fs/cgroup"), &PODS_CGROUP_CANDIDATES, |_| {
                false
            });
        assert_eq!(found, None);
    }

    #[test]
    fn candidates_escaping_the_cgroup_root_are_never_probed() {
        let mut asked = Vec::new();
        let found = find_pods_memory_pressure(
            Path::new("/sys/fs/cgroup"),
            &[
                "/etc",
                "../kubepods",
                "",
                "kubepods.slice/../x",
                "k3s/kubepods",
            ],
            |p| {
                asked.push(p.to_path_buf());
                false
            },
        );
        assert_eq!(found, None);
        assert_eq!(
            asked,
            vec![PathBuf::from("/sys/fs/cgroup/k3s/kubepods/memory.pressure")]
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
            let _ = parse_psi(&text);
        }

        #[test]
        fn parser_never_panics_on_psi_shaped_noise(
            lines in proptest::collection::vec(
                "(some|full|burst)( (avg10|avg60|avg300|total|x)=[-0-9.a-z]{0,8}){0,6}",
                0..4,
            )
        ) {
            let _ = parse_psi(&lines.join("\n"));
        }

        #[test]
        fn well_formed_lines_round_trip(
            a in 0u32..10_000, b in 0u32..10_000, c in 0u32..10_000, total: u64,
        ) {
            let text = format!(
                "some avg10={}.{:02} avg60={}.{:02} avg300={}.{:02} total={total}\n",
                a / 100, a % 100, b / 100, b % 100, c / 100, c % 100
            );
            let s = parse_psi(&text).unwrap();
            prop_assert_eq!(s.some.total_us, total);
            prop_assert!((s.some.avg10 - f64::from(a) / 100.0).abs() < 1e-9);
            prop_assert!((s.some.avg60 - f64::from(b) / 100.0).abs() < 1e-9);
            prop_assert!((s.some.avg300 - f64::from(c) / 100.0).abs() < 1e-9);
        }

        #[test]
        fn stall_ratio_is_always_within_zero_and_one(
            earlier: u64, later: u64, nanos in 0u64..u64::MAX,
        ) {
            if let Ok(r) = stall_ratio(earlier, later, Duration::from_nanos(nanos)) {
                prop_assert!((0.0..=1.0).contains(&r));
            }
        }
    }
}
