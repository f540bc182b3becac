//! moat as a CrowdSec bouncer and signal source, against a real CrowdSec Local API (Debian's
//! crowdsec, API only, a throwaway SQLite database) started by each test on a namespace's
//! address. Frames from the decided sources are sent over veth; what XDP passed is counted by
//! an nftables counter at the origin's ingress hook, after XDP.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use filter_common::flood::{FloodConfig, L4_TCP};
use moat::netns::{Endpoint, NetNs, quiet_veth, unique_iface};
use moat_lab::{
    flood::{FloodPlan, flood_every_cpu},
    traffic::{self, EchoServer},
};
use support::{Pair, TempDir, count, crowdsec::Lapi, require_root, stats_json, wait_until};

/// The bouncer's pull interval in these tests.
const UPDATE_FREQUENCY: Duration = Duration::from_secs(1);

/// What the issue allows between a decision and its enforcement: `update_frequency` + 2 s.
const ENFORCED_WITHIN: Duration = Duration::from_secs(3);

/// Frames sent from each source per round.
const FRAMES: u64 = 10;

/// The sources the decisions name, and their neighbours, each with its own counter.
const SOURCES: [&str; 7] = [
    "198.51.100.7",   // 0: Ip decision
    "198.51.100.8",   // 1: no decision, next door
    "203.0.113.6",    // 2: in a Range decision
    "2001:db8:77::9", // 3: in an IPv6 Range decision
    "2001:db8:99::5", // 4: IPv6 Ip decision
    "2001:db8:99::6", // 5: no decision, next door
    "198.51.100.9",   // 6: a captcha decision, which moat ignores
];

/// `moat.toml` for a bouncer of `lapi` with `key`, every port open and no socket required
/// (the test's datagrams go to no socket), and `extra` appended.
fn config(dir: &TempDir, lapi_url: &str, key: &str, extra: &str) -> String {
    let key_file = dir.write("crowdsec.key", &format!("{key}\n"));
    dir.write(
        "moat.toml",
        &format!(
            "require_sockets = false\n{extra}\n[crowdsec]\napi_url = \"{lapi_url}\"\n\
             api_key_file = \"{key_file}\"\nupdate_frequency = \"{}s\"\n",
            UPDATE_FREQUENCY.as_secs()
        ),
    )
}

/// A UDP datagram from `source` to the origin, as a frame on the client's end.
fn frame(pair: &Pair, source: IpAddr) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(pair.client_end.mac, pair.origin_end.mac);
    let builder = match source {
        IpAddr::V4(v4) => builder.ipv4(v4.octets(), pair.origin_end.ipv4.octets(), 64),
        IpAddr::V6(v6) => builder.ipv6(
            v6.octets(),
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .expect("literal")
                .octets(),
            64,
        ),
    };
    let builder = builder.udp(40_000, 7_000);
    let payload = b"crowdsec";
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, payload)
        .expect("building a frame");
    frame
}

/// Counts, at the origin's ingress (after XDP), the frames from each of [`SOURCES`].
fn count_arrivals(pair: &Pair) {
    let mut rules = String::new();
    for source in SOURCES {
        let family = if source.contains(':') { "ip6" } else { "ip" };
        rules.push_str(&format!("  {family} saddr {source} counter\n"));
    }
    support::nft_load(
        &pair.origin,
        &format!(
            "table netdev moat_test {{\n chain ingress {{\n  type filter hook ingress device \
             {} priority 0;\n{rules} }}\n}}\n",
            pair.origin_end.iface
        ),
    );
}

/// The arrivals counted for each of [`SOURCES`], in order.
fn arrivals(pair: &Pair) -> Vec<u64> {
    let counts = support::nft_counters(&pair.origin, "netdev");
    assert_eq!(counts.len(), SOURCES.len(), "one counter per source");
    counts
}

