//! The origin's own upstreams that answer from reflector ports: the NTP servers its time daemon
//! is configured with (chrony, ntpd/ntpsec, systemd-timesyncd). Their answers come from port
//! 123, so unless they are trusted the reflection stage would drop the origin's own time sync.
//! Names are resolved when the configuration is applied, with a deadline, and again when
//! [`UpstreamWatch`] sees a source file change (or every [`RESOLVE_AGAIN`]).

use std::time::{Duration, Instant};

use crate::{
    cidr::Cidr,
    config::Config,
    ntp::NTP_CONFIGS,
    policy::{self, ControlError},
};

/// How often NTP server names are resolved again even when no file changed (pools rotate).
pub const RESOLVE_AGAIN: Duration = Duration::from_secs(600);

/// Follows the files trusted upstreams come from (resolv.conf, the time daemon's
/// configuration): when one changes, the trusted prefixes are computed again and, if they
/// differ, written to the running filter in one step with the rest of its policy unchanged.
/// No reload is needed, so a resolver added by DHCP is trusted before its first answer.
#[derive(Debug)]
pub struct UpstreamWatch {
    stamps: Vec<Option<(std::time::SystemTime, u64)>>,
    resolved_at: Instant,
    applied: Option<Vec<Cidr>>,
}

/// The files `config` takes trusted upstreams from.
fn sources(config: &Config) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<std::path::PathBuf> =
        config.reflection.resolv_conf.iter().cloned().collect();
    if config.reflection.trust_system_ntp {
        paths.extend(NTP_CONFIGS.iter().map(std::path::PathBuf::from));
    }
    paths
}

/// Modification time and length of each file (None if absent).
fn stamps(config: &Config) -> Vec<Option<(std::time::SystemTime, u64)>> {
    sources(config)
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

impl UpstreamWatch {
    /// Starts watching with the files as they are now (the running policy was compiled from
    /// them).
    pub fn new(config: &Config) -> UpstreamWatch {
        UpstreamWatch {
            stamps: stamps(config),
            resolved_at: Instant::now(),
            applied: None,
        }
    }

    /// Checks the files; if one changed (or names are due to be resolved again), computes the
    /// trusted prefixes and writes them to the filter on `iface` if they differ from the
    /// running ones. A failure is logged and leaves the running policy as it was.
    pub fn follow(&mut self, iface: &str, config: &Config) {
        let now = stamps(config);
        if now == self.stamps && self.resolved_at.elapsed() < RESOLVE_AGAIN {
            return;
        }
        self.stamps = now;
        self.resolved_at = Instant::now();
        let mut wanted = config.trusted();
        wanted.sort();
        if self.applied.as_ref() == Some(&wanted) {
            return;
        }
        let result = policy::update(iface, |running| {
            if running.trusted == wanted {
                return Ok::<bool, ControlError>(false);
            }
            running.trusted.clone_from(&wanted);
            Ok(true)
        });
        match result {
            Ok((_, true)) => log::info!(
                "trusted upstreams changed iface={iface} trusted={}",
                wanted
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Ok((_, false)) => {}
            Err(error) => {
                log::error!(
                    "updating trusted upstreams failed, the running ones are unchanged \
                     iface={iface} error=\"{error}\""
                );
                return;
            }
        }
        self.applied = Some(wanted);
    }
}
