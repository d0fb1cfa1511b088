//! The glibc ceiling of the release packages (`nodemedic_glibc_ceiling` in
//! scripts/cross.sh, run by scripts/package.sh on every package): the test-built binary
//! passes it, and a copy asking for a newer glibc than Raspberry Pi OS bookworm's 2.36 (as
//! a build with Debian sid's toolchain does, GLIBC_2.39) fails it.
//!
//! Real: readelf (binutils) on a real binary. The "newer" binary is the test binary with
//! its highest version-needs name rewritten in place, which the loader would refuse too.

use std::path::Path;
use std::process::Command;

use super::support::nspawn::which;
use super::support::{BIN, require};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Runs the script function; (succeeded, stdout, stderr).
fn ceiling(bin: &Path, max: &str) -> (bool, String, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(". scripts/cross.sh && nodemedic_glibc_ceiling \"$1\" \"$2\"")
        .arg("bash")
        .arg(bin)
        .arg(max)
        .current_dir(REPO)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_glibc_ceiling_passes_this_build_and_fails_a_binary_needing_a_newer_glibc() {
    if !require(which("readelf").is_some(), "readelf (binutils)") {
        return;
    }
    let (ok, highest, err) = ceiling(Path::new(BIN), "2.36");
    assert!(ok, "{err}");
    // "GLIBC_2.34": the highest version the binary needs, at most the ceiling.
    let minor: u32 = highest
        .strip_prefix("GLIBC_2.")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("not a glibc version: {highest:?} ({err})"));
    assert!((17..=36).contains(&minor), "{highest}");

    // A ceiling just below what it needs fails, naming the version.
    let (ok, _, err) = ceiling(Path::new(BIN), &format!("2.{}", minor - 1));
    assert!(!ok, "passed a ceiling below {highest}");
    assert!(err.contains(&highest) && err.contains("FAILED"), "{err}");

    // The same binary asking for GLIBC_2.99 (same length, so the ELF stays intact).
    let newer = format!("GLIBC_2.{}", "9".repeat(minor.to_string().len()));
    let mut bytes = std::fs::read(BIN).unwrap();
    let want = format!("{highest}\0").into_bytes();
    let at = bytes
        .windows(want.len())
        .position(|w| w == want.as_slice())
        .expect("the version name in .dynstr");
    bytes[at..at + want.len() - 1].copy_from_slice(newer.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let patched = dir.path().join("nodemedic-newer-glibc");
    std::fs::write(&patched, &bytes).unwrap();
    let (ok, _, err) = ceiling(&patched, "");
    assert!(!ok, "a binary needing {newer} passed the default ceiling");
    assert!(
        err.contains(&newer) && err.contains("ceiling GLIBC_2.36"),
        "{err}"
    );
    // Not an ELF with glibc versions at all: an error, not a pass.
    let text = dir.path().join("not-elf");
    std::fs::write(&text, "#!/bin/sh\n").unwrap();
    assert!(!ceiling(&text, "").0);
}
