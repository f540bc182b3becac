//! Parsing: the TOML text into the raw form, every key optional and every value with its span,
//! then [`super::Config::parse`], which hands it to the validator.

use serde::Deserialize;
use toml::Spanned;

use super::{rewording, validate::Validator, *};

// ---- the file as written: every key optional, every value with its span ----

pub(super) type S<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) mode: Option<Mode>,
    pub(super) dry_run: Option<bool>,
    pub(super) allow_capacity: S<i64>,
    pub(super) deny_capacity: S<i64>,
    pub(super) max_tracked_sources: S<i64>,
    pub(super) max_bans: S<i64>,
    pub(super) sample_every: S<i64>,
    pub(super) syn_cookies: S<String>,
    pub(super) require_sockets: Option<bool>,
    pub(super) refusals: Option<RawRefusals>,
    pub(super) ports: Option<RawPorts>,
    pub(super) fragments: Option<RawFragments>,
    pub(super) reflection: Option<RawReflection>,
    pub(super) bans: Option<RawBans>,
    pub(super) limits: Option<RawLimits>,
    pub(super) crowdsec: Option<RawCrowdSec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCrowdSec {
    pub(super) api_url: S<String>,
    pub(super) api_key: S<String>,
    pub(super) api_key_file: S<String>,
    pub(super) update_frequency: S<String>,
    pub(super) credentials_file: S<String>,
    pub(super) push: Option<bool>,
}

impl RawCrowdSec {
    /// Whether the table holds no key.
    pub(super) fn is_empty(&self) -> bool {
        self.api_url.is_none()
            && self.api_key.is_none()
            && self.api_key_file.is_none()
            && self.update_frequency.is_none()
            && self.credentials_file.is_none()
            && self.push.is_none()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRefusals {
    pub(super) pps: S<i64>,
    pub(super) burst: S<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPorts {
    pub(super) tcp: S<Vec<i64>>,
    pub(super) udp: S<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFragments {
    pub(super) policy: S<String>,
    pub(super) pps: S<i64>,
    pub(super) burst: S<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReflection {
    pub(super) ports: S<Vec<i64>>,
    pub(super) trusted: Option<Vec<Spanned<String>>>,
    pub(super) resolv_conf: Option<String>,
    pub(super) trust_system_ntp: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBans {
    pub(super) after_strikes: S<i64>,
    pub(super) strike_window: S<String>,
    pub(super) base: S<String>,
    pub(super) max: S<String>,
    ipv6_prefix: S<i64>,
    pub(super) forget_after: S<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) source: Option<RawClassLimits>,
    pub(super) aggregate: Option<RawClassLimits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClassLimits {
    pub(super) syn: Option<RawLimit>,
    pub(super) udp: Option<RawLimit>,
    pub(super) icmp: Option<RawLimit>,
    pub(super) other: Option<RawLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    pub(super) pps: S<i64>,
    pub(super) burst: S<i64>,
    pub(super) bps: S<i64>,
    pub(super) burst_bytes: S<i64>,
}

/// Type errors and unknown keys reported at most, so a file of nonsense still gets a short
/// answer.
const MAX_READ_PROBLEMS: usize = 20;

/// Reads `text` into the raw form, with every value of the wrong type and every unknown key
/// (whose lines are left out of the raw form); a syntax error, which the reader finds before
/// any of those, is the only problem reported.
fn read(text: &str) -> Result<(RawConfig, Vec<Problem>), Problem> {
    let mut problems = Vec::new();
    let mut masked = text.to_string();
    loop {
        let error = match toml::from_str::<RawConfig>(&masked) {
            Ok(raw) => return Ok((raw, problems)),
            Err(error) => error,
        };
        let start = error.span().map(|span| span.start.min(masked.len()));
        let line = start.map(|start| masked[..start].matches('\n').count() + 1);
        // One line: the parser's message spreads over several.
        let message = error
            .message()
            .lines()
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let at = start.and_then(|start| rewording::key_at(&masked, start));
        let (Some(start), Some(reworded)) = (start, rewording::reword(&message, at.as_ref()))
        else {
            if problems.is_empty() {
                return Err(Problem {
                    line,
                    key: None,
                    message,
                });
            }
            // A syntax error only after a line was left out: the line held more than the
            // value (a multi-line array); what was found stands.
            return Ok((RawConfig::default(), problems));
        };
        problems.push(Problem {
            line,
            key: at.map(|at| at.key),
            message: reworded,
        });
        if problems.len() >= MAX_READ_PROBLEMS {
            return Ok((RawConfig::default(), problems));
        }
        // Read again for the next problem.
        leave_out(&mut masked, start);
    }
}

/// Blanks the line of `text` holding byte `at` (for a table header, the whole table), byte for
/// byte and keeping its newlines, so every later span still points at the same place of the
/// file as written.
fn leave_out(text: &mut String, at: usize) {
    let line_start = text[..at].rfind('\n').map_or(0, |newline| newline + 1);
    let end_of_line = |from: usize| {
        text[from..]
            .find('\n')
            .map_or(text.len(), |newline| from + newline)
    };
    let mut line_end = end_of_line(at);
    if text[line_start..].trim_start().starts_with('[') {
        while line_end < text.len() && !text[line_end + 1..].trim_start().starts_with('[') {
            line_end = end_of_line(line_end + 1);
        }
    }
    let blank: String = text[line_start..line_end]
        .chars()
        .map(|c| match c {
            '\n' => "\n".to_string(),
            _ => " ".repeat(c.len_utf8()),
        })
        .collect();
    text.replace_range(line_start..line_end, &blank);
}

impl Config {
    /// Parses and validates TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let (raw, read_problems) = read(text).map_err(|problem| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![problem],
        })?;
        let mut v = Validator {
            text,
            problems: read_problems,
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
        let refusals = raw.refusals.map(|refusals| RawLimit {
            pps: refusals.pps,
            burst: refusals.burst,
            bps: None,
            burst_bytes: None,
        });
        let refusals = v.limit(refusals.as_ref(), "refusals", d.refusals);
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

        // An empty [crowdsec] table (the packaged file's, every key commented out) leaves the
        // bouncer off.
        let crowdsec = raw
            .crowdsec
            .as_ref()
            .filter(|section| !section.is_empty())
            .and_then(|section| v.crowdsec(section));

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
            refusals,
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
            crowdsec,
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
}
