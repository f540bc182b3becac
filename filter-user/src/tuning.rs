//! `moat set KEY VALUE`: change one threshold of a running filter without reloading the
//! program. Keys are the configuration file's dotted keys; values are validated as the file's
//! are. The change is a policy update like a reload's: under the interface's policy lock, in
//! one step as packets see it (see [`crate::policy`]). A SIGHUP reload replaces these live
//! changes with the file. `moat config show --iface` reads the running values back.

use aya::maps::MapError;
use filter_common::{
    Class, Settings,
    maps::SETTINGS,
    rate::Limit,
    settings::{FLAG_DRY_RUN, FragmentPolicy},
};

use std::time::Duration;

use crate::{
    config::{LIMIT_BOUND, MIN_BURST_BYTES, duration_ns, format_duration, parse_duration},
    pins::{NotRunning, PinDir},
    policy::{self, ControlError},
};

/// A `moat set` that failed; the settings are as they were.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    /// No such key.
    #[error("unknown key {key:?}; settable keys: {known}")]
    UnknownKey {
        /// The key given.
        key: String,
        /// The keys that exist.
        known: String,
    },
    /// A key of the configuration file that `moat set` cannot change live.
    #[error(
        "{key} cannot be changed live; set it in the configuration file and reload (SIGHUP; \
         mode and capacities take a restart)"
    )]
    NotLive {
        /// The key given.
        key: String,
    },
    /// The value does not fit the key.
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What would be right.
        reason: String,
    },
    /// The filter is not running on the interface.
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
    /// The kernel refused; the settings are as they were.
    #[error("changing the settings: {0}")]
    Policy(#[from] ControlError),
    /// The settings changed, but the IPv6 bans could not follow the new prefix.
    #[error("moving the IPv6 bans to the new prefix: {0}")]
    Bans(#[from] crate::bans::BanError),
}

/// Keeps `MapError` in this module's vocabulary for callers matching on kernel failures.
pub type KernelError = MapError;

/// The keys `moat set` accepts.
pub fn keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "dry_run",
        "sample_every",
        "fragments.policy",
        "fragments.pps",
        "fragments.burst",
        "refusals.pps",
        "refusals.burst",
        "bans.after_strikes",
        "bans.strike_window",
        "bans.base",
        "bans.max",
        "bans.ipv6_prefix",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    for scope in ["source", "aggregate"] {
        for class in Class::ALL {
            for field in ["pps", "burst", "bps", "burst_bytes"] {
                keys.push(format!("limits.{scope}.{}.{field}", class.label()));
            }
        }
    }
    keys
}

/// Applies `key = value` to `settings` (limits are the host's, as in the configuration; the
/// paces follow when the settings are written). On error `settings` is unchanged.
pub fn apply(settings: &mut Settings, key: &str, value: &str) -> Result<(), TuningError> {
    let mut next = *settings;
    apply_to(&mut next, key, value)?;
    *settings = next;
    Ok(())
}

fn apply_to(settings: &mut Settings, key: &str, value: &str) -> Result<(), TuningError> {
    let invalid = |reason: &str| TuningError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let number = || {
        value
            .parse::<u64>()
            .map_err(|_| invalid("expected a whole number"))
    };
    // A limit's field, in the file's range.
    let limit = || match number()? {
        n if n < LIMIT_BOUND => Ok(n),
        _ => Err(invalid(&format!(
            "out of range; it must be 0 to {}",
            LIMIT_BOUND - 1
        ))),
    };
    match key {
        "dry_run" => match value {
            "true" => settings.flags |= FLAG_DRY_RUN,
            "false" => settings.flags &= !FLAG_DRY_RUN,
            _ => return Err(invalid("expected true or false")),
        },
        "fragments.policy" => {
            settings.fragment_policy = match value {
                "pass" => FragmentPolicy::Pass,
                "rate-limit" => FragmentPolicy::RateLimit,
                "drop" => FragmentPolicy::Drop,
                _ => return Err(invalid("expected pass, rate-limit or drop")),
            } as u32;
        }
        "sample_every" => {
            settings.sample_every =
                u32::try_from(number()?).map_err(|_| invalid("at most 4294967295"))?;
        }
        "fragments.pps" => settings.fragments.pps = limit()?,
        "fragments.burst" => settings.fragments.burst_packets = limit()?,
        "refusals.pps" => settings.refusals.pps = limit()?,
        "refusals.burst" => settings.refusals.burst_packets = limit()?,
        "bans.after_strikes" => {
            settings.ban_after_strikes =
                u32::try_from(number()?).map_err(|_| invalid("at most 4294967295"))?;
        }
        "bans.strike_window" | "bans.base" | "bans.max" => {
            let ns = duration_ns(parse_duration(value).map_err(|reason| invalid(&reason))?);
            match key {
                "bans.strike_window" => settings.strike_window_ns = ns,
                "bans.base" => settings.ban_base_ns = ns,
                _ => settings.ban_max_ns = ns,
            }
        }
        "bans.ipv6_prefix" => match number()? {
            n @ 1..=128 => settings.v6_source_prefix = n as u32,
            _ => return Err(invalid("a prefix length from 1 to 128")),
        },
        _ => {
            let Some((scope, class, field)) = limit_key(key) else {
                if crate::config::schema::keys()
                    .iter()
                    .any(|known| known.name == key)
                {
                    return Err(TuningError::NotLive {
                        key: key.to_string(),
                    });
                }
                return Err(TuningError::UnknownKey {
                    key: key.to_string(),
                    known: crate::config::schema::live_summary(),
                });
            };
            *limit_field(settings, scope, class, field) = limit()?;
        }
    }
    check(settings).map_err(|reason| invalid(&reason))
}

