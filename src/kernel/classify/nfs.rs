//! NFS client faults: servers not responding and back, state-manager failures, lost locks,
//! lockd and RPC transport errors (fs/nfs, fs/lockd, net/sunrpc), and the pairing of
//! "not responding" with "OK" per server ([`NfsServerTracker`]).

use super::*;

/// RPC programs whose "server X not responding" / "server X OK" lines concern an NFS
/// mount (names from `struct rpc_program` in fs/nfs, fs/lockd, net/sunrpc).
pub(super) const NFS_RPC_PROGRAMS: &[&str] =
    &["nfs", "nfsacl", "lockd", "statd", "rpcbind", "portmap"];

/// `<program>: server <host> not responding, still trying|timed out` / `... OK`
/// (net/sunrpc/clnt.c).
const RPC_SERVER: &[&str] = &[
    "%w: server %w not responding, still trying",
    "%w: server %w not responding, timed out",
    "%w: server %w OK",
];

pub(super) fn nfs_rpc_server(line: &str) -> Option<Head> {
    let (i, c) = kmatch_any(RPC_SERVER, line)?;
    let program = c.get(0);
    if !NFS_RPC_PROGRAMS.contains(&program) {
        return None;
    }
    let f = Fields {
        rpc_program: c.string(0),
        server: c.string(1),
        mount_kind: [Some(MountKind::Hard), Some(MountKind::Soft), None][i],
        ..Fields::default()
    };
    let kind = if i == 2 {
        EventKind::NfsRecovered
    } else {
        EventKind::NfsNotResponding
    };
    Head::new(kind, Role::Single, f)
}

/// lockd (fs/lockd/mon.c, clntproc.c, clntlock.c): statd unreachable, so NFSv3 locks are
/// not monitored, and locks lost after a server reboot.
const LOCKD: &[&str] = &[
    "lockd: cannot monitor %w",
    "lockd: failed to monitor %w",
    "lockd: cannot unmonitor %w",
];

const LOCKD_RECLAIM: &[&str] = &[
    "lockd: failed to reclaim lock for pid %d (errno %d, status %d)",
    "lockd: unable to spawn reclaimer thread. Locks for %w won't be reclaimed! (%d)",
];

pub(super) fn lockd_head(line: &str) -> Option<Head> {
    if let Some((_, c)) = kmatch_any(LOCKD, line) {
        let fields = Fields {
            rpc_program: Some("lockd".to_string()),
            server: c.string(0),
            ..Fields::default()
        };
        return Head::new(EventKind::NfsLockdError, Role::Single, fields);
    }
    let (i, c) = kmatch_any(LOCKD_RECLAIM, line)?;
    let fields = Fields {
        rpc_program: Some("lockd".to_string()),
        server: (i == 1).then(|| c.get(0).to_string()),
        pid: (i == 0).then(|| c.u32(0)).flatten(),
        error: c.i32(1),
        ..Fields::default()
    };
    Head::new(EventKind::NfsLockReclaimFailed, Role::Single, fields)
}

/// NFSv4 client state recovery (fs/nfs/nfs4state.c): the state manager gave up, locks or
/// open files could not be reclaimed after a server reboot or a lease loss.
const STATE_MANAGER: &[&str] = &[
    // `NFS: state manager: lease expired failed on NFSv4 server H with error 110`
    "NFS: state manager: %s failed on NFSv4 server %w with error %d",
    "NFS: state manager failed on NFSv4 server %w with error %d",
    // 2.6
    "Error: state manager failed on NFSv4 server %w with error %d",
];

const STATE_RECOVERY: &[&str] = &[
    "NFS: Server %w reports our clientid is in use",
    "NFS: migration recovery failed (server %w)",
    // nfs4_discover_server_trunking()
    "NFS: %w unhandled error %d. Exiting with error EIO",
    // nfs4_reclaim_locks(), nfs4_reclaim_open_state()
    "NFS: %w: unhandled error %d",
];

