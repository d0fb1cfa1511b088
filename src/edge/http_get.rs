//! A blocking HTTP/1.1 `GET` on the loopback, without TLS, under one deadline: the
//! kubelet's `/healthz`, etcd's `/health` and its `/metrics`. A std socket with connect,
//! write and read timeouts taken from what is left of the deadline, `Connection: close`,
//! read to the end. No async runtime and no thread: the callers (a probe on its own thread,
//! the etcd scrape worker) already run where waiting is harmless.
//!
//! A SIGSTOPped (or wedged) server still completes the TCP handshake (the kernel accepts
//! into the listen backlog), so a stopped kubelet shows as a read timeout, not a refusal.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

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

/// Why a `GET` gave no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GetError {
    /// Nothing listens at this address.
    #[error("cannot connect to {0}: connection refused")]
    Refused(String),
    #[error("no answer within {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("{0}")]
    Failed(String),
}

/// `GET url.path` within `deadline`; the raw response once the server closed the
/// connection, or its first `max` bytes (and a little more) when it sends more.
pub(crate) fn get(url: &HttpUrl, deadline: Duration, max: usize) -> Result<Vec<u8>, GetError> {
    let end = Instant::now() + deadline;
    let timed_out = || GetError::TimedOut(deadline);
    let left = || {
        end.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(timed_out)
    };
    let addr: SocketAddr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| GetError::Failed(format!("cannot resolve {}: {e}", url.host)))?
        .next()
        .ok_or_else(|| GetError::Failed(format!("no address for {}", url.host)))?;
    let mut s = TcpStream::connect_timeout(&addr, left()?).map_err(|e| match e.kind() {
        ErrorKind::ConnectionRefused => GetError::Refused(addr.to_string()),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => timed_out(),
        _ => GetError::Failed(format!("cannot connect to {addr}: {e}")),
    })?;
    let io_err = |e: std::io::Error| match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => timed_out(),
        _ => GetError::Failed(format!("{addr}: {e}")),
    };
    s.set_write_timeout(Some(left()?)).map_err(io_err)?;
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    // One write: `write!` on the socket would send each piece of the format apart.
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: nodemedic\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path, url.port
    );
    s.write_all(request.as_bytes()).map_err(io_err)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        s.set_read_timeout(Some(left()?)).map_err(io_err)?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > max {
                    return Ok(raw);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// A one-shot HTTP server on the loopback for tests: it reads one request, sends
/// `answer` and closes. Returns its port and a thread that yields the request it read.
#[cfg(test)]
pub(crate) fn serve_once(answer: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
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
        c.write_all(answer).unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (port, t)
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
    fn a_real_socket_answers_refuses_and_times_out() {
        let (port, t) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/metrics")).unwrap();
        let raw = get(&url, Duration::from_secs(5), 1 << 20).unwrap();
        assert_eq!(parse_response(&raw).unwrap().body, "ok");
        let req = t.join().unwrap();
        assert!(req.starts_with("GET /metrics HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
        assert_eq!(
            get(&url, Duration::from_secs(5), 1 << 20),
            Err(GetError::Refused(format!("127.0.0.1:{port}")))
        );
        // Accepted by the kernel but never answered: a stopped server.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        let t0 = Instant::now();
        let d = Duration::from_millis(200);
        assert_eq!(get(&url, d, 1 << 20), Err(GetError::TimedOut(d)));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
