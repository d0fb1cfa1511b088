//! One `/dev/kmsg` record: `PRI,SEQ,TS_USEC,FLAGS[,FIELD...];TEXT` followed by
//! optional ` KEY=VALUE` continuation lines (the record's dictionary).
//!
//! Why parse it ourselves: the record header carries the facility, and only
//! facility 0 is the kernel. Userspace (as root) may write to `/dev/kmsg`, but its
//! records always carry facility 1 or more, so a detector that acts only on facility 0
//! cannot be fooled by a forged "RCU stall" line.
//!
//! The kernel escapes every byte below 0x20, at or above 0x7f, and the backslash as
//! `\xNN` (see `msg_add_ext_text` in kernel/printk/printk.c). A TAB therefore arrives as
//! the four characters `\x09`; real RCU detail lines start with one. [`KmsgRecord::parse`]
//! undoes that escaping and [`KmsgRecord::format`] redoes it, so the two round-trip.

use std::fmt;

/// The kernel stores the facility in 8 bits and the level in 3 (`struct printk_info`),
/// so a PRI above this cannot come from a real kernel.
const MAX_PRI: u32 = (255 << 3) | 7;

/// Facility of records the kernel itself printed; everything else came from userspace.
pub(crate) const KERNEL_FACILITY: u8 = 0;

/// One parsed `/dev/kmsg` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KmsgRecord {
    /// `PRI >> 3`; 0 is the kernel, 1 (`user`) is anything written from userspace.
    pub(crate) facility: u8,
    /// `PRI & 7`: 0 emerg .. 7 debug.
    pub(crate) level: u8,
    /// Sequence number; a gap means records were overwritten before we read them.
    pub(crate) seq: u64,
    /// Monotonic kernel time of the record in microseconds since boot.
    pub(crate) ts_usec: u64,
    /// `-` for a whole line, `c` for the first fragment of a continued line, `+` for a
    /// fragment that continues the previous record (older kernels).
    pub(crate) flag: char,
    /// The `caller=T123`/`caller=C1` header field when the kernel has
    /// CONFIG_PRINTK_CALLER; `None` otherwise.
    pub(crate) caller: Option<String>,
    /// Message text with `\xNN` escapes undone.
    pub(crate) text: String,
    /// ` KEY=VALUE` continuation lines (e.g. `SUBSYSTEM=usb`), unescaped, in order.
    pub(crate) dict: Vec<(String, String)>,
}