/// Sends [`FRAMES`] frames from each source in `which` and waits until moat has judged all
/// of them (its total grows by as many); returns the arrivals per source after.
fn send_round(pair: &Pair, which: &[usize]) -> Vec<u64> {
    let iface = &pair.origin_end.iface;
    let total = |stats: &serde_json::Value| stats["total"]["packets"].as_u64().unwrap_or(0);
    let before = total(&stats_json(iface));
    let frames: Vec<Vec<u8>> = which
        .iter()
        .flat_map(|&index| {
            let source: IpAddr = SOURCES[index].parse().expect("literal");
            std::iter::repeat_n(frame(pair, source), FRAMES as usize)
        })
        .collect();
    traffic::send_frames(&pair.client, &pair.client_end.iface, &frames).expect("sending");
    let expected = before + frames.len() as u64;
    wait_until("moat judged every frame", Duration::from_secs(5), || {
        total(&stats_json(iface)) >= expected
    });
    arrivals(pair)
}

/// The CrowdSec figures `moat stats --json` shows.
fn crowdsec_stats(iface: &str) -> serde_json::Value {
    stats_json(iface)["crowdsec"].clone()
}

/// Decisions in force, as `moat stats` shows them.
fn active(iface: &str) -> u64 {
    crowdsec_stats(iface)["active"]
        .as_object()
        .map_or(0, |active| {
            active.values().filter_map(serde_json::Value::as_u64).sum()
        })
}

/// Waits until the daemon on `iface` enforces `want` decisions, within [`ENFORCED_WITHIN`] of
/// `since`.
fn wait_active(iface: &str, want: u64, since: Instant) {
    let left = ENFORCED_WITHIN.saturating_sub(since.elapsed());
    wait_until(&format!("{want} decisions in force"), left, || {
        active(iface) == want
    });
}

/// `GET /metrics` of the daemon in `ns` (the default metrics address).
fn scrape(ns: &NetNs) -> String {
    use std::io::{Read as _, Write as _};
    ns.enter(|| {
        let mut stream =
            std::net::TcpStream::connect(moat::metrics::DEFAULT_ADDR).expect("metrics port");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: moat\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("response");
        text
    })
    .expect("entering the origin")
}

