//! CrowdSec's Local API (LAPI, checked against 1.4.6) on top of [`super::http`]: a bouncer's
//! decision stream (`GET v1/decisions/stream` with an `X-Api-Key`), parsed into [`Stream`], and
//! a machine ([`Watcher`]) that logs in and pushes moat's own bans as alerts. It also reads
//! `local_api_credentials.yaml` ([`Credentials`]) and Go's duration and RFC 3339 formats. It does
//! not decide what to do with a decision (scope and value checks are the caller's) and keeps no
//! state between pulls beyond the watcher's token.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::http::{self, Endpoint, HttpError};

/// The bouncer's decision stream.
const STREAM_PATH: &str = "v1/decisions/stream";
/// Where a machine logs in.
const LOGIN_PATH: &str = "v1/watchers/login";
/// Where a machine pushes alerts.
const ALERTS_PATH: &str = "v1/alerts";

/// A token this close to its expiry is renewed before use.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// How long a token is taken to last when the login reply's `expire` cannot be read (the LAPI
/// issues one-hour tokens).
const TOKEN_FALLBACK_LIFETIME: Duration = Duration::from_secs(50 * 60);

/// The most characters of a reply body quoted in an error.
const EXCERPT_CHARS: usize = 200;

/// The alert and decision scope of a single address.
pub const SCOPE_IP: &str = "Ip";
/// The alert and decision scope of a CIDR range.
pub const SCOPE_RANGE: &str = "Range";

/// Why talking to the LAPI failed.
#[derive(Debug, thiserror::Error)]
pub enum LapiError {
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(#[from] HttpError),
    /// The LAPI answered with a status other than success.
    #[error("{}", status_message(request, *status, body_excerpt))]
    Status {
        /// The request, e.g. `GET v1/decisions/stream`.
        request: &'static str,
        /// The status code.
        status: u16,
        /// The start of the reply's body, on one line.
        body_excerpt: String,
    },
    /// A reply or request body is not the JSON expected.
    #[error("{what} is not the JSON moat expects: {reason}")]
    Json {
        /// Which body.
        what: &'static str,
        /// serde_json's reason.
        reason: String,
    },
    /// The machine could not log in.
    #[error("logging in to the LAPI as machine {login:?} failed: {reason}")]
    Login {
        /// The machine's login.
        login: String,
        /// What went wrong and what to check.
        reason: String,
    },
}

/// The one-line message of [`LapiError::Status`].
fn status_message(request: &str, status: u16, body_excerpt: &str) -> String {
    if status == 403 && request.ends_with(STREAM_PATH) {
        return "the LAPI refused the bouncer key (403): check api_key / api_key_file".to_string();
    }
    format!("the LAPI answered {status} to {request}: {body_excerpt}")
}

/// One decision as the stream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The LAPI's id (0 when the LAPI does not send one).
    pub id: i64,
    /// Who made it: `cscli`, `crowdsec`, `CAPI`, `lists`, ...
    pub origin: String,
    /// The scenario or reason.
    pub scenario: String,
    /// `Ip` or `Range` for the decisions moat enforces; other scopes exist.
    pub scope: String,
    /// The remedy, JSON `type`: usually `ban`.
    pub kind: String,
    /// The address or CIDR, as text.
    pub value: String,
    /// The time left; zero for a negative or unreadable countdown (deletions have negative ones).
    pub duration: Duration,
}

/// One reply of the decision stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// Decisions to enforce.
    pub new: Vec<Decision>,
    /// Decisions to lift (repeated for a few seconds; also expired ones on `startup=true`).
    pub deleted: Vec<Decision>,
}

/// The stream reply on the wire; either list may be `null`.
#[derive(Deserialize)]
struct WireStream {
    #[serde(default)]
    new: Option<Vec<WireDecision>>,
    #[serde(default)]
    deleted: Option<Vec<WireDecision>>,
}

/// A decision on the wire; every field may be missing or `null`, unknown ones (`until`,
/// `simulated`) are ignored.
#[derive(Deserialize)]
struct WireDecision {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    scenario: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    duration: Option<String>,
}

