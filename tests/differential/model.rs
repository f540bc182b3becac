//! The differential test's reference model: moat's verdict pipeline written from README.md's
//! Policy section, with arithmetic of its own. It shares no logic with the program: not
//! `filter-common`'s buckets (a GCRA over 64-bit tick words there, plain token counts here),
//! its strike and ban schedule, its source keys and IPv6 masks, its classification or its
//! verdicts. A bug in any of them shows up as a disagreement. What it shares are data types
//! (the parsed [`Packet`], [`Settings`], [`Reason`], [`Verdict`]), since it must read the same
//! inputs and name the same outcomes.
//!
//! The README's rules it implements:
//! - token buckets of `burst` tokens refilled continuously at the rate, one per packet (and one
//!   per byte for a byte limit), starting full; a packet either bucket cannot pay for takes
//!   nothing. Tokens are kept exactly, scaled by 10^9, so refills after any whole number of ns
//!   are exact.
//! - a source's strike window opens when it is first seen; a strike more than
//!   `bans.strike_window` after its window opened opens a new window at that strike; the
//!   `bans.after_strikes`-th strike in a window bans the source and opens a new window.
//! - a ban lasts `bans.base`, doubled for each earlier ban of the source (expired or not),
//!   capped at `bans.max`. In a dry run, bans are recorded as dry-run bans: they count only
//!   while dry run is on, and an enforced ban's offence count ignores them.
//! - IPv6 sources are keyed by their first `bans.ipv6_prefix` bits, IPv4 ones by the address.
//! - ICMP the network needs is never rate-limited nor banned; echo replies have no per-source
//!   limit; over a UDP, ICMP or other limit, a verified source strikes no strike (no ban).
//! - a ban earned over a UDP, ICMP or other limit drops the source's UDP, ICMP and other
//!   traffic but not its TCP, and leaves its verification alone; a SYN ban drops everything.
//!
//! It is not a filter and not a simulator of the kernel's maps: it takes the parsed packet (it
//! parses no frames), reads the fixed clock of [`Settings::clock_ns`], never evicts (a
//! differential test keeps the kernel's LRU maps far from full), has no sockets (SYN cookies
//! and socket checks off), and samples no drops.

use std::{collections::HashMap, net::IpAddr};

use filter_common::{
    Class, Counter, Fragment, Packet, Reason, Settings, Verdict, counter_index, rate::Limit,
    settings::FragmentPolicy,
};
use moat::cidr::Cidr;

/// One token, scaled: bucket levels are tokens × 10^9, so a refill of `ns × rate` is exact.
const TOKEN: u128 = 1_000_000_000;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;

/// Bits of the port flags (`PORTS`), as the README's `[ports]` and `[reflection]` describe.
pub mod port {
    /// New TCP connections may reach the port.
    pub const TCP_OPEN: u8 = 1;
    /// UDP may reach the port.
    pub const UDP_OPEN: u8 = 2;
    /// UDP from this source port is reflection unless its source is trusted.
    pub const REFLECTOR: u8 = 4;
}

/// An address masked as moat keys sources: IPv4 whole, IPv6 to `prefix` bits.
fn masked(ip_version: u8, addr_be: &[u8; 16], prefix: u32) -> u128 {
    let addr = u128::from_be_bytes(*addr_be);
    match ip_version {
        4 => addr & (u128::from(u32::MAX) << 96),
        _ => high_bits(addr, prefix),
    }
}

/// The first `bits` bits of `value`, the rest zero.
fn high_bits(value: u128, bits: u32) -> u128 {
    match bits {
        0 => 0,
        1..=127 => value & (u128::MAX << (128 - bits)),
        _ => value,
    }
}

/// Which table a [`Key`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Rate state of one class.
    Class(u8),
    /// A ban (every class).
    Ban,
    /// A verified source.
    Verified,
}

