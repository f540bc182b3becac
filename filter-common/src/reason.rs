//! Why a packet got its verdict, and the verdict itself.
//!
//! Every packet the filter sees is counted under exactly one `(Verdict, Reason)` pair. Adding a
//! reason here updates the counter array, the CLI output and the metrics labels at once, since all
//! of them iterate [`Reason::ALL`].

/// Why the filter passed or dropped a packet. The discriminant is the counter index component,
/// so variants are never renumbered; new reasons are appended before [`Reason::COUNT`] grows.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A well-formed IP packet that no policy stage stopped.
    Pass = 0,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): moat does not inspect it and passes it.
    NonIp = 1,
    /// IP with a transport moat does not parse (GRE, ESP, SCTP, no next header): passed after the
    /// address-based stages.
    OtherL4 = 2,
    /// Truncated or malformed at some header: dropped.
    Malformed = 3,
    /// Source is on the allowlist: passed before any other stage.
    Allowlist = 4,
    /// Source is on the denylist: dropped.
    Denylist = 5,
    /// Source is banned until its ban expires: dropped.
    Banned = 6,
    /// An invalid TCP flag combination (NULL, SYN+FIN, SYN+RST, XMAS, ...): dropped.
    TcpFlags = 7,
    /// An IP fragment refused by the fragment policy: dropped.
    Fragment = 8,
    /// TCP or UDP to a port the configuration does not list as open: dropped.
    PortClosed = 9,
    /// UDP from a known reflector source port and an untrusted source: dropped.
    Reflection = 10,
    /// One source sent TCP SYNs over its per-source limit. The program no longer drops for it:
    /// a verified source's SYNs past its limit are verified as anyone's. Kept for its counter
    /// slot and for SYN bans saved by earlier versions.
    RateSyn = 11,
    /// One source sent UDP over its per-source limit: dropped.
    RateUdp = 12,
    /// One source sent ICMP over its per-source limit: dropped.
    RateIcmp = 13,
    /// One source sent other IP traffic over its per-source limit: dropped.
    RateOther = 14,
    /// All sources together sent TCP SYNs over the aggregate limit: dropped.
    FloodSyn = 15,
    /// All sources together sent UDP over the aggregate limit: dropped.
    FloodUdp = 16,
    /// All sources together sent ICMP over the aggregate limit: dropped.
    FloodIcmp = 17,
    /// All sources together sent other IP traffic over the aggregate limit: dropped.
    FloodOther = 18,
    /// A broken internal invariant (a map lookup that cannot fail did): aborted.
    Internal = 19,
    /// A TCP SYN from an unverified source to a listening port, answered by moat itself with a
    /// SYN-ACK carrying a SYN cookie (`XDP_TX`): the kernel never sees the SYN.
    SynCookie = 20,
    /// An ACK to a listening port carrying a valid SYN cookie: passed, and the kernel builds the
    /// connection from the cookie; its source counts as verified from then on.
    CookieAck = 21,
    /// A bare ACK to a listening port whose SYN cookie is invalid (a spoofed ACK flood): dropped.
    CookieBad = 22,
    /// TCP that is not a connection attempt and matches no socket on the host (ACK, RST or FIN
    /// for no connection): dropped.
    NoSocket = 23,
    /// Source under a CrowdSec ban decision (scope `Ip` or `Range`), pulled from the fleet's
    /// Local API into moat's CrowdSec tries: dropped. The allowlist still wins.
    CrowdSec = 24,
    /// TCP or UDP that no socket on the host takes (what would be `port_closed`, `no_socket` or
    /// `cookie_bad` under `require_sockets`), within the host-wide refusal budget
    /// ([`crate::Settings::refusals`]): passed, so the kernel refuses it as it would without
    /// moat (a TCP reset, an ICMP port unreachable) and the sender learns at once instead of
    /// waiting out its timeouts. Beyond the budget such packets are dropped.
    Refusal = 25,
}

impl Reason {
    /// Number of reasons; the width of one verdict's row in the counter array.
    pub const COUNT: usize = 26;

