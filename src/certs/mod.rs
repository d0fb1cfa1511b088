//! k3s's certificates: notAfter of the server's `tls/*.crt` and the agent's client and
//! serving certificates, the days they have left, and when a k3s restart should renew
//! them.

pub(crate) mod detector;
pub(crate) mod judge;
pub(crate) mod metrics;
pub(crate) mod x509;
