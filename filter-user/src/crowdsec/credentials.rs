//! A CrowdSec machine's login, as `cscli machines add` writes it to
//! `local_api_credentials.yaml` (`url`, `login`, `password`), read without a YAML crate.

use super::http::Endpoint;

/// A machine's login, as `cscli machines add` writes it to `local_api_credentials.yaml`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The LAPI's URL.
    pub url: String,
    /// The machine id.
    pub login: String,
    /// The machine's password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("login", &self.login)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// Reads the three `key: value` lines `url`, `login` and `password` (values plain or in
    /// `"` / `'` quotes); comments, blank lines and other keys are skipped. This is not a YAML
    /// parser: it reads what cscli writes. The error names the missing or broken key.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let (mut url, mut login, mut password) = (None, None, None);
        for (index, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
                continue;
            }
            let Some((key, value)) = trimmed.split_once(':') else {
                continue;
            };
            let slot = match key.trim() {
                "url" => &mut url,
                "login" => &mut login,
                "password" => &mut password,
                _ => continue,
            };
            let value = yaml_scalar(value)
                .map_err(|reason| format!("line {}: {}: {reason}", index + 1, key.trim()))?;
            *slot = Some(value);
        }
        let require = |value: Option<String>, key: &str| match value {
            Some(value) if !value.is_empty() => Ok(value),
            Some(_) => Err(format!(
                "the credentials' {key} is empty; it needs url, login and password \
                 (as `cscli machines add` writes them)"
            )),
            None => Err(format!(
                "the credentials have no `{key}:` line; they need url, login and password \
                 (as `cscli machines add` writes them)"
            )),
        };
        Ok(Credentials {
            url: require(url, "url")?,
            login: require(login, "login")?,
            password: require(password, "password")?,
        })
    }

    /// The endpoint of [`Credentials::url`].
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        Endpoint::parse(&self.url)
    }
}

/// One plain or quoted YAML scalar value, with a trailing ` #` comment dropped.
fn yaml_scalar(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return check_after_quote(chars.as_str(), value),
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(other @ ('"' | '\\' | '/')) => value.push(other),
                    Some(other) => return Err(format!("the escape \\{other} is not supported")),
                    None => break,
                },
                c => value.push(c),
            }
        }
        return Err("the \" quote is never closed".to_string());
    }
    if let Some(inner) = raw.strip_prefix('\'') {
        let mut value = String::new();
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    value.push('\'');
                    continue;
                }
                return check_after_quote(&chars.collect::<String>(), value);
            }
            value.push(c);
        }
        return Err("the ' quote is never closed".to_string());
    }
    let value = match raw.find(" #").or_else(|| raw.find("\t#")) {
        Some(comment) => &raw[..comment],
        None => raw,
    };
    Ok(value.trim().to_string())
}

/// Accepts only blanks or a comment after a closing quote.
fn check_after_quote(after: &str, value: String) -> Result<String, String> {
    let after = after.trim();
    if after.is_empty() || after.starts_with('#') {
        Ok(value)
    } else {
        Err(format!("unexpected {after:?} after the closing quote"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_credentials() {
        let text = "# written by cscli\nurl: http://127.0.0.1:8080/\nlogin: moat\n\
                    password: S3cretPassw0rd\n";
        let credentials = Credentials::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(credentials.url, "http://127.0.0.1:8080/");
        assert_eq!(credentials.login, "moat");
        assert_eq!(credentials.password, "S3cretPassw0rd");
        assert_eq!(credentials.endpoint().map(|e| e.port()), Ok(8080));
        assert!(!format!("{credentials:?}").contains("S3cret"));

        let text = "\n  url: \"http://lapi:8080\"   # the LAPI\n\nlogin: 'moat''s'\n\
                    password: \"a#b\\\"c\"\nextra: ignored\n";
        let credentials = Credentials::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(credentials.url, "http://lapi:8080");
        assert_eq!(credentials.login, "moat's");
        assert_eq!(credentials.password, "a#b\"c");

        let text = "url: http://lapi/\nlogin: moat\npassword: p #not part\n";
        let credentials = Credentials::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(credentials.password, "p");
    }

    #[test]
    fn names_the_missing_credential() {
        let cases: &[(&str, &str)] = &[
            ("login: m\npassword: p\n", "no `url:` line"),
            ("url: http://l/\npassword: p\n", "no `login:` line"),
            (
                "url: http://l/\nlogin: m\n# password: p\n",
                "no `password:` line",
            ),
            (
                "url: http://l/\nlogin: \"\"\npassword: p\n",
                "login is empty",
            ),
            (
                "url: http://l/\nlogin: m\npassword: \"p\n",
                "line 3: password: the \" quote",
            ),
            (
                "url: http://l/\nlogin: 'm' x\npassword: p\n",
                "line 2: login: unexpected",
            ),
        ];
        for &(text, expected) in cases {
            let error = Credentials::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
