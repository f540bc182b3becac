//! `moat-lab`: on one machine, what a self-hosted origin faces without protection and with
//! moat. An origin namespace runs nginx; a pool of returning visitors requests its page at a
//! steady rate, and in every scenario first-time visitors each make one request from a fresh
//! address; an attackers' namespace floods it with moat's live-frames generator from
//! every CPU; a router namespace joins them like a small LAN (with a pass program on its
//! origin-side interface, so the SYN-ACKs moat answers from XDP reach the visitors). Each
//! scenario runs three phases: baseline (no attack), attack with the origin unprotected, attack
//! with `moat run` attached with its default configuration. Everything it creates is removed
//! when it ends, also on Ctrl-C or failure. The filter itself is not this module's business:
//! the lab runs the real `moat run`.

mod args;
pub mod clients;
pub mod crowdsec;
pub mod flood;
pub mod origin;
pub mod process;
pub mod report;
pub mod scenario;
pub mod topology;
pub mod traffic;

use std::{
    io::{IsTerminal as _, Write as _},
    net::Ipv4Addr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use filter_common::Reason;

use moat::{preflight, stats::Snapshot};

pub use crate::args::LabArgs;

use self::{
    clients::{NEWCOMER_RATE, Outcome, Pool, summarize},
    flood::{FloodReport, PeerPass},
    origin::{Origin, cpu_jiffies},
    process::Daemon,
    report::{PhaseResult, Report, ScenarioResult, Tick},
    scenario::Scenario,
    topology::LabNet,
};

/// Prints a line; a closed stdout (the reader went away) must not stop the lab's teardown.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Prints without a newline, ignoring a closed stdout like [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// Legitimate visitors (each with its own address).
pub const USERS: u8 = 10;

/// Legitimate requests per second, all visitors together.
pub const REQUEST_RATE: f64 = 20.0;

/// Pause between phases, so one phase's stragglers do not count in the next.
const SETTLE: Duration = Duration::from_millis(500);

/// The three phases of a scenario.
const PHASES: [&str; 3] = ["baseline", "unprotected", "protected"];

/// Runs the lab as `args` says and writes its report.
pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    preflight::check_privileges()?;
    preflight::check_bpffs()?;
    let scenarios = Scenario::parse_list(&args.scenario).map_err(anyhow::Error::msg)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the report directory {}", args.out.display()))?;
    let config = args.out.join("lab-moat.toml");
    // An empty file: moat's built-in defaults, whatever /etc/moat/moat.toml says.
    std::fs::write(&config, "# moat lab: the default configuration\n")
        .with_context(|| format!("writing {}", config.display()))?;

    let net = LabNet::create(USERS).context("creating the lab network")?;
    let _fast_path = topology::FastPath::attach(&net)?;
    // moat answers SYNs with XDP_TX on the origin's interface; veth delivers such frames only
    // to a peer with an XDP program, and from there the router's kernel forwards them.
    let _peer_pass = PeerPass::attach(&net.router, &net.origin_link.router_iface)
        .context("attaching the pass program to the router's origin-side interface")?;
    let _origin = Origin::start(&net.origin).context("starting nginx in the origin namespace")?;
    let pool = Pool::start(&net.clients, USERS, REQUEST_RATE).context("starting the visitors")?;
    say!(
        "lab: origin 198.18.0.1 (nginx, moat on {}), {USERS} visitors at {REQUEST_RATE} requests/s, \
         attackers through a router; {} scenario(s) x 3 phases x {}s",
        net.origin_link.host_iface,
        scenarios.len(),
        args.duration
    );
    let exe = args.moat_binary().context("finding the moat binary")?;
    if !exe.is_file() {
        anyhow::bail!(
            "no moat binary at {} (build it with `cargo build -p filter-user`, or pass --moat)",
            exe.display()
        );
    }
    let mut report = Report::default();
    let lab_started = pool.started();
    let newcomers_per_phase = (NEWCOMER_RATE * args.duration as f64).ceil() as u32;
    let mut newcomers_used = 0u32;
    for scenario in scenarios {
        let mut result = ScenarioResult {
            scenario: scenario.name().to_string(),
            asked_pps: args.rate,
            phases: Vec::new(),
        };
        for phase in PHASES {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let daemon = if phase == "protected" {
                Some(
                    Daemon::start(
                        &net.origin,
                        &exe,
                        &net.origin_link.host_iface,
                        &["--config", &config.display().to_string()],
                    )
                    .context("starting moat run on the origin")?,
                )
            } else {
                None
            };
            let newcomers = net
                .add_newcomers(newcomers_used, newcomers_per_phase)
                .context("adding first-time visitors' addresses")?;
            newcomers_used += newcomers_per_phase;
            let (phase_result, ticks) = run_phase(
                &net,
                &pool,
                lab_started,
                scenario,
                phase,
                &newcomers,
                Duration::from_secs(args.duration),
                args.rate,
                &stop,
            )?;
            if let Some(daemon) = daemon {
                daemon.stop().context("stopping moat run")?;
            }
            result.phases.push(phase_result);
            report.timeline.extend(ticks);
            std::thread::sleep(SETTLE);
        }
        report.scenarios.push(result);
    }
    drop(pool.stop());
    if std::io::stdout().is_terminal() {
        say!();
    }
    say_raw!("{}", report.to_table());
    write_report(&report, &args.out)?;
    if stop.load(Ordering::Relaxed) {
        anyhow::bail!("interrupted; the lab was torn down and the partial report written");
    }
    Ok(())
}

