//! Normalises one saved log line to (kernel timestamp, message text, origin).
//!
//! Why: `nodemedic classify` is fed whatever an operator saved after an outage:
//! raw `/dev/kmsg` records, `dmesg` (with or without `-T`, `-x`, `-r`),
//! `journalctl -k`, `/var/log/syslog`, or k3s/containerd/kubelet journal lines. The
//! classifier only wants the message text, so every known prefix is stripped here and
//! what it said about where the line came from is kept as an [`Origin`] hint.
//!
//! Recognised shapes (the first that fits wins):
//! - `/dev/kmsg` records `PRI,SEQ,TS_USEC,FLAGS;TEXT` (parsed by [`KmsgRecord`]);
//! - `dmesg`: `[   12.345678] msg`, with an optional `<3>` (`-r`) or `kern  :err   : `
//!   (`-x`) prefix and an optional `[    T123]` caller field (CONFIG_PRINTK_CALLER);
//! - `dmesg -T`: `[Sat Nov 21 17:35:41 2026] msg`;
//! - syslog/journal: `Nov 21 17:35:41 host prog[pid]: msg` or the ISO 8601 form
//!   `2026-11-21T17:35:41.123456+00:00 host prog: msg`; a kernel line may carry its
//!   own `[12.34] ` timestamp after `kernel: `;
//! - `journalctl -o short-monotonic`: `[   12.345678] host prog[pid]: msg`;
//! - a bare `prog[pid]: msg` (log shippers that drop date and host);
//! - ` SUBSYSTEM=...` / ` DEVICE=...` dictionary lines of a saved `cat /dev/kmsg`, which
//!   belong to the record before them: [`Origin::KmsgDict`], not a message;
//! - anything else is plain message text.
//!
//! Nothing here allocates unless a kmsg record needs unescaping.

use std::borrow::Cow;

#[cfg(test)]
use super::kmsg_record::KERNEL_FACILITY;
use super::kmsg_record::KmsgRecord;

/// Where a line came from, as far as its prefix tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin<'a> {
    /// No recognised prefix.
    Plain,
    /// A `/dev/kmsg` record; facility 0 is the kernel.
    Kmsg { facility: u8, level: u8, seq: u64 },
    /// A `dmesg` line with a monotonic `[seconds.micros]` stamp. `dmesg -x`/`-r`
    /// prefixes fill in facility and level.
    Dmesg {
        facility: Option<u8>,
        level: Option<u8>,
    },
    /// A line stamped with wall-clock time but no syslog tag (`dmesg -T`,
    /// `dmesg --time-format iso`).
    WallClock,
    /// A ` SUBSYSTEM=usb` / ` DEVICE=c189:1` line that followed a `/dev/kmsg` record in
    /// a saved file. It is metadata of the previous record: callers should skip it, not
    /// classify it (it would end an open splat).
    KmsgDict,
    /// A syslog or journal line: `host program[pid]: message`; `host` is `None` for a
    /// bare `program[pid]: message`.
    Syslog {
        host: Option<&'a str>,
        program: &'a str,
        pid: Option<u32>,
    },
}

impl Origin<'_> {
    #[cfg(test)]
    /// `Some(true)` when the prefix proves the kernel wrote the line, `Some(false)` when
    /// it proves userspace did, `None` when the prefix does not say.
    pub(crate) fn is_kernel(&self) -> Option<bool> {
        match self {
            Origin::Kmsg { facility, .. } => Some(*facility == KERNEL_FACILITY),
            Origin::Dmesg {
                facility: Some(f), ..
            } => Some(*f == KERNEL_FACILITY),
            Origin::Syslog { program, .. } => Some(*program == "kernel"),
            Origin::KmsgDict => Some(true),
            Origin::Plain | Origin::WallClock | Origin::Dmesg { facility: None, .. } => None,
        }
    }
}

/// One line with its prefixes taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NormalisedLine<'a> {
    /// Kernel monotonic time in microseconds since boot, when the line carried it.
    pub(crate) kernel_ts_usec: Option<u64>,
    /// The wall-clock stamp exactly as written, when the line carried one.
    pub(crate) wall_clock: Option<&'a str>,
    /// The message itself, without any prefix.
    pub(crate) text: Cow<'a, str>,
    pub(crate) origin: Origin<'a>,
}

