//! The configuration's one schema: every key of moat.toml, whether `moat set` changes it on a
//! running filter, what it means (in a line and at length), and how its value is written as
//! TOML. Everything that lists the keys is derived from it: `moat config show`
//! ([`Config::to_toml`]), `moat set`'s key list ([`live_summary`]), the README's table
//! ([`markdown_table`], printed by `moat config keys`) and the packaged, commented moat.toml
//! ([`super::template::packaged_toml`], printed by `moat config example`). The tests below
//! check that they agree, and that README.md and packaging/moat.toml hold their output.

mod entries;

use filter_common::{CLASS_COUNT, Class, rate::Limit};

use super::Config;
use entries::{LIMIT_FIELDS, PLAIN};

/// One key of moat.toml.
#[derive(Clone, Debug)]
pub struct Key {
    /// Its dotted name (`bans.after_strikes`), as `moat set` takes it.
    pub name: String,
    /// Whether `moat set` changes it on a running filter (the others take a reload or, for
    /// `mode` and the capacities, a restart).
    pub live: bool,
    /// What it means, in one sentence.
    pub doc: &'static str,
    /// What it means at length: the comment above it in the packaged moat.toml, without the
    /// `# `s, `{default}` standing for its default value; empty for none.
    pub comment: &'static str,
    /// Its value in a configuration.
    get: Get,
}

/// A key's value in one configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Set: the value as a TOML literal (`[22, 443]`, `"10m"`, `true`).
    Set(String),
    /// An optional key left unset.
    Unset(Unset),
}

/// What an optional key left unset means, and what setting it looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unset {
    /// What leaving it unset means, as `moat config show` says it (`# tcp: every port open`).
    pub meaning: &'static str,
    /// A value to set it to, as the packaged file suggests it (`# tcp = [22, 80, 443]`).
    pub example: &'static str,
}

/// Where a key's value is in a [`Config`], and how it is written as a TOML literal.
#[derive(Clone, Copy, Debug)]
enum Get {
    /// A key that always has a value.
    Plain(fn(&Config) -> String),
    /// An optional key: its value when set, and what leaving it unset means.
    Optional(fn(&Config) -> Option<String>, Unset),
    /// One field of one class's rate limit.
    Limit(Scope, Class, fn(&Limit) -> u64),
}

/// The two sets of rate limits.
#[derive(Clone, Copy, Debug)]
enum Scope {
    /// `[limits.source.*]`.
    Source,
    /// `[limits.aggregate.*]`.
    Aggregate,
}

impl Scope {
    /// Both, in file order.
    const ALL: [Scope; 2] = [Scope::Source, Scope::Aggregate];

    /// Its name in the configuration.
    const fn label(self) -> &'static str {
        match self {
            Scope::Source => "source",
            Scope::Aggregate => "aggregate",
        }
    }

    /// Its limits in `config`, by [`Class`].
    fn limits(self, config: &Config) -> &[Limit; CLASS_COUNT] {
        match self {
            Scope::Source => &config.limits.source,
            Scope::Aggregate => &config.limits.aggregate,
        }
    }
}

impl Key {
    /// Its value in `config`.
    pub fn value(&self, config: &Config) -> Value {
        match self.get {
            Get::Plain(get) => Value::Set(get(config)),
            Get::Optional(get, unset) => get(config).map_or(Value::Unset(unset), Value::Set),
            Get::Limit(scope, class, field) => {
                Value::Set(field(&scope.limits(config)[class as usize]).to_string())
            }
        }
    }

    /// The dotted name of the table it is in (`limits.source.syn`); empty at the top level.
    pub fn table(&self) -> &str {
        self.name.rsplit_once('.').map_or("", |(table, _)| table)
    }

    /// Its name within its table (`pps`).
    pub fn leaf(&self) -> &str {
        self.name
            .rsplit_once('.')
            .map_or(&self.name, |(_, leaf)| leaf)
    }
}

/// Every key, in the order moat.toml and `moat config show` give them.
pub fn keys() -> Vec<Key> {
    let mut keys: Vec<Key> = PLAIN
        .iter()
        .map(|entry| Key {
            name: entry.name.to_string(),
            live: entry.live,
            doc: entry.doc,
            comment: entry.comment,
            get: entry.get,
        })
        .collect();
    for scope in Scope::ALL {
        for class in Class::ALL {
            for field in LIMIT_FIELDS {
                keys.push(Key {
                    name: format!("limits.{}.{}.{}", scope.label(), class.label(), field.name),
                    live: true,
                    doc: field.doc,
                    comment: "",
                    get: Get::Limit(scope, class, field.get),
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
        .filter(|entry| entry.live)
        .map(|entry| entry.name)
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
    use std::{collections::BTreeSet, path::Path};

    use super::*;
    use crate::config::template::packaged_toml;

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

    /// The keys unset by default (`ports.tcp`, `ports.udp`, the `[crowdsec]` keys) are shown
    /// commented out: added to `keys`.
    fn with_ports(mut keys: BTreeSet<String>) -> BTreeSet<String> {
        let defaults = Config::default();
        for key in super::keys() {
            if matches!(key.value(&defaults), Value::Unset(_)) {
                keys.insert(key.name);
            }
        }
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
    fn the_example_holds_every_key_at_its_default() {
        let example = packaged_toml();
        assert_eq!(with_ports(toml_keys(&example)), schema_keys(), "{example}");
        for port_key in ["# tcp = ", "# udp = "] {
            assert!(example.contains(port_key), "{port_key} documented");
        }
        let parsed = Config::parse(&example, Path::new("example")).expect("a valid file");
        assert_eq!(parsed, Config::default(), "every value the default");
        assert!(
            !example.contains('{'),
            "every placeholder filled in:\n{example}"
        );
    }

    #[test]
    fn the_packaged_moat_toml_is_the_example() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/moat.toml");
        let packaged = std::fs::read_to_string(&path).expect("reading packaging/moat.toml");
        let example = packaged_toml();
        let difference = packaged
            .lines()
            .zip(example.lines())
            .position(|(packaged, example)| packaged != example)
            .unwrap_or(packaged.lines().count().min(example.lines().count()));
        assert!(
            packaged == example,
            "packaging/moat.toml differs from `moat config example` from line {}: {:?} instead \
             of {:?}; regenerate it with `moat config example > packaging/moat.toml`",
            difference + 1,
            packaged.lines().nth(difference),
            example.lines().nth(difference),
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
