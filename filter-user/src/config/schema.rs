//! The configuration's one list of keys: every key of moat.toml, whether `moat set` changes it
//! on a running filter, and what it means. `moat set` names its keys from it, `moat config
//! keys` prints it as the README's table, and the tests below check that `moat config show`,
//! `moat set`, the packaged moat.toml and the README hold exactly these keys, so none of them
//! can drift from the others.

use filter_common::Class;

/// One key of moat.toml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// Its dotted name (`bans.after_strikes`), as `moat set` takes it.
    pub name: String,
    /// Whether `moat set` changes it on a running filter (the others take a reload or, for
    /// `mode` and the capacities, a restart).
    pub live: bool,
    /// What it means, in one sentence.
    pub doc: &'static str,
}

/// The keys outside `[limits]`: name, live, meaning.
const PLAIN: &[(&str, bool, &str)] = &[
    (
        "mode",
        false,
        "how the program attaches: auto, native or skb (restart to change)",
    ),
    (
        "dry_run",
        true,
        "count would-be drops as would_drop and pass them",
    ),
    (
        "allow_capacity",
        false,
        "allowlist prefixes per address family (restart to change)",
    ),
    (
        "deny_capacity",
        false,
        "denylist prefixes per address family (restart to change)",
    ),
    (
        "max_tracked_sources",
        false,
        "sources whose rate state is kept (restart to change)",
    ),
    (
        "max_bans",
        false,
        "bans kept, expired ones included (restart to change)",
    ),
    (
        "sample_every",
        true,
        "one dropped packet in this many is sampled; 0 samples none",
    ),
    (
        "syn_cookies",
        false,
        "when moat answers unverified SYNs with cookies: auto, always, off",
    ),
    (
        "require_sockets",
        false,
        "traffic must belong to a socket on this host",
    ),
    (
        "ports.tcp",
        false,
        "TCP ports open to new connections (unset: every port)",
    ),
    ("ports.udp", false, "UDP ports open (unset: every port)"),
    (
        "fragments.policy",
        true,
        "IP fragments: pass, rate-limit or drop",
    ),
    (
        "fragments.pps",
        true,
        "fragments per second for the whole host",
    ),
    (
        "fragments.burst",
        true,
        "fragments allowed at once above that rate",
    ),
    (
        "reflection.ports",
        false,
        "UDP source ports of reflectors, dropped unless trusted",
    ),
    (
        "reflection.trusted",
        false,
        "upstream prefixes whose replies from those ports pass",
    ),
    (
        "reflection.resolv_conf",
        false,
        "a resolv.conf whose nameservers are trusted",
    ),
    (
        "reflection.trust_system_ntp",
        false,
        "trust this host's configured NTP servers",
    ),
    (
        "bans.after_strikes",
        true,
        "over-limit packets within the window that ban; 0: never",
    ),
    (
        "bans.strike_window",
        true,
        "the window strikes are counted over",
    ),
    (
        "bans.base",
        true,
        "a first ban's length; each repeat offence doubles it",
    ),
    ("bans.max", true, "the longest ban"),
    (
        "bans.ipv6_prefix",
        true,
        "IPv6 sources are limited and banned per prefix of this length",
    ),
    (
        "bans.forget_after",
        false,
        "repeat offences count until a ban expired this long ago",
    ),
];

/// The fields of each `[limits.SCOPE.CLASS]` table and their meaning.
const LIMIT_FIELDS: &[(&str, &str)] = &[
    ("pps", "packets per second; 0: no packet limit"),
    ("burst", "packets allowed at once above that rate"),
    ("bps", "bytes per second; 0: no byte limit"),
    ("burst_bytes", "bytes allowed at once above that rate"),
];

/// Every key, in the order moat.toml and `moat config show` give them.
pub fn keys() -> Vec<Key> {
    let mut keys: Vec<Key> = PLAIN
        .iter()
        .map(|&(name, live, doc)| Key {
            name: name.to_string(),
            live,
            doc,
        })
        .collect();
    for scope in ["source", "aggregate"] {
        for class in Class::ALL {
            for &(field, doc) in LIMIT_FIELDS {
                keys.push(Key {
                    name: format!("limits.{scope}.{}.{field}", class.label()),
                    live: true,
                    doc,
                });
            }
        }
    }
    keys
}

