//! Verified sources: peers that completed a TCP handshake with the origin. The daemon lists the
//! origin's TCP sockets through sock_diag ([`crate::sockdiag`], in its network namespace) and
//! marks each peer of an established or closing connection as verified in the `VERIFIED` map for
//! [`VERIFIED_FOR`] (the program itself marks sources whose ACK returned a valid SYN cookie).
//! Their SYNs then go to the kernel with every TCP option instead of being answered with
//! cookies, and only they get per-source SYN state, so a spoofed flood, whose sources never
//! finish a handshake, neither crowds out returning visitors nor fills the per-source table.
//! Half-open connections (SYN_RECV) never verify anyone. Reading sockets is `sockdiag`'s job;
//! this module decides what gets written and when.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use filter_common::{
    maps::VERIFIED,
    source::{SourceKey, VERIFIED_CLASS},
};

use crate::{bans::monotonic_ns, config::duration_ns, sockdiag};

pub use crate::config::VERIFIED_FOR;

/// A source is written again only when its entry is older than this, to keep map writes few.
const REFRESH_AFTER: Duration = Duration::from_secs(60);

/// Whether the last failure to list sockets was already logged, so a lasting failure logs once
/// and not on every refresh.
static LISTING_FAILED: AtomicBool = AtomicBool::new(false);

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
    let addrs = match sockdiag::handshake_peers() {
        Ok(addrs) => {
            if LISTING_FAILED.swap(false, Ordering::Relaxed) {
                log::info!("listing tcp sockets works again, verified sources refresh");
            }
            addrs
        }
        Err(err) => {
            if !LISTING_FAILED.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "listing tcp sockets failed, verified sources are not refreshed \
                     error=\"{err}\""
                );
            }
            return 0;
        }
    };
    let now = monotonic_ns();
    let Some(map) = ebpf.map_mut(VERIFIED) else {
        return 0;
    };
    let Ok(mut verified) = BpfHashMap::<&mut MapData, SourceKey, u64>::try_from(map) else {
        return 0;
    };
    let until = now.saturating_add(duration_ns(VERIFIED_FOR));
    let refresh_after = duration_ns(REFRESH_AFTER);
    let mut count = 0;
    // An unconnected socket has no peer; the unspecified address is nobody's source.
    for addr in addrs.into_iter().filter(|addr| !addr.is_unspecified()) {
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
    fn keys_verified_sources_by_prefix() {
        let key = key_for("2001:db8::1:2:3:4".parse().expect("literal"), 64);
        assert_eq!(key.class, VERIFIED_CLASS);
        assert_eq!(&key.addr_be[8..], &[0; 8]);
    }
}
