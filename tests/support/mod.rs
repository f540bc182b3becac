//! Shared by the root tests that run the `moat` binary: the root check, the binary's path,
//! a quiet namespace pair with extra client addresses, `moat stats --json`, waiting for a
//! condition with a deadline, temporary directories and nftables counters after XDP.

pub mod crowdsec;
pub mod testrun;

use std::{
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use filter_common::flood::{FLOOD_CONFIG, FloodConfig, L4_UDP};
use moat::netns::{Endpoint, NetNs, quiet_veth, unique_iface};
use moat_lab::{flood::FloodPlan, process::Daemon};

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

/// Pins, at `path`, a map of another object (the flood generator's configuration array): a
/// The shipped object with the last instruction of its XDP program zeroed: aya parses and
/// relocates it as it does the real one, and the kernel's verifier then refuses it (an unknown
/// or unreachable instruction), the stand-in for a new build this kernel cannot run.
pub fn unverifiable_object() -> Vec<u8> {
    let mut object = moat::FILTER_OBJECT.to_vec();
    let u16_at = |bytes: &[u8], at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at = |bytes: &[u8], at: usize| {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    };
    let u64_at = |bytes: &[u8], at: usize| {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")) as usize
    };
    // ELF64, little-endian: the section headers, then the symbol table and its strings.
    let (sections, entry, count) = (
        u64_at(&object, 0x28),
        usize::from(u16_at(&object, 0x3A)),
        usize::from(u16_at(&object, 0x3C)),
    );
    let section = |index: usize| sections + index * entry;
    let symtab = (0..count)
        .map(section)
        .find(|&at| u32_at(&object, at + 4) == 2)
        .expect("a symbol table");
    let strings = u64_at(&object, section(u32_at(&object, symtab + 40) as usize) + 24);
    let (symbols, size) = (u64_at(&object, symtab + 24), u64_at(&object, symtab + 32));
    let program = (symbols..symbols + size)
        .step_by(24)
        .find(|&at| {
            let name = strings + u32_at(&object, at) as usize;
            object[name..].split(|&byte| byte == 0).next()
                == Some(filter_common::maps::PROGRAM_NAME.as_bytes())
        })
        .expect("the program's symbol");
    let code = u64_at(
        &object,
        section(usize::from(u16_at(&object, program + 6))) + 24,
    );
    let end = code + u64_at(&object, program + 8) + u64_at(&object, program + 16);
    object[end - 8..end].fill(0);
    object
}

/// stand-in for a map this version of moat did not create, such as one an earlier version
/// declared or one whose entries have another layout. The pin keeps the map after the object
/// is dropped.
pub fn pin_foreign_map(path: &Path) {
    let other =
        aya::Ebpf::load(moat_lab::flood::FLOOD_OBJECT).expect("the flood generator's object");
    other
        .map(FLOOD_CONFIG)
        .expect("its configuration map")
        .pin(path)
        .unwrap_or_else(|error| panic!("pinning a foreign map at {}: {error}", path.display()));
}

/// The `moat` binary under test: `moat` in this test binary's target directory
/// (`target/<profile>/`), which `cargo xtask test` builds before it runs the tests.
pub fn moat_bin() -> &'static Path {
    built_bin("moat", "filter-user")
}

/// The `moat-lab` binary, found and built like [`moat_bin`].
pub fn lab_bin() -> &'static Path {
    built_bin("moat-lab", "moat-lab")
}

