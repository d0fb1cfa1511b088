//! Which Kubernetes credentials to use, and the node name.
//!
//! nodemedic runs on the host (systemd), not in a pod, so it looks where k3s puts things,
//! in this order, and the first that exists wins:
//! 1. an explicit kubeconfig path from the config (must exist: a typo is an error, not a
//!    silent fall-back to other credentials);
//! 2. `/etc/rancher/k3s/k3s.yaml`, the admin kubeconfig (servers only);
//! 3. `/var/lib/rancher/k3s/agent/kubelet.kubeconfig`, the node's kubelet identity
//!    (agents): may patch its own Node and status and create Events, may not evict pods
//!    or write Leases (NodeRestriction; kubernetes issue 63167);
//! 4. in-cluster service-account credentials (when run as a DaemonSet).
//!
//! Paths are relative to a root parameter so tests point discovery at a temp dir; under a
//! root other than `/`, absolute file references inside the k3s kubeconfigs are re-based
//! there too.

use std::io;
use std::path::{Path, PathBuf};

use ::kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use super::api::Capabilities;

pub const K3S_ADMIN_KUBECONFIG: &str = "etc/rancher/k3s/k3s.yaml";
pub const K3S_KUBELET_KUBECONFIG: &str = "var/lib/rancher/k3s/agent/kubelet.kubeconfig";
pub(crate) const SERVICE_ACCOUNT_DIR: &str = "var/run/secrets/kubernetes.io/serviceaccount";

/// Node names are DNS-1123 subdomains.
const MAX_NODE_NAME: usize = 253;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    Explicit(PathBuf),
    K3sAdmin(PathBuf),
    K3sKubelet(PathBuf),
    InCluster { server: String, dir: PathBuf },
}

impl CredentialSource {
    pub fn capabilities(&self) -> Capabilities {
        match self {
            CredentialSource::K3sKubelet(_) => Capabilities::kubelet(self.describe()),
            // What an explicit kubeconfig may do is up to its RBAC; refusals surface as
            // 403s in errors and in nodemedic_kube_requests_total.
            _ => Capabilities::full(self.describe()),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            CredentialSource::Explicit(p) => format!("kubeconfig {}", p.display()),
            CredentialSource::K3sAdmin(p) => format!("k3s admin kubeconfig {}", p.display()),
            CredentialSource::K3sKubelet(p) => {
                format!("k3s kubelet identity {}", p.display())
            }
            CredentialSource::InCluster { dir, .. } => {
                format!("in-cluster service account {}", dir.display())
            }
        }
    }
}

/// Inputs to [`discover`]; everything the function would otherwise read from the process.
#[derive(Clone, Debug)]
pub struct Discovery<'a> {
    pub root: &'a Path,
    pub explicit: Option<&'a Path>,
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, set in pods.
    pub service_host: Option<String>,
    pub service_port: Option<String>,
}

impl<'a> Discovery<'a> {
    /// Discovery on the real host, reading the in-cluster variables from the environment.
    pub(crate) fn host(root: &'a Path, explicit: Option<&'a Path>) -> Self {
        Discovery {
            root,
            explicit,
            service_host: std::env::var("KUBERNETES_SERVICE_HOST").ok(),
            service_port: std::env::var("KUBERNETES_SERVICE_PORT").ok(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "the configured kubeconfig {} does not exist; fix the path, or remove the setting \
         to use the k3s credentials on this node",
        path.display()
    )]
    ExplicitMissing { path: PathBuf },
    #[error(
        "no Kubernetes credentials found (looked for {looked}); cluster features \
         (conditions, events, cordon, reboot lock) stay off until a kubeconfig is configured"
    )]
    NotFound { looked: String },
    #[error("cannot load {what}: {detail}")]
    Load { what: String, detail: String },
    #[error(
        "node name {name:?} from {from} is not a valid Kubernetes node name ({why}); set `node_name` in the config"
    )]
    BadNodeName {
        name: String,
        from: &'static str,
        why: &'static str,
    },
}

