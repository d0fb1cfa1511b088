//! `/proc/self/mountstats` parsing: NFS RPC counters per mount, and their growth.
//!
//! Every mount gets a header line (`fs/proc_namespace.c: show_vfsstat`):
//!
//! ```text
//! device nas.lan:/volume1/backup mounted on /mnt/backup with fstype nfs4 statvers=1.1
//! ```
//!
//! (`no device mounted on ...` when the mount has no source). Only NFS appends `statvers=`
//! and a block of tab-indented lines, of which this module reads:
//!
//! - `opts:` and `age:` (seconds since mount; a drop means the mount was replaced),
//! - one `xprt:` line per transport (several with `nconnect=`), whose fields depend on the
//!   transport (`net/sunrpc/xprtsock.c`, `xprtrdma/transport.c`, statvers 1.1):
//!   - `tcp`: srcport bind_count connect_count connect_time idle_time sends recvs bad_xids
//!     req_u bklog_u max_slots sending_u pending_u (statvers 1.0 stops after bklog_u)
//!   - `udp`: srcport bind_count sends recvs bad_xids req_u bklog_u max_slots sending_u
//!     pending_u (1.0 stops after bklog_u)
//!   - `local`: as tcp without srcport
//!   - `rdma`: the ten tcp 1.0 fields, then RDMA-specific counters (ignored here)
//! - `per-op statistics`, then one line per RPC procedure:
//!   `GETATTR: ops trans timeouts bytes_sent bytes_recv queue_ms rtt_ms execute_ms [errors]`
//!   (`errors` since Linux 5.3).
//!
//! What the counters can and cannot show: per-op counters are updated when an RPC *finishes*,
//! so while a hard mount is hung they stand still and only move (retransmissions, major
//! timeouts) once the server answers again or a soft mount gives up. The transport's `sends`
//! count every transmission as it happens, so `sends` growing while `recvs` stays flat is the
//! live signal of a server that stopped answering. [`growth`] reports both.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use serde::Serialize;

use crate::formats::mountinfo::unescape;

/// Per-op lines carry 8 numbers, 9 since the `errors` column (Linux 5.3).
const OP_FIELDS_MIN: usize = 8;

/// One mount's header and, for NFS, its RPC statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MountStats {
    /// `None` for `no device mounted on ...`.
    pub(crate) device: Option<String>,
    pub(crate) mount_point: PathBuf,
    pub(crate) fstype: String,
    /// `1.1` on every kernel since 2.6.x; only NFS mounts have it.
    pub(crate) statvers: Option<String>,
    /// Present when the mount printed a `statvers=` block.
    pub(crate) rpc: Option<MountRpcStats>,
}

/// The RPC part of an NFS mount's block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct MountRpcStats {
    pub(crate) opts: Vec<String>,
    pub(crate) age_secs: Option<u64>,
    pub(crate) xprts: Vec<XprtStats>,
    pub(crate) ops: Vec<OpStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Transport {
    Tcp,
    Udp,
    Local,
    Rdma,
}

/// One `xprt:` line. Fields a transport or statvers does not print are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct XprtStats {
    pub(crate) transport: Transport,
    pub(crate) src_port: Option<u32>,
    pub(crate) bind_count: u64,
    pub(crate) connect_count: Option<u64>,
    /// Jiffies on old kernels, seconds on new ones: compare only with itself.
    pub(crate) connect_time: Option<u64>,
    pub(crate) idle_secs: Option<i64>,
    pub(crate) sends: u64,
    pub(crate) recvs: u64,
    pub(crate) bad_xids: u64,
    /// Sum over sends of requests in flight.
    pub(crate) req_u: u64,
    /// Sum over sends of the backlog queue length: grows only while requests wait for a slot.
    pub(crate) backlog_u: u64,
    pub(crate) max_slots: Option<u64>,
    pub(crate) sending_u: Option<u64>,
    pub(crate) pending_u: Option<u64>,
}