/// A source as moat keys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// 4 or 6.
    pub ip_version: u8,
    /// The address, big-endian in 128 bits (IPv4 in the top 32), masked.
    pub addr: u128,
    /// The table.
    pub scope: Scope,
}

impl Key {
    fn of(packet: &Packet, scope: Scope, v6_prefix: u32) -> Key {
        Key {
            ip_version: packet.ip_version,
            addr: masked(packet.ip_version, &packet.src_addr_be, v6_prefix),
            scope,
        }
    }

    /// The key of address `addr` in `scope`.
    pub fn of_addr(addr: IpAddr, scope: Scope, v6_prefix: u32) -> Key {
        let (ip_version, bytes) = match addr {
            IpAddr::V4(v4) => {
                let mut bytes = [0u8; 16];
                bytes[..4].copy_from_slice(&v4.octets());
                (4, bytes)
            }
            IpAddr::V6(v6) => (6, v6.octets()),
        };
        Key {
            ip_version,
            addr: masked(ip_version, &bytes, v6_prefix),
            scope,
        }
    }
}

/// A set of prefixes answering "does one hold this address?" by checking each.
#[derive(Clone, Debug, Default)]
pub struct PrefixSet {
    prefixes: Vec<Cidr>,
}

impl PrefixSet {
    /// Adds `cidr`.
    pub fn insert(&mut self, cidr: Cidr) {
        self.prefixes.push(cidr);
    }

    /// Whether some prefix holds the packet's source.
    pub fn holds(&self, packet: &Packet) -> bool {
        let addr = u128::from_be_bytes(packet.src_addr_be);
        self.prefixes.iter().any(|cidr| match *cidr {
            Cidr::V4 { addr: net, prefix } if packet.ip_version == 4 => {
                let net = u128::from(u32::from_be_bytes(net)) << 96;
                high_bits(addr, prefix) == high_bits(net, prefix)
            }
            Cidr::V6 { addr: net, prefix } if packet.ip_version == 6 => {
                high_bits(addr, prefix) == high_bits(u128::from_be_bytes(net), prefix)
            }
            _ => false,
        })
    }
}

/// One token bucket: its level (tokens × [`TOKEN`]) when last brought up to date, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens × [`TOKEN`] at `at_ns`.
    pub level: u128,
    /// When `level` was last refilled, in ns.
    pub at_ns: u64,
}

impl Bucket {
    /// A bucket holding `burst` tokens at `now_ns`.
    fn full(burst: u64, now_ns: u64) -> Bucket {
        Bucket {
            level: u128::from(burst) * TOKEN,
            at_ns: now_ns,
        }
    }

    /// The level at `now_ns`: refilled at `rate` per second since `at_ns`, up to `burst`.
    pub fn level_at(&self, rate: u64, burst: u64, now_ns: u64) -> u128 {
        let refill = u128::from(now_ns.saturating_sub(self.at_ns)) * u128::from(rate);
        (self.level + refill).min(u128::from(burst) * TOKEN)
    }
}

/// A packet bucket and a byte bucket under one [`Limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buckets {
    /// Packets.
    pub packets: Bucket,
    /// Bytes.
    pub bytes: Bucket,
}

impl Buckets {
    fn full(limit: &Limit, now_ns: u64) -> Buckets {
        Buckets {
            packets: Bucket::full(limit.burst_packets, now_ns),
            bytes: Bucket::full(limit.burst_bytes, now_ns),
        }
    }

    /// Takes one packet of `len` bytes if both limited buckets can pay; a rate of 0 leaves
    /// that bucket out.
    fn admit(&mut self, limit: &Limit, now_ns: u64, len: u64) -> bool {
        let packets = self
            .packets
            .level_at(limit.pps, limit.burst_packets, now_ns);
        let bytes = self.bytes.level_at(limit.bps, limit.burst_bytes, now_ns);
        let byte_cost = u128::from(len) * TOKEN;
        if (limit.pps != 0 && packets < TOKEN) || (limit.bps != 0 && bytes < byte_cost) {
            return false;
        }
        if limit.pps != 0 {
            self.packets = Bucket {
                level: packets - TOKEN,
                at_ns: now_ns,
            };
        }
        if limit.bps != 0 {
            self.bytes = Bucket {
                level: bytes - byte_cost,
                at_ns: now_ns,
            };
        }
        true
    }
}

