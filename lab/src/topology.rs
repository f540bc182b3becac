//! The lab's small LAN: an origin, legitimate clients and attackers, each in its own network
//! namespace with its own address and MAC, joined through a router namespace. Addresses come
//! from the benchmarking range 198.18.0.0/15 (RFC 2544) and the documentation prefix
//! 2001:db8::/32; spoofed sources (198.19.0.0/16, 2001:db8:ff00::/40) are blackholed at the
//! router, so nothing the origin answers them leaves the lab. First-time visitors take fresh
//! addresses from 198.18.64.0/18 in the clients' namespace, routed there by the router. It does
//! not send traffic. Dropping it removes everything.

use std::net::{Ipv4Addr, Ipv6Addr};

use moat::{
    netns::{NetNs, NetNsError, run, unique_iface},
    pins::PinDir,
};

/// The origin's address.
pub const ORIGIN_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The origin's IPv6 address.
pub const ORIGIN_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1);
/// The attackers' own address (what they send from when not spoofing).
pub const ATTACKER_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
/// The attackers' IPv6 address.
pub const ATTACKER_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 2);
/// Spoofed IPv4 sources: never routed anywhere.
pub const SPOOFED_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 0, 0), 16);
/// Spoofed IPv6 sources: never routed anywhere.
pub const SPOOFED_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0xff00, 0, 0, 0, 0, 0), 40);

/// The legitimate users' addresses: 198.18.1.10 and up.
pub fn client_address(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 10 + index)
}

/// First-time visitors' addresses: a prefix outside every other lab range, so the origin (and
/// moat) have never seen any of them before their one request.
pub const NEWCOMERS_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 64, 0), 18);

/// How many first-time visitor addresses the lab can hand out in one run.
pub const MAX_NEWCOMERS: u32 = (1 << (32 - NEWCOMERS_V4.1)) - 2;

/// The `index`th first-time visitor's address (198.18.64.1 and up), or `None` past
/// [`MAX_NEWCOMERS`].
pub fn newcomer_address(index: u32) -> Option<Ipv4Addr> {
    (index < MAX_NEWCOMERS).then(|| Ipv4Addr::from(u32::from(NEWCOMERS_V4.0) + 1 + index))
}

/// One veth link between a host and the router.
#[derive(Debug, Clone)]
pub struct Link {
    /// The host's end.
    pub host_iface: String,
    /// The router's end.
    pub router_iface: String,
    /// The host end's MAC.
    pub host_mac: [u8; 6],
    /// The router end's MAC.
    pub router_mac: [u8; 6],
}

/// The lab's namespaces and links.
#[derive(Debug)]
pub struct LabNet {
    /// Origin ↔ router; moat attaches to `origin_link.host_iface`.
    pub origin_link: Link,
    /// Clients ↔ router.
    pub client_link: Link,
    /// Attackers ↔ router.
    pub attacker_link: Link,
    /// The legitimate clients.
    pub clients: NetNs,
    /// The attackers.
    pub attackers: NetNs,
    /// The router.
    pub router: NetNs,
    /// The origin.
    pub origin: NetNs,
    /// How many client addresses exist.
    pub client_count: u8,
}

fn mac(host: u8, side: u8) -> [u8; 6] {
    [0x02, 0x6d, 0x6f, 0x61, host, side]
}

/// `mac` as `ip` writes it: `02:6d:6f:61:01:01`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

/// Runs the `ip` commands of `batch` (one per line, without `ip`) in `ns` with one `ip -batch`,
/// much faster than one process each for thousands of addresses.
pub fn ip_batch(ns: &NetNs, batch: &str) -> Result<String, NetNsError> {
    let path =
        std::env::temp_dir().join(format!("moat-lab-{}.batch", moat::netns::unique_suffix()));
    std::fs::write(&path, batch).map_err(|source| NetNsError::Spawn {
        command: format!("writing {}", path.display()),
        source,
    })?;
    let ran = run(std::process::Command::new("ip")
        .args(["-n", ns.name(), "-batch"])
        .arg(&path));
    let _ = std::fs::remove_file(&path);
    ran
}

