//! The read-only HTTP endpoint: `GET /metrics`, `/healthz`, `/status`. Nothing here can
//! change state: every route only reads copies held by the hub, the registry and the
//! liveness table, so a detector stuck in the kernel can never make a scrape slow.
//!
//! A slow or hostile client cannot lock a scraper out ([`slots`] says how): one address
//! holds at most [`Limits::per_peer`] connections; a connection takes a serving slot only
//! once its request headers are complete; full slots close the holder that does least with
//! its slot instead of refusing a client that asked; headers must arrive within
//! [`Limits::header_timeout`]; a write may not wait longer than [`Limits::write_timeout`]
//! for the client to read ([`deadline_io`]); no connection lives longer than
//! [`Limits::lifetime`].
//!
//! `/status` tells everything only to loopback peers (someone on the node, who can read
//! the state directory anyway); any other address gets a summary without messages,
//! detector facts, actions or persisted state ([`status_summary`]).

mod deadline_io;
mod slots;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::hub::Hub;
use crate::liveness::Heartbeats;
use deadline_io::DeadlineIo;
use slots::{Admit, Slots};

/// Bounds on connections. Prometheus uses one connection per target and a scrape takes a
/// millisecond, so these are far from anything a real client needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections served at once (each sent a complete request); a newcomer beyond this
    /// replaces the holder that does least with its slot.
    pub(crate) max_connections: usize,
    /// Connections still sending their first request's headers; beyond this the one that
    /// has waited longest is closed.
    pub(crate) hall: usize,
    /// Connections one address may hold; more are closed at once.
    pub(crate) per_peer: usize,
    /// A client must send its request headers within this time.
    pub(crate) header_timeout: Duration,
    /// A response write may wait this long for the client to read.
    pub(crate) write_timeout: Duration,
    /// No connection, keep-alive or not, lives longer.
    pub(crate) lifetime: Duration,
    /// Requests served on one connection; the last one's response closes it. Bounds what
    /// a client that pipelines requests and never reads costs before its buffers fill.
    pub(crate) max_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 32,
            // A honest client completes its headers within a round trip; 128 silent
            // connections cost 128 fds and a few KiB.
            hall: 128,
            // Two Prometheus replicas, a curl, a `nodemedic check` and room to spare.
            per_peer: 4,
            header_timeout: Duration::from_secs(5),
            // A /metrics body is tens of KiB: it fits the socket buffers of any client that
            // reads at all, so a 5 s stall means nobody is reading.
            write_timeout: Duration::from_secs(5),
            // Longer than Prometheus's default 15 s scrape interval, so one keep-alive
            // connection serves a scrape or two before it is renewed.
            lifetime: Duration::from_secs(30),
            // One scrape per connection is Prometheus's usual pattern; two fit in a
            // lifetime at the default 15 s interval.
            max_requests: 4,
        }
    }
}

pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabels {
    pub(crate) reason: String,
}

/// Why connections were closed by us rather than by the client.
pub(crate) const DROP_REASONS: [&str; 6] = [
    "peer_limit",
    "hall_full",
    "header_timeout",
    "evicted",
    "write_timeout",
    "lifetime",
];

#[derive(Clone)]
pub(crate) struct HttpMetrics {
    pub(crate) open: Gauge,
    pub(crate) dropped: Family<DropLabels, Counter>,
}

impl HttpMetrics {
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = HttpMetrics {
            open: Gauge::default(),
            dropped: Family::default(),
        };
        reg.register(
            "nodemedic_http_connections",
            "HTTP connections open now",
            m.open.clone(),
        );
        reg.register(
            "nodemedic_http_connections_dropped",
            "HTTP connections nodemedic closed: peer_limit (too many from one address), hall_full (still sending headers when room was needed), header_timeout, evicted (slots full, made room for a client that asked), write_timeout (the client stopped reading), lifetime (too old)",
            m.dropped.clone(),
        );
        for r in DROP_REASONS {
            let _ = m.dropped.get_or_create(&DropLabels { reason: r.into() });
        }
        m
    }

    fn drop(&self, reason: &str) {
        self.dropped
            .get_or_create(&DropLabels {
                reason: reason.into(),
            })
            .inc();
    }
}

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