/// Splits `line` into timestamp, message and origin. Never fails: an unrecognised
/// line is returned whole as [`Origin::Plain`].
pub(crate) fn normalise(line: &str) -> NormalisedLine<'_> {
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(n) = kmsg(line) {
        return n;
    }
    if let Some(n) = dmesg(line) {
        return n;
    }
    if let Some(n) = syslog(line) {
        return n;
    }
    if KMSG_DICT_KEYS.iter().any(|k| line.starts_with(k)) {
        return NormalisedLine {
            kernel_ts_usec: None,
            wall_clock: None,
            text: Cow::Borrowed(line),
            origin: Origin::KmsgDict,
        };
    }
    // A bare tag needs a pid: `rcu: ...` and `nfs: ...` are kernel messages.
    if let Some((program, pid, msg)) = program_tag(line)
        && pid.is_some()
    {
        return NormalisedLine {
            kernel_ts_usec: None,
            wall_clock: None,
            text: Cow::Borrowed(msg),
            origin: Origin::Syslog {
                host: None,
                program,
                pid,
            },
        };
    }
    NormalisedLine {
        kernel_ts_usec: None,
        wall_clock: None,
        text: Cow::Borrowed(line),
        origin: Origin::Plain,
    }
}

/// The only dictionary keys kernels since 5.10 attach to records (`dev_printk_info`).
const KMSG_DICT_KEYS: [&str; 2] = [" SUBSYSTEM=", " DEVICE="];

/// Most digits of a kmsg header worth scanning before giving up on `;`: three u64s and
/// a PRI fit in 70 bytes; a caller field adds about 15.
const KMSG_HEADER_MAX: usize = 96;

fn kmsg(line: &str) -> Option<NormalisedLine<'_>> {
    if !line.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    let semi = line
        .as_bytes()
        .iter()
        .take(KMSG_HEADER_MAX)
        .position(|&b| b == b';')?;
    // A header is digits and commas up to FLAGS; cheap reject before full parsing.
    if line.as_bytes()[..semi]
        .iter()
        .filter(|&&b| b == b',')
        .count()
        < 3
    {
        return None;
    }
    let record = KmsgRecord::parse(line.as_bytes()).ok()?;
    Some(NormalisedLine {
        kernel_ts_usec: Some(record.ts_usec),
        wall_clock: None,
        text: Cow::Owned(record.text),
        origin: Origin::Kmsg {
            facility: record.facility,
            level: record.level,
            seq: record.seq,
        },
    })
}

const FACILITY_NAMES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "res0", "res1", "res2", "res3", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];
const LEVEL_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warn", "notice", "info", "debug",
];

fn dmesg(line: &str) -> Option<NormalisedLine<'_>> {
    let mut facility = None;
    let mut level = None;
    let mut rest = line;
    // `dmesg -r`: `<6>[   1.0] msg`, where the number is the whole PRI.
    if let Some(after) = rest.strip_prefix('<')
        && let Some((num, tail)) = after.split_once('>')
        && tail.starts_with('[')
        && let Ok(pri) = num.parse::<u16>()
    {
        facility = u8::try_from(pri >> 3).ok();
        level = Some((pri & 7) as u8);
        rest = tail;
    } else if let Some((f, l, tail)) = dmesg_x_prefix(rest) {
        facility = Some(f);
        level = Some(l);
        rest = tail;
    }

    let inner_end = rest.strip_prefix('[')?.find(']')? + 1;
    let inner = &rest[1..inner_end];
    let after = rest[inner_end + 1..]
        .strip_prefix(' ')
        .unwrap_or(&rest[inner_end + 1..]);

    if let Some(ts) = parse_seconds_micros(inner) {
        let text = strip_caller_field(after);
        // `journalctl -o short-monotonic` puts `host prog[pid]: ` after the stamp.
        // Only a tag with a pid (or `kernel:`) counts there: kernel messages such as
        // `usb 1-1: new device` have the `word word: ` shape too.
        if facility.is_none()
            && let Some((host, program, pid, msg)) = syslog_tag(text)
            && (pid.is_some() || program == "kernel")
        {
            let (kernel_ts, msg) = kernel_stamp_after_tag(program, msg, Some(ts));
            return Some(NormalisedLine {
                kernel_ts_usec: kernel_ts,
                wall_clock: None,
                text: Cow::Borrowed(msg),
                origin: Origin::Syslog {
                    host: Some(host),
                    program,
                    pid,
                },
            });
        }
        return Some(NormalisedLine {
            kernel_ts_usec: Some(ts),
            wall_clock: None,
            text: Cow::Borrowed(text),
            origin: Origin::Dmesg { facility, level },
        });
    }
    if facility.is_none() && is_ctime(inner) {
        return Some(NormalisedLine {
            kernel_ts_usec: None,
            wall_clock: Some(inner),
            text: Cow::Borrowed(after),
            origin: Origin::WallClock,
        });
    }
    None
}

