//! The origin's own upstreams that answer from reflector ports: the NTP servers its time daemon
//! is configured with (chrony, ntpd/ntpsec, systemd-timesyncd). Their answers come from port
//! 123, so unless they are trusted the reflection stage would drop the origin's own time sync.
//! Names are resolved when the configuration is applied, with a deadline, and again when
//! [`UpstreamWatch`] sees a source file change (or every [`RESOLVE_AGAIN`]).

use std::{
    net::{IpAddr, ToSocketAddrs},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{
    cidr::Cidr,
    config::Config,
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

/// Time-daemon configuration files read for NTP servers.
pub const NTP_CONFIGS: &[&str] = &[
    "/etc/chrony/chrony.conf",
    "/etc/chrony.conf",
    "/etc/ntp.conf",
    "/etc/ntpsec/ntp.conf",
    "/etc/systemd/timesyncd.conf",
];

/// How long resolving NTP server names may take in all.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(2);

/// The NTP server names and addresses in one time-daemon configuration: `server`, `pool` and
/// `peer` lines (chrony, ntpd) and `NTP=` / `FallbackNTP=` (timesyncd).
pub fn ntp_servers(text: &str) -> Vec<String> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("server" | "pool" | "peer") => servers.extend(words.next().map(str::to_string)),
            Some(first) => {
                for key in ["NTP=", "FallbackNTP="] {
                    if let Some(rest) = first.strip_prefix(key) {
                        servers.extend(
                            std::iter::once(rest)
                                .chain(line.split_whitespace().skip(1))
                                .filter(|s| !s.is_empty())
                                .map(str::to_string),
                        );
                    }
                }
            }
            None => {}
        }
    }
    servers
}

/// Host prefixes for `names`: addresses as they are, names resolved by the system resolver,
/// all within [`RESOLVE_DEADLINE`]; names that do not resolve in time are left out.
pub fn resolve(names: &[String]) -> Vec<Cidr> {
    let mut cidrs = Vec::new();
    let (sender, receiver) = mpsc::channel();
    let mut pending = 0;
    for name in names {
        if let Ok(addr) = name.parse::<IpAddr>() {
            cidrs.extend(host_prefix(addr));
            continue;
        }
        pending += 1;
        let sender = sender.clone();
        let name = name.clone();
        // A detached thread: a resolver that hangs past the deadline is simply not waited for.
        std::thread::spawn(move || {
            let addrs: Vec<IpAddr> = (name.as_str(), 123)
                .to_socket_addrs()
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .unwrap_or_default();
            let _ = sender.send((name, addrs));
        });
    }
    let deadline = Instant::now() + RESOLVE_DEADLINE;
    while pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok((name, addrs)) => {
                pending -= 1;
                if addrs.is_empty() {
                    log::warn!("ntp server did not resolve, not trusted name={name}");
                }
                cidrs.extend(addrs.into_iter().filter_map(host_prefix));
            }
            Err(_) => {
                log::warn!(
                    "ntp server names unresolved after {RESOLVE_DEADLINE:?} count={pending}"
                );
                break;
            }
        }
    }
    cidrs
}

fn host_prefix(addr: IpAddr) -> Option<Cidr> {
    let text = match addr {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    };
    text.parse().ok()
}

/// The NTP servers of every time-daemon configuration on this host, resolved.
pub fn system_ntp_servers() -> Vec<Cidr> {
    let names: Vec<String> = NTP_CONFIGS
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| ntp_servers(&text))
        .collect();
    resolve(&names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chrony_ntpd_and_timesyncd() {
        let chrony = "# comment\npool 2.debian.pool.ntp.org iburst\nserver 192.0.2.123 iburst\nmakestep 1 3\n";
        assert_eq!(
            ntp_servers(chrony),
            ["2.debian.pool.ntp.org", "192.0.2.123"]
        );
        let timesyncd = "[Time]\nNTP=192.0.2.1 2001:db8::123\n#FallbackNTP=ignored\n";
        assert_eq!(ntp_servers(timesyncd), ["192.0.2.1", "2001:db8::123"]);
        let trusted: Vec<String> = resolve(&ntp_servers(timesyncd))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(trusted, ["192.0.2.1/32", "2001:db8::123/128"]);
    }
}
