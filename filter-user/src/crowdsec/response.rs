//! The response side of the minimal HTTP/1.1 client: a parser fed the bytes as they arrive,
//! which reads the status line and headers, then the body by `Content-Length`, by
//! `Transfer-Encoding: chunked` (Go's server chunks big replies: the decision stream can be
//! 15 MB) or until the connection closes. Pure, so every framing is unit-tested on bytes.

use bytes::{Buf, BytesMut};

use super::http::{HttpError, MAX_HEAD_BYTES, MAX_LINE_BYTES, Response, excerpt};

/// Parses a whole response held in memory, as if the connection closed after `raw`.
pub fn parse_response(raw: &[u8], max_body_bytes: usize) -> Result<Response, HttpError> {
    let mut parser = ResponseParser::new(max_body_bytes);
    parser.feed(raw)?;
    parser.finish()
}

/// How the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(usize),
    /// Chunked, in the given step.
    Chunked(ChunkStep),
    /// The body ends when the connection does.
    UntilEof,
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkStep {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are still to come.
    Data(usize),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailer,
}

/// Where the parser stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Body(Framing),
    Done,
}

/// An incremental HTTP/1.x response parser: feed it bytes as they arrive, then finish it.
#[derive(Debug)]
pub struct ResponseParser {
    stage: Stage,
    status: u16,
    /// Bytes received and not yet consumed.
    pending: BytesMut,
    /// How far `pending` was already searched for the end of the head.
    head_scanned: usize,
    body: BytesMut,
    max_body_bytes: usize,
}

impl ResponseParser {
    /// A parser that refuses bodies over `max_body_bytes`.
    pub fn new(max_body_bytes: usize) -> ResponseParser {
        ResponseParser {
            stage: Stage::Head,
            status: 0,
            pending: BytesMut::new(),
            head_scanned: 0,
            body: BytesMut::new(),
            max_body_bytes,
        }
    }

    /// Consumes the next bytes of the response. Bytes after the end of the response are
    /// ignored.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), HttpError> {
        if self.stage == Stage::Done {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        self.advance()
    }

    /// Whether the response is complete (its body's end was framed, not left to EOF).
    pub fn is_complete(&self) -> bool {
        self.stage == Stage::Done
    }

    /// The response, once the connection has ended or the body is complete.
    pub fn finish(self) -> Result<Response, HttpError> {
        match self.stage {
            Stage::Done | Stage::Body(Framing::UntilEof) => Ok(Response {
                status: self.status,
                body: self.body.freeze(),
            }),
            Stage::Head => Err(malformed(if self.pending.is_empty() {
                "the connection closed without a response".to_string()
            } else {
                format!(
                    "the connection closed inside the headers after {} bytes",
                    self.pending.len()
                )
            })),
            Stage::Body(Framing::Length(missing)) => Err(malformed(format!(
                "the connection closed {missing} bytes before the end of the body (got {})",
                self.body.len()
            ))),
            Stage::Body(Framing::Chunked(_)) => Err(malformed(format!(
                "the connection closed inside a chunked body (got {} bytes)",
                self.body.len()
            ))),
        }
    }

    /// Runs the state machine over `pending` as far as it goes.
    fn advance(&mut self) -> Result<(), HttpError> {
        loop {
            match self.stage {
                Stage::Done => return Ok(()),
                Stage::Head => {
                    let start = self.head_scanned.saturating_sub(3);
                    let Some(end) = find(&self.pending[start..], b"\r\n\r\n") else {
                        if self.pending.len() > MAX_HEAD_BYTES {
                            return Err(malformed(format!(
                                "the headers are longer than {MAX_HEAD_BYTES} bytes"
                            )));
                        }
                        self.head_scanned = self.pending.len();
                        return Ok(());
                    };
                    let head = self.pending.split_to(start + end + 4);
                    self.head_scanned = 0;
                    let (status, framing) = parse_head(&head, self.max_body_bytes)?;
                    // 1xx replies (other than 101) precede the real one.
                    if (100..200).contains(&status) && status != 101 {
                        continue;
                    }
                    self.status = status;
                    self.stage = match framing {
                        Framing::Length(0) => Stage::Done,
                        _ if status == 204 || status == 304 => Stage::Done,
                        framing => Stage::Body(framing),
                    };
                }
                Stage::Body(Framing::Length(missing)) => {
                    let take = missing.min(self.pending.len());
                    self.take_body(take)?;
                    let missing = missing - take;
                    self.stage = if missing == 0 {
                        Stage::Done
                    } else {
                        Stage::Body(Framing::Length(missing))
                    };
                    if missing != 0 {
                        return Ok(());
                    }
                }
                Stage::Body(Framing::UntilEof) => {
                    self.take_body(self.pending.len())?;
                    return Ok(());
                }
                Stage::Body(Framing::Chunked(step)) => match self.chunk(step)? {
                    Some(next) => self.stage = next,
                    None => return Ok(()),
                },
            }
        }
    }

