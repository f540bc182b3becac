//! The packaged moat.toml (`moat config example`): every key of the [schema] at its default,
//! under the comment that explains it, after the file's header and with the prose that
//! introduces some tables. packaging/moat.toml is this output, byte for byte (a test checks).
//!
//! Comments are written here without their `# `; an empty line is a lone `#`. In a key's
//! comment `{default}` stands for its default value, in a table's `{defaults}` for its keys'.

use super::{
    Config,
    schema::{self, Key, Value},
};

/// The widest line the prose is wrapped to; a longer array of numbers is broken over lines.
const WIDTH: usize = 93;

/// What the file is, and how to edit it.
const HEADER: &str = "\
/etc/moat/moat.toml: the configuration of `moat run`, which the unit moat@IFACE.service
starts for each protected interface.

Every key below is set to its built-in default, so this file changes nothing until you
edit it; removing a key keeps its default, and an unknown key is an error. After editing:

  moat config check /etc/moat/moat.toml   # every problem, with line and key; exit 2 if any
  systemctl reload moat@eth0              # checks the file again, then applies it live

A reload of a bad file changes nothing: the running settings stay. `mode` and the four
capacities are fixed when `moat run` starts; changing them takes a stop and a start. The
allow and deny lists and the bans are saved in /var/lib/moat every minute and at stop, and
restored at start, with each ban's remaining time. A daemon that crashes or is killed
leaves its filter attached and protecting, and the next `moat run` takes it over with every
list, ban and counter. `moat config show` prints the configuration in effect.";

/// The prose around one table.
struct Prose {
    /// The table's dotted name.
    table: &'static str,
    /// A paragraph of its own before the table, introducing it and the tables after it.
    intro: &'static str,
    /// The comment just above its `[table]` header.
    above: &'static str,
    /// The comment just below its header.
    below: &'static str,
}

/// The prose around the tables that have any, in file order.
const TABLES: &[Prose] = &[
    Prose {
        table: "ports",
        intro: "",
        above: "",
        below: "\
Which ports take new traffic. With no list (the default) every port with a socket on this
host is open (see require_sockets). With a list, new TCP connections (SYN) and UDP packets
to any other port are
dropped; replies to this host's own connections always pass, and for UDP the kernel's
ephemeral port range (net.ipv4.ip_local_port_range) stays open for replies to this host's
own sockets (under require_sockets, a datagram there must match one).

WARNING: a list without your SSH port locks you out of new SSH sessions as soon as the
filter attaches (the session you are in keeps working). moat logs a warning when
ports.tcp leaves out the port of the SSH session that started it or, under systemd,
port 22; if sshd listens elsewhere, check the list yourself. Keep a console at hand.
",
    },
    Prose {
        table: "limits.source.syn",
        intro: "\
Rate limits are token buckets, one set per traffic class:
  syn   - TCP SYN without ACK (new connections; established TCP is never rate-limited;
          per source only for sources that completed a handshake, which a spoofed flood
          cannot)
  udp   - UDP
  icmp  - ICMP and ICMPv6, except what the network needs (fragmentation needed, packet
          too big, neighbour discovery), which is never limited
  other - every other IP protocol (GRE, ESP, SCTP...)
Each limit has four keys:
  pps         - packets per second; 0 = no packet limit
  burst       - packets allowed at once above that rate (at least 1 when pps is set)
  bps         - bytes per second; 0 = no byte limit
  burst_bytes - bytes allowed at once (at least 1522, one full frame, when bps is set)

[limits.source.*] applies to each source address (IPv6: each bans.ipv6_prefix) on its
own; a source over its limit is dropped, and earns strikes towards a ban. Not so for
SYNs, which anyone can send in a visitor's name: past this limit a verified source's
SYNs are judged as a first-time visitor's (a SYN cookie during a flood), never dropped
for it and never struck.",
        above: "\
New connections from one source that completed a handshake, passed without a cookie.
Defaults {defaults}.",
        below: "",
    },
    Prose {
        table: "limits.source.udp",
        intro: "",
        above: "UDP from one source (room for QUIC). Defaults {defaults}.",
        below: "",
    },
    Prose {
        table: "limits.source.icmp",
        intro: "",
        above: "ICMP from one source. Defaults {defaults}.",
        below: "",
    },
    Prose {
        table: "limits.source.other",
        intro: "",
        above: "Other protocols from one source. Defaults {defaults}.",
        below: "",
    },
    Prose {
        table: "limits.aggregate.syn",
        intro: "\
[limits.aggregate.*] applies to all sources together, for the whole host (one bucket that
every CPU shares): the defence against floods from many random, spoofed sources.",
        above: "\
SYN-ACKs moat answers with cookies (with syn_cookies = \"off\": SYNs from sources that
have not completed a handshake recently); returning clients skip this limit. Set it far
above any flood you expect to answer: a newcomer's SYN over it is dropped. Defaults
{defaults}.",
        below: "",
    },
    Prose {
        table: "limits.aggregate.udp",
        intro: "",
        above: "All UDP. Defaults {defaults}.",
        below: "",
    },
    Prose {
        table: "limits.aggregate.icmp",
        intro: "",
        above: "All ICMP. Defaults {defaults}.",
        below: "",
    },
    Prose {
        table: "limits.aggregate.other",
        intro: "",
        above: "All other protocols. Defaults {defaults}.",
        below: "",
    },
];

