//! The TOML configuration: parsed into a raw form, validated into a [`Config`] (every problem
//! reported with its line and key), and only then compiled into what the XDP program reads
//! ([`Config::settings`], [`Config::port_flags`], [`Config::trusted`]). Unknown keys are errors,
//! so a typo never silently falls back to a default.
//!
//! The defaults protect a typical web origin: every port open (attaching never locks anyone
//! out), per-source limits far above what a browser or a NAT'd office sends, aggregate limits
//! that cap floods from spoofed sources, fragments rate-limited, reflection dropped.

use std::{
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use filter_common::{
    CLASS_COUNT, Class, Settings,
    classify::REFLECTOR_PORTS,
    maps::{
        DEFAULT_ALLOW_ENTRIES, DEFAULT_DENY_ENTRIES, DEFAULT_MAX_BANS, DEFAULT_MAX_SOURCES,
        MAX_TRUSTED_PER_SLOT,
    },
    ports::{PORT_COUNT, PORT_REFLECTOR, PORT_TCP_OPEN, PORT_UDP_OPEN, PORT_UDP_REPLIES},
    rate::Limit,
    settings::{
        FLAG_DRY_RUN, FLAG_ENFORCE_TCP_PORTS, FLAG_ENFORCE_UDP_PORTS, FLAG_TCP_SOCKETS,
        FLAG_UDP_SOCKETS, FragmentPolicy, SYN_COOKIES_ALWAYS, SYN_COOKIES_AUTO, SYN_COOKIES_OFF,
    },
};
use toml::Spanned;

use clap::ValueEnum;

use crate::cidr::Cidr;

mod compile;
mod crowdsec;
mod parse;
mod rewording;
pub mod schema;
mod show;
pub mod template;
mod validate;

/// How long a completed handshake keeps a source verified (the daemon's sock_diag marks and
/// the SYN-cookie stage both use it).
pub const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// How to attach the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Native (driver) mode when the driver supports it, generic (skb) mode otherwise.
    Auto,
    /// Native mode, in the driver; fails if the driver has no XDP support.
    Native,
    /// Generic mode, after the kernel has built an skb; works on every interface, slower.
    Skb,
}

impl Mode {
    /// The name used on the command line and in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Native => "native",
            Mode::Skb => "skb",
        }
    }
}

/// Where `moat run` looks for a configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/moat/moat.toml";

/// The largest capacity accepted for a list or table. The tries allocate entries as used; the
/// ban and per-source tables are allocated whole when the program loads (about 100 bytes an
/// entry), so their capacity is memory spent up front.
pub const MAX_CAPACITY: u32 = 16_777_216;

/// One more than the largest `pps`, `burst`, `bps` or `burst_bytes` of any limit, in the file
/// and by `moat set` alike.
pub const LIMIT_BOUND: u64 = 1 << 40;

/// The smallest byte burst accepted when a byte rate is set: one full Ethernet frame with a
/// VLAN tag, so a full-size packet can ever be admitted.
pub const MIN_BURST_BYTES: u64 = 1522;

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The dotted key, when known.
    pub key: Option<String>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file has problems; all of them are listed.
    #[error("invalid config {path}: {}", join(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which ports accept traffic. `None` means every port is open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortPolicy {
    /// Open TCP ports (new connections to others are dropped).
    pub tcp: Option<Vec<u16>>,
    /// Open UDP ports (the kernel's ephemeral range is always open too, for replies).
    pub udp: Option<Vec<u16>>,
}

/// The fragment policy and its aggregate limit (whole host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentConfig {
    /// Pass, rate-limit or drop.
    pub policy: FragmentPolicy,
    /// The limit under rate-limit.
    pub limit: Limit,
}

/// The reflection stage's trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReflectionConfig {
    /// Reflector source ports.
    pub ports: Vec<u16>,
    /// Upstreams (NTP servers, resolvers not in resolv.conf) whose replies from reflector
    /// ports are expected.
    pub trusted: Vec<Cidr>,
    /// A resolv.conf whose nameservers are trusted too; `None` to skip.
    pub resolv_conf: Option<PathBuf>,
    /// Trust the NTP servers of the host's time daemon (chrony, ntpd, timesyncd) too.
    pub trust_system_ntp: bool,
}

