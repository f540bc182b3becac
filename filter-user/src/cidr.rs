//! IPv4 and IPv6 prefixes as users write them (`10.0.0.0/8`, `2001:db8::/32`, a bare address
//! for one host), validated strictly: a typo must never widen or narrow a list silently.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use filter_common::lists::{V4_MAX_PREFIX, V4Key, V6_MAX_PREFIX, V6Key};

/// A validated prefix with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cidr {
    /// An IPv4 prefix.
    V4 {
        /// Address bytes in network order.
        addr: V4Key,
        /// Prefix length, 0 to 32.
        prefix: u32,
    },
    /// An IPv6 prefix.
    V6 {
        /// Address bytes in network order.
        addr: V6Key,
        /// Prefix length, 0 to 128.
        prefix: u32,
    },
}

/// Why an IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, as dual-stack servers log IPv4
/// clients) is refused where a source is expected: IPv4 packets carry IPv4 addresses, so it
/// would never match one.
pub const MAPPED: &str =
    "an IPv4-mapped IPv6 address never matches: IPv4 packets carry the IPv4 address";

/// Why a prefix was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct CidrError {
    /// The text given.
    pub input: String,
    /// What is wrong and what would be right.
    pub reason: String,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Cidr, CidrError> {
        // Most of a long blocklist is plain IPv4, read here without the general parser's work.
        match plain_v4(input.as_bytes()) {
            Some(cidr) => Ok(cidr),
            None => parse_any(input),
        }
    }
}

/// `input` as a prefix of either family, in any form the address parsers take, or why not.
fn parse_any(input: &str) -> Result<Cidr, CidrError> {
    let error = |reason: String| CidrError {
        input: input.to_string(),
        reason,
    };
    if input.split_whitespace().nth(1).is_some() {
        return Err(error(
            "several prefixes in one entry; give one per line (or argument)".into(),
        ));
    }
    let (addr_text, prefix_text) = match input.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (input, None),
    };
    if addr_text.contains('%') {
        return Err(error(
            "IPv6 zone ids (like %eth0) name a link, not a network; remove the zone".into(),
        ));
    }
    let addr: IpAddr = addr_text.parse().map_err(|_| {
        error("expected an IPv4 or IPv6 address, e.g. 203.0.113.0/24 or 2001:db8::/32".into())
    })?;
    let max = match addr {
        IpAddr::V4(_) => V4_MAX_PREFIX,
        IpAddr::V6(_) => V6_MAX_PREFIX,
    };
    let prefix = match prefix_text {
        None => max,
        Some(text) => match text.parse::<u32>() {
            Ok(prefix) if prefix <= max && !text.starts_with('+') => prefix,
            _ => return Err(error(format!("the prefix length must be 0 to {max}"))),
        },
    };
    if let IpAddr::V6(v6) = addr
        && let Some(v4) = v6.to_ipv4_mapped()
        && prefix >= 96
    {
        return Err(error(format!(
            "{MAPPED}; write {}",
            Cidr::of(IpAddr::V4(v4), prefix - 96)
        )));
    }
    let cidr = match addr {
        IpAddr::V4(v4) => Cidr::V4 {
            addr: v4.octets(),
            prefix,
        },
        IpAddr::V6(v6) => Cidr::V6 {
            addr: v6.octets(),
            prefix,
        },
    };
    let network = cidr.network();
    if network != cidr {
        return Err(error(format!("host bits are set; did you mean {network}?")));
    }
    Ok(cidr)
}