/// One per-op statistics line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct OpStats {
    pub(crate) name: String,
    pub(crate) ops: u64,
    pub(crate) transmissions: u64,
    /// Major timeouts: the RPC hit its full retransmit timeout.
    pub(crate) major_timeouts: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_recv: u64,
    pub(crate) queue_ms: u64,
    pub(crate) rtt_ms: u64,
    pub(crate) execute_ms: u64,
    /// Absent before Linux 5.3.
    pub(crate) errors: Option<u64>,
}

/// Sums over every op and transport of one mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct RpcTotals {
    pub(crate) ops: u64,
    pub(crate) transmissions: u64,
    pub(crate) major_timeouts: u64,
    pub(crate) errors: u64,
    pub(crate) execute_ms: u64,
    pub(crate) sends: u64,
    pub(crate) recvs: u64,
    pub(crate) bad_xids: u64,
    pub(crate) backlog_u: u64,
    pub(crate) connects: u64,
}

impl RpcTotals {
    /// Every transmission beyond the first of each op is a retransmission.
    pub(crate) fn retransmissions(&self) -> u64 {
        self.transmissions.saturating_sub(self.ops)
    }
}

impl MountRpcStats {
    pub fn totals(&self) -> RpcTotals {
        let mut t = RpcTotals::default();
        for op in &self.ops {
            t.ops = t.ops.saturating_add(op.ops);
            t.transmissions = t.transmissions.saturating_add(op.transmissions);
            t.major_timeouts = t.major_timeouts.saturating_add(op.major_timeouts);
            t.errors = t.errors.saturating_add(op.errors.unwrap_or(0));
            t.execute_ms = t.execute_ms.saturating_add(op.execute_ms);
        }
        for x in &self.xprts {
            t.sends = t.sends.saturating_add(x.sends);
            t.recvs = t.recvs.saturating_add(x.recvs);
            t.bad_xids = t.bad_xids.saturating_add(x.bad_xids);
            t.backlog_u = t.backlog_u.saturating_add(x.backlog_u);
            t.connects = t.connects.saturating_add(x.connect_count.unwrap_or(0));
        }
        t
    }
}

/// What grew between two samples of one mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct RpcGrowth {
    pub(crate) ops: u64,
    pub(crate) retransmissions: u64,
    pub(crate) major_timeouts: u64,
    pub(crate) errors: u64,
    pub(crate) sends: u64,
    pub(crate) recvs: u64,
    /// Transmissions that got no reply in the interval (sends minus receives).
    pub(crate) unanswered_sends: u64,
    pub(crate) backlog_u: u64,
    pub(crate) connects: u64,
    /// A counter went backwards or the mount got younger: it was remounted, so nothing
    /// can be said about this interval and every other field is zero.
    pub(crate) reset: bool,
}

impl RpcGrowth {
    #[cfg(test)]
    /// True when retransmissions, major timeouts or the backlog grew, or transmissions went
    /// unanswered: the server is slow or gone.
    pub(crate) fn is_degrading(&self) -> bool {
        self.retransmissions > 0
            || self.major_timeouts > 0
            || self.backlog_u > 0
            || self.unanswered_sends > 0
    }
}