/// Automatic bans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanConfig {
    /// Over-limit packets within one window that ban a source; 0 disables automatic bans.
    pub after_strikes: u32,
    /// The strike window.
    pub strike_window: Duration,
    /// The first ban's length; each repeat offence doubles it.
    pub base: Duration,
    /// The longest ban.
    pub max: Duration,
    /// IPv6 sources are tracked and banned per prefix of this length.
    pub ipv6_prefix: u32,
    /// Expired bans are forgotten (and repeat offences start over) after this long.
    pub forget_after: Duration,
}

/// Rate limits by class, in whole-host units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Per source, by [`Class`].
    pub source: [Limit; CLASS_COUNT],
    /// All sources together, by [`Class`].
    pub aggregate: [Limit; CLASS_COUNT],
}

/// When moat answers SYNs from unverified sources with SYN cookies itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynCookies {
    /// Never: unverified SYNs pass through the aggregate SYN limit to the kernel.
    Off,
    /// Exactly when the kernel itself would use cookies: the listener's SYN queue is full.
    Auto,
    /// For every unverified SYN (needs `net.ipv4.tcp_syncookies = 2`).
    Always,
}

impl SynCookies {
    /// The name used in the configuration.
    pub const fn name(self) -> &'static str {
        match self {
            SynCookies::Off => "off",
            SynCookies::Auto => "auto",
            SynCookies::Always => "always",
        }
    }

    /// The `Settings::syn_cookies` value.
    pub const fn setting(self) -> u32 {
        match self {
            SynCookies::Off => SYN_COOKIES_OFF,
            SynCookies::Auto => SYN_COOKIES_AUTO,
            SynCookies::Always => SYN_COOKIES_ALWAYS,
        }
    }

    /// The mode named `name`, if any.
    pub fn parse(name: &str) -> Option<SynCookies> {
        [SynCookies::Off, SynCookies::Auto, SynCookies::Always]
            .into_iter()
            .find(|mode| mode.name() == name)
    }
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Attach mode.
    pub mode: Mode,
    /// Pass would-be drops and count them as would_drop.
    pub dry_run: bool,
    /// Prefixes each allowlist trie holds; fixed when the program loads.
    pub allow_capacity: u32,
    /// Prefixes each denylist trie holds; fixed when the program loads.
    pub deny_capacity: u32,
    /// Sources (per class) whose rate state is kept; the least recently seen are evicted.
    pub max_tracked_sources: u32,
    /// Bans (and remembered expired bans) kept. Nothing is evicted: when full, no new
    /// automatic ban is recorded (the source stays rate-limited), expired bans are forgotten at
    /// once, and `moat ban add` removes the automatic ban closest to its end.
    pub max_bans: u32,
    /// One dropped packet in this many is sampled for `moat top`; 0 samples none.
    pub sample_every: u32,
    /// When moat answers unverified SYNs with cookies.
    pub syn_cookies: SynCookies,
    /// TCP and UDP must match a socket on the host (ports listed in `ports` excepted).
    pub require_sockets: bool,
    /// The refusal budget: packets for no socket passed, host-wide, for the kernel to refuse
    /// (pps and burst only; a zero `pps` passes none).
    pub refusals: Limit,
    /// Open ports.
    pub ports: PortPolicy,
    /// Fragments.
    pub fragments: FragmentConfig,
    /// Reflection.
    pub reflection: ReflectionConfig,
    /// Automatic bans.
    pub bans: BanConfig,
    /// Rate limits.
    pub limits: Limits,
    /// The CrowdSec bouncer; `None` (no `[crowdsec]` section) leaves it off.
    pub crowdsec: Option<CrowdSecConfig>,
}

/// Where the bouncer key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiKey {
    /// `api_key`, written in the file.
    Inline(String),
    /// `api_key_file`: a file holding the key (checked readable and not empty when the
    /// configuration is read, read again when the bouncer starts).
    File(PathBuf),
}

/// The `[crowdsec]` section: moat as a bouncer of a CrowdSec Local API, and optionally a
/// signal source for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrowdSecConfig {
    /// The LAPI's address, `http://host:port/`.
    pub api_url: String,
    /// The bouncer key (`cscli bouncers add moat`).
    pub api_key: ApiKey,
    /// How often the decision stream is pulled.
    pub update_frequency: Duration,
    /// CrowdSec's machine credentials (url, login, password), for pushing moat's bans.
    pub credentials_file: Option<PathBuf>,
    /// Push each `moat ban add` ban to the LAPI as an alert with a ban decision.
    pub push: bool,
}