pub(super) fn nfs_client_head(line: &str) -> Option<Head> {
    // `NFS: __nfs4_reclaim_open_state: Lock reclaim failed!` (no `NFS: ` before 3.x).
    let reclaim = line.strip_prefix("NFS: ").unwrap_or(line);
    if let Some(c) = kmatch("%w: Lock reclaim failed!", reclaim)
        && c.get(0).ends_with("nfs4_reclaim_open_state")
    {
        return Head::new(
            EventKind::NfsLockReclaimFailed,
            Role::Single,
            Fields::default(),
        );
    }
    if let Some((i, c)) = kmatch_any(STATE_MANAGER, line) {
        let (stage, server, error) = if i == 0 {
            (c.string(0), c.string(1), c.i32(2))
        } else {
            (None, c.string(0), c.i32(1))
        };
        let fields = Fields {
            stage: stage.filter(|s| !s.is_empty()),
            server,
            error,
            ..Fields::default()
        };
        return Head::new(EventKind::NfsStateRecoveryFailed, Role::Single, fields);
    }
    if let Some((i, c)) = kmatch_any(STATE_RECOVERY, line) {
        let mut fields = Fields::default();
        match i {
            0 | 1 => fields.server = c.string(0),
            _ => {
                if !c.get(0).starts_with("nfs4") {
                    return None;
                }
                fields.stage = c.string(0);
                fields.error = c.i32(1);
            }
        }
        return Head::new(EventKind::NfsStateRecoveryFailed, Role::Single, fields);
    }
    // `NFSv4: state recovery failed for open file <dir/name>, error = -5`: the name is the
    // file's; the kernel's text follows it, so the line is matched to its end.
    if let Some(c) = kmatch(
        "NFSv4: state recovery failed for open file %s, error = %d",
        line,
    ) {
        let fields = Fields {
            error: c.i32(1),
            ..Fields::default()
        };
        return Head::new(EventKind::NfsStateRecoveryFailed, Role::Single, fields);
    }
    // Since 6.x: `NFS: nas.local: lost 3 locks`.
    let c = kmatch("NFS: %w: lost %d locks", line)?;
    let fields = Fields {
        server: c.string(0),
        lost_locks: c.u32(1),
        ..Fields::default()
    };
    Head::new(EventKind::NfsLockReclaimFailed, Role::Single, fields)
}

/// sunrpc socket transport errors (net/sunrpc/xprtsock.c): `xs_tcp_setup_socket: connect
/// returned unhandled error -107`, `xs_local_setup_socket: unhandled error (5) connecting
/// to /var/run/rpcbind.sock`.
const RPC_TRANSPORT: &[&str] = &[
    "%w: connect returned unhandled error %d",
    "%w: unhandled error (%d) connecting to %w",
];

pub(super) fn rpc_transport_head(line: &str) -> Option<Head> {
    if !line.starts_with("xs_") {
        return None;
    }
    let (i, c) = kmatch_any(RPC_TRANSPORT, line)?;
    let error = if i == 0 {
        c.i32(1)
    } else {
        c.i32(1).map(|e| -e)
    };
    let fields = Fields {
        error,
        ..Fields::default()
    };
    Head::new(EventKind::NfsRpcTransportError, Role::Single, fields)
}

/// Every NFS and RPC head.
pub(super) fn nfs_head(line: &str) -> Option<Head> {
    nfs_rpc_server(line)
        .or_else(|| lockd_head(line))
        .or_else(|| nfs_client_head(line))
        .or_else(|| rpc_transport_head(line))
}

/// A node mounts a handful of NFS servers; the bound keeps memory fixed whatever the
/// log says. Reports about further servers are dropped while the table is full.
pub(super) const MAX_TRACKED_NFS_SERVERS: usize = 64;

/// An RPC server that said "not responding" and has not said "OK" since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NfsServerDown {
    /// `nfs`, `lockd`, `statd`...: each RPC client reports (and recovers) on its own.
    pub(crate) rpc_program: String,
    pub(crate) server: String,
    /// The last reported mount semantics, if any report said.
    pub(crate) mount_kind: Option<MountKind>,
    /// Kernel time of the first "not responding" report.
    pub(crate) since_ts_usec: Option<u64>,
    /// How many "not responding" reports arrived since.
    pub(crate) reports: u32,
}

/// Pairs "not responding" with "OK" per (RPC program, server): a server that came
/// back is not a standing problem.
#[derive(Debug, Clone, Default)]
pub(crate) struct NfsServerTracker {
    down: Vec<NfsServerDown>,
}

