//! A userspace reference model of the XDP program's verdict pipeline, the model the differential
//! test (`tests/differential.rs`) checks the kernel against. It runs the same stages in the same
//! order over the same state as the program's maps (lists, bans, TCP flags, fragments, ports,
//! reflection, per-source and aggregate rates, verified sources), wired independently here in plain Rust, but with
//! the very arithmetic the program calls from `filter-common`: [`Buckets::admit`],
//! [`RateState::strike`], [`ban_length_ns`], [`class_of`], [`tcp_flags_valid`], the
//! [`SourceKey`] constructors and [`decide`]. A disagreement between the two is then a wiring
//! bug on one side, not two copies of a formula drifting apart.
//!
//! It is not a filter and not a simulator of the kernel's maps: it takes the parsed [`Packet`]
//! summary (it parses no frames), its maps never evict (the kernel's LRU maps do when full, so
//! a differential test keeps them far from full), it keeps one CPU's aggregate buckets (a test
//! runs the kernel on one CPU), and it samples no drops.

use std::collections::HashMap;

use filter_common::{
    COUNTER_SLOTS, Class, Counter, Fragment, Packet, Reason, Settings, Verdict,
    classify::{class_of, is_syn, tcp_flags_valid},
    counter_index, decide,
    maps::{AGGREGATE_FRAGMENT_SLOT, AGGREGATE_SLOTS},
    packet::{IPPROTO_TCP, IPPROTO_UDP},
    ports::{PORT_COUNT, PORT_REFLECTOR, PORT_TCP_OPEN, PORT_UDP_OPEN},
    rate::{Buckets, Pace, RateState, ban_length_ns},
    settings::{FLAG_ENFORCE_TCP_PORTS, FLAG_ENFORCE_UDP_PORTS, FragmentPolicy},
    source::{BAN_DRY_RUN, Ban, SourceKey, VERIFIED_CLASS, mask_v6},
};

use crate::cidr::Cidr;

/// A set of IPv4 and IPv6 prefixes answering longest-prefix lookups: the model of one pair of
/// LPM tries (`ALLOW_*`, `DENY_*` or `TRUSTED_*`). A plain list, since a model holds a handful.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixSet {
    prefixes: Vec<Cidr>,
}

impl PrefixSet {
    /// An empty set.
    pub fn new() -> PrefixSet {
        PrefixSet::default()
    }

    /// Adds `cidr`; adding a prefix already present changes nothing, as in a trie.
    pub fn insert(&mut self, cidr: Cidr) {
        if !self.prefixes.contains(&cidr) {
            self.prefixes.push(cidr);
        }
    }

    /// The longest prefix holding the address `addr_be` of IP version `ip_version` (IPv4 in the
    /// first four bytes, as in [`Packet::src_addr_be`]), if any.
    pub fn longest_match(&self, ip_version: u8, addr_be: &[u8; 16]) -> Option<Cidr> {
        self.prefixes
            .iter()
            .filter(|cidr| covers(cidr, ip_version, addr_be))
            .max_by_key(|cidr| prefix_len(cidr))
            .copied()
    }

    /// Whether some prefix holds the address: all the program asks of its tries, since every
    /// entry's value is the same.
    pub fn contains(&self, ip_version: u8, addr_be: &[u8; 16]) -> bool {
        self.longest_match(ip_version, addr_be).is_some()
    }
}

fn prefix_len(cidr: &Cidr) -> u32 {
    match cidr {
        Cidr::V4 { prefix, .. } | Cidr::V6 { prefix, .. } => *prefix,
    }
}

/// Whether `cidr` holds the address. IPv4 is compared as the first four of sixteen bytes, the
/// rest zero, so one masking function serves both families.
fn covers(cidr: &Cidr, ip_version: u8, addr_be: &[u8; 16]) -> bool {
    let (mut network, prefix) = match (cidr, ip_version) {
        (Cidr::V4 { addr, prefix }, 4) => {
            let mut network = [0u8; 16];
            network[..4].copy_from_slice(addr);
            (network, *prefix)
        }
        (Cidr::V6 { addr, prefix }, 6) => (*addr, *prefix),
        _ => return false,
    };
    let mut addr = *addr_be;
    if ip_version == 4 {
        addr[4..].fill(0);
    }
    mask_v6(&mut network, prefix);
    mask_v6(&mut addr, prefix);
    network == addr
}

