//! `moat allow` and `moat deny` against a running filter: live traffic from a denied source is
//! dropped, and every bad input exits 2 and leaves the lists exactly as they were.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::time::Instant;

use moat_lab::{process::Daemon, traffic};
use support::{Pair, count, require_root, stats_json, stderr};

/// `moat deny|allow ARGS` in the origin namespace; returns (exit code, stdout, stderr).
fn list(pair: &Pair, kind: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut full = vec![kind];
    full.extend_from_slice(args);
    let output = pair.moat(&full);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr(&output),
    )
}

fn entries(pair: &Pair, kind: &str) -> Vec<String> {
    let (code, out, err) = list(pair, kind, &["list", "--iface", &pair.origin_end.iface]);
    assert_eq!(code, Some(0), "{kind} list failed: {err}");
    out.lines().map(str::to_string).collect()
}

/// A `moat run` on a fresh pair whose denylist holds `capacity` prefixes, with a temporary
/// directory named for `purpose` (its configuration, and room for list files) that the caller
/// removes.
fn with_deny_capacity(purpose: &str, capacity: u32) -> (Pair, std::path::PathBuf, Daemon) {
    require_root();
    let pair = Pair::create();
    let dir = std::env::temp_dir().join(format!("moat-{purpose}-{}", moat::netns::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("moat.toml");
    std::fs::write(&config, format!("deny_capacity = {capacity}\n")).expect("write config");
    let daemon = pair.start(&["--config", config.to_str().expect("utf-8")]);
    (pair, dir, daemon)
}

fn assert_refused(result: (Option<i32>, String, String), needles: &[&str]) {
    let (code, _, err) = result;
    assert_eq!(code, Some(2), "exit code: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    }
}

#[test]
fn denied_source_is_dropped_live_until_deleted() {
    require_root();
    let pair = Pair::create();
    let daemon = pair.start(&[]);
    let iface = pair.origin_end.iface.as_str();
    let client = format!("{}/32", pair.client_end.ipv4);

    let (code, out, err) = list(&pair, "deny", &["add", "--iface", iface, &client]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        format!("added 1 to the denylist of {iface} (0 already present)")
    );
    assert_eq!(entries(&pair, "deny"), vec![client.clone()]);
    assert_eq!(
        traffic::ping(&pair.client, pair.origin_end.ipv4, 3).expect("ping"),
        0
    );
    assert_eq!(
        count(&stats_json(iface), "drop", "denylist").0,
        3,
        "three echo requests denied"
    );

    let (code, _, err) = list(&pair, "allow", &["add", "--iface", iface, &client]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        traffic::ping(&pair.client, pair.origin_end.ipv4, 2).expect("ping"),
        2
    );
    assert_eq!(
        count(&stats_json(iface), "pass", "allowlist").0,
        2,
        "allowlist wins"
    );
    let (code, _, err) = list(&pair, "allow", &["del", "--iface", iface, &client]);
    assert_eq!(code, Some(0), "{err}");

    let (code, out, err) = list(&pair, "deny", &["del", "--iface", iface, &client]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        format!("deleted 1 from the denylist of {iface}")
    );
    assert!(entries(&pair, "deny").is_empty());
    assert_eq!(
        traffic::ping(&pair.client, pair.origin_end.ipv4, 2).expect("ping"),
        2
    );
    drop(daemon);
}

#[test]
fn denying_a_verified_visitor_cuts_its_open_connection_as_the_add_returns() {
    use std::{
        io::{Read as _, Write as _},
        net::{SocketAddr, TcpListener, TcpStream},
        time::Duration,
    };
    require_root();
    let pair = Pair::create();
    let daemon = pair.start(&[]);
    let iface = pair.origin_end.iface.as_str();
    let client = format!("{}/32", pair.client_end.ipv4);
    let origin = SocketAddr::from((pair.origin_end.ipv4, 8080));
    let listener = pair
        .origin
        .enter(|| TcpListener::bind(origin))
        .expect("entering the origin")
        .expect("listening on the origin");
    // Echoes whatever arrives on one connection until it closes.
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accepting the visitor");
        let mut buffer = [0u8; 64];
        while let Ok(read) = stream.read(&mut buffer) {
            if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
    });
    let mut stream = pair
        .client
        .enter(|| TcpStream::connect_timeout(&origin, Duration::from_secs(3)))
        .expect("entering the client")
        .expect("the visitor connects");
    let exchange = |stream: &mut TcpStream, message: &[u8], wait: Duration| {
        stream.set_read_timeout(Some(wait)).expect("read timeout");
        stream.write_all(message).expect("sending");
        let mut echo = vec![0u8; message.len()];
        stream.read_exact(&mut echo).map(|()| echo == message)
    };
    assert!(matches!(
        exchange(&mut stream, b"one", Duration::from_secs(3)),
        Ok(true)
    ));
    // The daemon marks the peers of the origin's connections verified within a second; from
    // then on the visitor's segments are a verified source's, which skip the list check while
    // no list has changed since one of them passed it.
    let key = moat::verify::key_for(pair.client_end.ipv4.into(), 64);
    let path = moat::pins::PinDir::for_iface(iface).map(filter_common::maps::VERIFIED);
    support::wait_until(
        "the visitor to be verified",
        Duration::from_secs(10),
        || {
            let data = aya::maps::MapData::from_pin(&path).expect("VERIFIED pin");
            let cache = moat::verified::VerifiedCache::of(&data).expect("VERIFIED mapped");
            cache.until(&key).is_some()
        },
    );
    for message in [b"two", b"six"] {
        assert!(matches!(
            exchange(&mut stream, message, Duration::from_secs(3)),
            Ok(true)
        ));
    }
    let denied_before = count(&stats_json(iface), "drop", "denylist").0;
    assert_eq!(denied_before, 0);

    let (code, _, err) = list(&pair, "deny", &["add", "--iface", iface, &client]);
    assert_eq!(code, Some(0), "{err}");
    // The very next segment meets the denylist: the add advanced the lists' generation.
    let cut = exchange(&mut stream, b"ten", Duration::from_millis(1500));
    assert!(
        matches!(&cut, Err(error) if traffic::is_timeout(error)),
        "a denied visitor's segment went through: {cut:?}"
    );
    assert!(
        count(&stats_json(iface), "drop", "denylist").0 >= 1,
        "the segment and its retransmissions dropped under denylist"
    );

    // Deleted, the connection carries on: a retransmission of the cut segment gets its echo.
    let (code, _, err) = list(&pair, "deny", &["del", "--iface", iface, &client]);
    assert_eq!(code, Some(0), "{err}");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    let mut echo = [0u8; 3];
    stream
        .read_exact(&mut echo)
        .expect("the echo after the delete");
    assert_eq!(&echo, b"ten");
    drop(stream);
    let _ = server.join();
    drop(daemon);
}

#[test]
fn bad_input_exits_2_and_leaves_lists_as_they_were() {
    require_root();
    let pair = Pair::create();
    let _daemon = pair.start(&[]);
    let iface = pair.origin_end.iface.as_str();
    let (code, _, err) = list(&pair, "deny", &["add", "--iface", iface, "203.0.113.0/24"]);
    assert_eq!(code, Some(0), "{err}");
    let before = entries(&pair, "deny");

    let cases: &[(&[&str], &[&str])] = &[
        (
            &["10.0.0.0/8", "10.0.0.1/8"],
            &["10.0.0.1/8", "did you mean 10.0.0.0/8"],
        ),
        (&["10.0.0.0/33"], &["0 to 32"]),
        (&["2001:db8::/129"], &["0 to 128"]),
        (&["fe80::1%eth0"], &["zone"]),
        (
            &["::ffff:10.77.0.0/120"],
            &["IPv4-mapped", "write 10.77.0.0/24"],
        ),
        (&["not-an-ip"], &["expected an IPv4 or IPv6 address"]),
        (&["10.0.0.0/8", "10.0.0.0/8"], &["duplicates"]),
    ];
    for (args, needles) in cases {
        let mut full = vec!["add", "--iface", iface];
        full.extend_from_slice(args);
        assert_refused(list(&pair, "deny", &full), needles);
        assert_eq!(entries(&pair, "deny"), before, "after {args:?}");
    }

    let dir = std::env::temp_dir().join(format!("moat-lists-{}", moat::netns::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("deny.txt");
    std::fs::write(&file, "# bad actors\n198.51.100.0/24\n\n192.0.2.300\n").expect("write");
    let file_arg = file.to_str().expect("utf-8");
    assert_refused(
        list(
            &pair,
            "deny",
            &["add", "--iface", iface, "--file", file_arg],
        ),
        &[file_arg, "line 4", "192.0.2.300"],
    );
    assert_eq!(entries(&pair, "deny"), before);

    // Deleting one present and one absent prefix deletes neither.
    assert_refused(
        list(
            &pair,
            "deny",
            &["del", "--iface", iface, "203.0.113.0/24", "198.51.100.0/24"],
        ),
        &[
            "198.51.100.0/24 is not on the denylist",
            "nothing was deleted",
        ],
    );
    assert_eq!(entries(&pair, "deny"), before);

    assert_refused(
        list(
            &pair,
            "deny",
            &["add", "--iface", "moatnone0", "10.0.0.0/8"],
        ),
        &["not running on moatnone0"],
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn full_list_refuses_the_whole_add() {
    let (pair, dir, _daemon) = with_deny_capacity("full", 3);
    let iface = pair.origin_end.iface.as_str();
    let (code, _, err) = list(
        &pair,
        "deny",
        &["add", "--iface", iface, "10.0.0.0/8", "10.1.0.0/16"],
    );
    assert_eq!(code, Some(0), "{err}");
    let before = entries(&pair, "deny");
    assert_refused(
        list(
            &pair,
            "deny",
            &[
                "add",
                "--iface",
                iface,
                "10.2.0.0/16",
                "10.3.0.0/16",
                "10.4.0.0/16",
            ],
        ),
        &["denylist", "is full (3 prefixes", "deny_capacity"],
    );
    assert_eq!(
        entries(&pair, "deny"),
        before,
        "the partial add was rolled back"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_large_add_goes_in_batches_counts_what_was_there_and_rolls_back_whole() {
    let (pair, dir, _daemon) = with_deny_capacity("batch", 3000);
    let iface = pair.origin_end.iface.as_str();
    let (code, _, err) = list(
        &pair,
        "deny",
        &["add", "--iface", iface, "10.9.0.7", "10.9.0.0/24"],
    );
    assert_eq!(code, Some(0), "{err}");
    // 2,000 addresses (enough for batches), one of them already listed, given out of order.
    let file_of = |name: &str, addrs: &mut dyn Iterator<Item = String>| {
        let path = dir.join(name);
        let text: String = addrs.map(|addr| addr + "\n").collect();
        std::fs::write(&path, text).expect("write list");
        path.to_str().expect("utf-8").to_string()
    };
    let first = file_of(
        "first.txt",
        &mut (0u32..2000)
            .rev()
            .map(|n| format!("10.9.{}.{}", n / 250, n % 250 + 2)),
    );
    assert!(
        std::fs::read_to_string(&first)
            .expect("read back")
            .contains("10.9.0.7\n")
    );
    let (code, out, err) = list(&pair, "deny", &["add", "--iface", iface, "--file", &first]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        format!("added 1999 to the denylist of {iface} (1 already present)")
    );
    let before = entries(&pair, "deny");
    assert_eq!(before.len(), 2001);
    // 2,000 more do not fit in 3,000: the whole add is refused, batches already in taken out.
    let second = file_of(
        "second.txt",
        &mut (0u32..2000).map(|n| format!("10.8.{}.{}", n / 250, n % 250)),
    );
    assert_refused(
        list(&pair, "deny", &["add", "--iface", iface, "--file", &second]),
        &["denylist", "is full (3000 prefixes", "deny_capacity"],
    );
    assert_eq!(
        entries(&pair, "deny"),
        before,
        "the partial add was rolled back"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn an_add_split_between_two_inserting_threads_rolls_back_whole_when_the_list_fills() {
    let (pair, dir, daemon) = with_deny_capacity("split", 50000);
    let iface = pair.origin_end.iface.as_str();
    let file_of = |name: &str, lines: Vec<String>| {
        let path = dir.join(name);
        std::fs::write(&path, lines.concat()).expect("write list");
        path.to_str().expect("utf-8").to_string()
    };
    let first = file_of(
        "first.txt",
        (0u32..10_000)
            .map(|n| format!("10.7.{}.{}\n", n / 256, n % 256))
            .collect(),
    );
    let (code, out, err) = list(&pair, "deny", &["add", "--iface", iface, "--file", &first]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        format!("added 10000 to the denylist of {iface} (0 already present)")
    );
    let before = entries(&pair, "deny");
    // 45,000 more, the client's own address last in address order: enough for the two
    // threads (each inserts about 20,000 after the first batch), more than the 40,000 places
    // left, so both runs have entries in when the list fills.
    let client = pair.client_end.ipv4;
    let mut second: Vec<String> = (0u32..44_999)
        .map(|n| format!("10.6.{}.{}\n", n / 256, n % 256))
        .collect();
    second.push(format!("{client}\n"));
    let second = file_of("second.txt", second);
    assert_refused(
        list(&pair, "deny", &["add", "--iface", iface, "--file", &second]),
        &["denylist", "is full (50000 prefixes", "deny_capacity"],
    );
    let after = entries(&pair, "deny");
    assert!(
        after == before,
        "what both threads put in was taken out: {} entries before the add, {} after, the \
         first extra {:?}",
        before.len(),
        after.len(),
        after.iter().find(|entry| !before.contains(entry))
    );
    // The index counts went back down with them: the client's address is served.
    assert_eq!(
        traffic::ping(&pair.client, pair.origin_end.ipv4, 3).expect("ping"),
        3
    );
    assert_eq!(count(&stats_json(iface), "drop", "denylist").0, 0);
    drop(daemon);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn two_large_adds_at_once_count_each_prefix_once() {
    require_root();
    let pair = Pair::create();
    let daemon = pair.start(&[]);
    let iface = pair.origin_end.iface.as_str();
    // 20,000 /24s (batches, long enough for two writers to overlap) from 198.16.0.0, the
    // client's 198.18.0.0/24 among them.
    let dir = std::env::temp_dir().join(format!("moat-race-{}", moat::netns::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("race.txt");
    let text: String = (0u32..20_000)
        .map(|n| format!("198.{}.{}.0/24\n", 16 + n / 256, n % 256))
        .collect();
    assert!(text.contains("198.18.0.0/24\n"));
    std::fs::write(&path, text).expect("write list");
    let file = path.to_str().expect("utf-8");
    // Two writers at once: each must see the other's prefixes as present, not count them new.
    let added: Vec<usize> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| list(&pair, "deny", &["add", "--iface", iface, "--file", file]))
            })
            .collect();
        writers
            .into_iter()
            .map(|writer| {
                let (code, out, err) = writer.join().expect("writer");
                assert_eq!(code, Some(0), "{err}");
                let added = out
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no count in {out:?}"));
                assert!(
                    out.contains(&format!("({} already present)", 20_000 - added)),
                    "{out}"
                );
                added
            })
            .collect()
    });
    assert_eq!(
        added.iter().sum::<usize>(),
        20_000,
        "each prefix added once: {added:?}"
    );
    let (code, out, err) = list(&pair, "deny", &["del", "--iface", iface, "--file", file]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        format!("deleted 20000 from the denylist of {iface}")
    );
    assert!(entries(&pair, "deny").is_empty());
    // The index forgot them too: the client's /24, no longer listed, is served.
    assert_eq!(
        traffic::ping(&pair.client, pair.origin_end.ipv4, 3).expect("ping"),
        3
    );
    assert_eq!(count(&stats_json(iface), "drop", "denylist").0, 0);
    drop(daemon);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_million_deny_prefixes_load_from_a_file() {
    require_root();
    let pair = Pair::create();
    let _daemon = pair.start(&[]);
    let iface = pair.origin_end.iface.as_str();
    let dir = std::env::temp_dir().join(format!("moat-million-{}", moat::netns::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("deny.txt");
    // 999,999 prefixes nobody sends from, and one address the client will.
    let listed = std::net::Ipv4Addr::new(198, 18, 0, 77);
    let mut text = String::with_capacity(16 * 1_000_000);
    for n in 0u32..999_999 {
        let [_, a, b, c] = n.to_be_bytes();
        text.push_str(&format!("10.{a}.{b}.{c}\n"));
    }
    text.push_str(&format!("{listed}\n"));
    std::fs::write(&file, text).expect("write list");
    let started = Instant::now();
    let (code, out, err) = list(
        &pair,
        "deny",
        &[
            "add",
            "--iface",
            iface,
            "--file",
            file.to_str().expect("utf-8"),
        ],
    );
    let elapsed = started.elapsed();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        format!("added 1000000 to the denylist of {iface} (0 already present)")
    );
    println!("loaded 1,000,000 deny prefixes in {elapsed:?}");
    assert_eq!(entries(&pair, "deny").len(), 1_000_000);
    // The client's address (198.18.0.2) is not among them, so its ping is still answered;
    // from the listed address it is dropped.
    assert_eq!(
        traffic::ping(&pair.client, pair.origin_end.ipv4, 1).expect("ping"),
        1
    );
    pair.add_client_address(listed);
    let from_listed = pair
        .client
        .command("ping")
        .args(["-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-I"])
        .arg(listed.to_string())
        .arg(pair.origin_end.ipv4.to_string())
        .output()
        .expect("running ping");
    let summary = String::from_utf8_lossy(&from_listed.stdout);
    assert!(
        summary.contains("3 packets transmitted, 0 received"),
        "a ping from the listed {listed} is dropped: {summary}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
