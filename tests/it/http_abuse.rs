//! The HTTP endpoint under abuse, through the real binary (issue 18, point 3): clients
//! that send requests and never read, one address opening more than its share, and what
//! `/status` tells an address other than loopback. The figures (share of probes served
//! under each attack) are measured by `scripts/bench.sh`, not asserted here.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

use super::support::{Daemon, http_get, poll, require};

/// Connects to `to` from the loopback address `from` (any of 127.0.0.0/8 is this host), so
/// one test can play many peers.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    // SAFETY: plain socket calls on an fd this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let src = sin(from, 0);
        assert_eq!(
            libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len),
            0,
            "bind {from}: {}",
            std::io::Error::last_os_error()
        );
        let SocketAddr::V4(to) = to else {
            panic!("IPv4 only")
        };
        let dst = sin(*to.ip(), to.port());
        assert_eq!(
            libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len),
            0,
            "connect {to}: {}",
            std::io::Error::last_os_error()
        );
        TcpStream::from_raw_fd(fd)
    }
}

fn metric(m: &str, series: &str) -> f64 {
    m.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(-1.0)
}

fn addr(d: &Daemon) -> SocketAddr {
    d.addr.parse().unwrap()
}

/// The daemon with nothing but the endpoint to do.
const QUIET: &str = "[kernel]\nenabled = false\n[mounts]\nenabled = false\n[memory]\nenabled = false\n[runtime]\nenabled = false\n[kubernetes]\nenabled = false\n";

#[test]
fn http_clients_that_never_read_cannot_keep_metrics_from_a_scraper() {
    let d = Daemon::start(QUIET, &[]);
    // 32 peers, each with 2000 pipelined requests (megabytes of responses, beyond any socket
    // buffer) it never reads:
    // before issue 18 they held every slot and /metrics reached 0% of probes.
    let mut attackers = Vec::new();
    for i in 2..34u8 {
        let mut s = connect_from(Ipv4Addr::new(127, 0, 0, i), addr(&d));
        s.write_all(
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                .repeat(2000)
                .as_bytes(),
        )
        .unwrap();
        attackers.push(s);
    }
    let served = (0..20)
        .filter(|_| http_get(&d.addr, "/metrics").status == 200)
        .count();
    assert_eq!(
        served, 20,
        "every probe must be served while they sit there"
    );
    // Their sockets stay open on this side; the daemon closed them all (after the last
    // response a connection may carry, or at the write deadline), so no slot is held.
    d.wait_metrics(Duration::from_secs(30), |m| {
        (0.0..=1.0).contains(&metric(m, "nodemedic_http_connections "))
    })
    .unwrap_or_else(|| panic!("never-readers still hold slots:\n{}", d.metrics()));
    drop(attackers);
}

#[test]
fn http_a_peer_over_its_limit_is_refused_while_another_peer_is_served() {
    let d = Daemon::start(QUIET, &[]);
    let peer = Ipv4Addr::new(127, 0, 0, 2);
    let _held: Vec<TcpStream> = (0..4).map(|_| connect_from(peer, addr(&d))).collect();
    let mut fifth = connect_from(peer, addr(&d));
    fifth
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(fifth.read(&mut buf), Ok(0) | Err(_)),
        "the fifth connection from one address is closed"
    );
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr(&d));
    other
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut body = String::new();
    other.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert_eq!(
        metric(
            &d.metrics(),
            "nodemedic_http_connections_dropped_total{reason=\"peer_limit\"}"
        ),
        1.0
    );
}

/// This host's address on its default route (nothing is sent: a UDP connect only picks
/// the source address).
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn http_status_tells_a_remote_address_only_a_summary_and_loopback_everything() {
    let Some(ip) = non_loopback_address() else {
        require(false, "a non-loopback IPv4 address");
        return;
    };
    let d = Daemon::start(&format!("listen = \"0.0.0.0:0\"\n{QUIET}"), &[]);
    let port = addr(&d).port();
    let local: serde_json::Value =
        serde_json::from_str(&http_get(&format!("127.0.0.1:{port}"), "/status").body).unwrap();
    assert!(local.get("persisted").is_some(), "{local}");
    assert!(local["info"]["config"].is_string(), "{local}");
    let remote = poll(Duration::from_secs(5), || {
        let r = http_get(&format!("{ip}:{port}"), "/status");
        (r.status == 200).then_some(r.body)
    })
    .expect("served on the non-loopback address");
    let remote: serde_json::Value = serde_json::from_str(&remote).unwrap();
    for hidden in ["persisted", "last_actions", "detectors"] {
        assert!(
            remote.get(hidden).is_none(),
            "{hidden} shown to {ip}: {remote}"
        );
    }
    assert!(remote["info"].get("config").is_none(), "{remote}");
    assert!(remote["detail"].as_str().unwrap().contains("loopback"));
    assert_eq!(remote["info"]["version"], local["info"]["version"]);
}