/// The reference model: the program's map state and the pipeline over it.
///
/// Fields are public so a test can set up state the way it writes the kernel's maps, and compare
/// the two afterwards.
#[derive(Clone, Debug)]
pub struct Model {
    /// The running settings, as in `SETTINGS`; the fixed clock lives here too.
    pub settings: Settings,
    /// The clock used when [`Settings::flags`] lacks `FLAG_FIXED_CLOCK`, standing in for
    /// `bpf_ktime_get_ns`, in ns.
    pub kernel_now_ns: u64,
    /// Allowed source prefixes (`ALLOW_V4`, `ALLOW_V6`).
    pub allow: PrefixSet,
    /// Denied source prefixes (`DENY_V4`, `DENY_V6`).
    pub deny: PrefixSet,
    /// Trusted upstream prefixes (`TRUSTED_V4`, `TRUSTED_V6`).
    pub trusted: PrefixSet,
    /// One flag byte per port (`PORTS`), [`PORT_COUNT`] long; a missing entry reads as 0, as a
    /// failed array lookup does in the program.
    pub ports: Vec<u8>,
    /// Bans, in force or expired, by [`SourceKey::for_ban`] (`BANS`).
    pub bans: HashMap<SourceKey, Ban>,
    /// Per-source rate state by [`SourceKey::for_class`] (`SOURCES`).
    pub sources: HashMap<SourceKey, RateState>,
    /// Sources that completed a TCP handshake, by `SourceKey::new(packet, VERIFIED_CLASS,
    /// v6_source_prefix)`, to the time until which they count as verified, in ns (`VERIFIED`,
    /// written by the daemon, only read by the program). Their SYNs skip the aggregate SYN
    /// limit.
    pub verified: HashMap<SourceKey, u64>,
    /// One CPU's aggregate buckets: one per class, then fragments (`AGGREGATE`). They start all
    /// zero, as the map does, so they fill only as the clock runs from 0.
    pub aggregate: [Buckets; AGGREGATE_SLOTS as usize],
    /// Packets and bytes per [`counter_index`] (`COUNTERS`, summed over CPUs).
    pub counters: [Counter; COUNTER_SLOTS as usize],
    /// Automatic bans issued, by the reason that earned them (`BAN_EVENTS`, summed over CPUs).
    pub ban_events: [u64; Reason::COUNT],
}

impl Model {
    /// A model with `settings` and every map as the program's object creates it: empty lists
    /// and tables, all ports closed, zero buckets and counters.
    pub fn new(settings: Settings) -> Model {
        Model {
            settings,
            kernel_now_ns: 0,
            allow: PrefixSet::new(),
            deny: PrefixSet::new(),
            trusted: PrefixSet::new(),
            ports: vec![0; PORT_COUNT as usize],
            bans: HashMap::new(),
            sources: HashMap::new(),
            verified: HashMap::new(),
            aggregate: [Buckets::default(); AGGREGATE_SLOTS as usize],
            counters: [Counter::default(); COUNTER_SLOTS as usize],
            ban_events: [0; Reason::COUNT],
        }
    }

    /// Sets `port`'s flag byte (`PORT_*` bits).
    pub fn set_port(&mut self, port: u16, flags: u8) {
        if let Some(slot) = self.ports.get_mut(usize::from(port)) {
            *slot = flags;
        }
    }

    /// Judges one parsed packet at the settings' clock, updating every table the program would,
    /// counts it, and returns its verdict and reason.
    pub fn judge(&mut self, packet: &Packet) -> (Verdict, Reason) {
        let now_ns = self.settings.now_ns(self.kernel_now_ns);
        let reason = self.stages(packet, now_ns);
        (self.count(reason, packet.frame_len), reason)
    }

    /// Counts a frame of `frame_len` bytes under `reason`, as the program does for every frame,
    /// parsed or not (use it directly for frames the parser stops: `Malformed`, `NonIp`), and
    /// returns its verdict.
    pub fn count(&mut self, reason: Reason, frame_len: u32) -> Verdict {
        let verdict = decide(reason, self.settings.dry_run());
        if let Some(counter) = self
            .counters
            .get_mut(counter_index(verdict, reason) as usize)
        {
            *counter = counter.add(Counter {
                packets: 1,
                bytes: u64::from(frame_len),
            });
        }
        verdict
    }