    /// Every reason, in discriminant order.
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::Pass,
        Reason::NonIp,
        Reason::OtherL4,
        Reason::Malformed,
        Reason::Allowlist,
        Reason::Denylist,
        Reason::Banned,
        Reason::TcpFlags,
        Reason::Fragment,
        Reason::PortClosed,
        Reason::Reflection,
        Reason::RateSyn,
        Reason::RateUdp,
        Reason::RateIcmp,
        Reason::RateOther,
        Reason::FloodSyn,
        Reason::FloodUdp,
        Reason::FloodIcmp,
        Reason::FloodOther,
        Reason::Internal,
        Reason::SynCookie,
        Reason::CookieAck,
        Reason::CookieBad,
        Reason::NoSocket,
        Reason::CrowdSec,
        Reason::Refusal,
    ];

    /// The snake_case name used in CLI output, JSON and metric labels.
    pub const fn label(self) -> &'static str {
        match self {
            Reason::Pass => "pass",
            Reason::NonIp => "non_ip",
            Reason::OtherL4 => "other_l4",
            Reason::Malformed => "malformed",
            Reason::Allowlist => "allowlist",
            Reason::Denylist => "denylist",
            Reason::Banned => "banned",
            Reason::TcpFlags => "tcp_flags",
            Reason::Fragment => "fragment",
            Reason::PortClosed => "port_closed",
            Reason::Reflection => "reflection",
            Reason::RateSyn => "rate_syn",
            Reason::RateUdp => "rate_udp",
            Reason::RateIcmp => "rate_icmp",
            Reason::RateOther => "rate_other",
            Reason::FloodSyn => "flood_syn",
            Reason::FloodUdp => "flood_udp",
            Reason::FloodIcmp => "flood_icmp",
            Reason::FloodOther => "flood_other",
            Reason::Internal => "internal",
            Reason::SynCookie => "syn_cookie",
            Reason::CookieAck => "cookie_ack",
            Reason::CookieBad => "cookie_bad",
            Reason::NoSocket => "no_socket",
            Reason::CrowdSec => "crowdsec",
            Reason::Refusal => "refusal",
        }
    }

    /// One line for operators: what this reason means.
    pub const fn describe(self) -> &'static str {
        match self {
            Reason::Pass => "well-formed IP traffic that no policy stopped",
            Reason::NonIp => "not IPv4/IPv6 (ARP, LLDP...), passed uninspected",
            Reason::OtherL4 => "IP with a transport moat does not parse (GRE, ESP...)",
            Reason::Malformed => "truncated or malformed at some header",
            Reason::Allowlist => "source on the allowlist",
            Reason::Denylist => "source on the denylist",
            Reason::Banned => "source banned for exceeding its limits",
            Reason::TcpFlags => "invalid TCP flag combination",
            Reason::Fragment => "IP fragment refused by the fragment policy",
            Reason::PortClosed => "TCP/UDP to a port that is not open",
            Reason::Reflection => "UDP from a reflector port, untrusted source",
            Reason::RateSyn => "per-source TCP SYN limit exceeded",
            Reason::RateUdp => "per-source UDP limit exceeded",
            Reason::RateIcmp => "per-source ICMP limit exceeded",
            Reason::RateOther => "per-source limit for other IP exceeded",
            Reason::FloodSyn => "aggregate TCP SYN limit exceeded",
            Reason::FloodUdp => "aggregate UDP limit exceeded",
            Reason::FloodIcmp => "aggregate ICMP limit exceeded",
            Reason::FloodOther => "aggregate limit for other IP exceeded",
            Reason::Internal => "internal invariant broken (XDP_ABORTED)",
            Reason::SynCookie => "SYN answered by moat with a SYN cookie (XDP_TX)",
            Reason::CookieAck => "ACK with a valid SYN cookie, passed to the kernel",
            Reason::CookieBad => "ACK to a listener with an invalid SYN cookie",
            Reason::NoSocket => "TCP for no connection (ACK, RST, FIN with no socket)",
            Reason::CrowdSec => "source under a CrowdSec ban decision (Ip or Range)",
            Reason::Refusal => "no socket; passed for the kernel to reset or answer unreachable",
        }
    }

    /// Whether a packet with this reason is dropped (before `--dry-run` is applied).
    pub const fn drops(self) -> bool {
        !matches!(
            self,
            Reason::Pass
                | Reason::NonIp
                | Reason::OtherL4
                | Reason::Allowlist
                | Reason::SynCookie
                | Reason::CookieAck
                | Reason::Refusal
        )
    }

    /// The reason with this discriminant, if any.
    pub const fn from_u32(value: u32) -> Option<Reason> {
        if (value as usize) < Reason::COUNT {
            Some(Reason::ALL[value as usize])
        } else {
            None
        }
    }
}

