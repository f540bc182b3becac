//! Showing: a [`Config`] as TOML with every key present (`moat config show`), key by key from
//! the [schema](super::schema).

use super::{
    Config,
    schema::{self, Value},
};

impl Config {
    /// The whole configuration as TOML, every key present (what `moat config show` prints): the
    /// schema's keys in order, a `[table]` header where the table changes, and an optional key
    /// left unset as a comment saying what that means (`# tcp: every port open`).
    pub fn to_toml(&self) -> String {
        let keys = schema::keys();
        let mut out = String::new();
        let mut table = "";
        for key in &keys {
            if key.table() != table {
                table = key.table();
                out.push_str(&format!("\n[{table}]\n"));
            }
            match key.value(self) {
                Value::Set(value) => out.push_str(&format!("{} = {value}\n", key.leaf())),
                Value::Unset(unset) => {
                    out.push_str(&format!("# {}: {}\n", key.leaf(), unset.meaning));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use filter_common::settings::FragmentPolicy;

    use crate::config::{Config, Mode, SynCookies};

    /// Keys of every table away from their defaults, `ports.udp` set but empty.
    fn changed() -> Config {
        let mut config = Config {
            mode: Mode::Skb,
            dry_run: true,
            allow_capacity: 7,
            sample_every: 0,
            syn_cookies: SynCookies::Always,
            require_sockets: false,
            ..Config::default()
        };
        config.ports.tcp = Some(vec![22, 443]);
        config.ports.udp = Some(vec![]);
        config.fragments.policy = FragmentPolicy::Drop;
        config.reflection.ports = vec![53];
        config.reflection.trusted = vec!["192.0.2.0/24".parse().expect("a prefix")];
        config.reflection.resolv_conf = Some("/etc/we\"ird resolv.conf".into());
        config.bans.strike_window = Duration::from_millis(1500);
        config.bans.max = Duration::from_secs(3 * 86_400);
        config.limits.source[1].bps = 12_345;
        config.limits.aggregate[3].pps = 7;
        config
    }

    #[test]
    fn a_changed_config_round_trips_through_show() {
        let config = changed();
        let shown = config.to_toml();
        assert_eq!(
            Config::parse(&shown, Path::new("x")).expect("valid"),
            config,
            "{shown}"
        );
        assert!(
            shown.contains("\n[ports]\ntcp = [22, 443]\nudp = []\n"),
            "{shown}"
        );
        assert!(shown.contains("strike_window = \"1500ms\"\n"), "{shown}");
        let mut unset = changed();
        unset.ports.tcp = None;
        let shown = unset.to_toml();
        assert!(
            shown.contains("\n[ports]\n# tcp: every port open\nudp = []\n"),
            "{shown}"
        );
    }
}