    /// The counter of `(verdict, reason)`.
    pub fn counter(&self, verdict: Verdict, reason: Reason) -> Counter {
        self.counters
            .get(counter_index(verdict, reason) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// The stages in the program's order; the first that decides wins.
    fn stages(&mut self, packet: &Packet, now_ns: u64) -> Reason {
        if let Some(reason) = self.listed(packet) {
            return reason;
        }
        if self.banned(packet, now_ns) {
            return Reason::Banned;
        }
        if packet.has_l4() && packet.l4_proto == IPPROTO_TCP && !tcp_flags_valid(packet.tcp_flags) {
            return Reason::TcpFlags;
        }
        if self.fragment_refused(packet, now_ns) {
            return Reason::Fragment;
        }
        if self.port_closed(packet) {
            return Reason::PortClosed;
        }
        if self.reflected(packet) {
            return Reason::Reflection;
        }
        if let Some(reason) = self.unverified_syn(packet, now_ns) {
            return reason;
        }
        if let Some(reason) = self.over_rate(packet, now_ns) {
            return reason;
        }
        if packet.has_l4() || packet.fragment == Fragment::Later {
            Reason::Pass
        } else {
            Reason::OtherL4
        }
    }

    /// Allowlist first, then denylist.
    fn listed(&self, packet: &Packet) -> Option<Reason> {
        if self.allow.contains(packet.ip_version, &packet.src_addr_be) {
            Some(Reason::Allowlist)
        } else if self.deny.contains(packet.ip_version, &packet.src_addr_be) {
            Some(Reason::Denylist)
        } else {
            None
        }
    }

    fn banned(&self, packet: &Packet, now_ns: u64) -> bool {
        let key = SourceKey::for_ban(packet, self.settings.v6_source_prefix);
        self.bans
            .get(&key)
            .is_some_and(|ban| ban.enforced(now_ns, self.settings.dry_run()))
    }

    fn fragment_refused(&mut self, packet: &Packet, now_ns: u64) -> bool {
        if packet.fragment == Fragment::None {
            return false;
        }
        match self.settings.fragment_policy() {
            FragmentPolicy::Pass => false,
            FragmentPolicy::Drop => true,
            FragmentPolicy::RateLimit => {
                let pace = Pace::of(&self.settings.fragments);
                match self.aggregate.get_mut(AGGREGATE_FRAGMENT_SLOT as usize) {
                    Some(buckets) => !buckets.admit(&pace, now_ns, u64::from(packet.frame_len)),
                    None => false,
                }
            }
        }
    }

    fn port_flags(&self, port: u16) -> u8 {
        self.ports.get(usize::from(port)).copied().unwrap_or(0)
    }

    /// A TCP SYN or UDP datagram to a port not open for it, when that protocol is enforced.
    fn port_closed(&self, packet: &Packet) -> bool {
        if !packet.has_l4() {
            return false;
        }
        let flags = self.settings.flags;
        let open_flag = match packet.l4_proto {
            IPPROTO_TCP if flags & FLAG_ENFORCE_TCP_PORTS != 0 && is_syn(packet.tcp_flags) => {
                PORT_TCP_OPEN
            }
            IPPROTO_UDP if flags & FLAG_ENFORCE_UDP_PORTS != 0 => PORT_UDP_OPEN,
            _ => return false,
        };
        self.port_flags(packet.dst_port) & open_flag == 0
    }

    /// UDP from a reflector source port and an untrusted source.
    fn reflected(&self, packet: &Packet) -> bool {
        packet.has_l4()
            && packet.l4_proto == IPPROTO_UDP
            && self.port_flags(packet.src_port) & PORT_REFLECTOR != 0
            && !self
                .trusted
                .contains(packet.ip_version, &packet.src_addr_be)
    }

    /// Whether the packet's source counts as verified at `now_ns`.
    fn verified(&self, packet: &Packet, now_ns: u64) -> bool {
        let key = SourceKey::new(packet, VERIFIED_CLASS, self.settings.v6_source_prefix);
        self.verified
            .get(&key)
            .is_some_and(|until_ns| now_ns < *until_ns)
    }

    /// A SYN from a source that is not verified: never per-source state, only the aggregate SYN
    /// bucket. The model has no sockets, so it stands for a program with SYN cookies off and
    /// without `FLAG_TCP_SOCKETS`/`FLAG_UDP_SOCKETS` (the differential test keeps them so).
    fn unverified_syn(&mut self, packet: &Packet, now_ns: u64) -> Option<Reason> {
        if !packet.has_l4()
            || packet.l4_proto != IPPROTO_TCP
            || !is_syn(packet.tcp_flags)
            || self.verified(packet, now_ns)
        {
            return None;
        }
        let pace = Pace::of(&self.settings.aggregate[Class::Syn as usize]);
        if !pace.is_limited() {
            return Some(Reason::Pass);
        }
        let buckets = self.aggregate.get_mut(Class::Syn as usize)?;
        if buckets.admit(&pace, now_ns, u64::from(packet.frame_len)) {
            Some(Reason::Pass)
        } else {
            Some(Reason::FloodSyn)
        }
    }

    /// Per-source limits (with strikes and bans), then the aggregate limit of the class; SYNs
    /// get here only from verified sources, which skip the aggregate SYN limit.
    fn over_rate(&mut self, packet: &Packet, now_ns: u64) -> Option<Reason> {
        let class = class_of(packet)?;
        let len = u64::from(packet.frame_len);
        let settings = self.settings;
        let source_pace = Pace::of(&settings.source[class as usize]);
        if source_pace.is_limited() {
            let key = SourceKey::for_class(packet, class, settings.v6_source_prefix);
            match self.sources.get_mut(&key) {
                Some(state) => {
                    if !state.buckets.admit(&source_pace, now_ns, len) {
                        let earned = state.strike(
                            now_ns,
                            settings.strike_window_ns,
                            settings.ban_after_strikes,
                        );
                        if earned {
                            self.ban(packet, now_ns, class.source_reason());
                        }
                        return Some(class.source_reason());
                    }
                }
                None => {
                    let mut state = RateState::new(now_ns);
                    let admitted = state.buckets.admit(&source_pace, now_ns, len);
                    self.sources.insert(key, state);
                    if !admitted {
                        return Some(class.source_reason());
                    }
                }
            }
        }
        let aggregate_pace = Pace::of(&settings.aggregate[class as usize]);
        if aggregate_pace.is_limited() && class != Class::Syn {
            let buckets = self.aggregate.get_mut(class as usize)?;
            if !buckets.admit(&aggregate_pace, now_ns, len) {
                return Some(class.flood_reason());
            }
        }
        None
    }

    /// Bans the packet's source for `reason`, longer for each earlier offence, expired or not.
    fn ban(&mut self, packet: &Packet, now_ns: u64, reason: Reason) {
        let settings = &self.settings;
        let key = SourceKey::for_ban(packet, settings.v6_source_prefix);
        let dry_run = settings.dry_run();
        // Offences earned in a dry run do not lengthen an enforced ban.
        let offences = self
            .bans
            .get(&key)
            .filter(|old| dry_run || old.flags & BAN_DRY_RUN == 0)
            .map_or(0, |old| old.offences);
        let until_ns = now_ns.saturating_add(ban_length_ns(
            settings.ban_base_ns,
            settings.ban_max_ns,
            offences,
        ));
        let ban = Ban {
            until_ns,
            offences: offences.saturating_add(1),
            reason: reason as u16,
            flags: if dry_run { BAN_DRY_RUN } else { 0 },
        };
        self.bans.insert(key, ban);
        if let Some(count) = self.ban_events.get_mut(reason as usize) {
            *count = count.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use filter_common::{
        classify::tcp_flags::{ACK, SYN},
        rate::Limit,
        settings::{FLAG_DRY_RUN, FLAG_FIXED_CLOCK},
    };

    /// One second, in ns.
    const NANO_UNITS: u64 = 1_000_000_000;

    use super::*;

    fn syn_from(addr: [u8; 4]) -> Packet {
        let mut packet = Packet::new(4, 74);
        packet.src_addr_be[..4].copy_from_slice(&addr);
        packet.l4_proto = IPPROTO_TCP;
        packet.l4_parsed = 1;
        packet.tcp_flags = SYN;
        packet.dst_port = 443;
        packet
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("test CIDRs are valid")
    }

    #[test]
    fn prefix_set_finds_the_longest_match_in_the_right_family() {
        let mut set = PrefixSet::new();
        set.insert(cidr("10.0.0.0/8"));
        set.insert(cidr("10.1.0.0/16"));
        set.insert(cidr("2001:db8::/32"));
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(set.longest_match(4, &addr), Some(cidr("10.1.0.0/16")));
        addr[1] = 2;
        assert_eq!(set.longest_match(4, &addr), Some(cidr("10.0.0.0/8")));
        assert!(
            !set.contains(6, &addr),
            "10.2.2.3's bytes as IPv6 are not in 2001:db8::/32"
        );
        let v6: std::net::Ipv6Addr = "2001:db8::1".parse().expect("literal");
        assert!(set.contains(6, &v6.octets()));
    }

    #[test]
    fn unverified_syns_never_create_per_source_state() {
        let mut settings = Settings {
            flags: FLAG_FIXED_CLOCK,
            ..Settings::default()
        };
        settings.source[0] = Limit {
            pps: 1,
            burst_packets: 1,
            ..Limit::default()
        };
        let mut model = Model::new(settings);
        let packet = syn_from([192, 0, 2, 1]);
        for _ in 0..3 {
            assert_eq!(model.judge(&packet), (Verdict::Pass, Reason::Pass));
        }
        assert!(model.sources.is_empty(), "a spoofable SYN left state");
    }

    #[test]
    fn syn_flood_from_one_verified_source_is_limited_then_banned_until_expiry() {
        let mut settings = Settings {
            flags: FLAG_FIXED_CLOCK,
            ban_base_ns: 1_000,
            ban_max_ns: 10_000,
            strike_window_ns: 1_000,
            ban_after_strikes: 2,
            ..Settings::default()
        };
        settings.source[0] = Limit {
            pps: 1,
            burst_packets: 1,
            ..Limit::default()
        };
        let mut model = Model::new(settings);
        let packet = syn_from([192, 0, 2, 1]);
        let key = SourceKey::new(&packet, VERIFIED_CLASS, settings.v6_source_prefix);
        model.verified.insert(key, u64::MAX);
        assert_eq!(model.judge(&packet), (Verdict::Pass, Reason::Pass));
        assert_eq!(model.judge(&packet), (Verdict::Drop, Reason::RateSyn));
        assert_eq!(model.judge(&packet), (Verdict::Drop, Reason::RateSyn));
        assert_eq!(model.ban_events[Reason::RateSyn as usize], 1);
        assert_eq!(model.judge(&packet), (Verdict::Drop, Reason::Banned));
        model.settings.clock_ns = 1_000;
        assert_eq!(
            model.judge(&packet),
            (Verdict::Drop, Reason::RateSyn),
            "ban over"
        );
        assert_eq!(model.counter(Verdict::Drop, Reason::RateSyn).packets, 3);
        assert_eq!(model.counter(Verdict::Drop, Reason::Banned).bytes, 74);
    }

    #[test]
    fn verified_sources_skip_the_aggregate_syn_limit_until_it_ends() {
        let mut settings = Settings {
            flags: FLAG_FIXED_CLOCK,
            ..Settings::default()
        };
        settings.aggregate[Class::Syn as usize] = Limit {
            pps: 1,
            burst_packets: 1,
            ..Limit::default()
        };
        let mut model = Model::new(settings);
        let visitor = syn_from([192, 0, 2, 1]);
        let key = SourceKey::new(&visitor, VERIFIED_CLASS, 64);
        model.verified.insert(key, NANO_UNITS + NANO_UNITS / 2);
        model.settings.clock_ns = NANO_UNITS;
        let stranger = syn_from([192, 0, 2, 2]);
        assert_eq!(model.judge(&stranger), (Verdict::Pass, Reason::Pass));
        assert_eq!(model.judge(&stranger), (Verdict::Drop, Reason::FloodSyn));
        assert_eq!(
            model.judge(&visitor),
            (Verdict::Pass, Reason::Pass),
            "verified"
        );
        model.settings.clock_ns = NANO_UNITS + NANO_UNITS / 2;
        assert_eq!(
            model.judge(&visitor),
            (Verdict::Drop, Reason::FloodSyn),
            "verification over"
        );
    }

    #[test]
    fn lists_ports_and_dry_run() {
        let mut model = Model::new(Settings {
            flags: FLAG_ENFORCE_TCP_PORTS | FLAG_DRY_RUN,
            ..Settings::default()
        });
        model.deny.insert(cidr("192.0.2.0/24"));
        model.allow.insert(cidr("192.0.2.7/32"));
        assert_eq!(
            model.judge(&syn_from([192, 0, 2, 7])),
            (Verdict::Pass, Reason::Allowlist)
        );
        assert_eq!(
            model.judge(&syn_from([192, 0, 2, 8])),
            (Verdict::WouldDrop, Reason::Denylist)
        );
        let mut packet = syn_from([198, 51, 100, 1]);
        assert_eq!(
            model.judge(&packet),
            (Verdict::WouldDrop, Reason::PortClosed)
        );
        model.set_port(443, PORT_TCP_OPEN);
        assert_eq!(model.judge(&packet), (Verdict::Pass, Reason::Pass));
        packet.tcp_flags = ACK;
        packet.dst_port = 8080;
        assert_eq!(
            model.judge(&packet),
            (Verdict::Pass, Reason::Pass),
            "replies reach any port"
        );
    }
}
