//! Seconds to expiry per certificate file, and how many could not be read.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::GaugeF;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FileLabels {
    pub(crate) file: String,
}

#[derive(Clone)]
pub(crate) struct CertMetrics {
    pub(crate) expiry: Family<FileLabels, GaugeF>,
    pub(crate) unreadable: Gauge,
}

impl CertMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = CertMetrics {
            expiry: Family::default(),
            unreadable: Gauge::default(),
        };
        // The full name: a family empty on a node without k3s, listed by name in the
        // monitoring test's event-driven list.
        reg.register(
            "nodemedic_k3s_certificate_expiry_seconds",
            "Seconds until notAfter of each k3s certificate file (negative: expired)",
            m.expiry.clone(),
        );
        reg.register(
            "nodemedic_k3s_certificates_unreadable",
            "k3s certificate files that exist but could not be parsed",
            m.unreadable.clone(),
        );
        m
    }
}
