//! Matching a line against a kernel printk format, whole: anchored at the start and at the
//! end, each conversion in the shape the kernel prints it.
//!
//! Why whole: the kernel prints text a user chooses (a task's comm, a file name; issue 18).
//! A head matched by its first words, or found anywhere in a line, can be forged by naming
//! a program after it. The kernel's own text around a user-chosen part (`[<addr>+<size>]`
//! after a file name, `: potentially unexpected fatal signal 11.` after a comm) makes a
//! carrier line fail a head's format when the format is matched to both ends.
//!
//! Conversions (a subset of printk's, plus two shapes of `%s`):
//! - `%d`: an optional `-` and digits; `%u`: digits; `%x`: hex digits (write `0x%x` for
//!   `%#x`);
//! - `%s`: any text, possibly empty; `%w`: a word, one or more bytes without a space;
//! - `%c`: a task's comm, 0 to [`COMM_MAX`] bytes of anything;
//! - `%%`: a percent sign. Everything else is literal.
//!
//! Variable-length conversions are tried shortest first, backtracking, so `%c:%d` takes the
//! pid after the comm even when the comm has colons. Formats are fixed strings in this
//! crate; lines are bounded by the kernel's record size (1 KiB), so the work is small.

/// `TASK_COMM_LEN - 1` (include/linux/sched.h): the kernel cuts a task's name to 15 bytes.
pub(super) const COMM_MAX: usize = 15;

/// Enough for every format in the classifier.
const MAX_CAPS: usize = 10;

/// The text of each conversion of one match, in format order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps<'a> {
    v: [&'a str; MAX_CAPS],
    n: usize,
}

impl<'a> Caps<'a> {
    /// The `i`th conversion's text ("" past the last).
    pub(super) fn get(&self, i: usize) -> &'a str {
        if i < self.n { self.v[i] } else { "" }
    }

    pub(super) fn string(&self, i: usize) -> Option<String> {
        (i < self.n).then(|| self.v[i].to_string())
    }

    pub(super) fn u32(&self, i: usize) -> Option<u32> {
        self.get(i).parse().ok()
    }

    pub(super) fn u64(&self, i: usize) -> Option<u64> {
        self.get(i).parse().ok()
    }

    pub(super) fn i32(&self, i: usize) -> Option<i32> {
        self.get(i).parse().ok()
    }

    fn push(&mut self, s: &'a str) -> bool {
        if self.n == MAX_CAPS {
            return false;
        }
        self.v[self.n] = s;
        self.n += 1;
        true
    }
}

/// Matches `line` against `fmt` whole; the conversions' text on success.
pub(super) fn kmatch<'a>(fmt: &str, line: &'a str) -> Option<Caps<'a>> {
    let mut caps = Caps {
        v: [""; MAX_CAPS],
        n: 0,
    };
    go(fmt.as_bytes(), line, 0, &mut caps).then_some(caps)
}

/// The first of `fmts` that matches `line` whole: its index and conversions.
pub(super) fn kmatch_any<'a>(fmts: &[&str], line: &'a str) -> Option<(usize, Caps<'a>)> {
    fmts.iter()
        .enumerate()
        .find_map(|(i, f)| kmatch(f, line).map(|c| (i, c)))
}

fn go<'a>(f: &[u8], line: &'a str, mut li: usize, caps: &mut Caps<'a>) -> bool {
    let l = line.as_bytes();
    let mut fi = 0;
    while fi < f.len() {
        let c = f[fi];
        if c != b'%' {
            if l.get(li) != Some(&c) {
                return false;
            }
            fi += 1;
            li += 1;
            continue;
        }
        let Some(&conv) = f.get(fi + 1) else {
            return false;
        };
        fi += 2;
        match conv {
            b'%' => {
                if l.get(li) != Some(&b'%') {
                    return false;
                }
                li += 1;
            }
            b'd' | b'u' | b'x' => {
                let start = li;
                if conv == b'd' && l.get(li) == Some(&b'-') {
                    li += 1;
                }
                let digits = li;
                while li < l.len()
                    && (if conv == b'x' {
                        l[li].is_ascii_hexdigit()
                    } else {
                        l[li].is_ascii_digit()
                    })
                {
                    li += 1;
                }
                if li == digits || !caps.push(&line[start..li]) {
                    return false;
                }
            }
            b's' | b'w' | b'c' => return variable(conv, &f[fi..], line, li, caps),
            _ => {
                debug_assert!(false, "unknown conversion %{}", conv as char);
                return false;
            }
        }
    }
    li == l.len()
}

