//! SD/MMC timeouts and transfer errors: the mmc core (drivers/mmc/core), the SDHCI
//! controller (drivers/mmc/host/sdhci.c, the Pi 4's emmc2 and the Pi 5's sdhci-brcmstb)
//! and the Pi's bcm2835 sdhost (drivers/mmc/host/bcm2835.c). The device is the host
//! (`mmc0`), the card's disk (`mmcblk0`) or the controller (`fe202000.mmc`): a host with an
//! empty slot backs no disk, which the storage detector takes into account.

use super::oops::detail;
use super::*;

/// What follows `<host>: ` (sdhci.c, core) or the bcm2835 driver's device prefix.
const MMC_ERRORS: &[&str] = &[
    "Timeout waiting for hardware interrupt.",
    "Timeout waiting for hardware cmd interrupt.",
    "ADMA error: 0x%x",
    "Controller never released inhibit bit(s).",
    "Reset 0x%x never completed.",
    "Internal clock never stabilised.",
    "Internal clock never stabilised",
    "PLL clock never stabilised.",
    "Got data interrupt 0x%x even though no data operation was in progress.",
    "Got command interrupt 0x%x even though no command operation was in progress.",
    "Unexpected interrupt 0x%x.",
    "Card removed during transfer!",
    "bounce buffer is %u bytes but DMA claims to have transferred %u bytes",
    "CQE: Unexpected interrupt 0x%x.",
    "Card is consuming too much power!",
    "Resetting controller.",
    "recovery failed!",
    "Card stuck being busy! %w",
    // card_busy_detect() and friends before 5.x: the function, or the disk then it.
    "Card stuck in programming state! %s",
    "cache flush error %d",
    "tried to HW reset card, got error %d",
    "tried to SW reset card, got error %d",
    "error %d during resume (card was removed?)",
    "running CQE recovery",
    "Get card status fail",
    "HPI error %d. Command response 0x%x",
    "error %d whilst initialising SD card",
    "error %d whilst initialising MMC card",
    "card never left busy state",
    "error %d doing runtime resume",
    // bcm2835 sdhost
    "timeout waiting for hardware interrupt.",
    "%w timeout error - HSTS %x",
    "%w transfer error - HSTS %x",
    "%w: timeout (%u ms)",
    "PIO %w timeout - EDM %x",
    "command never completed.",
    "previous command never completed.",
    "previous command (%u) not complete (EDM %x)",
    "unexpected command %u error",
    "wait_transfer_complete - still waiting after %u retries",
    "sdhost_busy_irq: intmask %x",
    "fsm %x, hsts %x",
    // drivers/mmc/core/block.c before 5.x: `mmcblk0: error -110 transferring data, ...`
    "error %d transferring data, sector %u, nr %u, cmd response 0x%x, card status 0x%x",
    "error %d sending status command, %w",
    "error %d sending stop command, original cmd response 0x%x, card status 0x%x",
    "%s sending %s command, card status 0x%x",
    "%w: error %d transferring data, sector %u, nr %u, cmd response 0x%x, card status 0x%x",
];

/// `mmc_erase: erase error -5, status 0x1` (drivers/mmc/core/core.c): no device named.
const ERASE_ERRORS: &[&str] = &[
    "mmc_erase: erase error %d, status 0x%x",
    "mmc_erase: group start error %d, status 0x%x",
    "mmc_erase: group end error %d, status 0x%x",
];

/// Drivers whose `dev_err()` prefix (`<driver> <device>: `) leads an MMC message.
fn mmc_driver(d: &str) -> bool {
    d.contains("sdhci") || d.contains("sdhost") || d.contains("mmc") || d.contains("bcm2835")
}