impl LabNet {
    /// Builds the LAN with `client_count` client addresses.
    pub fn create(client_count: u8) -> Result<LabNet, NetNsError> {
        let origin = NetNs::create("moat-lab-origin")?;
        let router = NetNs::create("moat-lab-router")?;
        let clients = NetNs::create("moat-lab-clients")?;
        let attackers = NetNs::create("moat-lab-attack")?;
        // One queue per CPU on every link, as a multi-queue NIC has: a veth end picks the
        // receive queue by the sending CPU, and with a single queue the senders of every CPU
        // would share one ring and one NAPI context, which overflows long before the origin
        // does (measured: over half of a 450k packets/s flood lost at the router's ring).
        let queues = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .to_string();
        let link = |host: &NetNs, prefix: &str, id: u8| -> Result<Link, NetNsError> {
            let link = Link {
                host_iface: unique_iface(prefix),
                router_iface: unique_iface("lr"),
                host_mac: mac(id, 1),
                router_mac: mac(id, 2),
            };
            run(std::process::Command::new("ip").args([
                "link",
                "add",
                &link.host_iface,
                "address",
                &mac_string(link.host_mac),
                "netns",
                host.name(),
                "numtxqueues",
                &queues,
                "numrxqueues",
                &queues,
                "type",
                "veth",
                "peer",
                "name",
                &link.router_iface,
                "address",
                &mac_string(link.router_mac),
                "netns",
                router.name(),
                "numtxqueues",
                &queues,
                "numrxqueues",
                &queues,
            ]))?;
            host.ip(&["link", "set", &link.host_iface, "up"])?;
            router.ip(&["link", "set", &link.router_iface, "up"])?;
            Ok(link)
        };
        let origin_link = link(&origin, "lo", 1)?;
        let client_link = link(&clients, "lc", 2)?;
        let attacker_link = link(&attackers, "la", 3)?;
        let net = LabNet {
            origin_link,
            client_link,
            attacker_link,
            clients,
            attackers,
            router,
            origin,
            client_count,
        };
        net.address()?;
        Ok(net)
    }

    fn address(&self) -> Result<(), NetNsError> {
        let r = &self.router;
        r.sysctl("net.ipv4.ip_forward", "1")?;
        r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        // Spoofed sources arrive from the attackers' side: no reverse-path check on the router.
        r.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        r.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        for (link, v4, v6) in [
            (&self.origin_link, "198.18.0.254/24", "2001:db8:0:1::fe/64"),
            (&self.client_link, "198.18.1.254/24", "2001:db8:0:3::fe/64"),
            (
                &self.attacker_link,
                "198.18.2.254/24",
                "2001:db8:0:2::fe/64",
            ),
        ] {
            r.sysctl(
                &format!("net.ipv4.conf.{}.rp_filter", link.router_iface),
                "0",
            )?;
            r.ip(&["addr", "add", v4, "dev", &link.router_iface])?;
            r.ip(&["-6", "addr", "add", v6, "dev", &link.router_iface, "nodad"])?;
        }
        let (v4, v4_len) = SPOOFED_V4;
        let (v6, v6_len) = SPOOFED_V6;
        r.ip(&["route", "add", "blackhole", &format!("{v4}/{v4_len}")])?;
        // First-time visitors live in the clients' namespace behind its first address, so the
        // router needs one neighbour entry for all of them, not one per visitor.
        let (n, n_len) = NEWCOMERS_V4;
        r.ip(&[
            "route",
            "add",
            &format!("{n}/{n_len}"),
            "via",
            &client_address(0).to_string(),
            "dev",
            &self.client_link.router_iface,
        ])?;
        r.ip(&["-6", "route", "add", "blackhole", &format!("{v6}/{v6_len}")])?;
        // XDP frames (the generator's XDP_TX, the fast path's redirect) are accepted by a veth
        // end with NAPI on, which GRO turns on even without an XDP program.
        run(self.router.command("ethtool").args([
            "-K",
            &self.attacker_link.router_iface,
            "gro",
            "on",
        ]))?;
        run(self.origin.command("ethtool").args([
            "-K",
            &self.origin_link.host_iface,
            "gro",
            "on",
        ]))?;

        let o = &self.origin;
        let oi = &self.origin_link.host_iface;
        o.ip(&["addr", "add", &format!("{ORIGIN_IPV4}/24"), "dev", oi])?;
        o.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ORIGIN_IPV6}/64"),
            "dev",
            oi,
            "nodad",
        ])?;
        o.ip(&["route", "add", "default", "via", "198.18.0.254"])?;
        o.ip(&["-6", "route", "add", "default", "via", "2001:db8:0:1::fe"])?;
        // A SYN flood is a normal day for an origin: answer with cookies, not a full backlog.
        o.sysctl("net.ipv4.tcp_syncookies", "1")?;

        let c = &self.clients;
        let ci = &self.client_link.host_iface;
        for index in 0..self.client_count {
            c.ip(&[
                "addr",
                "add",
                &format!("{}/24", client_address(index)),
                "dev",
                ci,
            ])?;
        }
        c.ip(&["route", "add", "default", "via", "198.18.1.254"])?;

        let a = &self.attackers;
        let ai = &self.attacker_link.host_iface;
        a.ip(&["addr", "add", &format!("{ATTACKER_IPV4}/24"), "dev", ai])?;
        a.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ATTACKER_IPV6}/64"),
            "dev",
            ai,
            "nodad",
        ])?;
        a.ip(&["route", "add", "default", "via", "198.18.2.254"])?;
        a.ip(&["-6", "route", "add", "default", "via", "2001:db8:0:2::fe"])?;
        Ok(())
    }
}

