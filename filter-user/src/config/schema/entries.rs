//! The keys outside `[limits]`, each with everything moat says about it: its name, whether
//! `moat set` changes it live, its meaning in one line (the README's table) and at length (the
//! packaged moat.toml), and how its value is written as TOML.

use std::fmt::Debug;

use filter_common::{rate::Limit, settings::FragmentPolicy};

use super::{Get, Unset};
use crate::config::{ApiKey, format_duration};

/// One key outside `[limits]`.
pub(super) struct Entry {
    /// Its dotted name.
    pub(super) name: &'static str,
    /// Whether `moat set` changes it on a running filter.
    pub(super) live: bool,
    /// What it means, in one sentence.
    pub(super) doc: &'static str,
    /// Its value in a configuration.
    pub(super) get: Get,
    /// What it means at length (see [`super::Key::comment`]).
    pub(super) comment: &'static str,
}

/// A string as a TOML basic string.
fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// A list as a TOML array (numbers, or strings quoted as [`quoted`] does).
fn array<T: Debug>(items: &[T]) -> String {
    format!("{items:?}")
}

/// A duration as the TOML string [`crate::config::parse_duration`] reads.
fn duration(duration: std::time::Duration) -> String {
    quoted(&format_duration(duration))
}

/// The name of a fragment policy in the configuration.
fn policy(policy: FragmentPolicy) -> &'static str {
    match policy {
        FragmentPolicy::Pass => "pass",
        FragmentPolicy::RateLimit => "rate-limit",
        FragmentPolicy::Drop => "drop",
    }
}

/// A `crowdsec` key unset because the section is.
const CROWDSEC_OFF: &str = "no CrowdSec";

/// `ports.tcp` and `ports.udp` unset: no list, every port open.
const EVERY_PORT: &str = "every port open";

/// Every key outside `[limits]`, in the order moat.toml and `moat config show` give them.
pub(super) const PLAIN: &[Entry] = &[
    Entry {
        name: "mode",
        live: false,
        doc: "how the program attaches: auto, native or skb (a restart keeps the attached mode: `moat detach`, then start, to change)",
        get: Get::Plain(|c| quoted(c.mode.name())),
        comment: "\
How the XDP program attaches: \"auto\" (native, in the driver, when the driver supports
it, else generic), \"native\" (fail if the driver cannot) or \"skb\" (generic: works on every
interface, slower). `moat run --mode` overrides it. Default {default}.",
    },
    Entry {
        name: "dry_run",
        live: true,
        doc: "count would-be drops as would_drop and pass them",
        get: Get::Plain(|c| c.dry_run.to_string()),
        comment: "\
true: judge and count every packet but pass those that would be dropped, counted as
would_drop. Try a new policy this way first. `moat run --dry-run` forces it. Default {default}.",
    },
    Entry {
        name: "allow_capacity",
        live: false,
        doc: "allowlist prefixes per address family (restart to change)",
        get: Get::Plain(|c| c.allow_capacity.to_string()),
        comment: "\
Prefixes the allowlist holds, per address family (1 to 16777216). Default {default}.",
    },
    Entry {
        name: "deny_capacity",
        live: false,
        doc: "denylist prefixes per address family (restart to change)",
        get: Get::Plain(|c| c.deny_capacity.to_string()),
        comment: "\
Prefixes the denylist holds, per address family (1 to 16777216). Default {default}.",
    },
    Entry {
        name: "max_tracked_sources",
        live: false,
        doc: "sources whose rate state is kept: the table gets that many two-way sets, rounded up to a power of two (restart to change)",
        get: Get::Plain(|c| c.max_tracked_sources.to_string()),
        comment: "\
Sources whose rate state is kept, per traffic class (1 to 16777216); past this, the
least recently seen are forgotten, so a flood of spoofed sources cannot fill the table.
Default {default}.",
    },
    Entry {
        name: "max_bans",
        live: false,
        doc: "bans kept, expired ones included (restart to change)",
        get: Get::Plain(|c| c.max_bans.to_string()),
        comment: "\
Bans kept, including expired ones still remembered for repeat offences (1 to 16777216).
Nothing is evicted: when the table is full, expired bans are forgotten at once, and a source
that would earn a new automatic ban stays rate-limited instead. Default {default}.",
    },
    Entry {
        name: "sample_every",
        live: true,
        doc: "one dropped packet in this many is sampled; 0 samples none",
        get: Get::Plain(|c| c.sample_every.to_string()),
        comment: "\
One dropped packet in this many is sampled for `moat top` and `moat stats`; 0 samples
none. Default {default}.",
    },
    Entry {
        name: "syn_cookies",
        live: false,
        doc: "when moat answers unverified SYNs with cookies: auto, always, off",
        get: Get::Plain(|c| quoted(c.syn_cookies.name())),
        comment: "\
SYN cookies answered by moat in the driver, so new visitors get in during a spoofed SYN
flood without anyone keeping state for the flood's fake addresses. A SYN from a source that
has not completed a handshake recently, to a port something listens on, is answered by moat
with a SYN-ACK carrying a cookie made by the kernel's own listener; only a real client can
return it, and the kernel then builds the connection from it.
  \"auto\"   - exactly when the kernel itself would use cookies (the listener's SYN queue is
             full, i.e. during a flood); otherwise the kernel answers with every TCP option
  \"always\" - every such SYN (needs net.ipv4.tcp_syncookies = 2; moat warns if it is not)
  \"off\"    - never; such SYNs pass through [limits.aggregate.syn] to the kernel
