//! A short lab run at one rate: for the spoofed SYN, reflection, botnet, ACK flood and carpet
//! bombing scenarios, returning visitors keep succeeding with moat attached while almost none of
//! the attack reaches the origin, first-time visitors get in during the spoofed SYN flood, the
//! ACK flood and carpet bombing, the report's sent and arrived frames are the interfaces'
//! counts, and every picture is drawn (a scenario whose protected step lost a visitor while
//! the origin's receive ring overflowed, before any XDP program saw the frames, is measured once
//! more, alone, and held to the same bars); and
//! the lab leaves no namespace, veth or process behind, also when interrupted midway.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use support::{lab_bin, moat_bin, require_root};

/// Namespaces that the lab process `pid` created and that still exist. Lab names end in
/// `<pid % 100000><counter>`, so labs of tests running side by side are told apart.
fn lab_namespaces(pid: u32) -> Vec<String> {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let mark = (pid % 100_000).to_string();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with("moat-lab-"))
        .filter(|name| {
            name.rsplit_once('-')
                .is_some_and(|(_, id)| id.starts_with(&mark))
        })
        .map(str::to_string)
        .collect()
}

/// Whether an nginx that the lab process `pid` started is still running: its master (whose
/// command line names the lab's directory), or any orphaned nginx worker (parent 1), which a
/// master killed without stopping its workers would leave behind.
fn lab_nginx_running(pid: u32) -> bool {
    let master = Command::new("pgrep")
        .args(["-f", &format!("moat-lab-nginx-{}", pid % 100_000)])
        .output()
        .is_ok_and(|output| output.status.success());
    let orphans = Command::new("pgrep")
        .args(["-P", "1", "-f", "nginx: worker process"])
        .output()
        .is_ok_and(|output| output.status.success());
    master || orphans
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("moat-{name}-{}", moat::netns::unique_suffix()))
}

/// The scenarios the lab test runs.
const SCENARIOS: [&str; 5] = [
    "spoofed-syn",
    "reflection",
    "botnet-syn",
    "ack-flood",
    "carpet-bomb",
];