/// The packaged moat.toml: the header, then every key of the schema at its default under its
/// comment. A top-level key is a paragraph of its own; a table is one paragraph, its prose
/// around its header. An optional key, unset by default, is shown as a commented example.
pub fn packaged_toml() -> String {
    let defaults = Config::default();
    let keys = schema::keys();
    let mut out = comment(HEADER);
    let mut table = "";
    for key in &keys {
        if key.table() != table {
            table = key.table();
            out.push('\n');
            out.push_str(&header(table, &keys, &defaults));
        } else if table.is_empty() {
            out.push('\n');
        }
        match key.value(&defaults) {
            Value::Set(value) => {
                out.push_str(&comment(&key.comment.replace("{default}", &value)));
                out.push_str(&assignment(key.leaf(), &value));
            }
            Value::Unset(unset) => {
                out.push_str(&comment(key.comment));
                out.push_str(&format!("# {} = {}\n", key.leaf(), unset.example));
            }
        }
    }
    out
}

/// A table's header with the prose around it, `{defaults}` filled in from `keys`.
fn header(table: &str, keys: &[Key], defaults: &Config) -> String {
    let mut out = String::new();
    let prose = TABLES.iter().find(|prose| prose.table == table);
    let (intro, above, below) = prose.map_or(("", "", ""), |p| (p.intro, p.above, p.below));
    if !intro.is_empty() {
        out.push_str(&comment(intro));
        out.push('\n');
    }
    let values: Vec<String> = keys
        .iter()
        .filter(|key| key.table() == table)
        .filter_map(|key| match key.value(defaults) {
            Value::Set(value) => Some(value),
            Value::Unset(_) => None,
        })
        .collect();
    out.push_str(&comment(&above.replace("{defaults}", &values.join(", "))));
    out.push_str(&format!("[{table}]\n"));
    out.push_str(&comment(below));
    out
}

/// `text` as comment lines (`# ` before each, an empty line a lone `#`); nothing if empty.
fn comment(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    text.split('\n')
        .map(|line| match line {
            "" => "#\n".to_string(),
            line => format!("# {line}\n"),
        })
        .collect()
}

/// `leaf = value`; an array of numbers too long for one line is broken over lines of at most
/// [`WIDTH`], four spaces in, each item followed by a comma.
fn assignment(leaf: &str, value: &str) -> String {
    let line = format!("{leaf} = {value}");
    let items = value
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'));
    let Some(items) = items.filter(|items| line.len() > WIDTH && !items.contains('"')) else {
        return line + "\n";
    };
    let mut out = format!("{leaf} = [\n");
    let mut row = String::new();
    for item in items.split(", ") {
        if !row.is_empty() && row.len() + item.len() + 2 > WIDTH {
            out.push_str(&row);
            out.push('\n');
            row.clear();
        }
        row.push_str(if row.is_empty() { "    " } else { " " });
        row.push_str(item);
        row.push(',');
    }
    out.push_str(&row);
    out.push_str("\n]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_with_prose_is_a_table_of_the_schema() {
        let keys = schema::keys();
        for prose in TABLES {
            assert!(
                keys.iter().any(|key| key.table() == prose.table),
                "prose for [{}], which holds no key",
                prose.table
            );
        }
    }

    #[test]
    fn long_arrays_of_numbers_are_broken_over_lines() {
        assert_eq!(assignment("ports", "[1, 2]"), "ports = [1, 2]\n");
        let numbers: Vec<u32> = (10_000..10_020).collect();
        let long = assignment("ports", &format!("{numbers:?}"));
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines.first(), Some(&"ports = ["));
        assert_eq!(lines.last(), Some(&"]"));
        assert!(lines.len() > 3, "{long}");
        assert!(lines.iter().all(|line| line.len() <= WIDTH), "{long}");
        let parsed: toml::Table = long.parse().expect("valid TOML");
        assert_eq!(parsed["ports"].as_array().map(Vec::len), Some(20));
        let strings = format!("{:?}", vec!["192.0.2.0/24"; 8]);
        assert_eq!(
            assignment("trusted", &strings),
            format!("trusted = {strings}\n"),
            "strings stay on one line"
        );
    }
}
