//! A daemon that dies must not take the protection with it (issue #12): a `moat run` started
//! after a SIGKILL takes over the filter still attached, swapping its program in on the pinned
//! link, so a flood of denied traffic leaks nothing across the restart and the lists, bans and
//! counters carry on; `moat detach` removes a filter nobody will take over; `moat deny add`
//! refuses to lock everyone, or the operator's own SSH session, out; and a clean stop and start
//! keeps the lists and bans, restoring what fits and keeping a saved file it could not restore.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use moat_lab::{
    flood::flood_every_cpu,
    traffic::{self, EchoServer},
};
use support::{Pair, count, nft_load, nft_packets, require_root, stats_json, stderr, wait_until};

/// The denied, spoofed sources: 198.19.0.0/16.
const DENIED: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);

/// Counts denied-range packets at prerouting, after XDP.
fn count_denied_reaching_the_stack(pair: &Pair) {
    nft_load(
        &pair.origin,
        "table ip moat_test {\n chain pre {\n  type filter hook prerouting priority -400;\n  \
         ip saddr 198.19.0.0/16 counter\n }\n}\n",
    );
}

/// Whether an XDP program is attached to the origin's end.
fn xdp_attached(pair: &Pair) -> bool {
    pair.origin
        .ip(&["link", "show", "dev", &pair.origin_end.iface])
        .expect("ip link show")
        .contains("xdp")
}

#[test]
fn a_restart_after_sigkill_takes_over_under_a_denied_flood_and_leaks_nothing() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    count_denied_reaching_the_stack(&pair);
    let server = EchoServer::listen(&pair.origin, SocketAddrV4::new(pair.origin_end.ipv4, 8080))
        .expect("the origin's service");
    let first = pair.start(&[]);
    pair.moat_ok(&["deny", "add", "--iface", &iface, "198.19.0.0/16"]);
    pair.moat_ok(&["ban", "add", "--iface", &iface, "--for", "1h", "192.0.2.7"]);
    assert!(
        pair.visit(&server, pair.client_end.ipv4),
        "a returning visitor before the restart"
    );

    let plan = pair.udp_flood(DENIED, 65_536, 9);
    let stop = AtomicBool::new(false);
    let denied = || count(&stats_json(&iface), "drop", "denylist").0;
    let (before_kill, after_restart, second, restart_took) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            flood_every_cpu(
                &pair.client,
                &pair.client_end.iface,
                std::slice::from_ref(&plan),
                100_000,
                Duration::from_secs(60),
                &stop,
            )
        });
        wait_until("the flood to be denied", Duration::from_secs(10), || {
            denied() >= 10_000
        });
        let before_kill = stats_json(&iface)["total"]["packets"]
            .as_u64()
            .expect("total");
        first.kill().expect("killing the daemon");
        // Killed, the daemon leaves its filter attached and dropping.
        let orphaned = denied();
        wait_until(
            "the orphaned filter to go on dropping",
            Duration::from_secs(10),
            || denied() >= orphaned + 10_000,
        );
        let started = Instant::now();
        let second = pair.start(&[]);
        let restart_took = started.elapsed();
        let taken_over = denied();
        wait_until(
            "the new daemon's program to go on dropping",
            Duration::from_secs(10),
            || denied() >= taken_over + 10_000,
        );
        let after_restart = stats_json(&iface)["total"]["packets"]
            .as_u64()
            .expect("total");
        // Visitors during the flood, after the take-over: a returning one and a first-time one.
        assert!(
            pair.visit(&server, pair.client_end.ipv4),
            "a returning visitor during the flood, after the take-over"
        );
        let new = Ipv4Addr::new(198, 18, 0, 77);
        pair.add_client_address(new);
        assert!(
            pair.visit(&server, new),
            "a first-time visitor during the flood, after the take-over"
        );
        stop.store(true, Ordering::Relaxed);
        flood
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .expect("the flood");
        (before_kill, after_restart, second, restart_took)
    });
    let log = second.log();
    assert!(
        log.contains("took over the running filter"),
        "the new daemon took over instead of replacing: {log}"
    );
    assert_eq!(
        nft_packets(&pair.origin, "ip"),
        0,
        "no denied packet reached the stack across the kill and the restart (took \
         {restart_took:?})"
    );
    assert!(
        after_restart > before_kill,
        "the counters carried on: {before_kill} before the kill, {after_restart} after"
    );
    let deny = pair.moat_ok(&["deny", "list", "--iface", &iface]);
    assert!(
        deny.contains("198.19.0.0/16"),
        "the denylist survived: {deny}"
    );
    let bans = pair.moat_ok(&["ban", "list", "--iface", &iface]);
    assert!(bans.contains("192.0.2.7"), "the ban survived: {bans}");
}