pub fn discover(d: &Discovery<'_>) -> Result<CredentialSource, CredentialsError> {
    if let Some(p) = d.explicit {
        return if p.exists() {
            Ok(CredentialSource::Explicit(p.to_path_buf()))
        } else {
            Err(CredentialsError::ExplicitMissing {
                path: p.to_path_buf(),
            })
        };
    }
    let admin = d.root.join(K3S_ADMIN_KUBECONFIG);
    if admin.exists() {
        return Ok(CredentialSource::K3sAdmin(admin));
    }
    let kubelet = d.root.join(K3S_KUBELET_KUBECONFIG);
    if kubelet.exists() {
        return Ok(CredentialSource::K3sKubelet(kubelet));
    }
    let sa = d.root.join(SERVICE_ACCOUNT_DIR);
    if let (Some(host), true) = (&d.service_host, sa.join("token").exists()) {
        let port = d.service_port.as_deref().unwrap_or("443");
        // IPv6 service addresses need brackets in a URL.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        return Ok(CredentialSource::InCluster {
            server: format!("https://{host}:{port}"),
            dir: sa,
        });
    }
    Err(CredentialsError::NotFound {
        looked: format!(
            "{}, {}, {}/token with KUBERNETES_SERVICE_HOST",
            admin.display(),
            kubelet.display(),
            sa.display()
        ),
    })
}

/// The kubeconfig for `source`, with k3s file references re-based under `root`.
pub(crate) fn kubeconfig(
    source: &CredentialSource,
    root: &Path,
) -> Result<Kubeconfig, CredentialsError> {
    let load_err = |detail: String| CredentialsError::Load {
        what: source.describe(),
        detail,
    };
    match source {
        CredentialSource::Explicit(p) => {
            Kubeconfig::read_from(p).map_err(|e| load_err(e.to_string()))
        }
        CredentialSource::K3sAdmin(p) | CredentialSource::K3sKubelet(p) => {
            let mut kc = Kubeconfig::read_from(p).map_err(|e| load_err(e.to_string()))?;
            rebase(&mut kc, root);
            Ok(kc)
        }
        CredentialSource::InCluster { server, dir } => {
            let namespace = std::fs::read_to_string(dir.join("namespace"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "default".into());
            let doc = json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "in-cluster", "cluster": {
                    "server": server,
                    "certificate-authority": dir.join("ca.crt"),
                }}],
                "users": [{"name": "in-cluster", "user": {"tokenFile": dir.join("token")}}],
                "contexts": [{"name": "in-cluster", "context": {
                    "cluster": "in-cluster", "user": "in-cluster", "namespace": namespace,
                }}],
                "current-context": "in-cluster",
            });
            // JSON is YAML; the kube crate parses it like any kubeconfig.
            Kubeconfig::from_yaml(&doc.to_string()).map_err(|e| load_err(e.to_string()))
        }
    }
}

/// A kube client config for `source` (TLS material read and checked here).
pub(crate) async fn client_config(
    source: &CredentialSource,
    root: &Path,
) -> Result<::kube::Config, CredentialsError> {
    let kc = kubeconfig(source, root)?;
    ::kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| CredentialsError::Load {
            what: source.describe(),
            detail: e.to_string(),
        })
}

fn rebase(kc: &mut Kubeconfig, root: &Path) {
    if root == Path::new("/") {
        return;
    }
    let under = |p: &mut Option<String>| {
        if let Some(s) = p.as_mut().filter(|s| s.starts_with('/')) {
            *s = root
                .join(s.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned();
        }
    };
    for c in kc.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
        under(&mut c.certificate_authority);
    }
    for a in kc
        .auth_infos
        .iter_mut()
        .filter_map(|a| a.auth_info.as_mut())
    {
        under(&mut a.client_certificate);
        under(&mut a.client_key);
        under(&mut a.token_file);
    }
}