/// `kern  :err   : ` as printed by `dmesg -x`.
fn dmesg_x_prefix(line: &str) -> Option<(u8, u8, &str)> {
    let (fac, rest) = line.split_once(':')?;
    let (lvl, rest) = rest.split_once(':')?;
    let f = FACILITY_NAMES.iter().position(|n| *n == fac.trim_end())?;
    let l = LEVEL_NAMES.iter().position(|n| *n == lvl.trim_end())?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    Some((f as u8, l as u8, rest))
}

/// `[    T123] ` or `[     C2] ` printed after the stamp with CONFIG_PRINTK_CALLER.
fn strip_caller_field(s: &str) -> &str {
    let Some(inner_end) = s.strip_prefix('[').and_then(|r| r.find(']')) else {
        return s;
    };
    let inner = s[1..inner_end + 1].trim_start();
    let mut chars = inner.chars();
    let is_caller = matches!(chars.next(), Some('T' | 'C'))
        && !chars.as_str().is_empty()
        && chars.as_str().bytes().all(|b| b.is_ascii_digit());
    if is_caller {
        let after = &s[inner_end + 2..];
        after.strip_prefix(' ').unwrap_or(after)
    } else {
        s
    }
}

/// `   12.345678` -> microseconds; fractions shorter than 6 digits are scaled.
fn parse_seconds_micros(s: &str) -> Option<u64> {
    let (secs, frac) = s.trim_start().split_once('.')?;
    if secs.is_empty() || frac.is_empty() || frac.len() > 9 {
        return None;
    }
    if !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let mut micros: u64 = 0;
    for i in 0..6 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
        micros = micros * 10 + digit;
    }
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// `Sat Nov 21 17:35:41 2026` (the `dmesg -T` form).
fn is_ctime(s: &str) -> bool {
    let mut parts = s.split_ascii_whitespace();
    let ok = matches!(parts.next(), Some(d) if WEEKDAYS.contains(&d))
        && matches!(parts.next(), Some(m) if MONTHS.contains(&m))
        && matches!(parts.next(), Some(d) if is_digits(d, 1, 2))
        && matches!(parts.next(), Some(t) if clock_len(t) == Some(t.len()))
        && matches!(parts.next(), Some(y) if is_digits(y, 4, 4));
    ok && parts.next().is_none()
}

fn is_digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Length of a leading `HH:MM:SS[.frac]`, if `s` starts with one.
fn clock_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let shape_ok = b.len() >= 8
        && b[2] == b':'
        && b[5] == b':'
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit());
    if !shape_ok {
        return None;
    }
    let mut end = 8;
    if b.get(8) == Some(&b'.') || b.get(8) == Some(&b',') {
        let digits = b[9..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            end = 9 + digits;
        }
    }
    Some(end)
}