#[test]
fn detach_removes_an_orphaned_filter_and_refuses_while_moat_runs() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let state = support::TempDir::new("detach-state");
    let state_arg = state.0.to_str().expect("utf-8").to_string();
    let daemon = pair.start(&["--state-dir", &state_arg]);
    let refused = pair.moat(&["detach", "--iface", &iface, "--state-dir", &state_arg]);
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{message}");
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(message.contains("already running"), "{message}");
    assert!(xdp_attached(&pair), "a refused detach changes nothing");

    daemon.kill().expect("killing the daemon");
    assert!(
        xdp_attached(&pair),
        "a killed daemon's filter stays attached"
    );
    // Edits made while no daemon runs are saved by the detach, for the next run to restore.
    pair.moat_ok(&["deny", "add", "--iface", &iface, "203.0.113.0/24"]);
    pair.moat_ok(&["ban", "add", "--iface", &iface, "--for", "1h", "192.0.2.7"]);
    let out = pair.moat_ok(&["detach", "--iface", &iface, "--state-dir", &state_arg]);
    assert!(out.contains("detached"), "{out}");
    let saved: moat::state::Saved = serde_json::from_slice(
        &std::fs::read(moat::state::path(&state.0, &iface)).expect("the detach saved the state"),
    )
    .expect("a state file");
    assert_eq!(saved.deny, ["203.0.113.0/24"], "{saved:?}");
    assert_eq!(saved.bans.len(), 1, "{saved:?}");
    assert_eq!(saved.bans[0].source.to_string(), "192.0.2.7");
    assert!(!xdp_attached(&pair), "detach removed the program");
    let pins = moat::pins::PinDir::for_iface(&iface);
    assert!(!pins.exists(), "detach removed the pins");
    assert!(
        pins.persistent_path().exists(),
        "without --purge the counters stay"
    );
    let again = pair.moat_ok(&["detach", "--iface", &iface, "--purge"]);
    assert!(again.contains("no filter"), "{again}");
    assert!(
        !pins.persistent_path().exists(),
        "--purge removed the persistent counters"
    );
    let next = pair.start(&["--state-dir", &state_arg]);
    let deny = pair.moat_ok(&["deny", "list", "--iface", &iface]);
    assert_eq!(deny.trim(), "203.0.113.0/24", "the next run restored it");
    drop(next);

    // A detach that cannot save leaves the filter attached, and says so; --purge saves nothing.
    let daemon = pair.start(&["--state-dir", &state_arg]);
    daemon.kill().expect("killing the daemon");
    let not_a_dir = state.write("not-a-directory", "");
    let refused = pair.moat(&["detach", "--iface", &iface, "--state-dir", &not_a_dir]);
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{message}");
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(message.contains("stays attached"), "{message}");
    assert!(
        xdp_attached(&pair),
        "a detach that could not save changes nothing"
    );
    pair.moat_ok(&[
        "detach",
        "--iface",
        &iface,
        "--purge",
        "--state-dir",
        &not_a_dir,
    ]);
    assert!(!xdp_attached(&pair), "--purge detached without saving");
}

