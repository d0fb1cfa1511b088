//! Block-layer I/O errors (block/blk-core.c, blk-mq.c, fs/buffer.c, fs/ext4/page-io.c):
//! a request the device failed, a buffer that could not be read or written, an access
//! beyond the end of a device.

use super::oops::detail;
use super::pattern::COMM_MAX;
use super::*;

const ERROR_DEV: &str = " error, dev ";

/// Where the old kernels' function name ends: `blk_update_request: `, `print_req_error: `
/// (4.17-5.x), `end_request: ` (2.6-3.x); 5.x+ print no function.
const OLD_FUNCTIONS: &[&str] = &["blk_update_request: ", "print_req_error: ", "end_request: "];

/// `<name> error, dev <disk>, sector <N>[ op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0]`
/// (blk_print_req_error(); `<name>` is the blk_status text: `I/O`, `critical medium`,
/// `timeout`, `recoverable transport`...). No fixed first byte: found by its words, at most
/// 64 bytes in, and matched whole.
pub(super) fn request_error_head(line: &str) -> Option<Head> {
    let window = line.get(..64).unwrap_or(line);
    if !window.contains(ERROR_DEV) {
        return None;
    }
    let rest = OLD_FUNCTIONS
        .iter()
        .find_map(|f| line.strip_prefix(f))
        .unwrap_or(line);
    let c = kmatch("%s error, dev %w, sector %u%s", rest)?;
    let name = c.get(0);
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'/');
    let tail = c.get(3);
    let mut f = Fields {
        device: c.string(1),
        sector: c.u64(2),
        detail: Some(detail(rest)),
        ..Fields::default()
    };
    if !tail.is_empty() {
        // ` op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0`
        let t = kmatch(" op 0x%x:(%w) flags 0x%x phys_seg %u prio class %u", tail)?;
        f.op = t.string(1);
    }
    if !name_ok {
        return None;
    }
    Head::new(EventKind::BlockIoError, Role::Single, f)
}

/// `Buffer I/O error on dev sda2, logical block 1, async page read` (fs/buffer.c),
/// `Buffer I/O error on device sda2, logical block 1` (ext4's page-io, old fs/buffer.c) and
/// old fs/buffer.c's `lost page write due to I/O error on sda2`.
pub(super) fn buffer_error_head(line: &str) -> Option<Head> {
    let (_, c) = kmatch_any(
        &[
            "Buffer I/O error on dev %w, logical block %u, %s",
            "Buffer I/O error on device %w, logical block %u",
            // fs/buffer.c before 4.x, after the line above for a write.
            "lost page write due to I/O error on %w",
        ],
        line,
    )?;
    let f = Fields {
        device: c.string(0),
        sector: c.u64(1),
        detail: Some(detail(line)),
        ..Fields::default()
    };
    Head::new(EventKind::BlockIoError, Role::Single, f)
}

/// bio_check_eod(): `<comm>: attempt to access beyond end of device` (5.9+; the comm
/// first) or alone (before), then on the record's next line
/// `<disk>: rw=1, sector=N, nr_sectors = N limit=N` (old: `rw=%d, want=%llu, limit=%llu`).
pub(super) fn beyond_end_head(line: &str) -> Option<Head> {
    const MARK: &str = "attempt to access beyond end of device";
    let window = line.get(..COMM_MAX + 2 + MARK.len()).unwrap_or(line);
    // Every line that is no head comes here: a needle of at most 32 bytes takes std's
    // SIMD search, a longer one builds a Two-Way searcher each time.
    if !window.contains("beyond end of device") {
        return None;
    }
    if line != MARK {
        kmatch("%c: attempt to access beyond end of device", line)?;
    }
    let f = Fields {
        detail: Some(MARK.to_string()),
        ..Fields::default()
    };
    Head::new(EventKind::BlockIoError, Role::Splat, f)
}

/// The line after `attempt to access beyond end of device`: the device and sector.
pub(super) fn block_continuation(t: &str) -> Option<Fields> {
    let (_, c) = kmatch_any(
        &[
            "%w: rw=%d, sector=%u, nr_sectors = %u limit=%u",
            "%w: rw=%d, want=%u, limit=%u",
        ],
        t,
    )?;
    Some(Fields {
        device: c.string(0),
        sector: c.u64(2),
        ..Fields::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

    #[test]
    fn request_errors_old_and_new() {
        for (line, dev, sector, op) in [
            (
                "I/O error, dev loop3, sector 2048 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2",
                "loop3",
                2048,
                Some("READ"),
            ),
            (
                "critical medium error, dev mmcblk0, sector 1234 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0",
                "mmcblk0",
                1234,
                Some("WRITE"),
            ),
            (
                "blk_update_request: I/O error, dev sda, sector 77",
                "sda",
                77,
                None,
            ),
            ("end_request: I/O error, dev sdb, sector 8", "sdb", 8, None),
        ] {
            let v = verdict(line);
            assert_eq!(v.kind, Some(EventKind::BlockIoError), "{line:?}");
            assert_eq!(v.fields.device.as_deref(), Some(dev));
            assert_eq!(v.fields.sector, Some(sector));
            assert_eq!(v.fields.op.as_deref(), op);
        }
        assert_eq!(
            verdict("I/O error, dev sda, sector 1 in a.out[400000+1000]"),
            LineVerdict::none()
        );
    }

    #[test]
    fn buffer_errors_of_every_era_name_their_device() {
        for (line, dev, sector) in [
            (
                "Buffer I/O error on dev mmcblk0p2, logical block 196608, lost sync page write",
                "mmcblk0p2",
                Some(196608),
            ),
            (
                "Buffer I/O error on device dm-3, logical block 121667584",
                "dm-3",
                Some(121667584),
            ),
            ("lost page write due to I/O error on dm-3", "dm-3", None),
        ] {
            let v = verdict(line);
            assert_eq!(v.kind, Some(EventKind::BlockIoError), "{line:?}");
            assert_eq!(v.fields.device.as_deref(), Some(dev), "{line:?}");
            assert_eq!(v.fields.sector, sector, "{line:?}");
        }
        for line in [
            "lost page write due to I/O error on dm-3 (myapp)",
            "lost page write due to I/O error on ",
        ] {
            assert_eq!(verdict(line), LineVerdict::none(), "{line:?}");
        }
    }

    #[test]
    fn beyond_end_of_device_takes_its_device_from_the_next_line() {
        let mut c = Classifier::new();
        let mut v = Vec::new();
        c.feed_record(
            "mkfs.ext4: attempt to access beyond end of device\nloop0: rw=1, sector=4096, nr_sectors = 8 limit=2048",
            None,
            |x| v.push(x),
        );
        assert_eq!(v[0].kind, Some(EventKind::BlockIoError));
        assert!(v[1].continuation);
        c.flush();
        let e = c.pop_event().unwrap();
        assert_eq!(e.fields.device.as_deref(), Some("loop0"));
        assert_eq!(e.fields.sector, Some(4096));
    }
}
