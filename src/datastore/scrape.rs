//! The etcd edge: its `/metrics` and `/health`, over plain HTTP on the loopback, each
//! scrape under one deadline, on a worker thread of its own.
//!
//! The detector never waits for etcd: it hands the worker a request and picks the answer
//! up on a later pass ([`ScrapeWorker`]). The worker runs one scrape at a time, so at most
//! one is ever in flight, and the deadline is a real one: every connect, write and read
//! gets only what is left of it, and the socket is closed when it passes. A SIGSTOPped or
//! wedged k3s costs one deadline per scrape and nothing else. (A blocking socket rather
//! than a tokio runtime of its own, which each scrape mapped again: issue 22, and
//! BENCHMARKS.md for what the etcd server's RSS became.)

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::edge::http_get::{self, GetError, HttpUrl, parse_response};

/// etcd's metrics page is 100-300 KB; anything past this is not etcd.
const MAX_BODY: usize = 8 << 20;

/// One scrape's answers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Scraped {
    pub(crate) metrics: String,
    /// `/health`'s body, or why it could not be read (older etcd, timeout).
    pub(crate) health: Result<String, String>,
}

/// Why a scrape gave nothing.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ScrapeError {
    /// The deadline passed.
    Timeout(Duration),
    /// Refused, reset, an HTTP error status, a body that is not text...
    Failed(String),
}

impl std::fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScrapeError::Timeout(d) => {
                write!(f, "no answer within {}", crate::config::ConfigDuration(*d))
            }
            ScrapeError::Failed(e) => f.write_str(e),
        }
    }
}

/// The edge: one scrape, within `timeout` in total.
pub(crate) trait EtcdEndpoint: Send + 'static {
    fn scrape(&mut self, timeout: Duration) -> Result<Scraped, ScrapeError>;
    /// Where it scrapes, for messages.
    fn describe(&self) -> String;
}

/// Real: two blocking HTTP/1.1 GETs ([`crate::edge::http_get`]) under one deadline.
pub(crate) struct HttpEndpoint {
    metrics: HttpUrl,
    health: HttpUrl,
}

impl HttpEndpoint {
    /// `url` as validated by `[etcd] metrics_url`: `http://host:port/path`.
    pub(crate) fn new(url: &str) -> Result<Self, String> {
        let metrics = HttpUrl::parse(url)?;
        // /health (alarms) is on the same listener.
        let health = HttpUrl {
            path: "/health".into(),
            ..metrics.clone()
        };
        Ok(HttpEndpoint { metrics, health })
    }
}

/// One GET's body, when the answer is a success.
fn fetch(url: &HttpUrl, left: Duration) -> Result<String, GetError> {
    let raw = http_get::get(url, left, MAX_BODY)?;
    if raw.len() > MAX_BODY {
        return Err(GetError::Failed(format!(
            "GET {} sent more than {MAX_BODY} bytes: not etcd",
            url.path
        )));
    }
    let a = parse_response(&raw).map_err(|e| GetError::Failed(format!("GET {}: {e}", url.path)))?;
    if !(200..300).contains(&a.status) {
        return Err(GetError::Failed(format!(
            "GET {} answered {}: {}",
            url.path,
            a.status,
            a.body.chars().take(200).collect::<String>()
        )));
    }
    Ok(a.body)
}

impl EtcdEndpoint for HttpEndpoint {
    fn scrape(&mut self, timeout: Duration) -> Result<Scraped, ScrapeError> {
        let end = Instant::now() + timeout;
        let metrics = fetch(&self.metrics, timeout).map_err(|e| match e {
            GetError::TimedOut(_) => ScrapeError::Timeout(timeout),
            e => ScrapeError::Failed(e.to_string()),
        })?;
        // An etcd without /health still has metrics; what is left of the deadline only.
        let health = match end.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => fetch(&self.health, left).map_err(|e| e.to_string()),
            _ => Err(format!(
                "no time left for /health within {} ms",
                timeout.as_millis()
            )),
        };
        Ok(Scraped { metrics, health })
    }

    fn describe(&self) -> String {
        format!(
            "http://{}:{}{}",
            self.metrics.host, self.metrics.port, self.metrics.path
        )
    }
}

/// The alarms `/health` names: etcd answers `{"health":"false","reason":"ALARM NOSPACE"}`
/// while an alarm is active (etcdserver/api/etcdhttp). None when the body is not that JSON.
pub(crate) fn alarms_in_health(body: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let reason = v.get("reason").and_then(|r| r.as_str()).unwrap_or("");
    Some(
        reason
            .split(',')
            .filter_map(|r| r.trim().strip_prefix("ALARM "))
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect(),
    )
}

/// The scrape's thread, and the one request it may have in hand.
pub(crate) struct ScrapeWorker {
    requests: mpsc::Sender<Duration>,
    results: mpsc::Receiver<Result<Scraped, ScrapeError>>,
    in_flight: bool,
    /// An answer taken off the channel but not yet polled.
    stash: Option<Result<Scraped, ScrapeError>>,
    pub(crate) describe: String,
}

/// What [`ScrapeWorker::start`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Started {
    Yes,
    /// The previous scrape has not answered yet: none is stacked on it.
    Busy,
    /// The worker thread is gone (it cannot be: it catches nothing but never panics).
    Gone,
}