/// The keys `moat set` takes, summarised for its error message.
pub fn live_summary() -> String {
    let plain: Vec<&str> = PLAIN
        .iter()
        .filter(|(_, live, _)| *live)
        .map(|(name, _, _)| *name)
        .collect();
    format!(
        "{}, limits.{{source,aggregate}}.{{syn,udp,icmp,other}}.{{pps,burst,bps,burst_bytes}}",
        plain.join(", ")
    )
}

/// The keys as the README's markdown table (`moat config keys` prints it).
pub fn markdown_table() -> String {
    let mut out = String::from("| key | `moat set` | meaning |\n|---|---|---|\n");
    for key in keys() {
        if key.name.starts_with("limits.") && !key.name.starts_with("limits.source.syn.") {
            continue;
        }
        let name = key
            .name
            .strip_prefix("limits.source.syn.")
            .map_or(key.name.clone(), |field| {
                format!("limits.{{source,aggregate}}.{{syn,udp,icmp,other}}.{field}")
            });
        let live = if key.live { "yes" } else { "no" };
        out.push_str(&format!("| `{name}` | {live} | {} |\n", key.doc));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::Config;

    /// The dotted keys of a TOML document (tables flattened; arrays are values).
    fn toml_keys(text: &str) -> BTreeSet<String> {
        fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
            for (key, value) in table {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match value {
                    toml::Value::Table(inner) => walk(&name, inner, out),
                    _ => {
                        out.insert(name);
                    }
                }
            }
        }
        let table: toml::Table = text.parse().expect("valid TOML");
        let mut out = BTreeSet::new();
        walk("", &table, &mut out);
        out
    }

    fn schema_keys() -> BTreeSet<String> {
        keys().into_iter().map(|key| key.name).collect()
    }

    /// `ports.tcp` and `ports.udp` are unset by default: shown commented out.
    fn with_ports(mut keys: BTreeSet<String>) -> BTreeSet<String> {
        keys.insert("ports.tcp".to_string());
        keys.insert("ports.udp".to_string());
        keys
    }

    #[test]
    fn config_show_prints_exactly_the_schema_keys() {
        let shown = Config::default().to_toml();
        assert_eq!(with_ports(toml_keys(&shown)), schema_keys(), "{shown}");
        assert!(
            shown.contains("# tcp:") && shown.contains("# udp:"),
            "{shown}"
        );
    }

    #[test]
    fn the_packaged_moat_toml_holds_every_key_at_its_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/moat.toml");
        let text = std::fs::read_to_string(&path).expect("reading packaging/moat.toml");
        assert_eq!(with_ports(toml_keys(&text)), schema_keys());
        for port_key in ["# tcp = ", "# udp = "] {
            assert!(text.contains(port_key), "{port_key} documented");
        }
        let packaged = Config::parse(&text, &path).expect("the packaged file is valid");
        assert_eq!(
            packaged.to_toml(),
            Config::default().to_toml(),
            "every value the default"
        );
    }

    #[test]
    fn moat_set_takes_exactly_the_live_keys() {
        let defaults = toml_keys(&Config::default().to_toml());
        let shown: toml::Table = Config::default().to_toml().parse().expect("TOML");
        let value_of = |name: &str| -> String {
            let mut value = toml::Value::Table(shown.clone());
            for part in name.split('.') {
                value = value.get(part).cloned().expect("a shown key");
            }
            match value {
                toml::Value::String(text) => text,
                other => other.to_string(),
            }
        };
        for key in keys() {
            if !defaults.contains(&key.name) {
                continue;
            }
            let mut settings = Config::default().settings(false);
            let result = crate::tuning::apply(&mut settings, &key.name, &value_of(&key.name));
            assert_eq!(
                result.is_ok(),
                key.live,
                "moat set {}: {result:?}",
                key.name
            );
        }
    }

    #[test]
    fn the_readme_table_is_the_schema_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(path).expect("reading README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README.md's configuration table differs from the schema; paste the output of \
             `moat config keys`:\n{}",
            markdown_table()
        );
    }
}
