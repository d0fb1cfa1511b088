//! containerd's name-reservation error, the one parser of it: the kernel-log classifier
//! (`nodemedic classify` on saved logs), the CRI detector (RunPodSandbox errors) and the
//! containerd log tail all read it here.
//!
//! containerd's CRI plugin reserves every sandbox and container name
//! (`internal/cri/store/...`, `reserveSandboxName` / `reserveContainerName`); a leaked
//! record keeps the name, and every retry of the kubelet fails with
//!
//! ```text
//! failed to reserve sandbox name "<pod>_<namespace>_<uid>_<attempt>": name "<same>" is reserved for "<64-hex id>"
//! ```
//!
//! wrapped in containerd's, k3s's or the kubelet's log syntax, with the quotes escaped zero,
//! one or two times. At containerd start the same error follows `failed to recover state:`
//! (fatal there: the CRI never comes up).

/// Which reservation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReservedKind {
    /// A pod sandbox: a leaked sandbox blocks the pod until removed.
    Sandbox,
    /// A container: transient during a slow CreateContainer, never a reason to clean up.
    Container,
}

/// What one name-reservation line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NameReservation<'a> {
    pub(crate) kind: ReservedKind,
    /// The reserved name, as far as it has the characters CRI names are made of.
    pub(crate) name: &'a str,
    /// The id of the sandbox or container holding the name, when the line says.
    pub(crate) holder_id: Option<&'a str>,
    /// Reported by `failed to recover state:`: containerd could not start.
    pub(crate) recover_state: bool,
    /// The name and the holder id each end at a quote (escaped or not), as containerd
    /// prints them; a reader that acts on the line takes only such lines.
    pub(crate) well_formed: bool,
}

const SANDBOX: &str = "failed to reserve sandbox name";
const CONTAINER: &str = "failed to reserve container name";
const RESERVED_FOR: &str = "is reserved for";

/// Parses a line that contains a name-reservation failure anywhere; None for any other
/// line. Tolerant (for reading saved logs): see [`NameReservation::well_formed`].
pub(crate) fn parse(line: &str) -> Option<NameReservation<'_>> {
    let (kind, at, len) = if let Some(i) = line.find(SANDBOX) {
        (ReservedKind::Sandbox, i, SANDBOX.len())
    } else if let Some(i) = line.find(CONTAINER) {
        (ReservedKind::Container, i, CONTAINER.len())
    } else {
        return None;
    };
    let after = line[at + len..].trim_start_matches([' ', '\\', '"']);
    let name_len = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .unwrap_or(after.len());
    let name = &after[..name_len];
    if name.is_empty() {
        return None;
    }
    let quote_follows = |s: &str| s.starts_with(['"', '\\']);
    let mut holder_id = None;
    let mut holder_quoted = false;
    if let Some(i) = after[name_len..].find(RESERVED_FOR) {
        let id = after[name_len + i + RESERVED_FOR.len()..].trim_start_matches([' ', '\\', '"']);
        let id_len = id
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(id.len());
        if id_len > 0 {
            holder_id = Some(&id[..id_len]);
            holder_quoted = quote_follows(&id[id_len..]);
        }
    }
    Some(NameReservation {
        kind,
        name,
        holder_id,
        recover_state: line[..at].contains("failed to recover state"),
        well_formed: quote_follows(&after[name_len..]) && holder_quoted,
    })
}

/// (name, holder id) of a sandbox-name conflict the runtime can act on: a well-formed
/// sandbox reservation whose holder is a CRI id. Container names and `failed to recover
/// state` are the caller's to exclude or not.
pub(crate) fn sandbox_conflict(r: &NameReservation<'_>) -> Option<(String, String)> {
    if r.kind != ReservedKind::Sandbox || !r.well_formed {
        return None;
    }
    let id = r.holder_id.filter(|id| is_cri_id(id))?;
    Some((r.name.to_string(), id.to_string()))
}

/// True for the ids the CRI plugin generates: 64 lowercase hex digits.
pub fn is_cri_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "d3a1f0c2b4e6a8c0d2f4b6a8c0e2d4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8";

    #[test]
    fn every_escaping_of_the_quotes_gives_the_same_reservation() {
        for q in ["\"", "\\\"", "\\\\\\\""] {
            let line = format!(
                "x failed to reserve sandbox name {q}web-0_default_u1_0{q}: name {q}web-0_default_u1_0{q} is reserved for {q}{ID}{q}"
            );
            let r = parse(&line).unwrap();
            assert_eq!(
                (r.kind, r.name, r.holder_id, r.recover_state, r.well_formed),
                (
                    ReservedKind::Sandbox,
                    "web-0_default_u1_0",
                    Some(ID),
                    false,
                    true
                ),
                "{line}"
            );
            assert_eq!(
                sandbox_conflict(&r),
                Some(("web-0_default_u1_0".into(), ID.into()))
            );
        }
    }

    #[test]
    fn a_name_or_id_not_ended_by_a_quote_is_not_acted_on() {
        for line in [
            format!(
                "failed to reserve sandbox name \"ab$cd\": name \"ab$cd\" is reserved for \"{ID}\""
            ),
            format!(
                "failed to reserve sandbox name \"ab\": name \"ab\" is reserved for \"{ID}xyz\""
            ),
            format!("failed to reserve sandbox name \"ab\": name \"ab\" is reserved for \"{ID}"),
        ] {
            let r = parse(&line).unwrap();
            assert!(!r.well_formed, "{line}");
            assert_eq!(sandbox_conflict(&r), None, "{line}");
        }
    }

    #[test]
    fn cri_ids_are_64_lowercase_hex_digits() {
        assert!(is_cri_id(ID));
        assert!(!is_cri_id(&ID.to_uppercase()));
        assert!(!is_cri_id(&ID[..63]));
    }
}
