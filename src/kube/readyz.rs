//! The local apiserver's `/readyz`, asked with this node's Kubernetes credentials: the k3s
//! detector's apiserver probe (the wiring adapts it to `k3s::probe::LivenessProbe`).
//!
//! The credentials' own server may be a load balancer or another server; the probe is
//! about this node's apiserver, so only the URL's scheme and authority are replaced (the
//! CA, client certificate and token stay: k3s's serving certificate names 127.0.0.1).
//! One client per probe, kept between calls, so a healthy apiserver is asked over one
//! kept-alive TLS connection rather than a handshake every pass. Its runtime runs only
//! inside a call.

use std::path::Path;
use std::time::Duration;

use http_body_util::BodyExt;

use super::credentials::{CredentialSource, client_config};

/// What `/readyz` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyzAnswer {
    Status {
        code: u16,
        body: String,
    },
    /// Nothing listens.
    Refused(String),
    Failed(String),
}

pub struct Readyz {
    rt: tokio::runtime::Runtime,
    client: ::kube::Client,
    path: String,
    url: String,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl Readyz {
    /// A client for `url` (`https://127.0.0.1:6443/readyz`) with `source`'s credentials.
    /// Reads the credential files; no network I/O.
    pub fn new(
        source: &CredentialSource,
        root: &Path,
        url: &str,
        timeout: Duration,
    ) -> Result<Readyz, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("k3s.apiserver_url \"{url}\": {e}"))?;
        let base: hyper::Uri = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            uri.authority()
                .map(|a| a.as_str())
                .unwrap_or("127.0.0.1:6443")
        )
        .parse()
        .map_err(|e| format!("k3s.apiserver_url \"{url}\": {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build a runtime: {e}"))?;
        let mut config = rt
            .block_on(client_config(source, root))
            .map_err(|e| e.to_string())?;
        config.cluster_url = base;
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        config.default_retry = false;
        let client = {
            let _guard = rt.enter();
            ::kube::Client::try_from(config).map_err(|e| chain(&e))?
        };
        Ok(Readyz {
            rt,
            client,
            path: uri
                .path_and_query()
                .map_or("/readyz".to_string(), |p| p.as_str().to_string()),
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One GET, within `deadline`.
    pub fn get(&self, deadline: Duration) -> ReadyzAnswer {
        let req = match hyper::Request::get(self.path.as_str()).body(::kube::client::Body::empty())
        {
            Ok(r) => r,
            Err(e) => return ReadyzAnswer::Failed(e.to_string()),
        };
        self.rt.block_on(async {
            let call = async {
                let resp = self.client.send(req).await.map_err(|e| {
                    let text = chain(&e);
                    if text.contains("Connection refused") {
                        ReadyzAnswer::Refused(text)
                    } else {
                        ReadyzAnswer::Failed(text)
                    }
                })?;
                let code = resp.status().as_u16();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ReadyzAnswer::Failed(chain(&e)))?
                    .to_bytes();
                Ok::<_, ReadyzAnswer>(ReadyzAnswer::Status {
                    code,
                    body: String::from_utf8_lossy(&body).into_owned(),
                })
            };
            match tokio::time::timeout(deadline, call).await {
                Ok(Ok(a)) | Ok(Err(a)) => a,
                Err(_) => {
                    ReadyzAnswer::Failed(format!("no answer within {} ms", deadline.as_millis()))
                }
            }
        })
    }
}