/// What moat keeps per source and class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceState {
    /// The source's buckets.
    pub buckets: Buckets,
    /// Strikes in the current window.
    pub strikes: u64,
    /// When the current window opened, in ns.
    pub window_start_ns: u64,
}

/// A ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    /// When it ends, in ns.
    pub until_ns: u64,
    /// Automatic bans the source has earned.
    pub offences: u32,
    /// Why the last one was earned.
    pub reason: Reason,
    /// Recorded during a dry run.
    pub dry_run: bool,
}

impl Ban {
    /// Whether the ban drops TCP: only a SYN ban does; one for UDP, ICMP or other traffic
    /// (which anyone can send in a visitor's name) leaves the source's TCP alone.
    pub fn covers_tcp(&self) -> bool {
        self.reason == Reason::RateSyn
    }
}

/// The model: every table the program keeps, and the pipeline over them.
#[derive(Clone, Debug)]
pub struct Model {
    /// The settings; the clock is [`Settings::clock_ns`].
    pub settings: Settings,
    /// The allowlist.
    pub allow: PrefixSet,
    /// The denylist.
    pub deny: PrefixSet,
    /// Trusted upstreams.
    pub trusted: PrefixSet,
    /// [`port`] bits by port; a port not here has none.
    pub ports: HashMap<u16, u8>,
    /// Bans, in force or expired.
    pub bans: HashMap<Key, Ban>,
    /// Per-source state.
    pub sources: HashMap<Key, SourceState>,
    /// Verified sources, to when their verification ends, in ns.
    pub verified: HashMap<Key, u64>,
    /// Verified sources' own SYN buckets, kept with their verification (the program keeps
    /// them in the source's way of the verified-source cache), from their first SYN on.
    pub verified_syn: HashMap<Key, Buckets>,
    /// The host's buckets: one per class, by [`Class`] discriminant, then fragments. Full at
    /// time 0.
    pub aggregate: Vec<Buckets>,
    /// Packets and bytes by `(verdict, reason)`.
    pub counters: HashMap<(Verdict, Reason), Counter>,
    /// Automatic bans issued, by reason.
    pub ban_events: HashMap<Reason, u64>,
}

impl Model {
    /// A model under `settings` with empty tables.
    pub fn new(settings: Settings) -> Model {
        let mut aggregate: Vec<Buckets> = settings
            .aggregate
            .iter()
            .map(|limit| Buckets::full(limit, 0))
            .collect();
        aggregate.push(Buckets::full(&settings.fragments, 0));
        Model {
            settings,
            allow: PrefixSet::default(),
            deny: PrefixSet::default(),
            trusted: PrefixSet::default(),
            ports: HashMap::new(),
            bans: HashMap::new(),
            sources: HashMap::new(),
            verified: HashMap::new(),
            verified_syn: HashMap::new(),
            aggregate,
            counters: HashMap::new(),
            ban_events: HashMap::new(),
        }
    }

    fn dry_run(&self) -> bool {
        self.settings.flags & filter_common::settings::FLAG_DRY_RUN != 0
    }

    fn now_ns(&self) -> u64 {
        self.settings.clock_ns
    }

    /// Marks `addr` verified until `until_ns`.
    pub fn verify(&mut self, addr: IpAddr, until_ns: u64) {
        let key = Key::of_addr(addr, Scope::Verified, self.settings.v6_source_prefix);
        self.verified.insert(key, until_ns);
    }

    /// The ban entry of the packet's source, if any.
    pub fn ban_of(&self, packet: &Packet) -> Option<Ban> {
        let key = Key::of(packet, Scope::Ban, self.settings.v6_source_prefix);
        self.bans.get(&key).copied()
    }