#[test]
fn deny_and_ban_add_refuse_to_lock_out_everyone_or_the_ssh_client() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let _daemon = pair.start(&[]);
    for list in ["deny", "allow"] {
        for everything in ["0.0.0.0/0", "::/0"] {
            let output = pair.moat(&[list, "add", "--iface", &iface, everything]);
            let message = stderr(&output);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{list} {everything}: {message}"
            );
            assert_eq!(message.lines().count(), 1, "one line: {message}");
            assert!(message.contains("--force"), "{message}");
        }
        assert_eq!(pair.moat_ok(&[list, "list", "--iface", &iface]), "");
    }
    // Only an add takes --force.
    let output = pair.moat(&["deny", "del", "--iface", &iface, "--force", "192.0.2.0/24"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let ssh = pair
        .origin
        .command(support::moat_bin())
        .args(["deny", "add", "--iface", &iface, "198.51.100.0/24"])
        .env("SSH_CONNECTION", "198.51.100.7 50000 198.18.0.1 22")
        .output()
        .expect("running moat");
    let message = stderr(&ssh);
    assert_eq!(ssh.status.code(), Some(2), "{message}");
    assert!(message.contains("198.51.100.7"), "{message}");
    let empty = pair.moat_ok(&["deny", "list", "--iface", &iface]);
    assert!(empty.trim().is_empty(), "nothing was denied: {empty}");
    pair.moat_ok(&["deny", "add", "--iface", &iface, "--force", "0.0.0.0/0"]);
    let forced = pair.moat_ok(&["deny", "list", "--iface", &iface]);
    assert!(forced.contains("0.0.0.0/0"), "--force applies it: {forced}");

    // A ban covers the SSH client itself, or its IPv6 /64.
    for (client, addr) in [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:5:6::7", "2001:db8:5:6::99"),
    ] {
        let ban = |force: bool| {
            let mut command = pair.origin.command(support::moat_bin());
            command.args(["ban", "add", "--iface", &iface, addr]);
            if force {
                command.arg("--force");
            }
            command
                .env("SSH_CONNECTION", format!("{client} 50000 198.18.0.1 22"))
                .output()
                .expect("running moat")
        };
        let refused = ban(false);
        let message = stderr(&refused);
        assert_eq!(refused.status.code(), Some(2), "{message}");
        assert_eq!(message.lines().count(), 1, "one line: {message}");
        assert!(
            message.contains(&format!("it holds {client}, the SSH client")),
            "{message}"
        );
        let bans = pair.moat_ok(&["ban", "list", "--iface", &iface]);
        assert!(!bans.contains(addr), "nothing was banned: {bans}");
        assert!(ban(true).status.success(), "--force bans it");
    }
    let bans = pair.moat_ok(&["ban", "list", "--iface", &iface]);
    assert!(
        bans.contains("198.51.100.7") && bans.contains("2001:db8:5:6::/64"),
        "{bans}"
    );
}

#[test]
fn commands_that_edit_a_filter_refuse_to_run_from_another_network_namespace() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let _daemon = pair.start(&[]);
    // This test's own namespace is not the origin's, where the filter was attached.
    for edit in [
        vec!["deny", "add", "--iface", &iface, "203.0.113.0/24"],
        vec!["allow", "del", "--iface", &iface, "203.0.113.0/24"],
        vec!["ban", "add", "--iface", &iface, "203.0.113.9"],
        vec!["ban", "del", "--iface", &iface, "203.0.113.9"],
        vec!["set", "--iface", &iface, "dry_run", "true"],
        vec!["detach", "--iface", &iface],
    ] {
        let output = std::process::Command::new(support::moat_bin())
            .args(&edit)
            .output()
            .expect("running moat");
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{edit:?}: {message}");
        assert_eq!(message.lines().count(), 1, "one line: {message}");
        assert!(
            message.contains("attached from another network namespace"),
            "{edit:?}: {message}"
        );
    }
    let deny = pair.moat_ok(&["deny", "list", "--iface", &iface]);
    assert_eq!(deny.trim(), "", "nothing was denied");
    assert!(xdp_attached(&pair), "nothing was detached");
    // From the origin's namespace the same edit goes through.
    pair.moat_ok(&["deny", "add", "--iface", &iface, "203.0.113.0/24"]);
}

/// The next datagram on `socket`, as text, waiting at most 10 s.
fn next_notification(socket: &std::os::unix::net::UnixDatagram) -> String {
    let mut buffer = [0u8; 512];
    let len = socket
        .recv(&mut buffer)
        .expect("a notification within 10 s");
    String::from_utf8_lossy(&buffer[..len]).into_owned()
}

