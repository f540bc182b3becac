//! The daemon's bans summary (`BANS_EMPTY`), `moat ban add` on a full ban table, and IPv6 bans
//! moving with a change of `bans.ipv6_prefix`. `BANS` is a plain hash, so nothing makes room by
//! itself: a manual ban takes the place of the automatic ban closest to its end, and when manual
//! bans fill the table the command fails, one line and exit code 2, leaving the table as it was.
//!
//! The tests run a daemon on a quiet veth pair with a small table (`max_bans`) and write its
//! pinned `BANS` directly through the filter-common types. They need root and fail without it.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use aya::maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError};
use filter_common::{
    Reason,
    bansummary::{NO_BAN, SUMMARY_WORDS, slot},
    maps::{BANS, BANS_EMPTY},
    source::{BAN_CLASS, BAN_MANUAL, Ban, SourceKey},
};
use moat::{bans::monotonic_ns, pins::PinDir};
use support::{Pair, TempDir, require_root, stderr, wait_until};

/// The ban table's capacity, from the daemon's configuration.
const MAX_BANS: u32 = 64;

/// The IPv6 source prefix the daemon tracks by default (the full-table tests' keys are IPv4).
const V6_PREFIX: u32 = 64;

const SECOND_NS: u64 = 1_000_000_000;

/// The length `moat ban add` is given.
const BAN_LENGTH: Duration = Duration::from_secs(3_600);

/// The address the first `moat ban add` bans, outside the filled 192.0.2.1-64.
const NEWCOMER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

/// The address the `moat ban add` on a table of manual bans tries to ban.
const REFUSED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 201);

/// The daemon's pinned `BANS` on `iface`, opened afresh.
fn pinned_bans(iface: &str) -> HashMap<MapData, SourceKey, Ban> {
    let path = PinDir::for_iface(iface).map(BANS);
    let data = MapData::from_pin(&path)
        .unwrap_or_else(|error| panic!("opening {}: {error}", path.display()));
    HashMap::try_from(Map::HashMap(data))
        .unwrap_or_else(|error| panic!("{BANS} is not a hash of SourceKey to Ban: {error}"))
}

/// Every entry of `bans`, in a fixed order so two readings compare.
fn entries(bans: &HashMap<MapData, SourceKey, Ban>) -> Vec<(SourceKey, Ban)> {
    let mut entries: Vec<(SourceKey, Ban)> = bans
        .iter()
        .map(|entry| entry.unwrap_or_else(|error| panic!("reading {BANS}: {error}")))
        .collect();
    entries.sort_by_key(|(key, _)| (key.ip_version, key.addr_be));
    entries
}

/// The `BANS` key of `addr`, as `moat ban add` writes it.
fn key(addr: Ipv4Addr) -> SourceKey {
    moat::bans::key_for(IpAddr::V4(addr), V6_PREFIX)
}

/// The `MAX_BANS` addresses that fill the table: 192.0.2.1 to 192.0.2.64.
fn fillers() -> impl Iterator<Item = Ipv4Addr> {
    (1..=MAX_BANS).map(|host| Ipv4Addr::new(192, 0, 2, host as u8))
}

/// Removes every entry of `bans`, then writes `ban_of(addr)` for each of [`fillers`].
fn refill(bans: &mut HashMap<MapData, SourceKey, Ban>, ban_of: impl Fn(Ipv4Addr) -> Ban) {
    for (key, _) in entries(bans) {
        bans.remove(&key)
            .unwrap_or_else(|error| panic!("clearing {BANS}: {error}"));
    }
    for addr in fillers() {
        bans.insert(key(addr), ban_of(addr), 0)
            .unwrap_or_else(|error| panic!("writing the ban of {addr}: {error}"));
    }
    let probe = Ban::default();
    match bans.insert(key(REFUSED), probe, 0) {
        Err(MapError::SyscallError(error))
            if error.io_error.raw_os_error() == Some(libc::E2BIG) => {}
        other => panic!("{BANS} of {MAX_BANS} should be full (E2BIG), got {other:?}"),
    }
}