impl From<WireDecision> for Decision {
    fn from(wire: WireDecision) -> Decision {
        Decision {
            id: wire.id.unwrap_or(0),
            origin: wire.origin.unwrap_or_default(),
            scenario: wire.scenario.unwrap_or_default(),
            scope: wire.scope.unwrap_or_default(),
            kind: wire.kind.unwrap_or_default(),
            value: wire.value.unwrap_or_default(),
            duration: wire
                .duration
                .as_deref()
                .and_then(parse_go_duration)
                .unwrap_or(Duration::ZERO),
        }
    }
}

/// Parses a decision stream reply. Pure and CPU-bound (a 100,000-decision startup reply is
/// about 15 MB), so callers may run it on a blocking thread.
pub fn parse_stream(body: &[u8]) -> Result<Stream, LapiError> {
    let wire: WireStream = serde_json::from_slice(body).map_err(|error| LapiError::Json {
        what: "the decision stream",
        reason: error.to_string(),
    })?;
    let convert = |list: Option<Vec<WireDecision>>| {
        list.unwrap_or_default()
            .into_iter()
            .map(Decision::from)
            .collect()
    };
    Ok(Stream {
        new: convert(wire.new),
        deleted: convert(wire.deleted),
    })
}

/// Pulls the decision stream as a bouncer with `api_key`: everything active when `startup`,
/// else the changes since this key's last pull. Returns the raw body for [`parse_stream`].
pub async fn pull_stream(
    endpoint: &Endpoint,
    api_key: &str,
    startup: bool,
    timeout: Duration,
) -> Result<Bytes, LapiError> {
    let target = if startup {
        format!("{STREAM_PATH}?startup=true")
    } else {
        STREAM_PATH.to_string()
    };
    let response = http::request(
        endpoint,
        "GET",
        &target,
        &[("X-Api-Key", api_key), ("Accept", "application/json")],
        None,
        timeout,
    )
    .await?;
    if !(200..300).contains(&response.status) {
        return Err(LapiError::Status {
            request: "GET v1/decisions/stream",
            status: response.status,
            body_excerpt: http::excerpt(&response.body, EXCERPT_CHARS),
        });
    }
    Ok(response.body)
}

/// Parses Go's `time.Duration` text (`59m59.07s`, `3h59m59.07s`, `1.5s`, `500ms`, `2h`, `0s`,
/// `0`; units `h`, `m`, `s`, `ms`, `us`, `µs`, `μs`, `ns`; fractions on any unit). Returns
/// `None` for negative durations (the countdown of a deletion) and for text that is not a
/// duration or exceeds `u64` nanoseconds; callers treat both as zero time left.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.starts_with('-') || text.is_empty() {
        return None;
    }
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return None;
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        // Digits past the 18th are below a nanosecond even for hours.
        let fraction = &fraction[..fraction.len().min(18)];
        let fraction_ns = if fraction.is_empty() {
            0
        } else {
            let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
            fraction.parse::<u128>().ok()? * unit_ns / scale
        };
        total_ns = total_ns.checked_add(whole.checked_mul(unit_ns)?.checked_add(fraction_ns)?)?;
        rest = after;
    }
    Some(Duration::from_nanos(u64::try_from(total_ns).ok()?))
}

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

/// One of moat's bans, sent to the LAPI as an alert carrying one `ban` decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanAlert {
    /// The scenario, e.g. `moat/rate_syn`.
    pub scenario: String,
    /// [`SCOPE_IP`] or [`SCOPE_RANGE`], in exactly that casing (`ip` is stored, never streamed).
    pub scope: &'static str,
    /// The address or CIDR.
    pub value: String,
    /// How long the ban lasts; sent in whole seconds, rounded up.
    pub duration: Duration,
    /// When moat decided it.
    pub at: SystemTime,
    /// A human-readable line for `cscli alerts list`.
    pub message: String,
}