/// Held by each test for its whole run: a lab measures what the machine's CPUs can do, so a
/// second lab flooding beside it (the interrupted one) would take its CPUs and its visitors'
/// frames with them.
static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Waits for the other lab test to finish (also if it panicked).
fn one_lab_at_a_time() -> MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn protected_origin_serves_visitors_and_sheds_the_attack() {
    require_root();
    let _alone = one_lab_at_a_time();
    let first = LabRun::of(&SCENARIOS);
    let report = &first.report;
    let baseline = &report["baseline"];
    let number = |step: &serde_json::Value, key: &str| -> f64 {
        step[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is a number: {step}"))
    };
    assert!(
        number(baseline, "requests") >= 30.0 && number(baseline, "success_pct") >= 99.0,
        "visitors are served without an attack: {baseline}"
    );
    let mut stdout = first.stdout.clone();
    let mut scenarios = report["scenarios"].as_array().expect("scenarios").clone();
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["scenario"].as_str())
        .collect();
    assert_eq!(names, SCENARIOS, "{stdout}");
    // A visitor's segment lost at the origin's full receive ring is lost before any XDP program
    // sees it: the lab's two CPUs, not moat (README, the lab's p99 paragraph). A scenario whose
    // protected step lost a visitor while that ring dropped frames is measured once more, alone,
    // and the second measurement is held to every bar below.
    let mut remeasured = Vec::new();
    for scenario in &mut scenarios {
        let name = scenario["scenario"].as_str().expect("name").to_string();
        if lost_visitor_at_full_ring(&name, &scenario["protected"][0]) {
            let again = LabRun::of(&[name.as_str()]);
            stdout.push_str(&format!("\nmeasured again, alone:\n{}", again.stdout));
            *scenario = again.report["scenarios"][0].clone();
            remeasured.push(name);
        }
    }
    for scenario in &scenarios {
        let name = scenario["scenario"].as_str().expect("name");
        assert!(
            scenario["models"].as_str().is_some_and(|m| m.len() > 20),
            "{name}: says what it models"
        );
        let one_step = |phase: &str| -> &serde_json::Value {
            let steps = scenario[phase].as_array().expect("steps");
            assert_eq!(steps.len(), 1, "{name}: one step at --rate: {scenario}");
            assert_eq!(steps[0]["asked_pps"], 500_000, "{name}");
            &steps[0]
        };
        let (unprotected, protected) = (one_step("unprotected"), one_step("protected"));
        assert!(
            number(protected, "requests") >= 30.0,
            "{name}: visitors kept asking: {protected}"
        );
        assert!(
            number(protected, "success_pct") >= 99.0,
            "{name}: returning visitors served with moat {}% < 99%\n{stdout}",
            number(protected, "success_pct")
        );
        assert!(
            number(protected, "offered_pps") > 10_000.0,
            "{name}: the attack ran: {protected}"
        );
        assert!(
            number(protected, "reached_pct") <= 1.0,
            "{name}: {}% of the attack reached the origin's stack with moat (> 1%)\n{stdout}",
            number(protected, "reached_pct")
        );
        assert!(
            number(unprotected, "reached_pps") > 10_000.0,
            "{name}: without moat the attack reaches the origin: {unprotected}"
        );
        // First-time visitors come in every scenario; issue #14 holds the protected origin to
        // serving 95% of them in the spoofed SYN flood, the ACK flood and carpet bombing (the
        // others' shares are in the table).
        assert!(
            number(protected, "new_requests") >= 40.0,
            "{name}: first-time visitors came during the attack: {protected}"
        );
        let new_success = number(protected, "new_success_pct");
        if FIRST_TIME_BAR.contains(&name) {
            assert!(
                new_success >= 95.0,
                "{name}: first-time visitors served with moat {new_success}% < 95%\n{stdout}"
            );
        }
        // Sent and arrived are the interfaces' own counters, and they agree with what the
        // generator produced and what the origin's stack and moat saw.
        for step in [unprotected, protected] {
            let counted = &step["counted"];
            let count = |key: &str| counted[key].as_u64().expect("a count") as f64;
            let seconds = number(step, "seconds");
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.max(b).max(1.0);
            assert!(
                close(number(step, "sent_pps") * seconds, count("sent"))
                    && close(
                        number(step, "arrived_pps") * seconds,
                        count("received") + count("ring_dropped")
                    ),
                "{name}: the rates are the counts over the step: {step}"
            );
            // The window leaves out the generator's start and the last step's tail.
            let generated = step["generated"].as_u64().expect("a count") as f64;
            assert!(
                count("sent") <= generated && count("sent") >= generated * 0.5,
                "{name}: the attackers' interface sent what the generator made, or most of it: \
                 {step}"
            );
            // Visitors and the spare-capacity prober add their own frames: the prober about one
            // per answered request (the baseline shows 1.02), a visitor's connection about ten.
            // The bound takes the larger of the baseline's rate and the step's own counts: a
            // quiet origin answers the prober faster during a dropped attack than in a baseline
            // measured on a busy machine.
            let arrived = count("received") + count("ring_dropped");
            let visitors = number(step, "requests") + number(step, "new_requests");
            let legitimate_pps = (number(baseline, "arrived_pps") * 1.5)
                .max(number(step, "spare_rps") * 2.0 + visitors * 12.0 / seconds);
            let others = (legitimate_pps + 2_000.0) * seconds;
            assert!(
                arrived <= count("sent") + others,
                "{name}: no more arrived than was sent: {step}"
            );
            assert!(
                arrived >= number(step, "reached_pps") * seconds,
                "{name}: what reached the stack arrived first: {step}"
            );
        }
    }
    // The numbers, for `--nocapture`.
    println!("{stdout}");
    if !remeasured.is_empty() {
        println!("measured again after visitors lost at the origin's full ring: {remeasured:?}");
    }
}

/// One run of the lab on some scenarios at 500k packets/s, 4 s steps, checked to have drawn
/// its pictures and left nothing behind.
struct LabRun {
    /// `lab-report.json`.
    report: serde_json::Value,
    /// What it printed.
    stdout: String,
}

