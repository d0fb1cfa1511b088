//! `/proc/meminfo` parsing: the numbers the memory fallback needs when PSI is off.
//!
//! Lines look like `MemTotal:        8245840 kB`; the kernel's "kB" means KiB, so values
//! are multiplied by 1024. Only the keys used here are checked strictly; the file has ~50
//! other lines that vary by kernel version and config (`HugePages_Total:` has no unit) and
//! none of them should make the daemon blind.
//!
//! `MemAvailable` (the kernel's own estimate of memory usable without swapping, which
//! counts reclaimable page cache) appeared in Linux 3.14. On older kernels it is `None`
//! rather than an estimate made up here: `MemFree` alone undercounts badly on a node whose
//! RAM is mostly page cache, so the caller must say the fallback is unavailable.

use serde::{Deserialize, Serialize};

/// Bytes per "kB" in /proc/meminfo (the kernel prints KiB).
const BYTES_PER_KB: u64 = 1024;

/// Longest excerpt of offending input quoted in an error.
const MAX_ERROR_EXCERPT: usize = 64;

/// The fields of /proc/meminfo this daemon uses, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemInfo {
    pub(crate) mem_total_bytes: u64,
    pub(crate) mem_free_bytes: u64,
    /// `None` on kernels before 3.14, which do not print `MemAvailable`.
    pub(crate) mem_available_bytes: Option<u64>,
    /// 0 when the node has no swap (the kernel still prints the line).
    pub(crate) swap_total_bytes: u64,
    pub(crate) swap_free_bytes: u64,
}

impl MemInfo {
    /// MemAvailable / MemTotal in 0.0..=1.0, or `None` when the kernel lacks MemAvailable.
    pub(crate) fn mem_available_fraction(&self) -> Option<f64> {
        self.mem_available_bytes
            .map(|a| fraction(a, self.mem_total_bytes))
    }

    pub(crate) fn has_swap(&self) -> bool {
        self.swap_total_bytes > 0
    }

    /// SwapFree / SwapTotal in 0.0..=1.0, or `None` when there is no swap at all.
    pub(crate) fn swap_free_fraction(&self) -> Option<f64> {
        self.has_swap()
            .then(|| fraction(self.swap_free_bytes, self.swap_total_bytes))
    }
}

/// `part / whole` clamped to 0.0..=1.0; a zero `whole` gives 0.0.
fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64).min(1.0)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MemInfoParseError {
    #[error(
        "/proc/meminfo has no `{field}:` line; every Linux kernel prints it, so the text \
         passed in is probably not /proc/meminfo"
    )]
    MissingField { field: &'static str },
    #[error("/proc/meminfo line {line}: `{field}:` appears twice")]
    DuplicateField { line: usize, field: &'static str },
    #[error("/proc/meminfo line {line}: `{field}:` value `{value}` is not a whole number")]
    BadNumber {
        line: usize,
        field: &'static str,
        value: String,
    },
    #[error("/proc/meminfo line {line}: `{field}:` has unit `{unit}`, expected `kB`")]
    BadUnit {
        line: usize,
        field: &'static str,
        unit: String,
    },
    #[error("/proc/meminfo line {line}: `{field}:` value {kb} kB overflows a byte count")]
    Overflow {
        line: usize,
        field: &'static str,
        kb: u64,
    },
    #[error("/proc/meminfo reports MemTotal: 0 kB; cannot compute memory fractions")]
    ZeroMemTotal,
}

/// Keys read, and where each goes. `MemAvailable` is the only optional one.
const FIELDS: [&str; 5] = [
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "SwapTotal",
    "SwapFree",
];
const MEM_AVAILABLE: usize = 2;

/// Parses the text of /proc/meminfo.
pub(crate) fn parse_meminfo(text: &str) -> Result<MemInfo, MemInfoParseError> {
    let mut values: [Option<u64>; FIELDS.len()] = [None; FIELDS.len()];
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let Some((key, rest)) = raw.split_once(':') else {
            continue;
        };
        let Some(slot) = FIELDS.iter().position(|f| *f == key.trim()) else {
            continue;
        };
        let field = FIELDS[slot];
        if values[slot].is_some() {
            return Err(MemInfoParseError::DuplicateField { line, field });
        }
        values[slot] = Some(parse_kb_value(line, field, rest)?);
    }
    let required = |i: usize| values[i].ok_or(MemInfoParseError::MissingField { field: FIELDS[i] });
    let info = MemInfo {
        mem_total_bytes: required(0)?,
        mem_free_bytes: required(1)?,
        mem_available_bytes: values[MEM_AVAILABLE],
        swap_total_bytes: required(3)?,
        swap_free_bytes: required(4)?,
    };
    if info.mem_total_bytes == 0 {
        return Err(MemInfoParseError::ZeroMemTotal);
    }
    Ok(info)
}

