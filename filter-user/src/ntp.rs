//! The NTP servers the origin's time daemon is configured with (chrony, ntpd/ntpsec,
//! systemd-timesyncd), read from their files and resolved with a deadline. Their answers come
//! from port 123, so the configuration trusts them (`Config::trusted`), and the daemon's
//! upstream watch follows the files. This module depends on nothing but `cidr`.

use std::{
    net::{IpAddr, ToSocketAddrs},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::cidr::Cidr;

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
