//! Shared by the root tests that run the `moat` binary: the root check, the binary's path,
//! a quiet namespace pair, and `moat stats --json`.

use std::{path::Path, process::Output};

use moat::{
    lab::process::Daemon,
    netns::{Endpoint, NetNs, quiet_veth, unique_iface},
};

/// Fails the test, saying why, unless it runs as root (it loads XDP programs and creates
/// network namespaces).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads XDP programs and creates network namespaces: run it as root \
         (cargo xtask test does)"
    );
}

/// The `moat` binary under test.
pub fn moat_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_moat"))
}

/// An origin and a client namespace joined by a quiet veth pair (no IPv6, static neighbours).
pub struct Pair {
    pub client_end: Endpoint,
    pub origin_end: Endpoint,
    pub client: NetNs,
    pub origin: NetNs,
}

impl Pair {
    pub fn create() -> Pair {
        let origin = NetNs::create("moat-test-o").expect("creating origin netns");
        let client = NetNs::create("moat-test-c").expect("creating client netns");
        let origin_end = Endpoint {
            iface: unique_iface("to"),
            mac: [0x02, 0, 0, 0, 0, 0x01],
            ipv4: "198.18.0.1".parse().expect("literal address"),
        };
        let client_end = Endpoint {
            iface: unique_iface("tc"),
            mac: [0x02, 0, 0, 0, 0, 0x02],
            ipv4: "198.18.0.2".parse().expect("literal address"),
        };
        quiet_veth(&origin, &origin_end, &client, &client_end).expect("creating veth pair");
        Pair {
            client_end,
            origin_end,
            client,
            origin,
        }
    }

    /// Starts `moat run` on the origin end with `extra` arguments.
    pub fn start(&self, extra: &[&str]) -> Daemon {
        Daemon::start(&self.origin, moat_bin(), &self.origin_end.iface, extra)
            .unwrap_or_else(|error| panic!("moat run {extra:?} failed to attach: {error}"))
    }

    /// Runs the moat binary with `args` inside the origin namespace.
    pub fn moat(&self, args: &[&str]) -> Output {
        self.origin
            .command(moat_bin())
            .args(args)
            .output()
            .expect("running moat")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // The counters a test's daemon left pinned outlive it by design; the interface is gone.
        let _ = moat::pins::PinDir::for_iface(&self.origin_end.iface).remove_persistent();
    }
}

/// `moat stats --iface IFACE --json`, parsed.
pub fn stats_json(iface: &str) -> serde_json::Value {
    let output = std::process::Command::new(moat_bin())
        .args(["stats", "--iface", iface, "--json", "--window", "0"])
        .output()
        .expect("running moat stats");
    assert!(
        output.status.success(),
        "moat stats failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("moat stats --json prints JSON")
}

/// `(packets, bytes)` of one pair in a stats JSON.
pub fn count(stats: &serde_json::Value, verdict: &str, reason: &str) -> (u64, u64) {
    let counter = &stats["counters"][verdict][reason];
    (
        counter["packets"].as_u64().expect("packets is a number"),
        counter["bytes"].as_u64().expect("bytes is a number"),
    )
}

/// The stderr of a finished command, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
