//! A minimal HTTP/1.1 client for the CrowdSec LAPI: plain `http://` over one
//! `tokio::net::TcpStream` per request (`Connection: close`), with the whole exchange bounded by a
//! timeout and the body by [`MAX_BODY_BYTES`]. It reads bodies framed by `Content-Length`,
//! `Transfer-Encoding: chunked` (Go's net/http chunks large replies) or the end of the
//! connection. It does not speak TLS, follow redirects, decompress or keep connections alive.
//! The response parser ([`super::response::ResponseParser`]) is a pure state machine over
//! bytes.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The largest response body moat reads (256 MiB); a 100,000-decision stream is about 15 MB.
pub const MAX_BODY_BYTES: usize = 256 << 20;

/// The largest status line plus headers moat reads.
pub(super) const MAX_HEAD_BYTES: usize = 64 << 10;

/// The longest chunk-size or trailer line moat reads.
pub(super) const MAX_LINE_BYTES: usize = 4 << 10;

/// How many bytes one socket read asks for.
const READ_BYTES: usize = 64 << 10;

/// Where an HTTP service lives: host, port and the path prefix requests are joined to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A DNS name or an IP address, without the brackets of an IPv6 URL.
    host: String,
    port: u16,
    /// Starts and ends with `/`.
    base_path: String,
}

impl Endpoint {
    /// Parses an `http://host[:port][/prefix/]` URL; the port defaults to 80. The host is an
    /// IPv4 address, a bracketed IPv6 address or a DNS name (resolved on each request). The
    /// error is one line saying what is wrong and what would be right.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err(
                "the URL is empty; give the LAPI's address, e.g. http://127.0.0.1:8080/"
                    .to_string(),
            );
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "\"{url}\" has no scheme; write it as http://{url} (moat speaks plain http://)"
            ));
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(format!(
                "\"{url}\" uses https, which moat cannot speak yet; give the LAPI's http:// \
                 address (on a trusted network or a tunnel)"
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(format!(
                "\"{url}\" uses the scheme \"{scheme}\"; moat speaks only http://host:port/"
            ));
        }
        if rest.contains(['?', '#']) {
            return Err(format!(
                "\"{url}\" has a query or fragment; give only http://host:port/ and a path prefix"
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "\"{url}\" carries user information; the LAPI takes keys in headers, so give \
                 only http://host:port/"
            ));
        }
        let (host, port) = split_authority(url, authority)?;
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "\"{url}\" has spaces or control characters in its path"
            ));
        }
        let mut base_path = path.to_string();
        if !base_path.ends_with('/') {
            base_path.push('/');
        }
        Ok(Endpoint {
            host,
            port,
            base_path,
        })
    }

    /// The host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request target for `path` (with or without a leading `/`) under the base path:
    /// `join("v1/decisions/stream")` is `/prefix/v1/decisions/stream` for `http://h/prefix/`.
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.base_path, path.trim_start_matches('/'))
    }

    /// The value of the `Host` header: the host (bracketed if IPv6), and the port unless 80.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "http://{host}:{}{}", self.port, self.base_path)
    }
}

/// Splits `host[:port]` or `[v6][:port]` and checks both parts.
fn split_authority(url: &str, authority: &str) -> Result<(String, u16), String> {
    let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(format!(
                "\"{url}\" opens an IPv6 address with [ but never closes it"
            ));
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "\"{url}\" has \"[{inside}]\", which is not an IPv6 address; write e.g. [::1]"
            ));
        }
        let port_text = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => {
                    return Err(format!(
                        "\"{url}\" has \"{after}\" after the IPv6 address; write [addr]:port"
                    ));
                }
            },
        };
        (inside.to_string(), port_text)
    } else {
        match authority.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(format!(
                    "\"{url}\" has an IPv6 address without brackets; write it as \
                     http://[addr]:port/"
                ));
            }
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!(
            "\"{url}\" has no host; write e.g. http://127.0.0.1:8080/"
        ));
    }
    let is_name = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !host.contains(':') && !is_name {
        return Err(format!(
            "\"{url}\" has the host \"{host}\", which is neither an IP address nor a DNS name"
        ));
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') && host.parse::<Ipv4Addr>().is_err() {
        return Err(format!(
            "\"{url}\" has the host \"{host}\", which is not an IPv4 address; write e.g. \
             127.0.0.1"
        ));
    }
    let port = match port_text {
        None => 80,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => {
                return Err(format!(
                    "\"{url}\" has the port \"{text}\"; a port is a number from 1 to 65535"
                ));
            }
        },
    };
    Ok((host, port))
}