    /// Whether the packet's source is verified now.
    pub fn is_verified(&self, packet: &Packet) -> bool {
        let key = Key::of(packet, Scope::Verified, self.settings.v6_source_prefix);
        self.verified
            .get(&key)
            .is_some_and(|until_ns| self.now_ns() < *until_ns)
    }

    /// Whether the host's SYN bucket would refuse the packet now (it is not changed).
    pub fn syn_bucket_refuses(&self, packet: &Packet) -> bool {
        let limit = self.settings.aggregate[Class::Syn as usize];
        let mut bucket = self.aggregate[Class::Syn as usize];
        limited(&limit) && !bucket.admit(&limit, self.now_ns(), u64::from(packet.frame_len))
    }

    /// Whether the source's bucket of `class` would refuse the packet now (it is not changed;
    /// a source with no state has a full bucket).
    pub fn source_bucket_refuses(&self, packet: &Packet, class: Class) -> bool {
        let limit = self.settings.source[class as usize];
        if !limited(&limit) {
            return false;
        }
        let now_ns = self.now_ns();
        let mut buckets = if class == Class::Syn {
            let key = Key::of(packet, Scope::Verified, self.settings.v6_source_prefix);
            self.verified_syn.get(&key).copied()
        } else {
            let key = Key::of(
                packet,
                Scope::Class(class as u8),
                self.settings.v6_source_prefix,
            );
            self.sources.get(&key).map(|state| state.buckets)
        }
        .unwrap_or_else(|| Buckets::full(&limit, now_ns));
        !buckets.admit(&limit, now_ns, u64::from(packet.frame_len))
    }

    /// Whether a verified source's SYN fits its own SYN buckets, taking it if so; nothing is
    /// struck past them (anyone can send SYNs in its name).
    fn verified_syn_admits(&mut self, packet: &Packet) -> bool {
        let limit = self.settings.source[Class::Syn as usize];
        if !limited(&limit) {
            return true;
        }
        let now_ns = self.now_ns();
        let key = Key::of(packet, Scope::Verified, self.settings.v6_source_prefix);
        self.verified_syn
            .entry(key)
            .or_insert_with(|| Buckets::full(&limit, now_ns))
            .admit(&limit, now_ns, u64::from(packet.frame_len))
    }

    /// Judges one parsed packet now, updates the tables, counts it, and returns its verdict
    /// and reason.
    pub fn judge(&mut self, packet: &Packet) -> (Verdict, Reason) {
        let reason = self.stages(packet);
        (self.count(reason, packet.frame_len), reason)
    }

    /// Counts a frame of `frame_len` bytes under `reason` and returns its verdict (directly
    /// for frames that are not IP).
    pub fn count(&mut self, reason: Reason, frame_len: u32) -> Verdict {
        let passes = matches!(
            reason,
            Reason::Pass | Reason::NonIp | Reason::OtherL4 | Reason::Allowlist
        );
        let verdict = match (passes, self.dry_run()) {
            (true, _) => Verdict::Pass,
            (false, true) => Verdict::WouldDrop,
            (false, false) => Verdict::Drop,
        };
        let counter = self.counters.entry((verdict, reason)).or_default();
        counter.packets += 1;
        counter.bytes += u64::from(frame_len);
        verdict
    }

    /// The counters laid out as the program's `COUNTERS` map.
    pub fn counter_slots(&self, slots: usize) -> Vec<Counter> {
        let mut out = vec![Counter::default(); slots];
        for (&(verdict, reason), counter) in &self.counters {
            out[counter_index(verdict, reason) as usize] = *counter;
        }
        out
    }

    /// The ban events laid out as the program's `BAN_EVENTS` map.
    pub fn ban_event_slots(&self) -> Vec<u64> {
        Reason::ALL
            .iter()
            .map(|reason| self.ban_events.get(reason).copied().unwrap_or(0))
            .collect()
    }

