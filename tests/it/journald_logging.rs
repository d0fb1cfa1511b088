//! Native journald logging with structured fields. journald is not running on these
//! machines, so the test binds journald's fixed socket path itself (as journald would) and
//! decodes the native protocol datagrams the daemon sends. The daemon decides to log to the
//! journal exactly as under systemd: `$JOURNAL_STREAM` names its stderr's device:inode.
//! A condition change is made real with a kernel stall record in a fixture kmsg FIFO.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{BIN, is_root, require, stalled_kmsg_root};

const SOCKET: &str = "/run/systemd/journal/socket";

/// Decodes one native-protocol datagram: `KEY=value\n`, or `KEY\n<u64 LE len><bytes>\n`.
fn decode(mut b: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into(),
                String::from_utf8_lossy(&line[eq + 1..]).into(),
            );
            b = &b[(nl + 1).min(b.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &b[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            out.insert(key, String::from_utf8_lossy(&rest[8..8 + len]).into());
            b = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    out
}

/// Removes the socket (and the directories it created) however the test ends.
struct Bound {
    made_dirs: Vec<&'static str>,
}
impl Drop for Bound {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(SOCKET);
        for d in self.made_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn serial_under_journald_logs_go_to_the_journal_with_structured_fields() {
    if !require(is_root(), "root (to bind journald's socket path)") {
        return;
    }
    if Path::new(SOCKET).exists() {
        // A real journald owns the path: do not touch it. Only on a developer's systemd host.
        if !require(
            false,
            "a free /run/systemd/journal/socket (journald runs here)",
        ) {
            return;
        }
    }
    let mut made_dirs = Vec::new();
    for d in ["/run/systemd", "/run/systemd/journal"] {
        if !Path::new(d).exists() {
            std::fs::create_dir(d).unwrap();
            made_dirs.push(d);
        }
    }
    let _bound = Bound { made_dirs };
    let sock = UnixDatagram::bind(SOCKET).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    // Fixture host root: a kmsg FIFO holding one kernel stall record.
    let (root, _kmsg_writer) = stalled_kmsg_root();
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nhost_root = \"{}\"\nstate_dir = \"{}\"\n[memory]\nenabled = false\n[mounts]\nenabled = false\n",
            root.path().display(),
            root.path().join("state").display()
        ),
    )
    .unwrap();

    // stderr is a file; JOURNAL_STREAM names it, as systemd does for StandardError=journal.
    let err_path = root.path().join("stderr");
    let err = std::fs::File::create(&err_path).unwrap();
    let meta = err.metadata().unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();

    // The condition may be raised before or after the start-up line (the kernel detector
    // reads the ring while the others start): collect until both are in.
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 64 * 1024];
    let mut raised = None;
    let listening = |seen: &[BTreeMap<String, String>]| {
        seen.iter().any(|e| {
            e.get("MESSAGE")
                .is_some_and(|m| m.contains("listening on http://"))
        })
    };
    while Instant::now() < end && (raised.is_none() || !listening(&seen)) {
        if let Ok(n) = sock.recv(&mut buf) {
            let f = decode(&buf[..n]);
            if raised.is_none() && f.get("CONDITION").map(String::as_str) == Some("KernelRCUStall")
            {
                raised = Some(f);
            } else {
                seen.push(f);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let f = raised.unwrap_or_else(|| panic!("no structured condition entry; got {seen:#?}"));
    assert!(
        f["MESSAGE"].contains("condition KernelRCUStall raised"),
        "{f:?}"
    );
    assert_eq!(f["PRIORITY"], "4", "raised conditions are warnings");
    assert_eq!(f["DETECTOR"], "kernel");
    assert_eq!(f["REASON"], "RCUStall");
    assert_eq!(f["SYSLOG_IDENTIFIER"], "nodemedic");
    assert!(
        seen.iter().any(|e| e
            .get("MESSAGE")
            .is_some_and(|m| m.contains("listening on http://"))),
        "{seen:#?}"
    );
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        stderr.is_empty(),
        "under journald nothing goes to stderr: {stderr}"
    );
}
