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
/// first problem in line order is the one reported.
pub fn parse_lines<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    source_name: &str,
) -> Result<Vec<Cidr>, ListError> {
    let mut cidrs = Vec::new();
    let mut lines_of = Vec::new();
    let mut invalid = None;
    for (index, raw) in lines.into_iter().enumerate() {
        let line = index + 1;
        let text = raw.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        match text.parse() {
            Ok(cidr) => {
                cidrs.push(cidr);
                lines_of.push(line);
            }
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
    // Every duplicate lies before the invalid line, if any, so it comes first.
    if let Some((again, first)) = first_duplicate(&cidrs) {
        return Err(ListError::Duplicate {
            source_name: source_name.to_string(),
            line: lines_of[again],
            first: lines_of[first],
            cidr: cidrs[again],
        });
    }
    match invalid {
        Some(error) => Err(error),
        None => Ok(cidrs),
    }
}

/// The earliest position that repeats an earlier entry, and that entry's first position. By
/// sorting, not hashing: a million prefixes take a fraction of the time SipHash does, and no
/// list can be built to collide.
fn first_duplicate(cidrs: &[Cidr]) -> Option<(usize, usize)> {
    let mut order: Vec<((u8, u128, u32), usize)> = cidrs
        .iter()
        .enumerate()
        .map(|(position, cidr)| (cidr.address_order(), position))
        .collect();
    order.sort_unstable();
    let mut found: Option<(usize, usize)> = None;
    let mut group_first = 0;
    for (rank, &(key, position)) in order.iter().enumerate() {
        let repeats = rank > 0 && order[rank - 1].0 == key;
        if !repeats {
            group_first = position;
        } else if found.is_none_or(|(again, _)| position < again) {
            found = Some((position, group_first));
        }
    }
    found
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