impl LabNet {
    /// Frames the router's end of the origin link could not hand over so far (its transmit
    /// drops: the origin's receive ring was full), from `ip -s` in the router's namespace.
    pub fn ring_drops(&self) -> Result<u64, NetNsError> {
        let text = run(self.router.command("ip").args([
            "-s",
            "-j",
            "link",
            "show",
            "dev",
            &self.origin_link.router_iface,
        ]))?;
        tx_dropped(&text).ok_or_else(|| NetNsError::Failed {
            command: format!("ip -s -j link show dev {}", self.origin_link.router_iface),
            stderr: format!("no stats64.tx.dropped in its output: {}", text.trim()),
        })
    }

    /// Frames the attackers' interface has put on the wire so far, from `ip -s` in the
    /// attackers' namespace: its transmit packets (veth counts there the frames its peer, the
    /// router, took) and its transmit drops (frames the router's full receive ring refused).
    pub fn attack_sent(&self) -> Result<u64, NetNsError> {
        let iface = &self.attacker_link.host_iface;
        Ok(self.counter(&self.attackers, iface, "tx", "packets")?
            + self.counter(&self.attackers, iface, "tx", "dropped")?)
    }

    /// Frames the origin's interface has received so far (with an XDP program attached too:
    /// veth counts every frame its XDP path takes), from `ip -s` in the origin's namespace.
    pub fn origin_received(&self) -> Result<u64, NetNsError> {
        self.counter(&self.origin, &self.origin_link.host_iface, "rx", "packets")
    }

    /// Counter `direction`/`name` of `iface` in `ns`.
    fn counter(
        &self,
        ns: &NetNs,
        iface: &str,
        direction: &str,
        name: &str,
    ) -> Result<u64, NetNsError> {
        let text = run(ns
            .command("ip")
            .args(["-s", "-j", "link", "show", "dev", iface]))?;
        link_stat(&text, direction, name).ok_or_else(|| NetNsError::Failed {
            command: format!("ip -s -j link show dev {iface}"),
            stderr: format!(
                "no stats64.{direction}.{name} in its output: {}",
                text.trim()
            ),
        })
    }

    /// Makes the origin a small one: the kernel-stack work of every frame its interface
    /// passes up (after XDP) is steered by RPS to `cpu`, where the caller also runs nginx and
    /// moat's daemon, as on a one-vCPU server. XDP itself still runs where veth receives, on
    /// the sending CPU (see the README's lab section for what this does and does not model).
    pub fn confine_origin_stack(&self, cpu: usize) -> Result<(), NetNsError> {
        let mask = format!("{:x}", 1u64 << cpu.min(63));
        // /sys shows a namespace's interfaces only when mounted from inside it, which `ip
        // netns exec` does in a mount namespace of its own (the host's mounts are untouched).
        let script = format!(
            "for queue in /sys/class/net/{iface}/queues/rx-*; do echo {mask} > $queue/rps_cpus; done",
            iface = self.origin_link.host_iface
        );
        run(std::process::Command::new("ip").args([
            "netns",
            "exec",
            self.origin.name(),
            "sh",
            "-c",
            &script,
        ]))
        .map(drop)
    }

    /// Gives the clients' namespace the first-time visitor addresses `first..first + count`
    /// (as /32s on its interface, in one `ip -batch`), so each can open connections from its
    /// own address; returns them. Addresses past [`MAX_NEWCOMERS`] are left out.
    pub fn add_newcomers(&self, first: u32, count: u32) -> Result<Vec<Ipv4Addr>, NetNsError> {
        let addresses: Vec<Ipv4Addr> = (first..first.saturating_add(count))
            .map_while(newcomer_address)
            .collect();
        if addresses.is_empty() {
            return Ok(addresses);
        }
        let iface = &self.client_link.host_iface;
        let batch: String = addresses
            .iter()
            .map(|address| format!("addr add {address}/32 dev {iface}\n"))
            .collect();
        ip_batch(&self.clients, &batch).map(|_| addresses)
    }
}

impl Drop for LabNet {
    fn drop(&mut self) {
        // The origin's interface goes with its namespace; so do the counters moat pinned for it.
        if let Err(error) = PinDir::for_iface(&self.origin_link.host_iface).remove_persistent() {
            log::warn!("removing lab counters failed error={error}");
        }
    }
}