    /// The README's stages in order; the first that decides wins.
    fn stages(&mut self, packet: &Packet) -> Reason {
        let l4 = packet.l4_parsed != 0;
        let tcp = l4 && packet.l4_proto == IPPROTO_TCP;
        let udp = l4 && packet.l4_proto == IPPROTO_UDP;
        let syn = tcp && packet.tcp_flags & (SYN | ACK) == SYN;
        if self.allow.holds(packet) {
            return Reason::Allowlist;
        }
        if self.deny.holds(packet) {
            return Reason::Denylist;
        }
        if tcp && !flags_possible(packet.tcp_flags) {
            return Reason::TcpFlags;
        }
        let flags = self.settings.flags;
        let port_flags = |port: u16| self.ports.get(&port).copied().unwrap_or(0);
        let tcp_enforced = flags & filter_common::settings::FLAG_ENFORCE_TCP_PORTS != 0;
        let udp_enforced = flags & filter_common::settings::FLAG_ENFORCE_UDP_PORTS != 0;
        if (syn && tcp_enforced && port_flags(packet.dst_port) & port::TCP_OPEN == 0)
            || (udp && udp_enforced && port_flags(packet.dst_port) & port::UDP_OPEN == 0)
        {
            return Reason::PortClosed;
        }
        if udp && port_flags(packet.src_port) & port::REFLECTOR != 0 && !self.trusted.holds(packet)
        {
            return Reason::Reflection;
        }
        if !essential_icmp(packet) && self.banned(packet) {
            return Reason::Banned;
        }
        if packet.fragment != Fragment::None && self.fragment_refused(packet) {
            return Reason::Fragment;
        }
        if syn {
            // A verified source's SYN within its own limit passes. Past it, the SYN may be
            // anyone's, so it is judged as an unverified one: the host's SYN bucket only, no
            // strike. Unverified SYNs get no per-source state.
            if self.is_verified(packet) && self.verified_syn_admits(packet) {
                return Reason::Pass;
            }
            return self.aggregate_admits(Class::Syn as usize, packet, Reason::FloodSyn);
        }
        let Some(class) = class_of(packet) else {
            return Reason::Pass;
        };
        let reason = self.per_source(packet, class);
        if reason != Reason::Pass {
            return reason;
        }
        let flood = class.flood_reason();
        let reason = self.aggregate_admits(class as usize, packet, flood);
        if reason != Reason::Pass {
            return reason;
        }
        if l4 { Reason::Pass } else { Reason::OtherL4 }
    }

    fn banned(&self, packet: &Packet) -> bool {
        let now_ns = self.now_ns();
        let dry_run = self.dry_run();
        // A later fragment of a segment is TCP too: a ban that leaves TCP alone spares it.
        let tcp = packet.l4_proto == filter_common::packet::IPPROTO_TCP
            && (packet.has_l4() || packet.fragment == Fragment::Later);
        self.ban_of(packet).is_some_and(|ban| {
            now_ns < ban.until_ns && (dry_run || !ban.dry_run) && (!tcp || ban.covers_tcp())
        })
    }

    fn fragment_refused(&mut self, packet: &Packet) -> bool {
        match FragmentPolicy::from_u32(self.settings.fragment_policy) {
            FragmentPolicy::Pass => false,
            FragmentPolicy::Drop => true,
            FragmentPolicy::RateLimit => {
                let slot = self.aggregate.len() - 1;
                self.aggregate_admits(slot, packet, Reason::Fragment) != Reason::Pass
            }
        }
    }

    /// `Pass` if aggregate bucket `slot` admits the packet (or is unlimited), else `refused`.
    fn aggregate_admits(&mut self, slot: usize, packet: &Packet, refused: Reason) -> Reason {
        let limit = if slot < self.settings.aggregate.len() {
            self.settings.aggregate[slot]
        } else {
            self.settings.fragments
        };
        let now_ns = self.now_ns();
        if !limited(&limit)
            || self.aggregate[slot].admit(&limit, now_ns, u64::from(packet.frame_len))
        {
            Reason::Pass
        } else {
            refused
        }
    }