#[test]
fn tells_systemd_it_is_ready_once_attached_and_around_a_reload() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let path =
        std::env::temp_dir().join(format!("moat-notify-{}.sock", moat::netns::unique_suffix()));
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("a notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let config =
        std::env::temp_dir().join(format!("moat-notify-{}.toml", moat::netns::unique_suffix()));
    std::fs::write(&config, "").expect("a config file");
    let config_arg = config.to_str().expect("utf-8").to_string();
    let daemon = moat_lab::process::Daemon::start_with_env(
        &pair.origin,
        support::moat_bin(),
        &iface,
        &["--config", &config_arg],
        &[("NOTIFY_SOCKET", path.to_str().expect("utf-8"))],
    )
    .expect("moat run attaches");
    let ready = next_notification(&socket);
    assert!(
        ready.starts_with("READY=1\n") && ready.contains(&format!("STATUS=protecting {iface}")),
        "{ready:?}"
    );
    assert!(
        xdp_attached(&pair),
        "the filter is attached when systemd hears READY=1"
    );
    daemon.signal(libc::SIGHUP).expect("SIGHUP");
    let reloading = next_notification(&socket);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let ready_again = next_notification(&socket);
    assert!(ready_again.starts_with("READY=1\n"), "{ready_again:?}");
    let (status, log) = daemon.stop().expect("stopping");
    assert!(status.success(), "{log}");
    assert_eq!(next_notification(&socket), "STOPPING=1\n");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&config);
}

/// Denies `deny`, allows 192.0.2.0/24 and bans 198.51.100.9 for an hour on the filter `daemon`
/// runs, then stops it cleanly, which saves them.
fn edit_lists_and_stop(pair: &Pair, daemon: moat_lab::process::Daemon, deny: &[&str]) {
    let iface = pair.origin_end.iface.as_str();
    let mut add = vec!["deny", "add", "--iface", iface];
    add.extend_from_slice(deny);
    pair.moat_ok(&add);
    pair.moat_ok(&["allow", "add", "--iface", iface, "192.0.2.0/24"]);
    pair.moat_ok(&[
        "ban",
        "add",
        "--iface",
        iface,
        "--for",
        "1h",
        "198.51.100.9",
    ]);
    let (status, log) = daemon.stop().expect("a clean stop");
    assert!(status.success(), "{log}");
}

#[test]
fn a_clean_stop_and_start_restores_the_lists_and_bans_with_their_remaining_time() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let dir =
        std::env::temp_dir().join(format!("moat-state-test-{}", moat::netns::unique_suffix()));
    let dir_arg = dir.to_str().expect("utf-8").to_string();
    let first = pair.start(&["--state-dir", &dir_arg]);
    edit_lists_and_stop(&pair, first, &["203.0.113.0/24"]);
    assert!(!xdp_attached(&pair), "a clean stop detaches");
    assert!(
        moat::state::path(&dir, &iface).exists(),
        "the state was saved at stop"
    );

    let second = pair.start(&["--state-dir", &dir_arg]);
    assert!(second.log().contains("restored iface="), "{}", second.log());
    let deny = pair.moat_ok(&["deny", "list", "--iface", &iface]);
    assert_eq!(deny.trim(), "203.0.113.0/24", "the denylist came back");
    let allow = pair.moat_ok(&["allow", "list", "--iface", &iface]);
    assert_eq!(allow.trim(), "192.0.2.0/24", "the allowlist came back");
    let bans = pair
        .origin
        .enter(|| moat::bans::PinnedBans::open(&iface).and_then(|bans| bans.active()))
        .expect("entering the origin")
        .expect("reading the bans");
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].source, "198.51.100.9");
    assert!(
        bans[0].remaining <= Duration::from_secs(3600)
            && bans[0].remaining >= Duration::from_secs(3500),
        "the ban kept its remaining time: {:?}",
        bans[0].remaining
    );
    assert_eq!(bans[0].reason, "banned");
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The saved state files of `iface` kept aside in `dir` by a restore that left something out.
fn kept_aside(dir: &std::path::Path, iface: &str) -> Vec<std::path::PathBuf> {
    let prefix = format!("{iface}.json.unrestored-");
    std::fs::read_dir(dir)
        .expect("the state directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix))
        })
        .collect()
}

/// The saved state file at `path`, parsed.
fn saved_state(path: &std::path::Path) -> moat::state::Saved {
    serde_json::from_slice(&std::fs::read(path).expect("the state file")).expect("a state file")
}

