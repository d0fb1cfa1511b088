//! Link options for the `nodemedic` binary (not the library or the tests' builds).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    // Packed relative relocations (DT_RELR): the loader applies the binary's ~20,000
    // relative relocations at every start, reading all of `.rela.dyn` (457 KiB at 24 bytes
    // each), which then stays resident; packed they take a few KiB. Measured -0.45 MiB of
    // both stripped size and idle RSS (BENCHMARKS.md, "Idle RSS"). Needs glibc >= 2.36 at
    // run time (GLIBC_ABI_DT_RELR: the ceiling, Raspberry Pi OS bookworm's) and GNU ld >=
    // 2.38 for x86_64. Bookworm's aarch64 and armhf ld (2.40) ignore the option with a
    // warning, so it is passed for x86_64 only.
    if var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
    {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
