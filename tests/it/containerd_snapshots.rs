//! Snapshot/metadata desync (issue 16, point 4) on a real containerd root, on every version
//! under test: one image layer's directory is deleted; containers of that image fail as in the
//! field, pods of the other image keep starting without any re-import; preflight reports and
//! removes the broken image and its chain only, and the image works again once imported.
//!
//! Needs root, containerd, runc, the CNI plugins, gcc and busybox-static (SKIP on a dev box,
//! failure under CI).

use k8s_cri::v1::PodSandboxState;
use nodemedic::preflight::gate::{Kind, Switch};
use nodemedic::preflight::plan::Mode;
use nodemedic::preflight::run::{Outcome, run};

use crate::support::containerd_bed::{
    BUSYBOX_IMAGE, ContainerdBed, PAUSE_IMAGE, prerequisites, version,
};

const SLEEP: &[&str] = &["/bin/busybox", "sleep", "100000"];

#[test]
fn a_layer_without_its_directory_takes_only_its_image_and_the_image_works_after_reimport() {
    if !prerequisites() {
        return;
    }
    let v = version();
    let mut bed = ContainerdBed::new();
    let a = bed.run_pod("web-0", "default", "uid-sn0", 0).unwrap();
    bed.run_container(&a, "app", SLEEP).unwrap();
    let (busybox_layer, busybox_dir) = bed.image_snapshot(BUSYBOX_IMAGE);
    let (pause_layer, pause_dir) = bed.image_snapshot(PAUSE_IMAGE);
    bed.power_cut();
    // The desync: the layer's directory is gone, containerd's metadata still lists it.
    std::fs::remove_dir_all(&busybox_dir).unwrap();

    // As in the field: pods (the pause image) start, containers of the broken image do not.
    bed.start(true);
    let b = bed.run_pod("web-1", "default", "uid-sn1", 0).unwrap();
    assert_eq!(bed.pod_state(&b).unwrap().0, PodSandboxState::SandboxReady);
    let err = bed.run_container(&b, "app", SLEEP).unwrap_err();
    eprintln!("{v}: creating a busybox container: {}", err.message());
    assert!(
        err.message().contains("failed to stat parent")
            || err
                .message()
                .contains("failed to create prepare snapshot dir")
            || err.message().contains("no such file or directory"),
        "{}",
        err.message()
    );
    bed.stop_pod(&b);
    bed.kill_containerd();
    let results = bed.isolate_cni_results();

    // A dry run reports it and removes nothing.
    let mut cfg = bed.preflight_config(&results, &bed.dir.join("pf"));
    cfg.dry_run = true;
    let dry = run(&cfg);
    let sn = dry.report.snapshots.clone().unwrap();
    assert_eq!(sn.plan.missing.len(), 1, "{sn:?}");
    assert_eq!(sn.plan.missing[0].key, busybox_layer);
    assert!(sn.images_removed.is_empty());

    // The real run: the dead pods go first (with their container snapshots), then the image.
    cfg.dry_run = false;
    let s = run(&cfg);
    eprintln!(
        "{:?}\n{}\n{:#?}",
        s.outcome, s.plan_text, s.report.snapshots
    );
    assert_eq!(s.outcome, Outcome::Completed);
    assert_eq!(s.mode, Some(Mode::AfterReboot));
    let sn = s.report.snapshots.clone().unwrap();
    assert_eq!(sn.plan.missing[0].key, busybox_layer);
    assert!(
        sn.plan.missing[0].detail.contains("failed to stat parent")
            || sn.plan.missing[0].detail.contains("is missing"),
        "{:?}",
        sn.plan.missing
    );
    assert_eq!(sn.plan.images.len(), 1);
    assert!(
        sn.images_removed.iter().any(|n| n == BUSYBOX_IMAGE),
        "{sn:?}"
    );
    assert!(!sn.images_removed.iter().any(|n| n == PAUSE_IMAGE));
    // Removed by preflight, or by containerd's GC once the image records were gone.
    assert!(
        sn.snapshots_removed.contains(&busybox_layer) || sn.snapshots_gone.contains(&busybox_layer),
        "{sn:?}"
    );
    assert!(sn.failed.is_empty(), "{:?}", sn.failed);
    let d = s
        .report
        .decisions
        .iter()
        .find(|d| d.kind == Kind::BrokenImages)
        .unwrap();
    assert!(d.allowed && d.planned == 1, "{d:?}");
    assert!(pause_dir.is_dir(), "the pause layer stays");
    let totals = nodemedic::preflight::totals::read(&bed.dir.join("pf"))
        .unwrap()
        .unwrap();
    assert_eq!(
        totals.images_removed["snapshot_missing"],
        sn.images_removed.len() as u64
    );
    // A second run finds nothing.
    let again = run(&cfg);
    assert!(again.report.snapshots.unwrap().plan.missing.is_empty());

    // CRI: pods start without any import, the broken image is gone, and after an import
    // (the kubelet's pull, k3s's air-gap import) its containers run again.
    bed.restore_cni_results();
    bed.start(true);
    let c = bed.run_pod("web-2", "default", "uid-sn2", 0).unwrap();
    assert_eq!(bed.pod_state(&c).unwrap().0, PodSandboxState::SandboxReady);
    let tags = bed.image_tags();
    assert!(tags.iter().any(|t| t == PAUSE_IMAGE), "{tags:?}");
    assert!(!tags.iter().any(|t| t == BUSYBOX_IMAGE), "{tags:?}");
    assert_eq!(bed.image_snapshot(PAUSE_IMAGE).0, pause_layer);
    bed.import_image("busybox");
    bed.run_container(&c, "app", SLEEP)
        .expect("busybox runs again after the re-import");
}

#[test]
fn with_the_repair_switched_off_the_broken_image_stays_and_the_report_says_why() {
    if !prerequisites() {
        return;
    }
    let mut bed = ContainerdBed::new();
    let (_, busybox_dir) = bed.image_snapshot(BUSYBOX_IMAGE);
    bed.kill_containerd();
    std::fs::remove_dir_all(&busybox_dir).unwrap();
    let results = bed.isolate_cni_results();
    let mut cfg = bed.preflight_config(&results, &bed.dir.join("pf"));
    cfg.images = Switch::withheld("preflight.repair_snapshots = false", 20);
    let s = run(&cfg);
    let sn = s.report.snapshots.clone().unwrap();
    assert_eq!(sn.plan.images.len(), 1);
    assert!(sn.images_removed.is_empty());
    assert_eq!(
        sn.withheld.as_deref(),
        Some("preflight.repair_snapshots = false")
    );
    bed.start(true);
    assert!(bed.image_tags().iter().any(|t| t == BUSYBOX_IMAGE));
}