    /// The per-source limit of `class`: `Pass`, or the class's rate reason (after a strike,
    /// and a ban if the strike earned one).
    fn per_source(&mut self, packet: &Packet, class: Class) -> Reason {
        let limit = self.settings.source[class as usize];
        if !limited(&limit) || echo_reply(packet) {
            return Reason::Pass;
        }
        let now_ns = self.now_ns();
        let key = Key::of(
            packet,
            Scope::Class(class as u8),
            self.settings.v6_source_prefix,
        );
        let state = self.sources.entry(key).or_insert(SourceState {
            buckets: Buckets::full(&limit, now_ns),
            strikes: 0,
            window_start_ns: now_ns,
        });
        if state
            .buckets
            .admit(&limit, now_ns, u64::from(packet.frame_len))
        {
            return Reason::Pass;
        }
        let reason = class.source_reason();
        // No SYN earns a ban, nor anything a verified source sends: anyone can send those in
        // its name.
        let may_ban = class != Class::Syn && !self.is_verified(packet);
        if may_ban && self.strike(key, now_ns) {
            self.ban(packet, reason);
        }
        reason
    }

    /// Counts a strike against `key` now; whether it earns a ban.
    fn strike(&mut self, key: Key, now_ns: u64) -> bool {
        let window_ns = self.settings.strike_window_ns;
        let after = u64::from(self.settings.ban_after_strikes);
        let Some(state) = self.sources.get_mut(&key) else {
            return false;
        };
        if now_ns - state.window_start_ns > window_ns {
            state.window_start_ns = now_ns;
            state.strikes = 0;
        }
        state.strikes += 1;
        if after != 0 && state.strikes >= after {
            state.strikes = 0;
            state.window_start_ns = now_ns;
            return true;
        }
        false
    }

    /// Bans the packet's source for `reason`: `base` doubled per earlier offence, up to `max`.
    fn ban(&mut self, packet: &Packet, reason: Reason) {
        let key = Key::of(packet, Scope::Ban, self.settings.v6_source_prefix);
        let dry_run = self.dry_run();
        let earlier = self
            .bans
            .get(&key)
            .filter(|old| dry_run || !old.dry_run)
            .map_or(0, |old| old.offences);
        let mut length = u128::from(self.settings.ban_base_ns);
        for _ in 0..earlier {
            length *= 2;
            if length >= u128::from(self.settings.ban_max_ns) {
                break;
            }
        }
        let length = length.min(u128::from(self.settings.ban_max_ns));
        let until_ns = u128::from(self.now_ns()) + length;
        self.bans.insert(
            key,
            Ban {
                until_ns: u64::try_from(until_ns).unwrap_or(u64::MAX),
                offences: earlier + 1,
                reason,
                dry_run,
            },
        );
        *self.ban_events.entry(reason).or_default() += 1;
    }
}

fn limited(limit: &Limit) -> bool {
    limit.pps != 0 || limit.bps != 0
}

/// Whether TCP flags can occur in a real connection: not NULL, SYN+FIN, SYN+RST, FIN+RST, or
/// FIN, PSH or URG without ACK.
fn flags_possible(flags: u8) -> bool {
    let has = |bit: u8| flags & bit != 0;
    let impossible = flags & (FIN | SYN | RST | PSH | ACK | URG) == 0
        || (has(SYN) && (has(FIN) || has(RST)))
        || (has(FIN) && has(RST))
        || (!has(ACK) && (has(FIN) || has(PSH) || has(URG)));
    !impossible
}