/// `   8245840 kB` -> bytes. Exactly a number and the unit `kB`.
fn parse_kb_value(line: usize, field: &'static str, rest: &str) -> Result<u64, MemInfoParseError> {
    let mut tokens = rest.split_whitespace();
    let value = tokens.next().unwrap_or("");
    let kb = value
        .parse::<u64>()
        .map_err(|_| MemInfoParseError::BadNumber {
            line,
            field,
            value: excerpt(value),
        })?;
    let unit: Vec<&str> = tokens.collect();
    if unit != ["kB"] {
        return Err(MemInfoParseError::BadUnit {
            line,
            field,
            unit: excerpt(&unit.join(" ")),
        });
    }
    kb.checked_mul(BYTES_PER_KB)
        .ok_or(MemInfoParseError::Overflow { line, field, kb })
}

fn excerpt(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_EXCERPT) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 8 GB Pi 5, Ubuntu raspi kernel, no swap, k3s server plus Prometheus after a cold boot
    /// (~80% used, most of the rest page cache).
    const PI5_8GB_NO_SWAP: &str = "\
MemTotal:        8245840 kB
MemFree:          402116 kB
MemAvailable:    1583204 kB
Buffers:           61532 kB
Cached:          1298044 kB
SwapCached:            0 kB
Active:          4871256 kB
Inactive:        2296880 kB
Active(anon):    4533408 kB
Inactive(anon):  1457092 kB
Unevictable:       31688 kB
Mlocked:           27640 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Zswap:                 0 kB
Zswapped:              0 kB
Dirty:               884 kB
AnonPages:       5829456 kB
Mapped:           602336 kB
Shmem:            188212 kB
KReclaimable:      96852 kB
Slab:             236768 kB
PageTables:        41264 kB
CommitLimit:     4122920 kB
Committed_AS:   12808152 kB
VmallocTotal:   68180246528 kB
Percpu:             3264 kB
CmaTotal:          65536 kB
CmaFree:            6420 kB
HugePages_Total:       0
HugePages_Free:        0
Hugepagesize:       2048 kB
";

    /// The same board class with a 2 GiB zram swap half used.
    const PI4_8GB_WITH_ZRAM: &str = "\
MemTotal:        7998260 kB
MemFree:          211080 kB
MemAvailable:     960312 kB
Buffers:           20476 kB
Cached:           845920 kB
SwapCached:        52764 kB
SwapTotal:       2097148 kB
SwapFree:        1048572 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    /// A 1 GB Pi 3 under pressure: dphys-swapfile's 100 MB swap almost gone.
    const PI3_1GB_UNDER_PRESSURE: &str = "\
MemTotal:         926060 kB
MemFree:           17368 kB
MemAvailable:      38432 kB
Buffers:            1124 kB
Cached:            47860 kB
SwapCached:         9336 kB
SwapTotal:        102396 kB
SwapFree:           2112 kB
";

    /// A 3.10 kernel: no MemAvailable line.
    const KERNEL_3_10_NO_MEMAVAILABLE: &str = "\
MemTotal:        1015424 kB
MemFree:          614220 kB
Buffers:           30116 kB
Cached:           240864 kB
SwapCached:            0 kB
SwapTotal:        524284 kB
SwapFree:         524284 kB
";

    #[test]
    fn pi5_without_swap_parses_every_field_in_bytes() {
        let m = parse_meminfo(PI5_8GB_NO_SWAP).unwrap();
        assert_eq!(m.mem_total_bytes, 8_245_840 * 1024);
        assert_eq!(m.mem_free_bytes, 402_116 * 1024);
        assert_eq!(m.mem_available_bytes, Some(1_583_204 * 1024));
        assert_eq!(m.swap_total_bytes, 0);
        assert_eq!(m.swap_free_bytes, 0);
        assert!(!m.has_swap());
        assert_eq!(m.swap_free_fraction(), None);
        let avail = m.mem_available_fraction().unwrap();
        assert!((avail - 1_583_204.0 / 8_245_840.0).abs() < 1e-12);
    }

    #[test]
    fn pi4_with_zram_reports_half_the_swap_free() {
        let m = parse_meminfo(PI4_8GB_WITH_ZRAM).unwrap();
        assert_eq!(m.mem_total_bytes, 7_998_260 * 1024);
        assert_eq!(m.mem_free_bytes, 211_080 * 1024);
        assert_eq!(m.mem_available_bytes, Some(960_312 * 1024));
        assert_eq!(m.swap_total_bytes, 2_097_148 * 1024);
        assert_eq!(m.swap_free_bytes, 1_048_572 * 1024);
        assert!(m.has_swap());
        assert!((m.swap_free_fraction().unwrap() - 0.5).abs() < 1e-5);
    }

    #[test]
    fn one_gigabyte_board_under_pressure_shows_low_fractions() {
        let m = parse_meminfo(PI3_1GB_UNDER_PRESSURE).unwrap();
        assert_eq!(m.mem_total_bytes, 926_060 * 1024);
        assert_eq!(m.mem_free_bytes, 17_368 * 1024);
        assert_eq!(m.mem_available_bytes, Some(38_432 * 1024));
        assert_eq!(m.swap_total_bytes, 102_396 * 1024);
        assert_eq!(m.swap_free_bytes, 2_112 * 1024);
        assert!(m.mem_available_fraction().unwrap() < 0.05);
        assert!(m.swap_free_fraction().unwrap() < 0.03);
    }

    #[test]
    fn old_kernel_without_memavailable_says_so_instead_of_guessing() {
        let m = parse_meminfo(KERNEL_3_10_NO_MEMAVAILABLE).unwrap();
        assert_eq!(m.mem_available_bytes, None);
        assert_eq!(m.mem_available_fraction(), None);
        assert_eq!(m.mem_total_bytes, 1_015_424 * 1024);
        assert_eq!(m.mem_free_bytes, 614_220 * 1024);
        assert_eq!(m.swap_free_fraction(), Some(1.0));
    }

    #[test]
    fn fractions_are_clamped_when_counters_disagree() {
        let m = MemInfo {
            mem_total_bytes: 100,
            mem_free_bytes: 0,
            mem_available_bytes: Some(150),
            swap_total_bytes: 10,
            swap_free_bytes: 11,
        };
        assert_eq!(m.mem_available_fraction(), Some(1.0));
        assert_eq!(m.swap_free_fraction(), Some(1.0));
    }

    #[test]
    fn empty_text_names_the_first_missing_field() {
        assert_eq!(
            parse_meminfo(""),
            Err(MemInfoParseError::MissingField { field: "MemTotal" })
        );
    }

    #[test]
    fn missing_swapfree_is_named() {
        let text = "MemTotal: 100 kB\nMemFree: 50 kB\nSwapTotal: 0 kB\n";
        let err = parse_meminfo(text).unwrap_err();
        assert_eq!(err, MemInfoParseError::MissingField { field: "SwapFree" });
        assert!(err.to_string().contains("`SwapFree:`"));
    }

    #[test]
    fn wrong_unit_or_missing_unit_is_rejected_for_used_fields() {
        let err = parse_meminfo("MemTotal: 8000000 MB\n").unwrap_err();
        assert_eq!(
            err,
            MemInfoParseError::BadUnit {
                line: 1,
                field: "MemTotal",
                unit: "MB".into()
            }
        );
        let err = parse_meminfo("MemTotal: 100 kB\nMemFree: 50\n").unwrap_err();
        assert_eq!(
            err,
            MemInfoParseError::BadUnit {
                line: 2,
                field: "MemFree",
                unit: String::new()
            }
        );
    }

    #[test]
    fn non_numeric_or_negative_value_is_rejected() {
        for bad in ["-5", "lots", "", "1.5"] {
            let text = format!("MemTotal: {bad} kB\n");
            match parse_meminfo(&text) {
                Err(MemInfoParseError::BadNumber { line, field, .. }) => {
                    assert_eq!((line, field), (1, "MemTotal"));
                }
                other => panic!("{bad:?}: expected BadNumber, got {other:?}"),
            }
        }
    }

    #[test]
    fn value_too_large_for_bytes_is_an_overflow_not_a_wrap() {
        let text = format!("MemTotal: {} kB\n", u64::MAX / 2);
        assert_eq!(
            parse_meminfo(&text),
            Err(MemInfoParseError::Overflow {
                line: 1,
                field: "MemTotal",
                kb: u64::MAX / 2
            })
        );
    }

    #[test]
    fn duplicated_used_field_is_rejected() {
        let text = format!("{PI3_1GB_UNDER_PRESSURE}MemAvailable: 1 kB\n");
        assert_eq!(
            parse_meminfo(&text),
            Err(MemInfoParseError::DuplicateField {
                line: 9,
                field: "MemAvailable"
            })
        );
    }

    #[test]
    fn zero_memtotal_is_rejected() {
        let text = "MemTotal: 0 kB\nMemFree: 0 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n";
        assert_eq!(parse_meminfo(text), Err(MemInfoParseError::ZeroMemTotal));
    }

    #[test]
    fn unrelated_odd_lines_are_ignored() {
        let text =
            format!("garbage without colon\nDirectMap4k: lots of pages\n{PI3_1GB_UNDER_PRESSURE}");
        assert_eq!(
            parse_meminfo(&text).unwrap(),
            parse_meminfo(PI3_1GB_UNDER_PRESSURE).unwrap()
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = parse_meminfo(&text);
        }

        #[test]
        fn parser_never_panics_on_meminfo_shaped_noise(
            lines in proptest::collection::vec(
                "(MemTotal|MemFree|MemAvailable|SwapTotal|SwapFree|Cached):\
                 [ ]{0,8}[-0-9]{0,22}( kB| MB|)",
                0..8,
            )
        ) {
            let _ = parse_meminfo(&lines.join("\n"));
        }

        #[test]
        fn well_formed_values_round_trip(
            total in 1u64..(1 << 40), free: u32, avail: u32, swap_total: u32, swap_free: u32,
        ) {
            let text = format!(
                "MemTotal: {total} kB\nMemFree: {free} kB\nMemAvailable: {avail} kB\n\
                 SwapTotal: {swap_total} kB\nSwapFree: {swap_free} kB\n"
            );
            let m = parse_meminfo(&text).unwrap();
            prop_assert_eq!(m.mem_total_bytes, total * 1024);
            prop_assert_eq!(m.mem_free_bytes, u64::from(free) * 1024);
            prop_assert_eq!(m.mem_available_bytes, Some(u64::from(avail) * 1024));
            prop_assert_eq!(m.swap_total_bytes, u64::from(swap_total) * 1024);
            prop_assert_eq!(m.swap_free_bytes, u64::from(swap_free) * 1024);
            let f = m.mem_available_fraction().unwrap();
            prop_assert!((0.0..=1.0).contains(&f));
        }
    }
}
