//! The read-only HTTP endpoint: `GET /metrics`, `/healthz`, `/status`. Nothing here can
//! change state: every route only reads copies held by the hub, the registry and the
//! liveness table, so a detector stuck in the kernel can never make a scrape slow.
//! Connections are capped and must send their headers promptly, so a slow or hostile
//! client cannot exhaust the daemon.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::hub::Hub;
use crate::liveness::Heartbeats;

/// Concurrent connections served; more are closed at once. Prometheus uses one.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers within this time.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Facts fixed at startup, echoed in `/status`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct StaticInfo {
    pub(crate) version: &'static str,
    pub(crate) mode: String,
    pub(crate) node_name: String,
    pub(crate) boot_id: String,
    pub(crate) config: String,
    pub(crate) listen: String,
    pub(crate) started_unix: u64,
    /// How the previous boot ended, decided at the first start in this boot (`null` when
    /// there was none to judge).
    pub(crate) previous_boot: serde_json::Value,
}

pub(crate) struct App {
    pub(crate) registry: Registry,
    pub(crate) hub: Arc<Hub>,
    pub(crate) liveness: Heartbeats,
    pub(crate) info: StaticInfo,
}

fn text(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, ctype)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

/// Routes one request. Public for tests that exercise routing without sockets.
pub(crate) fn route(app: &App, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "read-only endpoint: only GET and HEAD\n",
        );
        r.headers_mut()
            .insert(ALLOW, "GET, HEAD".parse().expect("valid header"));
        return r;
    }
    match path {
        "/metrics" => {
            // nodemedic_up follows /healthz: 0 while any loop is stuck, so an alert on it
            // fires for the failure systemd's watchdog would restart us for.
            let healthy = app.liveness.stuck().is_empty();
            app.hub.metrics().up.set(i64::from(healthy));
            text(
                StatusCode::OK,
                OPENMETRICS,
                crate::metrics::encode(&app.registry),
            )
        }
        "/healthz" => {
            let stuck = app.liveness.stuck();
            if stuck.is_empty() {
                text(StatusCode::OK, "text/plain", "ok\n")
            } else {
                let why: Vec<String> = stuck
                    .iter()
                    .map(|s| format!("loop {} silent for {}s", s.name, s.silent_for.as_secs()))
                    .collect();
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("stuck: {}\n", why.join("; ")),
                )
            }
        }
        "/status" => {
            let body = serde_json::json!({
                "info": app.info,
                "healthy": app.liveness.stuck().is_empty(),
                "stuck_loops": app.liveness.stuck().iter().map(|s| &s.name).collect::<Vec<_>>(),
                "conditions": app.hub.conditions(),
                "detectors": app.hub.detectors(),
                "last_actions": app.hub.recent_actions(),
                "persisted": app.hub.persisted(),
            });
            let mut s = serde_json::to_string_pretty(&body)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            s.push('\n');
            text(StatusCode::OK, "application/json", s)
        }
        "/" => text(
            StatusCode::OK,
            "text/plain",
            "nodemedic: /metrics (OpenMetrics), /healthz, /status (JSON)\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /status\n",
        ),
    }
}

/// Serves until `stop` turns true.
pub(crate) async fn serve(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::warn!("http accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = route(&app, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = conn.await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeClock;
    use crate::metrics::CoreMetrics;

    fn app(clock: Arc<FakeClock>) -> App {
        let mut registry = Registry::default();
        let m = CoreMetrics::register(&mut registry);
        let liveness = Heartbeats::new(clock, Duration::from_secs(30));
        App {
            registry,
            hub: Arc::new(Hub::new(m, None)),
            liveness,
            info: StaticInfo {
                version: "t",
                mode: "observe".into(),
                node_name: "n".into(),
                boot_id: "b".into(),
                config: "c".into(),
                listen: "l".into(),
                started_unix: 0,
                previous_boot: serde_json::Value::Null,
            },
        }
    }

    #[test]
    fn writes_are_refused_because_the_endpoint_is_read_only() {
        let a = app(Arc::new(FakeClock::new(0, Duration::from_secs(1))));
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let r = route(&a, &m, "/status");
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        }
    }

    #[test]
    fn healthz_turns_503_naming_the_stuck_loop() {
        let clock = Arc::new(FakeClock::new(0, Duration::from_secs(1)));
        let a = app(clock.clone());
        let _hb = a.liveness.register("kernel");
        assert_eq!(route(&a, &Method::GET, "/healthz").status(), StatusCode::OK);
        clock.advance(Duration::from_secs(31));
        let r = route(&a, &Method::GET, "/healthz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn unknown_paths_are_404_and_metrics_are_openmetrics() {
        let a = app(Arc::new(FakeClock::new(0, Duration::from_secs(1))));
        assert_eq!(
            route(&a, &Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
        let r = route(&a, &Method::GET, "/metrics");
        assert_eq!(r.headers()[CONTENT_TYPE], OPENMETRICS);
    }
}