/// Runs `moat ban add` for `addr` on the daemon's interface.
fn ban_add(pair: &Pair, addr: Ipv4Addr) -> std::process::Output {
    pair.moat(&[
        "ban",
        "add",
        "--iface",
        &pair.origin_end.iface,
        "--for",
        "1h",
        &addr.to_string(),
    ])
}

/// The daemon's pinned bans summary (`BANS_EMPTY`) on `iface`, every word, read afresh.
fn summary(iface: &str) -> Vec<u64> {
    let path = PinDir::for_iface(iface).map(BANS_EMPTY);
    let data = MapData::from_pin(&path)
        .unwrap_or_else(|error| panic!("opening {}: {error}", path.display()));
    let summary: Vec<u64> = Array::<_, u64>::try_from(Map::Array(data))
        .unwrap_or_else(|error| panic!("{BANS_EMPTY} is not an array of u64: {error}"))
        .iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("reading {BANS_EMPTY}: {error}"));
    assert_eq!(
        summary.len(),
        SUMMARY_WORDS as usize,
        "{BANS_EMPTY}'s length"
    );
    summary
}

/// The slots of `summary` that say "look bans up", by word and bit.
fn slots_to_look_up(summary: &[u64]) -> Vec<(u32, u64)> {
    summary
        .iter()
        .zip(0..)
        .flat_map(|(&word, index)| {
            (0..64)
                .map(|bit| 1u64 << bit)
                .filter(move |mask| word & mask == 0)
                .map(move |mask| (index, mask))
        })
        .collect()
}

/// `addr`'s slot in the bans summary.
fn slot_of(addr: Ipv4Addr) -> (u32, u64) {
    slot(&SourceKey::for_addr(addr.into(), BAN_CLASS, V6_PREFIX))
}

#[test]
fn the_program_skips_the_bans_lookup_only_for_sources_whose_slot_the_daemon_found_empty() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let _daemon = pair.start(&[]);
    // The sweep runs as the daemon starts and, finding no ban, sets every slot's bit.
    wait_until(
        "the daemon's first sweep to find every slot empty",
        Duration::from_secs(5),
        || summary(&iface).iter().all(|&word| word == NO_BAN),
    );
    // `moat ban add` clears its source's bit, and only that, before it returns: the program
    // looks that source's bans up again.
    let other = Ipv4Addr::new(192, 0, 2, 202);
    for addr in [NEWCOMER, other] {
        let output = ban_add(&pair, addr);
        assert!(
            output.status.success(),
            "ban add {addr}: {}",
            stderr(&output)
        );
    }
    let mut banned = vec![slot_of(NEWCOMER), slot_of(other)];
    banned.sort();
    assert_eq!(
        slots_to_look_up(&summary(&iface)),
        banned,
        "each ban written clears its own slot's bit"
    );
    assert_eq!(entries(&pinned_bans(&iface)).len(), 2);
    // One deleted, the next sweep (every 10 s) sets its slot's bit again, and keeps the other
    // ban's clear.
    let output = pair.moat(&["ban", "del", "--iface", &iface, &NEWCOMER.to_string()]);
    assert!(output.status.success(), "ban del: {}", stderr(&output));
    wait_until(
        "the next sweep to find the deleted ban's slot empty",
        Duration::from_secs(15),
        || slots_to_look_up(&summary(&iface)).len() == 1,
    );
    assert_eq!(
        slots_to_look_up(&summary(&iface)),
        vec![slot_of(other)],
        "the sweep leaves the bit of the ban it found clear"
    );
}