impl NfsServerTracker {
    pub fn new() -> NfsServerTracker {
        NfsServerTracker::default()
    }

    /// Takes any event; only `nfs_not_responding` and `nfs_recovered` change state.
    pub(crate) fn apply(&mut self, event: &Event) {
        let (Some(program), Some(server)) = (&event.fields.rpc_program, &event.fields.server)
        else {
            return;
        };
        let at = self
            .down
            .iter()
            .position(|d| &d.rpc_program == program && &d.server == server);
        match (event.kind, at) {
            (EventKind::NfsNotResponding, Some(i)) => {
                let d = &mut self.down[i];
                d.reports = d.reports.saturating_add(1);
                if event.fields.mount_kind.is_some() {
                    d.mount_kind = event.fields.mount_kind;
                }
            }
            (EventKind::NfsNotResponding, None) if self.down.len() < MAX_TRACKED_NFS_SERVERS => {
                self.down.push(NfsServerDown {
                    rpc_program: program.clone(),
                    server: server.clone(),
                    mount_kind: event.fields.mount_kind,
                    since_ts_usec: event.first_ts_usec,
                    reports: 1,
                });
            }
            (EventKind::NfsRecovered, Some(i)) => {
                self.down.remove(i);
            }
            _ => {}
        }
    }

    /// Servers with at least one RPC program still not responding, sorted, unique.
    pub(crate) fn down_servers(&self) -> Vec<&str> {
        let mut servers: Vec<&str> = self.down.iter().map(|d| d.server.as_str()).collect();
        servers.sort_unstable();
        servers.dedup();
        servers
    }

    #[cfg(test)]
    /// Every (program, server) still down, in the order they went down.
    pub(crate) fn down(&self) -> &[NfsServerDown] {
        &self.down
    }

