//! moat's bans as alerts: the body `POST v1/alerts` takes (every field 1.4.6 requires), the
//! `DELETE v1/decisions` that takes one back when its ban is lifted early, and the machine
//! ("watcher") that logs in, keeps its token until it nearly expires and logs in again on a 401.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{
    credentials::Credentials,
    http::{self, Endpoint},
    lapi::{EXCERPT_CHARS, LapiError, SCOPE_RANGE},
    timefmt::{format_rfc3339, parse_rfc3339},
};

/// Where a machine logs in.
const LOGIN_PATH: &str = "v1/watchers/login";
/// Where a machine pushes alerts.
const ALERTS_PATH: &str = "v1/alerts";
/// Where a machine deletes decisions (by filter: `ip` or `range`, and `scenario`).
const DECISIONS_PATH: &str = "v1/decisions";

/// A token this close to its expiry is renewed before use.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// How long a token is taken to last when the login reply's `expire` cannot be read (the LAPI
/// issues one-hour tokens).
const TOKEN_FALLBACK_LIFETIME: Duration = Duration::from_secs(50 * 60);

/// One of moat's bans, sent to the LAPI as an alert carrying one `ban` decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanAlert {
    /// The scenario, e.g. `moat/manual`.
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

/// A decision moat pushed, to be deleted from the LAPI: its ban was lifted early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retraction {
    /// The scenario the alert carried, e.g. `moat/manual`.
    pub scenario: String,
    /// [`SCOPE_IP`] or [`SCOPE_RANGE`].
    pub scope: &'static str,
    /// The address or CIDR.
    pub value: String,
}

impl Retraction {
    /// The path and query of its `DELETE`: the LAPI deletes every decision of that scenario on
    /// that address (`ip`) or exact range (`range`), and no other origin's.
    fn path(&self) -> String {
        let filter = if self.scope == SCOPE_RANGE {
            "range"
        } else {
            "ip"
        };
        format!(
            "{DECISIONS_PATH}?{filter}={}&scenario={}",
            query_value(&self.value),
            query_value(&self.scenario)
        )
    }
}

/// `value` escaped for a query string: every byte but letters, digits and `-._` as `%XX`.
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_') {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
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
    /// `scenarios` (e.g. `moat/manual`) when it logs in. It does not log in yet.
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

    /// Deletes the decisions `retraction` names (`DELETE v1/decisions`), logging in as
    /// [`Watcher::push`] does; how many the LAPI deleted (0 when none was left).
    pub async fn retract(
        &mut self,
        retraction: &Retraction,
        timeout: Duration,
    ) -> Result<u64, LapiError> {
        let path = retraction.path();
        let mut response = self.send("DELETE", &path, None, timeout).await?;
        if response.status == 401 {
            self.token = None;
            response = self.send("DELETE", &path, None, timeout).await?;
        }
        match response.status {
            200 => {}
            status => {
                return Err(LapiError::Status {
                    request: "DELETE v1/decisions",
                    status,
                    body_excerpt: http::excerpt(&response.body, EXCERPT_CHARS),
                });
            }
        }
        // 1.4.6 answers {"nbDeleted":"1"}, the count as a string.
        let reply: serde_json::Value =
            serde_json::from_slice(&response.body).map_err(|error| LapiError::Json {
                what: "the reply to DELETE v1/decisions",
                reason: error.to_string(),
            })?;
        Ok(match &reply["nbDeleted"] {
            serde_json::Value::String(count) => count.parse().unwrap_or(0),
            serde_json::Value::Number(count) => count.as_u64().unwrap_or(0),
            _ => 0,
        })
    }

    /// One request with a valid token.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<http::Response, LapiError> {
        let token = self.token(timeout).await?;
        let authorization = format!("Bearer {token}");
        Ok(http::request(
            &self.endpoint,
            method,
            path,
            &[("Authorization", &authorization)],
            body,
            timeout,
        )
        .await?)
    }

    /// One `POST v1/alerts` with a valid token.
    async fn post_alerts(
        &mut self,
        body: &[u8],
        timeout: Duration,
    ) -> Result<http::Response, LapiError> {
        self.send("POST", ALERTS_PATH, Some(body), timeout).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crowdsec::{lapi::SCOPE_IP, timefmt::parse_go_duration};

    #[test]
    fn retractions_delete_by_address_or_exact_range_and_scenario() {
        let ip = Retraction {
            scenario: "moat/manual".to_string(),
            scope: SCOPE_IP,
            value: "192.0.2.55".to_string(),
        };
        assert_eq!(
            ip.path(),
            "v1/decisions?ip=192.0.2.55&scenario=moat%2Fmanual"
        );
        let range = Retraction {
            scope: SCOPE_RANGE,
            value: "2001:db8:1:2::/64".to_string(),
            ..ip
        };
        assert_eq!(
            range.path(),
            "v1/decisions?range=2001%3Adb8%3A1%3A2%3A%3A%2F64&scenario=moat%2Fmanual"
        );
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
}