/// `text` if it is a plain IPv4 prefix or host in canonical form (`a.b.c.d` or `a.b.c.d/n`,
/// no leading zeros, no host bits), which the general parser would accept as the same prefix;
/// `None` for anything else, valid or not, which the general parser then reads and explains.
fn plain_v4(text: &[u8]) -> Option<Cidr> {
    /// A decimal number of one to `max_digits` digits with no leading zero, and what follows.
    fn number(text: &[u8], max_digits: usize) -> Option<(u32, &[u8])> {
        let digits = text
            .iter()
            .take(max_digits + 1)
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if digits == 0 || digits > max_digits || (digits > 1 && text[0] == b'0') {
            return None;
        }
        let value = text[..digits]
            .iter()
            .fold(0, |value, digit| value * 10 + u32::from(digit - b'0'));
        Some((value, &text[digits..]))
    }
    let mut addr = [0u8; 4];
    let mut rest = text;
    for (index, octet) in addr.iter_mut().enumerate() {
        let (value, after) = number(rest, 3)?;
        *octet = u8::try_from(value).ok()?;
        rest = match (index, after) {
            (3, after) => after,
            (_, [b'.', after @ ..]) => after,
            _ => return None,
        };
    }
    let prefix = match rest {
        [] => V4_MAX_PREFIX,
        [b'/', digits @ ..] => match number(digits, 2)? {
            (prefix, []) if prefix <= V4_MAX_PREFIX => prefix,
            _ => return None,
        },
        _ => return None,
    };
    let cidr = Cidr::V4 { addr, prefix };
    (cidr.network() == cidr).then_some(cidr)
}

impl Cidr {
    /// A key that sorts prefixes by family (IPv4 first), then address, then length; equal
    /// keys are equal prefixes. Plain integers, so a million sort fast.
    pub fn address_order(&self) -> (u8, u128, u32) {
        match self {
            Cidr::V4 { addr, prefix } => (4, u128::from(u32::from_be_bytes(*addr)), *prefix),
            Cidr::V6 { addr, prefix } => (6, u128::from_be_bytes(*addr), *prefix),
        }
    }

    /// Whether `addr` lies inside this prefix (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self, addr) {
            (Cidr::V4 { addr: net, prefix }, IpAddr::V4(v4)) => mask(v4.octets(), prefix) == net,
            (Cidr::V6 { addr: net, prefix }, IpAddr::V6(v6)) => mask(v6.octets(), prefix) == net,
            _ => false,
        }
    }

    /// Whether this is a whole address family (`0.0.0.0/0` or `::/0`).
    pub fn is_everything(self) -> bool {
        matches!(
            self,
            Cidr::V4 { prefix: 0, .. } | Cidr::V6 { prefix: 0, .. }
        )
    }

    /// The prefix of `prefix` bits (at most the family's longest) that holds `addr`, host
    /// bits cleared: `of(192.0.2.7, 24)` is 192.0.2.0/24, `of(addr, 32)` one IPv4 host.
    pub fn of(addr: IpAddr, prefix: u32) -> Cidr {
        match addr {
            IpAddr::V4(v4) => Cidr::V4 {
                addr: v4.octets(),
                prefix: prefix.min(V4_MAX_PREFIX),
            },
            IpAddr::V6(v6) => Cidr::V6 {
                addr: v6.octets(),
                prefix: prefix.min(V6_MAX_PREFIX),
            },
        }
        .network()
    }

    /// The same prefix with every host bit cleared.
    pub fn network(self) -> Cidr {
        match self {
            Cidr::V4 { addr, prefix } => Cidr::V4 {
                addr: mask(addr, prefix),
                prefix,
            },
            Cidr::V6 { addr, prefix } => Cidr::V6 {
                addr: mask(addr, prefix),
                prefix,
            },
        }
    }
}

fn mask<const N: usize>(mut addr: [u8; N], prefix: u32) -> [u8; N] {
    for (index, byte) in addr.iter_mut().enumerate() {
        let bits_before = (index as u32) * 8;
        let keep = prefix.saturating_sub(bits_before).min(8);
        *byte &= if keep == 0 { 0 } else { 0xFFu8 << (8 - keep) };
    }
    addr
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4 { addr, prefix } => write!(f, "{}/{prefix}", Ipv4Addr::from(*addr)),
            Cidr::V6 { addr, prefix } => write!(f, "{}/{prefix}", Ipv6Addr::from(*addr)),
        }
    }
}