/// Who asked: `/status` tells everything only to someone on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peer {
    Loopback,
    Remote,
}

impl Peer {
    pub(crate) fn of(ip: IpAddr) -> Peer {
        if slots::canonical(ip).is_loopback() {
            Peer::Loopback
        } else {
            Peer::Remote
        }
    }
}

/// Routes one request. Public for tests that exercise routing without sockets.
pub(crate) fn route(app: &App, method: &Method, path: &str, peer: Peer) -> Response<Full<Bytes>> {
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
            let body = match peer {
                Peer::Loopback => status_full(app),
                Peer::Remote => status_summary(app),
            };
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

fn status_full(app: &App) -> serde_json::Value {
    serde_json::json!({
        "info": app.info,
        "healthy": app.liveness.stuck().is_empty(),
        "stuck_loops": app.liveness.stuck().iter().map(|s| &s.name).collect::<Vec<_>>(),
        "conditions": app.hub.conditions(),
        "detectors": app.hub.detectors(),
        "last_actions": app.hub.recent_actions(),
        "persisted": app.hub.persisted(),
    })
}

/// What an address other than loopback sees: what `/metrics` and the Node's conditions
/// already publish (kinds, subjects, reasons), not the messages (kernel task names, pod
/// names, file paths a user chose), detector facts, the audit tail or persisted state.
pub(crate) fn status_summary(app: &App) -> serde_json::Value {
    serde_json::json!({
        "info": {
            "version": app.info.version,
            "mode": app.info.mode,
            "node_name": app.info.node_name,
        },
        "healthy": app.liveness.stuck().is_empty(),
        "stuck_loops": app.liveness.stuck().iter().map(|s| &s.name).collect::<Vec<_>>(),
        "conditions": app.hub.conditions().iter().map(|h| serde_json::json!({
            "kind": h.condition.kind,
            "subject": h.condition.subject,
            "reason": h.condition.reason,
            "since_unix": h.since_unix,
        })).collect::<Vec<_>>(),
        "detail": "summary for a remote client; the full status (messages, detector facts, last actions, persisted state) is served to loopback only: curl on the node itself",
    })
}

/// Reads until the first request's headers are complete (or [`MAX_HEAD`] bytes came);
/// what was read is handed to hyper. Err on EOF or a socket error.
async fn read_head(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 2048];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= MAX_HEAD {
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Headers longer than this are not ours to judge: hyper takes over (and refuses them).
const MAX_HEAD: usize = 16 * 1024;

/// Serves until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    limits: Limits,
    metrics: HttpMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Mutex::new(Slots::new(
        limits.max_connections,
        limits.hall,
        limits.per_peer,
    )));
    loop {
        let (stream, addr) = tokio::select! {
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
        let (admitted, epoch) = {
            let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
            let a = s.admit(addr.ip(), Instant::now());
            metrics.open.set(s.open() as i64);
            (a, s.epoch())
        };
        let (id, progress, close) = match admitted {
            Admit::PeerLimit => {
                metrics.drop("peer_limit");
                drop(stream);
                continue;
            }
            Admit::Waiting {
                id,
                progress,
                close,
                evict,
            } => {
                if let Some(longest) = evict {
                    metrics.drop("hall_full");
                    longest.notify_one();
                }
                (id, progress, close)
            }
        };
        let peer = Peer::of(addr.ip());
        let (app, task_slots, metrics) = (app.clone(), slots.clone(), metrics.clone());
        tokio::spawn(async move {
            let closed_by_us = connection(
                stream,
                id,
                peer,
                app,
                &task_slots,
                &metrics,
                limits,
                progress,
                close,
                epoch,
            )
            .await;
            if !closed_by_us {
                let mut s = task_slots.lock().unwrap_or_else(|p| p.into_inner());
                s.release(id);
                metrics.open.set(s.open() as i64);
            }
        });
        // Let the new connection read its headers before the next accept: a burst of
        // accepts must not push a prompt client out of the hall before it could speak.
        tokio::task::yield_now().await;
    }
}

/// One connection, from the hall to its end. Returns true when the table already
/// forgot it (it was evicted).
#[allow(clippy::too_many_arguments)]
async fn connection(
    mut stream: tokio::net::TcpStream,
    id: u64,
    peer: Peer,
    app: Arc<App>,
    slots: &Mutex<Slots>,
    metrics: &HttpMetrics,
    limits: Limits,
    progress: Arc<slots::ConnProgress>,
    close: Arc<tokio::sync::Notify>,
    epoch: Instant,
) -> bool {
    let accepted = Instant::now();
    let mut head = Vec::new();
    tokio::select! {
        r = tokio::time::timeout(limits.header_timeout, read_head(&mut stream, &mut head)) => match r {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return false,
            Err(_) => {
                metrics.drop("header_timeout");
                return false;
            }
        },
        _ = close.notified() => return true,
    }
    let promoted = slots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .promote(id, Instant::now());
    match promoted {
        slots::Promote::Gone => return true,
        slots::Promote::Served { evict } => {
            if let Some(v) = evict {
                metrics.drop("evicted");
                v.notify_one();
            }
        }
    }
    let served = std::sync::atomic::AtomicUsize::new(0);
    let max_requests = limits.max_requests;
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut r = route(&app, req.method(), req.uri().path(), peer);
        if served.fetch_add(1, Ordering::Relaxed) + 1 >= max_requests {
            // hyper closes the connection once this response is written.
            r.headers_mut()
                .insert(CONNECTION, "close".parse().expect("valid header"));
        }
        async move { Ok::<_, Infallible>(r) }
    });
    let io = DeadlineIo::new(stream, head, limits.write_timeout, progress.clone(), epoch);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut evicted = false;
    let lifetime_left = limits.lifetime.saturating_sub(accepted.elapsed());
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = close.notified() => evicted = true,
        _ = tokio::time::sleep(lifetime_left) => {
            // Let the response in flight finish (bounded by the write deadline).
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.write_timeout, conn.as_mut()).await;
            metrics.drop("lifetime");
        }
    }
    if progress.write_timed_out.load(Ordering::Relaxed) {
        metrics.drop("write_timeout");
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeClock;
    use crate::metrics::CoreMetrics;
    use crate::model::{Condition, ConditionKind};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};

    fn app_with(clock: Arc<FakeClock>, registry: Registry, m: CoreMetrics) -> App {
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

    fn app(clock: Arc<FakeClock>) -> App {
        let mut registry = Registry::default();
        let m = CoreMetrics::register(&mut registry);
        app_with(clock, registry, m)
    }

    #[test]
    fn writes_are_refused_because_the_endpoint_is_read_only() {
        let a = app(Arc::new(FakeClock::new(0, Duration::from_secs(1))));
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let r = route(&a, &m, "/status", Peer::Loopback);
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        }
    }

    #[test]
    fn healthz_turns_503_naming_the_stuck_loop() {
        let clock = Arc::new(FakeClock::new(0, Duration::from_secs(1)));
        let a = app(clock.clone());
        let _hb = a.liveness.register("kernel");
        assert_eq!(
            route(&a, &Method::GET, "/healthz", Peer::Remote).status(),
            StatusCode::OK
        );
        clock.advance(Duration::from_secs(31));
        let r = route(&a, &Method::GET, "/healthz", Peer::Remote);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn unknown_paths_are_404_and_metrics_are_openmetrics() {
        let a = app(Arc::new(FakeClock::new(0, Duration::from_secs(1))));
        assert_eq!(
            route(&a, &Method::GET, "/nope", Peer::Loopback).status(),
            StatusCode::NOT_FOUND
        );
        let r = route(&a, &Method::GET, "/metrics", Peer::Remote);
        assert_eq!(r.headers()[CONTENT_TYPE], OPENMETRICS);
    }

    async fn body_of(r: Response<Full<Bytes>>) -> serde_json::Value {
        use http_body_util::BodyExt;
        let b = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn status_tells_everything_to_loopback_and_only_a_summary_to_other_addresses() {
        let a = app(Arc::new(FakeClock::new(0, Duration::from_secs(1))));
        a.hub.publish(
            "mounts",
            vec![Condition::new(
                ConditionKind::NetworkMountHung,
                "/mnt/nas",
                "ProbeTimeout",
                "secret message: tasks of pod payroll-7 blocked",
            )],
            100,
        );
        a.hub.set_persisted(serde_json::json!({"reboots": [1]}));
        assert_eq!(Peer::of("10.1.2.3".parse().unwrap()), Peer::Remote);
        assert_eq!(
            Peer::of("::ffff:127.0.0.1".parse().unwrap()),
            Peer::Loopback
        );
        assert_eq!(Peer::of("127.0.0.5".parse().unwrap()), Peer::Loopback);
        assert_eq!(Peer::of("::1".parse().unwrap()), Peer::Loopback);

        let full = body_of(route(&a, &Method::GET, "/status", Peer::Loopback)).await;
        assert_eq!(full["persisted"]["reboots"][0], 1);
        assert!(
            full["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .contains("payroll")
        );
        assert_eq!(full["info"]["config"], "c");

        let remote = body_of(route(&a, &Method::GET, "/status", Peer::Remote)).await;
        let text = remote.to_string();
        assert!(!text.contains("payroll"), "{text}");
        for hidden in ["persisted", "last_actions", "detectors"] {
            assert!(remote.get(hidden).is_none(), "{hidden}: {text}");
        }
        assert!(remote["info"].get("config").is_none(), "{text}");
        assert!(remote["info"].get("boot_id").is_none(), "{text}");
        assert_eq!(remote["conditions"][0]["kind"], "NetworkMountHung");
        assert_eq!(remote["conditions"][0]["subject"], "/mnt/nas");
        assert_eq!(remote["conditions"][0]["reason"], "ProbeTimeout");
    }

    /// A server on 127.0.0.1:0 with `limits` and a `/metrics` body of about `body_kib`.
    async fn server(
        limits: Limits,
        body_kib: usize,
    ) -> (
        std::net::SocketAddr,
        HttpMetrics,
        Registry,
        watch::Sender<bool>,
    ) {
        let mut registry = Registry::default();
        let m = CoreMetrics::register(&mut registry);
        let http = HttpMetrics::register(&mut registry);
        let filler: Family<DropLabels, Counter> = Family::default();
        for i in 0..body_kib * 1024 / 64 {
            filler
                .get_or_create(&DropLabels {
                    reason: format!("{i:0>40}"),
                })
                .inc();
        }
        registry.register("filler", "bulk for the body", filler);
        // A second registry to read the HTTP metrics without going through HTTP.
        let mut probe = Registry::default();
        probe.register("probe_open", "open", http.open.clone());
        probe.register("probe_dropped", "dropped", http.dropped.clone());
        let a = Arc::new(app_with(
            Arc::new(FakeClock::new(0, Duration::from_secs(1))),
            registry,
            m,
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, a, limits, http.clone(), rx));
        (addr, http, probe, tx)
    }

    fn dropped(m: &HttpMetrics, reason: &str) -> u64 {
        m.dropped
            .get_or_create(&DropLabels {
                reason: reason.into(),
            })
            .get()
    }

    /// Polls `f` every 20 ms for up to 20 s (a bound that is never the point of the test).
    async fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..1000 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f()
    }

    async fn connect_from(source: &str, to: std::net::SocketAddr) -> TcpStream {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(format!("{source}:0").parse().unwrap()).unwrap();
        s.connect(to).await.unwrap()
    }

    async fn get(mut s: TcpStream, path: &str) -> String {
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("a served request is answered")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// True when the server closed `s` (EOF or reset) without answering.
    async fn closed_by_server(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn a_client_that_never_reads_is_dropped_at_the_write_deadline_and_frees_its_slot() {
        let limits = Limits {
            write_timeout: Duration::from_millis(300),
            lifetime: Duration::from_secs(3600),
            max_requests: usize::MAX,
            ..Limits::default()
        };
        let (addr, http, _probe, _stop) = server(limits, 512).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Pipelined requests for ~25 MiB of responses: far beyond every socket buffer.
        let req = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".repeat(50);
        s.write_all(req.as_bytes()).await.unwrap();
        assert!(
            eventually(|| dropped(&http, "write_timeout") == 1).await,
            "the stalled write was never cut off"
        );
        assert!(eventually(|| http.open.get() == 0).await, "slot not freed");
        assert_eq!(dropped(&http, "lifetime"), 0);
    }

    #[tokio::test]
    async fn a_peer_over_its_limit_is_refused_while_another_peer_is_served() {
        let limits = Limits {
            per_peer: 2,
            ..Limits::default()
        };
        let (addr, http, _probe, _stop) = server(limits, 1).await;
        let _a = connect_from("127.0.0.2", addr).await;
        let _b = connect_from("127.0.0.2", addr).await;
        assert!(eventually(|| http.open.get() == 2).await);
        let mut c = connect_from("127.0.0.2", addr).await;
        assert!(closed_by_server(&mut c).await, "the third is refused");
        assert_eq!(dropped(&http, "peer_limit"), 1);
        let r = get(connect_from("127.0.0.3", addr).await, "/metrics").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }

    #[tokio::test]
    async fn silent_connections_never_take_a_slot_and_a_full_hall_drops_its_longest_waiter() {
        let limits = Limits {
            max_connections: 1,
            hall: 3,
            ..Limits::default()
        };
        let (addr, http, _probe, _stop) = server(limits, 1).await;
        let mut silent = Vec::new();
        for i in 2..5 {
            silent.push(connect_from(&format!("127.0.0.{i}"), addr).await);
            assert!(eventually(|| http.open.get() == i - 1).await);
        }
        let r = get(connect_from("127.0.0.9", addr).await, "/metrics").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert_eq!(dropped(&http, "hall_full"), 1);
        assert_eq!(dropped(&http, "evicted"), 0, "the only slot was free");
        assert!(
            closed_by_server(&mut silent[0]).await,
            "the longest waiter made room"
        );
    }

    #[tokio::test]
    async fn full_slots_serve_a_client_that_asks_by_closing_the_holder_whose_client_stopped_reading()
     {
        let limits = Limits {
            max_connections: 2,
            max_requests: usize::MAX,
            ..Limits::default()
        };
        let (addr, http, _probe, _stop) = server(limits, 512).await;
        let req = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".repeat(50);
        let mut hogs = Vec::new();
        for i in 2..4 {
            let mut s = connect_from(&format!("127.0.0.{i}"), addr).await;
            s.write_all(req.as_bytes()).await.unwrap();
            hogs.push(s);
        }
        assert!(eventually(|| http.open.get() == 2).await);
        let r = get(connect_from("127.0.0.9", addr).await, "/metrics").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert_eq!(dropped(&http, "evicted"), 1);
    }

    #[tokio::test]
    async fn headers_must_come_in_time_and_no_connection_outlives_its_lifetime() {
        let limits = Limits {
            header_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, http, _probe, _stop) = server(limits, 1).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /met").await.unwrap();
        assert!(closed_by_server(&mut s).await);
        assert_eq!(dropped(&http, "header_timeout"), 1);

        let limits = Limits {
            lifetime: Duration::from_millis(300),
            header_timeout: Duration::from_secs(3600),
            write_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (addr, http, _probe, _stop) = server(limits, 1).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // One request kept alive, then silence: only the lifetime can end it.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => break false,
            }
        };
        assert!(closed, "still open");
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
        assert_eq!(dropped(&http, "lifetime"), 1);
    }

    #[tokio::test]
    async fn the_last_request_a_connection_may_carry_is_answered_with_connection_close() {
        let limits = Limits {
            max_requests: 3,
            ..Limits::default()
        };
        let (addr, _http, _probe, _stop) = server(limits, 1).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Five pipelined, never a close from us: the server answers three and hangs up.
        s.write_all(
            "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                .repeat(5)
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("closed by the server")
            .ok();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
        assert_eq!(text.matches("connection: close").count(), 1, "{text}");
    }
}