/// Growth from `prev` to `cur` (two samples of the same mount, `prev` first).
pub(crate) fn growth(prev: &MountRpcStats, cur: &MountRpcStats) -> RpcGrowth {
    let (p, c) = (prev.totals(), cur.totals());
    let younger = matches!((prev.age_secs, cur.age_secs), (Some(a), Some(b)) if b < a);
    let pairs = [
        (p.ops, c.ops),
        (p.transmissions, c.transmissions),
        (p.major_timeouts, c.major_timeouts),
        (p.errors, c.errors),
        (p.sends, c.sends),
        (p.recvs, c.recvs),
        (p.backlog_u, c.backlog_u),
        (p.connects, c.connects),
    ];
    if younger || pairs.iter().any(|(a, b)| b < a) {
        return RpcGrowth {
            reset: true,
            ..RpcGrowth::default()
        };
    }
    let sends = c.sends - p.sends;
    let recvs = c.recvs - p.recvs;
    RpcGrowth {
        ops: c.ops - p.ops,
        retransmissions: c.retransmissions().saturating_sub(p.retransmissions()),
        major_timeouts: c.major_timeouts - p.major_timeouts,
        errors: c.errors - p.errors,
        sends,
        recvs,
        unanswered_sends: sends.saturating_sub(recvs),
        backlog_u: c.backlog_u - p.backlog_u,
        connects: c.connects - p.connects,
        reset: false,
    }
}

/// All mounts of one `/proc/<pid>/mountstats` read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct MountStatsTable {
    pub(crate) mounts: Vec<MountStats>,
    /// Lines that should have been understood and were not (bad header, bad numbers,
    /// statistics outside any mount).
    pub(crate) malformed: usize,
}

impl MountStatsTable {
    /// The last mount at `path` (the topmost when over-mounted).
    pub(crate) fn find(&self, path: &std::path::Path) -> Option<&MountStats> {
        self.mounts.iter().rev().find(|m| m.mount_point == path)
    }
}

/// Parses the full text of `/proc/<pid>/mountstats`. Never panics.
pub(crate) fn parse_mountstats(text: &[u8]) -> MountStatsTable {
    let mut table = MountStatsTable::default();
    let mut in_ops = false;
    // Index of the mount whose block we are in; None after a header we could not read, so
    // its statistics are not pinned on the mount before it.
    let mut current: Option<usize> = None;
    for raw in text.split(|&b| b == b'\n') {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if raw.starts_with(b"device ") || raw.starts_with(b"no device ") {
            in_ops = false;
            current = parse_header(raw).map(|m| {
                table.mounts.push(m);
                table.mounts.len() - 1
            });
            if current.is_none() {
                table.malformed += 1;
            }
            continue;
        }
        let Some(rpc) = current.and_then(|i| table.mounts[i].rpc.as_mut()) else {
            // Indented lines only exist inside a statvers block.
            table.malformed += 1;
            continue;
        };
        let Ok(line) = std::str::from_utf8(raw) else {
            table.malformed += 1;
            continue;
        };
        let line = line.trim();
        let ok = if let Some(rest) = line.strip_prefix("opts:") {
            rpc.opts = rest.trim().split(',').map(str::to_owned).collect();
            true
        } else if let Some(rest) = line.strip_prefix("age:") {
            rpc.age_secs = rest.trim().parse().ok();
            rpc.age_secs.is_some()
        } else if let Some(rest) = line.strip_prefix("xprt:") {
            match parse_xprt(rest) {
                XprtLine::Parsed(x) => {
                    rpc.xprts.push(x);
                    true
                }
                XprtLine::UnknownTransport => true,
                XprtLine::Malformed => false,
            }
        } else if line == "per-op statistics" {
            in_ops = true;
            true
        } else if in_ops {
            match parse_op(line) {
                Some(op) => {
                    rpc.ops.push(op);
                    true
                }
                None => false,
            }
        } else {
            // caps:, sec:, events:, bytes:, nfsv4:, fsc:, RPC iostats version: ...
            true
        };
        if !ok {
            table.malformed += 1;
        }
    }
    table
}