/// Why a record could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// The record is empty.
    Empty,
    /// No `;` separates the header from the text.
    MissingTextSeparator,
    /// The header has fewer than the four fields `PRI,SEQ,TS_USEC,FLAGS`.
    MissingField(&'static str),
    /// A numeric header field is not a decimal number that fits.
    BadNumber(&'static str),
    /// PRI is above what `struct printk_info` can hold.
    PriorityOutOfRange(u32),
    /// The FLAGS field is not one character.
    BadFlags,
    /// A line after the first does not start with a space and contain `=`.
    BadDictLine,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HINT: &str = "expected one /dev/kmsg record \"PRI,SEQ,TS_USEC,FLAGS;TEXT\"; \
                            read /dev/kmsg with a buffer of at least 8192 bytes so records \
                            are not cut";
        match self {
            ParseError::Empty => write!(f, "kmsg record is empty; {HINT}"),
            ParseError::MissingTextSeparator => {
                write!(f, "kmsg record has no ';' before its text; {HINT}")
            }
            ParseError::MissingField(field) => {
                write!(f, "kmsg record header lacks the {field} field; {HINT}")
            }
            ParseError::BadNumber(field) => {
                write!(
                    f,
                    "kmsg record {field} field is not a decimal number; {HINT}"
                )
            }
            ParseError::PriorityOutOfRange(pri) => write!(
                f,
                "kmsg record PRI {pri} is above {MAX_PRI}, which no kernel writes; {HINT}"
            ),
            ParseError::BadFlags => {
                write!(
                    f,
                    "kmsg record FLAGS field is not a single character; {HINT}"
                )
            }
            ParseError::BadDictLine => write!(
                f,
                "kmsg record continuation line is not \" KEY=VALUE\"; {HINT}"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

impl KmsgRecord {
    /// Parses one record as read from `/dev/kmsg` (one `read(2)` returns one record).
    /// A trailing newline is optional.
    pub(crate) fn parse(input: &[u8]) -> Result<KmsgRecord, ParseError> {
        let input = input.strip_suffix(b"\n").unwrap_or(input);
        if input.is_empty() {
            return Err(ParseError::Empty);
        }
        let semi = input
            .iter()
            .position(|&b| b == b';')
            .ok_or(ParseError::MissingTextSeparator)?;
        let (header, rest) = (&input[..semi], &input[semi + 1..]);

        let mut fields = header.split(|&b| b == b',');
        let pri = parse_u64(fields.next(), "PRI")?;
        let seq = parse_u64(fields.next(), "SEQ")?;
        let ts_usec = parse_u64(fields.next(), "TS_USEC")?;
        let flag = match fields.next() {
            None => return Err(ParseError::MissingField("FLAGS")),
            Some([b]) if b.is_ascii_graphic() => char::from(*b),
            Some(_) => return Err(ParseError::BadFlags),
        };
        let caller = fields
            .find_map(|f| f.strip_prefix(b"caller="))
            .map(|c| String::from_utf8_lossy(c).into_owned());
        let pri = u32::try_from(pri).map_err(|_| ParseError::PriorityOutOfRange(u32::MAX))?;
        if pri > MAX_PRI {
            return Err(ParseError::PriorityOutOfRange(pri));
        }

        let mut lines = rest.split(|&b| b == b'\n');
        let text = unescape(lines.next().unwrap_or_default());
        let mut dict = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let kv = line.strip_prefix(b" ").ok_or(ParseError::BadDictLine)?;
            let eq = kv
                .iter()
                .position(|&b| b == b'=')
                .ok_or(ParseError::BadDictLine)?;
            dict.push((unescape(&kv[..eq]), unescape(&kv[eq + 1..])));
        }

        Ok(KmsgRecord {
            // Both casts are exact: pri <= MAX_PRI.
            facility: (pri >> 3) as u8,
            level: (pri & 7) as u8,
            seq,
            ts_usec,
            flag,
            caller,
            text,
            dict,
        })
    }

    /// True when the kernel itself printed this record (facility 0).
    pub(crate) fn is_kernel(&self) -> bool {
        self.facility == KERNEL_FACILITY
    }

    #[cfg(test)]
    /// The record in `/dev/kmsg` wire form, escaped as the kernel escapes it.
    pub(crate) fn format(&self) -> String {
        let pri = (u32::from(self.facility) << 3) | u32::from(self.level & 7);
        let mut out = format!("{},{},{},{}", pri, self.seq, self.ts_usec, self.flag);
        if let Some(caller) = &self.caller {
            out.push_str(",caller=");
            out.push_str(caller);
        }
        out.push(';');
        escape_into(&mut out, self.text.as_bytes());
        out.push('\n');
        for (key, value) in &self.dict {
            out.push(' ');
            escape_into(&mut out, key.as_bytes());
            out.push('=');
            escape_into(&mut out, value.as_bytes());
            out.push('\n');
        }
        out
    }
}

fn parse_u64(field: Option<&[u8]>, name: &'static str) -> Result<u64, ParseError> {
    let field = field.ok_or(ParseError::MissingField(name))?;
    if field.is_empty() {
        return Err(ParseError::BadNumber(name));
    }
    let mut n: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return Err(ParseError::BadNumber(name));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(ParseError::BadNumber(name))?;
    }
    Ok(n)
}

/// Undoes the kernel's `\xNN` escaping. A backslash not followed by `x` and two hex
/// digits is kept as is; bytes that do not form UTF-8 become U+FFFD.
pub(crate) fn unescape(escaped: &[u8]) -> String {
    if !escaped.contains(&b'\\') {
        return String::from_utf8_lossy(escaped).into_owned();
    }
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        if escaped[i] == b'\\'
            && escaped.get(i + 1) == Some(&b'x')
            && let (Some(hi), Some(lo)) = (
                escaped.get(i + 2).and_then(|&b| hex_val(b)),
                escaped.get(i + 3).and_then(|&b| hex_val(b)),
            )
        {
            bytes.push((hi << 4) | lo);
            i += 4;
        } else {
            bytes.push(escaped[i]);
            i += 1;
        }
    }
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
fn escape_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        if !(b' '..0x7f).contains(&b) || b == b'\\' {
            out.push('\\');
            out.push('x');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push(char::from(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<KmsgRecord, ParseError> {
        KmsgRecord::parse(s.as_bytes())
    }

    #[test]
    fn kernel_record_splits_priority_into_facility_and_level() {
        let r =
            parse("3,1234,5678901,-;nfs: server nas.local not responding, still trying\n").unwrap();
        assert_eq!(r.facility, 0);
        assert_eq!(r.level, 3);
        assert_eq!(r.seq, 1234);
        assert_eq!(r.ts_usec, 5_678_901);
        assert_eq!(r.flag, '-');
        assert_eq!(r.caller, None);
        assert_eq!(r.text, "nfs: server nas.local not responding, still trying");
        assert!(r.dict.is_empty());
        assert!(r.is_kernel());
    }

    #[test]
    fn userspace_record_written_to_kmsg_has_facility_one() {
        // `echo '<3>rcu: INFO: ...' > /dev/kmsg` reads back with PRI 11.
        let r =
            parse("11,77,900000,-;rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:").unwrap();
        assert_eq!(r.facility, 1);
        assert_eq!(r.level, 3);
        assert!(!r.is_kernel());
    }

    #[test]
    fn tab_escape_at_start_of_rcu_detail_line_is_unescaped() {
        let r = parse("4,9001,12000000,-;rcu: \\x09(detected by 2, t=5252 jiffies, g=1234, q=56)")
            .unwrap();
        assert_eq!(
            r.text,
            "rcu: \t(detected by 2, t=5252 jiffies, g=1234, q=56)"
        );
    }

    #[test]
    fn escaped_backslash_and_utf8_bytes_are_restored() {
        let r = parse("6,1,2,-;path C:\\x5cfoo caf\\xc3\\xa9").unwrap();
        assert_eq!(r.text, "path C:\\foo café");
    }

    #[test]
    fn lone_backslash_without_hex_digits_is_kept_verbatim() {
        let r = parse("6,1,2,-;a\\xZZ b\\ c\\x4").unwrap();
        assert_eq!(r.text, "a\\xZZ b\\ c\\x4");
    }

    #[test]
    fn dictionary_lines_and_caller_field_are_parsed() {
        let r = parse(
            "6,339,5140900,c,caller=T1;usb 1-1: new high-speed USB device\n \
             SUBSYSTEM=usb\n DEVICE=c189:1\n",
        )
        .unwrap();
        assert_eq!(r.flag, 'c');
        assert_eq!(r.caller.as_deref(), Some("T1"));
        assert_eq!(r.text, "usb 1-1: new high-speed USB device");
        assert_eq!(
            r.dict,
            vec![
                ("SUBSYSTEM".to_string(), "usb".to_string()),
                ("DEVICE".to_string(), "c189:1".to_string())
            ]
        );
    }

    #[test]
    fn text_may_contain_semicolons_and_commas() {
        let r = parse("6,5,6,-;a;b,c;d").unwrap();
        assert_eq!(r.text, "a;b,c;d");
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let cases: &[(&str, ParseError)] = &[
            ("", ParseError::Empty),
            ("\n", ParseError::Empty),
            ("6,1,2,-", ParseError::MissingTextSeparator),
            ("6,1,2;x", ParseError::MissingField("FLAGS")),
            ("6,1;x", ParseError::MissingField("TS_USEC")),
            ("x,1,2,-;t", ParseError::BadNumber("PRI")),
            (",1,2,-;t", ParseError::BadNumber("PRI")),
            ("6,-1,2,-;t", ParseError::BadNumber("SEQ")),
            (
                "6,1,99999999999999999999999,-;t",
                ParseError::BadNumber("TS_USEC"),
            ),
            ("2048,1,2,-;t", ParseError::PriorityOutOfRange(2048)),
            (
                "99999999999,1,2,-;t",
                ParseError::PriorityOutOfRange(u32::MAX),
            ),
            ("6,1,2,--;t", ParseError::BadFlags),
            ("6,1,2,;t", ParseError::BadFlags),
            ("6,1,2,-;t\nNOSPACE=1", ParseError::BadDictLine),
            ("6,1,2,-;t\n NOEQUALS", ParseError::BadDictLine),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).as_ref(), Err(want), "input {input:?}");
            // Every error renders an actionable message.
            assert!(want.to_string().contains("/dev/kmsg"));
        }
    }

    #[test]
    fn highest_priority_a_kernel_can_write_is_accepted() {
        let r = parse("2047,0,0,-;x").unwrap();
        assert_eq!((r.facility, r.level), (255, 7));
    }

    #[test]
    fn format_escapes_like_the_kernel() {
        let r = KmsgRecord {
            facility: 0,
            level: 4,
            seq: 7,
            ts_usec: 8,
            flag: '-',
            caller: None,
            text: "rcu: \t2-...!: back\\slash".into(),
            dict: vec![("SUBSYSTEM".into(), "a\nb".into())],
        };
        assert_eq!(
            r.format(),
            "4,7,8,-;rcu: \\x092-...!: back\\x5cslash\n SUBSYSTEM=a\\x0ab\n"
        );
    }

    fn arb_record() -> impl Strategy<Value = KmsgRecord> {
        (
            any::<u8>(),
            0u8..8,
            any::<u64>(),
            any::<u64>(),
            prop::sample::select(vec!['-', 'c', '+']),
            prop::option::of("[TC][0-9]{1,5}"),
            any::<String>(),
            prop::collection::vec(("[A-Z_]{1,10}", any::<String>()), 0..3),
        )
            .prop_map(
                |(facility, level, seq, ts_usec, flag, caller, text, dict)| KmsgRecord {
                    facility,
                    level,
                    seq,
                    ts_usec,
                    flag,
                    caller,
                    text,
                    dict,
                },
            )
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = KmsgRecord::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_header_like_input(s in "[0-9,;c+-]{0,20}[ -~\n\\\\]{0,40}") {
            let _ = KmsgRecord::parse(s.as_bytes());
        }

        #[test]
        fn format_then_parse_round_trips(record in arb_record()) {
            let wire = record.format();
            prop_assert_eq!(KmsgRecord::parse(wire.as_bytes()), Ok(record));
        }

        #[test]
        fn unescape_inverts_escape(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
            let mut escaped = String::new();
            escape_into(&mut escaped, &bytes);
            prop_assert!(escaped.is_ascii());
            prop_assert_eq!(unescape(escaped.as_bytes()), String::from_utf8_lossy(&bytes));
        }
    }
}
