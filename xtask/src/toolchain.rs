//! Names and versions of every tool moat's build and tests depend on, in one place.
//!
//! `setup` checks and installs exactly these; nothing else in xtask spells a version.
//! `filter-user/build.rs` keeps its own copy of [`BPF_TOOLCHAIN`], because a build script
//! cannot depend on xtask.

/// Debian packages the build and the tests need.
///
/// `rustc-web` and `libstd-rust-web-dev-bpf` bring `/usr/bin/rustc` (on LLVM 22) with a
/// precompiled `core` for `bpfel-unknown-none`, plus `/usr/bin/cargo`; `rust-web-clippy` is
/// its clippy, which `cargo xtask test` runs on the XDP crate; `llvm-22-dev` is what
/// bpf-linker links against; the rest are used by the root tests and the lab (`ip`,
/// `ping`, `nsenter`, `sysctl`, and `prometheus` with `promtool` for the metrics tests); the lab
/// runs `nginx-light` as its origin, counts with `nftables` and turns on veth GRO with
/// `ethtool`; the benchmark compares against `xdp-tools` and `nftables`; `dist` builds the
/// package with `dpkg-dev` (`dpkg-shlibdeps`, and `strip` from its binutils) and checks the
/// unit with `systemd-analyze` from `systemd`. CrowdSec is not in this list: see
/// [`CROWDSEC_PACKAGE`].
pub const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "rust-web-clippy",
    "llvm-22-dev",
    "iproute2",
    "iputils-ping",
    "util-linux",
    "procps",
    "prometheus",
    "nginx-light",
    "nftables",
    "ethtool",
    "xdp-tools",
    "dpkg-dev",
    "systemd",
];

/// Debian's CrowdSec (1.4.6 on bookworm): `crowdsec` runs the Local API the CrowdSec tests
/// talk to and `cscli` drives it. Setup installs it on its own, not with [`DEBIAN_PACKAGES`],
/// because its postinst registers with CrowdSec's online API unless an opt-out file exists
/// beforehand, and that registration fails (leaving the package half-configured) offline.
pub const CROWDSEC_PACKAGE: &str = "crowdsec";

/// Name of the rustup toolchain linked to Debian's rustc; `filter-user/build.rs` builds the
/// eBPF crate with `rustup run` on it.
pub const BPF_TOOLCHAIN: &str = "moat-bpf";

/// Installation prefix of Debian's rustc, which [`BPF_TOOLCHAIN`] links to.
pub const BPF_TOOLCHAIN_PREFIX: &str = "/usr";

/// The bpf-linker release moat is built with.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The bpf-linker cargo feature selecting the LLVM it links against.
pub const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// Where that LLVM is installed (by `llvm-22-dev`); passed to bpf-linker's build as
/// `LLVM_PREFIX`.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