/// Why a list of prefixes was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// One entry is not a valid prefix.
    #[error("{}: {error}", place(source_name, *line))]
    Invalid {
        /// The file, or [`ARGUMENTS`].
        source_name: String,
        /// 1-based line (or argument position).
        line: usize,
        /// The entry's error.
        error: CidrError,
    },
    /// The same prefix appears twice.
    #[error("{}: {cidr} duplicates {}", place(source_name, *line), position(source_name, *first))]
    Duplicate {
        /// The file, or [`ARGUMENTS`].
        source_name: String,
        /// Where it appears again.
        line: usize,
        /// Where it appeared first.
        first: usize,
        /// The prefix.
        cidr: Cidr,
    },
}

/// The name given to prefixes from the command line, whose "lines" are argument positions.
pub const ARGUMENTS: &str = "arguments";

/// Where an entry is: `FILE line N`, or `argument N` for the command line's.
fn place(source_name: &str, line: usize) -> String {
    if source_name == ARGUMENTS {
        position(source_name, line)
    } else {
        format!("{source_name} {}", position(source_name, line))
    }
}

/// An entry's position within its source: `line N`, or `argument N`.
fn position(source_name: &str, line: usize) -> String {
    if source_name == ARGUMENTS {
        format!("argument {line}")
    } else {
        format!("line {line}")
    }
}

/// Parses one prefix per line; blank lines and `#` comments (whole-line or trailing) are
/// ignored. Every entry is validated before any is returned, and duplicates are errors. The
/// first problem in line order is the one reported. The prefixes come back in address order
/// ([`Cidr::address_order`], the order the tries take them in fastest): the one sort that
/// finds the duplicates puts them there.
pub fn parse_lines<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    source_name: &str,
) -> Result<Vec<Cidr>, ListError> {
    let mut entries: Vec<(Cidr, usize)> = Vec::new();
    let mut invalid = None;
    for (index, raw) in lines.into_iter().enumerate() {
        let line = index + 1;
        let text = entry_text(raw);
        if text.is_empty() {
            continue;
        }
        match text.parse() {
            Ok(cidr) => entries.push((cidr, line)),
            Err(error) => {
                invalid = Some(ListError::Invalid {
                    source_name: source_name.to_string(),
                    line,
                    error,
                });
                break;
            }
        }
    }
    // In address order, ties broken by line.
    entries.sort_unstable_by_key(|(cidr, line)| (cidr.address_order(), *line));
    // Every duplicate lies before the invalid line, if any, so it comes first.
    if let Some((cidr, line, first)) = first_duplicate(&entries) {
        return Err(ListError::Duplicate {
            source_name: source_name.to_string(),
            line,
            first,
            cidr,
        });
    }
    match invalid {
        Some(error) => Err(error),
        None => Ok(entries.into_iter().map(|(cidr, _)| cidr).collect()),
    }
}

/// A line's entry: what comes before any `#`, surrounding whitespace trimmed. An ASCII line,
/// as lists are, is cut byte by byte.
fn entry_text(raw: &str) -> &str {
    if !raw.is_ascii() {
        return raw.split('#').next().unwrap_or("").trim();
    }
    let bytes = raw.as_bytes();
    let end = bytes
        .iter()
        .position(|byte| *byte == b'#')
        .unwrap_or(bytes.len());
    // `char::is_whitespace` on ASCII: a space, or a tab through a carriage return.
    let space = |byte: &u8| matches!(byte, b' ' | b'\t'..=b'\r');
    let start = bytes[..end]
        .iter()
        .position(|byte| !space(byte))
        .unwrap_or(end);
    let stop = bytes[..end]
        .iter()
        .rposition(|byte| !space(byte))
        .map_or(start, |at| at + 1);
    // Both ends lie next to ASCII bytes, so on character boundaries.
    raw.get(start..stop).unwrap_or("")
}