/// A variable-length conversion at `li`, then the rest of the format `rest`.
fn variable<'a>(conv: u8, rest: &[u8], line: &'a str, li: usize, caps: &mut Caps<'a>) -> bool {
    let l = line.as_bytes();
    let avail = l.len() - li;
    let max = if conv == b'c' {
        COMM_MAX.min(avail)
    } else {
        avail
    };
    let min = usize::from(conv == b'w');
    let n = caps.n;
    let next = rest.first().copied().filter(|&b| b != b'%');
    let mut len = min;
    while len <= max {
        let end = li + len;
        if conv == b'w' && len > 0 && l[end - 1] == b' ' {
            return false;
        }
        let fits = match next {
            // The rest starts with a literal: only where that byte stands.
            Some(b) => l.get(end) == Some(&b),
            // The conversion ends the format: only at the end of the line.
            None if rest.is_empty() => end == l.len(),
            None => true,
        };
        if fits
            && let Some(text) = line.get(li..end)
            && caps.push(text)
        {
            if go(rest, line, end, caps) {
                return true;
            }
            caps.n = n;
        }
        // `%s` before a literal: skip straight to that byte's next occurrence.
        if conv == b's'
            && let Some(b) = next
        {
            match l
                .get(end + 1..)
                .and_then(|t| t.iter().position(|&x| x == b))
            {
                Some(p) => len = end + 1 + p - li,
                None => return false,
            }
        } else {
            len += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(fmt: &str, line: &str) -> Option<Vec<String>> {
        kmatch(fmt, line).map(|c| (0..c.n).map(|i| c.get(i).to_string()).collect())
    }

    #[test]
    fn literal_text_must_match_to_both_ends() {
        assert_eq!(caps("OK", "OK"), Some(vec![]));
        assert_eq!(caps("OK", "OK."), None);
        assert_eq!(caps("OK", "xOK"), None);
        assert_eq!(caps("100%% done", "100% done"), Some(vec![]));
    }

    #[test]
    fn numbers_take_their_shape() {
        assert_eq!(caps("cpu %u", "cpu 12"), Some(vec!["12".into()]));
        assert_eq!(caps("cpu %u", "cpu -1"), None);
        assert_eq!(caps("error %d", "error -110"), Some(vec!["-110".into()]));
        assert_eq!(
            caps("at 0x%x!", "at 0xdeadBEEF!"),
            Some(vec!["deadBEEF".into()])
        );
        assert_eq!(caps("cpu %u", "cpu "), None);
        assert_eq!(caps("cpu %u.", "cpu 3x."), None);
    }

    #[test]
    fn comm_is_at_most_15_bytes_and_may_hold_anything() {
        let f = "INFO: task %c:%d blocked for more than %u seconds.";
        assert_eq!(
            caps(
                f,
                "INFO: task my task:with:co:4321 blocked for more than 120 seconds."
            ),
            Some(vec!["my task:with:co".into(), "4321".into(), "120".into()])
        );
        assert_eq!(
            caps(f, "INFO: task :1 blocked for more than 1 seconds."),
            Some(vec!["".into(), "1".into(), "1".into()])
        );
        // 16 bytes is longer than the kernel ever prints.
        assert_eq!(
            caps(
                f,
                "INFO: task 0123456789abcdef:1 blocked for more than 1 seconds."
            ),
            None
        );
    }

    #[test]
    fn strings_backtrack_and_words_stop_at_spaces() {
        assert_eq!(
            caps("%s: server %w OK", "nfs: server nas OK"),
            Some(vec!["nfs".into(), "nas".into()])
        );
        assert_eq!(caps("%s: server %w OK", "nfs: server a b OK"), None);
        assert_eq!(
            caps("a %s: b %s: c", "a x: b y: b z: c"),
            Some(vec!["x".into(), "y: b z".into()])
        );
        assert_eq!(caps("tail %s", "tail "), Some(vec!["".into()]));
        assert_eq!(caps("%w", ""), None);
    }

    #[test]
    fn text_after_a_user_chosen_part_breaks_the_match() {
        let f = "watchdog: Watchdog detected hard LOCKUP on cpu %u";
        assert!(kmatch(f, "watchdog: Watchdog detected hard LOCKUP on cpu 3").is_some());
        assert!(
            kmatch(
                f,
                "watchdog: Watchdog detected hard LOCKUP on cpu 3[7f0000+1000] likely on CPU 1 (core 1, socket 0)"
            )
            .is_none()
        );
    }

    #[test]
    fn multibyte_text_is_never_split() {
        assert_eq!(caps("%c!", "ééééééé!"), Some(vec!["ééééééé".into()]));
        assert_eq!(caps("%c!", "éééééééé!"), None);
        assert!(kmatch("%s x", "é x").is_some());
    }
}