/// `<device>, <message>` of an MMC line: `mmc1: <msg>`, `mmcblk0: <msg>`,
/// `<driver> <dev>: [mmc1: ]<msg>`.
pub(super) fn mmc_split(line: &str) -> Option<(&str, &str)> {
    if let Some(c) = kmatch("%w %w: %s", line)
        && !c.get(0).ends_with(':')
        && mmc_driver(c.get(0))
    {
        if let Some(h) = kmatch("mmc%u: %s", c.get(2)) {
            let host = &c.get(2)[..c.get(2).len() - h.get(1).len() - 2];
            return Some((host, h.get(1)));
        }
        return Some((c.get(1), c.get(2)));
    }
    let c = kmatch("%w: %s", line)?;
    c.get(0).starts_with("mmc").then(|| (c.get(0), c.get(1)))
}

pub(super) fn mmc_head(line: &str) -> Option<Head> {
    // The first word is an mmc host or device, or an MMC driver (see `mmc_split`): most
    // lines of these first bytes are turned away here, before the conversion-led formats
    // scan them.
    let first = line.split([' ', ':']).next().unwrap_or_default();
    if !first.starts_with("mmc") && !mmc_driver(first) {
        return None;
    }
    if let Some((_, c)) = kmatch_any(ERASE_ERRORS, line) {
        let f = Fields {
            error: c.i32(0),
            detail: Some(detail(line)),
            ..Fields::default()
        };
        return Head::new(EventKind::MmcError, Role::Splat, f);
    }
    let (device, msg) = mmc_split(line)?;
    let (_, c) = kmatch_any(MMC_ERRORS, msg)?;
    let error = (0..3)
        .map(|i| c.get(i))
        .find(|s| s.starts_with('-'))
        .and_then(|s| s.parse().ok());
    let f = Fields {
        device: Some(device.to_string()),
        error,
        detail: Some(detail(msg)),
        ..Fields::default()
    };
    Head::new(EventKind::MmcError, Role::Splat, f)
}

/// sdhci_dumpregs(): `mmc1: sdhci: ============ SDHCI REGISTER DUMP ===========` and the
/// register lines after it.
pub(super) fn mmc_continuation(t: &str) -> Option<Fields> {
    let (_, msg) = mmc_split(t)?;
    msg.starts_with("sdhci: ").then(Fields::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

    #[test]
    fn sd_card_errors_name_their_host() {
        for (line, dev) in [
            ("mmc0: Timeout waiting for hardware interrupt.", "mmc0"),
            (
                "mmcblk0: error -110 transferring data, sector 1234, nr 8, cmd response 0x900, card status 0xb00",
                "mmcblk0",
            ),
            (
                "sdhost-bcm2835 fe202000.mmc: timeout waiting for hardware interrupt.",
                "fe202000.mmc",
            ),
            (
                "mmc-bcm2835 fe300000.mmcnr: mmc1: Card stuck being busy! __mmc_poll_for_busy",
                "mmc1",
            ),
            (
                "mmc0: Card stuck in programming state! mmcblk0 card_busy_detect",
                "mmc0",
            ),
            (
                "mmc1: Card stuck in programming state! mmc_do_erase",
                "mmc1",
            ),
        ] {
            let v = verdict(line);
            assert_eq!(v.kind, Some(EventKind::MmcError), "{line:?}");
            assert_eq!(v.fields.device.as_deref(), Some(dev), "{line:?}");
        }
        for line in [
            "mmc0: new high speed SDHC card at address aaaa",
            "mmcblk0: mmc0:aaaa SC32G 29.7 GiB",
            "mmc1: queuing unknown CIS tuple 0x80 (2 bytes)",
        ] {
            assert_eq!(verdict(line), LineVerdict::none(), "{line:?}");
        }
    }

    #[test]
    fn the_register_dump_continues_the_timeout() {
        let (verdicts, events) = run(&[
            "mmc1: Timeout waiting for hardware interrupt.",
            "mmc1: sdhci: ============ SDHCI REGISTER DUMP ===========",
            "mmc1: sdhci: Sys addr:  0x00000000 | Version:  0x00001002",
            "mmc1: sdhci: ============================================",
        ]);
        assert!(verdicts[1..].iter().all(|v| v.continuation));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].lines, 4);
    }
}