/// A response: its status code and its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Bytes,
}

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request itself cannot be sent as given.
    #[error("cannot send the request: {what}")]
    InvalidRequest {
        /// What is wrong with it.
        what: String,
    },
    /// The host name did not resolve.
    #[error("resolving {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// No address of the host accepted a connection.
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The last address's error.
        source: std::io::Error,
    },
    /// The exchange did not finish in time.
    #[error("{method} {endpoint} did not finish within {timeout:?}")]
    Timeout {
        /// The request method.
        method: String,
        /// The endpoint.
        endpoint: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// Sending or receiving failed after connecting.
    #[error("talking to {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The reply is not HTTP/1.x as moat reads it.
    #[error("malformed HTTP response: {what}")]
    Malformed {
        /// What is wrong with it.
        what: String,
    },
    /// The body is bigger than moat reads.
    #[error("the response body is larger than {limit_bytes} bytes; moat stops reading there")]
    TooLarge {
        /// The limit.
        limit_bytes: usize,
    },
}

/// Sends one request to `endpoint` and reads the whole response, all within `timeout`.
/// `path_and_query` is joined to the endpoint's base path. A body is sent as
/// `application/json`. Any status is a response; callers judge it.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let head = request_head(endpoint, method, path_and_query, headers, body)?;
    let exchange = async {
        let mut stream = connect(endpoint).await?;
        let io_error = |source| HttpError::Io {
            endpoint: endpoint.to_string(),
            source,
        };
        // The write half stays open: Go's server cancels a request whose client half-closes.
        stream.write_all(head.as_bytes()).await.map_err(io_error)?;
        if let Some(body) = body {
            stream.write_all(body).await.map_err(io_error)?;
        }
        stream.flush().await.map_err(io_error)?;
        read_response(&mut stream, MAX_BODY_BYTES)
            .await
            .map_err(|error| match error {
                HttpError::Io { source, .. } => io_error(source),
                other => other,
            })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout {
            method: method.to_string(),
            endpoint: endpoint.to_string(),
            timeout,
        }),
    }
}

/// The request line and headers, checked for line breaks that would split them.
fn request_head(
    endpoint: &Endpoint,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<String, HttpError> {
    let target = endpoint.join(path_and_query);
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::InvalidRequest {
            what: format!("the method \"{method}\" is not an HTTP method"),
        });
    }
    if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HttpError::InvalidRequest {
            what: format!("the target {target:?} has spaces or control characters"),
        });
    }
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: moat/{}\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\n",
        endpoint.host_header(),
        env!("CARGO_PKG_VERSION"),
    );
    for (name, value) in headers {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(HttpError::InvalidRequest {
                what: format!("the header name {name:?} is not a token"),
            });
        }
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(HttpError::InvalidRequest {
                what: format!("the value of header {name} has a line break or control character"),
            });
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    Ok(head)
}

/// Resolves the endpoint's host and connects to the first address that answers.
async fn connect(endpoint: &Endpoint) -> Result<TcpStream, HttpError> {
    let addresses = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| HttpError::Resolve {
            host: endpoint.host.clone(),
            source,
        })?;
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(match last_error {
        Some(source) => HttpError::Connect {
            endpoint: endpoint.to_string(),
            source,
        },
        None => HttpError::Resolve {
            host: endpoint.host.clone(),
            source: std::io::Error::other("the name has no addresses"),
        },
    })
}

/// Reads one response from `reader` until its body ends, or until the end of the stream for
/// a body without framing. I/O errors come back as [`HttpError::Io`] with an empty endpoint,
/// which [`request`] fills in.
async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_body_bytes: usize,
) -> Result<Response, HttpError> {
    let mut parser = super::response::ResponseParser::new(max_body_bytes);
    let mut buffer = vec![0u8; READ_BYTES];
    loop {
        let read = reader
            .read(&mut buffer)
            .await
            .map_err(|source| HttpError::Io {
                endpoint: String::new(),
                source,
            })?;
        if read == 0 {
            return parser.finish();
        }
        parser.feed(&buffer[..read])?;
        if parser.is_complete() {
            return parser.finish();
        }
    }
}

