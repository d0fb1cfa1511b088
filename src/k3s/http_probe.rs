//! Plain-HTTP liveness probes: the kubelet's `/healthz` and embedded etcd's `/health`, both
//! on loopback without TLS. A blocking `GET` on a std socket with connect, write and read
//! timeouts from one deadline; the answer is judged by a pure function per endpoint.
//!
//! A SIGSTOPped (or wedged) server still completes the TCP handshake (the kernel accepts
//! into the listen backlog), so a stopped kubelet shows as a read timeout, not a refusal.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::probe::{LivenessProbe, ProbeAnswer};

/// Health answers are a few bytes ("ok"); a full verbose readyz is under 4 KiB.
const MAX_RESPONSE: usize = 64 << 10;
/// Kept of a failing body for the message.
const BODY_IN_MESSAGE: usize = 300;

/// `http://host:port/path` split up; only what the probes need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
}

impl HttpUrl {
    /// Parses an `http://` URL; IPv6 hosts in brackets. Port 80 when absent.
    pub(crate) fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("\"{url}\" is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("\"{url}\": unclosed [ in the host"))?;
            (h, tail.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("\"{url}\" has no host"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| format!("\"{url}\": port \"{p}\" is not a number"))?,
            None => 80,
        };
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// A parsed answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpAnswer {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Parses a whole HTTP/1.x response (the server closed the connection): status line,
/// headers, body; a chunked body is decoded.
pub(crate) fn parse_response(raw: &[u8]) -> Result<HttpAnswer, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete HTTP header in the answer")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .filter(|_| status_line.starts_with("HTTP/1."))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let mut body = raw[head_end + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpAnswer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunked body")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
}

fn short(body: &str) -> String {
    let t = body.trim();
    let mut s: String = t.chars().take(BODY_IN_MESSAGE).collect();
    if s.len() < t.len() {
        s.push_str("...");
    }
    s.replace('\n', " ")
}

/// The kubelet's `/healthz` (and the apiserver's `/readyz`): 200 with `ok`; anything else
/// lists the failed checks (`[-]syncloop failed: ...`).
pub(crate) fn judge_healthz(a: &HttpAnswer) -> ProbeAnswer {
    if a.status == 200 && a.body.trim() == "ok" {
        return ProbeAnswer::Ok("HTTP 200 ok".into());
    }
    let failed: Vec<&str> = a
        .body
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("[-]"))
        .collect();
    let detail = if failed.is_empty() {
        short(&a.body)
    } else {
        failed.join("; ")
    };
    ProbeAnswer::Failed(format!("HTTP {}: {detail}", a.status))
}

/// etcd's `/health`: `{"health":"true","reason":""}` when it has a leader and no alarm.
pub(crate) fn judge_etcd_health(a: &HttpAnswer) -> ProbeAnswer {
    let v: Option<serde_json::Value> = serde_json::from_str(&a.body).ok();
    let health = v.as_ref().and_then(|v| v.get("health")?.as_str());
    let reason = v
        .as_ref()
        .and_then(|v| v.get("reason")?.as_str())
        .unwrap_or("");
    match (a.status, health) {
        (200, Some("true")) => ProbeAnswer::Ok("HTTP 200 health=true".into()),
        (_, Some(h)) => ProbeAnswer::Failed(format!(
            "HTTP {}: health={h}{}",
            a.status,
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            }
        )),
        _ => ProbeAnswer::Failed(format!("HTTP {}: {}", a.status, short(&a.body))),
    }
}

/// A `GET` probe on loopback HTTP.
pub(crate) struct HttpGetProbe {
    name: &'static str,
    url: String,
    parsed: HttpUrl,
    judge: fn(&HttpAnswer) -> ProbeAnswer,
}

impl HttpGetProbe {
    pub fn new(
        name: &'static str,
        url: &str,
        judge: fn(&HttpAnswer) -> ProbeAnswer,
    ) -> Result<Self, String> {
        Ok(HttpGetProbe {
            name,
            url: url.to_string(),
            parsed: HttpUrl::parse(url)?,
            judge,
        })
    }

    pub(crate) fn kubelet(url: &str) -> Result<Self, String> {
        Self::new("kubelet", url, judge_healthz)
    }

    pub(crate) fn etcd(url: &str) -> Result<Self, String> {
        Self::new("etcd", url, judge_etcd_health)
    }

