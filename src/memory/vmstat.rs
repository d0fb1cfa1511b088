//! `/proc/vmstat` parsing (`name value` per line) and per-second rates between two reads.
//!
//! Used as evidence next to PSI: swap-in/out rates show thrashing on a node with swap,
//! major faults show refault thrashing on a node without (executables and page cache read
//! back from the SD card), and `oom_kill` counts kernel OOM kills. Only these keys are
//! checked strictly; the other ~180 lines vary by kernel and config and are skipped.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest excerpt of offending input quoted in an error.
const MAX_ERROR_EXCERPT: usize = 64;

/// The /proc/vmstat counters this daemon uses. All are cumulative since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VmStat {
    /// Pages swapped in.
    pub(crate) pswpin: u64,
    /// Pages swapped out.
    pub(crate) pswpout: u64,
    /// Page faults that needed I/O.
    pub(crate) pgmajfault: u64,
    /// Kernel OOM kills; `None` before Linux 4.13, which added the counter.
    pub(crate) oom_kill: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VmStatParseError {
    #[error(
        "/proc/vmstat has no `{field}` line; every supported kernel prints it, so the text \
         passed in is probably not /proc/vmstat"
    )]
    MissingField { field: &'static str },
    #[error("/proc/vmstat line {line}: `{field}` appears twice")]
    DuplicateField { line: usize, field: &'static str },
    #[error("/proc/vmstat line {line}: `{field} {value}` is not a whole number")]
    BadNumber {
        line: usize,
        field: &'static str,
        value: String,
    },
    #[error("/proc/vmstat line {line}: `{field}` has extra text `{extra}` after its value")]
    TrailingText {
        line: usize,
        field: &'static str,
        extra: String,
    },
}

/// Why two reads give no rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RateError {
    #[error("no time passed between the two /proc/vmstat reads; cannot compute a rate")]
    EmptyWindow,
    #[error(
        "/proc/vmstat `{counter}` went backwards ({earlier} -> {later}); the two reads are \
         not from the same boot"
    )]
    CounterWentBackwards {
        counter: &'static str,
        earlier: u64,
        later: u64,
    },
    #[error("page size 0 given; pass the system page size (sysconf(_SC_PAGESIZE))")]
    ZeroPageSize,
}

const FIELDS: [&str; 4] = ["pswpin", "pswpout", "pgmajfault", "oom_kill"];
const OOM_KILL: usize = 3;

/// Parses the text of /proc/vmstat.
pub(crate) fn parse_vmstat(text: &str) -> Result<VmStat, VmStatParseError> {
    let mut values: [Option<u64>; FIELDS.len()] = [None; FIELDS.len()];
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let mut tokens = raw.split_whitespace();
        let Some(slot) = tokens
            .next()
            .and_then(|name| FIELDS.iter().position(|f| *f == name))
        else {
            continue;
        };
        let field = FIELDS[slot];
        if values[slot].is_some() {
            return Err(VmStatParseError::DuplicateField { line, field });
        }
        let value = tokens.next().unwrap_or("");
        let parsed = value.parse().map_err(|_| VmStatParseError::BadNumber {
            line,
            field,
            value: excerpt(value),
        })?;
        if let Some(extra) = tokens.next() {
            return Err(VmStatParseError::TrailingText {
                line,
                field,
                extra: excerpt(extra),
            });
        }
        values[slot] = Some(parsed);
    }
    let required = |i: usize| values[i].ok_or(VmStatParseError::MissingField { field: FIELDS[i] });
    Ok(VmStat {
        pswpin: required(0)?,
        pswpout: required(1)?,
        pgmajfault: required(2)?,
        oom_kill: values[OOM_KILL],
    })
}

fn excerpt(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_EXCERPT) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Events per second of one cumulative counter between two reads.
pub(crate) fn counter_rate(
    counter: &'static str,
    earlier: u64,
    later: u64,
    elapsed: Duration,
) -> Result<f64, RateError> {
    if elapsed.is_zero() {
        return Err(RateError::EmptyWindow);
    }
    let delta = later
        .checked_sub(earlier)
        .ok_or(RateError::CounterWentBackwards {
            counter,
            earlier,
            later,
        })?;
    Ok(delta as f64 / elapsed.as_secs_f64())
}