/// In `sorted` (prefixes with their lines, sorted), the prefix whose repeat comes earliest,
/// that repeat's line and the prefix's first line. By sorting, not hashing: a million
/// prefixes take a fraction of the time SipHash does, and no list can be built to collide.
fn first_duplicate(sorted: &[(Cidr, usize)]) -> Option<(Cidr, usize, usize)> {
    // Within a group of equal prefixes the lines ascend, so its earliest repeat is its second
    // entry, paired with its first: the earliest repeat of all is one such pair.
    sorted
        .windows(2)
        .filter(|pair| pair[0].0 == pair[1].0)
        .map(|pair| (pair[0].0, pair[1].1, pair[0].1))
        .min_by_key(|(_, again, _)| *again)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_matches_the_prefix_and_family() {
        let net: Cidr = "203.0.113.0/24".parse().expect("valid");
        assert!(net.contains("203.0.113.9".parse().expect("addr")));
        assert!(net.contains("::ffff:203.0.113.9".parse().expect("mapped")));
        assert!(!net.contains("203.0.114.9".parse().expect("addr")));
        assert!(!net.contains("2001:db8::1".parse().expect("addr")));
        let all: Cidr = "::/0".parse().expect("valid");
        assert!(all.is_everything() && all.contains("2001:db8::1".parse().expect("addr")));
        assert!(!net.is_everything());
    }

    #[test]
    fn parses_prefixes_and_hosts() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.0.2.7".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn rejects_bad_input_with_the_fix() {
        let reason = |input: &str| input.parse::<Cidr>().unwrap_err().reason;
        assert!(reason("10.0.0.1/8").contains("did you mean 10.0.0.0/8"));
        assert!(reason("2001:db8::1/32").contains("did you mean 2001:db8::/32"));
        assert!(reason("10.0.0.0/33").contains("0 to 32"));
        assert!(reason("2001:db8::/129").contains("0 to 128"));
        assert!(reason("fe80::1%eth0").contains("zone"));
        assert!(reason("::ffff:10.1.2.0/120").contains("IPv4-mapped IPv6 address never matches"));
        assert!(reason("::ffff:10.1.2.0/120").ends_with("write 10.1.2.0/24"));
        assert!(reason("::ffff:10.1.2.3").ends_with("write 10.1.2.3/32"));
        assert!(reason("::ffff:0:0/96").ends_with("write 0.0.0.0/0"));
        // A shorter prefix is a real IPv6 network, one that merely holds the mapped range.
        assert!("::/64".parse::<Cidr>().is_ok());
        assert!(reason("10.0.0/8").contains("expected an IPv4 or IPv6 address"));
        assert!(reason("10.0.0.0/").contains("0 to 32"));
        assert!(reason("10.0.0.0/+8").contains("0 to 32"));
        assert!(reason("").contains("expected"));
        assert!(
            reason("2001:db8:1::/48 2001:db8:2::/48").contains("give one per line"),
            "two on one line: not a bad length"
        );
    }

    #[test]
    fn the_plain_ipv4_reading_agrees_with_the_general_parser() {
        let plain = [
            "0.0.0.0/0",
            "1.2.3.4",
            "1.2.3.4/32",
            "10.0.0.0/8",
            "203.0.113.0/24",
            "255.255.255.255",
            "198.51.100.0/22",
            "100.64.0.0/10",
        ];
        for text in plain {
            let read = plain_v4(text.as_bytes());
            assert!(read.is_some(), "{text} is plain IPv4");
            assert_eq!(read.map(Ok), Some(parse_any(text)), "{text}");
        }
        // Valid in other forms, or invalid: left to the general parser, which explains.
        let other = [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.4/",
            "1.2.3.4/33",
            "1.2.3.4/+8",
            "1.2.3.4/08",
            "1.2.3.4/320",
            "01.2.3.4",
            "1.2.3.256",
            "1.2.3.1000",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.4/24",
            "1.2.3.4/8",
            "1..3.4",
            "1.2.3.4x",
            "::1",
            "::ffff:1.2.3.4",
            "1.2.3.4/ 8",
            "1.2.3.4//8",
            "1.2.3.-4",
            "1.2.3.4 5.6.7.8",
        ];
        for text in other {
            assert_eq!(plain_v4(text.as_bytes()), None, "{text:?} is not plain");
        }
        // Every address the plain reading takes, it reads as the general parser does.
        for (a, b) in [
            (0u8, 0u8),
            (1, 9),
            (10, 99),
            (100, 199),
            (200, 255),
            (7, 250),
        ] {
            for prefix in [0u32, 1, 7, 8, 9, 16, 23, 24, 25, 31, 32] {
                let text = format!("{a}.{b}.{b}.{a}/{prefix}");
                if let Some(cidr) = plain_v4(text.as_bytes()) {
                    assert_eq!(parse_any(&text), Ok(cidr), "{text}");
                } else {
                    assert!(
                        parse_any(&text).is_err(),
                        "{text}: only host bits keep it out"
                    );
                }
            }
        }
    }

    #[test]
    fn an_entry_is_its_line_before_any_comment_trimmed() {
        assert_eq!(entry_text("  10.0.0.0/8  # ten"), "10.0.0.0/8");
        assert_eq!(entry_text("\t1.2.3.4\r"), "1.2.3.4");
        assert_eq!(entry_text("\u{b}1.2.3.4\u{c}"), "1.2.3.4");
        assert_eq!(entry_text("# only a comment"), "");
        assert_eq!(entry_text("   "), "");
        assert_eq!(entry_text(""), "");
        assert_eq!(
            entry_text("\u{a0}2001:db8::/32\u{2003}# wide"),
            "2001:db8::/32"
        );
    }

    #[test]
    fn lists_come_back_in_address_order() {
        let text = "2001:db8::/32\n10.0.0.0/8\n9.9.9.9\n10.0.0.0/16\n::/1\n";
        let cidrs = parse_lines(text.lines(), "f").unwrap();
        let shown: Vec<String> = cidrs.iter().map(Cidr::to_string).collect();
        assert_eq!(
            shown,
            [
                "9.9.9.9/32",
                "10.0.0.0/8",
                "10.0.0.0/16",
                "::/1",
                "2001:db8::/32"
            ]
        );
    }

    #[test]
    fn lists_skip_comments_and_refuse_duplicates() {
        let text = "# deny\n10.0.0.0/8  # ten\n\n2001:db8::/32\n";
        let cidrs = parse_lines(text.lines(), "deny.txt").unwrap();
        assert_eq!(cidrs.len(), 2);
        let error = parse_lines("1.2.3.4\n5.6.7.8\n1.2.3.4/32\n".lines(), "f")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "f line 3: 1.2.3.4/32 duplicates line 1");
        let error = parse_lines(["1.2.3.4", "5.6.7.8", "1.2.3.4"], ARGUMENTS)
            .unwrap_err()
            .to_string();
        assert_eq!(error, "argument 3: 1.2.3.4/32 duplicates argument 1");
        let error = parse_lines(["1.2.3.4", "bogus"], ARGUMENTS)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("argument 2: invalid CIDR"), "{error}");
        let error = parse_lines("1.2.3.4\nbogus\n".lines(), "f")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("f line 2: invalid CIDR \"bogus\""),
            "{error}"
        );
    }

    #[test]
    fn the_first_problem_in_line_order_is_reported() {
        let error = |text: &str| parse_lines(text.lines(), "f").unwrap_err().to_string();
        assert_eq!(
            error("9.9.9.9\n1.1.1.1\n# c\n1.1.1.1\n9.9.9.9\n1.1.1.1\n"),
            "f line 4: 1.1.1.1/32 duplicates line 2"
        );
        assert_eq!(
            error("1.1.1.1\n1.1.1.1\nbogus\n"),
            "f line 2: 1.1.1.1/32 duplicates line 1"
        );
        assert!(
            error("1.1.1.1\nbogus\n1.1.1.1\n").starts_with("f line 2: invalid"),
            "an invalid line before the repeat comes first"
        );
    }
}
