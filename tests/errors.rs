//! Every error a user meets on the way to a running filter: one line on stderr naming the
//! problem and the fix, exit code 2, and nothing attached or pinned.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::process::Command;

use aya::{Ebpf, programs::Xdp};
use filter_common::maps::PROGRAM_NAME;
use moat::{netns::NetNs, pins::PinDir};
use support::{Pair, moat_bin, require_root, stderr};

/// Asserts exit code 2 and a single stderr line starting `moat:` that contains each of `needles`.
fn assert_refused(output: &std::process::Output, needles: &[&str]) {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(2), "exit code: {message}");
    let lines: Vec<&str> = message.lines().filter(|l| l.starts_with("moat:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {message}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} not in {message:?}");
    }
}

/// Asserts that nothing is attached to or pinned for `iface` in `ns`.
fn assert_untouched(ns: &NetNs, iface: &str) {
    let link = ns
        .ip(&["-d", "link", "show", "dev", iface])
        .expect("ip link");
    assert!(!link.contains("prog/xdp"), "nothing attached: {link}");
    assert!(
        !PinDir::for_iface(iface).exists(),
        "nothing pinned for {iface}"
    );
}

#[test]
fn unknown_interface_is_named() {
    require_root();
    let ns = NetNs::create("moat-test-e").expect("netns");
    let output = ns
        .command(moat_bin())
        .args(["run", "--iface", "nosuch0"])
        .output()
        .expect("run moat");
    assert_refused(&output, &["nosuch0", "no interface"]);
}

#[test]
fn invalid_interface_name_is_refused() {
    let output = Command::new(moat_bin())
        .args(["stats", "--iface", "../etc"])
        .output()
        .expect("run moat");
    assert_refused(&output, &["invalid interface name"]);
}

#[test]
fn stats_without_a_running_filter_says_so() {
    let output = Command::new(moat_bin())
        .args(["stats", "--iface", "moatnone0"])
        .output()
        .expect("run moat");
    assert_refused(
        &output,
        &["not running on moatnone0", "moat run --iface moatnone0"],
    );
}

#[test]
fn unprivileged_user_is_told_which_capabilities_are_missing() {
    require_root();
    let pair = Pair::create();
    let output = pair
        .origin
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(moat_bin())
        .args(["run", "--iface", &pair.origin_end.iface])
        .output()
        .expect("run setpriv");
    assert_refused(&output, &["CAP_BPF", "CAP_NET_ADMIN", "root"]);
    assert_untouched(&pair.origin, &pair.origin_end.iface);
}

/// Runs `moat run` on the pair's origin end after `prepare`, a shell command run in a private
/// mount namespace, so whatever it unmounts or hides stays hidden from the host.
fn run_with_mounts_changed(pair: &Pair, prepare: &str) -> std::process::Output {
    let script = format!(
        "{prepare} && exec {} run --iface {}",
        moat_bin().display(),
        pair.origin_end.iface
    );
    pair.origin
        .command("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare")
}

#[test]
fn missing_bpffs_says_how_to_mount_it() {
    require_root();
    let pair = Pair::create();
    let output = run_with_mounts_changed(&pair, "umount /sys/fs/bpf");
    assert_refused(
        &output,
        &["bpffs is not mounted", "mount -t bpf bpf /sys/fs/bpf"],
    );
    assert_untouched(&pair.origin, &pair.origin_end.iface);
}

#[test]
fn kernel_without_btf_is_refused() {
    require_root();
    let pair = Pair::create();
    // Hide the kernel's BTF behind an empty tmpfs.
    let output = run_with_mounts_changed(&pair, "mount -t tmpfs none /sys/kernel/btf");
    assert_refused(&output, &["no BTF", "CONFIG_DEBUG_INFO_BTF"]);
    assert_untouched(&pair.origin, &pair.origin_end.iface);
}

#[test]
fn bad_config_names_line_and_key_and_attaches_nothing() {
    require_root();
    let pair = Pair::create();
    let path = std::env::temp_dir().join(format!("moat-bad-{}.toml", moat::netns::unique_suffix()));
    // `moat run` on the origin's end with the configuration at `path`.
    let run_with = |path: &std::path::Path| {
        pair.moat(&[
            "run",
            "--iface",
            &pair.origin_end.iface,
            "--config",
            path.to_str().expect("utf-8 path"),
        ])
    };
    std::fs::write(&path, "mode = \"native\"\ndry_rn = true\n").expect("write config");
    let output = run_with(&path);
    assert_refused(&output, &["invalid config", "line 2", "dry_rn"]);
    assert_untouched(&pair.origin, &pair.origin_end.iface);

    std::fs::write(&path, "mode = \"turbo\"\n").expect("write config");
    let output = run_with(&path);
    assert_refused(&output, &["invalid config", "line 1", "turbo"]);

    // A [crowdsec] section whose key file cannot be read: refused before anything attaches.
    std::fs::write(
        &path,
        "[crowdsec]\napi_url = \"http://127.0.0.1:8080/\"\napi_key_file = \"/nonexistent/key\"\n",
    )
    .expect("write config");
    let output = run_with(&path);
    assert_refused(
        &output,
        &[
            "invalid config",
            "line 3",
            "crowdsec.api_key_file",
            "/nonexistent/key",
        ],
    );
    assert_untouched(&pair.origin, &pair.origin_end.iface);

    let output = pair.moat(&[
        "run",
        "--iface",
        &pair.origin_end.iface,
        "--config",
        "/nonexistent/moat.toml",
    ]);
    assert_refused(&output, &["cannot read config /nonexistent/moat.toml"]);
    assert_untouched(&pair.origin, &pair.origin_end.iface);
    std::fs::remove_file(&path).expect("cleanup");
}