#[test]
fn ban_add_on_a_full_table_replaces_the_automatic_ban_closest_to_its_end() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let dir = TempDir::new("bans");
    let config = dir.write("moat.toml", &format!("max_bans = {MAX_BANS}\n"));
    let _daemon = pair.start(&["--config", &config]);
    let mut bans = pinned_bans(&iface);
    let capacity = bans
        .map()
        .info()
        .unwrap_or_else(|error| panic!("the info of {BANS}: {error}"))
        .max_entries();
    assert_eq!(capacity, MAX_BANS, "{BANS} is sized by max_bans");

    // Automatic bans, each ending at its own time, an hour and more from now: the sweep leaves
    // them be. Multiplying by 37 (prime to 64) spreads the order of the ends over the
    // addresses, so the one closest to its end, 192.0.2.64, is neither first nor last written
    // by address.
    let now_ns = monotonic_ns();
    let automatic = |addr: Ipv4Addr| Ban {
        until_ns: now_ns
            + BAN_LENGTH.as_secs() * SECOND_NS
            + u64::from(addr.octets()[3]) * 37 % u64::from(MAX_BANS) * SECOND_NS,
        offences: 1,
        reason: Reason::RateUdp as u16,
        flags: 0,
    };
    refill(&mut bans, automatic);
    let filled = entries(&bans);
    let (victim, victim_ban) = *filled
        .iter()
        .min_by_key(|(_, ban)| ban.until_ns)
        .expect("the table is full");
    assert_eq!(
        victim,
        key(Ipv4Addr::new(192, 0, 2, 64)),
        "the automatic ban closest to its end"
    );

    let before_ns = monotonic_ns();
    let output = ban_add(&pair, NEWCOMER);
    let after_ns = monotonic_ns();
    assert!(
        output.status.success(),
        "moat ban add {NEWCOMER} on a table with automatic bans: {}",
        stderr(&output)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("banned {NEWCOMER} on {iface} for 1h\n")
    );

    let newcomer = key(NEWCOMER);
    let after = entries(&bans);
    let gone: Vec<String> = filled
        .iter()
        .filter(|(entry, _)| !after.iter().any(|(left, _)| left == entry))
        .map(|(entry, _)| moat::bans::describe(entry, V6_PREFIX))
        .collect();
    assert_eq!(
        gone,
        ["192.0.2.64"],
        "the automatic ban closest to its end ({victim_ban:?}), and only it, made room"
    );
    let kept: Vec<(SourceKey, Ban)> = after
        .into_iter()
        .filter(|(entry, _)| *entry != newcomer)
        .collect();
    let expected_kept: Vec<(SourceKey, Ban)> = filled
        .iter()
        .filter(|(entry, _)| *entry != victim)
        .copied()
        .collect();
    assert_eq!(kept, expected_kept, "the other bans are as written");
    let added = bans
        .get(&newcomer, 0)
        .unwrap_or_else(|error| panic!("the ban of {NEWCOMER}: {error}"));
    let length_ns = BAN_LENGTH.as_secs() * SECOND_NS;
    assert_eq!(
        Ban {
            until_ns: 0,
            ..added
        },
        Ban {
            until_ns: 0,
            offences: 0,
            reason: Reason::Banned as u16,
            flags: BAN_MANUAL,
        },
        "{NEWCOMER} banned by hand"
    );
    assert!(
        (before_ns + length_ns..=after_ns + length_ns).contains(&added.until_ns),
        "{NEWCOMER} banned for 1h from when the command ran ({before_ns}-{after_ns} ns): \
         until {} ns",
        added.until_ns
    );

    // Manual bans only: nothing may make room.
    refill(&mut bans, |addr| Ban {
        offences: 0,
        reason: Reason::Banned as u16,
        flags: BAN_MANUAL,
        ..automatic(addr)
    });
    let manual = entries(&bans);
    let output = ban_add(&pair, REFUSED);
    let message = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(2),
        "moat ban add {REFUSED} on a table of manual bans: stdout {:?}, stderr {message:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        message.lines().count() == 1
            && message.starts_with("moat: ")
            && message.contains("full of manual bans"),
        "one line saying the table is full of manual bans, got {message:?}"
    );
    assert_eq!(
        entries(&bans),
        manual,
        "a refused ban leaves the table as it was"
    );
}

/// The IPv6 entries of the pinned `BANS` on `iface`: each key's address and its ban.
fn v6_bans(iface: &str) -> Vec<(std::net::Ipv6Addr, Ban)> {
    entries(&pinned_bans(iface))
        .into_iter()
        .filter(|(key, _)| key.ip_version == 6)
        .map(|(key, ban)| (std::net::Ipv6Addr::from(key.addr_be), ban))
        .collect()
}