/// Swap traffic between two reads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct SwapRate {
    pub(crate) in_pages_per_s: f64,
    pub(crate) out_pages_per_s: f64,
    pub(crate) in_bytes_per_s: f64,
    pub(crate) out_bytes_per_s: f64,
}

/// Swap-in and swap-out rates. `page_size` must be the running kernel's (4 KiB on most
/// arm64 kernels, 16 KiB on the Raspberry Pi 5's default kernel), never assumed.
pub(crate) fn swap_rate(
    earlier: &VmStat,
    later: &VmStat,
    elapsed: Duration,
    page_size: u64,
) -> Result<SwapRate, RateError> {
    if page_size == 0 {
        return Err(RateError::ZeroPageSize);
    }
    let in_pages_per_s = counter_rate("pswpin", earlier.pswpin, later.pswpin, elapsed)?;
    let out_pages_per_s = counter_rate("pswpout", earlier.pswpout, later.pswpout, elapsed)?;
    let page = page_size as f64;
    Ok(SwapRate {
        in_pages_per_s,
        out_pages_per_s,
        in_bytes_per_s: in_pages_per_s * page,
        out_bytes_per_s: out_pages_per_s * page,
    })
}

/// OOM kills between two reads; `None` when either read lacks the counter or it went
/// backwards (the reads are not comparable).
pub(crate) fn oom_kills_between(earlier: &VmStat, later: &VmStat) -> Option<u64> {
    later.oom_kill?.checked_sub(earlier.oom_kill?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Excerpt of /proc/vmstat on a Pi 4 with zram swap in use and two OOM kills.
    const PI4_SWAPPING: &str = "\
nr_free_pages 52770
nr_zone_inactive_anon 364273
nr_zone_active_anon 1133352
nr_mlock 6910
workingset_refault_anon 88211
workingset_refault_file 1920344
pgpgin 40112368
pgpgout 9234120
pswpin 341207
pswpout 602118
pgalloc_dma 1203940
pgfault 98120331
pgmajfault 210554
pgrefill 3120045
oom_kill 2
numa_hit 0
unevictable_pgs_culled 3318
swap_ra 12007
";

    /// A 4.9 kernel: no oom_kill line, swap counters zero (no swap).
    const KERNEL_4_9_NO_OOM_KILL: &str = "\
nr_free_pages 612004
pgpgin 1204
pgpgout 88
pswpin 0
pswpout 0
pgfault 440812
pgmajfault 312
";

    #[test]
    fn swapping_pi4_parses_every_used_counter() {
        let v = parse_vmstat(PI4_SWAPPING).unwrap();
        assert_eq!(v.pswpin, 341_207);
        assert_eq!(v.pswpout, 602_118);
        assert_eq!(v.pgmajfault, 210_554);
        assert_eq!(v.oom_kill, Some(2));
    }

    #[test]
    fn kernel_without_oom_kill_counter_parses_with_it_absent() {
        let v = parse_vmstat(KERNEL_4_9_NO_OOM_KILL).unwrap();
        assert_eq!(v.pswpin, 0);
        assert_eq!(v.pswpout, 0);
        assert_eq!(v.pgmajfault, 312);
        assert_eq!(v.oom_kill, None);
    }

    #[test]
    fn empty_text_names_the_first_missing_counter() {
        assert_eq!(
            parse_vmstat(""),
            Err(VmStatParseError::MissingField { field: "pswpin" })
        );
    }

    #[test]
    fn missing_pgmajfault_is_named() {
        let err = parse_vmstat("pswpin 1\npswpout 2\n").unwrap_err();
        assert_eq!(
            err,
            VmStatParseError::MissingField {
                field: "pgmajfault"
            }
        );
        assert!(err.to_string().contains("`pgmajfault`"));
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        for (text, value) in [
            ("pswpin 1\npswpout -3\n", "-3"),
            ("pswpin 1\npswpout\n", ""),
            ("pswpin 1\npswpout 0x10\n", "0x10"),
        ] {
            assert_eq!(
                parse_vmstat(text),
                Err(VmStatParseError::BadNumber {
                    line: 2,
                    field: "pswpout",
                    value: value.into()
                })
            );
        }
    }

    #[test]
    fn trailing_text_after_a_used_value_is_rejected() {
        assert_eq!(
            parse_vmstat("oom_kill 3 kills\n"),
            Err(VmStatParseError::TrailingText {
                line: 1,
                field: "oom_kill",
                extra: "kills".into()
            })
        );
    }

    #[test]
    fn duplicated_counter_is_rejected() {
        let text = format!("{KERNEL_4_9_NO_OOM_KILL}pswpin 5\n");
        assert_eq!(
            parse_vmstat(&text),
            Err(VmStatParseError::DuplicateField {
                line: 8,
                field: "pswpin"
            })
        );
    }

    #[test]
    fn unrelated_malformed_lines_are_ignored() {
        let text = format!("nr_weird\n-- junk --\nnr_free_pages lots\n{PI4_SWAPPING}");
        assert_eq!(
            parse_vmstat(&text).unwrap(),
            parse_vmstat(PI4_SWAPPING).unwrap()
        );
    }

    fn vm(pswpin: u64, pswpout: u64, oom_kill: Option<u64>) -> VmStat {
        VmStat {
            pswpin,
            pswpout,
            pgmajfault: 0,
            oom_kill,
        }
    }

    #[test]
    fn swap_rate_uses_the_given_page_size() {
        let r = swap_rate(
            &vm(1_000, 5_000, None),
            &vm(1_600, 5_300, None),
            Duration::from_secs(10),
            16_384,
        )
        .unwrap();
        assert_eq!(r.in_pages_per_s, 60.0);
        assert_eq!(r.out_pages_per_s, 30.0);
        assert_eq!(r.in_bytes_per_s, 60.0 * 16_384.0);
        assert_eq!(r.out_bytes_per_s, 30.0 * 16_384.0);
    }

    #[test]
    fn swap_rate_refuses_zero_page_size_empty_window_and_backwards_counters() {
        let a = vm(10, 10, None);
        let b = vm(20, 5, None);
        let ten = Duration::from_secs(10);
        assert_eq!(swap_rate(&a, &b, ten, 0), Err(RateError::ZeroPageSize));
        assert_eq!(
            swap_rate(&a, &a, Duration::ZERO, 4096),
            Err(RateError::EmptyWindow)
        );
        assert_eq!(
            swap_rate(&a, &b, ten, 4096),
            Err(RateError::CounterWentBackwards {
                counter: "pswpout",
                earlier: 10,
                later: 5
            })
        );
    }

    #[test]
    fn counter_rate_is_per_second_over_fractional_windows() {
        let r = counter_rate("pgmajfault", 100, 400, Duration::from_millis(1_500)).unwrap();
        assert!((r - 200.0).abs() < 1e-9);
    }

    #[test]
    fn oom_kills_between_needs_both_counters() {
        assert_eq!(
            oom_kills_between(&vm(0, 0, Some(2)), &vm(0, 0, Some(5))),
            Some(3)
        );
        assert_eq!(oom_kills_between(&vm(0, 0, None), &vm(0, 0, Some(5))), None);
        assert_eq!(
            oom_kills_between(&vm(0, 0, Some(7)), &vm(0, 0, Some(5))),
            None
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = parse_vmstat(&text);
        }

        #[test]
        fn parser_never_panics_on_vmstat_shaped_noise(
            lines in proptest::collection::vec(
                "(pswpin|pswpout|pgmajfault|oom_kill|nr_free_pages)( [-0-9a-z]{0,22}){0,2}",
                0..8,
            )
        ) {
            let _ = parse_vmstat(&lines.join("\n"));
        }

        #[test]
        fn rates_are_finite_and_non_negative(
            a: u64, b: u64, nanos in 0u64..u64::MAX, page in 0u64..(1 << 20),
        ) {
            let elapsed = Duration::from_nanos(nanos);
            if let Ok(r) = swap_rate(&vm(a, a, None), &vm(b, b, None), elapsed, page) {
                prop_assert!(r.in_bytes_per_s.is_finite() && r.in_bytes_per_s >= 0.0);
                prop_assert!(r.out_pages_per_s.is_finite() && r.out_pages_per_s >= 0.0);
            }
        }
    }
}
