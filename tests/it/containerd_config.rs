//! The private containerd on k3s's real config layout (issue 16, point 3), on every version
//! under test: the bed's config has the shape k3s generates (`version = 3` importing
//! `config-v3.toml.d/*.toml` on 2.x; `version = 2` importing `config.toml.d/*.toml` on 1.x),
//! and the drop-in directory holds what operators put there.
//!
//! Needs root, containerd, runc, the CNI plugins, gcc and busybox-static (SKIP on a dev box,
//! failure under CI).

use std::path::Path;
use std::time::{Duration, Instant};

use nodemedic::preflight::plan::Mode;
use nodemedic::preflight::private_instance::{
    InstanceConfig, InstanceError, PrivateInstance, verify_cri_disabled,
};
use nodemedic::preflight::run::{Outcome, run};

use crate::support::containerd_bed::{ContainerdBed, prerequisites, version};

/// Plugins (`type.id`) the containerd on `socket` loaded.
fn plugins(bed: &ContainerdBed, socket: &Path) -> Vec<String> {
    use containerd_client::services::v1::{
        PluginsRequest, introspection_client::IntrospectionClient,
    };
    let ch = bed
        .rt
        .block_on(nodemedic::preflight::containerd::connect_unix(
            socket,
            Duration::from_secs(5),
        ))
        .unwrap();
    let mut c = IntrospectionClient::new(ch);
    bed.rt
        .block_on(c.plugins(PluginsRequest { filters: vec![] }))
        .unwrap()
        .into_inner()
        .plugins
        .into_iter()
        .filter(|p| p.init_err.is_none())
        .map(|p| format!("{}.{}", p.r#type, p.id))
        .collect()
}

#[test]
fn dropins_with_disabled_plugins_and_a_proxy_snapshotter_are_merged_into_the_private_containerd() {
    if !prerequisites() {
        return;
    }
    let v = version();
    let mut bed = ContainerdBed::new();
    let stargz = bed.dir.join("stargz.sock");
    bed.write_dropin(
        "50-disable.toml",
        "disabled_plugins = [\"io.containerd.snapshotter.v1.btrfs\"]\n",
    );
    bed.write_dropin(
        "60-stargz.toml",
        &format!(
            "[proxy_plugins.stargz]\n  type = \"snapshot\"\n  address = \"{}\"\n",
            stargz.display()
        ),
    );
    // k3s's containerd runs with them, pods and all.
    bed.stop_containerd();
    bed.start(true);
    let loaded = plugins(&bed, &bed.socket);
    assert!(
        loaded
            .iter()
            .any(|p| p == "io.containerd.snapshotter.v1.stargz"),
        "{loaded:?}"
    );
    assert!(!loaded.iter().any(|p| p.ends_with(".btrfs")), "{loaded:?}");
    // The private instance's guard sees CRI in a containerd that runs it.
    let ch = bed.channel();
    let e = bed
        .rt
        .block_on(verify_cri_disabled(ch, Duration::from_secs(5)))
        .unwrap_err();
    assert!(
        matches!(e, InstanceError::CriLoaded(ref p) if p.contains("cri")),
        "{e}"
    );
    let pod = bed.run_pod("web-0", "default", "uid-cfg", 0).unwrap();
    bed.power_cut();

    // The private containerd, started on k3s's config as preflight does: the drop-ins are in,
    // CRI is not.
    let inst_cfg = InstanceConfig {
        binary: crate::support::containerd_bed::containerd_dir().join("containerd"),
        base_config: Some(bed.config_path().to_path_buf()),
        root: bed.root.clone(),
        state: bed.state.clone(),
        real_socket: bed.socket.clone(),
        run_dir: bed.dir.join("run"),
        startup_timeout: Duration::from_secs(30),
        stop_timeout: Duration::from_secs(10),
    };
    let mut inst =
        PrivateInstance::start(&inst_cfg, Instant::now() + Duration::from_secs(60)).unwrap();
    assert_eq!(
        inst.config_note, None,
        "k3s's config is used, not the minimal one"
    );
    assert_eq!(inst.config_merged.len(), 2, "{:?}", inst.config_merged);
    let loaded = plugins(&bed, inst.socket());
    eprintln!("{v}: private containerd plugins: {loaded:?}");
    assert!(
        loaded
            .iter()
            .any(|p| p == "io.containerd.snapshotter.v1.stargz"),
        "{loaded:?}"
    );
    assert!(
        loaded
            .iter()
            .any(|p| p == "io.containerd.snapshotter.v1.overlayfs")
    );
    for p in &loaded {
        assert!(
            !p.contains(".cri") && !p.ends_with(".podsandbox") && !p.ends_with(".btrfs"),
            "{p} loaded in the private containerd"
        );
    }
    inst.stop();

    // The whole preflight on it: the report names the merged drop-ins, the sandbox goes.
    let s = run(&bed.preflight_config(&bed.isolate_cni_results(), &bed.dir.join("pf")));
    eprintln!("{:?}\n{}\n{:?}", s.outcome, s.plan_text, s.report.notes);
    assert_eq!(s.outcome, Outcome::Completed);
    assert_eq!(s.mode, Some(Mode::AfterReboot));
    assert_eq!(s.done, s.planned);
    assert!(s.report.items.iter().any(|i| i.text.contains(&pod[..12])));
    let notes = s.report.notes.join("\n");
    assert!(
        notes.contains("merged k3s's drop-in 50-disable.toml"),
        "{notes}"
    );
    assert!(
        notes.contains("merged k3s's drop-in 60-stargz.toml: proxy_plugins"),
        "{notes}"
    );
    assert!(!notes.contains("minimal config"), "{notes}");
}

#[test]
fn a_dropin_that_claims_k3s_listeners_falls_back_to_the_minimal_config_and_says_why() {
    if !prerequisites() {
        return;
    }
    let mut bed = ContainerdBed::new();
    let pod = bed.run_pod("web-0", "default", "uid-cfg2", 0).unwrap();
    bed.power_cut();
    // Written while k3s's containerd is down (it would bind this itself).
    let dropin = bed.write_dropin(
        "70-ttrpc.toml",
        &format!("[ttrpc]\n  address = \"{}.ttrpc\"\n", bed.socket.display()),
    );
    let s = run(&bed.preflight_config(&bed.isolate_cni_results(), &bed.dir.join("pf")));
    assert_eq!(s.outcome, Outcome::Completed);
    let notes = s.report.notes.join("\n");
    assert!(
        notes.contains("minimal config")
            && notes.contains("70-ttrpc.toml")
            && notes.contains("ttrpc.address"),
        "{notes}"
    );
    assert!(s.report.items.iter().any(|i| i.text.contains(&pod[..12])));
    std::fs::remove_file(dropin).unwrap();
}