    #[cfg(test)]
    pub(crate) fn is_down(&self, server: &str) -> bool {
        self.down.iter().any(|d| d.server == server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

    fn nfs(program: &str, server: &str, mount_kind: Option<MountKind>) -> Fields {
        Fields {
            rpc_program: s(program),
            server: s(server),
            mount_kind,
            ..Fields::default()
        }
    }

    #[test]
    fn nfs_not_responding_and_recovery_with_mount_semantics() {
        let cases = [
            (
                "nfs: server nas.local not responding, still trying",
                EventKind::NfsNotResponding,
                nfs("nfs", "nas.local", Some(MountKind::Hard)),
            ),
            (
                "nfs: server 10.0.0.5 not responding, timed out",
                EventKind::NfsNotResponding,
                nfs("nfs", "10.0.0.5", Some(MountKind::Soft)),
            ),
            (
                "nfs: server nas.local OK",
                EventKind::NfsRecovered,
                nfs("nfs", "nas.local", None),
            ),
            (
                "lockd: server 10.0.0.5 not responding, still trying",
                EventKind::NfsNotResponding,
                nfs("lockd", "10.0.0.5", Some(MountKind::Hard)),
            ),
            (
                "lockd: server 10.0.0.5 OK",
                EventKind::NfsRecovered,
                nfs("lockd", "10.0.0.5", None),
            ),
            (
                "statd: server rpc.statd not responding, timed out",
                EventKind::NfsNotResponding,
                nfs("statd", "rpc.statd", Some(MountKind::Soft)),
            ),
            (
                "rpcbind: server localhost not responding, timed out",
                EventKind::NfsNotResponding,
                nfs("rpcbind", "localhost", Some(MountKind::Soft)),
            ),
            (
                "nfs: server fd00::5 not responding, still trying",
                EventKind::NfsNotResponding,
                nfs("nfs", "fd00::5", Some(MountKind::Hard)),
            ),
        ];
        for (line, kind, fields) in cases {
            assert_head(line, kind, fields);
        }
    }

    #[test]
    fn nfs_state_lock_lockd_and_transport_errors() {
        let cases = [
            (
                "NFS: state manager: lease expired failed on NFSv4 server 10.0.0.1 with error 110",
                EventKind::NfsStateRecoveryFailed,
                Fields {
                    stage: s("lease expired"),
                    server: s("10.0.0.1"),
                    error: Some(110),
                    ..Fields::default()
                },
            ),
            (
                "NFS: state manager failed on NFSv4 server 192.168.1.5 with error 5",
                EventKind::NfsStateRecoveryFailed,
                Fields {
                    server: s("192.168.1.5"),
                    error: Some(5),
                    ..Fields::default()
                },
            ),
            (
                "Error: state manager failed on NFSv4 server nas with error 13",
                EventKind::NfsStateRecoveryFailed,
                Fields {
                    server: s("nas"),
                    error: Some(13),
                    ..Fields::default()
                },
            ),
            (
                "NFS: __nfs4_reclaim_open_state: Lock reclaim failed!",
                EventKind::NfsLockReclaimFailed,
                Fields::default(),
            ),
            (
                "nfs4_reclaim_open_state: Lock reclaim failed!",
                EventKind::NfsLockReclaimFailed,
                Fields::default(),
            ),
            (
                "NFS: nas.local: lost 3 locks",
                EventKind::NfsLockReclaimFailed,
                Fields {
                    server: s("nas.local"),
                    lost_locks: Some(3),
                    ..Fields::default()
                },
            ),
            (
                "lockd: cannot monitor 10.0.0.2",
                EventKind::NfsLockdError,
                Fields {
                    rpc_program: s("lockd"),
                    server: s("10.0.0.2"),
                    ..Fields::default()
                },
            ),
            (
                "lockd: failed to monitor nas",
                EventKind::NfsLockdError,
                Fields {
                    rpc_program: s("lockd"),
                    server: s("nas"),
                    ..Fields::default()
                },
            ),
            (
                "xs_tcp_setup_socket: connect returned unhandled error -107",
                EventKind::NfsRpcTransportError,
                Fields {
                    error: Some(-107),
                    ..Fields::default()
                },
            ),
        ];
        for (line, kind, fields) in cases {
            assert_head(line, kind, fields);
        }
    }

    fn nfs_event(line: &str, ts: u64) -> Event {
        let mut c = Classifier::new();
        c.feed(line, Some(ts));
        c.pop_event().expect("one-line event")
    }

    #[test]
    fn nfs_tracker_pairs_outage_with_recovery_per_program_and_server() {
        let mut t = NfsServerTracker::new();
        t.apply(&nfs_event(
            "nfs: server nas.local not responding, still trying",
            10,
        ));
        t.apply(&nfs_event(
            "nfs: server nas.local not responding, still trying",
            20,
        ));
        t.apply(&nfs_event(
            "lockd: server nas.local not responding, still trying",
            25,
        ));
        t.apply(&nfs_event(
            "nfs: server 10.0.0.5 not responding, timed out",
            30,
        ));
        assert_eq!(t.down_servers(), vec!["10.0.0.5", "nas.local"]);
        assert_eq!(
            t.down()[0],
            NfsServerDown {
                rpc_program: "nfs".into(),
                server: "nas.local".into(),
                mount_kind: Some(MountKind::Hard),
                since_ts_usec: Some(10),
                reports: 2,
            }
        );
        t.apply(&nfs_event("nfs: server nas.local OK", 40));
        // lockd has not recovered yet.
        assert!(t.is_down("nas.local"));
        t.apply(&nfs_event("lockd: server nas.local OK", 41));
        assert!(!t.is_down("nas.local"));
        assert_eq!(t.down_servers(), vec!["10.0.0.5"]);
        // Unrelated events and recoveries of unknown servers change nothing.
        t.apply(&nfs_event("nfs: server other OK", 50));
        t.apply(&nfs_event("lockd: cannot monitor 10.0.0.5", 51));
        assert_eq!(t.down().len(), 1);
        assert_eq!(t.down()[0].mount_kind, Some(MountKind::Soft));
    }

    #[test]
    fn nfs_tracker_is_bounded() {
        let mut t = NfsServerTracker::new();
        for i in 0..MAX_TRACKED_NFS_SERVERS + 5 {
            t.apply(&nfs_event(
                &format!("nfs: server s{i} not responding, still trying"),
                1,
            ));
        }
        assert_eq!(t.down().len(), MAX_TRACKED_NFS_SERVERS);
    }
}