/// The workspace binary `name` (of `package`) beside this test's profile directory; fails,
/// saying how to build it, if it is missing.
fn built_bin(name: &str, package: &str) -> &'static Path {
    static FOUND: std::sync::Mutex<Vec<(String, &'static Path)>> =
        std::sync::Mutex::new(Vec::new());
    let mut found = FOUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = found.iter().find(|(known, _)| known == name) {
        return path;
    }
    // A test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lies in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "no {name} binary at {}: build it first with `cargo build -p {package}` in the tests'          profile (`cargo xtask test` does)",
        path.display()
    );
    let path: &'static Path = Box::leak(path.into_boxed_path());
    found.push((name.to_string(), path));
    path
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

    /// A visitor from `source` (an address of the client) connects to the origin's echo
    /// server on port 8080 and exchanges a message; returns whether it was served.
    pub fn visit(&self, server: &moat_lab::traffic::EchoServer, source: Ipv4Addr) -> bool {
        use std::io::{Read as _, Write as _};
        let to = std::net::SocketAddrV4::new(self.origin_end.ipv4, 8080);
        std::thread::scope(|scope| {
            let served = scope.spawn(|| server.serve_one());
            let echoed = self
                .client
                .enter(|| -> std::io::Result<bool> {
                    let socket =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                    socket.bind(&std::net::SocketAddr::from((source, 0)).into())?;
                    socket.connect_timeout(&to.into(), Duration::from_secs(3))?;
                    let mut stream = std::net::TcpStream::from(socket);
                    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
                    stream.write_all(b"hello")?;
                    let mut echo = [0u8; 5];
                    stream.read_exact(&mut echo)?;
                    Ok(&echo == b"hello")
                })
                .expect("entering the client")
                .unwrap_or(false);
            let _ = served.join();
            echoed
        })
    }

    /// A UDP flood to the origin's `dst_port` from `count` spoofed IPv4 sources from `base` on,
    /// each datagram from a random source port.
    pub fn udp_flood(&self, base: Ipv4Addr, count: u32, dst_port: u16) -> FloodPlan {
        let template =
            moat_lab::traffic::udp_frame(&self.client_end, &self.origin_end, dst_port, b"flood");
        let mut src_base_be = [0u8; 16];
        src_base_be[..4].copy_from_slice(&base.octets());
        FloodPlan {
            template,
            config: FloodConfig {
                src_base_be,
                src_count: count,
                l3_offset: 14,
                l4_offset: 34,
                ip_version: 4,
                l4_kind: L4_UDP,
                random_src_port: 1,
                ..FloodConfig::default()
            },
        }
    }

    /// Starts `moat run` on the origin end with `extra` arguments.
    pub fn start(&self, extra: &[&str]) -> Daemon {
        Daemon::start(&self.origin, moat_bin(), &self.origin_end.iface, extra)
            .unwrap_or_else(|error| panic!("moat run {extra:?} failed to attach: {error}"))
    }

    /// Adds `addr` to the client's interface (in its /24) with the origin's neighbour entry for
    /// it, so the client can connect from an address the origin has never seen.
    pub fn add_client_address(&self, addr: Ipv4Addr) {
        self.client
            .ip(&[
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &self.client_end.iface,
            ])
            .expect("a second client address");
        self.origin
            .ip(&[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &self.client_end.mac_string(),
                "dev",
                &self.origin_end.iface,
                "nud",
                "permanent",
            ])
            .expect("the origin's neighbour entry");
    }

    /// Runs the moat binary with `args` inside the origin namespace, fails the test unless it
    /// succeeds, and returns what it printed.
    pub fn moat_ok(&self, args: &[&str]) -> String {
        let output = self.moat(args);
        assert!(
            output.status.success(),
            "moat {args:?}: {}",
            stderr(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
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

/// Polls `condition` until it holds, failing the test after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory named after `name`.
    pub fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("moat-{name}-{}", moat::netns::unique_suffix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// Writes `text` to the file `name` in it and returns the file's path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path.to_str().expect("utf-8 path").to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `ruleset` into nftables in `ns`: the tests count what reaches the stack after XDP
/// with a `counter` rule at prerouting priority -400, in table `moat_test` of its family.
pub fn nft_load(ns: &moat::netns::NetNs, ruleset: &str) {
    let mut nft = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft: is nftables installed? (cargo xtask setup installs it)");
    nft.stdin
        .take()
        .expect("piped stdin")
        .write_all(ruleset.as_bytes())
        .expect("writing the ruleset");
    assert!(nft.wait().expect("nft").success(), "loading {ruleset}");
}

/// The packets of the (first) counter in table `moat_test` of `family` (`ip`, `ip6`) in `ns`.
pub fn nft_packets(ns: &moat::netns::NetNs, family: &str) -> u64 {
    nft_counters(ns, family)
        .first()
        .copied()
        .expect("the counter rule")
}

/// The packets of every counter in table `moat_test` of `family` (`ip`, `ip6`, `netdev`) in
/// `ns`, in rule order.
pub fn nft_counters(ns: &moat::netns::NetNs, family: &str) -> Vec<u64> {
    let output = ns
        .command("nft")
        .args(["-j", "list", "table", family, "moat_test"])
        .output()
        .expect("nft list");
    let value: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("nft -j prints JSON");
    value["nftables"]
        .as_array()
        .expect("a ruleset")
        .iter()
        .flat_map(|entry| {
            entry["rule"]["expr"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|expr| expr["counter"]["packets"].as_u64())
        .collect()
}
