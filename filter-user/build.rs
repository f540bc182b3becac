//! Builds the XDP object from `filter-ebpf` with the linked Debian toolchain (see
//! `cargo xtask setup`), so `src/lib.rs` can embed it.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The rustup toolchain name `cargo xtask setup` links to Debian's rustc, which ships a
/// precompiled `core` for bpfel-unknown-none.
const BPF_TOOLCHAIN: &str = "moat-bpf";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("filter-user has no parent directory"))?;
    let ebpf_dir = root.join("filter-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", ebpf_dir.display()))?;
    println!(
        "cargo:rerun-if-changed={}",
        root.join("filter-common/src").display()
    );
    // aya-ebpf uses `asm_experimental_arch`; enable unstable features for exactly the crates
    // that need them, so aya-build does not also ask for `-Z build-std` (Debian ships `core`).
    // SAFETY: this build script is single-threaded, so nothing reads the environment while it
    // changes.
    unsafe {
        std::env::set_var(
            "RUSTC_BOOTSTRAP",
            "aya_ebpf,aya_ebpf_bindings,aya_ebpf_cty,aya_log_ebpf,filter_ebpf,moat_filter,moat_parse_count",
        );
    }
    aya_build::build_ebpf(
        [Package {
            name: "filter-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom(BPF_TOOLCHAIN),
    )?;
    // The same program with per-packet aya-log output (`moat run --debug-log`), built into its
    // own directory so its binaries do not overwrite the shipped ones.
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
    let debug_dir = std::path::Path::new(&out_dir).join("debug-log");
    std::fs::create_dir_all(&debug_dir).context("creating OUT_DIR/debug-log")?;
    // SAFETY: as above, nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("OUT_DIR", &debug_dir) };
    let built = aya_build::build_ebpf(
        [Package {
            name: "filter-ebpf",
            root_dir: ebpf_dir,
            features: &["debug-log"],
            ..Default::default()
        }],
        Toolchain::Custom(BPF_TOOLCHAIN),
    );
    // SAFETY: as above.
    unsafe { std::env::set_var("OUT_DIR", &out_dir) };
    built
}
