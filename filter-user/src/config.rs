//! The TOML configuration file: parsed into a raw form, validated into a [`Config`], and only
//! then applied. Unknown keys are errors, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use filter_common::maps::{DEFAULT_ALLOW_ENTRIES, DEFAULT_DENY_ENTRIES};

use crate::cli::Mode;

/// Where `moat run` looks for a configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/moat/moat.toml";

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a wrong key or value.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and key.
        message: String,
    },
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Attach mode.
    pub mode: Mode,
    /// Pass would-be drops and count them as would_drop.
    pub dry_run: bool,
    /// Prefixes each allowlist trie (IPv4, IPv6) holds; fixed when the program loads.
    pub allow_capacity: u32,
    /// Prefixes each denylist trie (IPv4, IPv6) holds; fixed when the program loads.
    pub deny_capacity: u32,
}

/// The largest list capacity accepted (tries allocate per entry, so this bounds memory, not a
/// preallocation).
pub const MAX_LIST_CAPACITY: u32 = 16_777_216;

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Auto,
            dry_run: false,
            allow_capacity: DEFAULT_ALLOW_ENTRIES,
            deny_capacity: DEFAULT_DENY_ENTRIES,
        }
    }
}

/// The file as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<Mode>,
    dry_run: Option<bool>,
    allow_capacity: Option<i64>,
    deny_capacity: Option<i64>,
}

impl Config {
    /// Parses and validates TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: one_line(&error.to_string()),
        })?;
        let defaults = Config::default();
        let capacity = |key: &'static str, value: Option<i64>, default: u32| match value {
            None => Ok(default),
            Some(n) if (1..=i64::from(MAX_LIST_CAPACITY)).contains(&n) => Ok(n as u32),
            Some(n) => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "{key} = {n} is out of range; it must be 1 to {MAX_LIST_CAPACITY}"
                ),
            }),
        };
        Ok(Config {
            mode: raw.mode.unwrap_or(defaults.mode),
            dry_run: raw.dry_run.unwrap_or(defaults.dry_run),
            allow_capacity: capacity(
                "allow_capacity",
                raw.allow_capacity,
                defaults.allow_capacity,
            )?,
            deny_capacity: capacity("deny_capacity", raw.deny_capacity, defaults.deny_capacity)?,
        })
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// The configuration `moat run` starts with: `explicit` if given, else [`DEFAULT_PATH`] if
    /// it exists, else the defaults. Returns the file it came from, for SIGHUP reloads.
    pub fn locate(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        match explicit {
            Some(path) => Ok((Config::load(path)?, Some(path.to_path_buf()))),
            None => {
                let default = Path::new(DEFAULT_PATH);
                if default.exists() {
                    Ok((Config::load(default)?, Some(default.to_path_buf())))
                } else {
                    Ok((Config::default(), None))
                }
            }
        }
    }
}

/// Folds toml's multi-line report (line, snippet, caret, message) into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.chars().all(|c| c == '|' || c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(
            Config::parse("", Path::new("x")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn reads_every_key() {
        let config = Config::parse("mode = \"skb\"\ndry_run = true\n", Path::new("x")).unwrap();
        assert_eq!(
            config,
            Config {
                mode: Mode::Skb,
                dry_run: true,
                ..Config::default()
            }
        );
        let config =
            Config::parse("deny_capacity = 10\nallow_capacity = 3", Path::new("x")).unwrap();
        assert_eq!((config.deny_capacity, config.allow_capacity), (10, 3));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let error = Config::parse("mode = \"skb\"\ndryrun = true\n", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("m.toml"), "{error}");
        assert!(error.contains("dryrun"), "{error}");
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn capacities_out_of_range_are_rejected() {
        for text in [
            "deny_capacity = 0",
            "deny_capacity = -1",
            "allow_capacity = 99999999999",
        ] {
            let error = Config::parse(text, Path::new("m.toml"))
                .unwrap_err()
                .to_string();
            assert!(error.contains("out of range"), "{text}: {error}");
        }
        let error = Config::parse("deny_capacity = \"big\"", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("deny_capacity"), "{error}");
    }

    #[test]
    fn bad_mode_is_rejected() {
        let error = Config::parse("mode = \"turbo\"", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("turbo"), "{error}");
    }
}
