//! k3s's own log lines, the one parser of them: the k3s detector (the unit's journal) and
//! the classifier (`nodemedic classify` on saved logs) both read them here.
//!
//! A k3s process logs in three syntaxes, one per embedded component:
//!
//! ```text
//! time="2025-11-21T17:35:41Z" level=fatal msg="starting kubernetes: preparing server: ..."   k3s (logrus)
//! E1121 17:35:41.123456    812 kubelet.go:2412] "Skipping pod synchronization" err="PLEG is not healthy: ..."  kubelet, apiserver (klog)
//! {"level":"warn","ts":"...","caller":"etcdserver/util.go:170","msg":"apply request took too long",...}      etcd (zap, JSON)
//! ```
//!
//! Signals taken, from the components' sources:
//! - kubelet `PLEG is not healthy: pleg was last seen active 3m0s ago; threshold is 3m0s`
//!   (pkg/kubelet/pleg/generic.go `Healthy()`): the pod lifecycle relist has not run for
//!   3 minutes, the kubelet stops syncing pods and the node goes NotReady. The sync loop
//!   repeats it at most every 5 s while it lasts (kubelet.go `syncLoop` back-off).
//! - etcd slow disk (server/etcdserver/util.go, server/storage/wal/wal.go,
//!   server/etcdserver/raft.go): `apply request took too long`, `slow fdatasync`,
//!   `leader failed to send out heartbeat on time`; and their pre-3.4 capnslog wording
//!   (`apply entries took too long`, `sync duration of ..., expected less than ...`,
//!   `failed to send out heartbeat on time`).
//! - fatal lines: logrus `level=fatal|panic`, klog severity `F`, zap `"level":"fatal"` or
//!   `"panic"`, and the Go runtime's `panic:` / `fatal error:`: what a crash-looping k3s
//!   printed last before exiting.

/// What a line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum K3sSignal {
    /// The kubelet's pod lifecycle event generator stalled.
    PlegUnhealthy,
    /// etcd waited on the disk (or the CPU) longer than it expects.
    EtcdSlow(EtcdSlowKind),
}

/// Which etcd warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EtcdSlowKind {
    /// `apply request took too long` (a request took over 100 ms to apply).
    Apply,
    /// `slow fdatasync` (a WAL sync took over 1 s).
    Fdatasync,
    /// `leader failed to send out heartbeat on time` (raft ticks late, often the disk).
    Heartbeat,
}

impl EtcdSlowKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EtcdSlowKind::Apply => "apply",
            EtcdSlowKind::Fdatasync => "fdatasync",
            EtcdSlowKind::Heartbeat => "heartbeat",
        }
    }
}

