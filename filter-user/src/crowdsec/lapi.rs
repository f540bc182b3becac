//! CrowdSec's Local API (LAPI, checked against 1.4.6) on top of [`super::http`]: a bouncer's
//! decision stream (`GET v1/decisions/stream` with an `X-Api-Key`), parsed into [`Stream`], and
//! the errors every LAPI call reports ([`LapiError`]). The machine that pushes alerts is
//! [`super::watcher`]. It does not decide what to do with a decision (scope and value checks
//! are the caller's) and keeps no state between pulls.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::{
    http::{self, Endpoint, HttpError},
    timefmt::parse_go_duration,
};

/// The bouncer's decision stream.
const STREAM_PATH: &str = "v1/decisions/stream";
/// The most characters of a reply body quoted in an error.
pub(super) const EXCERPT_CHARS: usize = 200;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