fn syslog(line: &str) -> Option<NormalisedLine<'_>> {
    let stamp_len = bsd_stamp_len(line).or_else(|| iso_stamp_len(line))?;
    let stamp = &line[..stamp_len];
    let rest = line[stamp_len..].strip_prefix(' ')?;
    if let Some((host, program, pid, msg)) = syslog_tag(rest) {
        let (kernel_ts, msg) = kernel_stamp_after_tag(program, msg, None);
        return Some(NormalisedLine {
            kernel_ts_usec: kernel_ts,
            wall_clock: Some(stamp),
            text: Cow::Borrowed(msg),
            origin: Origin::Syslog {
                host: Some(host),
                program,
                pid,
            },
        });
    }
    Some(NormalisedLine {
        kernel_ts_usec: None,
        wall_clock: Some(stamp),
        text: Cow::Borrowed(rest),
        origin: Origin::WallClock,
    })
}

/// `Nov 21 17:35:41` or `Nov  1 17:35:41.123456`.
fn bsd_stamp_len(line: &str) -> Option<usize> {
    let month = line.get(..3)?;
    if !MONTHS.contains(&month) || line.as_bytes().get(3) != Some(&b' ') {
        return None;
    }
    let rest = &line[4..];
    let day_start = rest.len() - rest.trim_start_matches(' ').len();
    let rest = &rest[day_start..];
    let day_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=2).contains(&day_len) || rest.as_bytes().get(day_len) != Some(&b' ') {
        return None;
    }
    let clock = &rest[day_len + 1..];
    Some(4 + day_start + day_len + 1 + clock_len(clock)?)
}

/// `2026-11-21T17:35:41[.frac][Z|+00:00|+0000]`.
fn iso_stamp_len(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let date_ok = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    if !date_ok {
        return None;
    }
    let mut end = 11 + clock_len(&line[11..])?;
    match b.get(end) {
        Some(b'Z') => end += 1,
        Some(b'+' | b'-') => {
            let zone = b[end + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == b':')
                .count();
            if zone >= 4 {
                end += 1 + zone;
            }
        }
        _ => {}
    }
    Some(end)
}

/// `host prog[pid]: msg` or `host prog: msg`.
fn syslog_tag(s: &str) -> Option<(&str, &str, Option<u32>, &str)> {
    let (host, rest) = s.split_once(' ')?;
    // `rcu: INFO: ...` must not read as host `rcu:`.
    if host.is_empty() || host.ends_with(':') {
        return None;
    }
    let (program, pid, msg) = program_tag(rest)?;
    Some((host, program, pid, msg))
}

/// `prog[pid]: msg` or `prog: msg`.
fn program_tag(rest: &str) -> Option<(&str, Option<u32>, &str)> {
    let tag_end = rest.find(':')?;
    let tag = &rest[..tag_end];
    let msg = &rest[tag_end + 1..];
    if !(msg.is_empty() || msg.starts_with(' ')) {
        return None;
    }
    let msg = msg.strip_prefix(' ').unwrap_or(msg);
    let (program, pid) = match tag.split_once('[') {
        Some((program, pid)) => {
            let pid = pid.strip_suffix(']')?.parse::<u32>().ok()?;
            (program, Some(pid))
        }
        None => (tag, None),
    };
    let valid_program = !program.is_empty()
        && program
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'[' && b != b']');
    valid_program.then_some((program, pid, msg))
}