/// The shapes k3s's components print in; anything else (a kernel line, most of what
/// `nodemedic classify` reads) is turned away after a few byte comparisons.
fn looks_like_k3s_log(line: &str) -> bool {
    let b = line.as_bytes();
    // zap JSON
    if b.first() == Some(&b'{') {
        return true;
    }
    // logrus
    if line.starts_with("time=\"") {
        return true;
    }
    // klog: severity letter, MMDD, space.
    if b.len() > 5
        && matches!(b[0], b'I' | b'W' | b'E' | b'F')
        && b[1..5].iter().all(u8::is_ascii_digit)
        && b[5] == b' '
    {
        return true;
    }
    // capnslog (etcd before 3.4): "2019-01-02 03:04:05.123456 W | etcdserver: ...", or
    // "W | etcdserver: ..." once a saved log's reader took the stamp off, or
    // "etcdserver: ..." from its journald formatter (level in PRIORITY, no stamp).
    (b.len() > 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-')
        || (b.len() > 4 && b[0].is_ascii_uppercase() && b[1..4] == *b" | ")
        || CAPNSLOG_PACKAGES.iter().any(|p| line.starts_with(p))
}

/// The etcd packages whose capnslog lines carry the signals (`etcdserver`, `wal`).
const CAPNSLOG_PACKAGES: &[&str] = &["etcdserver: ", "wal: "];

/// The signal in one k3s log line (message text, prefixes stripped), if any.
pub(crate) fn signal(line: &str) -> Option<K3sSignal> {
    if !looks_like_k3s_log(line) {
        return None;
    }
    if line.contains("PLEG is not healthy") {
        return Some(K3sSignal::PlegUnhealthy);
    }
    if line.contains("slow fdatasync") || line.contains("sync duration of") {
        return Some(K3sSignal::EtcdSlow(EtcdSlowKind::Fdatasync));
    }
    if line.contains("failed to send out heartbeat on time") {
        return Some(K3sSignal::EtcdSlow(EtcdSlowKind::Heartbeat));
    }
    // capnslog's `[read-only range ]request %q with result %q took too long (%v) to
    // execute` is what zap calls `apply request took too long`.
    if line.contains("apply request took too long")
        || line.contains("apply entries took too long")
        || (line.contains(" took too long (") && line.ends_with(") to execute"))
    {
        return Some(K3sSignal::EtcdSlow(EtcdSlowKind::Apply));
    }
    None
}

/// True for a line a process prints as it dies: see the module docs.
pub(crate) fn is_fatal(line: &str) -> bool {
    let b = line.as_bytes();
    if line.starts_with("panic: ") || line.starts_with("fatal error: ") {
        return true;
    }
    if b.first() == Some(&b'{') {
        return line.contains("\"level\":\"fatal\"") || line.contains("\"level\":\"panic\"");
    }
    if line.starts_with("time=\"") {
        return line.contains(" level=fatal ") || line.contains(" level=panic ");
    }
    b.len() > 5 && b[0] == b'F' && b[1..5].iter().all(u8::is_ascii_digit) && b[5] == b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pleg_in_the_kubelets_klog_lines_old_and_new() {
        // Structured klog (kubelet 1.20+), and the pre-structured wording.
        for l in [
            r#"E1121 17:35:41.123456     812 kubelet.go:2412] "Skipping pod synchronization" err="PLEG is not healthy: pleg was last seen active 3m5.2s ago; threshold is 3m0s""#,
            "I0314 10:00:00.000000    1234 kubelet.go:1845] skipping pod synchronization - PLEG is not healthy: pleg was last seen active 3m0.1s ago; threshold is 3m0s",
            r#"I1121 17:35:41.2    812 kubelet_node_status.go:704] "Recording event message for node" node="pi5" event="NodeNotReady" message="PLEG is not healthy: pleg was last seen active 3m1s ago; threshold is 3m0s""#,
        ] {
            assert_eq!(signal(l), Some(K3sSignal::PlegUnhealthy), "{l}");
        }
    }

    #[test]
    fn etcd_slow_disk_warnings_in_zap_and_capnslog() {
        let cases = [
            (
                r#"{"level":"warn","ts":"2025-11-21T17:35:41.123Z","caller":"etcdserver/util.go:170","msg":"apply request took too long","took":"1.23s","expected-duration":"100ms","prefix":"read-only range ","request":"key:\"/registry/health\" ","response":""}"#,
                EtcdSlowKind::Apply,
            ),
            (
                r#"{"level":"warn","ts":"2025-11-21T17:35:41.123Z","caller":"wal/wal.go:805","msg":"slow fdatasync","took":"1.51s","expected-duration":"1s"}"#,
                EtcdSlowKind::Fdatasync,
            ),
            (
                r#"{"level":"warn","ts":"2025-11-21T17:35:41.123Z","caller":"etcdserver/raft.go:369","msg":"leader failed to send out heartbeat on time; took too long, leader is overloaded likely from slow disk","to":"a1b2","heartbeat-interval":"500ms","expected-duration":"1s","exceeded-duration":"1.2s"}"#,
                EtcdSlowKind::Heartbeat,
            ),
            (
                "2019-01-02 03:04:05.123456 W | etcdserver: apply entries took too long [1.2s for 1 entries]",
                EtcdSlowKind::Apply,
            ),
            (
                "2019-01-02 03:04:05.123456 W | wal: sync duration of 1.5s, expected less than 1s",
                EtcdSlowKind::Fdatasync,
            ),
            (
                "2019-01-02 03:04:05.123456 W | etcdserver: failed to send out heartbeat on time (exceeded the 100ms timeout for 1.2s, to 8e9e05c52164694d)",
                EtcdSlowKind::Heartbeat,
            ),
            (
                r#"2019-01-02 03:04:05.123456 W | etcdserver: read-only range request "key:\"/registry/health\" " with result "range_response_count:0 size:5" took too long (1.2s) to execute"#,
                EtcdSlowKind::Apply,
            ),
            // The stamp taken off by a saved log's reader, and the journald formatter's
            // package-only prefix.
            (
                "W | etcdserver: apply entries took too long [1.2s for 1 entries]",
                EtcdSlowKind::Apply,
            ),
            (
                "etcdserver: failed to send out heartbeat on time (exceeded the 100ms timeout for 50ms, to abc)",
                EtcdSlowKind::Heartbeat,
            ),
            (
                "wal: sync duration of 1.5s, expected less than 1s",
                EtcdSlowKind::Fdatasync,
            ),
        ];
        for (l, k) in cases {
            assert_eq!(signal(l), Some(K3sSignal::EtcdSlow(k)), "{l}");
        }
    }

    #[test]
    fn other_lines_and_other_shapes_are_no_signal() {
        for l in [
            r#"time="2025-11-21T17:35:41Z" level=info msg="Running kubelet --node-name=pi5""#,
            // The phrase in a kernel line or a free-text line: not a k3s component's log.
            "PLEG is not healthy",
            "nfs: server nas not responding, slow fdatasync",
            "W | etcdserver: request took too long (1.2s) to execute, says my app",
            "X: etcdserver: apply entries took too long",
            r#"{"level":"info","msg":"compacted revision"}"#,
            "",
        ] {
            assert_eq!(signal(l), None, "{l}");
        }
    }

    #[test]
    fn fatal_lines_in_every_syntax_and_only_those() {
        for l in [
            r#"time="2025-11-21T17:35:41Z" level=fatal msg="starting kubernetes: preparing server: failed to normalize token""#,
            r#"time="2025-11-21T17:35:41Z" level=panic msg="oops""#,
            "F1121 17:35:41.123456     812 server.go:233] failed to run Kubelet: validate service connection: CRI v1 runtime API is not implemented",
            r#"{"level":"fatal","ts":"2025-11-21T17:35:41Z","caller":"etcdmain/etcd.go:204","msg":"discovery failed","error":"database file (/var/lib/rancher/k3s/server/db/etcd/member/snap/db) of the backend is missing"}"#,
            "panic: runtime error: invalid memory address or nil pointer dereference",
            "fatal error: concurrent map writes",
        ] {
            assert!(is_fatal(l), "{l}");
        }
        for l in [
            r#"time="2025-11-21T17:35:41Z" level=error msg="fatal-looking text""#,
            "E1121 17:35:41.123456     812 server.go:233] fatal: not really",
            r#"{"level":"warn","msg":"level fatal"}"#,
            "Failed to start k3s",
        ] {
            assert!(!is_fatal(l), "{l}");
        }
    }
}