#[test]
fn decisions_are_dropped_until_deleted_and_the_allowlist_wins() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let lapi = Lapi::start(&pair.origin, "127.0.0.1:18080".parse().expect("literal"));
    let dir = TempDir::new("crowdsec-moat");
    let config = config(&dir, &lapi.url(), &lapi.bouncer_key("moat-origin"), "");
    let state_dir = dir.0.join("state");
    count_arrivals(&pair);
    let daemon = pair.start(&[
        "--config",
        &config,
        "--state-dir",
        state_dir.to_str().expect("utf-8 path"),
    ]);
    wait_until("the bouncer's first pull", Duration::from_secs(10), || {
        crowdsec_stats(&iface)["pulls"].as_u64().unwrap_or(0) > 0
    });
    // With no decision yet (none active, none ignored), every other family is still served
    // whole, down to the last.
    let metrics = scrape(&pair.origin);
    for line in [
        format!("moat_crowdsec_decisions_applied_total{{iface=\"{iface}\"}} 0"),
        format!("moat_crowdsec_alerts_total{{iface=\"{iface}\",result=\"failed\"}} 0"),
        "moat_build_info{".to_string(),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }

    let added = Instant::now();
    lapi.cscli(&["decisions", "add", "--ip", SOURCES[0], "--duration", "1h"]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "203.0.113.0/24",
        "--duration",
        "1h",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "2001:db8:77::/48",
        "--duration",
        "1h",
    ]);
    lapi.cscli(&["decisions", "add", "--ip", SOURCES[4], "--duration", "1h"]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        SOURCES[6],
        "--type",
        "captcha",
        "--duration",
        "1h",
    ]);
    wait_active(&iface, 4, added);
    // The captcha decision, added last, may come with the next pull.
    wait_until("the captcha decision counted", ENFORCED_WITHIN, || {
        crowdsec_stats(&iface)["ignored"]["captcha/Ip"] == 1
    });
    let arrived = send_round(&pair, &[0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(
        arrived,
        vec![0, FRAMES, 0, 0, 0, FRAMES, FRAMES],
        "banned Ip and Range sources of both families dropped, their neighbours and the \
         captcha'd source passed"
    );
    let stats = stats_json(&iface);
    assert_eq!(count(&stats, "drop", "crowdsec").0, 4 * FRAMES);
    let crowdsec = &stats["crowdsec"];
    assert_eq!(crowdsec["active"]["cscli/Ip"], 2, "{crowdsec}");
    assert_eq!(crowdsec["active"]["cscli/Range"], 2, "{crowdsec}");
    assert_eq!(crowdsec["ignored"]["captcha/Ip"], 1, "{crowdsec}");
    assert_eq!(crowdsec["reachable"], true, "{crowdsec}");
    let metrics = scrape(&pair.origin);
    for line in [
        format!(
            "moat_crowdsec_decisions_active{{iface=\"{iface}\",origin=\"cscli\",scope=\"Ip\"}} 2"
        ),
        format!(
            "moat_crowdsec_decisions_active{{iface=\"{iface}\",origin=\"cscli\",scope=\"Range\"}} 2"
        ),
        format!("moat_crowdsec_lapi_up{{iface=\"{iface}\"}} 1"),
        format!("moat_crowdsec_alerts_total{{iface=\"{iface}\",result=\"failed\"}} 0"),
        format!("moat_crowdsec_decisions_ignored_total{{iface=\"{iface}\",kind=\"captcha/Ip\"}} 1"),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }

    // `moat stats` and `moat top` show the same figures to a person.
    for args in [
        vec!["stats", "--iface", iface.as_str()],
        vec![
            "top",
            "--iface",
            iface.as_str(),
            "--interval",
            "1",
            "--count",
            "1",
        ],
    ] {
        let text = pair.moat_ok(&args);
        for needle in [
            "CROWDSEC  LAPI reachable",
            "decisions in force 4",
            "cscli/Range",
        ] {
            assert!(
                text.contains(needle),
                "{needle:?} not in `moat {args:?}`:\n{text}"
            );
        }
    }

    // Deleted decisions: the traffic passes again; the others stay.
    let deleted = Instant::now();
    lapi.cscli(&["decisions", "delete", "--ip", SOURCES[0]]);
    lapi.cscli(&["decisions", "delete", "--range", "2001:db8:77::/48"]);
    wait_active(&iface, 2, deleted);
    let before = arrivals(&pair);
    let after = send_round(&pair, &[0, 2, 3, 4]);
    let grew: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        grew,
        vec![FRAMES, 0, 0, FRAMES, 0, 0, 0],
        "deleted decisions pass again"
    );

    // The allowlist wins over a decision.
    pair.moat_ok(&["allow", "add", "--iface", &iface, "203.0.113.6/32"]);
    let before = arrivals(&pair);
    let after = send_round(&pair, &[2, 4]);
    let grew: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        grew,
        vec![0, 0, FRAMES, 0, 0, 0, 0],
        "the allowlisted source passes"
    );
    assert_eq!(count(&stats_json(&iface), "pass", "allowlist").0, FRAMES);

    // CrowdSec turned off by a reload: the decisions still in force (the IPv6 Ip decision and
    // the IPv4 Range) stop being enforced, and their saved copy goes, though the LAPI still
    // holds them.
    let saved = moat::crowdsec::bouncer::saved_path(&state_dir, &iface);
    assert!(saved.exists(), "{} saved", saved.display());
    std::fs::write(&config, "require_sockets = false\n").expect("write config");
    daemon.signal(libc::SIGHUP).expect("SIGHUP");
    let removed = format!("crowdsec off, its decisions removed iface={iface} count=2");
    wait_until("the decisions removed", Duration::from_secs(5), || {
        daemon.log().contains(&removed)
    });
    let before = arrivals(&pair);
    let after = send_round(&pair, &[2, 4]);
    let grew: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        grew,
        vec![0, 0, FRAMES, 0, FRAMES, 0, 0],
        "with CrowdSec off, its decisions are dropped no more"
    );
    assert!(!saved.exists(), "{} removed", saved.display());
    let (status, log) = daemon.stop().expect("a clean stop");
    assert!(status.success(), "{log}");
}

