//! containerd's sandbox and container name reservations, in containerd's, k3s's and the
//! kubelet's log syntax. The line itself is parsed by [`crate::formats::name_reservation`],
//! shared with the runtime detector; this turns it into an event.

use super::*;
use crate::formats::name_reservation::{self, ReservedKind};

/// containerd/kubelet/k3s: `failed to reserve sandbox name "a_b_c_0": name "a_b_c_0"
/// is reserved for "<id>"`, with the quotes possibly escaped once or twice.
pub(super) fn reserved_name_head(line: &str) -> Option<Head> {
    let r = name_reservation::parse(line)?;
    let kind = match r.kind {
        ReservedKind::Sandbox => EventKind::SandboxNameReserved,
        ReservedKind::Container => EventKind::ContainerNameReserved,
    };
    let name = r.name;
    let mut f = Fields {
        recover_state: Some(r.recover_state),
        holder_id: r.holder_id.map(str::to_string),
        ..Fields::default()
    };
    let parts: Vec<&str> = name.split('_').collect();
    if kind == EventKind::SandboxNameReserved {
        f.sandbox_name = Some(name.to_string());
        if let [pod, ns, uid, attempt] = parts[..] {
            set_pod_parts(&mut f, pod, ns, uid, attempt);
        }
    } else {
        f.container_name = Some(name.to_string());
        if let [container, pod, ns, uid, attempt] = parts[..] {
            f.container = Some(container.to_string());
            set_pod_parts(&mut f, pod, ns, uid, attempt);
        }
    }
    Head::new(kind, Role::Single, f)
}

pub(super) fn set_pod_parts(f: &mut Fields, pod: &str, ns: &str, uid: &str, attempt: &str) {
    f.pod = Some(pod.to_string());
    f.namespace = Some(ns.to_string());
    f.pod_uid = Some(uid.to_string());
    f.attempt = all_digits_u32(attempt);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

    fn sandbox(
        name: &str,
        pod: &str,
        ns: &str,
        uid: &str,
        attempt: u32,
        id: &str,
        recover: bool,
    ) -> Fields {
        Fields {
            sandbox_name: s(name),
            pod: s(pod),
            namespace: s(ns),
            pod_uid: s(uid),
            attempt: Some(attempt),
            holder_id: s(id),
            recover_state: Some(recover),
            ..Fields::default()
        }
    }

    #[test]
    fn sandbox_name_reserved_in_containerd_k3s_and_kubelet_formats() {
        let name =
            "longhorn-csi-plugin-x7k2p_longhorn-system_0b6d1c9e-3f2a-4c1b-9d8e-7a6b5c4d3e2f_3";
        let want = sandbox(
            name,
            "longhorn-csi-plugin-x7k2p",
            "longhorn-system",
            "0b6d1c9e-3f2a-4c1b-9d8e-7a6b5c4d3e2f",
            3,
            ID,
            false,
        );
        let lines = [
            format!(
                r#"time="2026-11-21T17:35:41.123456789Z" level=error msg="RunPodSandbox for &PodSandboxMetadata{{Name:longhorn-csi-plugin-x7k2p,Uid:0b6d1c9e-3f2a-4c1b-9d8e-7a6b5c4d3e2f,Namespace:longhorn-system,Attempt:3,}} failed, error" error="failed to reserve sandbox name \"{name}\": name \"{name}\" is reserved for \"{ID}\"""#
            ),
            format!(
                r#"E1121 17:35:41.123456    1234 log.go:32] "RunPodSandbox from runtime service failed" err="rpc error: code = Unknown desc = failed to reserve sandbox name \"{name}\": name \"{name}\" is reserved for \"{ID}\"""#
            ),
            format!(
                r#"E1121 17:35:41.123456    1234 pod_workers.go:1301] "Error syncing pod, skipping" err="failed to \"CreatePodSandbox\" with CreatePodSandboxError: \"Failed to create sandbox: rpc error: code = Unknown desc = failed to reserve sandbox name \\\"{name}\\\": name \\\"{name}\\\" is reserved for \\\"{ID}\\\"\"""#
            ),
            format!(
                r#"failed to reserve sandbox name "{name}": name "{name}" is reserved for "{ID}""#
            ),
        ];
        for line in &lines {
            assert_head(line, EventKind::SandboxNameReserved, want.clone());
        }
    }

    #[test]
    fn sandbox_name_reserved_at_containerd_start_is_marked_recover_state() {
        let line = format!(
            r#"containerd: failed to recover state: failed to reserve sandbox name "web-0_default_1234abcd-0000-1111-2222-333344445555_0": name "web-0_default_1234abcd-0000-1111-2222-333344445555_0" is reserved for "{ID}""#
        );
        assert_head(
            &line,
            EventKind::SandboxNameReserved,
            sandbox(
                "web-0_default_1234abcd-0000-1111-2222-333344445555_0",
                "web-0",
                "default",
                "1234abcd-0000-1111-2222-333344445555",
                0,
                ID,
                true,
            ),
        );
    }

    #[test]
    fn container_name_reserved_is_a_separate_transient_kind() {
        let line = format!(
            r#"level=error msg="CreateContainer within sandbox \"abc\" failed" error="failed to reserve container name \"nginx_web-0_default_uid-1_2\": name \"nginx_web-0_default_uid-1_2\" is reserved for \"{ID}\"""#
        );
        let v = verdict(&line);
        assert_eq!(v.kind, Some(EventKind::ContainerNameReserved));
        assert_eq!(
            v.fields,
            Fields {
                container_name: s("nginx_web-0_default_uid-1_2"),
                container: s("nginx"),
                pod: s("web-0"),
                namespace: s("default"),
                pod_uid: s("uid-1"),
                attempt: Some(2),
                holder_id: s(ID),
                recover_state: Some(false),
                ..Fields::default()
            }
        );
        assert_eq!(
            Event {
                kind: EventKind::ContainerNameReserved,
                fields: v.fields,
                first_ts_usec: None,
                last_ts_usec: None,
                lines: 1
            }
            .severity(FALLBACK_HZ),
            EventSeverity::Info
        );
    }

    #[test]
    fn sandbox_name_that_does_not_split_in_four_keeps_only_the_name() {
        let v = verdict(
            r#"failed to reserve sandbox name "odd_name": name "odd_name" is reserved for "zz""#,
        );
        assert_eq!(v.kind, Some(EventKind::SandboxNameReserved));
        assert_eq!(
            v.fields,
            Fields {
                sandbox_name: s("odd_name"),
                recover_state: Some(false),
                ..Fields::default()
            }
        );
    }
}
