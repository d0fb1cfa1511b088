//! gRPC over a unix socket with a deadline: how nodemedic reaches containerd (the CRI
//! detector and actuator, and preflight's private containerd). A runtime that does not
//! answer costs one deadline, never a hung caller.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::Request;
use tonic::transport::{Channel, Endpoint, Uri};

/// gRPC metadata key that selects the containerd namespace.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// `msg` as a request in containerd namespace `namespace`, with a deadline.
pub(crate) fn namespaced<T>(msg: T, namespace: &str, timeout: Duration) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(timeout);
    if let Ok(v) = namespace.parse() {
        r.metadata_mut().insert(NAMESPACE_HEADER, v);
    }
    r
}

/// Why no channel: the text names the socket, as containerd's callers report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("containerd at {socket} did not answer connect within {timeout:?}; is it hung?")]
    Timeout { socket: String, timeout: Duration },
    #[error("cannot connect to containerd at {socket}: {error}")]
    Connect { socket: String, error: String },
}

/// Connects a gRPC channel to a unix socket within `timeout`.
pub(crate) async fn connect_unix(
    socket: &Path,
    timeout: Duration,
) -> Result<Channel, ConnectError> {
    let path = socket.to_path_buf();
    let err = |e: String| ConnectError::Connect {
        socket: socket.display().to_string(),
        error: e,
    };
    // The URI is required by tonic but ignored: the connector dials the socket.
    let ep = Endpoint::try_from("http://[::]:50051")
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let fut = ep.connect_with_connector(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
        }
    }));
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(err(format!("{e}: {}", source_chain(&e)))),
        Err(_) => Err(ConnectError::Timeout {
            socket: socket.display().to_string(),
            timeout,
        }),
    }
}

/// The error's causes, joined: tonic's own message alone says only "transport error".
pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = String::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