A cookie-made connection has no window scaling, SACK or timestamps (a cookie cannot carry
them), which slows big downloads on long paths; \"auto\" limits that to floods. Needs
net.ipv4.tcp_syncookies = 1 (the kernel default) or 2; moat warns at start if it is 0.
Default {default}.",
    },
    Entry {
        name: "require_sockets",
        live: false,
        doc: "traffic must belong to a socket on this host",
        get: Get::Plain(|c| c.require_sockets.to_string()),
        comment: "\
true: traffic must belong to a socket on this host. A SYN or UDP datagram to a port nothing
listens on is dropped (port_closed); an ACK, RST or FIN for no connection is dropped
(no_socket; an ACK to a listener must carry a valid cookie, else cookie_bad). Replies to
this host's own connections and lookups match their sockets and pass. Ports listed in
[ports] pass without a socket: list the ports this host forwards to containers or other
hosts (docker's published ports), or set false on a router. Default {default}.",
    },
    Entry {
        name: "refusals.pps",
        live: true,
        doc: "packets for no socket passed per second for the kernel to refuse; 0: none",
        get: Get::Plain(|c| c.refusals.pps.to_string()),
        comment: "\
Packets that no socket on this host takes (what require_sockets drops as port_closed,
no_socket and cookie_bad, and SYNs and datagrams to ports [ports] closes with nothing
listening there) are passed at up to this many per second for the whole host, so the
kernel refuses them as it would without moat: a TCP reset, an ICMP port unreachable. A visitor whose connection vanished in a
reboot, or whose browser tries a port you do not serve (HTTPS first), learns at once
instead of waiting out its timeouts. Beyond it they are dropped, so a flood for no socket
reaches the kernel only this fast. Passed ones count as pass/refusal. 0 passes none.
Default {default}.",
    },
    Entry {
        name: "refusals.burst",
        live: true,
        doc: "packets for no socket passed at once above that rate",
        get: Get::Plain(|c| c.refusals.burst_packets.to_string()),
        comment: "\
Packets for no socket passed at once above that rate. Default {default}.",
    },
    Entry {
        name: "ports.tcp",
        live: false,
        doc: "TCP ports open to new connections (unset: every port)",
        get: Get::Optional(
            |c| c.ports.tcp.as_deref().map(array),
            Unset {
                meaning: EVERY_PORT,
                example: "[22, 80, 443]",
            },
        ),
        comment: "",
    },
    Entry {
        name: "ports.udp",
        live: false,
        doc: "UDP ports open (unset: every port)",
        get: Get::Optional(
            |c| c.ports.udp.as_deref().map(array),
            Unset {
                meaning: EVERY_PORT,
                example: "[443]",
            },
        ),
        comment: "",
    },
    Entry {
        name: "fragments.policy",
        live: true,
        doc: "IP fragments: pass, rate-limit or drop",
        get: Get::Plain(|c| quoted(policy(c.fragments.policy))),
        comment: "\
IP fragments: \"pass\", \"rate-limit\" (by the limit below) or \"drop\". Default {default}.",
    },
    Entry {
        name: "fragments.pps",
        live: true,
        doc: "fragments per second for the whole host",
        get: Get::Plain(|c| c.fragments.limit.pps.to_string()),
        comment: "\
Fragments per second for the whole host, under \"rate-limit\". Default {default}.",
    },
    Entry {
        name: "fragments.burst",
        live: true,
        doc: "fragments allowed at once above that rate",
        get: Get::Plain(|c| c.fragments.limit.burst_packets.to_string()),
        comment: "\
Fragments allowed at once above that rate. Default {default}.",
    },
    Entry {
        name: "reflection.ports",
        live: false,
        doc: "UDP source ports of reflectors, dropped unless trusted",
        get: Get::Plain(|c| array(&c.reflection.ports)),
        comment: "\
UDP from these source ports is dropped unless the source is a trusted upstream: the
services (DNS, NTP, memcached, SSDP, CLDAP...) abused in reflection and amplification
attacks. A list here replaces the whole default list, which is:",
    },
    Entry {
        name: "reflection.trusted",
        live: false,
        doc: "upstream prefixes whose replies from those ports pass",
        get: Get::Plain(|c| {
            let trusted: Vec<String> = c
                .reflection
                .trusted
                .iter()
                .map(ToString::to_string)
                .collect();
            array(&trusted)
        }),
        comment: "\
Upstreams whose replies from those ports are expected, as prefixes: NTP servers your time
daemon does not name, resolvers not named in resolv_conf, e.g. [\"192.0.2.123/32\"].
Default {default} (none).",
    },
    Entry {
        name: "reflection.resolv_conf",
        live: false,
        doc: "a resolv.conf whose nameservers are trusted",
        get: Get::Plain(|c| {
            let path = c.reflection.resolv_conf.as_ref();
            quoted(
                &path
                    .map(|path| path.display().to_string())
                    .unwrap_or_default(),
            )
        }),
        comment: "\
A resolv.conf whose nameservers are trusted too; \"\" trusts none. Re-read on reload.
Under systemd-resolved, /etc/resolv.conf names only 127.0.0.53: use
\"/run/systemd/resolve/resolv.conf\", which lists the real upstream servers, or DNS
replies to this host are dropped. Default {default}.",
    },
    Entry {
        name: "reflection.trust_system_ntp",
        live: false,
        doc: "trust this host's configured NTP servers",
        get: Get::Plain(|c| c.reflection.trust_system_ntp.to_string()),
        comment: "\
Trust the NTP servers configured for chrony, ntpd/ntpsec or systemd-timesyncd on this host
(names resolved when the configuration is applied), so this host's own time sync keeps
working. Default {default}.",
    },
    Entry {
        name: "bans.after_strikes",
        live: true,
        doc: "over-limit packets within the window that ban; 0: never",
        get: Get::Plain(|c| c.bans.after_strikes.to_string()),
        comment: "\
Over-limit packets within strike_window that get a source banned; 0 turns automatic bans
off. Default {default}.",
    },
    Entry {
        name: "bans.strike_window",
        live: true,
        doc: "the window strikes are counted over",
        get: Get::Plain(|c| duration(c.bans.strike_window)),
        comment: "\
The window over which strikes are counted (durations: 500ms, 30s, 10m, 2h, 1d).
Default {default}.",
    },
    Entry {
        name: "bans.base",
        live: true,
        doc: "a first ban's length; each repeat offence doubles it",
        get: Get::Plain(|c| duration(c.bans.base)),
        comment: "\
The length of a first ban; each repeat offence doubles it. Default {default}.",
    },
    Entry {
        name: "bans.max",
        live: true,
        doc: "the longest ban",
        get: Get::Plain(|c| duration(c.bans.max)),
        comment: "\
The longest ban; not shorter than base. Default {default}.",
    },
    Entry {
        name: "bans.ipv6_prefix",
        live: true,
        doc: "IPv6 sources are limited and banned per prefix of this length",
        get: Get::Plain(|c| c.bans.ipv6_prefix.to_string()),
        comment: "\
IPv6 sources are rate-limited and banned per prefix of this length (1 to 128), since
one host usually holds a whole /64. Default {default}.",
    },
    Entry {
        name: "bans.forget_after",
        live: false,
        doc: "repeat offences count until a ban expired this long ago",
        get: Get::Plain(|c| duration(c.bans.forget_after)),
        comment: "\
Repeat offences count until a ban has been expired this long; then the source starts
again from base. Default {default}.",
    },
    Entry {
        name: "crowdsec.api_url",
        live: false,
        doc: "the CrowdSec Local API to pull ban decisions from (unset: no CrowdSec)",
        get: Get::Optional(
            |c| c.crowdsec.as_ref().map(|cs| quoted(&cs.api_url)),
            Unset {
                meaning: CROWDSEC_OFF,
                example: "\"http://127.0.0.1:8080/\"",
            },
        ),
        comment: "\
moat as a CrowdSec bouncer: it pulls the Local API's decision stream and drops every source
under a ban decision (scope Ip or Range, IPv4 and IPv6) in the driver; the allowlist still
wins. Other decision types and scopes are counted and ignored. Plain http:// only: keep the
LAPI on this host, a private network or a tunnel. Reload to change any crowdsec key.",
    },
    Entry {
        name: "crowdsec.api_key_file",
        live: false,
        doc: "a file holding the bouncer key from `cscli bouncers add moat`",
        get: Get::Optional(
            |c| match c.crowdsec.as_ref().map(|cs| &cs.api_key) {
                Some(ApiKey::File(path)) => Some(quoted(&path.display().to_string())),
                _ => None,
            },
            Unset {
                meaning: "no key file",
                example: "\"/etc/moat/crowdsec.key\"",
            },
        ),
        comment: "\
The bouncer key `cscli bouncers add moat` prints, in a file readable by root only (or
api_key = \"...\" here). Give each origin its own key: the LAPI tracks each key's stream.",
    },
    Entry {
        name: "crowdsec.api_key",
        live: false,
        doc: "the bouncer key itself, instead of api_key_file (shown hidden)",
        get: Get::Optional(
            |c| match c.crowdsec.as_ref().map(|cs| &cs.api_key) {
                Some(ApiKey::Inline(_)) => Some(quoted("(hidden)")),
                _ => None,
            },
            Unset {
                meaning: "the key is in api_key_file",
                example: "\"...\"",
            },
        ),
        comment: "",
    },
    Entry {
        name: "crowdsec.update_frequency",
        live: false,
        doc: "how often the decision stream is pulled",
        get: Get::Optional(
            |c| c.crowdsec.as_ref().map(|cs| duration(cs.update_frequency)),
            Unset {
                meaning: CROWDSEC_OFF,
                example: "\"10s\"",
            },
        ),
        comment: "How often the decision stream is pulled, 1s to 1h. Default 10s.",
    },
    Entry {
        name: "crowdsec.credentials_file",
        live: false,
        doc: "CrowdSec machine credentials (url, login, password) for pushing moat's bans",
        get: Get::Optional(
            |c| {
                c.crowdsec
                    .as_ref()
                    .and_then(|cs| cs.credentials_file.as_ref())
                    .map(|path| quoted(&path.display().to_string()))
            },
            Unset {
                meaning: "moat pushes nothing",
                example: "\"/etc/crowdsec/local_api_credentials.yaml\"",
            },
        ),
        comment: "\
moat as a signal source (off by default): the file `cscli machines add moat` writes.",
    },
    Entry {
        name: "crowdsec.push",
        live: false,
        doc: "push each `moat ban add` ban to the LAPI as an alert with a ban decision",
        get: Get::Optional(
            |c| c.crowdsec.as_ref().map(|cs| cs.push.to_string()),
            Unset {
                meaning: CROWDSEC_OFF,
                example: "false",
            },
        ),
        comment: "\
true: every ban the operator adds with moat ban add goes to the LAPI as an alert (scenario
moat/manual) carrying a ban decision of the ban's length, so every bouncer of the fleet
drops that source too; moat ban del takes it back. The program's own bans rest on traffic
anyone can send in a visitor's name and are never pushed. Batched, never blocking the
daemon. Default false.",
    },
];

/// One field of each `[limits.SCOPE.CLASS]` table.
pub(super) struct LimitField {
    /// Its name in the table.
    pub(super) name: &'static str,
    /// What it means, in one sentence.
    pub(super) doc: &'static str,
    /// Its value in a limit.
    pub(super) get: fn(&Limit) -> u64,
}

/// The fields of each `[limits.SCOPE.CLASS]` table. Their long meaning is the packaged file's
/// introduction to the limits (see `config::template`).
pub(super) const LIMIT_FIELDS: &[LimitField] = &[
    LimitField {
        name: "pps",
        doc: "packets per second; 0: no packet limit",
        get: |l| l.pps,
    },
    LimitField {
        name: "burst",
        doc: "packets allowed at once above that rate",
        get: |l| l.burst_packets,
    },
    LimitField {
        name: "bps",
        doc: "bytes per second; 0: no byte limit",
        get: |l| l.bps,
    },
    LimitField {
        name: "burst_bytes",
        doc: "bytes allowed at once above that rate",
        get: |l| l.burst_bytes,
    },
];