/// `crowdsec.update_frequency` when not given: cs-firewall-bouncer's default.
pub const DEFAULT_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);

const fn limit(pps: u64, burst_packets: u64, bps: u64, burst_bytes: u64) -> Limit {
    Limit {
        pps,
        burst_packets,
        bps,
        burst_bytes,
    }
}

/// Default per-source limits: a browser opens a handful of connections, a NAT'd office a few
/// hundred a minute; a flood from one address is thousands a second.
pub const DEFAULT_SOURCE_LIMITS: [Limit; CLASS_COUNT] = [
    limit(50, 200, 0, 0),                      // syn
    limit(2_000, 4_000, 4_000_000, 8_000_000), // udp (QUIC)
    limit(20, 50, 0, 0),                       // icmp
    limit(200, 400, 0, 0),                     // other
];

/// Default aggregate limits, for the whole host. The SYN limit caps the SYN-ACKs moat answers
/// with cookies (with cookies off: the SYNs of sources that have not completed a handshake
/// recently); it sits far above what a link of this size can carry, so a newcomer never has to
/// win it against a flood.
pub const DEFAULT_AGGREGATE_LIMITS: [Limit; CLASS_COUNT] = [
    limit(2_000_000, 2_000_000, 0, 0), // syn
    limit(200_000, 400_000, 0, 0),     // udp
    limit(2_000, 4_000, 0, 0),         // icmp
    limit(20_000, 40_000, 0, 0),       // other
];

/// Default refusal budget for the whole host: a reboot's worth of visitors retransmitting into
/// vanished connections are reset within seconds, while a flood for no socket hands the kernel
/// no more than a few milliseconds of work a second.
pub const DEFAULT_REFUSALS: Limit = limit(1_000, 2_000, 0, 0);

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Auto,
            dry_run: false,
            allow_capacity: DEFAULT_ALLOW_ENTRIES,
            deny_capacity: DEFAULT_DENY_ENTRIES,
            max_tracked_sources: DEFAULT_MAX_SOURCES,
            max_bans: DEFAULT_MAX_BANS,
            sample_every: 64,
            syn_cookies: SynCookies::Auto,
            require_sockets: true,
            refusals: DEFAULT_REFUSALS,
            ports: PortPolicy::default(),
            fragments: FragmentConfig {
                policy: FragmentPolicy::RateLimit,
                limit: limit(1_000, 2_000, 0, 0),
            },
            reflection: ReflectionConfig {
                ports: REFLECTOR_PORTS.to_vec(),
                trusted: Vec::new(),
                resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
                trust_system_ntp: true,
            },
            bans: BanConfig {
                after_strikes: 200,
                strike_window: Duration::from_secs(10),
                base: Duration::from_secs(600),
                max: Duration::from_secs(86_400),
                ipv6_prefix: 64,
                forget_after: Duration::from_secs(86_400),
            },
            limits: Limits {
                source: DEFAULT_SOURCE_LIMITS,
                aggregate: DEFAULT_AGGREGATE_LIMITS,
            },
            crowdsec: None,
        }
    }
}

/// Parses `90`, `500ms`, `30s`, `10m`, `2h` or `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 30s, 10m, 2h or 1d"))?;
    let millis = match unit {
        "ms" => Some(value),
        "" | "s" => value.checked_mul(1_000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        "d" => value.checked_mul(86_400_000),
        _ => {
            return Err(if unit.starts_with('.') {
                format!("{text:?} is not a whole number; write e.g. 1500ms for 1.5s")
            } else {
                format!("{text:?} has an unknown unit; use ms, s, m, h or d")
            });
        }
    };
    match millis {
        Some(millis) if millis <= 365 * 86_400_000 => Ok(Duration::from_millis(millis)),
        _ => Err(format!("{text:?} is longer than a year")),
    }
}

/// Renders a duration the way [`parse_duration`] reads it.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis >= size && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// The configuration `moat run` starts with: `explicit` if given, else [`DEFAULT_PATH`] if
    /// it exists, else the defaults. Returns the file it came from, for SIGHUP reloads.
    pub fn locate(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        match explicit {
            Some(path) => Ok((Config::load(path)?, Some(path.to_path_buf()))),
            None => {
                let default = Path::new(DEFAULT_PATH);
                if default.exists() {
                    Ok((Config::load(default)?, Some(default.to_path_buf())))
                } else {
                    Ok((Config::default(), None))
                }
            }
        }
    }
}