#[test]
fn moat_protects_while_the_lapi_is_down_and_catches_up_when_it_returns() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let mut lapi = Lapi::start(&pair.origin, "127.0.0.1:18081".parse().expect("literal"));
    let key = lapi.bouncer_key("moat-origin");
    lapi.cscli(&["decisions", "add", "--ip", SOURCES[0], "--duration", "1h"]);
    lapi.stop();
    // moat starts with the LAPI down, and protects with its own policy.
    let dir = TempDir::new("crowdsec-moat");
    let config = config(&dir, &lapi.url(), &key, "");
    // One state directory for both runs, so the second finds what the first saved.
    let state = dir.0.join("state").display().to_string();
    count_arrivals(&pair);
    let daemon = pair.start(&["--config", &config, "--state-dir", &state]);
    pair.moat_ok(&["deny", "add", "--iface", &iface, "198.51.100.8/32"]);
    wait_until("a failed pull", Duration::from_secs(5), || {
        crowdsec_stats(&iface)["pull_errors"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(crowdsec_stats(&iface)["reachable"], false);
    assert_eq!(
        send_round(&pair, &[0, 1])[..2],
        [FRAMES, 0],
        "own denylist enforced"
    );

    // The LAPI returns: moat catches up within its backoff (1 s, 2 s, 4 s ...).
    lapi.restart();
    wait_until("the decision pulled", Duration::from_secs(10), || {
        active(&iface) == 1
    });
    let before = arrivals(&pair);
    let after = send_round(&pair, &[0]);
    assert_eq!(after[0] - before[0], 0, "the decision is enforced");

    // Down again: what moat has stays enforced.
    lapi.stop();
    wait_until("the LAPI seen down", Duration::from_secs(5), || {
        crowdsec_stats(&iface)["reachable"] == false
    });
    let before = arrivals(&pair);
    let after = send_round(&pair, &[0]);
    assert_eq!(after[0] - before[0], 0, "still enforced with the LAPI down");
    assert_eq!(active(&iface), 1);

    // A stop and a cold start (the filter detached, its tries gone) with the LAPI still
    // down: the saved decision is enforced again before any pull succeeds.
    let (status, log) = daemon.stop().expect("stopping moat");
    assert!(status.success(), "{log}");
    let _daemon = pair.start(&["--config", &config, "--state-dir", &state]);
    wait_until(
        "the saved decision restored",
        Duration::from_secs(5),
        || active(&iface) == 1,
    );
    assert_eq!(crowdsec_stats(&iface)["pulls"], 0, "no pull has succeeded");
    let before = arrivals(&pair);
    let after = send_round(&pair, &[0]);
    assert_eq!(
        after[0] - before[0],
        0,
        "enforced after a cold start with the LAPI down"
    );

    // Back, with the decision deleted and another added meanwhile: the full pull after the
    // failure ends the first and takes on the second.
    lapi.restart();
    lapi.cscli(&["decisions", "delete", "--ip", SOURCES[0]]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "203.0.113.0/24",
        "--duration",
        "1h",
    ]);
    wait_until("caught up", Duration::from_secs(10), || {
        crowdsec_stats(&iface)["active"]["cscli/Range"] == 1 && active(&iface) == 1
    });
    let before = arrivals(&pair);
    let after = send_round(&pair, &[0, 2]);
    let grew: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(grew[..3], [FRAMES, 0, 0]);
}

/// A hub namespace with a veth to `origin`, addressed 10.77.`net`.1 (hub) and .2 (origin).
fn link_hub(hub: &NetNs, origin: &NetNs, net: u8) {
    let hub_end = Endpoint {
        iface: unique_iface("hb"),
        mac: [0x02, 0, 0, 0, net, 0x01],
        ipv4: Ipv4Addr::new(10, 77, net, 1),
    };
    let origin_end = Endpoint {
        iface: unique_iface("ho"),
        mac: [0x02, 0, 0, 0, net, 0x02],
        ipv4: Ipv4Addr::new(10, 77, net, 2),
    };
    quiet_veth(hub, &hub_end, origin, &origin_end).expect("linking the hub");
}

#[test]
fn an_operators_ban_one_origin_issues_is_dropped_by_the_other_within_seconds() {
    require_root();
    let a = Pair::create();
    let b = Pair::create();
    let hub = NetNs::create("moat-test-h").expect("the hub namespace");
    link_hub(&hub, &a.origin, 1);
    link_hub(&hub, &b.origin, 2);
    let mut lapi = Lapi::start(&hub, "0.0.0.0:18082".parse().expect("literal"));
    let credentials =
        std::fs::read_to_string(lapi.credentials_file()).expect("the machine's credentials");
    let dir_a = TempDir::new("crowdsec-a");
    let dir_b = TempDir::new("crowdsec-b");
    // Origin A pushes its bans; both pull. Each reaches the hub on its own link.
    let creds_a: String = credentials
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("url:") {
                "url: http://10.77.1.1:18082/\n".to_string()
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    let creds_a = dir_a.write("credentials.yaml", &creds_a);
    let a_config = config(
        &dir_a,
        "http://10.77.1.1:18082/",
        &lapi.bouncer_key("moat-a"),
        "[bans]\nafter_strikes = 3\nbase = \"10m\"\n[limits.source.udp]\npps = 100\nburst = 100\nbps = 0\nburst_bytes = 0\n[limits.source.syn]\npps = 100\nburst = 100\n",
    );
    // A pulls only at start within the test: its own pushed ban, pulled back, would be a
    // CrowdSec decision, which drops everything (open connections included) from the source.
    std::fs::write(
        &a_config,
        std::fs::read_to_string(&a_config)
            .expect("config")
            .replace("update_frequency = \"1s\"", "update_frequency = \"10m\"")
            + &format!("credentials_file = \"{creds_a}\"\npush = true\n"),
    )
    .expect("writing the config");
    let b_config = config(
        &dir_b,
        "http://10.77.2.1:18082/",
        &lapi.bouncer_key("moat-b"),
        "",
    );
    // A's service: the flooded port has a socket, so its datagrams get per-source state.
    let udp = a
        .origin
        .enter(|| std::net::UdpSocket::bind((a.origin_end.ipv4, 9)))
        .expect("entering")
        .expect("a UDP service on A");
    let server = EchoServer::listen(&a.origin, SocketAddrV4::new(a.origin_end.ipv4, 8080))
        .expect("A's web service");
    let _daemon_a = a.start(&["--config", &a_config]);
    let _daemon_b = b.start(&["--config", &b_config]);
    count_arrivals(&b);
    // A returning visitor, and a first-time one, before the flood.
    assert!(a.visit(&server, a.client_end.ipv4), "a returning visitor");

    // One source floods A's UDP service from every CPU; A bans it automatically, for UDP only,
    // and keeps the ban to itself: such a source can be spoofed.
    let udp_flooder: Ipv4Addr = SOURCES[0].parse().expect("literal");
    a.add_client_address(udp_flooder);
    let plan = a.udp_flood(udp_flooder, 1, 9);
    let stop = AtomicBool::new(false);
    flood_every_cpu(
        &a.client,
        &a.client_end.iface,
        std::slice::from_ref(&plan),
        20_000,
        Duration::from_secs(2),
        &stop,
    )
    .expect("flooding A");
    drop(udp);
    let a_stats = stats_json(&a.origin_end.iface);
    assert!(
        count(&a_stats, "drop", "banned").0 > 0,
        "A banned the flood: {a_stats}"
    );
    wait_until("A withheld its UDP ban", Duration::from_secs(10), || {
        crowdsec_stats(&a.origin_end.iface)["alerts_withheld"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });

    // Another source completes a handshake with A (held open until A's daemon has marked it
    // verified), then SYNs in its name flood A from every CPU, far over its per-source SYN
    // limit. Anyone can put a visitor's address on a SYN, so A neither bans nor shares it.
    let visitor: Ipv4Addr = SOURCES[1].parse().expect("literal");
    a.add_client_address(visitor);
    a.origin
        .ip(&[
            "route",
            "add",
            &format!("{visitor}/32"),
            "dev",
            &a.origin_end.iface,
        ])
        .expect("A's route back to the source");
    let listener = a
        .origin
        .enter(|| std::net::TcpListener::bind((a.origin_end.ipv4, 8081)))
        .expect("entering")
        .expect("a listener on A");
    let to = std::net::SocketAddr::from((a.origin_end.ipv4, 8081));
    let connect = |timeout: Duration| {
        a.client
            .enter(|| {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                socket.bind(&std::net::SocketAddr::from((visitor, 0)).into())?;
                socket.connect_timeout(&to.into(), timeout)?;
                Ok::<_, std::io::Error>(socket)
            })
            .expect("entering")
    };
    let held = connect(Duration::from_secs(3)).expect("a handshake with A");
    let key = moat::verify::key_for(IpAddr::V4(visitor), 64);
    let verified =
        moat::pins::PinDir::for_iface(&a.origin_end.iface).map(filter_common::maps::VERIFIED);
    wait_until("A to verify the source", Duration::from_secs(10), || {
        let data = aya::maps::MapData::from_pin(&verified).expect("VERIFIED pin");
        let cache = moat::verified::VerifiedCache::of(&data).expect("VERIFIED mapped");
        cache.until(&key).is_some()
    });
    let mut src_base_be = [0u8; 16];
    src_base_be[..4].copy_from_slice(&visitor.octets());
    let plan = FloodPlan {
        template: traffic::syn_frame(&a.client_end, visitor, &a.origin_end, 8081),
        config: FloodConfig {
            src_base_be,
            src_count: 1,
            l3_offset: 14,
            l4_offset: 34,
            ip_version: 4,
            l4_kind: L4_TCP,
            random_src_port: 1,
            ..FloodConfig::default()
        },
    };
    flood_every_cpu(
        &a.client,
        &a.client_end.iface,
        std::slice::from_ref(&plan),
        20_000,
        Duration::from_secs(2),
        &stop,
    )
    .expect("flooding A with SYNs in the visitor's name");
    // The visitor's open connection carries data, and it opens a new one.
    let exchanged = (|| {
        use std::io::{Read as _, Write as _};
        let (mut server, _) = listener.accept()?;
        let mut client = std::net::TcpStream::from(held);
        for stream in [&server, &client] {
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        }
        client.write_all(b"still here")?;
        let mut got = [0u8; 10];
        server.read_exact(&mut got)?;
        server.write_all(&got)?;
        client.read_exact(&mut got)?;
        Ok::<_, std::io::Error>(&got == b"still here")
    })();
    assert!(
        matches!(exchanged, Ok(true)),
        "the visitor's open connection still carries data: {exchanged:?}; A: {}",
        stats_json(&a.origin_end.iface)["counters"]
    );
    let again = connect(Duration::from_secs(3));
    assert!(
        again.is_ok(),
        "the visitor connects again after SYNs in its name: {again:?}; A: {}",
        stats_json(&a.origin_end.iface)["counters"]
    );
    drop(listener);
    let bans = a.moat_ok(&["ban", "list", "--iface", &a.origin_end.iface]);
    assert!(
        !bans.contains(SOURCES[1]),
        "no ban for SYNs anyone could send in the visitor's name: {bans}"
    );
    assert_eq!(
        crowdsec_stats(&a.origin_end.iface)["alerts_pushed"].as_u64(),
        Some(0),
        "nothing pushed for the SYN flood"
    );

    // The operator bans a source on A: the fleet takes the operator's word.
    let ban_for = |length: &str| {
        a.moat_ok(&[
            "ban",
            "add",
            "--iface",
            &a.origin_end.iface,
            "--for",
            length,
            SOURCES[1],
        ])
    };
    let banned_at = Instant::now();
    ban_for("10m");
    wait_until(
        "A pushed its operator's ban",
        Duration::from_secs(20),
        || {
            crowdsec_stats(&a.origin_end.iface)["alerts_pushed"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
    );
    // B pulls the decision A's alert carried and drops the source.
    wait_until("B enforces A's ban", Duration::from_secs(10), || {
        active(&b.origin_end.iface) >= 1
    });
    let shared_after = banned_at.elapsed();
    assert_eq!(
        active(&b.origin_end.iface),
        1,
        "B enforces the operator's ban alone, not the withheld UDP one"
    );
    let arrived = send_round(&b, &[0, 1]);
    assert_eq!(
        arrived[..2],
        [FRAMES, 0],
        "B passes the UDP flooder, whose address may have been spoofed, and drops the banned source"
    );
    assert!(
        count(&stats_json(&b.origin_end.iface), "drop", "crowdsec").0 == FRAMES,
        "counted as crowdsec on B"
    );
    let decisions = lapi.cscli(&["decisions", "list", "-a", "-o", "json"]);
    assert!(
        decisions.contains("moat/manual")
            && decisions.contains(SOURCES[1])
            && !decisions.contains("moat/rate_udp")
            && !decisions.contains("moat/rate_syn"),
        "the decision A's alert carried, and only it: {decisions}"
    );
    assert_eq!(
        crowdsec_stats(&a.origin_end.iface)["alerts_pushed"].as_u64(),
        Some(1),
        "one ban pushed"
    );
    // The operator lengthens it: A shares the new end as one more decision, and the fleet
    // keeps the later one.
    ban_for("20m");
    wait_until("A shared the new end", Duration::from_secs(20), || {
        crowdsec_stats(&a.origin_end.iface)["alerts_pushed"].as_u64() == Some(2)
    });
    let decisions: serde_json::Value =
        serde_json::from_str(&lapi.cscli(&["decisions", "list", "-a", "-o", "json"]))
            .expect("cscli's JSON");
    let durations: Vec<String> = decisions
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|alert| alert["decisions"].as_array().cloned().unwrap_or_default())
        .filter(|decision| decision["value"] == SOURCES[1] && decision["scenario"] == "moat/manual")
        .map(|decision| decision["duration"].as_str().unwrap_or("").to_string())
        .collect();
    // cscli shows the latest decision of a source; B's stream brings both.
    assert!(
        durations.len() == 1 && durations[0].starts_with("19m"),
        "the lengthened decision: {durations:?}"
    );
    wait_until("B holds both", Duration::from_secs(10), || {
        active(&b.origin_end.iface) == 2
    });
    // The operator lifts it early: A takes the decision back, and B lets the source in again.
    let lifted_at = Instant::now();
    a.moat_ok(&["ban", "del", "--iface", &a.origin_end.iface, SOURCES[1]]);
    wait_until("A took its ban back", Duration::from_secs(20), || {
        crowdsec_stats(&a.origin_end.iface)["alerts_retracted"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    wait_until("B lifts A's ban", Duration::from_secs(10), || {
        active(&b.origin_end.iface) == 0
    });
    let lifted_after = lifted_at.elapsed();
    let arrived = send_round(&b, &[0, 1]);
    assert_eq!(
        arrived[..2],
        [2 * FRAMES, FRAMES],
        "B passes the source again once A's operator lifted the ban (arrivals since the start)"
    );
    eprintln!(
        "operator's ban shared from A to B {:.1} s after it was added, lifted from B {:.1} s \
         after it was lifted",
        shared_after.as_secs_f64(),
        lifted_after.as_secs_f64()
    );
    eprintln!(
        "B's decisions in force: {}",
        crowdsec_stats(&b.origin_end.iface)["active"]
    );
    // Visitors of A are still served: a returning one and a first-time one.
    assert!(
        a.visit(&server, a.client_end.ipv4),
        "a returning visitor after the flood"
    );
    let newcomer = Ipv4Addr::new(198, 18, 0, 77);
    a.add_client_address(newcomer);
    assert!(
        a.visit(&server, newcomer),
        "a first-time visitor after the flood"
    );
    lapi.stop();
}