/// The value `settings` hold for the live `key`, written as `moat set` takes it; `None` for a
/// key `moat set` does not take.
pub fn value(settings: &Settings, key: &str) -> Option<String> {
    let duration = |ns: u64| format_duration(Duration::from_nanos(ns));
    Some(match key {
        "dry_run" => settings.dry_run().to_string(),
        "sample_every" => settings.sample_every.to_string(),
        "fragments.policy" => match FragmentPolicy::from_u32(settings.fragment_policy) {
            FragmentPolicy::Pass => "pass",
            FragmentPolicy::RateLimit => "rate-limit",
            FragmentPolicy::Drop => "drop",
        }
        .to_string(),
        "fragments.pps" => settings.fragments.pps.to_string(),
        "fragments.burst" => settings.fragments.burst_packets.to_string(),
        "refusals.pps" => settings.refusals.pps.to_string(),
        "refusals.burst" => settings.refusals.burst_packets.to_string(),
        "bans.after_strikes" => settings.ban_after_strikes.to_string(),
        "bans.strike_window" => duration(settings.strike_window_ns),
        "bans.base" => duration(settings.ban_base_ns),
        "bans.max" => duration(settings.ban_max_ns),
        "bans.ipv6_prefix" => settings.v6_source_prefix.to_string(),
        _ => {
            let (scope, class, field) = limit_key(key)?;
            let mut copy = *settings;
            limit_field(&mut copy, scope, class, field).to_string()
        }
    })
}

/// The running filter's value of every key `moat set` takes, as `key = value` lines in the
/// configuration file's syntax (`moat config show --iface`).
pub fn show(iface: &str) -> Result<String, TuningError> {
    let pins = PinDir::for_iface(iface);
    pins.running_map(iface, SETTINGS)?;
    let settings = policy::pinned_settings(&pins)?;
    let mut out = String::new();
    for key in keys() {
        let Some(value) = value(&settings, &key) else {
            continue;
        };
        let quoted = value == "true" || value == "false" || value.parse::<u64>().is_ok();
        if quoted {
            out.push_str(&format!("{key} = {value}\n"));
        } else {
            out.push_str(&format!("{key} = {value:?}\n"));
        }
    }
    Ok(out)
}

/// The word of `settings` a `limits.SCOPE.CLASS.FIELD` key names (from [`limit_key`]).
fn limit_field<'a>(
    settings: &'a mut Settings,
    scope: &str,
    class: Class,
    field: &str,
) -> &'a mut u64 {
    let limit = if scope == "source" {
        &mut settings.source[class as usize]
    } else {
        &mut settings.aggregate[class as usize]
    };
    match field {
        "pps" => &mut limit.pps,
        "burst" => &mut limit.burst_packets,
        "bps" => &mut limit.bps,
        _ => &mut limit.burst_bytes,
    }
}

/// `(scope, class, field)` of a `limits.SCOPE.CLASS.FIELD` key.
fn limit_key(key: &str) -> Option<(&str, Class, &str)> {
    let mut parts = key.split('.');
    if parts.next()? != "limits" {
        return None;
    }
    let scope = parts
        .next()
        .filter(|s| *s == "source" || *s == "aggregate")?;
    let class_name = parts.next()?;
    let class = Class::ALL.into_iter().find(|c| c.label() == class_name)?;
    let field = parts
        .next()
        .filter(|f| ["pps", "burst", "bps", "burst_bytes"].contains(f))?;
    parts.next().is_none().then_some((scope, class, field))
}

