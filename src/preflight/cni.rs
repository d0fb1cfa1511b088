//! Scanning the CNI state a crash leaves behind (pure parsers plus a directory walk under an
//! injected root; nothing here deletes).
//!
//! Two kinds of leftovers break a node after an unclean shutdown (k3s issues 6185, 4682):
//! - libcni's result cache, `/var/lib/cni/results/<net>-<container id>-<ifname>`: a file cut
//!   to zero length (or mid-write) makes every later teardown of that pod fail with
//!   `failed to get network "cbr0" cached result: decoding version from network config:
//!   unexpected end of JSON input` (k3s 6185). A missing file is fine for libcni, a corrupt
//!   one never is, so corrupt files can go whatever their owner's state.
//! - host-local IPAM reservations, `/var/lib/cni/networks/<net>/<ip>`, whose content is the
//!   owning container id (and, since CNI plugins 0.8, `\r\n<ifname>`). They survive reboots
//!   and exhaust the pod range (`no IP addresses available in range set`, k3s 4682).
//!   `lock` and `last_reserved_ip.<range>` are host-local's own bookkeeping and are never
//!   touched; neither is any file whose name is not an IP address or whose owner is not a
//!   CRI container id (another tool's reservation).

use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Largest result file we read; real ones are a few KiB. Bigger ones are reported, not read.
pub const MAX_RESULT_BYTES: u64 = 1 << 20;
/// Largest reservation file we read: an id, a line break and an interface name.
pub const MAX_RESERVATION_BYTES: u64 = 4096;
/// host-local's lock file in every network directory.
pub const IPAM_LOCK_FILE: &str = "lock";
/// Prefix of host-local's per-range "last reserved IP" files.
pub const IPAM_LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";

/// The health of one result cache file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum ResultState {
    /// A JSON object (libcni's `cniCacheV1` wrapper or a legacy bare result).
    Valid { container_id: Option<String> },
    /// Zero bytes: the crash signature from k3s 6185.
    Empty,
    /// Anything libcni cannot decode.
    Corrupt(String),
}

/// Classifies the bytes of one result cache file.
pub fn classify_result(bytes: &[u8]) -> ResultState {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if bytes.is_empty() {
            ResultState::Empty
        } else {
            ResultState::Corrupt("only whitespace".into())
        };
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(m)) => ResultState::Valid {
            container_id: m
                .get("containerId")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        },
        Ok(_) => ResultState::Corrupt("not a JSON object".into()),
        Err(e) => ResultState::Corrupt(e.to_string()),
    }
}

/// The owner recorded in a host-local reservation file: container id and, when present, the
/// interface name. `None` when the content has no id.
pub fn parse_reservation(bytes: &[u8]) -> Option<(String, Option<String>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split(['\r', '\n']).filter(|l| !l.trim().is_empty());
    let id = lines.next()?.trim().to_string();
    let ifname = lines.next().map(|s| s.trim().to_string());
    Some((id, ifname))
}

#[cfg(test)]
use crate::formats::name_reservation::is_cri_id;

/// One result cache file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultFile {
    pub path: PathBuf,
    pub state: ResultState,
}

/// One host-local reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    pub path: PathBuf,
    pub network: String,
    pub ip: IpAddr,
    /// The owning container id, `None` when the file has no readable owner.
    pub owner: Option<String>,
    pub ifname: Option<String>,
    /// When the file was last written (unix seconds): host-local writes it once, at ADD.
    pub modified_unix: Option<u64>,
}

/// Everything found under the CNI directories.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CniInventory {
    pub results: Vec<ResultFile>,
    pub reservations: Vec<Reservation>,
    /// Entries that could not be read (path and error); reported, never acted on.
    pub unreadable: Vec<(PathBuf, String)>,
}

fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > cap {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the {cap} this scan reads",
            meta.len()
        )));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// Scans `results_dir` (libcni's result cache) and `networks_dir` (host-local's data dir, one
