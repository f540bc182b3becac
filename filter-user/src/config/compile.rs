//! Compiling: a validated [`Config`] into what the XDP program reads (settings, port flags,
//! trusted upstreams).

use super::*;

impl Config {
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
            refusals: self.refusals,
            sample_every: self.sample_every,
            syn_cookies: self.syn_cookies.setting(),
            verified_ttl_ns: duration_ns(VERIFIED_FOR),
            slot: 0,
            source_sets: filter_common::sources::sets_for(self.max_tracked_sources),
            ..Settings::default()
        }
        .compiled()
    }

    /// The `PORTS` flags for every port: open TCP and UDP ports (all when unlisted; the
    /// `ephemeral` range always open for UDP replies, marked as such) and reflector source
    /// ports.
    pub fn port_flags(&self, ephemeral: (u16, u16)) -> Vec<u8> {
        let mut flags = vec![0u8; PORT_COUNT as usize];
        for (port, flag) in flags.iter_mut().enumerate() {
            let port = port as u16;
            let tcp_open = self
                .ports
                .tcp
                .as_ref()
                .is_none_or(|open| open.contains(&port));
            let udp_listed = self
                .ports
                .udp
                .as_ref()
                .is_none_or(|open| open.contains(&port));
            let udp_replies = !udp_listed && (ephemeral.0..=ephemeral.1).contains(&port);
            if tcp_open {
                *flag |= PORT_TCP_OPEN;
            }
            if udp_listed {
                *flag |= PORT_UDP_OPEN;
            }
            if udp_replies {
                *flag |= PORT_UDP_OPEN | PORT_UDP_REPLIES;
            }
            if self.reflection.ports.contains(&port) {
                *flag |= PORT_REFLECTOR;
            }
        }
        flags
    }

    /// What to tell the operator when `reflection.resolv_conf` names a file that is not there
    /// (a typo, or another distribution's resolver path): no resolver is trusted from it, so
    /// the host's own DNS answers meet the reflection stage. Not an error: the file may appear
    /// later (the daemon follows it), and a host may have no resolver.
    pub fn resolv_conf_warning(&self) -> Option<String> {
        let path = self.reflection.resolv_conf.as_ref()?;
        (!path.exists()).then(|| {
            format!(
                "reflection.resolv_conf names no file, so no resolver is trusted from it (set the \
                 file your resolver writes, or \"\" for none) path={}",
                path.display()
            )
        })
    }

    /// Trusted upstreams: the configured ones, the nameservers of `resolv_conf` and, with
    /// `trust_system_ntp`, the time daemon's NTP servers, as /32 or
    /// /128 prefixes. A missing resolv.conf yields only the configured ones.
    pub fn trusted(&self) -> Vec<Cidr> {
        let mut system = Vec::new();
        if let Some(path) = &self.reflection.resolv_conf
            && let Ok(text) = std::fs::read_to_string(path)
        {
            system.extend(nameservers(&text));
        }
        if self.reflection.trust_system_ntp {
            system.extend(crate::ntp::system_ntp_servers());
        }
        with_system_upstreams(self.reflection.trusted.clone(), system)
    }
}

/// `configured` and then those of `system` it lacks, as long as each family's trie slot has
/// room (`MAX_TRUSTED_PER_SLOT` prefixes): validation counts only the configured prefixes, so
/// a system upstream past the room is left out, with a warning, rather than fail every policy
/// write that follows.
fn with_system_upstreams(configured: Vec<Cidr>, system: Vec<Cidr>) -> Vec<Cidr> {
    let room = filter_common::maps::MAX_TRUSTED_PER_SLOT as usize;
    let mut trusted = configured;
    for cidr in system {
        if trusted.contains(&cidr) {
            continue;
        }
        let family = trusted
            .iter()
            .filter(|held| matches!(held, Cidr::V4 { .. }) == matches!(cidr, Cidr::V4 { .. }))
            .count();
        if family >= room {
            log::warn!(
                "a system upstream is not trusted: reflection.trusted fills its family's \
                 {room} prefixes upstream={cidr}"
            );
            continue;
        }
        trusted.push(cidr);
    }
    trusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(n: u32) -> Cidr {
        Cidr::of(std::net::Ipv4Addr::from(0xC000_0000 + n).into(), 32)
    }

    #[test]
    fn system_upstreams_join_only_while_their_family_has_room() {
        let room = filter_common::maps::MAX_TRUSTED_PER_SLOT;
        let resolver_v6: Cidr = "2001:db8::53/128".parse().expect("valid");
        let configured: Vec<Cidr> = (0..room - 1).map(v4).collect();
        let trusted = with_system_upstreams(
            configured.clone(),
            vec![v4(0), v4(room), v4(room + 1), resolver_v6],
        );
        assert_eq!(trusted.len(), room as usize + 1);
        assert_eq!(
            trusted[..configured.len()],
            configured[..],
            "configured first"
        );
        assert!(trusted.contains(&v4(room)), "the last IPv4 room taken");
        assert!(!trusted.contains(&v4(room + 1)), "none past it");
        assert!(trusted.contains(&resolver_v6), "the other family has room");
    }
}
