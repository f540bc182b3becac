//! Showing: a [`Config`] as TOML with every key present (`moat config show`).

use super::*;

impl Config {
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