    fn get(&self, deadline: Duration) -> Result<Vec<u8>, ProbeAnswer> {
        let end = Instant::now() + deadline;
        let left = || {
            end.checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
        };
        let timed_out =
            || ProbeAnswer::Failed(format!("no answer within {} ms", deadline.as_millis()));
        let addr: SocketAddr = (self.parsed.host.as_str(), self.parsed.port)
            .to_socket_addrs()
            .map_err(|e| ProbeAnswer::Failed(format!("cannot resolve {}: {e}", self.parsed.host)))?
            .next()
            .ok_or_else(|| ProbeAnswer::Failed(format!("no address for {}", self.parsed.host)))?;
        let mut s = TcpStream::connect_timeout(&addr, left().ok_or_else(timed_out)?).map_err(
            |e| match e.kind() {
                ErrorKind::ConnectionRefused => {
                    ProbeAnswer::Refused(format!("connection refused on {addr}"))
                }
                ErrorKind::TimedOut | ErrorKind::WouldBlock => timed_out(),
                _ => ProbeAnswer::Failed(format!("cannot connect to {addr}: {e}")),
            },
        )?;
        let io_err = |e: std::io::Error| match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => timed_out(),
            _ => ProbeAnswer::Failed(format!("{addr}: {e}")),
        };
        s.set_write_timeout(Some(left().ok_or_else(timed_out)?))
            .map_err(io_err)?;
        let host = if self.parsed.host.contains(':') {
            format!("[{}]", self.parsed.host)
        } else {
            self.parsed.host.clone()
        };
        // One write: `write!` on the socket would send each piece of the format apart.
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: nodemedic\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.parsed.path, self.parsed.port
        );
        s.write_all(request.as_bytes()).map_err(io_err)?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            s.set_read_timeout(Some(left().ok_or_else(timed_out)?))
                .map_err(io_err)?;
            match s.read(&mut buf) {
                Ok(0) => return Ok(raw),
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.len() > MAX_RESPONSE {
                        return Ok(raw);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
    }
}

impl LivenessProbe for HttpGetProbe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn target(&self) -> String {
        self.url.clone()
    }

    fn check(&self, deadline: Duration) -> ProbeAnswer {
        match self.get(deadline) {
            Ok(raw) => match parse_response(&raw) {
                Ok(a) => (self.judge)(&a),
                Err(e) => ProbeAnswer::Failed(e),
            },
            Err(a) => a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_parse_with_ports_paths_and_ipv6_hosts() {
        assert_eq!(
            HttpUrl::parse("http://127.0.0.1:10248/healthz").unwrap(),
            HttpUrl {
                host: "127.0.0.1".into(),
                port: 10248,
                path: "/healthz".into()
            }
        );
        let v6 = HttpUrl::parse("http://[::1]:2381/health").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 2381));
        assert_eq!(HttpUrl::parse("http://localhost").unwrap().path, "/");
        assert!(HttpUrl::parse("https://x/").is_err());
        assert!(
            HttpUrl::parse("http://h:port/")
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn responses_parse_plain_and_chunked() {
        let a = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!(
            a,
            HttpAnswer {
                status: 200,
                body: "ok".into()
            }
        );
        let a = parse_response(
            b"HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[-]s\r\n3\r\nync\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.body, "[-]sync");
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn healthz_and_etcd_answers_are_judged_with_their_reasons() {
        let ok = HttpAnswer {
            status: 200,
            body: "ok".into(),
        };
        assert!(matches!(judge_healthz(&ok), ProbeAnswer::Ok(_)));
        let sick = HttpAnswer {
            status: 500,
            body:
                "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n"
                    .into(),
        };
        assert_eq!(
            judge_healthz(&sick),
            ProbeAnswer::Failed("HTTP 500: [-]syncloop failed: reason withheld".into())
        );
        let e = HttpAnswer {
            status: 200,
            body: r#"{"health":"true","reason":""}"#.into(),
        };
        assert!(matches!(judge_etcd_health(&e), ProbeAnswer::Ok(_)));
        let e = HttpAnswer {
            status: 503,
            body: r#"{"health":"false","reason":"RAFT NO LEADER"}"#.into(),
        };
        assert_eq!(
            judge_etcd_health(&e),
            ProbeAnswer::Failed("HTTP 503: health=false (RAFT NO LEADER)".into())
        );
    }

    #[test]
    fn a_real_socket_answers_refuses_and_times_out() {
        // Answers: a one-shot server.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "request ended early");
                req.extend_from_slice(&buf[..n]);
            }
            assert!(String::from_utf8_lossy(&req).starts_with("GET /healthz HTTP/1.1"));
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        });
        let p = HttpGetProbe::kubelet(&format!("http://127.0.0.1:{port}/healthz")).unwrap();
        assert_eq!(
            p.check(Duration::from_secs(5)),
            ProbeAnswer::Ok("HTTP 200 ok".into())
        );
        t.join().unwrap();
        // Refused: nothing listens any more.
        assert!(matches!(
            p.check(Duration::from_secs(5)),
            ProbeAnswer::Refused(_)
        ));
        // Accepted by the kernel but never answered: a stopped server.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let p = HttpGetProbe::kubelet(&format!("http://127.0.0.1:{port}/healthz")).unwrap();
        let t0 = Instant::now();
        let a = p.check(Duration::from_millis(200));
        assert_eq!(a, ProbeAnswer::Failed("no answer within 200 ms".into()));
        assert!(t0.elapsed() < Duration::from_secs(5));
        drop(l);
    }
}