    /// One step of a chunked body: the next stage, or `None` when more bytes are needed.
    fn chunk(&mut self, step: ChunkStep) -> Result<Option<Stage>, HttpError> {
        let chunked = |step| Some(Stage::Body(Framing::Chunked(step)));
        match step {
            ChunkStep::Size => {
                let Some(line) = self.line("chunk size")? else {
                    return Ok(None);
                };
                let size_text = line[..].split(|&b| b == b';').next().unwrap_or(&[]);
                let size_text = String::from_utf8_lossy(size_text);
                let size_text = size_text.trim();
                let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                    malformed(format!("the chunk size {size_text:?} is not hexadecimal"))
                })?;
                if size > self.max_body_bytes.saturating_sub(self.body.len()) {
                    return Err(HttpError::TooLarge {
                        limit_bytes: self.max_body_bytes,
                    });
                }
                Ok(if size == 0 {
                    chunked(ChunkStep::Trailer)
                } else {
                    chunked(ChunkStep::Data(size))
                })
            }
            ChunkStep::Data(missing) => {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                let take = missing.min(self.pending.len());
                self.take_body(take)?;
                Ok(if take == missing {
                    chunked(ChunkStep::DataEnd)
                } else {
                    chunked(ChunkStep::Data(missing - take))
                })
            }
            ChunkStep::DataEnd => {
                if self.pending.len() < 2 {
                    return Ok(None);
                }
                if &self.pending[..2] != b"\r\n" {
                    return Err(malformed("chunk data is not followed by CRLF".to_string()));
                }
                self.pending.advance(2);
                Ok(chunked(ChunkStep::Size))
            }
            ChunkStep::Trailer => match self.line("trailer")? {
                None => Ok(None),
                Some(line) if line.is_empty() => Ok(Some(Stage::Done)),
                Some(_) => Ok(chunked(ChunkStep::Trailer)),
            },
        }
    }

    /// The next CRLF-terminated line of `pending`, without its CRLF, if it has arrived.
    fn line(&mut self, what: &str) -> Result<Option<BytesMut>, HttpError> {
        match find(&self.pending, b"\r\n") {
            Some(end) => {
                let line = self.pending.split_to(end);
                self.pending.advance(2);
                Ok(Some(line))
            }
            None if self.pending.len() > MAX_LINE_BYTES => Err(malformed(format!(
                "a {what} line is longer than {MAX_LINE_BYTES} bytes"
            ))),
            None => Ok(None),
        }
    }

    /// Moves `count` pending bytes into the body, within the limit.
    fn take_body(&mut self, count: usize) -> Result<(), HttpError> {
        if self.body.len().saturating_add(count) > self.max_body_bytes {
            return Err(HttpError::TooLarge {
                limit_bytes: self.max_body_bytes,
            });
        }
        let bytes = self.pending.split_to(count);
        if self.body.is_empty() {
            self.body = bytes;
        } else {
            self.body.extend_from_slice(&bytes);
        }
        Ok(())
    }
}

