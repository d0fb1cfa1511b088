//! k3s's kubelet and etcd lines (`kubelet_pleg_unhealthy`, `etcd_slow`), so that
//! `nodemedic classify` shows them in a saved k3s journal. The line is parsed by
//! [`crate::formats::k3s_log`], shared with the k3s detector, which follows the unit's
//! journal itself; the kernel detector never sees these (they are not kernel records).

use super::*;
use crate::formats::k3s_log::{self, K3sSignal};

/// A k3s component's line with a signal in it: a one-line event.
pub(super) fn k3s_log_head(line: &str) -> Option<Head> {
    let (kind, fields) = match k3s_log::signal(line)? {
        K3sSignal::PlegUnhealthy => (EventKind::KubeletPlegUnhealthy, Fields::default()),
        K3sSignal::EtcdSlow(w) => (
            EventKind::EtcdSlow,
            Fields {
                etcd_warning: Some(w.as_str()),
                ..Fields::default()
            },
        ),
    };
    Head::new(kind, Role::Single, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_and_etcd_lines_are_one_line_events_that_leave_an_open_splat_alone() {
        let mut c = Classifier::new();
        c.feed(
            "INFO: task kworker/u8:2:123 blocked for more than 120 seconds.",
            None,
        );
        let v = c.feed(
            r#"E1121 17:35:41.123456     812 kubelet.go:2412] "Skipping pod synchronization" err="PLEG is not healthy: pleg was last seen active 3m5s ago; threshold is 3m0s""#,
            None,
        );
        assert_eq!(v.kind, Some(EventKind::KubeletPlegUnhealthy));
        assert!(!v.continuation);
        let v = c.feed(
            r#"{"level":"warn","ts":"2025-11-21T17:35:41.123Z","caller":"wal/wal.go:805","msg":"slow fdatasync","took":"1.51s","expected-duration":"1s"}"#,
            None,
        );
        assert_eq!(v.kind, Some(EventKind::EtcdSlow));
        assert_eq!(v.fields.etcd_warning, Some("fdatasync"));
        assert_eq!(
            c.open_event().map(|e| e.kind),
            Some(EventKind::HungTask),
            "single-line events interleave with a splat"
        );
    }

    #[test]
    fn a_kernel_record_with_k3s_text_is_no_k3s_event() {
        let mut c = Classifier::new();
        let mut kinds = Vec::new();
        c.feed_record(
            r#"E1121 17:35:41.123456     812 kubelet.go:2412] "Skipping pod synchronization" err="PLEG is not healthy: pleg was last seen active 3m5s ago""#,
            None,
            |v| kinds.push(v.kind),
        );
        assert_eq!(kinds, vec![None], "only saved logs carry k3s's lines");
    }
}