fn parse_header(raw: &[u8]) -> Option<MountStats> {
    let tokens: Vec<&[u8]> = raw
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    let at = tokens
        .windows(2)
        .position(|w| w[0] == b"mounted" && w[1] == b"on")?;
    let device = match &tokens[..at] {
        [first, dev] if *first == b"device" => Some(lossy(&unescape(dev))),
        [no, dev] if *no == b"no" && *dev == b"device" => None,
        _ => return None,
    };
    let rest = &tokens[at + 2..];
    let [path, with, fstype_kw, fstype, extra @ ..] = rest else {
        return None;
    };
    if *with != b"with" || *fstype_kw != b"fstype" || path.first() != Some(&b'/') {
        return None;
    }
    let statvers = extra
        .iter()
        .find_map(|t| t.strip_prefix(b"statvers="))
        .map(lossy);
    Some(MountStats {
        device,
        mount_point: PathBuf::from(OsStr::from_bytes(&unescape(path))),
        fstype: lossy(&unescape(fstype)),
        rpc: statvers.as_ref().map(|_| MountRpcStats::default()),
        statvers,
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

enum XprtLine {
    Parsed(XprtStats),
    UnknownTransport,
    Malformed,
}

fn parse_xprt(rest: &str) -> XprtLine {
    let mut words = rest.split_whitespace();
    let transport = match words.next() {
        Some("tcp") => Transport::Tcp,
        Some("udp") => Transport::Udp,
        Some("local") => Transport::Local,
        Some("rdma") => Transport::Rdma,
        Some(_) => return XprtLine::UnknownTransport,
        None => return XprtLine::Malformed,
    };
    // idle_time is the only signed field (`%ld`); parse everything as i128 and range-check.
    let Ok(n) = words.map(str::parse::<i128>).collect::<Result<Vec<_>, _>>() else {
        return XprtLine::Malformed;
    };
    match xprt_from_numbers(transport, &n) {
        Some(x) => XprtLine::Parsed(x),
        None => XprtLine::Malformed,
    }
}

fn xprt_from_numbers(transport: Transport, n: &[i128]) -> Option<XprtStats> {
    let u = |i: usize| n.get(i).and_then(|v| u64::try_from(*v).ok());
    let port = |i: usize| n.get(i).and_then(|v| u32::try_from(*v).ok());
    let idle = |i: usize| n.get(i).and_then(|v| i64::try_from(*v).ok());
    // (prints srcport, prints connect_count/connect_time/idle_time, fields in statvers 1.0,
    // fields in statvers 1.1; rdma keeps the 1.0 layout and appends its own counters)
    let (has_port, connected, short, long) = match transport {
        Transport::Tcp => (true, true, 10, Some(13)),
        Transport::Udp => (true, false, 7, Some(10)),
        Transport::Local => (false, true, 9, Some(12)),
        Transport::Rdma => (true, true, 10, None),
    };
    let exact = n.len() == short || Some(n.len()) == long;
    let rdma_ok = transport == Transport::Rdma && n.len() >= short;
    if !exact && !rdma_ok {
        return None;
    }
    let mut i = 0;
    let src_port = if has_port {
        i += 1;
        Some(port(0)?)
    } else {
        None
    };
    let bind_count = u(i)?;
    i += 1;
    let (connect_count, connect_time, idle_secs) = if connected {
        i += 3;
        (Some(u(i - 3)?), Some(u(i - 2)?), Some(idle(i - 1)?))
    } else {
        (None, None, None)
    };
    let x = XprtStats {
        transport,
        src_port,
        bind_count,
        connect_count,
        connect_time,
        idle_secs,
        sends: u(i)?,
        recvs: u(i + 1)?,
        bad_xids: u(i + 2)?,
        req_u: u(i + 3)?,
        backlog_u: u(i + 4)?,
        max_slots: None,
        sending_u: None,
        pending_u: None,
    };
    if transport != Transport::Rdma && Some(n.len()) == long {
        return Some(XprtStats {
            max_slots: Some(u(i + 5)?),
            sending_u: Some(u(i + 6)?),
            pending_u: Some(u(i + 7)?),
            ..x
        });
    }
    Some(x)
}

fn parse_op(line: &str) -> Option<OpStats> {
    let (name, numbers) = line.split_once(':')?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let n = numbers
        .split_whitespace()
        .map(str::parse::<u64>)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    if n.len() != OP_FIELDS_MIN && n.len() != OP_FIELDS_MIN + 1 {
        return None;
    }
    Some(OpStats {
        name: name.to_owned(),
        ops: n[0],
        transmissions: n[1],
        major_timeouts: n[2],
        bytes_sent: n[3],
        bytes_recv: n[4],
        queue_ms: n[5],
        rtt_ms: n[6],
        execute_ms: n[7],
        errors: n.get(8).copied(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A hard NFSv4.2 mount over TCP on a 6.x kernel, plus neighbours without statistics.
    const SAMPLE: &str = "\
device proc mounted on /proc with fstype proc
device /dev/mmcblk0p2 mounted on / with fstype ext4
device nas.lan:/volume1/backup mounted on /mnt/backup with fstype nfs4 statvers=1.1
\topts:\trw,vers=4.2,rsize=131072,wsize=131072,namlen=255,acregmin=3,acregmax=60,acdirmin=30,acdirmax=60,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=192.168.1.20,local_lock=none
\tage:\t86417
\timpl_id:\tname='',domain='',date='0,0'
\tcaps:\tcaps=0x3ffbffff,wtmult=512,dtsize=1048576,bsize=0,namlen=255
\tnfsv4:\tbm0=0xfdffbfff,bm1=0x40f9be3e,bm2=0x68800,acl=0x3,sessions,pnfs=not configured,lease_time=90,lease_expired=0
\tsec:\tflavor=1,pseudoflavor=1
\tevents:\t2251 40019 17 512 1160 1280 51330 4 0 12 0 0 0 0 1 0 0 3 0 0 0 0 0 0 0 0 0
\tbytes:\t90224 5120 0 0 83711 4096 22 2
\tRPC iostats version: 1.1  p/v: 100003/4 (nfs)
\txprt:\ttcp 887 0 2 0 11 24051 24049 0 31337 0 65536 25050 1
\tper-op statistics
\t        NULL: 1 1 0 44 24 0 0 0 0
\t        READ: 22 22 0 3696 87448 0 31 32 0
\t       WRITE: 2 3 1 5528 336 0 75 60076 0
\t     GETATTR: 1160 1161 0 201904 225040 3 1099 1133 2
\t SERVER_CAPS: 2 2 0 344 328 0 1 1 0
\tSETCLIENTID_CONFIRM: 0 0 0 0 0 0 0 0 0

device tmpfs mounted on /run with fstype tmpfs
no device mounted on /mnt/odd with fstype autofs
device 10.0.0.5:/export/media mounted on /srv/my\\040media with fstype nfs statvers=1.1
\topts:\tro,vers=3,soft,proto=udp
\tage:\t120
\tRPC iostats version: 1.1  p/v: 100003/3 (nfs)
\txprt:\tudp 719 1 500 498 0 1200 4 65536 0 0
\tper-op statistics
\t        NULL: 0 0 0 0 0 0 0 0
\t     GETATTR: 300 310 3 40000 35000 1 900 950
\t      LOOKUP: 200 200 0 30000 28000 0 400 420
";

    #[test]
    fn headers_of_every_mount_are_read_including_no_device() {
        let t = parse_mountstats(SAMPLE.as_bytes());
        assert_eq!(t.malformed, 0);
        let heads: Vec<_> = t
            .mounts
            .iter()
            .map(|m| {
                (
                    m.device.as_deref(),
                    m.mount_point.to_str().unwrap(),
                    m.fstype.as_str(),
                )
            })
            .collect();
        assert_eq!(
            heads,
            [
                (Some("proc"), "/proc", "proc"),
                (Some("/dev/mmcblk0p2"), "/", "ext4"),
                (Some("nas.lan:/volume1/backup"), "/mnt/backup", "nfs4"),
                (Some("tmpfs"), "/run", "tmpfs"),
                (None, "/mnt/odd", "autofs"),
                (Some("10.0.0.5:/export/media"), "/srv/my media", "nfs"),
            ]
        );
        let with_rpc: Vec<_> = t.mounts.iter().map(|m| m.rpc.is_some()).collect();
        assert_eq!(with_rpc, [false, false, true, false, false, true]);
        assert_eq!(t.mounts[2].statvers.as_deref(), Some("1.1"));
        assert_eq!(t.mounts[0].statvers, None);
    }

    #[test]
    fn tcp_xprt_line_of_statvers_1_1_yields_every_field() {
        let t = parse_mountstats(SAMPLE.as_bytes());
        let rpc = t
            .find("/mnt/backup".as_ref())
            .unwrap()
            .rpc
            .as_ref()
            .unwrap();
        assert_eq!(rpc.age_secs, Some(86417));
        assert_eq!(rpc.opts.len(), 16);
        assert!(rpc.opts.contains(&"hard".to_string()));
        assert_eq!(
            rpc.xprts,
            vec![XprtStats {
                transport: Transport::Tcp,
                src_port: Some(887),
                bind_count: 0,
                connect_count: Some(2),
                connect_time: Some(0),
                idle_secs: Some(11),
                sends: 24051,
                recvs: 24049,
                bad_xids: 0,
                req_u: 31337,
                backlog_u: 0,
                max_slots: Some(65536),
                sending_u: Some(25050),
                pending_u: Some(1),
            }]
        );
    }

    #[test]
    fn per_op_lines_yield_every_field_including_errors_and_long_names() {
        let t = parse_mountstats(SAMPLE.as_bytes());
        let rpc = t.mounts[2].rpc.as_ref().unwrap();
        let names: Vec<_> = rpc.ops.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "NULL",
                "READ",
                "WRITE",
                "GETATTR",
                "SERVER_CAPS",
                "SETCLIENTID_CONFIRM"
            ]
        );
        assert_eq!(
            rpc.ops[3],
            OpStats {
                name: "GETATTR".into(),
                ops: 1160,
                transmissions: 1161,
                major_timeouts: 0,
                bytes_sent: 201904,
                bytes_recv: 225040,
                queue_ms: 3,
                rtt_ms: 1099,
                execute_ms: 1133,
                errors: Some(2),
            }
        );
    }

    #[test]
    fn udp_xprt_and_ops_without_the_errors_column_are_read() {
        let t = parse_mountstats(SAMPLE.as_bytes());
        let rpc = t
            .find("/srv/my media".as_ref())
            .unwrap()
            .rpc
            .as_ref()
            .unwrap();
        assert_eq!(
            rpc.xprts[0],
            XprtStats {
                transport: Transport::Udp,
                src_port: Some(719),
                bind_count: 1,
                connect_count: None,
                connect_time: None,
                idle_secs: None,
                sends: 500,
                recvs: 498,
                bad_xids: 0,
                req_u: 1200,
                backlog_u: 4,
                max_slots: Some(65536),
                sending_u: Some(0),
                pending_u: Some(0),
            }
        );
        assert_eq!(rpc.ops[1].errors, None);
        assert_eq!(rpc.ops[1].major_timeouts, 3);
    }

    #[test]
    fn totals_sum_ops_and_derive_retransmissions() {
        let t = parse_mountstats(SAMPLE.as_bytes());
        let tot = t.mounts[2].rpc.as_ref().unwrap().totals();
        assert_eq!(tot.ops, 1 + 22 + 2 + 1160 + 2);
        assert_eq!(tot.transmissions, 1 + 22 + 3 + 1161 + 2);
        assert_eq!(tot.retransmissions(), 2);
        assert_eq!(tot.major_timeouts, 1);
        assert_eq!(tot.errors, 2);
        assert_eq!(tot.execute_ms, 32 + 60076 + 1133 + 1);
        assert_eq!(
            (tot.sends, tot.recvs, tot.backlog_u, tot.connects),
            (24051, 24049, 0, 2)
        );
        let udp = t.mounts[5].rpc.as_ref().unwrap().totals();
        assert_eq!(udp.retransmissions(), 10);
        assert_eq!(udp.major_timeouts, 3);
        assert_eq!(udp.backlog_u, 4);
    }

    #[test]
    fn nconnect_transports_are_all_kept_and_summed() {
        let text = "device s:/x mounted on /m with fstype nfs statvers=1.1
\txprt:\ttcp 801 0 1 0 3 100 100 0 150 0 128 100 0
\txprt:\ttcp 802 0 1 0 3 200 190 1 300 7 128 200 0
";
        let t = parse_mountstats(text.as_bytes());
        assert_eq!(t.malformed, 0);
        let rpc = t.mounts[0].rpc.as_ref().unwrap();
        assert_eq!(rpc.xprts.len(), 2);
        let tot = rpc.totals();
        assert_eq!(
            (tot.sends, tot.recvs, tot.bad_xids, tot.backlog_u),
            (300, 290, 1, 7)
        );
        assert_eq!(tot.connects, 2);
    }

    #[test]
    fn statvers_1_0_tcp_local_and_rdma_layouts_are_read() {
        let text = "device s:/x mounted on /m with fstype nfs statvers=1.1
\txprt:\ttcp 0 1 2 3 -1 5 6 7 8 9
\txprt:\tlocal 1 2 3 4 5 6 7 8 9 10 11 12
\txprt:\trdma 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26
";
        let t = parse_mountstats(text.as_bytes());
        assert_eq!(t.malformed, 0);
        let x = &t.mounts[0].rpc.as_ref().unwrap().xprts;
        assert_eq!(x[0].idle_secs, Some(-1));
        assert_eq!((x[0].sends, x[0].backlog_u, x[0].max_slots), (5, 9, None));
        assert_eq!(x[1].src_port, None);
        assert_eq!(x[1].bind_count, 1);
        assert_eq!(x[1].connect_count, Some(2));
        assert_eq!((x[1].sends, x[1].backlog_u), (5, 9));
        assert_eq!(
            (x[1].max_slots, x[1].sending_u, x[1].pending_u),
            (Some(10), Some(11), Some(12))
        );
        assert_eq!(x[2].transport, Transport::Rdma);
        assert_eq!((x[2].sends, x[2].recvs, x[2].backlog_u), (5, 6, 9));
        assert_eq!(x[2].max_slots, None);
    }

    #[test]
    fn damaged_lines_are_counted_and_the_rest_still_parses() {
        let text = "\tstray: line before any device
device s:/x mounted on /m with fstype nfs statvers=1.1
\txprt:\ttcp 1 2 3
\txprt:\ttcp a b c d e f g h i j
\txprt:\tquic 1 2 3
\tage:\tlong
\tper-op statistics
\t     GETATTR: 1 2 3
\t     LOOKUP: 5 5 0 1 1 0 0 0 0
\tBROKEN NAME: 1 1 1 1 1 1 1 1
device s:/y mounted at /n with fstype nfs statvers=1.1
\txprt:\ttcp 0 1 2 3 4 5 6 7 8 9
device s:/z mounted on relative with fstype nfs
";
        let t = parse_mountstats(text.as_bytes());
        // stray, tcp short, tcp words, age, GETATTR short, BROKEN NAME, two bad headers and
        // the xprt line of the first of them (it must not land on /m).
        assert_eq!(t.malformed, 9);
        assert_eq!(t.mounts.len(), 1);
        let rpc = t.mounts[0].rpc.as_ref().unwrap();
        assert!(rpc.xprts.is_empty());
        assert_eq!(rpc.ops.len(), 1);
        assert_eq!(rpc.ops[0].name, "LOOKUP");
    }

    fn sample(
        age: u64,
        ops: u64,
        trans: u64,
        timeouts: u64,
        sends: u64,
        recvs: u64,
        bklog: u64,
    ) -> MountRpcStats {
        let text = format!(
            "device s:/x mounted on /m with fstype nfs4 statvers=1.1
\tage:\t{age}
\txprt:\ttcp 900 0 1 0 0 {sends} {recvs} 0 0 {bklog} 65536 0 0
\tper-op statistics
\t     GETATTR: {ops} {trans} {timeouts} 0 0 0 0 0 0
"
        );
        let t = parse_mountstats(text.as_bytes());
        assert_eq!(t.malformed, 0);
        t.mounts[0].rpc.clone().unwrap()
    }

    #[test]
    fn growth_reports_new_retransmissions_timeouts_and_backlog() {
        let prev = sample(100, 1000, 1002, 0, 5000, 5000, 10);
        let cur = sample(130, 1010, 1020, 2, 5040, 5012, 25);
        let g = growth(&prev, &cur);
        assert_eq!(
            g,
            RpcGrowth {
                ops: 10,
                retransmissions: 8,
                major_timeouts: 2,
                errors: 0,
                sends: 40,
                recvs: 12,
                unanswered_sends: 28,
                backlog_u: 15,
                connects: 0,
                reset: false,
            }
        );
        assert!(g.is_degrading());
    }

    #[test]
    fn growth_of_a_healthy_interval_is_not_degrading() {
        let prev = sample(100, 1000, 1000, 0, 5000, 5000, 0);
        let cur = sample(130, 1300, 1300, 0, 5300, 5300, 0);
        let g = growth(&prev, &cur);
        assert_eq!(g.ops, 300);
        assert_eq!((g.retransmissions, g.unanswered_sends), (0, 0));
        assert!(!g.is_degrading());
    }

    #[test]
    fn a_hung_hard_mount_shows_unanswered_sends_while_op_counters_stand_still() {
        let prev = sample(100, 1000, 1000, 0, 5000, 5000, 0);
        let cur = sample(160, 1000, 1000, 0, 5006, 5000, 0);
        let g = growth(&prev, &cur);
        assert_eq!((g.ops, g.retransmissions, g.unanswered_sends), (0, 0, 6));
        assert!(g.is_degrading());
    }

    #[test]
    fn remount_or_counter_drop_is_reported_as_reset_not_as_growth() {
        let prev = sample(100, 1000, 1002, 0, 5000, 5000, 0);
        let remounted = sample(5, 10, 10, 0, 12, 12, 0);
        assert_eq!(
            growth(&prev, &remounted),
            RpcGrowth {
                reset: true,
                ..RpcGrowth::default()
            }
        );
        let younger_but_bigger = sample(50, 2000, 2000, 0, 9000, 9000, 0);
        assert!(growth(&prev, &younger_but_bigger).reset);
        assert!(!growth(&prev, &remounted).is_degrading());
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_mountstats(&bytes);
        }

        #[test]
        fn parser_never_panics_on_mountstats_like_text(
            lines in proptest::collection::vec(
                "(device [a-z:/]{0,6} mounted on /[a-z]{0,4} with fstype nfs4? statvers=1.1|\txprt:\t(tcp|udp|rdma|local)( -?[0-9]{1,20}){0,28}|\tper-op statistics|\t [A-Z]{1,8}:( [0-9]{1,21}){0,10})",
                0..12,
            )
        ) {
            let _ = parse_mountstats(lines.join("\n").as_bytes());
        }

        #[test]
        fn growth_never_panics_and_is_zero_against_itself(
            ops in 0u64..u64::MAX, extra in 0u64..1000, sends in any::<u64>(), recvs in any::<u64>()
        ) {
            let s = sample(10, ops, ops.saturating_add(extra), 0, sends, recvs, 0);
            let g = growth(&s, &s);
            prop_assert_eq!(g, RpcGrowth::default());
        }
    }
}
