//! `unregister_netdevice: waiting for <dev> to become free. Usage count = <n>`
//! (net/core/dev.c netdev_wait_allrefs_any()): a leaked reference keeps a network device,
//! usually a pod's veth, from going away; every later network namespace teardown and
//! creation waits behind it, so pods stop starting.

use super::oops::detail;
use super::*;

pub(super) fn netdev_head(line: &str) -> Option<Head> {
    let c = kmatch(
        "unregister_netdevice: waiting for %w to become free. Usage count = %d",
        line,
    )?;
    let f = Fields {
        device: c.string(0),
        detail: Some(detail(line)),
        ..Fields::default()
    };
    Head::new(EventKind::NetdevUnregisterStuck, Role::Single, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

    #[test]
    fn stuck_unregister_names_the_device() {
        let v = verdict(
            "unregister_netdevice: waiting for veth3c2a1b9 to become free. Usage count = 2",
        );
        assert_eq!(v.kind, Some(EventKind::NetdevUnregisterStuck));
        assert_eq!(v.fields.device.as_deref(), Some("veth3c2a1b9"));
    }
}