impl LabRun {
    fn of(scenarios: &[&str]) -> LabRun {
        let out = temp_dir("lab");
        let output = Command::new(lab_bin())
            .arg("--moat")
            .arg(moat_bin())
            .args(["--scenario", &scenarios.join(","), "--duration", "4"])
            // With SYN cookies on "auto", the kernel's own SYN queue takes spoofed SYNs
            // whenever it has room (a few thousand per phase, whatever the flood's rate), so the
            // rate must be high enough for "1% of the flood" to be a meaningful bar.
            .args(["--rate", "500000", "--out"])
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run moat-lab");
        let pid = output.id();
        let output = output.wait_with_output().expect("wait for moat-lab");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "moat-lab failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("lab-report.json")).expect("lab-report.json written"),
        )
        .expect("the report is JSON");
        for picture in ["lab-report.svg", "lab-timeline.svg"]
            .into_iter()
            .map(String::from)
            .chain(scenarios.iter().map(|name| format!("lab-{name}.svg")))
        {
            let svg = std::fs::read_to_string(out.join(&picture))
                .unwrap_or_else(|error| panic!("{picture} written: {error}"));
            assert!(
                svg.starts_with("<svg") && svg.contains("polyline"),
                "{picture}: a picture was drawn"
            );
        }
        assert!(
            lab_namespaces(pid).is_empty(),
            "namespaces left: {:?}",
            lab_namespaces(pid)
        );
        assert!(!lab_nginx_running(pid), "nginx left running");
        std::fs::remove_dir_all(&out).expect("cleanup");
        LabRun { report, stdout }
    }
}

/// Whether `step` (scenario `name`'s protected step) falls short of a visitor bar the test
/// holds it to while frames were lost at the origin's full receive ring.
fn lost_visitor_at_full_ring(name: &str, step: &serde_json::Value) -> bool {
    let number = |key: &str| step[key].as_f64().unwrap_or(0.0);
    let short = number("success_pct") < 99.0
        || (FIRST_TIME_BAR.contains(&name) && number("new_success_pct") < 95.0);
    short && step["counted"]["ring_dropped"].as_u64().unwrap_or(0) > 0
}

/// The scenarios whose first-time visitors the test holds to 95% served with moat.
const FIRST_TIME_BAR: [&str; 3] = ["spoofed-syn", "ack-flood", "carpet-bomb"];

#[test]
fn interrupted_lab_removes_everything() {
    require_root();
    let _alone = one_lab_at_a_time();
    let out = temp_dir("lab-interrupted");
    let mut child = Command::new(lab_bin())
        .arg("--moat")
        .arg(moat_bin())
        .args([
            "--scenario",
            "spoofed-syn",
            "--duration",
            "6",
            "--rate",
            "50000",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moat-lab");
    // Wait until the attack is running, then interrupt it like Ctrl-C would.
    let stdout = child.stdout.take().expect("piped stdout");
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("lab output");
        if line.contains("/ unprotected:") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lab never reached its attack phase"
        );
    }
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the lab did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(2), "an interrupted lab says so");
    let pid = child.id();
    assert!(
        lab_namespaces(pid).is_empty(),
        "namespaces left: {:?}",
        lab_namespaces(pid)
    );
    assert!(!lab_nginx_running(pid), "nginx left running");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_lost_visitor_is_measured_again_only_when_the_ring_overflowed() {
    let step = |returning: f64, first_time: f64, ring: u64| {
        serde_json::json!({
            "success_pct": returning,
            "new_success_pct": first_time,
            "counted": { "ring_dropped": ring },
        })
    };
    assert!(lost_visitor_at_full_ring(
        "botnet-syn",
        &step(98.75, 100.0, 246_965)
    ));
    assert!(lost_visitor_at_full_ring(
        "spoofed-syn",
        &step(100.0, 94.0, 1)
    ));
    // Every visitor served, or no frame lost before moat: nothing to measure again.
    assert!(!lost_visitor_at_full_ring(
        "botnet-syn",
        &step(100.0, 100.0, 246_965)
    ));
    assert!(!lost_visitor_at_full_ring(
        "botnet-syn",
        &step(98.75, 100.0, 0)
    ));
    // botnet-syn's first-time visitors are not held to a bar.
    assert!(!lost_visitor_at_full_ring(
        "botnet-syn",
        &step(100.0, 90.0, 5)
    ));
}
