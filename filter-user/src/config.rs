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
    ports::{PORT_COUNT, PORT_REFLECTOR, PORT_TCP_OPEN, PORT_UDP_OPEN},
    rate::Limit,
    settings::{
        FLAG_DRY_RUN, FLAG_ENFORCE_TCP_PORTS, FLAG_ENFORCE_UDP_PORTS, FLAG_TCP_SOCKETS,
        FLAG_UDP_SOCKETS, FragmentPolicy, SYN_COOKIES_ALWAYS, SYN_COOKIES_AUTO, SYN_COOKIES_OFF,
    },
};
use serde::Deserialize;
use toml::Spanned;

use clap::ValueEnum;

use crate::cidr::Cidr;

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
}

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
        }
    }
}

// ---- the file as written: every key optional, every value with its span ----

type S<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<Mode>,
    dry_run: Option<bool>,
    allow_capacity: S<i64>,
    deny_capacity: S<i64>,
    max_tracked_sources: S<i64>,
    max_bans: S<i64>,
    sample_every: S<i64>,
    syn_cookies: S<String>,
    require_sockets: Option<bool>,
    ports: Option<RawPorts>,
    fragments: Option<RawFragments>,
    reflection: Option<RawReflection>,
    bans: Option<RawBans>,
    limits: Option<RawLimits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPorts {
    tcp: S<Vec<i64>>,
    udp: S<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFragments {
    policy: S<String>,
    pps: S<i64>,
    burst: S<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReflection {
    ports: S<Vec<i64>>,
    trusted: Option<Vec<Spanned<String>>>,
    resolv_conf: Option<String>,
    trust_system_ntp: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBans {
    after_strikes: S<i64>,
    strike_window: S<String>,
    base: S<String>,
    max: S<String>,
    ipv6_prefix: S<i64>,
    forget_after: S<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    source: Option<RawClassLimits>,
    aggregate: Option<RawClassLimits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClassLimits {
    syn: Option<RawLimit>,
    udp: Option<RawLimit>,
    icmp: Option<RawLimit>,
    other: Option<RawLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    pps: S<i64>,
    burst: S<i64>,
    bps: S<i64>,
    burst_bytes: S<i64>,
}

/// Collects problems with their lines while a raw file is validated.
struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn line_of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].matches('\n').count() + 1
    }

    fn problem(&mut self, span: Option<Range<usize>>, key: &str, message: String) {
        let line = span.map(|span| self.line_of(span));
        self.problems.push(Problem {
            line,
            key: Some(key.to_string()),
            message,
        });
    }

    /// An integer in `range`, or `default` when absent.
    fn int(&mut self, value: &S<i64>, key: &str, range: Range<i64>, default: u64) -> u64 {
        match value {
            None => default,
            Some(spanned) => {
                let n = *spanned.get_ref();
                if range.contains(&n) {
                    n as u64
                } else {
                    self.problem(
                        Some(spanned.span()),
                        key,
                        format!(
                            "{n} is out of range; it must be {} to {}",
                            range.start,
                            range.end - 1
                        ),
                    );
                    default
                }
            }
        }
    }

    fn duration(&mut self, value: &S<String>, key: &str, default: Duration) -> Duration {
        match value {
            None => default,
            Some(spanned) => match parse_duration(spanned.get_ref()) {
                Ok(duration) => duration,
                Err(message) => {
                    self.problem(Some(spanned.span()), key, message);
                    default
                }
            },
        }
    }

    fn ports(&mut self, value: &S<Vec<i64>>, key: &str) -> Option<Vec<u16>> {
        let spanned = value.as_ref()?;
        let mut ports = Vec::new();
        for port in spanned.get_ref() {
            match u16::try_from(*port) {
                Ok(port) if port != 0 => {
                    if ports.contains(&port) {
                        self.problem(
                            Some(spanned.span()),
                            key,
                            format!("port {port} is listed twice"),
                        );
                    }
                    ports.push(port);
                }
                _ => self.problem(
                    Some(spanned.span()),
                    key,
                    format!("{port} is not a port; ports are 1 to 65535"),
                ),
            }
        }
        Some(ports)
    }

    fn limit(&mut self, raw: Option<&RawLimit>, key: &str, default: Limit) -> Limit {
        let Some(raw) = raw else {
            return default;
        };
        const MAX: i64 = 1 << 40;
        let result = Limit {
            pps: self.int(&raw.pps, &format!("{key}.pps"), 0..MAX, default.pps),
            burst_packets: self.int(
                &raw.burst,
                &format!("{key}.burst"),
                0..MAX,
                default.burst_packets,
            ),
            bps: self.int(&raw.bps, &format!("{key}.bps"), 0..MAX, default.bps),
            burst_bytes: self.int(
                &raw.burst_bytes,
                &format!("{key}.burst_bytes"),
                0..MAX,
                default.burst_bytes,
            ),
        };
        let span = raw.pps.as_ref().or(raw.burst.as_ref()).map(Spanned::span);
        if result.pps != 0 && result.burst_packets == 0 {
            self.problem(
                span.clone(),
                &format!("{key}.burst"),
                "must be at least 1 when pps is set".into(),
            );
        }
        let span = raw
            .bps
            .as_ref()
            .or(raw.burst_bytes.as_ref())
            .map(Spanned::span);
        if result.bps != 0 && result.burst_bytes < MIN_BURST_BYTES {
            self.problem(
                span,
                &format!("{key}.burst_bytes"),
                format!("must be at least {MIN_BURST_BYTES} (one full frame) when bps is set"),
            );
        }
        result
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
            return Err(format!(
                "{text:?} has an unknown unit; use ms, s, m, h or d"
            ));
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
    /// Parses and validates TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            let line = error.span().map(|span| {
                let end = span.start.min(text.len());
                text[..end].matches('\n').count() + 1
            });
            ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: vec![Problem {
                    line,
                    key: None,
                    message: error.message().trim().to_string(),
                }],
            }
        })?;
        let mut v = Validator {
            text,
            problems: Vec::new(),
        };
        let d = Config::default();
        let capacity = |v: &mut Validator, value: &S<i64>, key: &str, default: u32| {
            v.int(
                value,
                key,
                1..i64::from(MAX_CAPACITY) + 1,
                u64::from(default),
            ) as u32
        };
        let ports = raw.ports.unwrap_or_default();
        let fragments = raw.fragments.unwrap_or_default();
        let reflection = raw.reflection.unwrap_or_default();
        let bans = raw.bans.unwrap_or_default();
        let limits = raw.limits.unwrap_or_default();

        let fragment_policy = match &fragments.policy {
            None => d.fragments.policy,
            Some(spanned) => {
                match spanned.get_ref().as_str() {
                    "pass" => FragmentPolicy::Pass,
                    "rate-limit" => FragmentPolicy::RateLimit,
                    "drop" => FragmentPolicy::Drop,
                    other => {
                        v.problem(
                        Some(spanned.span()),
                        "fragments.policy",
                        format!("{other:?} is not a policy; use \"pass\", \"rate-limit\" or \"drop\""),
                    );
                        d.fragments.policy
                    }
                }
            }
        };
        let fragment_limit = v.limit(
            Some(&RawLimit {
                pps: fragments.pps,
                burst: fragments.burst,
                bps: None,
                burst_bytes: None,
            }),
            "fragments",
            d.fragments.limit,
        );

        let mut trusted = Vec::new();
        for entry in reflection.trusted.iter().flatten() {
            match entry.get_ref().parse::<Cidr>() {
                Ok(cidr) if trusted.contains(&cidr) => v.problem(
                    Some(entry.span()),
                    "reflection.trusted",
                    format!("{cidr} is listed twice"),
                ),
                Ok(cidr) => trusted.push(cidr),
                Err(error) => {
                    v.problem(Some(entry.span()), "reflection.trusted", error.to_string())
                }
            }
        }
        if trusted.len() > MAX_TRUSTED_PER_SLOT as usize {
            v.problem(
                None,
                "reflection.trusted",
                format!(
                    "{} prefixes listed; at most {MAX_TRUSTED_PER_SLOT} fit (list covering \
                     prefixes instead)",
                    trusted.len()
                ),
            );
        }

        let class_limits = |v: &mut Validator,
                            raw: Option<&RawClassLimits>,
                            scope: &str,
                            defaults: [Limit; CLASS_COUNT]| {
            let raw = raw.map(|r| {
                [
                    r.syn.as_ref(),
                    r.udp.as_ref(),
                    r.icmp.as_ref(),
                    r.other.as_ref(),
                ]
            });
            let mut out = defaults;
            for class in Class::ALL {
                let raw_limit = raw.and_then(|r| r[class as usize]);
                out[class as usize] = v.limit(
                    raw_limit,
                    &format!("limits.{scope}.{}", class.label()),
                    defaults[class as usize],
                );
            }
            out
        };

        let syn_cookies = match &raw.syn_cookies {
            None => d.syn_cookies,
            Some(spanned) => SynCookies::parse(spanned.get_ref()).unwrap_or_else(|| {
                v.problem(
                    Some(spanned.span()),
                    "syn_cookies",
                    format!(
                        "{:?} is not a mode; use \"auto\", \"always\" or \"off\"",
                        spanned.get_ref()
                    ),
                );
                d.syn_cookies
            }),
        };

        let config = Config {
            mode: raw.mode.unwrap_or(d.mode),
            dry_run: raw.dry_run.unwrap_or(d.dry_run),
            allow_capacity: capacity(
                &mut v,
                &raw.allow_capacity,
                "allow_capacity",
                d.allow_capacity,
            ),
            deny_capacity: capacity(&mut v, &raw.deny_capacity, "deny_capacity", d.deny_capacity),
            max_tracked_sources: capacity(
                &mut v,
                &raw.max_tracked_sources,
                "max_tracked_sources",
                d.max_tracked_sources,
            ),
            max_bans: capacity(&mut v, &raw.max_bans, "max_bans", d.max_bans),
            sample_every: v.int(
                &raw.sample_every,
                "sample_every",
                0..i64::from(u32::MAX) + 1,
                u64::from(d.sample_every),
            ) as u32,
            syn_cookies,
            require_sockets: raw.require_sockets.unwrap_or(d.require_sockets),
            ports: PortPolicy {
                tcp: v.ports(&ports.tcp, "ports.tcp"),
                udp: v.ports(&ports.udp, "ports.udp"),
            },
            fragments: FragmentConfig {
                policy: fragment_policy,
                limit: fragment_limit,
            },
            reflection: ReflectionConfig {
                ports: v
                    .ports(&reflection.ports, "reflection.ports")
                    .unwrap_or(d.reflection.ports),
                trusted,
                resolv_conf: match reflection.resolv_conf {
                    None => d.reflection.resolv_conf,
                    Some(path) if path.is_empty() => None,
                    Some(path) => Some(PathBuf::from(path)),
                },
                trust_system_ntp: reflection
                    .trust_system_ntp
                    .unwrap_or(d.reflection.trust_system_ntp),
            },
            bans: BanConfig {
                after_strikes: v.int(
                    &bans.after_strikes,
                    "bans.after_strikes",
                    0..1_000_000_001,
                    u64::from(d.bans.after_strikes),
                ) as u32,
                strike_window: v.duration(
                    &bans.strike_window,
                    "bans.strike_window",
                    d.bans.strike_window,
                ),
                base: v.duration(&bans.base, "bans.base", d.bans.base),
                max: v.duration(&bans.max, "bans.max", d.bans.max),
                ipv6_prefix: v.int(
                    &bans.ipv6_prefix,
                    "bans.ipv6_prefix",
                    1..129,
                    u64::from(d.bans.ipv6_prefix),
                ) as u32,
                forget_after: v.duration(
                    &bans.forget_after,
                    "bans.forget_after",
                    d.bans.forget_after,
                ),
            },
            limits: Limits {
                source: class_limits(&mut v, limits.source.as_ref(), "source", d.limits.source),
                aggregate: class_limits(
                    &mut v,
                    limits.aggregate.as_ref(),
                    "aggregate",
                    d.limits.aggregate,
                ),
            },
        };
        if config.bans.max < config.bans.base {
            let span = bans.max.as_ref().or(bans.base.as_ref()).map(Spanned::span);
            v.problem(
                span,
                "bans.max",
                "must not be shorter than bans.base".into(),
            );
        }
        if v.problems.is_empty() {
            Ok(config)
        } else {
            v.problems.sort_by_key(|problem| problem.line);
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: v.problems,
            })
        }
    }

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

    /// The `SETTINGS` value, paces compiled, durations in ns. Aggregate limits are the host's:
    /// every CPU takes from one shared bucket per class.
    pub fn settings(&self, dry_run: bool) -> Settings {
        let mut flags = 0;
        if dry_run || self.dry_run {
            flags |= FLAG_DRY_RUN;
        }
        if self.ports.tcp.is_some() {
            flags |= FLAG_ENFORCE_TCP_PORTS;
        }
        if self.ports.udp.is_some() {
            flags |= FLAG_ENFORCE_UDP_PORTS;
        }
        if self.require_sockets {
            flags |= FLAG_TCP_SOCKETS | FLAG_UDP_SOCKETS;
        }
        Settings {
            flags,
            fragment_policy: self.fragments.policy as u32,
            clock_ns: 0,
            ban_base_ns: duration_ns(self.bans.base),
            ban_max_ns: duration_ns(self.bans.max),
            strike_window_ns: duration_ns(self.bans.strike_window),
            ban_after_strikes: self.bans.after_strikes,
            v6_source_prefix: self.bans.ipv6_prefix,
            source: self.limits.source,
            aggregate: self.limits.aggregate,
            fragments: self.fragments.limit,
            sample_every: self.sample_every,
            syn_cookies: self.syn_cookies.setting(),
            verified_ttl_ns: duration_ns(VERIFIED_FOR),
            slot: 0,
            _pad: 0,
            ..Settings::default()
        }
        .compiled()
    }

    /// The `PORTS` flags for every port: open TCP and UDP ports (all when unlisted; the
    /// `ephemeral` range always open for UDP replies) and reflector source ports.
    pub fn port_flags(&self, ephemeral: (u16, u16)) -> Vec<u8> {
        let mut flags = vec![0u8; PORT_COUNT as usize];
        for (port, flag) in flags.iter_mut().enumerate() {
            let port = port as u16;
            let tcp_open = self
                .ports
                .tcp
                .as_ref()
                .is_none_or(|open| open.contains(&port));
            let udp_open = self
                .ports
                .udp
                .as_ref()
                .is_none_or(|open| open.contains(&port))
                || (ephemeral.0..=ephemeral.1).contains(&port);
            if tcp_open {
                *flag |= PORT_TCP_OPEN;
            }
            if udp_open {
                *flag |= PORT_UDP_OPEN;
            }
            if self.reflection.ports.contains(&port) {
                *flag |= PORT_REFLECTOR;
            }
        }
        flags
    }

    /// Trusted upstreams: the configured ones, the nameservers of `resolv_conf` and, with
    /// `trust_system_ntp`, the time daemon's NTP servers, as /32 or
    /// /128 prefixes. A missing resolv.conf yields only the configured ones.
    pub fn trusted(&self) -> Vec<Cidr> {
        let mut trusted = self.reflection.trusted.clone();
        if let Some(path) = &self.reflection.resolv_conf
            && let Ok(text) = std::fs::read_to_string(path)
        {
            for cidr in nameservers(&text) {
                if !trusted.contains(&cidr) {
                    trusted.push(cidr);
                }
            }
        }
        if self.reflection.trust_system_ntp {
            for cidr in crate::ntp::system_ntp_servers() {
                if !trusted.contains(&cidr) {
                    trusted.push(cidr);
                }
            }
        }
        trusted
    }

    /// The whole configuration as TOML, every key present (what `moat config show` prints).
    pub fn to_toml(&self) -> String {
        let list = |ports: &Option<Vec<u16>>| match ports {
            None => "# every port open\n".to_string(),
            Some(ports) => format!("{ports:?}\n"),
        };
        let mut out = String::new();
        out.push_str(&format!("mode = \"{}\"\n", self.mode.name()));
        out.push_str(&format!("dry_run = {}\n", self.dry_run));
        out.push_str(&format!("allow_capacity = {}\n", self.allow_capacity));
        out.push_str(&format!("deny_capacity = {}\n", self.deny_capacity));
        out.push_str(&format!(
            "max_tracked_sources = {}\n",
            self.max_tracked_sources
        ));
        out.push_str(&format!("max_bans = {}\n", self.max_bans));
        out.push_str(&format!("sample_every = {}\n", self.sample_every));
        out.push_str(&format!("syn_cookies = \"{}\"\n", self.syn_cookies.name()));
        out.push_str(&format!("require_sockets = {}\n", self.require_sockets));
        out.push_str("\n[ports]\n");
        match &self.ports.tcp {
            None => out.push_str("# tcp: every port open\n"),
            tcp => out.push_str(&format!("tcp = {}", list(tcp))),
        }
        match &self.ports.udp {
            None => out.push_str("# udp: every port open\n"),
            udp => out.push_str(&format!("udp = {}", list(udp))),
        }
        out.push_str("\n[fragments]\n");
        let policy = match self.fragments.policy {
            FragmentPolicy::Pass => "pass",
            FragmentPolicy::RateLimit => "rate-limit",
            FragmentPolicy::Drop => "drop",
        };
        out.push_str(&format!("policy = \"{policy}\"\n"));
        out.push_str(&format!(
            "pps = {}\nburst = {}\n",
            self.fragments.limit.pps, self.fragments.limit.burst_packets
        ));
        out.push_str("\n[reflection]\n");
        out.push_str(&format!("ports = {:?}\n", self.reflection.ports));
        let trusted: Vec<String> = self
            .reflection
            .trusted
            .iter()
            .map(ToString::to_string)
            .collect();
        out.push_str(&format!("trusted = {trusted:?}\n"));
        let resolv = self
            .reflection
            .resolv_conf
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        out.push_str(&format!("resolv_conf = {resolv:?}\n"));
        out.push_str(&format!(
            "trust_system_ntp = {}\n",
            self.reflection.trust_system_ntp
        ));
        out.push_str("\n[bans]\n");
        out.push_str(&format!("after_strikes = {}\n", self.bans.after_strikes));
        out.push_str(&format!(
            "strike_window = \"{}\"\n",
            format_duration(self.bans.strike_window)
        ));
        out.push_str(&format!("base = \"{}\"\n", format_duration(self.bans.base)));
        out.push_str(&format!("max = \"{}\"\n", format_duration(self.bans.max)));
        out.push_str(&format!("ipv6_prefix = {}\n", self.bans.ipv6_prefix));
        out.push_str(&format!(
            "forget_after = \"{}\"\n",
            format_duration(self.bans.forget_after)
        ));
        for (scope, limits) in [
            ("source", &self.limits.source),
            ("aggregate", &self.limits.aggregate),
        ] {
            for class in Class::ALL {
                let l = limits[class as usize];
                out.push_str(&format!(
                    "\n[limits.{scope}.{}]\npps = {}\nburst = {}\nbps = {}\nburst_bytes = {}\n",
                    class.label(),
                    l.pps,
                    l.burst_packets,
                    l.bps,
                    l.burst_bytes
                ));
            }
        }
        out
    }
}

/// Nanoseconds in `duration`, saturating.
pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The `nameserver` addresses of a resolv.conf, as host prefixes (zone ids dropped).
pub fn nameservers(text: &str) -> Vec<Cidr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|addr| addr.split('%').next()?.parse::<Cidr>().ok())
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
                .any(|p| p.starts_with("line 6: limits.source.syn.burst: must be at least 1")),
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
        assert!(found[0].starts_with("line 2:"), "{found:?}");
        let found = problems("mode = \"turbo\"");
        assert!(found[0].contains("turbo"), "{found:?}");
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
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch example.com\nnameserver 2001:db8::53\n";
        let found: Vec<String> = nameservers(text).iter().map(ToString::to_string).collect();
        assert_eq!(found, ["192.0.2.53/32", "fe80::1/128", "2001:db8::53/128"]);
    }
}