/// An alert as 1.4.6 requires it: every field present.
#[derive(Serialize)]
struct WireAlert<'a> {
    scenario: &'a str,
    scenario_hash: &'a str,
    scenario_version: &'a str,
    message: &'a str,
    events_count: u32,
    events: [(); 0],
    start_at: String,
    stop_at: String,
    capacity: u32,
    leakspeed: &'a str,
    simulated: bool,
    source: WireSource<'a>,
    decisions: [WireAlertDecision<'a>; 1],
}

#[derive(Serialize)]
struct WireSource<'a> {
    scope: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct WireAlertDecision<'a> {
    duration: String,
    origin: &'a str,
    scenario: &'a str,
    scope: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    value: &'a str,
}

/// The JSON body of `POST v1/alerts` for `alerts`.
fn alerts_body(alerts: &[BanAlert]) -> Result<Vec<u8>, LapiError> {
    let wire: Vec<WireAlert<'_>> = alerts
        .iter()
        .map(|alert| {
            let at = format_rfc3339(alert.at);
            let seconds = alert.duration.as_secs() + u64::from(alert.duration.subsec_nanos() > 0);
            WireAlert {
                scenario: &alert.scenario,
                scenario_hash: "",
                scenario_version: "",
                message: &alert.message,
                events_count: 1,
                events: [],
                start_at: at.clone(),
                stop_at: at,
                capacity: 0,
                leakspeed: "0",
                simulated: false,
                source: WireSource {
                    scope: alert.scope,
                    value: &alert.value,
                },
                decisions: [WireAlertDecision {
                    duration: format!("{seconds}s"),
                    origin: "moat",
                    scenario: &alert.scenario,
                    scope: alert.scope,
                    kind: "ban",
                    value: &alert.value,
                }],
            }
        })
        .collect();
    serde_json::to_vec(&wire).map_err(|error| LapiError::Json {
        what: "the alerts moat sends",
        reason: error.to_string(),
    })
}

/// A CrowdSec machine ("watcher") that pushes moat's bans as alerts, logging in as needed.
#[derive(Debug)]
pub struct Watcher {
    endpoint: Endpoint,
    credentials: Credentials,
    scenarios: Vec<String>,
    /// The bearer token and when it expires.
    token: Option<(String, Instant)>,
}

/// The login request body.
#[derive(Serialize)]
struct WireLogin<'a> {
    machine_id: &'a str,
    password: &'a str,
    scenarios: &'a [String],
}

/// The login reply; `code` is ignored.
#[derive(Deserialize)]
struct WireLoginReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expire: Option<String>,
}

impl Watcher {
    /// A watcher for the LAPI at `endpoint` (usually [`Credentials::endpoint`]) that declares
    /// `scenarios` (e.g. `moat/rate_syn`) when it logs in. It does not log in yet.
    pub fn new(endpoint: Endpoint, credentials: Credentials, scenarios: Vec<String>) -> Watcher {
        Watcher {
            endpoint,
            credentials,
            scenarios,
            token: None,
        }
    }