/// What the filter did with a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Handed to the kernel stack (`XDP_PASS`).
    Pass = 0,
    /// Dropped in the driver (`XDP_DROP`).
    Drop = 1,
    /// Would have been dropped, but `--dry-run` is on, so it was passed (`XDP_PASS`).
    WouldDrop = 2,
    /// A broken internal invariant (`XDP_ABORTED`, visible to the `xdp:xdp_exception` tracepoint).
    Aborted = 3,
    /// Answered by moat itself: the frame was rewritten into a reply and sent back out of the
    /// interface it came in on (`XDP_TX`); the kernel never saw it.
    Answered = 4,
}

impl Verdict {
    /// Number of verdicts; the number of rows in the counter array.
    pub const COUNT: usize = 5;

    /// Every verdict, in discriminant order.
    pub const ALL: [Verdict; Verdict::COUNT] = [
        Verdict::Pass,
        Verdict::Drop,
        Verdict::WouldDrop,
        Verdict::Aborted,
        Verdict::Answered,
    ];

    /// The snake_case name used in CLI output, JSON and metric labels.
    pub const fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::WouldDrop => "would_drop",
            Verdict::Aborted => "aborted",
            Verdict::Answered => "answered",
        }
    }
}

/// The verdict for a packet that got `reason`: drop reasons drop unless `dry_run`, in which case
/// the packet passes and is counted as [`Verdict::WouldDrop`]. [`Reason::Internal`] always aborts,
/// since it means the program itself is broken, not the packet. [`Reason::SynCookie`] is always
/// answered (the program never answers under `dry_run`; it passes the SYN instead).
pub const fn decide(reason: Reason, dry_run: bool) -> Verdict {
    if matches!(reason, Reason::Internal) {
        Verdict::Aborted
    } else if matches!(reason, Reason::SynCookie) {
        Verdict::Answered
    } else if !reason.drops() {
        Verdict::Pass
    } else if dry_run {
        Verdict::WouldDrop
    } else {
        Verdict::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order() {
        for (index, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index, "{reason:?}");
            assert_eq!(Reason::from_u32(index as u32), Some(*reason));
        }
        assert_eq!(Reason::from_u32(Reason::COUNT as u32), None);
        for (index, verdict) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*verdict as usize, index, "{verdict:?}");
        }
    }

    #[test]
    fn labels_are_unique_snake_case() {
        for (i, a) in Reason::ALL.iter().enumerate() {
            assert!(
                a.label()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{a:?}"
            );
            for b in &Reason::ALL[i + 1..] {
                assert_ne!(a.label(), b.label());
            }
        }
    }

    #[test]
    fn decide_maps_reasons_to_verdicts() {
        assert_eq!(decide(Reason::Pass, false), Verdict::Pass);
        assert_eq!(decide(Reason::NonIp, true), Verdict::Pass);
        assert_eq!(decide(Reason::Allowlist, false), Verdict::Pass);
        assert_eq!(decide(Reason::Malformed, false), Verdict::Drop);
        assert_eq!(decide(Reason::Malformed, true), Verdict::WouldDrop);
        assert_eq!(decide(Reason::FloodSyn, false), Verdict::Drop);
        assert_eq!(decide(Reason::Internal, false), Verdict::Aborted);
        assert_eq!(decide(Reason::Internal, true), Verdict::Aborted);
        assert_eq!(decide(Reason::SynCookie, false), Verdict::Answered);
        assert_eq!(decide(Reason::CookieAck, true), Verdict::Pass);
        assert_eq!(decide(Reason::CookieBad, false), Verdict::Drop);
        assert_eq!(decide(Reason::NoSocket, true), Verdict::WouldDrop);
        assert_eq!(decide(Reason::Refusal, false), Verdict::Pass);
    }
}