#[test]
fn a_restore_that_cannot_put_everything_back_restores_the_rest_and_keeps_the_file() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let dir = support::TempDir::new("state-partial");
    let dir_arg = dir.0.to_str().expect("utf-8").to_string();
    let first = pair.start(&["--state-dir", &dir_arg]);
    edit_lists_and_stop(
        &pair,
        first,
        &[
            "203.0.113.0/24",
            "198.18.0.0/24",
            "198.18.1.0/24",
            "2001:db8:bad::/48",
        ],
    );
    let file = moat::state::path(&dir.0, &iface);
    let before = saved_state(&file);
    assert_eq!(before.deny.len(), 4, "{before:?}");

    // The IPv4 denylist no longer fits a smaller capacity (per family): as many of its
    // prefixes as fit come back, in the saved order, the IPv6 one, the allowlist and the
    // ban all come back, and the file is kept whole beside the next save.
    let config = dir.write("moat.toml", "deny_capacity = 2\n");
    let second = pair.start(&["--state-dir", &dir_arg, "--config", &config]);
    let log = second.log();
    assert!(
        log.contains("restored only allow=1 deny=3 bans=1")
            && log.contains("holds 2 prefixes per address family (deny_capacity): 2 of its 3 saved IPv4 prefixes restored, 1 left out"),
        "{log}"
    );
    let deny = pair.moat_ok(&["deny", "list", "--iface", &iface]);
    assert_eq!(
        deny.lines().collect::<Vec<_>>(),
        ["198.18.0.0/24", "198.18.1.0/24", "2001:db8:bad::/48"],
        "the prefixes that fit came back"
    );
    let allow = pair.moat_ok(&["allow", "list", "--iface", &iface]);
    assert_eq!(allow.trim(), "192.0.2.0/24", "the allowlist came back");
    let bans = pair.moat_ok(&["ban", "list", "--iface", &iface]);
    assert!(bans.contains("198.51.100.9"), "the ban came back: {bans}");
    let kept = kept_aside(&dir.0, &iface);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        log.contains(&kept[0].display().to_string()),
        "the log names the copy: {log}"
    );
    assert_eq!(
        saved_state(&kept[0]),
        before,
        "the copy is the saved file, whole"
    );
    let (status, log) = second.stop().expect("a clean stop");
    assert!(status.success(), "{log}");
    assert_eq!(
        saved_state(&file).allow,
        ["192.0.2.0/24"],
        "the stop saved anew"
    );
    assert_eq!(
        saved_state(&kept[0]),
        before,
        "the stop left the copy alone"
    );

    // A file that is not a state file at all is kept too, and the filter starts.
    std::fs::write(&file, b"{\"allow\": [").expect("a truncated state file");
    let third = pair.start(&["--state-dir", &dir_arg]);
    let log = third.log();
    assert!(log.contains("is not a moat state file"), "{log}");
    let kept = kept_aside(&dir.0, &iface);
    assert!(
        kept.iter()
            .any(|path| std::fs::read(path).is_ok_and(|text| text == b"{\"allow\": [")),
        "the truncated file is kept: {kept:?}"
    );
    let (status, log) = third.stop().expect("a clean stop");
    assert!(status.success(), "{log}");

    // An entry edited into something that is not a prefix is reported and the file kept; the
    // other entries come back.
    let edited = b"{\"allow\": [], \"deny\": [\"198.51.100.0/24\", \"10.0.0.1/8\"], \"bans\": []}";
    std::fs::write(&file, edited).expect("an edited state file");
    let fourth = pair.start(&["--state-dir", &dir_arg]);
    let log = fourth.log();
    assert!(
        log.contains("restored only allow=0 deny=1 bans=0")
            && log.contains("a saved denylist entry")
            && log.contains("10.0.0.1/8"),
        "{log}"
    );
    let deny = pair.moat_ok(&["deny", "list", "--iface", &iface]);
    assert_eq!(deny.trim(), "198.51.100.0/24");
    assert!(
        kept_aside(&dir.0, &iface)
            .iter()
            .any(|path| std::fs::read(path).is_ok_and(|text| text == edited)),
        "the edited file is kept"
    );
    assert!(
        kept_aside(&dir.0, &iface)
            .iter()
            .any(|path| std::fs::read(path).is_ok_and(|text| text == b"{\"allow\": [")),
        "beside the truncated one, kept in the same second or not"
    );
    drop(fourth);
}

