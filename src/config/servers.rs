//! `[servers]`: the operator's override of the quorum rule (`policy::quorum`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServersSection {
    /// Let a server reboot while another server is down or unhealthy (the default
    /// refuses: two servers down loses etcd quorum on a three-server cluster).
    pub(crate) allow_reboot_with_peer_down: bool,
}
