//! The TOML configuration file: parsed into a raw form, validated into a [`Config`], and only
//! then applied. Unknown keys are errors, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Auto,
            dry_run: false,
        }
    }
}

/// The file as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<Mode>,
    dry_run: Option<bool>,
}

impl Config {
    /// Parses and validates TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: one_line(&error.to_string()),
        })?;
        let defaults = Config::default();
        Ok(Config {
            mode: raw.mode.unwrap_or(defaults.mode),
            dry_run: raw.dry_run.unwrap_or(defaults.dry_run),
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
                dry_run: true
            }
        );
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
    fn bad_mode_is_rejected() {
        let error = Config::parse("mode = \"turbo\"", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("turbo"), "{error}");
    }
}