#[test]
fn a_state_dir_that_cannot_be_written_is_refused_before_attaching() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let dir = support::TempDir::new("state-file");
    let not_a_dir = dir.write("not-a-directory", "");
    let mut run = pair
        .origin
        .command(support::moat_bin())
        .args(["run", "--iface", &iface, "--metrics", "off", "--state-dir"])
        .arg(&not_a_dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running moat run");
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.try_wait().expect("waiting for moat run").is_none() {
        if Instant::now() > deadline {
            // A clean stop, so the filter it attached goes with it.
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
            let _ = run.wait();
            panic!("moat run did not refuse --state-dir {not_a_dir} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = run.wait_with_output().expect("moat run's stderr");
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(
        message.contains(&format!("--state-dir {not_a_dir}")) && message.contains("writable"),
        "{message}"
    );
    assert_eq!(
        message.matches("os error").count(),
        1,
        "said once: {message}"
    );
    assert!(!xdp_attached(&pair), "nothing was attached");
}

#[test]
fn a_burst_of_bans_is_logged_as_a_count_not_a_line_each() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let dir = support::TempDir::new("burst");
    // 30 spoofed sources, each far over a tiny UDP limit: each earns a ban at its first strike.
    let config = dir.write(
        "moat.toml",
        "[limits.source.udp]\npps = 10\nburst = 10\n[bans]\nafter_strikes = 1\n",
    );
    let daemon = pair.start(&["--config", &config]);
    // A socket the datagrams reach, so they get as far as the rate stage.
    let _socket = pair
        .origin
        .enter(|| std::net::UdpSocket::bind(SocketAddrV4::new(pair.origin_end.ipv4, 5300)))
        .expect("entering the origin")
        .expect("the origin's socket");
    let server = EchoServer::listen(&pair.origin, SocketAddrV4::new(pair.origin_end.ipv4, 8080))
        .expect("the origin's service");
    let newcomer = Ipv4Addr::new(198, 18, 0, 78);
    pair.add_client_address(newcomer);
    let plan = pair.udp_flood(Ipv4Addr::new(203, 0, 113, 0), 30, 5300);
    let stop = AtomicBool::new(false);
    let issued = || count(&stats_json(&iface), "drop", "banned").0;
    std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            flood_every_cpu(
                &pair.client,
                &pair.client_end.iface,
                std::slice::from_ref(&plan),
                20_000,
                Duration::from_secs(20),
                &stop,
            )
        });
        wait_until(
            "the 30 sources to be banned",
            Duration::from_secs(15),
            || issued() >= 1_000 && moat_bans(&pair, &iface) == 30,
        );
        for (who, source) in [
            ("returning", pair.client_end.ipv4),
            ("first-time", newcomer),
        ] {
            assert!(
                pair.visit(&server, source),
                "a {who} visitor is served during the flood"
            );
        }
        stop.store(true, Ordering::Relaxed);
        flood
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .expect("the flood");
    });
    let summary_count = |log: &str| -> u64 {
        log.lines()
            .filter_map(|line| line.split("] banned iface=").nth(1))
            .filter_map(|rest| rest.split(" count=").nth(1))
            .filter_map(|count| count.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    };
    let single_lines = |log: &str| {
        log.lines()
            .filter(|line| line.contains("] banned iface=") && line.contains(" source="))
            .count() as u64
    };
    wait_until(
        "the daemon to log the 30 bans",
        Duration::from_secs(10),
        || {
            let log = daemon.log();
            summary_count(&log) + single_lines(&log) >= 30
        },
    );
    let log = daemon.log();
    assert_eq!(
        summary_count(&log) + single_lines(&log),
        30,
        "every ban logged once, from the program's ban records: {log}"
    );
    assert!(
        summary_count(&log) >= 20,
        "a summary line carries the burst: {log}"
    );
    assert!(
        single_lines(&log) <= 10,
        "at most a handful of single lines: {log}"
    );
    assert!(
        !log.contains("] unbanned iface="),
        "no ban in force is logged as lifted: {log}"
    );
}

/// How many bans `moat ban list` shows.
fn moat_bans(pair: &Pair, iface: &str) -> usize {
    pair.moat_ok(&["ban", "list", "--iface", iface])
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .count()
}