/// The Kubernetes node name: the configured one, else the hostname lowercased (what k3s
/// registers by default).
pub(crate) fn node_name(
    configured: Option<&str>,
    hostname: &str,
) -> Result<String, CredentialsError> {
    let (name, from) = match configured {
        Some(n) => (n.to_string(), "the config"),
        None => (hostname.trim().to_ascii_lowercase(), "the hostname"),
    };
    let bad = |why| CredentialsError::BadNodeName {
        name: name.clone(),
        from,
        why,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_NODE_NAME {
        return Err(bad("longer than 253 characters"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        return Err(bad(
            "only lowercase letters, digits, '-' and '.', with letters or digits at both ends of each part",
        ));
    }
    Ok(name)
}

/// This machine's hostname.
pub(crate) fn system_hostname() -> io::Result<String> {
    let h = nix::unistd::gethostname().map_err(io::Error::from)?;
    Ok(h.to_string_lossy().into_owned())
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Test-only TLS material shaped like k3s's (ECDSA P-256, SEC1 keys).
    pub(crate) const CA_CRT: &str = "-----BEGIN CERTIFICATE-----
MIIBnDCCAUGgAwIBAgIUMMnxDr+SMe95fL8alib053n9QOcwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYazNzLXNlcnZlci1jYUAxNzY0MDAwMDAwMB4XDTI2MTEyMTE3
NTQyNFoXDTM2MTExODE3NTQyNFowIzEhMB8GA1UEAwwYazNzLXNlcnZlci1jYUAx
NzY0MDAwMDAwMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpbpLAmb5W31VVjfj
ifainnGrD/OfU+hQ/UetXwSe6yJRAp5JfnFSDw88noxY1771VN+PqKjsl+ERPnm+
pSwYNKNTMFEwHQYDVR0OBBYEFOLmyyAS5a/6Dg9nkwiSm2DESvTAMB8GA1UdIwQY
MBaAFOLmyyAS5a/6Dg9nkwiSm2DESvTAMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDSQAwRgIhAP+GYR93z8TVow7J5V5HvK5bynzY1xq29q1l3rUWjVh+AiEA
p4JbRdKqhHOqledBdwCrxtpFULWljq8B0KfsL8bjilE=
-----END CERTIFICATE-----
";
    pub(crate) const KUBELET_CRT: &str = "-----BEGIN CERTIFICATE-----
MIIBzDCCAXGgAwIBAgIUV34mqCCkNCB6+7Zu9bvAAzFAfNcwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYazNzLXNlcnZlci1jYUAxNzY0MDAwMDAwMB4XDTI2MTEyMTE3
NTY1M1oXDTM2MTExODE3NTY1M1owMTEVMBMGA1UECgwMc3lzdGVtOm5vZGVzMRgw
FgYDVQQDDA9zeXN0ZW06bm9kZTpwaTQwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQ2Okpb5+oBWZW/4QFuH8M9ySpV0cdNmTLCHA3ojux4xYq0hvFNXeoHdXnxnfI6
vs4Q768zAi2Ghnz4CMD+kQqto3UwczAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQE
AwIFoDATBgNVHSUEDDAKBggrBgEFBQcDAjAfBgNVHSMEGDAWgBTi5ssgEuWv+g4P
Z5MIkptgxEr0wDAdBgNVHQ4EFgQUQ4T03O3qXUCCa08lAjyC8tK9CtcwCgYIKoZI
zj0EAwIDSQAwRgIhAPdpFxzDoix7i63X6MOt+HfapW1qhoVumB154c2jLqqkAiEA
/OzymLCzE8DdJjFpnK33GXTJcQxTm3aDvJlJuWLoAu8=
-----END CERTIFICATE-----
";
    pub(crate) const KUBELET_KEY: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIKZ6dqVOMpIh8lPSvuoMCbNWOMKR0I3XNS7oJ1YiToyzoAoGCCqGSM49
AwEHoUQDQgAENjpKW+fqAVmVv+EBbh/DPckqVdHHTZkywhwN6I7seMWKtIbxTV3q
B3V58Z3yOr7OEO+vMwIthoZ8+AjA/pEKrQ==
-----END EC PRIVATE KEY-----
";

    /// A k3s agent's kubelet.kubeconfig: absolute file references, as k3s writes it.
    pub(crate) fn kubelet_kubeconfig(server: &str) -> String {
        format!(
            "apiVersion: v1
clusters:
- cluster:
    server: {server}
    certificate-authority: /var/lib/rancher/k3s/agent/server-ca.crt
  name: local
contexts:
- context:
    cluster: local
    namespace: default
    user: user
  name: Default
current-context: Default
kind: Config
preferences: {{}}
users:
- name: user
  user:
    client-certificate: /var/lib/rancher/k3s/agent/client-kubelet.crt
    client-key: /var/lib/rancher/k3s/agent/client-kubelet.key
"
        )
    }

    /// Writes a k3s agent layout (kubeconfig, CA, kubelet cert and key) under `root`.
    pub(crate) fn write_k3s_agent(root: &std::path::Path, server: &str) {
        let agent = root.join("var/lib/rancher/k3s/agent");
        std::fs::create_dir_all(&agent).unwrap();
        std::fs::write(agent.join("kubelet.kubeconfig"), kubelet_kubeconfig(server)).unwrap();
        std::fs::write(agent.join("server-ca.crt"), CA_CRT).unwrap();
        std::fs::write(agent.join("client-kubelet.crt"), KUBELET_CRT).unwrap();
        std::fs::write(agent.join("client-kubelet.key"), KUBELET_KEY).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) -> PathBuf {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn disc(root: &Path) -> Discovery<'_> {
        Discovery {
            root,
            explicit: None,
            service_host: None,
            service_port: None,
        }
    }

    #[test]
    fn the_k3s_admin_kubeconfig_wins_over_the_kubelet_identity() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_k3s_agent(dir.path(), "https://127.0.0.1:6443");
        let admin = put(
            dir.path(),
            K3S_ADMIN_KUBECONFIG,
            "apiVersion: v1\nkind: Config\n",
        );
        let src = discover(&disc(dir.path())).unwrap();
        assert_eq!(src, CredentialSource::K3sAdmin(admin));
        assert_eq!(src.capabilities(), Capabilities::full(src.describe()));
    }

    #[test]
    fn an_agent_uses_the_kubelet_identity_which_cannot_evict_or_lease() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_k3s_agent(dir.path(), "https://127.0.0.1:6443");
        let src = discover(&disc(dir.path())).unwrap();
        assert_eq!(
            src,
            CredentialSource::K3sKubelet(dir.path().join(K3S_KUBELET_KUBECONFIG))
        );
        let caps = src.capabilities();
        assert!(!caps.evict && !caps.leases);
        assert!(caps.identity.contains("kubelet"));
    }

    #[test]
    fn an_explicit_path_overrides_everything_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), K3S_ADMIN_KUBECONFIG, "apiVersion: v1\n");
        let mine = put(dir.path(), "home/ops/.kube/config", "apiVersion: v1\n");
        let mut d = disc(dir.path());
        d.explicit = Some(&mine);
        assert_eq!(
            discover(&d).unwrap(),
            CredentialSource::Explicit(mine.clone())
        );
        let missing = dir.path().join("etc/nodemedic/kubeconfg");
        d.explicit = Some(&missing);
        let e = discover(&d).unwrap_err();
        assert!(matches!(e, CredentialsError::ExplicitMissing { .. }));
        assert!(e.to_string().contains("kubeconfg"), "{e}");
    }

    #[test]
    fn in_cluster_needs_both_the_token_and_the_service_variables() {
        let dir = tempfile::tempdir().unwrap();
        put(
            dir.path(),
            &format!("{SERVICE_ACCOUNT_DIR}/token"),
            "eyJhbGciOi",
        );
        let mut d = disc(dir.path());
        assert!(matches!(
            discover(&d),
            Err(CredentialsError::NotFound { .. })
        ));
        d.service_host = Some("fd00:10:43::1".into());
        d.service_port = Some("443".into());
        let src = discover(&d).unwrap();
        assert_eq!(
            src,
            CredentialSource::InCluster {
                server: "https://[fd00:10:43::1]:443".into(),
                dir: dir.path().join(SERVICE_ACCOUNT_DIR),
            }
        );
    }

    #[test]
    fn nothing_found_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let e = discover(&disc(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("k3s.yaml") && e.contains("kubelet.kubeconfig") && e.contains("token"),
            "{e}"
        );
    }

    #[test]
    fn kubelet_file_references_are_rebased_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_k3s_agent(dir.path(), "https://127.0.0.1:6443");
        let src = discover(&disc(dir.path())).unwrap();
        let kc = kubeconfig(&src, dir.path()).unwrap();
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        let agent = dir.path().join("var/lib/rancher/k3s/agent");
        assert_eq!(
            user.client_certificate.as_deref(),
            Some(agent.join("client-kubelet.crt").to_str().unwrap())
        );
        assert_eq!(
            user.client_key.as_deref(),
            Some(agent.join("client-kubelet.key").to_str().unwrap())
        );
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some(agent.join("server-ca.crt").to_str().unwrap())
        );
    }

    #[tokio::test]
    async fn a_rebased_kubelet_kubeconfig_loads_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::write_k3s_agent(dir.path(), "https://10.0.0.5:6443");
        let src = discover(&disc(dir.path())).unwrap();
        let cfg = client_config(&src, dir.path()).await.unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://10.0.0.5:6443/");
        assert_eq!(cfg.root_cert.as_ref().map(Vec::len), Some(1));
    }

    #[tokio::test]
    async fn in_cluster_credentials_become_a_token_file_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        put(
            dir.path(),
            &format!("{SERVICE_ACCOUNT_DIR}/token"),
            "eyJhbGciOi",
        );
        put(
            dir.path(),
            &format!("{SERVICE_ACCOUNT_DIR}/ca.crt"),
            fixtures::CA_CRT,
        );
        put(
            dir.path(),
            &format!("{SERVICE_ACCOUNT_DIR}/namespace"),
            "nodemedic\n",
        );
        let mut d = disc(dir.path());
        d.service_host = Some("10.43.0.1".into());
        d.service_port = Some("443".into());
        let src = discover(&d).unwrap();
        let cfg = client_config(&src, dir.path()).await.unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://10.43.0.1:443/");
        assert_eq!(cfg.default_namespace, "nodemedic");
        assert_eq!(cfg.root_cert.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn a_broken_kubeconfig_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), K3S_ADMIN_KUBECONFIG, "clusters: [unclosed");
        let src = discover(&disc(dir.path())).unwrap();
        let e = kubeconfig(&src, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("k3s admin kubeconfig") && e.contains("k3s.yaml"),
            "{e}"
        );
    }

    #[test]
    fn node_name_is_configured_or_the_lowercased_hostname() {
        assert_eq!(
            node_name(Some("pi5-control"), "ignored").unwrap(),
            "pi5-control"
        );
        assert_eq!(node_name(None, "Pi4-Worker\n").unwrap(), "pi4-worker");
        assert_eq!(node_name(None, "pi4.home.lan").unwrap(), "pi4.home.lan");
    }

    #[test]
    fn invalid_node_names_are_refused_with_their_origin() {
        for (cfg, host) in [
            (Some("Pi5"), ""),
            (Some("-pi5"), ""),
            (Some("pi5..lan"), ""),
            (Some("pi_5"), ""),
            (None, ""),
            (None, "pi 5"),
        ] {
            let e = node_name(cfg, host).unwrap_err();
            let from = if cfg.is_some() {
                "the config"
            } else {
                "the hostname"
            };
            assert!(e.to_string().contains(from), "{e}");
        }
        assert!(node_name(Some(&"a".repeat(254)), "").is_err());
    }

    #[test]
    fn the_system_hostname_is_readable() {
        assert!(!system_hostname().unwrap().is_empty());
    }
}