/// The lab router's fast path for attack traffic: `moat_forward` attached to the router's
/// interface from the attackers, redirecting every frame to the origin at XDP speed. Without it
/// the router's IP stack, not the origin, would be what a flood overwhelms. Dropping it
/// detaches the program.
pub struct FastPath {
    _ebpf: aya::Ebpf,
}

impl FastPath {
    /// Attaches the fast path in `net`'s router.
    pub fn attach(net: &LabNet) -> anyhow::Result<FastPath> {
        use anyhow::Context as _;
        use aya::programs::{Xdp, XdpMode};
        use filter_common::flood::{FORWARD_CONFIG, FORWARD_PROGRAM, ForwardConfig};

        let mut ebpf =
            aya::Ebpf::load(crate::flood::FLOOD_OBJECT).context("loading the fast path")?;
        let (from, to) = net.router.enter(|| {
            (
                moat::preflight::iface_index(&net.attacker_link.router_iface),
                moat::preflight::iface_index(&net.origin_link.router_iface),
            )
        })?;
        let config = ForwardConfig {
            ifindex: to?,
            src_mac: net.origin_link.router_mac,
            dst_mac: net.origin_link.host_mac,
        };
        let map = ebpf
            .map_mut(FORWARD_CONFIG)
            .context("the fast path's config map")?;
        aya::maps::Array::<_, ForwardConfig>::try_from(map)?.set(0, config, 0)?;
        let program: &mut Xdp = ebpf
            .program_mut(FORWARD_PROGRAM)
            .context("the fast path program")?
            .try_into()?;
        program.load()?;
        let from = from?;
        net.router
            .enter(|| program.attach_to_if_index(from, XdpMode::Driver))?
            .context("attaching the fast path to the router")?;
        Ok(FastPath { _ebpf: ebpf })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_sink_drops_exactly_the_spoofed_prefixes() {
        use filter_common::flood::{SPOOFED_V4_BYTES, SPOOFED_V6_BYTES};
        assert_eq!(SPOOFED_V4.1, 16);
        assert_eq!(SPOOFED_V4.0.octets()[..2], SPOOFED_V4_BYTES);
        assert_eq!(SPOOFED_V6.1, 40);
        assert_eq!(SPOOFED_V6.0.octets()[..5], SPOOFED_V6_BYTES);
    }

    #[test]
    fn newcomer_addresses_stay_inside_their_prefix_and_apart_from_the_others() {
        assert_eq!(newcomer_address(0), Some(Ipv4Addr::new(198, 18, 64, 1)));
        let last = newcomer_address(MAX_NEWCOMERS - 1).expect("the last address exists");
        assert_eq!(last, Ipv4Addr::new(198, 18, 127, 254), "not the broadcast");
        assert_eq!(newcomer_address(MAX_NEWCOMERS), None);
        let (prefix, len) = NEWCOMERS_V4;
        let mask = u32::MAX << (32 - len);
        let inside = |address: Ipv4Addr| u32::from(address) & mask == u32::from(prefix);
        assert!(inside(last));
        for other in [
            ORIGIN_IPV4,
            ATTACKER_IPV4,
            client_address(0),
            client_address(u8::MAX - 10),
            SPOOFED_V4.0,
        ] {
            assert!(!inside(other), "{other} is not a first-time visitor's");
        }
    }
}

/// `stats64.tx.dropped` of the one link in `ip -s -j link show` output.
fn tx_dropped(json: &str) -> Option<u64> {
    link_stat(json, "tx", "dropped")
}

/// One counter (`direction` `rx` or `tx`, `name` e.g. `packets`) of `ip -s -j link show`'s
/// output for one interface.
fn link_stat(json: &str, direction: &str, name: &str) -> Option<u64> {
    let links: serde_json::Value = serde_json::from_str(json).ok()?;
    links
        .get(0)?
        .get("stats64")?
        .get(direction)?
        .get(name)?
        .as_u64()
}

#[cfg(test)]
mod ring_tests {
    use super::{link_stat, tx_dropped};

    #[test]
    fn reads_the_transmit_drops_of_ip_s_json() {
        let json = r#"[{"ifindex":2,"ifname":"lr1","stats64":{"rx":{"bytes":1,"packets":2,"errors":0,"dropped":5},"tx":{"bytes":3,"packets":4,"errors":0,"dropped":62555,"carrier_errors":0}}}]"#;
        assert_eq!(tx_dropped(json), Some(62555));
        assert_eq!(link_stat(json, "rx", "packets"), Some(2));
        assert_eq!(link_stat(json, "tx", "packets"), Some(4));
        assert_eq!(tx_dropped("[]"), None);
    }
}