    /// Sends `alerts` in one `POST v1/alerts`, first logging in if there is no token or it
    /// expires within a minute; on a 401 it logs in again and retries once. Each HTTP request
    /// gets `timeout`. Nothing is sent for an empty list.
    pub async fn push(&mut self, alerts: &[BanAlert], timeout: Duration) -> Result<(), LapiError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let body = alerts_body(alerts)?;
        let mut response = self.post_alerts(&body, timeout).await?;
        if response.status == 401 {
            self.token = None;
            response = self.post_alerts(&body, timeout).await?;
        }
        match response.status {
            200 | 201 => Ok(()),
            status => Err(LapiError::Status {
                request: "POST v1/alerts",
                status,
                body_excerpt: http::excerpt(&response.body, EXCERPT_CHARS),
            }),
        }
    }

    /// One `POST v1/alerts` with a valid token.
    async fn post_alerts(
        &mut self,
        body: &[u8],
        timeout: Duration,
    ) -> Result<http::Response, LapiError> {
        let token = self.token(timeout).await?;
        let authorization = format!("Bearer {token}");
        Ok(http::request(
            &self.endpoint,
            "POST",
            ALERTS_PATH,
            &[("Authorization", &authorization)],
            Some(body),
            timeout,
        )
        .await?)
    }

    /// The current token, logging in first if it is missing or about to expire.
    async fn token(&mut self, timeout: Duration) -> Result<String, LapiError> {
        if let Some((token, expiry)) = &self.token
            && expiry.saturating_duration_since(Instant::now()) > TOKEN_MARGIN
        {
            return Ok(token.clone());
        }
        self.token = None;
        let (token, expiry) = self.login(timeout).await?;
        self.token = Some((token.clone(), expiry));
        Ok(token)
    }

    /// `POST v1/watchers/login`: the token and when it expires.
    async fn login(&self, timeout: Duration) -> Result<(String, Instant), LapiError> {
        let login_error = |reason: String| LapiError::Login {
            login: self.credentials.login.clone(),
            reason,
        };
        let body = serde_json::to_vec(&WireLogin {
            machine_id: &self.credentials.login,
            password: &self.credentials.password,
            scenarios: &self.scenarios,
        })
        .map_err(|error| login_error(error.to_string()))?;
        let response = http::request(
            &self.endpoint,
            "POST",
            LOGIN_PATH,
            &[],
            Some(&body),
            timeout,
        )
        .await?;
        let asked_at = Instant::now();
        match response.status {
            200 => {}
            401 | 403 => {
                return Err(login_error(format!(
                    "the LAPI answered {}: check login and password in the credentials file \
                     (and that `cscli machines validate` accepted the machine): {}",
                    response.status,
                    http::excerpt(&response.body, EXCERPT_CHARS)
                )));
            }
            status => {
                return Err(login_error(format!(
                    "the LAPI answered {status}: {}",
                    http::excerpt(&response.body, EXCERPT_CHARS)
                )));
            }
        }
        let reply: WireLoginReply = serde_json::from_slice(&response.body)
            .map_err(|error| login_error(format!("the reply is not JSON: {error}")))?;
        let token = reply
            .token
            .filter(|token| !token.is_empty())
            .ok_or_else(|| login_error("the reply has no token".to_string()))?;
        let lifetime = reply
            .expire
            .as_deref()
            .and_then(parse_rfc3339)
            .and_then(|expire| {
                let now =
                    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs())
                        .ok()?;
                u64::try_from(expire.checked_sub(now)?).ok()
            })
            .map(Duration::from_secs)
            .unwrap_or(TOKEN_FALLBACK_LIFETIME);
        Ok((token, asked_at + lifetime))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction: day 1..=31, month 1..=12.
    (year, day_u32(month), day_u32(day))
}