/// The rate class of a packet, or `None` for what is never rate-limited: established TCP,
/// ICMP the network needs, later fragments.
fn class_of(packet: &Packet) -> Option<Class> {
    if packet.fragment == Fragment::Later {
        return None;
    }
    if packet.l4_parsed == 0 {
        return Some(Class::Other);
    }
    match packet.l4_proto {
        IPPROTO_TCP if packet.tcp_flags & (SYN | ACK) == SYN => Some(Class::Syn),
        IPPROTO_TCP => None,
        IPPROTO_UDP => Some(Class::Udp),
        IPPROTO_ICMP | IPPROTO_ICMPV6 if essential_icmp(packet) => None,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => Some(Class::Icmp),
        _ => Some(Class::Other),
    }
}

/// ICMP the network needs: destination unreachable (fragmentation needed among it), time
/// exceeded, parameter problem; for IPv6 also packet too big and router and neighbour
/// discovery. Never rate-limited, never banned.
fn essential_icmp(packet: &Packet) -> bool {
    if packet.l4_parsed == 0 || !matches!(packet.l4_proto, IPPROTO_ICMP | IPPROTO_ICMPV6) {
        return false;
    }
    match packet.ip_version {
        4 => matches!(packet.icmp_type, 3 | 11 | 12),
        _ => matches!(packet.icmp_type, 1 | 2 | 3 | 4 | 133..=137),
    }
}