#[test]
fn reloads_during_a_stream_of_resolver_replies_drop_none() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let dir = support::TempDir::new("reload");
    // The client is the resolver; trusted, its replies from port 53 pass the reflection stage.
    let config = |sample_every: u32| {
        format!(
            "sample_every = {sample_every}\n[reflection]\ntrusted = [\"198.18.0.2/32\"]\n\
             resolv_conf = \"\"\n"
        )
    };
    let path = dir.write("moat.toml", &config(64));
    let daemon = pair.start(&["--config", &path]);
    let target = SocketAddrV4::new(pair.origin_end.ipv4, 5300);
    let receiver = pair
        .origin
        .enter(|| std::net::UdpSocket::bind(target))
        .expect("entering the origin")
        .expect("the origin's lookup socket");
    let stop = AtomicBool::new(false);
    let sent = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            pair.client
                .enter(|| {
                    let socket =
                        std::net::UdpSocket::bind(SocketAddrV4::new(pair.client_end.ipv4, 53))?;
                    let mut sent = 0u64;
                    // 1,000 replies a second, under the per-source UDP limit.
                    while !stop.load(Ordering::Relaxed) && sent < 20_000 {
                        socket.send_to(b"answer", target)?;
                        sent += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok::<_, std::io::Error>(sent)
                })
                .expect("entering the client")
                .expect("sending replies")
        });
        for round in 0..20u32 {
            std::fs::write(&path, config(32 + round)).expect("rewriting the config");
            daemon.signal(libc::SIGHUP).expect("SIGHUP");
            let done = round as usize + 1;
            wait_until("the reload", Duration::from_secs(5), || {
                daemon.log().matches("] reloaded iface=").count() >= done
            });
        }
        stop.store(true, Ordering::Relaxed);
        stream
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    let reloads = daemon.log().matches("] reloaded iface=").count();
    assert_eq!(reloads, 20, "every SIGHUP reloaded: {}", daemon.log());
    drop(receiver);
    let stats = stats_json(&iface);
    assert_eq!(
        count(&stats, "drop", "reflection").0,
        0,
        "no resolver reply was dropped across {reloads} reloads ({sent} sent)"
    );
    assert!(
        count(&stats, "pass", "pass").0 >= sent,
        "every reply passed: {stats}"
    );
}

/// Runs `moat run` on the pair's origin with `env`, expecting a refusal; returns its stderr.
fn refused_run(pair: &Pair, env: &[(&str, &std::path::Path)]) -> String {
    let iface = pair.origin_end.iface.clone();
    let state = support::TempDir::new("refused");
    let mut command = pair.origin.command(support::moat_bin());
    command
        .args(["run", "--iface", &iface, "--metrics", "off", "--state-dir"])
        .arg(&state.0);
    for (key, value) in env {
        command.env(key, value);
    }
    let refused = command.output().expect("running moat run");
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(
        message.contains("stays attached and protecting"),
        "the refusal says the running filter stays: {message}"
    );
    message
}

/// Sends 20 denied SYNs and waits for the filter on the origin to drop them.
fn denied_frames_are_dropped(pair: &Pair) {
    let iface = &pair.origin_end.iface;
    let before = count(&stats_json(iface), "drop", "denylist").0;
    let frames: Vec<Vec<u8>> = (0u8..20)
        .map(|n| {
            traffic::syn_frame(
                &pair.client_end,
                Ipv4Addr::new(198, 19, 0, n),
                &pair.origin_end,
                80,
            )
        })
        .collect();
    traffic::send_frames(&pair.client, &pair.client_end.iface, &frames).expect("frames");
    wait_until(
        "the old filter to drop them",
        Duration::from_secs(5),
        || count(&stats_json(iface), "drop", "denylist").0 >= before + 20,
    );
}

