//! USB storage trouble: UAS aborts, zapped commands and device/host resets
//! (drivers/usb/storage/uas.c), USB device resets (drivers/usb/core/hub.c), and an xHCI
//! controller that stopped answering (drivers/usb/host/xhci*.c). USB-SATA bridges that
//! reset under load (often for lack of power) show up here first.

use super::oops::detail;
use super::*;

fn usb_head(device: &str, line: &str) -> Option<Head> {
    let f = Fields {
        device: Some(device.to_string()),
        detail: Some(detail(line)),
        ..Fields::default()
    };
    Head::new(EventKind::UsbStorageReset, Role::Splat, f)
}

/// After `scsi host0: `: the UAS error handler's steps.
const UAS_HOST: &[&str] = &[
    "uas_%w start",
    "uas_%w success",
    "uas_%w FAILED err %d",
    "uas_%w FAILED to get lock err %d",
    "uas_%w: timed out",
    "uas_%w: alloc streams error %d after reset",
];

/// After `usb 2-1: ` (or `uas 2-1:1.0: `).
const USB_DEVICE: &[&str] = &[
    "reset %s USB device number %u using %w",
    "stat urb: status %d",
    "stat urb: no pending cmd for uas-tag %u",
    "cmd cmplt err %d",
];

/// After `xhci_hcd 0000:01:00.0: `.
const XHCI: &[&str] = &[
    "xHCI host controller not responding, assume dead",
    "xHCI host not responding to stop endpoint command",
    "HC died; cleaning up",
    "Host halt failed, %d",
    "Host not accessible, reset failed.",
    "WARNING: Host System Error",
    "WARNING: Host Controller Error",
];

pub(super) fn usb_storage_head(line: &str) -> Option<Head> {
    // Every head below starts with one of these drivers' names: most lines of these first
    // bytes are turned away here, before the conversion-led formats scan them.
    if !["scsi host", "sd ", "usb ", "uas ", "xhci"]
        .iter()
        .any(|p| line.starts_with(p))
    {
        return None;
    }
    if let Some(c) = kmatch("scsi host%u: %s", line) {
        kmatch_any(UAS_HOST, c.get(1))?;
        let host = &line["scsi ".len()..line.len() - c.get(1).len() - 2];
        return usb_head(host, line);
    }
    // `sd 0:0:0:0: [sda] tag#0 uas_eh_abort_handler 0 uas-tag 1 inflight: CMD OUT `
    if let Some((disk, what)) = scsi_command(line) {
        let c = kmatch("%s %d uas-tag %u inflight:%s", what)?;
        let flags_ok = c
            .get(3)
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b' ');
        if !flags_ok || c.get(0).is_empty() {
            return None;
        }
        return usb_head(disk, line);
    }
    let c = kmatch("%w %w: %s", line)?;
    let (driver, device, msg) = (c.get(0), c.get(1), c.get(2));
    let known = match driver {
        "usb" | "uas" => kmatch_any(USB_DEVICE, msg).is_some(),
        d if d.starts_with("xhci") => kmatch_any(XHCI, msg).is_some(),
        _ => false,
    };
    if !known {
        return None;
    }
    // `2-1:1.0` (the UAS interface) is on USB device `2-1`.
    let device = if driver == "xhci" || driver.starts_with("xhci") {
        device
    } else {
        device.split(':').next().unwrap_or(device)
    };
    usb_head(device, line)
}

/// `<driver> <h:c:t:l>: [<disk>] [tag#N ]<rest>` (scmd_printk): the disk and the rest.
fn scsi_command(line: &str) -> Option<(&str, &str)> {
    let c = kmatch("%w %w: [%w] %s", line)?;
    let rest = c.get(3);
    let rest = match kmatch("tag#%u %s", rest) {
        Some(t) => t.get(1),
        None => rest,
    };
    Some((c.get(2), rest))
}

/// The command dump after a UAS line: `sd 0:0:0:0: [sda] tag#0 CDB: Read(10) 28 00 ...`.
pub(super) fn usb_continuation(t: &str) -> Option<Fields> {
    let (_, rest) = scsi_command(t)?;
    rest.starts_with("CDB: ").then(Fields::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

    #[test]
    fn uas_resets_and_a_dying_controller() {
        for (line, dev) in [
            (
                "sd 0:0:0:0: [sda] tag#9 uas_eh_abort_handler 0 uas-tag 10 inflight: CMD OUT ",
                "sda",
            ),
            (
                "sd 0:0:0:0: [sda] uas_zap_pending 0 uas-tag 1 inflight: CMD ",
                "sda",
            ),
            ("scsi host0: uas_eh_device_reset_handler start", "host0"),
            (
                "usb 2-1: reset SuperSpeed USB device number 2 using xhci_hcd",
                "2-1",
            ),
            (
                "usb 1-1.3: reset high-speed USB device number 4 using dwc_otg",
                "1-1.3",
            ),
            (
                "xhci_hcd 0000:01:00.0: xHCI host controller not responding, assume dead",
                "0000:01:00.0",
            ),
        ] {
            let v = verdict(line);
            assert_eq!(v.kind, Some(EventKind::UsbStorageReset), "{line:?}");
            assert_eq!(v.fields.device.as_deref(), Some(dev), "{line:?}");
        }
        for line in [
            "usb 2-1: new SuperSpeed USB device number 2 using xhci_hcd",
            "sd 0:0:0:0: [sda] Attached SCSI disk",
            "xhci_hcd 0000:01:00.0: xHCI Host Controller",
        ] {
            assert_eq!(verdict(line), LineVerdict::none(), "{line:?}");
        }
        let (v, events) = run(&[
            "sd 0:0:0:0: [sda] tag#9 uas_eh_abort_handler 0 uas-tag 10 inflight: CMD OUT ",
            "sd 0:0:0:0: [sda] tag#9 CDB: Write(10) 2a 00 01 2c 3b 80 00 00 08 00",
        ]);
        assert!(v[1].continuation);
        assert_eq!(events.len(), 1);
    }
}
