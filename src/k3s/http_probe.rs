//! Plain-HTTP liveness probes: the kubelet's `/healthz` and embedded etcd's `/health`, both
//! on loopback without TLS, with [`crate::edge::http_get`]; the answer is judged by a pure
//! function per endpoint.

use std::time::Duration;

use super::probe::{LivenessProbe, ProbeAnswer};
use crate::edge::http_get::{self, GetError, HttpAnswer, HttpUrl, parse_response};

/// Health answers are a few bytes ("ok"); a full verbose readyz is under 4 KiB.
const MAX_RESPONSE: usize = 64 << 10;
/// Kept of a failing body for the message.
const BODY_IN_MESSAGE: usize = 300;

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
        http_get::get(&self.parsed, deadline, MAX_RESPONSE).map_err(|e| match e {
            GetError::Refused(addr) => {
                ProbeAnswer::Refused(format!("connection refused on {addr}"))
            }
            e => ProbeAnswer::Failed(e.to_string()),
        })
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
    use std::time::Instant;

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
        let (port, t) =
            crate::edge::http_get::serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let p = HttpGetProbe::kubelet(&format!("http://127.0.0.1:{port}/healthz")).unwrap();
        assert_eq!(
            p.check(Duration::from_secs(5)),
            ProbeAnswer::Ok("HTTP 200 ok".into())
        );
        assert!(t.join().unwrap().starts_with("GET /healthz HTTP/1.1"));
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
