//! containerd 2.x's sandbox store over gRPC (the Sandbox API,
//! `containerd.services.sandbox.v1.Store`), as both repairs reach it: preflight on its
//! private containerd (`preflight::sandbox_store`) and the runtime repair on k3s's
//! (`runtime::cri`). containerd 1.6 has no store and answers `Unimplemented`; that is "no
//! store" here, not an error, so callers need no version check.
//!
//! Every call carries the caller's deadline; a refused call hands back containerd's own
//! status for the caller to word.

use containerd_client::services::v1::sandbox::{
    StoreDeleteRequest, StoreGetRequest, StoreListRequest, store_client::StoreClient,
};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::grpc::namespaced;

/// Largest listing accepted: ~1 KiB per entry, so a node's worth many times over.
const MAX_LIST_BYTES: usize = 16 << 20;

/// True for the codes that mean "no such entry here": NotFound, and Unimplemented from a
/// containerd without a store (1.6).
pub(crate) fn absent(s: &Status) -> bool {
    matches!(s.code(), Code::NotFound | Code::Unimplemented)
}

/// `Store.List` in `namespace`; `Ok(None)` when containerd has no sandbox store (1.6).
pub(crate) async fn list(
    channel: Channel,
    namespace: &str,
    timeout: Duration,
) -> Result<Option<Vec<containerd_client::types::Sandbox>>, Status> {
    let mut client = StoreClient::new(channel).max_decoding_message_size(MAX_LIST_BYTES);
    let req = namespaced(StoreListRequest { filters: vec![] }, namespace, timeout);
    match client.list(req).await {
        Ok(r) => Ok(Some(r.into_inner().list)),
        Err(s) if s.code() == Code::Unimplemented => Ok(None),
        Err(s) => Err(s),
    }
}

/// `Store.Get` of `id` in `namespace`: whether the entry exists (never, without a store).
pub(crate) async fn exists(
    channel: Channel,
    namespace: &str,
    id: &str,
    timeout: Duration,
) -> Result<bool, Status> {
    let req = namespaced(
        StoreGetRequest {
            sandbox_id: id.into(),
        },
        namespace,
        timeout,
    );
    match StoreClient::new(channel).get(req).await {
        Ok(_) => Ok(true),
        Err(s) if absent(&s) => Ok(false),
        Err(s) => Err(s),
    }
}

/// `Store.Delete` of `id` in `namespace`: `Ok(true)` when this call removed it, `Ok(false)`
/// when it was not there (or there is no store).
pub(crate) async fn delete(
    channel: Channel,
    namespace: &str,
    id: &str,
    timeout: Duration,
) -> Result<bool, Status> {
    let req = namespaced(
        StoreDeleteRequest {
            sandbox_id: id.into(),
        },
        namespace,
        timeout,
    );
    match StoreClient::new(channel).delete(req).await {
        Ok(_) => Ok(true),
        Err(s) if absent(&s) => Ok(false),
        Err(s) => Err(s),
    }
}