#[test]
fn a_take_over_that_fails_leaves_the_running_filter_attached_and_dropping() {
    require_root();
    let pair = Pair::create();
    let iface = pair.origin_end.iface.clone();
    let first = pair.start(&[]);
    pair.moat_ok(&["deny", "add", "--iface", &iface, "198.19.0.0/16"]);
    first.kill().expect("killing the daemon");

    // A new build whose program fails to load: here, a truncated object.
    let dir = support::TempDir::new("broken");
    let broken = std::path::Path::new(&dir.0).join("moat-filter");
    std::fs::write(&broken, &moat::FILTER_OBJECT[..4096]).expect("writing a broken object");
    refused_run(&pair, &[(moat::loader::OBJECT_ENV, &broken)]);
    assert!(xdp_attached(&pair), "the old filter is still attached");
    denied_frames_are_dropped(&pair);

    // A new build the kernel refuses only at its verifier, after the object was read and its
    // maps opened: the running filter keeps reading its own policy slot.
    let pins = moat::pins::PinDir::for_iface(&iface);
    let active_slot = || {
        moat::policy::PolicyMaps::of_pins(&pins)
            .and_then(|maps| maps.active_slot())
            .expect("the running filter's ACTIVE")
    };
    let slot = active_slot();
    let refused = std::path::Path::new(&dir.0).join("moat-filter-refused");
    std::fs::write(&refused, support::unverifiable_object()).expect("writing the object");
    let message = refused_run(&pair, &[(moat::loader::OBJECT_ENV, &refused)]);
    assert!(
        message.contains("loading the new program"),
        "refused by the verifier: {message}"
    );
    assert_eq!(
        active_slot(),
        slot,
        "the running filter reads its own policy still"
    );
    assert!(xdp_attached(&pair), "the old filter is still attached");
    denied_frames_are_dropped(&pair);

    // An upgrade whose stateful maps changed their entries' layout, which moat cannot carry
    // over: here the pinned BANS map is replaced by one of another layout.
    let pin = moat::pins::PinDir::for_iface(&iface).map(filter_common::maps::BANS);
    let bans = aya::maps::MapData::from_pin(&pin).expect("the pinned BANS");
    std::fs::remove_file(&pin).expect("removing the BANS pin");
    support::pin_foreign_map(&pin);
    let message = refused_run(&pair, &[]);
    assert!(
        message.contains("BANS") && message.contains("cannot carry them over"),
        "the refusal names the map it cannot migrate: {message}"
    );
    assert!(xdp_attached(&pair), "the old filter is still attached");
    // Put the running filter's own ban table back where `moat stats` reads it.
    std::fs::remove_file(&pin).expect("removing the foreign pin");
    bans.pin(&pin).expect("pinning BANS back");
    denied_frames_are_dropped(&pair);

    // Per-source rate state is relearned from traffic, so a SOURCES table whose entries
    // changed layout is replaced, not refused: the upgrade takes over with lists and bans.
    let sources = moat::pins::PinDir::for_iface(&iface).map(filter_common::maps::SOURCES);
    std::fs::remove_file(&sources).expect("removing the SOURCES pin");
    support::pin_foreign_map(&sources);
    let upgraded = pair.start(&[]);
    let info = aya::maps::MapData::from_pin(&sources)
        .expect("the SOURCES pin after the take-over")
        .info()
        .expect("its info");
    assert_eq!(
        (info.key_size(), info.value_size()),
        (
            4,
            std::mem::size_of::<filter_common::sources::SourceSet>() as u32
        ),
        "SOURCES was replaced by the object's own table"
    );
    denied_frames_are_dropped(&pair);

    // A filter from before the list index (no LIST_INDEX pin) is taken over with its lists:
    // the new, empty index is built from them before the new program sees a packet.
    upgraded.kill().expect("killing the daemon");
    let index = moat::pins::PinDir::for_iface(&iface).map(filter_common::maps::LIST_INDEX);
    std::fs::remove_file(&index).expect("removing the LIST_INDEX pin");
    let rebuilt = pair.start(&[]);
    assert!(
        rebuilt
            .log()
            .contains("built the list index from the lists"),
        "{}",
        rebuilt.log()
    );
    denied_frames_are_dropped(&pair);
    // A plain stop detaches.
    drop(rebuilt);
}

#[test]
fn metrics_on_a_non_loopback_address_log_a_warning() {
    require_root();
    let pair = Pair::create();
    let addr = format!("{}:10999", pair.origin_end.ipv4);
    let daemon = pair.start(&["--metrics", &addr]);
    let log = daemon.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("non-loopback"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains(&addr), "{}", warnings[0]);
    let quiet = Pair::create();
    let local = quiet.start(&["--metrics", "127.0.0.1:10998"]);
    assert!(!local.log().contains("non-loopback"), "{}", local.log());
}