impl ScrapeWorker {
    pub(crate) fn spawn(mut ep: Box<dyn EtcdEndpoint>) -> std::io::Result<Self> {
        let describe = ep.describe();
        let (req_tx, req_rx) = mpsc::channel::<Duration>();
        let (res_tx, res_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("etcd-scrape".into())
            .spawn(move || {
                while let Ok(timeout) = req_rx.recv() {
                    if res_tx.send(ep.scrape(timeout)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(ScrapeWorker {
            requests: req_tx,
            results: res_rx,
            in_flight: false,
            stash: None,
            describe,
        })
    }

    /// The answer to the request in flight, if it has come. Never waits.
    pub(crate) fn poll(&mut self) -> Option<Result<Scraped, ScrapeError>> {
        if let Some(r) = self.stash.take() {
            self.in_flight = false;
            return Some(r);
        }
        match self.results.try_recv() {
            Ok(r) => {
                self.in_flight = false;
                Some(r)
            }
            Err(_) => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// The answer is waiting to be polled (tests wait for it instead of sleeping).
    #[cfg(test)]
    pub(crate) fn answered(&mut self) -> bool {
        if self.stash.is_none() {
            self.stash = self.results.try_recv().ok();
        }
        self.stash.is_some()
    }

    pub(crate) fn start(&mut self, timeout: Duration) -> Started {
        if self.in_flight {
            return Started::Busy;
        }
        if self.requests.send(timeout).is_err() {
            return Started::Gone;
        }
        self.in_flight = true;
        Started::Yes
    }
}

#[cfg(test)]
/// Answers from a script; each scrape waits for the test's go-ahead when `gate` is set,
/// so a test can hold a scrape "in flight" for as long as it likes.
pub(crate) struct FakeEndpoint {
    pub(crate) answers:
        std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Result<Scraped, ScrapeError>>>>,
    pub(crate) gate: Option<mpsc::Receiver<()>>,
    pub(crate) calls: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

#[cfg(test)]
impl EtcdEndpoint for FakeEndpoint {
    fn scrape(&mut self, _timeout: Duration) -> Result<Scraped, ScrapeError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(g) = &self.gate {
            let _ = g.recv();
        }
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(ScrapeError::Failed("connection refused".into())))
    }
    fn describe(&self) -> String {
        "fake etcd".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn health_bodies_name_their_alarms() {
        assert_eq!(
            alarms_in_health(r#"{"health":"true","reason":""}"#),
            Some(vec![])
        );
        assert_eq!(
            alarms_in_health(r#"{"health":"false","reason":"ALARM NOSPACE"}"#),
            Some(vec!["NOSPACE".to_string()])
        );
        assert_eq!(
            alarms_in_health(r#"{"health":"false","reason":"RAFT NO LEADER"}"#),
            Some(vec![])
        );
        assert_eq!(alarms_in_health("not json"), None);
    }

    /// A one-shot HTTP server on the loopback answering each path from `pages`.
    fn serve(pages: Vec<(&'static str, &'static str)>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming().take(pages.len()) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = pages
                    .iter()
                    .find(|(p, _)| req.starts_with(&format!("GET {p} ")))
                    .map_or("", |(_, b)| b);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        addr
    }

    #[test]
    fn the_real_endpoint_reads_metrics_and_health_over_http() {
        let addr = serve(vec![
            ("/metrics", "etcd_server_has_leader 1\n"),
            ("/health", r#"{"health":"true","reason":""}"#),
        ]);
        let mut ep = HttpEndpoint::new(&format!("http://{addr}/metrics")).unwrap();
        let s = ep.scrape(Duration::from_secs(5)).unwrap();
        assert_eq!(s.metrics, "etcd_server_has_leader 1\n");
        assert_eq!(s.health.unwrap(), r#"{"health":"true","reason":""}"#);
    }

    #[test]
    fn a_listener_that_never_answers_costs_one_deadline() {
        // Accepts (the kernel's backlog does) and never reads nor writes.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut ep = HttpEndpoint::new(&format!("http://{addr}/metrics")).unwrap();
        let e = ep.scrape(Duration::from_millis(200)).unwrap_err();
        assert_eq!(e, ScrapeError::Timeout(Duration::from_millis(200)));
        drop(l);
        let e = ep.scrape(Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(&e, ScrapeError::Failed(m) if m.contains("cannot connect")),
            "{e:?}"
        );
    }

    #[test]
    fn the_worker_keeps_one_scrape_in_flight_and_never_blocks_the_caller() {
        let (go, gate) = mpsc::channel();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let answers = std::sync::Arc::new(std::sync::Mutex::new(
            vec![Ok(Scraped {
                metrics: "x 1\n".into(),
                health: Err("none".into()),
            })]
            .into(),
        ));
        let mut w = ScrapeWorker::spawn(Box::new(FakeEndpoint {
            answers,
            gate: Some(gate),
            calls: calls.clone(),
        }))
        .unwrap();
        assert_eq!(w.start(Duration::from_secs(2)), Started::Yes);
        // The scrape is held inside the endpoint: polling returns at once, and no second
        // scrape is stacked on it.
        for _ in 0..5 {
            assert!(w.poll().is_none());
            assert_eq!(w.start(Duration::from_secs(2)), Started::Busy);
        }
        go.send(()).unwrap();
        let r = loop {
            if let Some(r) = w.poll() {
                break r;
            }
            std::thread::yield_now();
        };
        assert_eq!(r.unwrap().metrics, "x 1\n");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(w.start(Duration::from_secs(2)), Started::Yes);
        go.send(()).unwrap();
    }
}
