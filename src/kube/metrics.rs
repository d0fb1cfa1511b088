//! Metrics of the Kubernetes edge. Label values are bounded: verbs and resources are
//! fixed strings, codes are HTTP codes or `unreachable`/`timeout`/`decode`/`not_permitted`,
//! so an outage shows up as *why* requests fail without new series per message.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::cordon::CordonOwner;
use super::queue::ActionKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) verb: &'static str,
    pub(crate) resource: &'static str,
    pub(crate) code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CordonLabels {
    pub(crate) by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PendingLabels {
    pub(crate) kind: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct KubeMetrics {
    /// 1 when the last sync pass reached the API, 0 when it could not.
    pub(crate) api_up: Gauge,
    pub(crate) requests: Family<RequestLabels, Counter>,
    /// 1 for the current holder of the node's cordon (nodemedic, operator or none).
    pub(crate) node_cordoned: Family<CordonLabels, Gauge>,
    pub(crate) reboot_lease_held: Gauge,
    /// 1 per kind of change still owed to the API; events count individually.
    pub(crate) pending: Family<PendingLabels, Gauge>,
    pub(crate) events_dropped: Counter,
}

impl KubeMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = KubeMetrics::default();
        reg.register(
            "nodemedic_kube_api_up",
            "1 when the last sync with the Kubernetes API succeeded, 0 when the API was unreachable",
            m.api_up.clone(),
        );
        reg.register(
            "nodemedic_kube_requests",
            "Kubernetes API requests by verb, resource and result code (HTTP code, unreachable, timeout)",
            m.requests.clone(),
        );
        reg.register(
            "nodemedic_node_cordoned",
            "1 for who holds this node's cordon: nodemedic, operator or none",
            m.node_cordoned.clone(),
        );
        reg.register(
            "nodemedic_reboot_lease_held",
            "1 while this node holds the cluster reboot lock",
            m.reboot_lease_held.clone(),
        );
        reg.register(
            "nodemedic_kube_pending_actions",
            "Changes waiting for the Kubernetes API (conditions, cordon, lease: 0/1; events: count)",
            m.pending.clone(),
        );
        reg.register(
            "nodemedic_kube_events_dropped",
            "Node events not sent because of the rate limit or the bound on queued events",
            m.events_dropped.clone(),
        );
        for kind in ActionKind::ALL {
            m.pending
                .get_or_create(&PendingLabels {
                    kind: kind.as_str(),
                })
                .set(0);
        }
        m.set_cordon_owner(CordonOwner::None);
        m
    }

    pub(crate) fn request(&self, verb: &'static str, resource: &'static str, code: String) {
        self.requests
            .get_or_create(&RequestLabels {
                verb,
                resource,
                code,
            })
            .inc();
    }

    pub(crate) fn set_cordon_owner(&self, owner: CordonOwner) {
        for o in CordonOwner::ALL {
            self.node_cordoned
                .get_or_create(&CordonLabels { by: o.as_str() })
                .set(i64::from(o == owner));
        }
    }

    pub(crate) fn set_pending(&self, kind: ActionKind, n: usize) {
        self.pending
            .get_or_create(&PendingLabels {
                kind: kind.as_str(),
            })
            .set(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn every_series_exists_from_the_start_with_bounded_labels() {
        let mut reg = Registry::default();
        let m = KubeMetrics::register(&mut reg);
        m.request("patch", "nodes/status", "503".into());
        m.set_cordon_owner(CordonOwner::Operator);
        let mut out = String::new();
        encode(&mut out, &reg).unwrap();
        for line in [
            "nodemedic_kube_api_up 0",
            "nodemedic_kube_requests_total{verb=\"patch\",resource=\"nodes/status\",code=\"503\"} 1",
            "nodemedic_node_cordoned{by=\"operator\"} 1",
            "nodemedic_node_cordoned{by=\"nodemedic\"} 0",
            "nodemedic_node_cordoned{by=\"none\"} 0",
            "nodemedic_reboot_lease_held 0",
            "nodemedic_kube_pending_actions{kind=\"events\"} 0",
            "nodemedic_kube_events_dropped_total 0",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }
}
