//! Validation: each raw value checked against its range, every problem collected with its
//! line and key, so one `moat config check` names them all.

use super::{parse::*, *};

/// Collects problems with their lines while a raw file is validated.
pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
}

impl Validator<'_> {
    pub(super) fn line_of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].matches('\n').count() + 1
    }

    pub(super) fn problem(&mut self, span: Option<Range<usize>>, key: &str, message: String) {
        let line = span.map(|span| self.line_of(span));
        self.problems.push(Problem {
            line,
            key: Some(key.to_string()),
            message,
        });
    }

    /// An integer in `range`, or `default` when absent.
    pub(super) fn int(
        &mut self,
        value: &S<i64>,
        key: &str,
        range: Range<i64>,
        default: u64,
    ) -> u64 {
        match value {
            None => default,
            Some(spanned) => {
                let n = *spanned.get_ref();
                if range.contains(&n) {
                    n as u64
                } else {
                    self.problem(
                        Some(spanned.span()),
                        key,
                        format!(
                            "{n} is out of range; it must be {} to {}",
                            range.start,
                            range.end - 1
                        ),
                    );
                    default
                }
            }
        }
    }

    pub(super) fn duration(&mut self, value: &S<String>, key: &str, default: Duration) -> Duration {
        match value {
            None => default,
            Some(spanned) => match parse_duration(spanned.get_ref()) {
                Ok(duration) => duration,
                Err(message) => {
                    self.problem(Some(spanned.span()), key, message);
                    default
                }
            },
        }
    }

    pub(super) fn ports(&mut self, value: &S<Vec<i64>>, key: &str) -> Option<Vec<u16>> {
        let spanned = value.as_ref()?;
        let mut ports = Vec::new();
        for port in spanned.get_ref() {
            match u16::try_from(*port) {
                Ok(port) if port != 0 => {
                    if ports.contains(&port) {
                        self.problem(
                            Some(spanned.span()),
                            key,
                            format!("port {port} is listed twice"),
                        );
                    }
                    ports.push(port);
                }
                _ => self.problem(
                    Some(spanned.span()),
                    key,
                    format!("{port} is not a port; ports are 1 to 65535"),
                ),
            }
        }
        Some(ports)
    }

    pub(super) fn limit(&mut self, raw: Option<&RawLimit>, key: &str, default: Limit) -> Limit {
        let Some(raw) = raw else {
            return default;
        };
        const MAX: i64 = super::LIMIT_BOUND as i64;
        let result = Limit {
            pps: self.int(&raw.pps, &format!("{key}.pps"), 0..MAX, default.pps),
            burst_packets: self.int(
                &raw.burst,
                &format!("{key}.burst"),
                0..MAX,
                default.burst_packets,
            ),
            bps: self.int(&raw.bps, &format!("{key}.bps"), 0..MAX, default.bps),
            burst_bytes: self.int(
                &raw.burst_bytes,
                &format!("{key}.burst_bytes"),
                0..MAX,
                default.burst_bytes,
            ),
        };
        let span = raw.burst.as_ref().or(raw.pps.as_ref()).map(Spanned::span);
        if result.pps != 0 && result.burst_packets == 0 {
            self.problem(
                span.clone(),
                &format!("{key}.burst"),
                "must be at least 1 when pps is set".into(),
            );
        }
        let span = raw
            .bps
            .as_ref()
            .or(raw.burst_bytes.as_ref())
            .map(Spanned::span);
        if result.bps != 0 && result.burst_bytes < MIN_BURST_BYTES {
            self.problem(
                span,
                &format!("{key}.burst_bytes"),
                format!("must be at least {MIN_BURST_BYTES} (one full frame) when bps is set"),
            );
        }
        result
    }
}