/// syslog kernel lines keep the printk stamp: `kernel: [   12.34] msg`.
fn kernel_stamp_after_tag<'a>(
    program: &str,
    msg: &'a str,
    fallback: Option<u64>,
) -> (Option<u64>, &'a str) {
    if program == "kernel"
        && let Some(inner_end) = msg.strip_prefix('[').and_then(|r| r.find(']'))
        && let Some(ts) = parse_seconds_micros(&msg[1..inner_end + 1])
    {
        let after = &msg[inner_end + 2..];
        return (
            Some(ts),
            strip_caller_field(after.strip_prefix(' ').unwrap_or(after)),
        );
    }
    (fallback, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_message_text_is_returned_unchanged() {
        let n = normalise("rcu: INFO: rcu_preempt self-detected stall on CPU\n");
        assert_eq!(n.text, "rcu: INFO: rcu_preempt self-detected stall on CPU");
        assert_eq!(n.kernel_ts_usec, None);
        assert_eq!(n.wall_clock, None);
        assert_eq!(n.origin, Origin::Plain);
        assert_eq!(n.origin.is_kernel(), None);
    }

    #[test]
    fn kmsg_record_is_delegated_and_unescaped() {
        let n = normalise("4,5123,1234567890,-;rcu: \\x09(t=21004 jiffies g=9 q=3)");
        assert_eq!(n.text, "rcu: \t(t=21004 jiffies g=9 q=3)");
        assert_eq!(n.kernel_ts_usec, Some(1_234_567_890));
        assert_eq!(
            n.origin,
            Origin::Kmsg {
                facility: 0,
                level: 4,
                seq: 5123
            }
        );
        assert_eq!(n.origin.is_kernel(), Some(true));
    }

    #[test]
    fn forged_kmsg_record_from_userspace_is_not_kernel() {
        let n = normalise("12,8,99,-;watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]");
        assert_eq!(n.origin.is_kernel(), Some(false));
        assert_eq!(
            n.text,
            "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]"
        );
    }

    #[test]
    fn number_led_plain_text_is_not_mistaken_for_kmsg() {
        let n = normalise("1234 total pagecache pages");
        assert_eq!(n.origin, Origin::Plain);
        let n = normalise("0,1;not a record");
        assert_eq!(n.origin, Origin::Plain);
        assert_eq!(n.text, "0,1;not a record");
    }

    #[test]
    fn dmesg_monotonic_stamp_is_parsed_and_stripped() {
        let cases = [
            (
                "[   12.345678] nfs: server nas OK",
                12_345_678,
                "nfs: server nas OK",
            ),
            ("[12.34] x", 12_340_000, "x"),
            (
                "[ 2281.746527] NFS: state manager",
                2_281_746_527,
                "NFS: state manager",
            ),
            ("[    0.000000] Booting Linux", 0, "Booting Linux"),
            (
                "[  926.386441][   T22] INFO: rcu_tasks",
                926_386_441,
                "INFO: rcu_tasks",
            ),
            ("[  926.386441][    C1] rcu: x", 926_386_441, "rcu: x"),
            ("[   5.1234567] y", 5_123_456, "y"),
        ];
        for (line, ts, text) in cases {
            let n = normalise(line);
            assert_eq!(n.kernel_ts_usec, Some(ts), "{line}");
            assert_eq!(n.text, text, "{line}");
            assert_eq!(
                n.origin,
                Origin::Dmesg {
                    facility: None,
                    level: None
                }
            );
        }
    }

    #[test]
    fn dmesg_bracket_that_is_not_a_caller_field_stays_in_the_text() {
        let n = normalise("[   1.0] [drm] Initialized v3d 1.0.0");
        assert_eq!(n.text, "[drm] Initialized v3d 1.0.0");
    }

    #[test]
    fn dmesg_raw_and_decoded_level_prefixes_give_facility_and_level() {
        let n = normalise("<3>[   42.000001] INFO: task mkdir:1 blocked for more than 5 seconds.");
        assert_eq!(n.kernel_ts_usec, Some(42_000_001));
        assert_eq!(
            n.text,
            "INFO: task mkdir:1 blocked for more than 5 seconds."
        );
        assert_eq!(
            n.origin,
            Origin::Dmesg {
                facility: Some(0),
                level: Some(3)
            }
        );
        assert_eq!(n.origin.is_kernel(), Some(true));

        let n = normalise("user  :warn  : [  100.500000] forged line");
        assert_eq!(
            n.origin,
            Origin::Dmesg {
                facility: Some(1),
                level: Some(4)
            }
        );
        assert_eq!(n.origin.is_kernel(), Some(false));
        assert_eq!(n.text, "forged line");
        assert_eq!(n.kernel_ts_usec, Some(100_500_000));
    }

    #[test]
    fn dmesg_human_time_is_kept_as_wall_clock() {
        let n = normalise("[Sat Nov 21 17:35:41 2026] nfs: server nas.local OK");
        assert_eq!(n.kernel_ts_usec, None);
        assert_eq!(n.wall_clock, Some("Sat Nov 21 17:35:41 2026"));
        assert_eq!(n.text, "nfs: server nas.local OK");
        assert_eq!(n.origin, Origin::WallClock);

        let n = normalise("[Mon Jan  5 01:02:03 2026] x");
        assert_eq!(n.wall_clock, Some("Mon Jan  5 01:02:03 2026"));
        assert_eq!(n.text, "x");
    }

    #[test]
    fn syslog_kernel_line_keeps_its_printk_stamp() {
        let n = normalise("Nov 21 17:35:41 pi5 kernel: [12.34] rcu: INFO: rcu_sched x");
        assert_eq!(n.kernel_ts_usec, Some(12_340_000));
        assert_eq!(n.wall_clock, Some("Nov 21 17:35:41"));
        assert_eq!(n.text, "rcu: INFO: rcu_sched x");
        assert_eq!(
            n.origin,
            Origin::Syslog {
                host: Some("pi5"),
                program: "kernel",
                pid: None
            }
        );
        assert_eq!(n.origin.is_kernel(), Some(true));
    }

    #[test]
    fn journal_kernel_line_without_stamp_and_single_digit_day() {
        let n = normalise("Nov  1 07:05:09 node-a kernel: nfs: server 10.0.0.5 OK");
        assert_eq!(n.kernel_ts_usec, None);
        assert_eq!(n.wall_clock, Some("Nov  1 07:05:09"));
        assert_eq!(n.text, "nfs: server 10.0.0.5 OK");
        assert_eq!(
            n.origin,
            Origin::Syslog {
                host: Some("node-a"),
                program: "kernel",
                pid: None
            }
        );
    }

    #[test]
    fn iso_journal_lines_in_several_precisions() {
        let cases = [
            "2026-11-21T17:35:41.123456+00:00 pi5 kernel: hello",
            "2026-11-21T17:35:41+0000 pi5 kernel: hello",
            "2026-11-21T17:35:41Z pi5 kernel: hello",
            "2026-11-21T17:35:41 pi5 kernel: hello",
        ];
        for line in cases {
            let n = normalise(line);
            assert_eq!(n.text, "hello", "{line}");
            assert_eq!(n.wall_clock, line.split(' ').next(), "{line}");
            assert_eq!(
                n.origin,
                Origin::Syslog {
                    host: Some("pi5"),
                    program: "kernel",
                    pid: None
                },
                "{line}"
            );
        }
    }

    #[test]
    fn k3s_containerd_journal_line_keeps_the_logrus_message() {
        let line = r#"Nov 21 17:35:41 pi5 k3s[1234]: time="2026-11-21T17:35:41.1Z" level=error msg="RunPodSandbox for x failed, error" error="failed to reserve sandbox name \"a_b_c_0\": name \"a_b_c_0\" is reserved for \"0123\"""#;
        let n = normalise(line);
        assert!(
            n.text
                .starts_with("time=\"2026-11-21T17:35:41.1Z\" level=error")
        );
        assert!(n.text.ends_with(r#"is reserved for \"0123\"""#));
        assert_eq!(
            n.origin,
            Origin::Syslog {
                host: Some("pi5"),
                program: "k3s",
                pid: Some(1234)
            }
        );
        assert_eq!(n.origin.is_kernel(), Some(false));
    }

    #[test]
    fn containerd_and_kubelet_program_tags() {
        let n = normalise("2026-11-21T17:35:41.000001+01:00 w1 containerd[99]: level=info msg=x");
        assert_eq!(
            n.origin,
            Origin::Syslog {
                host: Some("w1"),
                program: "containerd",
                pid: Some(99)
            }
        );
        assert_eq!(n.text, "level=info msg=x");

        let n = normalise(
            "Nov 21 17:35:41 w1 kubelet[4321]: E1121 17:35:41.123456    4321 log.go:32] \"x\"",
        );
        assert_eq!(n.text, "E1121 17:35:41.123456    4321 log.go:32] \"x\"");
        assert_eq!(
            n.origin,
            Origin::Syslog {
                host: Some("w1"),
                program: "kubelet",
                pid: Some(4321)
            }
        );
    }

    #[test]
    fn journalctl_short_monotonic_form() {
        let n = normalise("[   12.345678] pi5 kernel: oom-kill:constraint=CONSTRAINT_NONE");
        assert_eq!(n.kernel_ts_usec, Some(12_345_678));
        assert_eq!(n.text, "oom-kill:constraint=CONSTRAINT_NONE");
        assert_eq!(
            n.origin,
            Origin::Syslog {
                host: Some("pi5"),
                program: "kernel",
                pid: None
            }
        );
    }

    #[test]
    fn kernel_messages_after_dmesg_stamp_are_not_taken_for_syslog_tags() {
        for msg in [
            "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
            "nfs: server nas.local not responding, still trying",
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "cni0: port 1(veth0) entered forwarding state",
        ] {
            let line = format!("[   3.000000] {msg}");
            let n = normalise(&line);
            assert_eq!(n.text, msg);
            assert!(matches!(n.origin, Origin::Dmesg { .. }), "{msg}");
        }
    }

    #[test]
    fn wall_clock_stamp_without_tag_keeps_rest_as_text() {
        // `dmesg --time-format iso` prints no host; `rcu:` is not one.
        let n = normalise("2026-11-21T17:35:41,123456+00:00 rcu: INFO: rcu_sched detected x");
        assert_eq!(n.wall_clock, Some("2026-11-21T17:35:41,123456+00:00"));
        assert_eq!(n.text, "rcu: INFO: rcu_sched detected x");
        assert_eq!(n.origin, Origin::WallClock);
        let n = normalise("Nov 21 17:35:41 just text here");
        assert_eq!(n.origin, Origin::WallClock);
        assert_eq!(n.text, "just text here");
    }

    #[test]
    fn bare_program_tag_with_pid_is_a_userspace_line() {
        let n = normalise("containerd[99]: level=error msg=\"failed to reserve sandbox name\"");
        assert_eq!(n.text, "level=error msg=\"failed to reserve sandbox name\"");
        assert_eq!(
            n.origin,
            Origin::Syslog {
                host: None,
                program: "containerd",
                pid: Some(99)
            }
        );
        assert_eq!(n.origin.is_kernel(), Some(false));
        // Without a pid the same shape is an ordinary kernel message.
        let n = normalise("nfs: server nas OK");
        assert_eq!(n.origin, Origin::Plain);
        assert_eq!(n.text, "nfs: server nas OK");
    }

    #[test]
    fn kmsg_dictionary_lines_of_a_saved_dump_are_marked_for_skipping() {
        for line in [" SUBSYSTEM=usb", " DEVICE=c189:1\n"] {
            let n = normalise(line);
            assert_eq!(n.origin, Origin::KmsgDict, "{line:?}");
            assert_eq!(n.text, line.trim_end());
        }
        assert_eq!(normalise(" SUBSYSTEMS=x").origin, Origin::Plain);
        assert_eq!(normalise("SUBSYSTEM=usb").origin, Origin::Plain);
    }

    #[test]
    fn look_alike_prefixes_fall_back_to_plain() {
        for line in [
            "[not a stamp] x",
            "[12.] x",
            "[.5] x",
            "Novel 21 text",
            "Nov 211 12:00:00 h k: m",
            "2026-11-21 text",
            "<3> no bracket",
            "[",
            "",
        ] {
            let n = normalise(line);
            assert_eq!(n.origin, Origin::Plain, "{line:?}");
            assert_eq!(n.text, line);
        }
    }

    proptest! {
        #[test]
        fn normalise_never_panics(line in any::<String>()) {
            let n = normalise(&line);
            // Text is a part of the input (or an unescaped kmsg text, which is no longer).
            prop_assert!(n.text.len() <= line.len());
        }

        #[test]
        fn normalise_never_panics_on_prefix_like_input(
            line in "(<[0-9]{1,4}>)?(\\[[ 0-9.TC]{0,14}\\]){0,2}[ -~]{0,30}|[A-Z][a-z]{2} [ 0-9]{1,3} [0-9:.,]{0,12} [ -~\\[\\]]{0,30}|[0-9T:.,+Z-]{0,35} [ -~]{0,30}"
        ) {
            let _ = normalise(&line);
        }
    }
}
