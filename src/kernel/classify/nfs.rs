//! NFS client faults: servers not responding and back, state-manager failures, lost locks,
//! lockd and RPC transport errors (fs/nfs, fs/lockd, net/sunrpc), and the pairing of
//! "not responding" with "OK" per server ([`NfsServerTracker`]).

use super::*;

/// RPC programs whose "server X not responding" / "server X OK" lines concern an NFS
/// mount (names from `struct rpc_program` in fs/nfs, fs/lockd, net/sunrpc).
pub(super) const NFS_RPC_PROGRAMS: &[&str] =
    &["nfs", "nfsacl", "lockd", "statd", "rpcbind", "portmap"];

/// `<program>: server <host> not responding, still trying|timed out` / `... OK`.
pub(super) fn nfs_rpc_server(line: &str) -> Option<Head> {
    let (program, rest) = line.split_once(": server ")?;
    if !NFS_RPC_PROGRAMS.contains(&program) {
        return None;
    }
    let (server, tail) = rest.split_once(' ')?;
    let mut f = Fields {
        rpc_program: Some(program.to_string()),
        server: Some(server.to_string()),
        ..Fields::default()
    };
    let kind = if tail == "OK" {
        EventKind::NfsRecovered
    } else if let Some(how) = tail.strip_prefix("not responding") {
        f.mount_kind = if how.contains("still trying") {
            Some(MountKind::Hard)
        } else if how.contains("timed out") {
            Some(MountKind::Soft)
        } else {
            None
        };
        EventKind::NfsNotResponding
    } else {
        return None;
    };
    Head::new(kind, Role::Single, f)
}

pub(super) fn lockd_head(line: &str) -> Option<Head> {
    let rest = line.strip_prefix("lockd: ")?;
    let host = rest
        .strip_prefix("cannot monitor ")
        .or_else(|| rest.strip_prefix("failed to monitor "))?;
    let fields = Fields {
        rpc_program: Some("lockd".to_string()),
        server: Some(host.trim_end().to_string()),
        ..Fields::default()
    };
    Head::new(EventKind::NfsLockdError, Role::Single, fields)
}

/// NFSv4 client state recovery: state manager failures and lost locks.
pub(super) fn nfs_client_head(line: &str) -> Option<Head> {
    const ON_SERVER: &str = " failed on NFSv4 server ";
    let s = line.strip_prefix("NFS: ").unwrap_or(line);
    if s.ends_with("Lock reclaim failed!") && s.contains("nfs4_reclaim_open_state") {
        return Head::new(
            EventKind::NfsLockReclaimFailed,
            Role::Single,
            Fields::default(),
        );
    }
    // `NFS: state manager: lease expired failed on NFSv4 server H with error 110`;
    // 2.6-era: `Error: state manager failed on NFSv4 server H with error 5`.
    let sm = s
        .strip_prefix("state manager")
        .or_else(|| s.strip_prefix("Error: state manager"));
    if let Some(rest) = sm
        && let Some(at) = rest.find(ON_SERVER)
    {
        let stage = rest[..at].strip_prefix(": ").filter(|st| !st.is_empty());
        let after = &rest[at + ON_SERVER.len()..];
        let (server, tail) = after.split_once(' ').unwrap_or((after, ""));
        let error = tail
            .strip_prefix("with error ")
            .and_then(|e| e.trim_end().parse::<i32>().ok());
        let fields = Fields {
            stage: stage.map(str::to_string),
            server: Some(server.to_string()),
            error,
            ..Fields::default()
        };
        return Head::new(EventKind::NfsStateRecoveryFailed, Role::Single, fields);
    }
    // Since 6.x: `NFS: nas.local: lost 3 locks`.
    if line.starts_with("NFS: ")
        && let Some(rest) = s.strip_suffix(" locks")
        && let Some((server, n)) = rest.rsplit_once(": lost ")
    {
        let fields = Fields {
            server: Some(server.to_string()),
            lost_locks: all_digits_u32(n),
            ..Fields::default()
        };
        return Head::new(EventKind::NfsLockReclaimFailed, Role::Single, fields);
    }
    None
}

/// `xs_tcp_setup_socket: connect returned unhandled error -107` (sunrpc xprtsock).
pub(super) fn rpc_transport_head(line: &str) -> Option<Head> {
    const MARK: &str = ": connect returned unhandled error ";
    if !line.starts_with("xs_") {
        return None;
    }
    let at = line.find(MARK)?;
    let fields = Fields {
        error: line[at + MARK.len()..].trim_end().parse::<i32>().ok(),
        ..Fields::default()
    };
    Head::new(EventKind::NfsRpcTransportError, Role::Single, fields)
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
