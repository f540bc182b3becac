//! Validation of the `[crowdsec]` section: the LAPI's URL, the bouncer key (inline or in a
//! readable file), the pull interval, and the machine credentials that pushing needs.

use std::{path::PathBuf, time::Duration};

use toml::Spanned;

use super::{
    ApiKey, CrowdSecConfig, DEFAULT_UPDATE_FREQUENCY, parse::RawCrowdSec, validate::Validator,
};
use crate::crowdsec::{credentials::Credentials, http::Endpoint};

/// The shortest `update_frequency` accepted: a pull a second already keeps a fleet within
/// a second of its LAPI.
const FASTEST: Duration = Duration::from_secs(1);

/// The longest `update_frequency` accepted.
const SLOWEST: Duration = Duration::from_secs(3_600);

impl Validator<'_> {
    /// The section, or `None` with its problems recorded.
    pub(super) fn crowdsec(&mut self, raw: &RawCrowdSec) -> Option<CrowdSecConfig> {
        let before = self.problems.len();
        let api_url = match &raw.api_url {
            None => {
                self.problem(
                    None,
                    "crowdsec.api_url",
                    "missing; give the Local API's address, e.g. \"http://127.0.0.1:8080/\" \
                     (or remove the [crowdsec] section)"
                        .into(),
                );
                String::new()
            }
            Some(url) => {
                if let Err(message) = Endpoint::parse(url.get_ref()) {
                    self.problem(Some(url.span()), "crowdsec.api_url", message);
                }
                url.get_ref().clone()
            }
        };
        let api_key = self.api_key(raw);
        let update_frequency = self.duration(
            &raw.update_frequency,
            "crowdsec.update_frequency",
            DEFAULT_UPDATE_FREQUENCY,
        );
        if let Some(spanned) = &raw.update_frequency
            && !(FASTEST..=SLOWEST).contains(&update_frequency)
        {
            self.problem(
                Some(spanned.span()),
                "crowdsec.update_frequency",
                format!("{:?} is out of range; use 1s to 1h", spanned.get_ref()),
            );
        }
        let credentials_file = raw.credentials_file.as_ref().map(|path| {
            self.credentials(path);
            PathBuf::from(path.get_ref())
        });
        let push = raw.push.unwrap_or(false);
        if push && credentials_file.is_none() {
            self.problem(
                None,
                "crowdsec.push",
                "pushing bans needs crowdsec.credentials_file (the file `cscli machines add` \
                 writes)"
                    .into(),
            );
        }
        let api_key = api_key?;
        (self.problems.len() == before).then_some(CrowdSecConfig {
            api_url,
            api_key,
            update_frequency,
            credentials_file,
            push,
        })
    }

    /// `api_key` or `api_key_file`, exactly one; a file must be readable and hold a key.
    fn api_key(&mut self, raw: &RawCrowdSec) -> Option<ApiKey> {
        match (&raw.api_key, &raw.api_key_file) {
            (Some(_), Some(file)) => {
                self.problem(
                    Some(file.span()),
                    "crowdsec.api_key_file",
                    "give api_key or api_key_file, not both".into(),
                );
                None
            }
            (None, None) => {
                self.problem(
                    None,
                    "crowdsec.api_key_file",
                    "missing; give the file holding the key `cscli bouncers add moat` printed \
                     (or api_key = \"...\")"
                        .into(),
                );
                None
            }
            (Some(key), None) => {
                if key.get_ref().trim().is_empty() {
                    self.problem(Some(key.span()), "crowdsec.api_key", "is empty".into());
                    return None;
                }
                Some(ApiKey::Inline(key.get_ref().trim().to_string()))
            }
            (None, Some(file)) => {
                let path = PathBuf::from(file.get_ref());
                match read_key(&path) {
                    Ok(_) => Some(ApiKey::File(path)),
                    Err(message) => {
                        self.problem(Some(file.span()), "crowdsec.api_key_file", message);
                        None
                    }
                }
            }
        }
    }

    /// Checks that the credentials file reads and names a url, a login and a password.
    fn credentials(&mut self, path: &Spanned<String>) {
        let problem = match std::fs::read_to_string(path.get_ref()) {
            Err(error) => format!("cannot read {}: {error}", path.get_ref()),
            Ok(text) => match Credentials::parse(&text) {
                Ok(_) => return,
                Err(message) => format!("{}: {message}", path.get_ref()),
            },
        };
        self.problem(Some(path.span()), "crowdsec.credentials_file", problem);
    }
}