#[test]
fn ipv6_bans_follow_a_change_of_the_ipv6_prefix() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let daemon = pair.start(&[]);
    let ban = |addr: &str, length: &str| {
        pair.moat_ok(&["ban", "add", "--iface", &iface, "--for", length, addr]);
    };
    ban("2001:db8:5:1::5", "1h");
    ban("2001:db8:5:2::5", "2h");
    ban("2001:db8:6:1::5", "1h");
    assert_eq!(v6_bans(&iface).len(), 3, "three /64s");

    // Broader: the two /64s of 2001:db8:5::/48 become one ban of it, the later end kept.
    pair.moat_ok(&["set", "--iface", &iface, "bans.ipv6_prefix", "48"]);
    let moved = v6_bans(&iface);
    let networks: Vec<String> = moved.iter().map(|(addr, _)| addr.to_string()).collect();
    assert_eq!(networks, ["2001:db8:5::", "2001:db8:6::"], "{moved:?}");
    let remaining_ns = moved[0].1.until_ns.saturating_sub(monotonic_ns());
    assert!(
        remaining_ns > 3_600 * SECOND_NS,
        "the merged ban keeps the later end: {remaining_ns} ns left"
    );
    assert_ne!(moved[0].1.flags & BAN_MANUAL, 0, "still manual");
    let list = pair.moat_ok(&["ban", "list", "--iface", &iface]);
    assert!(list.contains("2001:db8:5::/48"), "{list}");
    // Any address of the /48 now names the ban, as the program matches it.
    pair.moat_ok(&["ban", "del", "--iface", &iface, "2001:db8:5:ffff::1"]);
    assert_eq!(v6_bans(&iface).len(), 1);

    // A take-over under a configuration with a broader prefix moves them too.
    let dir = TempDir::new("v6-prefix");
    let config = dir.write("moat.toml", "[bans]\nipv6_prefix = 32\n");
    let state = dir.0.join("state");
    let state_arg = state.to_str().expect("utf-8");
    daemon.kill().expect("killing the daemon");
    let daemon = pair.start(&["--config", &config, "--state-dir", state_arg]);
    assert!(
        daemon.log().contains("moved IPv6 bans to the new prefix"),
        "{}",
        daemon.log()
    );
    let networks: Vec<String> = v6_bans(&iface)
        .iter()
        .map(|(addr, _)| addr.to_string())
        .collect();
    assert_eq!(networks, ["2001:db8::"]);

    // Narrower: the key stays, covering the first /64 of its /32.
    pair.moat_ok(&["set", "--iface", &iface, "bans.ipv6_prefix", "64"]);
    let list = pair.moat_ok(&["ban", "list", "--iface", &iface]);
    assert!(list.contains("2001:db8::/64"), "{list}");

    // Bans saved under one prefix are restored under the one the next run has.
    ban("2001:db8:7:1::5", "1h");
    let (status, log) = daemon.stop().expect("a clean stop");
    assert!(status.success(), "{log}");
    let config = dir.write("moat48.toml", "[bans]\nipv6_prefix = 48\n");
    let daemon = pair.start(&["--config", &config, "--state-dir", state_arg]);
    let networks: Vec<String> = v6_bans(&iface)
        .iter()
        .map(|(addr, _)| addr.to_string())
        .collect();
    assert_eq!(networks, ["2001:db8::", "2001:db8:7::"], "{}", daemon.log());

    // A reload of a file with a shorter prefix moves them too: both /48s meet in one /32.
    std::fs::write(&config, "[bans]\nipv6_prefix = 32\n").expect("rewriting the configuration");
    daemon.signal(libc::SIGHUP).expect("SIGHUP");
    wait_until(
        "the reload to move the IPv6 bans",
        Duration::from_secs(5),
        || {
            v6_bans(&iface)
                .iter()
                .map(|(addr, _)| addr.to_string())
                .eq(["2001:db8::"])
        },
    );
    drop(daemon);
}