/// Up to `max_chars` of `bytes` as one line of text (control characters as spaces).
pub fn excerpt(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap_or_else(|error| panic!("{url}: {error}"))
    }

    #[test]
    fn parses_urls() {
        let cases: &[(&str, &str, u16, &str)] = &[
            ("http://127.0.0.1:8080/", "127.0.0.1", 8080, "/"),
            ("http://127.0.0.1:8080", "127.0.0.1", 8080, "/"),
            ("  http://127.0.0.1:8080/ ", "127.0.0.1", 8080, "/"),
            (
                "HTTP://lapi.example:8080/prefix",
                "lapi.example",
                8080,
                "/prefix/",
            ),
            ("http://lapi/prefix/", "lapi", 80, "/prefix/"),
            ("http://[::1]:8081/", "::1", 8081, "/"),
            ("http://[2001:db8::1]/", "2001:db8::1", 80, "/"),
            (
                "http://crowdsec_lapi:8080/a/b/",
                "crowdsec_lapi",
                8080,
                "/a/b/",
            ),
        ];
        for &(url, host, port, base) in cases {
            let parsed = endpoint(url);
            assert_eq!(parsed.host(), host, "{url}");
            assert_eq!(parsed.port(), port, "{url}");
            assert_eq!(parsed.base_path, base, "{url}");
        }
    }

    #[test]
    fn joins_paths_under_the_base() {
        assert_eq!(
            endpoint("http://127.0.0.1:8080/").join("v1/decisions/stream"),
            "/v1/decisions/stream"
        );
        assert_eq!(
            endpoint("http://host:8080/prefix/").join("/v1/decisions/stream?startup=true"),
            "/prefix/v1/decisions/stream?startup=true"
        );
        assert_eq!(
            endpoint("http://host:8080/prefix").join("v1/alerts"),
            "/prefix/v1/alerts"
        );
    }

    #[test]
    fn writes_host_headers_and_display() {
        assert_eq!(endpoint("http://[::1]:8081/").host_header(), "[::1]:8081");
        assert_eq!(endpoint("http://lapi/").host_header(), "lapi");
        assert_eq!(endpoint("http://[::1]/x").to_string(), "http://[::1]:80/x/");
    }

    #[test]
    fn refuses_bad_urls_saying_what_would_be_right() {
        let cases: &[(&str, &str)] = &[
            ("", "the URL is empty"),
            (
                "127.0.0.1:8080",
                "has no scheme; write it as http://127.0.0.1:8080",
            ),
            (
                "https://lapi:8080/",
                "uses https, which moat cannot speak yet",
            ),
            ("ftp://lapi/", "uses the scheme \"ftp\""),
            ("http://:8080/", "has no host"),
            ("http:///v1", "has no host"),
            ("http://lapi:0/", "the port \"0\""),
            ("http://lapi:99999/", "the port \"99999\""),
            ("http://lapi:/", "the port \"\""),
            ("http://lapi:80x/", "the port \"80x\""),
            ("http://::1:8080/", "IPv6 address without brackets"),
            ("http://[::1/", "never closes it"),
            ("http://[::g]:80/", "not an IPv6 address"),
            ("http://[::1]x/", "after the IPv6 address"),
            ("http://user:pw@lapi/", "user information"),
            ("http://lapi/?x=1", "query or fragment"),
            ("http://la pi/", "neither an IP address nor a DNS name"),
            ("http://300.1.1.1/", "not an IPv4 address"),
        ];
        for &(url, expected) in cases {
            let error = Endpoint::parse(url).expect_err(url);
            assert!(error.contains(expected), "{url}: {error}");
            assert!(!error.contains('\n'), "{url}: {error}");
        }
    }

    #[test]
    fn writes_request_heads() {
        let head = request_head(
            &endpoint("http://127.0.0.1:8080/p/"),
            "POST",
            "v1/alerts",
            &[("Authorization", "Bearer abc")],
            Some(b"[]"),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let expected = format!(
            "POST /p/v1/alerts HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: moat/{}\r\n\
             Accept-Encoding: identity\r\nConnection: close\r\nAuthorization: Bearer abc\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(head, expected);
    }

    #[test]
    fn refuses_header_injection() {
        let result = request_head(
            &endpoint("http://lapi/"),
            "GET",
            "v1/decisions/stream",
            &[("X-Api-Key", "key\r\nX-Evil: 1")],
            None,
        );
        assert!(
            matches!(result, Err(HttpError::InvalidRequest { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn reads_responses_from_a_stream() {
        let mut raw: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let response = read_response(&mut raw, MAX_BODY_BYTES)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!((response.status, &response.body[..]), (200, &b"{}"[..]));
    }

    /// A listener on a free loopback port, and the port.
    async fn local_listener() -> (tokio::net::TcpListener, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("bind: {error}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("local_addr: {error}"))
            .port();
        (listener, port)
    }

    #[tokio::test]
    async fn exchanges_with_a_local_server() {
        let (listener, port) = local_listener().await;
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n{\"a\":1}") {
                let read = socket
                    .read(&mut buffer)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_ne!(read, 0, "client closed early: {request:?}");
                request.extend_from_slice(&buffer[..read]);
            }
            let reply: &[u8] = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
                                 2\r\nok\r\n0\r\n\r\n";
            socket
                .write_all(reply)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            String::from_utf8_lossy(&request).into_owned()
        });
        let url = format!("http://127.0.0.1:{port}/base");
        let response = request(
            &endpoint(&url),
            "POST",
            "v1/alerts",
            &[("Authorization", "Bearer t")],
            Some(b"{\"a\":1}"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!((response.status, &response.body[..]), (201, &b"ok"[..]));
        let request_text = server.await.unwrap_or_else(|error| panic!("{error}"));
        assert!(
            request_text.starts_with("POST /base/v1/alerts HTTP/1.1\r\n"),
            "{request_text}"
        );
        assert!(
            request_text.contains("Content-Length: 7\r\n"),
            "{request_text}"
        );
    }

    #[tokio::test]
    async fn times_out_on_a_silent_server() {
        let (listener, port) = local_listener().await;
        let url = format!("http://127.0.0.1:{port}/");
        let result = request(
            &endpoint(&url),
            "GET",
            "v1/decisions/stream",
            &[],
            None,
            Duration::from_millis(200),
        )
        .await;
        assert!(
            matches!(result, Err(HttpError::Timeout { .. })),
            "{result:?}"
        );
        drop(listener);
    }
}