/// sub-directory per network). A missing directory is simply empty.
pub fn scan(results_dir: &Path, networks_dir: &Path) -> CniInventory {
    let mut inv = CniInventory::default();
    match sorted_entries(results_dir) {
        Ok(entries) => {
            for e in entries {
                let path = e.path();
                if !e.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                match read_capped(&path, MAX_RESULT_BYTES) {
                    Ok(b) => inv.results.push(ResultFile {
                        state: classify_result(&b),
                        path,
                    }),
                    Err(err) => inv.unreadable.push((path, err.to_string())),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => inv
            .unreadable
            .push((results_dir.to_path_buf(), e.to_string())),
    }
    let nets = match sorted_entries(networks_dir) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return inv,
        Err(e) => {
            inv.unreadable
                .push((networks_dir.to_path_buf(), e.to_string()));
            return inv;
        }
    };
    for net in nets {
        if !net.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let network = net.file_name().to_string_lossy().into_owned();
        let entries = match sorted_entries(&net.path()) {
            Ok(v) => v,
            Err(e) => {
                inv.unreadable.push((net.path(), e.to_string()));
                continue;
            }
        };
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == IPAM_LOCK_FILE || name.starts_with(IPAM_LAST_RESERVED_PREFIX) {
                continue;
            }
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = e.path();
            match read_capped(&path, MAX_RESERVATION_BYTES) {
                Ok(b) => {
                    let (owner, ifname) = match parse_reservation(&b) {
                        Some((id, ifn)) => (Some(id), ifn),
                        None => (None, None),
                    };
                    let modified_unix = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs());
                    inv.reservations.push(Reservation {
                        path,
                        network: network.clone(),
                        ip,
                        owner,
                        ifname,
                        modified_unix,
                    });
                }
                Err(err) => inv.unreadable.push((path, err.to_string())),
            }
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4be1d2c3a4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeeff";

    #[test]
    fn zero_length_result_is_the_crash_signature() {
        assert_eq!(classify_result(b""), ResultState::Empty);
    }

    #[test]
    fn truncated_whitespace_and_non_object_results_are_corrupt() {
        let full = format!(
            r#"{{"kind":"cniCacheV1","containerId":"{ID}","config":"eyJjbmlWZXJzaW9uIjoiMS4wLjAifQ==","ifName":"eth0","networkName":"cbr0","result":{{"cniVersion":"1.0.0","ips":[{{"address":"10.42.0.9/24"}}]}}}}"#
        );
        for bad in [
            &full.as_bytes()[..57],
            b"  \n".as_slice(),
            b"[1,2]".as_slice(),
            b"\0\0\0\0".as_slice(),
        ] {
            assert!(
                matches!(classify_result(bad), ResultState::Corrupt(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            classify_result(full.as_bytes()),
            ResultState::Valid {
                container_id: Some(ID.into())
            }
        );
    }

    #[test]
    fn legacy_bare_result_is_valid_without_owner() {
        let legacy = br#"{"cniVersion":"0.4.0","interfaces":[{"name":"cni0"}],"ips":[{"version":"4","address":"10.42.1.3/24"}]}"#;
        assert_eq!(
            classify_result(legacy),
            ResultState::Valid { container_id: None }
        );
    }

    #[test]
    fn reservations_carry_owner_and_interface_in_either_format() {
        assert_eq!(
            parse_reservation(format!("{ID}\r\neth0").as_bytes()),
            Some((ID.to_string(), Some("eth0".to_string())))
        );
        assert_eq!(
            parse_reservation(format!("{ID}\n").as_bytes()),
            Some((ID.to_string(), None))
        );
        assert_eq!(parse_reservation(b""), None);
        assert_eq!(parse_reservation(b"\r\n"), None);
        assert_eq!(parse_reservation(b"\xff\xfe"), None);
    }

    #[test]
    fn cri_ids_are_64_lowercase_hex() {
        assert!(is_cri_id(ID));
        assert!(!is_cri_id(&ID.to_uppercase()));
        assert!(!is_cri_id(&ID[..63]));
        assert!(!is_cri_id("docker-build-1"));
    }

    #[test]
    fn scan_finds_results_and_reservations_and_skips_bookkeeping_files() {
        let d = tempfile::tempdir().unwrap();
        let results = d.path().join("results");
        let nets = d.path().join("networks");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::create_dir_all(nets.join("cbr0")).unwrap();
        std::fs::create_dir_all(nets.join("v6net")).unwrap();
        std::fs::write(results.join(format!("cbr0-{ID}-eth0")), "").unwrap();
        std::fs::write(
            results.join("cbr0-abc-eth0"),
            r#"{"kind":"cniCacheV1","containerId":"abc"}"#,
        )
        .unwrap();
        std::fs::write(nets.join("cbr0/lock"), "").unwrap();
        std::fs::write(nets.join("cbr0/last_reserved_ip.0"), "10.42.0.9").unwrap();
        std::fs::write(nets.join("cbr0/10.42.0.9"), format!("{ID}\r\neth0")).unwrap();
        std::fs::write(nets.join("cbr0/notes.txt"), "x").unwrap();
        std::fs::write(nets.join("v6net/fd00:42::7"), "").unwrap();
        std::fs::write(d.path().join("networks/stray-file"), "x").unwrap();

        let inv = scan(&results, &nets);
        assert_eq!(inv.results.len(), 2);
        // Sorted by file name: the 64-hex id sorts before "abc".
        assert_eq!(inv.results[0].path, results.join(format!("cbr0-{ID}-eth0")));
        assert_eq!(inv.results[0].state, ResultState::Empty);
        assert_eq!(inv.results[1].path, results.join("cbr0-abc-eth0"));
        assert_eq!(
            inv.results[1].state,
            ResultState::Valid {
                container_id: Some("abc".into())
            }
        );
        assert_eq!(inv.reservations.len(), 2);
        let r = &inv.reservations[0];
        assert_eq!(r.network, "cbr0");
        assert_eq!(r.ip, "10.42.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(r.owner.as_deref(), Some(ID));
        assert_eq!(r.ifname.as_deref(), Some("eth0"));
        assert_eq!(r.path, nets.join("cbr0/10.42.0.9"));
        // The write time, for the after-reboot rule on reservations nobody owns.
        let written = std::fs::metadata(&r.path).unwrap().modified().unwrap();
        let written = written.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(r.modified_unix, Some(written.as_secs()));
        let r = &inv.reservations[1];
        assert_eq!(r.network, "v6net");
        assert_eq!(r.ip, "fd00:42::7".parse::<IpAddr>().unwrap());
        assert_eq!(r.owner, None);
        assert!(inv.unreadable.is_empty());
    }

    #[test]
    fn scan_of_missing_directories_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let inv = scan(&d.path().join("nope"), &d.path().join("nope2"));
        assert_eq!(inv, CniInventory::default());
    }

    #[test]
    fn oversized_result_is_unreadable_not_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("big");
        std::fs::write(&f, vec![b' '; (MAX_RESULT_BYTES + 1) as usize]).unwrap();
        let inv = scan(d.path(), &d.path().join("none"));
        assert!(inv.results.is_empty());
        assert_eq!(inv.unreadable.len(), 1);
        assert_eq!(inv.unreadable[0].0, f);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_file_contents_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = classify_result(&bytes);
            let _ = parse_reservation(&bytes);
        }
    }
}