/// Nanoseconds in `duration`, saturating.
pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The `nameserver` addresses of a resolv.conf, as host prefixes (zone ids dropped; an
/// IPv4-mapped IPv6 address as the IPv4 address its replies come from).
pub fn nameservers(text: &str) -> Vec<Cidr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|addr| addr.split('%').next()?.parse::<std::net::IpAddr>().ok())
        .map(|addr| Cidr::of(addr.to_canonical(), u32::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("m.toml")) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(
            Config::parse("", Path::new("x")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn defaults_round_trip_through_show() {
        let config = Config::default();
        assert_eq!(
            Config::parse(&config.to_toml(), Path::new("x")).unwrap(),
            config
        );
    }

    #[test]
    fn reads_every_section() {
        let text = r#"
mode = "skb"
dry_run = true
deny_capacity = 10
[ports]
tcp = [22, 443]
udp = [443]
[fragments]
policy = "drop"
[refusals]
pps = 25
[reflection]
trusted = ["192.0.2.123", "2001:db8::/48"]
resolv_conf = ""
[bans]
after_strikes = 5
strike_window = "2s"
base = "1m"
max = "1h"
ipv6_prefix = 56
[limits.source.udp]
pps = 7
burst = 9
[limits.aggregate.syn]
pps = 100
burst = 100
"#;
        let config = Config::parse(text, Path::new("x")).unwrap();
        assert_eq!(config.mode, Mode::Skb);
        assert!(config.dry_run);
        assert_eq!(config.deny_capacity, 10);
        assert_eq!(config.ports.tcp, Some(vec![22, 443]));
        assert_eq!(config.fragments.policy, FragmentPolicy::Drop);
        assert_eq!(config.reflection.trusted.len(), 2);
        assert_eq!(config.reflection.resolv_conf, None);
        assert_eq!(config.bans.base, Duration::from_secs(60));
        assert_eq!(config.bans.ipv6_prefix, 56);
        assert_eq!(config.limits.source[Class::Udp as usize].pps, 7);
        assert_eq!(
            config.limits.source[Class::Udp as usize].bps,
            DEFAULT_SOURCE_LIMITS[Class::Udp as usize].bps,
            "unset keys keep their defaults"
        );
        let settings = config.settings(false);
        assert_eq!(
            settings.aggregate[Class::Syn as usize].pps,
            100,
            "the host's limit, shared by every CPU"
        );
        assert_eq!(
            settings.aggregate_pace[Class::Syn as usize],
            filter_common::rate::Pace::of(&settings.aggregate[Class::Syn as usize]),
            "paces compiled"
        );
        assert_eq!(settings.ban_base_ns, 60_000_000_000);
        assert_eq!(
            (settings.refusals.pps, settings.refusals.burst_packets),
            (25, DEFAULT_REFUSALS.burst_packets)
        );
        assert_eq!(
            settings.refusals_pace,
            filter_common::rate::Pace::of(&settings.refusals)
        );
        assert_ne!(settings.flags & FLAG_ENFORCE_TCP_PORTS, 0);
        assert_eq!(settings.flags & FLAG_DRY_RUN, FLAG_DRY_RUN);
    }

    #[test]
    fn every_problem_names_line_and_key() {
        let text = "deny_capacity = 0\n[bans]\nbase = \"10 minutes\"\nipv6_prefix = 200\n[limits.source.syn]\npps = 5\nburst = 0\n[reflection]\ntrusted = [\"10.0.0.1/8\"]\n";
        let found = problems(text);
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(
            found[0].starts_with("line 1: deny_capacity: 0 is out of range"),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.starts_with("line 3: bans.base:")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("line 4: bans.ipv6_prefix:")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("line 7: limits.source.syn.burst: must be at least 1")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.contains("reflection.trusted") && p.contains("did you mean 10.0.0.0/8")),
            "{found:?}"
        );
    }

    #[test]
    fn unknown_key_and_bad_types_name_the_line() {
        let found = problems("mode = \"skb\"\ndryrun = true\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("line 2:") && found[0].contains("dryrun"),
            "{found:?}"
        );
        let found = problems("[limits.source.syn]\npps = \"fast\"\n");
        assert_eq!(
            found,
            ["line 2: limits.source.syn.pps: is the string \"fast\"; it must be a whole number"]
        );
        let found = problems("mode = \"turbo\"");
        assert_eq!(
            found,
            [
                "line 1: mode: \"turbo\" is not a choice here; it must be one of \"auto\", \"native\", \
                 \"skb\""
            ]
        );
        // The key and TOML's words, never the parser's Rust types.
        let found = problems("sample_every = 10\nrefusals = 5\n");
        assert_eq!(
            found,
            ["line 2: refusals: is the number 5; it must be a table, [refusals] with pps, burst"]
        );
        let found = problems("[limits]\nsource = { syn = { pps = 1, burst = true } }\n");
        assert_eq!(
            found,
            ["line 2: limits.source.syn.burst: is true; it must be a whole number"]
        );
        let found = problems("[ports]\ntcp = [80, \"443\"]\n");
        assert_eq!(
            found,
            ["line 2: ports.tcp: holds the string \"443\"; each entry must be a whole number"]
        );
        // Every one, each on its line, with the validator's; a misspelt table is left out
        // whole rather than read as keys of the one before.
        let found = problems(
            "sample_every = \"é\"\n[limits.sorce]\npps = 1\n[ports]\ntcp = [\n  80,\n  \"x\",\n]\n\
             [refusals]\npps = -1\n",
        );
        assert_eq!(
            found,
            [
                "line 1: sample_every: is the string \"é\"; it must be a whole number",
                "line 2: limits.sorce: not a key moat knows; the keys here are \"source\", \
                 \"aggregate\"",
                "line 7: ports.tcp: holds the string \"x\"; each entry must be a whole number",
                "line 10: refusals.pps: -1 is out of range; it must be 0 to 1099511627775",
            ]
        );
        let found = problems("[bans]\nafter_strikes = 3\nbase = \"1m\"\nstrike = 3\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("line 4: bans.strike: not a key moat knows; the keys here are"),
            "{found:?}"
        );
        let found = problems("[bans\nbase = 1\n");
        assert!(
            found[0].starts_with("line 1: invalid table header; expected"),
            "one line: {found:?}"
        );
        let found = problems("[ports]\ntcp = [22, 22, 70000]\n");
        assert_eq!(found.len(), 2, "{found:?}");
        let error = Config::parse("dryrun = 1", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("400d").is_err());
        assert!(
            parse_duration("1.5s")
                .unwrap_err()
                .contains("write e.g. 1500ms")
        );
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn ports_default_open_and_ephemeral_udp_stays_open() {
        let mut config = Config::default();
        let flags = config.port_flags((32768, 60999));
        assert!(
            flags
                .iter()
                .all(|f| f & (PORT_TCP_OPEN | PORT_UDP_OPEN) == PORT_TCP_OPEN | PORT_UDP_OPEN)
        );
        assert_eq!(flags[53] & PORT_REFLECTOR, PORT_REFLECTOR);
        assert_eq!(flags[443] & PORT_REFLECTOR, 0);
        config.ports.tcp = Some(vec![443]);
        config.ports.udp = Some(vec![]);
        let flags = config.port_flags((32768, 60999));
        assert_eq!(flags[443] & PORT_TCP_OPEN, PORT_TCP_OPEN);
        assert_eq!(flags[22] & PORT_TCP_OPEN, 0);
        assert_eq!(flags[53] & PORT_UDP_OPEN, 0);
        assert_eq!(flags[40000] & PORT_UDP_OPEN, PORT_UDP_OPEN);
        assert_eq!(
            flags[40000] & filter_common::ports::PORT_UDP_REPLIES,
            filter_common::ports::PORT_UDP_REPLIES,
            "open for replies only: a datagram there must match a socket"
        );
        config.ports.udp = Some(vec![40000]);
        let flags = config.port_flags((32768, 60999));
        assert_eq!(
            flags[40000] & filter_common::ports::PORT_UDP_REPLIES,
            0,
            "listed"
        );
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch example.com\nnameserver 2001:db8::53\nnameserver ::ffff:198.51.100.53\nnameserver not-an-address\n";
        let found: Vec<String> = nameservers(text).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "192.0.2.53/32",
                "fe80::1/128",
                "2001:db8::53/128",
                "198.51.100.53/32"
            ]
        );
    }
}