/// A small non-negative count as `u32` (0 if out of range, which the callers rule out).
fn day_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// `at` as RFC 3339 UTC with whole seconds and `Z`, e.g. `2026-11-30T00:53:20Z`; times before
/// 1970 are written as 1970-01-01T00:00:00Z.
pub fn format_rfc3339(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX / 2);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Seconds since 1970 of an RFC 3339 time (`2026-11-30T05:00:00Z`, with optional fractional
/// seconds, dropped, and a `Z` or `±hh:mm` offset); `None` if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.trim().as_bytes();
    let number = |from: usize, len: usize| -> Option<i64> {
        let digits = bytes.get(from..from + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let at = |index: usize, expected: &[u8]| bytes.get(index).is_some_and(|b| expected.contains(b));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut index = 19;
    if at(index, b".") {
        index += 1;
        let digits = bytes[index..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        index += digits;
    }
    let offset_seconds = match bytes.get(index)? {
        b'Z' | b'z' if index + 1 == bytes.len() => 0,
        sign @ (b'+' | b'-') if index + 6 == bytes.len() && at(index + 3, b":") => {
            let (hours, minutes) = (number(index + 1, 2)?, number(index + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let month = u32::try_from(month).ok()?;
    let day = u32::try_from(day).ok()?;
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Duration)] = &[
            ("59m59.07s", ms(3_599_070)),
            ("3h59m59.07s", ms(14_399_070)),
            ("1.5s", ms(1_500)),
            ("500ms", ms(500)),
            ("2h", Duration::from_secs(7_200)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
            ("600s", Duration::from_secs(600)),
            ("1.000000001s", Duration::from_nanos(1_000_000_001)),
            ("2.5us", Duration::from_nanos(2_500)),
            ("3µs", Duration::from_nanos(3_000)),
            ("3μs", Duration::from_nanos(3_000)),
            ("7ns", Duration::from_nanos(7)),
            (".5m", Duration::from_secs(30)),
            ("1.h", Duration::from_secs(3_600)),
            ("1h1m1s1ms1us1ns", Duration::from_nanos(3_661_001_001_001)),
            (
                "0.1234567891234567891234h",
                Duration::from_nanos(444_444_440_844),
            ),
            (
                "2562047h47m16.854775807s",
                Duration::from_nanos(i64::MAX as u64),
            ),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_go_duration(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn refuses_negative_and_broken_go_durations() {
        for text in [
            "-1h2m3s",
            "-0.5s",
            "",
            "1",
            "s",
            "1x",
            "1.2.3s",
            ".s",
            "1h-2m",
            "1 h",
            "h1",
            "99999999999999999999999h",
        ] {
            assert_eq!(parse_go_duration(text), None, "{text:?}");
        }
    }

    /// The first reply of the stream in the reference README.
    const REFERENCE_STREAM: &str = concat!(
        r#"{"deleted":null,"new":[{"duration":"59m59.07s","id":1,"origin":"cscli","#,
        r#""scenario":"manual 'ban' from 'moat'","scope":"Ip","type":"ban","#,
        r#""value":"198.51.100.7"},"#,
        "\n",
        r#"{"duration":"3h59m59.07s","id":2,"origin":"cscli","scenario":"...","#,
        r#""scope":"Range","type":"ban","value":"203.0.113.0/24"}]}"#,
    );

    #[test]
    fn parses_the_reference_stream() {
        let stream = parse_stream(REFERENCE_STREAM.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(stream.deleted.is_empty());
        assert_eq!(
            stream.new,
            vec![
                Decision {
                    id: 1,
                    origin: "cscli".to_string(),
                    scenario: "manual 'ban' from 'moat'".to_string(),
                    scope: "Ip".to_string(),
                    kind: "ban".to_string(),
                    value: "198.51.100.7".to_string(),
                    duration: Duration::from_millis(3_599_070),
                },
                Decision {
                    id: 2,
                    origin: "cscli".to_string(),
                    scenario: "...".to_string(),
                    scope: "Range".to_string(),
                    kind: "ban".to_string(),
                    value: "203.0.113.0/24".to_string(),
                    duration: Duration::from_millis(14_399_070),
                },
            ]
        );
    }

    #[test]
    fn parses_null_empty_and_partial_streams() {
        for body in [
            r#"{"new":null,"deleted":null}"#,
            r#"{"new":[],"deleted":[]}"#,
            "{}",
        ] {
            let stream = parse_stream(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(stream, Stream::default(), "{body}");
        }
        let body = r#"{"new":null,"deleted":[{"duration":"-1h2m3s","origin":"crowdsec",
            "scenario":"x","scope":"Ip","type":"ban","value":"2001:db8::1",
            "until":"2026-01-01T00:00:00Z","simulated":false,"uuid":"u"},
            {"value":"192.0.2.1","scope":null,"duration":"junk"}]}"#;
        let stream = parse_stream(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(stream.new.is_empty());
        assert_eq!(stream.deleted.len(), 2);
        assert_eq!(stream.deleted[0].id, 0);
        assert_eq!(stream.deleted[0].value, "2001:db8::1");
        assert_eq!(stream.deleted[0].duration, Duration::ZERO);
        assert_eq!(stream.deleted[1].scope, "");
        assert_eq!(stream.deleted[1].duration, Duration::ZERO);
    }

    #[test]
    fn refuses_streams_that_are_not_json_objects() {
        for body in ["", "null", "{\"new\":{}}", "{\"new\":[1]}", "<html>"] {
            let error = parse_stream(body.as_bytes()).expect_err(body);
            let text = error.to_string();
            assert!(
                text.starts_with("the decision stream is not the JSON"),
                "{text}"
            );
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn names_a_refused_bouncer_key() {
        let error = LapiError::Status {
            request: "GET v1/decisions/stream",
            status: 403,
            body_excerpt: "{\"message\":\"access forbidden\"}".to_string(),
        };
        assert_eq!(
            error.to_string(),
            "the LAPI refused the bouncer key (403): check api_key / api_key_file"
        );
        let error = LapiError::Status {
            request: "POST v1/alerts",
            status: 500,
            body_excerpt: "{\"message\":\"validation failure\"}".to_string(),
        };
        assert_eq!(
            error.to_string(),
            "the LAPI answered 500 to POST v1/alerts: {\"message\":\"validation failure\"}"
        );
    }

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

    #[test]
    fn writes_alerts_as_the_lapi_requires() {
        let alerts = [BanAlert {
            scenario: "moat/rate_syn".to_string(),
            scope: SCOPE_IP,
            value: "192.0.2.55".to_string(),
            duration: Duration::from_millis(600_001),
            at: UNIX_EPOCH + Duration::from_secs(1_796_000_000),
            message: "moat banned 192.0.2.55: SYN rate".to_string(),
        }];
        let body = alerts_body(&alerts).unwrap_or_else(|e| panic!("{e}"));
        let value: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
        let expected = serde_json::json!([{
            "scenario": "moat/rate_syn",
            "scenario_hash": "",
            "scenario_version": "",
            "message": "moat banned 192.0.2.55: SYN rate",
            "events_count": 1,
            "events": [],
            "start_at": "2026-11-30T00:53:20Z",
            "stop_at": "2026-11-30T00:53:20Z",
            "capacity": 0,
            "leakspeed": "0",
            "simulated": false,
            "source": {"scope": "Ip", "value": "192.0.2.55"},
            "decisions": [{
                "duration": "601s",
                "origin": "moat",
                "scenario": "moat/rate_syn",
                "scope": "Ip",
                "type": "ban",
                "value": "192.0.2.55",
            }],
        }]);
        assert_eq!(value, expected);
        assert_eq!(
            parse_go_duration("601s"),
            Some(Duration::from_secs(601)),
            "the decision duration reads back in Go's format"
        );
    }

    #[test]
    fn formats_rfc3339_utc() {
        let cases: &[(u64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (1_796_000_000, "2026-11-30T00:53:20Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
        ];
        for &(seconds, text) in cases {
            let at = UNIX_EPOCH + Duration::from_secs(seconds);
            assert_eq!(format_rfc3339(at), text, "{seconds}");
            assert_eq!(parse_rfc3339(text), i64::try_from(seconds).ok(), "{text}");
        }
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn round_trips_every_day_for_four_centuries() {
        for days in (-719_468..300_000).step_by(7) {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                days_from_civil(year, month, day),
                days,
                "{year}-{month}-{day}"
            );
        }
    }

    #[test]
    fn parses_rfc3339_with_fractions_and_offsets() {
        let cases: &[(&str, Option<i64>)] = &[
            ("2026-11-30T05:00:00Z", Some(1_796_014_800)),
            ("2026-11-30T05:00:00.123456789Z", Some(1_796_014_800)),
            ("2026-11-30T06:00:00+01:00", Some(1_796_014_800)),
            ("2026-11-30T00:30:00-04:30", Some(1_796_014_800)),
            ("2026-11-30 05:00:00Z", Some(1_796_014_800)),
            ("2026-11-30T05:00:00", None),
            ("2026-13-30T05:00:00Z", None),
            ("2026-11-30T24:00:00Z", None),
            ("2026-11-30T05:00:00.Z", None),
            ("2026-11-30T05:00:00Zjunk", None),
            ("2026-11-30T05:00:00+0100", None),
            ("", None),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_rfc3339(text), expected, "{text}");
        }
    }
}
