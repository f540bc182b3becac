//! Verified sources: peers that completed a TCP handshake with the origin. The daemon lists the
//! origin's TCP sockets through sock_diag ([`crate::sockdiag`], in its network namespace) and
//! marks each peer of an established or closing connection as verified in the `VERIFIED` cache
//! for [`VERIFIED_FOR`] (the program itself marks sources whose ACK returned a valid SYN cookie).
//! Their SYNs then go to the kernel with every TCP option instead of being answered with
//! cookies, and only they get per-source SYN state (in their way of the cache), so a spoofed
//! flood, whose sources never finish a handshake, neither crowds out returning visitors nor
//! fills any per-source table.
//! Half-open connections (SYN_RECV) never verify anyone. Reading sockets is `sockdiag`'s job;
//! this module decides what gets written and when; [`crate::verified`] writes it.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use filter_common::{
    maps::{BANS, VERIFIED},
    source::{BAN_CLASS, Ban, SourceKey, VERIFIED_CLASS},
};

use crate::{
    bans::monotonic_ns,
    config::duration_ns,
    pins::PinDir,
    policy::{self, ControlError},
    sockdiag,
    verified::{CacheError, VerifiedCache},
};

pub use crate::config::VERIFIED_FOR;

/// A source is written again once its verification is this old, so most refreshes write
/// nothing.
const REFRESH_AFTER: Duration = Duration::from_secs(60);

/// Whether the last failure to list sockets was already logged, so a lasting failure logs once
/// and not on every refresh.
static LISTING_FAILED: AtomicBool = AtomicBool::new(false);

/// The `VERIFIED` key of `addr`.
pub fn key_for(addr: IpAddr, v6_prefix: u32) -> SourceKey {
    SourceKey::for_addr(addr, VERIFIED_CLASS, v6_prefix)
}

/// Marks the peers of the origin's completed handshakes as verified. A peer the cache holds
/// for long enough is left alone, so a refresh writes only new peers, peers due for renewal and
/// peers whose way another verified source took. A peer with a ban that has not ended is never
/// marked: it is looked for before the mark and again after it (the mark is cleared if a ban
/// arrived meanwhile), so no verified source is ever banned. Returns how many were written.
pub fn refresh(ebpf: &aya::Ebpf, v6_prefix: u32) -> usize {
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
    let Some(Ok(cache)) = ebpf.map(VERIFIED).map(VerifiedCache::of_map) else {
        return 0;
    };
    let Some(Ok(bans)) = ebpf
        .map(BANS)
        .map(BpfHashMap::<&MapData, SourceKey, Ban>::try_from)
    else {
        return 0;
    };
    // Any ban of its TCP not yet ended keeps its source unverified, a dry run's too.
    let banned = |key: &SourceKey| {
        bans.get(&key.with_class(BAN_CLASS), 0)
            .is_ok_and(|ban| ban.until_ns > now && ban.covers_tcp())
    };
    let until = now.saturating_add(duration_ns(VERIFIED_FOR));
    let renew_before = until.saturating_sub(duration_ns(REFRESH_AFTER));
    let mut count = 0;
    // An unconnected socket has no peer; the unspecified address is nobody's source.
    for addr in addrs.into_iter().filter(|addr| !addr.is_unspecified()) {
        let key = key_for(addr, v6_prefix);
        if cache.until(&key).is_some_and(|end| end >= renew_before) || banned(&key) {
            continue;
        }
        cache.mark(&key, until);
        if banned(&key) {
            cache.forget(&key);
            continue;
        }
        count += 1;
    }
    count
}

/// Why the summary of a running filter's cache could not be swept.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The program's clock could not be read from its settings.
    #[error(transparent)]
    Settings(#[from] ControlError),
    /// The pinned cache could not be opened.
    #[error("opening the pinned {VERIFIED}: {0}")]
    Open(#[from] MapError),
    /// The pinned cache could not be mapped.
    #[error(transparent)]
    Map(#[from] CacheError),
}

/// Clears the summary bits of the running filter's cache (at `pins`) for the buckets whose
/// verifications have all ended by the program's clock (see [`VerifiedCache::sweep`]), so a
/// spoofed packet that hashes there reads no bucket; returns how many it cleared.
pub fn sweep_pinned(pins: &PinDir) -> Result<u32, SweepError> {
    let now = policy::pinned_settings(pins)?.now_ns(monotonic_ns());
    let cache = VerifiedCache::of(&MapData::from_pin(pins.map(VERIFIED))?)?;
    Ok(cache.sweep(now))
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
