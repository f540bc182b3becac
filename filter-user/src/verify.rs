//! Verified sources: peers that completed a TCP handshake with the origin. The daemon reads the
//! origin's TCP sockets (`/proc/net/tcp` and `tcp6` of its network namespace) and marks each
//! peer of an established or closing connection as verified in the `VERIFIED` map for
//! [`VERIFIED_FOR`] (the program itself marks sources whose ACK returned a valid SYN cookie).
//! Their SYNs then go to the kernel with every TCP option instead of being answered with
//! cookies, and only they get per-source SYN state, so a spoofed flood, whose sources never
//! finish a handshake, neither crowds out returning visitors nor fills the per-source table.
//! Half-open connections (SYN_RECV) never verify anyone.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use filter_common::{
    maps::VERIFIED,
    source::{SourceKey, VERIFIED_CLASS},
};

use crate::{bans::monotonic_ns, config::duration_ns};

/// How long a completed handshake keeps a source verified.
pub const VERIFIED_FOR: Duration = Duration::from_secs(600);

/// A source is written again only when its entry is older than this, to keep map writes few.
const REFRESH_AFTER: Duration = Duration::from_secs(60);

/// TCP states (`include/net/tcp_states.h`) that prove a completed handshake: ESTABLISHED,
/// FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, CLOSING.
const HANDSHAKE_DONE: &[u8] = &[0x01, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0B];

/// The remote addresses of connections that completed a handshake, from the text of
/// `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn peers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let remote = fields.nth(2)?;
            let state = u8::from_str_radix(fields.next()?, 16).ok()?;
            if !HANDSHAKE_DONE.contains(&state) {
                return None;
            }
            parse_proc_address(remote.split(':').next()?)
        })
        .collect()
}

/// Parses an address as `/proc/net/tcp*` prints it: 32-bit words in host byte order, in hex.
fn parse_proc_address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let value = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(value.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(octets);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// The `VERIFIED` key of `addr`.
pub fn key_for(addr: IpAddr, v6_prefix: u32) -> SourceKey {
    SourceKey::for_addr(addr, VERIFIED_CLASS, v6_prefix)
}

/// Marks the peers of the origin's completed handshakes as verified. `written` remembers when
/// each key was last written, so unchanged peers are not rewritten every call. Returns how many
/// entries were written.
pub fn refresh(
    ebpf: &mut aya::Ebpf,
    v6_prefix: u32,
    written: &mut HashMap<SourceKey, u64>,
) -> usize {
    let now = monotonic_ns();
    let mut addrs = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            addrs.extend(peers(&text));
        }
    }
    let Some(map) = ebpf.map_mut(VERIFIED) else {
        return 0;
    };
    let Ok(mut verified) = BpfHashMap::<&mut MapData, SourceKey, u64>::try_from(map) else {
        return 0;
    };
    let until = now.saturating_add(duration_ns(VERIFIED_FOR));
    let refresh_after = duration_ns(REFRESH_AFTER);
    let mut count = 0;
    for addr in addrs {
        let key = key_for(addr, v6_prefix);
        if written
            .get(&key)
            .is_some_and(|at| now.saturating_sub(*at) < refresh_after)
        {
            continue;
        }
        if verified.insert(key, until, 0).is_ok() {
            written.insert(key, now);
            count += 1;
        }
    }
    let forget = duration_ns(VERIFIED_FOR);
    written.retain(|_, at| now.saturating_sub(*at) < forget);
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_completed_handshakes_only() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 010012C6:0050 020012C6:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 010012C6:0050 030012C6:9C41 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   3: 010012C6:0050 0A0013C6:1234 03 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000
";
        let found: Vec<String> = peers(text).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            ["198.18.0.2", "198.18.0.3"],
            "listen and SYN_RECV are skipped"
        );
        let text6 = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0050 B80D0120000000000000000001000000:C350 01 00000000:00000000
";
        assert_eq!(peers(text6), ["2001:db8::1".parse::<IpAddr>().unwrap()]);
        let key = key_for("2001:db8::1:2:3:4".parse().unwrap(), 64);
        assert_eq!(key.class, VERIFIED_CLASS);
        assert_eq!(&key.addr_be[8..], &[0; 8]);
    }
}