#[test]
fn native_mode_on_a_driver_without_xdp_is_refused_and_auto_falls_back() {
    require_root();
    let ns = NetNs::create("moat-test-d").expect("netns");
    let iface = moat::netns::unique_iface("td");
    // ifb has no native XDP support in its driver (and, unlike dummy, is built into this kernel).
    ns.ip(&["link", "add", &iface, "type", "ifb"]).expect("ifb");
    ns.ip(&["link", "set", &iface, "up"]).expect("up");
    let output = ns
        .command(moat_bin())
        .args(["run", "--iface", &iface, "--mode", "native"])
        .output()
        .expect("run moat");
    assert_refused(&output, &["does not support native XDP", "--mode skb"]);
    assert_untouched(&ns, &iface);

    let daemon = moat_lab::process::Daemon::start(&ns, moat_bin(), &iface, &["--mode", "auto"])
        .expect("auto mode attaches");
    assert!(daemon.log().contains("mode=skb"), "{}", daemon.log());
    let (status, log) = daemon.stop().expect("stop");
    assert!(status.success(), "{log}");
    PinDir::for_iface(&iface)
        .remove_persistent()
        .expect("remove the test's counters");
}

#[test]
fn foreign_xdp_program_is_refused_then_replaced_with_force() {
    require_root();
    let pair = Pair::create();
    let iface = &pair.origin_end.iface;
    // Another tool's program: a separately loaded copy, pinned, attached through netlink by ip.
    let pin = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/moat-test-foreign-{}",
        moat::netns::unique_suffix()
    ));
    {
        let mut ebpf = Ebpf::load(moat::FILTER_OBJECT).expect("load object");
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .expect("program")
            .try_into()
            .expect("xdp");
        program.load().expect("load program");
        program.pin(&pin).expect("pin program");
    }
    // `ip -n` would remount /sys and miss the pin; nsenter keeps the host's bpffs.
    let attached = moat::netns::run(pair.origin.command("ip").args([
        "link",
        "set",
        "dev",
        iface,
        "xdpgeneric",
        "pinned",
        pin.to_str().expect("utf-8"),
    ]));
    // Unpin first, whatever happened: the attachment keeps the program alive, and a failed
    // attach must not leave a pin behind.
    std::fs::remove_file(&pin).expect("unpin foreign program");
    attached.expect("attach foreign program");

    let output = pair.moat(&["run", "--iface", iface]);
    assert_refused(&output, &["already has an XDP program", "--force"]);
    let link = pair
        .origin
        .ip(&["-d", "link", "show", "dev", iface])
        .expect("ip link");
    assert!(
        link.contains("xdpgeneric"),
        "foreign program left in place: {link}"
    );
    assert!(!PinDir::for_iface(iface).exists(), "nothing pinned");

    let daemon = pair.start(&["--force"]);
    assert!(daemon.log().contains("mode=native"), "{}", daemon.log());
    let link = pair
        .origin
        .ip(&["-d", "link", "show", "dev", iface])
        .expect("ip link");
    assert!(
        !link.contains("xdpgeneric"),
        "foreign program removed: {link}"
    );
    let (status, log) = daemon.stop().expect("stop");
    assert!(status.success(), "{log}");
}

#[test]
fn command_line_mistakes_get_one_line_and_exit_2() {
    for (args, needles) in [
        (
            &["deny", "add"][..],
            &["--iface <IFACE>", "usage: moat deny add"][..],
        ),
        (
            &["run", "--iface", "x", "--mode", "turbo"],
            &["turbo", "auto, native, skb"],
        ),
        (&["top", "--iface", "x", "--interval", "0"], &["1..=3600"]),
        (
            &["deny", "del", "--iface", "x", "--force", "192.0.2.0/24"],
            &["--force"],
        ),
        (&["frob"], &["frob"]),
        (
            &["ban", "add", "--iface", "x", "--for", "-5m", "192.0.2.1"],
            &["\"-5m\" is not a duration", "30s, 10m"],
        ),
    ] {
        let output = Command::new(moat_bin())
            .args(args)
            .output()
            .expect("running moat");
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "{args:?}: one line: {message}");
        assert!(message.starts_with("moat: "), "{message}");
        for needle in needles {
            assert!(
                message.contains(needle),
                "{args:?}: {needle:?} not in {message:?}"
            );
        }
    }
    // Help is still help.
    let help = Command::new(moat_bin())
        .args(["deny", "--help"])
        .output()
        .expect("running moat");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).lines().count() > 3);
}
