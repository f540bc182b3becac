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
}