fn write_report(report: &Report, dir: &Path) -> anyhow::Result<()> {
    let json = dir.join("lab-report.json");
    let svg = dir.join("lab-report.svg");
    std::fs::write(&json, report.to_json())
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&svg, report.to_svg()).with_context(|| format!("writing {}", svg.display()))?;
    say!("\nreport: {} and {}", json.display(), svg.display());
    Ok(())
}

/// Runs one phase: the visitors go on, first-time visitors come from `newcomers` (if any), the
/// flood runs from every CPU unless this is the baseline, and moat is attached if the caller
/// started it. Returns the phase's numbers and its timeline.
#[expect(
    clippy::too_many_arguments,
    reason = "one phase needs the whole lab's context"
)]
fn run_phase(
    net: &LabNet,
    pool: &Pool,
    lab_started: Instant,
    scenario: Scenario,
    phase: &str,
    newcomers: &[Ipv4Addr],
    duration: Duration,
    rate: u64,
    stop: &AtomicBool,
) -> anyhow::Result<(PhaseResult, Vec<Tick>)> {
    let interactive = std::io::stdout().is_terminal();
    let moat_before = Snapshot::read_pinned(&net.origin_link.host_iface).ok();
    let reached_before = Origin::attack_packets(&net.origin)?;
    let ring_before = net.ring_drops()?;
    let sent_before = net.attack_sent()?;
    let received_before = net.origin_received()?;
    let cpu_before = cpu_jiffies();
    let phase_start = lab_started.elapsed();
    let started = Instant::now();
    let plans = scenario.plans(net);
    let mut ticks = Vec::new();
    let newcomer_outcomes: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let (flood_report, elapsed) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let visits = (!newcomers.is_empty()).then(|| {
            scope.spawn(|| {
                clients::first_visits(
                    &net.clients,
                    newcomers,
                    NEWCOMER_RATE,
                    duration,
                    stop,
                    lab_started,
                    &newcomer_outcomes,
                )
            })
        });
        let flood = (phase != "baseline").then(|| {
            scope.spawn(|| {
                flood::flood_every_cpu(
                    &net.attackers,
                    &net.attacker_link.host_iface,
                    &plans,
                    rate,
                    duration,
                    stop,
                )
            })
        });
        let mut last = (Instant::now(), reached_before);
        while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(
                Duration::from_secs(1).min(duration.saturating_sub(started.elapsed())),
            );
            let reached = Origin::attack_packets(&net.origin).unwrap_or(last.1);
            let seconds = last.0.elapsed().as_secs_f64().max(1e-3);
            let t = lab_started.elapsed().as_secs_f64();
            let window = (t - seconds, t);
            let outcomes: Vec<_> = pool
                .outcomes()
                .into_iter()
                .filter(|o| (window.0..window.1).contains(&o.at.as_secs_f64()))
                .collect();
            ticks.push(Tick {
                t: window.0.max(0.0),
                scenario: scenario.name().to_string(),
                phase: phase.to_string(),
                reached_pps: reached.saturating_sub(last.1) as f64 / seconds,
                success_pct: (!outcomes.is_empty()).then(|| summarize(&outcomes).success_pct),
                // Filled in once every first-time visitor of the phase has finished.
                new_success_pct: None,
                // Filled in once the phase's requests have finished.
                slowest_ms: None,
            });
            last = (Instant::now(), reached);
            let left = duration.saturating_sub(started.elapsed()).as_secs();
            let line = format!(
                "{} / {phase}: {left:>3}s left, reaching origin {:>9.0} pps",
                scenario.name(),
                ticks.last().map_or(0.0, |t| t.reached_pps)
            );
            if interactive {
                say_raw!("\r\x1b[2K{line}");
                let _ = std::io::stdout().flush();
            } else {
                say!("{line}");
            }
        }
        let flooded = match flood {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .context("running the flood generator"),
            None => Ok(FloodReport::default()),
        };
        let elapsed = started.elapsed();
        // First-time visitors started late in the phase finish within their own timeout.
        if let Some(handle) = visits {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .context("running first-time visitors")?;
        }
        Ok((flooded?, elapsed))
    })?;
    let phase_end = phase_start + elapsed;
    let newcomer_outcomes = newcomer_outcomes
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    fill_newcomer_ticks(&mut ticks, &newcomer_outcomes, phase_end);
    // Requests still in flight when the phase ends finish within the timeout; count them
    // (waiting for first-time visitors may already have taken that long).
    std::thread::sleep(
        clients::REQUEST_TIMEOUT
            .min(SETTLE * 4)
            .saturating_sub(started.elapsed().saturating_sub(elapsed)),
    );
    let outcomes: Vec<_> = pool
        .outcomes()
        .into_iter()
        .filter(|o| o.at >= phase_start && o.at < phase_end)
        .collect();
    fill_latency_ticks(&mut ticks, &outcomes, phase_end);
    let legit = summarize(&outcomes);
    let reached = Origin::attack_packets(&net.origin)?.saturating_sub(reached_before);
    let ring_drops = net.ring_drops()?.saturating_sub(ring_before);
    let counted = report::Counted {
        sent: net.attack_sent()?.saturating_sub(sent_before),
        received: net.origin_received()?.saturating_sub(received_before),
        ring_dropped: ring_drops,
    };
    let cpu_after = cpu_jiffies();
    let total = cpu_after.1.saturating_sub(cpu_before.1).max(1);
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let moat_after = Snapshot::read_pinned(&net.origin_link.host_iface).ok();
    let by_reason = |verdict: filter_common::Verdict| -> Vec<(String, u64)> {
        match (moat_before, moat_after) {
            (before, Some(after)) if phase == "protected" => Reason::ALL
                .into_iter()
                .filter(|r| filter_common::decide(*r, false) == verdict)
                .map(|reason| {
                    let was = before.map_or(0, |b| b.get(verdict, reason).packets);
                    (
                        reason.label().to_string(),
                        after.get(verdict, reason).packets.saturating_sub(was),
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let drops = by_reason(filter_common::Verdict::Drop);
    let answered = by_reason(filter_common::Verdict::Answered);
    let newcomer_summary = summarize(&newcomer_outcomes);
    let offered = flood_report.sent as f64 / seconds;
    Ok((
        PhaseResult {
            phase: phase.to_string(),
            seconds,
            offered_pps: offered,
            sent_pps: counted.sent as f64 / seconds,
            arrived_pps: (counted.received + counted.ring_dropped) as f64 / seconds,
            counted,
            reached_pps: reached as f64 / seconds,
            reached_pct: if flood_report.sent == 0 {
                0.0
            } else {
                100.0 * reached as f64 / flood_report.sent as f64
            },
            requests: legit.requests,
            success_pct: legit.success_pct,
            new_requests: newcomer_summary.requests,
            new_success_pct: (!newcomers.is_empty()).then_some(newcomer_summary.success_pct),
            p50_ms: legit.p50_ms,
            p99_ms: legit.p99_ms,
            softirq_pct: 100.0 * cpu_after.0.saturating_sub(cpu_before.0) as f64 / total as f64,
            ring_drops,
            drops,
            answered,
        },
        ticks,
    ))
}

/// Calls `fill` with each tick and the outcomes that started in its second (a tick's second
/// ends where the next one starts; the last one at `end`).
fn per_second(
    ticks: &mut [Tick],
    outcomes: &[Outcome],
    end: Duration,
    mut fill: impl FnMut(&mut Tick, Vec<Outcome>),
) {
    let ends: Vec<f64> = ticks
        .iter()
        .skip(1)
        .map(|tick| tick.t)
        .chain([end.as_secs_f64()])
        .collect();
    for (tick, until) in ticks.iter_mut().zip(ends) {
        let window: Vec<Outcome> = outcomes
            .iter()
            .filter(|o| (tick.t..until).contains(&o.at.as_secs_f64()))
            .copied()
            .collect();
        fill(tick, window);
    }
}

/// Sets each tick's slowest successful request among `outcomes` (the returning visitors' of
/// the phase ending at `end`) started in that tick's second.
fn fill_latency_ticks(ticks: &mut [Tick], outcomes: &[Outcome], end: Duration) {
    per_second(ticks, outcomes, end, |tick, window| {
        tick.slowest_ms = window
            .iter()
            .filter(|o| o.ok)
            .map(|o| o.latency.as_secs_f64() * 1000.0)
            .max_by(f64::total_cmp);
    });
}

/// Sets each tick's first-time visitor success from the visitors that started in its second.
fn fill_newcomer_ticks(ticks: &mut [Tick], outcomes: &[Outcome], end: Duration) {
    if outcomes.is_empty() {
        return;
    }
    per_second(ticks, outcomes, end, |tick, window| {
        tick.new_success_pct = (!window.is_empty()).then(|| summarize(&window).success_pct);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(t: f64) -> Tick {
        Tick {
            t,
            scenario: "spoofed-syn".into(),
            phase: "protected".into(),
            ..Tick::default()
        }
    }

    fn outcome(at_ms: u64, ok: bool) -> Outcome {
        Outcome {
            at: Duration::from_millis(at_ms),
            ok,
            latency: Duration::from_millis(1),
        }
    }

    #[test]
    fn newcomer_success_goes_to_the_second_each_visitor_started_in() {
        let mut ticks = vec![tick(10.0), tick(11.0), tick(12.0)];
        let outcomes = [
            outcome(10_100, true),
            outcome(10_900, false),
            outcome(11_500, true),
            // After the phase's end: counted nowhere.
            outcome(13_200, true),
        ];
        fill_newcomer_ticks(&mut ticks, &outcomes, Duration::from_secs(13));
        let shares: Vec<Option<f64>> = ticks.iter().map(|t| t.new_success_pct).collect();
        assert_eq!(shares, [Some(50.0), Some(100.0), None]);
    }

    #[test]
    fn each_second_gets_its_slowest_successful_request() {
        let mut ticks = vec![tick(10.0), tick(11.0), tick(12.0)];
        let timed = |at_ms, ok, latency_ms| Outcome {
            latency: Duration::from_millis(latency_ms),
            ..outcome(at_ms, ok)
        };
        let outcomes = [
            timed(10_200, true, 15),
            timed(10_500, true, 210),
            // A failure is not a latency.
            timed(11_300, false, 2_000),
            timed(11_400, true, 5),
        ];
        fill_latency_ticks(&mut ticks, &outcomes, Duration::from_secs(13));
        let slowest: Vec<Option<f64>> = ticks.iter().map(|t| t.slowest_ms).collect();
        assert_eq!(slowest, [Some(210.0), Some(5.0), None]);
    }
}