/// Parses the status line and headers (ending in CRLF CRLF) into a status and the framing.
fn parse_head(head: &[u8], max_body_bytes: usize) -> Result<(u16, Framing), HttpError> {
    let text = std::str::from_utf8(head)
        .map_err(|_| malformed("the headers are not UTF-8".to_string()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(malformed(format!(
            "the status line {:?} is not HTTP/1.x",
            excerpt(status_line.as_bytes(), 80)
        )));
    }
    let status = match code.parse::<u16>() {
        Ok(status) if code.len() == 3 && (100..600).contains(&status) => status,
        _ => {
            return Err(malformed(format!(
                "the status code {:?} is not three digits",
                excerpt(code.as_bytes(), 20)
            )));
        }
    };
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut other_coding = false;
    for line in lines.filter(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed(format!(
                "the header line {:?} has no colon",
                excerpt(line.as_bytes(), 80)
            )));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = value
                .parse::<u64>()
                .map_err(|_| malformed(format!("the Content-Length {value:?} is not a number")))?;
            let parsed = usize::try_from(parsed).unwrap_or(usize::MAX);
            if length.is_some_and(|earlier| earlier != parsed) {
                return Err(malformed(
                    "two different Content-Length headers".to_string(),
                ));
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            chunked = last.eq_ignore_ascii_case("chunked");
            other_coding = !chunked;
        }
    }
    // RFC 9112 6.3: Transfer-Encoding wins over Content-Length; a final coding other than
    // chunked runs to the end of the connection.
    let framing = if chunked {
        Framing::Chunked(ChunkStep::Size)
    } else if other_coding {
        Framing::UntilEof
    } else if let Some(length) = length {
        if length > max_body_bytes {
            return Err(HttpError::TooLarge {
                limit_bytes: max_body_bytes,
            });
        }
        Framing::Length(length)
    } else {
        Framing::UntilEof
    };
    Ok((status, framing))
}

/// The first index of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn malformed(what: String) -> HttpError {
    HttpError::Malformed { what }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::crowdsec::http::MAX_BODY_BYTES;

    fn parse(raw: &[u8]) -> Response {
        parse_response(raw, MAX_BODY_BYTES).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn reads_content_length_bodies() {
        let response = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello trailing junk");
        assert_eq!(response.status, 200);
        assert_eq!(&response.body[..], b"hello");
    }

    #[test]
    fn reads_bodies_until_eof() {
        let response = parse(b"HTTP/1.0 403 Forbidden\r\nX: y\r\n\r\n{\"message\":\"no\"}");
        assert_eq!(response.status, 403);
        assert_eq!(&response.body[..], b"{\"message\":\"no\"}");
    }

    #[test]
    fn reads_chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
                    5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let response = parse(raw);
        assert_eq!(&response.body[..], b"hello world");
    }

    #[test]
    fn reads_chunked_bodies_fed_byte_by_byte() {
        let raw = b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n\
                    A\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n";
        let mut parser = ResponseParser::new(MAX_BODY_BYTES);
        for (index, byte) in raw.iter().enumerate() {
            assert!(!parser.is_complete(), "complete early at byte {index}");
            parser
                .feed(std::slice::from_ref(byte))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(parser.is_complete());
        let response = parser.finish().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(response.status, 201);
        assert_eq!(&response.body[..], b"0123456789abc");
    }

    #[test]
    fn skips_interim_responses_and_bodiless_statuses() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let mut parser = ResponseParser::new(MAX_BODY_BYTES);
        parser.feed(raw).unwrap_or_else(|error| panic!("{error}"));
        assert!(parser.is_complete());
        assert_eq!(parser.finish().map(|r| r.status).ok(), Some(204));
    }

    #[test]
    fn refuses_truncated_and_malformed_responses() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "without a response"),
            (b"HTTP/1.1 200 OK\r\nContent-Le", "inside the headers"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                "7 bytes before the end",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "chunked",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "hexadecimal",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n",
                "CRLF",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.x"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "three digits"),
            (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "no colon"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "not a number",
            ),
        ];
        for &(raw, expected) in cases {
            let error = parse_response(raw, MAX_BODY_BYTES).expect_err(expected);
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn refuses_bodies_over_the_limit() {
        let cases: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n0123456789ab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n",
        ];
        for raw in cases {
            let result = parse_response(raw, 10);
            assert!(
                matches!(result, Err(HttpError::TooLarge { limit_bytes: 10 })),
                "{result:?}"
            );
        }
    }
}