/// The bouncer key in `path` (its first line, trimmed), or why it cannot be used.
pub fn read_key(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        return Err(format!(
            "{} is empty; write the key `cscli bouncers add moat` printed into it",
            path.display()
        ));
    }
    Ok(key.to_string())
}

impl ApiKey {
    /// The key itself, read from its file if it has one.
    pub fn read(&self) -> Result<String, String> {
        match self {
            ApiKey::Inline(key) => Ok(key.clone()),
            ApiKey::File(path) => read_key(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ApiKey, Config, ConfigError};

    /// The problems of a `[crowdsec]` section, as `moat config check` prints them.
    fn problems(section: &str) -> String {
        match Config::parse(&format!("[crowdsec]\n{section}"), Path::new("t.toml")) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(error @ ConfigError::Invalid { .. }) => error.to_string(),
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn a_section_is_checked_key_by_key() {
        let dir = std::env::temp_dir().join(format!("moat-crowdsec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = dir.join("key");
        std::fs::write(&key, "abc123\n").expect("key file");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").expect("empty key file");
        let creds = dir.join("creds.yaml");
        std::fs::write(
            &creds,
            "url: http://127.0.0.1:8080/\nlogin: moat\npassword: pw\n",
        )
        .expect("credentials");
        let url = "api_url = \"http://127.0.0.1:8080/\"\n";
        let with_key = format!("{url}api_key_file = \"{}\"\n", key.display());

        let parsed = Config::parse(
            &format!(
                "[crowdsec]\n{with_key}update_frequency = \"2s\"\ncredentials_file = \"{}\"\n\
                 push = true\n",
                creds.display()
            ),
            Path::new("t.toml"),
        )
        .expect("a valid section");
        let crowdsec = parsed.crowdsec.expect("on");
        assert_eq!(crowdsec.api_key, ApiKey::File(key.clone()));
        assert_eq!(crowdsec.api_key.read().as_deref(), Ok("abc123"));
        assert_eq!(crowdsec.update_frequency, std::time::Duration::from_secs(2));
        assert!(crowdsec.push);
        let off = Config::parse("[crowdsec]\n", Path::new("t.toml")).expect("an empty table");
        assert_eq!(
            off.crowdsec, None,
            "an empty [crowdsec] leaves the bouncer off"
        );

        for (section, needles) in [
            (
                "api_key = \"k\"\n".to_string(),
                vec!["crowdsec.api_url: missing"],
            ),
            (
                "api_url = \"https://lapi:8080/\"\napi_key = \"k\"\n".to_string(),
                vec!["crowdsec.api_url", "https"],
            ),
            (
                format!("{url}api_key_file = \"{}\"\n", dir.join("absent").display()),
                vec!["crowdsec.api_key_file: cannot read", "absent"],
            ),
            (
                format!("{url}api_key_file = \"{}\"\n", empty.display()),
                vec!["crowdsec.api_key_file", "is empty"],
            ),
            (
                format!("{with_key}api_key = \"k\"\n"),
                vec!["api_key or api_key_file, not both"],
            ),
            (url.to_string(), vec!["crowdsec.api_key_file: missing"]),
            (
                format!("{with_key}update_frequency = \"soon\"\n"),
                vec!["crowdsec.update_frequency", "not a duration"],
            ),
            (
                format!("{with_key}update_frequency = \"2h\"\n"),
                vec!["crowdsec.update_frequency", "1s to 1h"],
            ),
            (
                format!("{with_key}push = true\n"),
                vec!["crowdsec.push", "credentials_file"],
            ),
            (
                format!("{with_key}credentials_file = \"{}\"\n", key.display()),
                vec!["crowdsec.credentials_file"],
            ),
            (format!("{with_key}apikey = \"k\"\n"), vec!["apikey"]),
        ] {
            let text = problems(&section);
            for needle in needles {
                assert!(text.contains(needle), "{needle:?} not in {text:?}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