/// An echo reply (ICMP type 0, ICMPv6 type 129): an answer to the origin's own ping, with no
/// per-source limit (the aggregate ICMP limit applies).
fn echo_reply(packet: &Packet) -> bool {
    packet.l4_parsed != 0
        && matches!(packet.l4_proto, IPPROTO_ICMP | IPPROTO_ICMPV6)
        && packet.icmp_type == if packet.ip_version == 4 { 0 } else { 129 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn syn_from(addr: [u8; 4]) -> Packet {
        let mut packet = Packet::new(4, 74);
        packet.src_addr_be[..4].copy_from_slice(&addr);
        packet.l4_proto = IPPROTO_TCP;
        packet.l4_parsed = 1;
        packet.tcp_flags = SYN;
        packet.dst_port = 443;
        packet
    }

    fn udp_from(addr: [u8; 4]) -> Packet {
        let mut packet = Packet::new(4, 74);
        packet.src_addr_be[..4].copy_from_slice(&addr);
        packet.l4_proto = IPPROTO_UDP;
        packet.l4_parsed = 1;
        packet.dst_port = 53;
        packet
    }

    fn limit(pps: u64, burst_packets: u64) -> Limit {
        Limit {
            pps,
            burst_packets,
            ..Limit::default()
        }
    }

    #[test]
    fn a_bucket_pays_its_burst_then_one_token_per_interval() {
        let limit = limit(4, 2);
        let mut buckets = Buckets::full(&limit, 0);
        assert!(buckets.admit(&limit, 0, 1));
        assert!(buckets.admit(&limit, 0, 1));
        assert!(!buckets.admit(&limit, 0, 1));
        assert!(!buckets.admit(&limit, SECOND / 4 - 1, 1));
        assert!(buckets.admit(&limit, SECOND / 4, 1));
        assert!(buckets.admit(&limit, 10 * SECOND, 1));
        assert!(buckets.admit(&limit, 10 * SECOND, 1));
        assert!(
            !buckets.admit(&limit, 10 * SECOND, 1),
            "refilled to the burst only"
        );
    }

    #[test]
    fn ipv6_sources_share_their_prefix() {
        let v6 = |text: &str| -> IpAddr { text.parse().expect("literal") };
        let a = Key::of_addr(v6("2001:db8:0:1::10"), Scope::Ban, 64);
        let b = Key::of_addr(v6("2001:db8:0:1::20"), Scope::Ban, 64);
        assert_eq!(a, b);
        let c = Key::of_addr(v6("2001:db8:0:1::20"), Scope::Ban, 128);
        assert_ne!(a, c);
        let d = Key::of_addr(v6("2001:db8:0:1f::1"), Scope::Ban, 60);
        let e = Key::of_addr(v6("2001:db8:0:10::1"), Scope::Ban, 60);
        assert_eq!(d, e);
    }

    #[test]
    fn strikes_ban_for_doubling_lengths_up_to_the_max() {
        let mut settings = Settings {
            flags: filter_common::settings::FLAG_FIXED_CLOCK,
            ban_base_ns: 2 * SECOND,
            ban_max_ns: 5 * SECOND,
            strike_window_ns: SECOND,
            ban_after_strikes: 2,
            ..Settings::default()
        };
        settings.source[Class::Udp as usize] = limit(1, 1);
        let mut model = Model::new(settings);
        let packet = udp_from([192, 0, 2, 1]);
        let mut lengths = Vec::new();
        for round in 0..4u64 {
            let start = round * 100 * SECOND;
            model.settings.clock_ns = start;
            let reasons: Vec<Reason> = (0..4).map(|_| model.judge(&packet).1).collect();
            assert_eq!(
                reasons,
                [
                    Reason::Pass,
                    Reason::RateUdp,
                    Reason::RateUdp,
                    Reason::Banned
                ]
            );
            let ban = model.ban_of(&packet).expect("banned");
            lengths.push(ban.until_ns - start);
        }
        assert_eq!(lengths, [2 * SECOND, 4 * SECOND, 5 * SECOND, 5 * SECOND]);
        assert_eq!(model.ban_events[&Reason::RateUdp], 4);
    }

    #[test]
    fn syns_meet_the_host_bucket_past_a_verified_sources_own_limit_and_earn_no_ban() {
        let mut settings = Settings {
            flags: filter_common::settings::FLAG_FIXED_CLOCK,
            ban_after_strikes: 1,
            ..Settings::default()
        };
        settings.source[Class::Syn as usize] = limit(1, 1);
        settings.aggregate[Class::Syn as usize] = limit(4, 2);
        let mut model = Model::new(settings);
        let stranger = syn_from([192, 0, 2, 2]);
        assert_eq!(model.judge(&stranger).1, Reason::Pass);
        assert_eq!(model.judge(&stranger).1, Reason::Pass);
        assert_eq!(model.judge(&stranger).1, Reason::FloodSyn);
        assert!(model.sources.is_empty(), "a spoofable SYN left state");
        let visitor = syn_from([192, 0, 2, 1]);
        model.verify(IpAddr::from([192, 0, 2, 1]), SECOND);
        assert_eq!(model.judge(&visitor).1, Reason::Pass, "verified");
        assert_eq!(
            model.judge(&visitor).1,
            Reason::FloodSyn,
            "past its own limit: the host's bucket, spent by the stranger"
        );
        // A quarter second: a token for the host, a quarter of one for the visitor.
        model.settings.clock_ns += SECOND / 4;
        assert_eq!(
            model.judge(&visitor).1,
            Reason::Pass,
            "past its own limit, with room in the host's bucket"
        );
        assert!(model.bans.is_empty(), "a SYN earned a ban");
        assert!(model.is_verified(&visitor), "still verified");
    }

    #[test]
    fn lists_dry_run_and_flags() {
        let mut model = Model::new(Settings {
            flags: filter_common::settings::FLAG_DRY_RUN,
            ..Settings::default()
        });
        model.deny.insert("192.0.2.0/24".parse().expect("literal"));
        model.allow.insert("192.0.2.7/32".parse().expect("literal"));
        assert_eq!(
            model.judge(&syn_from([192, 0, 2, 7])),
            (Verdict::Pass, Reason::Allowlist)
        );
        assert_eq!(
            model.judge(&syn_from([192, 0, 2, 8])),
            (Verdict::WouldDrop, Reason::Denylist)
        );
        for (flags, possible) in [
            (0, false),
            (SYN | FIN, false),
            (SYN | RST, false),
            (FIN | RST | ACK, false),
            (FIN, false),
            (PSH | ACK, true),
            (RST, true),
            (SYN | ACK, true),
        ] {
            assert_eq!(flags_possible(flags), possible, "{flags:#x}");
        }
    }
}