/// The rules every limit keeps, as in the configuration file.
fn check(settings: &Settings) -> Result<(), String> {
    let limits = settings
        .source
        .iter()
        .chain(settings.aggregate.iter())
        .chain([&settings.fragments, &settings.refusals]);
    for limit in limits {
        check_limit(limit)?;
    }
    if settings.ban_max_ns < settings.ban_base_ns {
        return Err("bans.max must not be shorter than bans.base".to_string());
    }
    Ok(())
}

fn check_limit(limit: &Limit) -> Result<(), String> {
    if limit.pps != 0 && limit.burst_packets == 0 {
        return Err("burst must be at least 1 when pps is set".to_string());
    }
    if limit.bps != 0 && limit.burst_bytes < MIN_BURST_BYTES {
        return Err(format!(
            "burst_bytes must be at least {MIN_BURST_BYTES} (one full frame) when bps is set"
        ));
    }
    Ok(())
}

/// Sets `key` to `value` on the filter running on `iface`.
pub fn set(iface: &str, key: &str, value: &str) -> Result<(), TuningError> {
    PinDir::for_iface(iface).running_map(iface, SETTINGS)?;
    let mut before = 0;
    let (policy, _) = policy::update(iface, |policy| {
        before = policy.settings.v6_source_prefix;
        apply(&mut policy.settings, key, value)?;
        Ok::<bool, TuningError>(true)
    })?;
    if policy.settings.v6_source_prefix != before {
        crate::bans::PinnedBans::open(iface)?.follow_v6_prefix(before)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn sets_limits_and_checks_them() {
        let mut settings = Settings::default();
        let error = apply(&mut settings, "limits.source.udp.pps", "100").unwrap_err();
        assert!(
            error.to_string().contains("burst must be at least 1"),
            "{error}"
        );
        apply(&mut settings, "limits.source.udp.burst", "10").unwrap();
        apply(&mut settings, "limits.source.udp.pps", "100").unwrap();
        assert_eq!(settings.source[Class::Udp as usize].pps, 100);
        apply(&mut settings, "limits.aggregate.syn.burst", "9").unwrap();
        apply(&mut settings, "limits.aggregate.syn.pps", "1000").unwrap();
        assert_eq!(
            settings.aggregate[Class::Syn as usize].pps,
            1000,
            "the host's"
        );
        assert_eq!(settings.aggregate[Class::Syn as usize].burst_packets, 9);
        let before = settings;
        let error = apply(&mut settings, "limits.source.udp.burst", "0").unwrap_err();
        assert!(
            error.to_string().contains("burst must be at least 1"),
            "{error}"
        );
        assert_eq!(settings, before, "a refused value changes nothing");
        apply(&mut settings, "bans.max", "1h").unwrap();
        apply(&mut settings, "bans.base", "10m").unwrap();
        assert_eq!(settings.ban_base_ns, 600_000_000_000);
        assert!(apply(&mut settings, "bans.max", "1m").is_err());
        assert!(apply(&mut settings, "dry_run", "yes").is_err());
        assert!(apply(&mut settings, "limits.source.tcp.pps", "1").is_err());
        assert!(matches!(
            apply(&mut settings, "nonsense", "1"),
            Err(TuningError::UnknownKey { .. })
        ));
        for not_live in ["mode", "ports.tcp", "deny_capacity"] {
            assert!(
                matches!(
                    apply(&mut settings, not_live, "1"),
                    Err(TuningError::NotLive { .. })
                ),
                "{not_live}"
            );
        }
        assert!(apply(&mut settings, "limits.source.udp.pps", "-5").is_err());
        assert!(apply(&mut settings, "bans.ipv6_prefix", "129").is_err());
        assert_eq!(keys().len(), 12 + 32);
    }

    #[test]
    fn every_live_key_reads_back_what_set_wrote() {
        let mut settings = Policy::compile(&crate::config::Config::default(), false).settings;
        for (key, written) in [
            ("dry_run", "true"),
            ("sample_every", "7"),
            ("fragments.policy", "drop"),
            ("bans.strike_window", "90s"),
            ("bans.base", "10m"),
            ("bans.max", "2h"),
            ("bans.ipv6_prefix", "48"),
            ("refusals.pps", "25"),
            ("refusals.burst", "5"),
            ("limits.source.icmp.burst", "9"),
            ("limits.aggregate.udp.burst_bytes", "3000"),
            ("limits.aggregate.udp.bps", "123456"),
        ] {
            apply(&mut settings, key, written).unwrap();
            assert_eq!(value(&settings, key).as_deref(), Some(written), "{key}");
        }
        for key in keys() {
            let before = settings;
            let read = value(&settings, &key).unwrap_or_else(|| panic!("{key} reads back"));
            apply(&mut settings, &key, &read).unwrap();
            assert_eq!(settings, before, "{key} = {read} changes nothing");
        }
        assert_eq!(value(&settings, "mode"), None);
    }
}
