//! `moat-lab`: on one machine, what a self-hosted origin faces without protection and with
//! moat, as curves over a sweep of attack rates. A small origin (nginx, moat's daemon and its
//! interface's stack work on one CPU) serves returning visitors at a steady rate, first-time
//! visitors each making one request from a fresh address, and a closed-loop client measuring
//! its spare capacity; an attackers' namespace floods it with moat's live-frames generator from
//! every CPU (or opens real connections from a botnet's addresses); a router namespace joins
//! them like a small LAN (with a pass program on its origin-side interface, so the SYN-ACKs
//! moat answers from XDP reach the visitors). After a baseline, each scenario sweeps its rates
//! twice: unprotected, then with `moat run` attached with its default configuration. Everything
//! it creates is removed when it ends, also on Ctrl-C or failure. The filter itself is not this
//! module's business: the lab runs the real `moat run`.

mod args;
pub mod botnet;
pub mod capacity;
pub mod clients;
pub mod cpus;
pub mod crowdsec;
pub mod flood;
pub mod origin;
pub mod process;
pub mod report;
pub mod scenario;
pub mod svg;
pub mod topology;
pub mod traffic;

use std::{
    io::{IsTerminal as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use filter_common::Reason;

use moat::{preflight, stats::Snapshot};

pub use crate::args::{LabArgs, Sweep};

use self::{
    capacity::Prober,
    clients::{NEWCOMER_RATE, Newcomers, Outcome, Pool, summarize},
    flood::PeerPass,
    origin::{CpuTime, Origin},
    process::Daemon,
    report::{Report, ScenarioResult, StepResult, Tick},
    scenario::Scenario,
    topology::{LabNet, client_address},
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

/// Returning visitors (each with its own address).
pub const USERS: u8 = 10;

/// Returning visitors' requests per second, all together.
pub const REQUEST_RATE: f64 = 20.0;

/// The small origin's one CPU: its nginx, its daemon and its interface's stack work (by RPS).
pub const ORIGIN_CPU: usize = 0;

/// Closed-loop connections measuring the origin's spare capacity.
const PROBES: usize = 1;

/// How many real addresses the botnet of real handshakes uses.
const BOTS: u16 = 1_000;

/// Pause between sweeps, so one sweep's stragglers do not count in the next.
const SETTLE: Duration = Duration::from_millis(250);

/// Wait after moat attaches before its sweep is measured: a native XDP attach on veth resets
/// the interface's queues, and the segments lost in that reset wait for a retransmission
/// (200 ms and more) — an artefact of attaching, not of filtering, and what made every
/// protected p99 of earlier labs about 210 ms.
const ATTACH_SETTLE: Duration = Duration::from_secs(1);

/// How long the last step's attack goes on after its measurement ends, so that requests
/// started at its end are still under attack when their first retransmission (1 s) is due.
const TAIL: Duration = Duration::from_secs(1);

/// What a step's measurement found before the visitors' outcomes are in.
struct Step {
    result: StepResult,
    /// The step's window, since the lab started.
    window: (Duration, Duration),
    /// The timeline's ticks over the window.
    ticks: Vec<Tick>,
}

/// Everything a step runs against.
struct Lab<'a> {
    net: &'a LabNet,
    started: Instant,
    stop: &'a AtomicBool,
    bots: &'a [Ipv4Addr],
}

/// Runs the lab as `args` says and writes its report.
pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    preflight::check_privileges()?;
    preflight::check_bpffs()?;
    let scenarios = Scenario::parse_list(&args.scenario).map_err(anyhow::Error::msg)?;
    let rates = args.rates();
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
    let exe = args.moat_binary().context("finding the moat binary")?;
    if !exe.is_file() {
        anyhow::bail!(
            "no moat binary at {} (build it with `cargo build -p filter-user`, or pass --moat)",
            exe.display()
        );
    }

    // One more client address than visitors: the spare-capacity prober's.
    let net = LabNet::create(USERS + 1).context("creating the lab network")?;
    net.confine_origin_stack(ORIGIN_CPU)
        .context("steering the origin's stack work to its CPU (RPS)")?;
    let _fast_path = topology::FastPath::attach(&net)?;
    // moat answers SYNs with XDP_TX on the origin's interface; veth delivers such frames only
    // to a peer with an XDP program. The sink there drops what goes to the spoofed sources (the
    // internet's business, not the origin's) and the router's kernel forwards the rest.
    let _peer_sink = PeerPass::attach_sink(&net.router, &net.origin_link.router_iface)
        .context("attaching the sink to the router's origin-side interface")?;
    let _origin =
        Origin::start(&net.origin, ORIGIN_CPU).context("starting nginx in the origin namespace")?;
    let bots = if scenarios.iter().any(|s| s.real_handshakes()) {
        botnet::add_addresses(&net, BOTS).context("giving the botnet its addresses")?
    } else {
        Vec::new()
    };
    let step_time = |scenario: Scenario| step_duration(scenario, args.duration);
    let planned: Duration = scenarios
        .iter()
        .map(|&s| 2 * (step_time(s) * rates.len() as u32 + TAIL + ATTACH_SETTLE + SETTLE))
        .sum::<Duration>()
        + args.duration
        + SETTLE;
    // Enough fresh addresses for the whole run at the first-time visitors' rate, and some.
    let newcomer_count = (planned.as_secs_f64() * NEWCOMER_RATE * 1.2).ceil() as u32 + 100;
    let newcomer_addresses = net
        .add_newcomers(0, newcomer_count)
        .context("adding first-time visitors' addresses")?;
    let pool = Pool::start(&net.clients, USERS, REQUEST_RATE).context("starting the visitors")?;
    let started = pool.started();
    let newcomers = Newcomers::start(&net.clients, newcomer_addresses, NEWCOMER_RATE, started)
        .context("starting the first-time visitors")?;
    let prober = Prober::start(&net.clients, client_address(USERS), PROBES, started)
        .context("starting the spare-capacity prober")?;
    say!(
        "lab: origin 198.18.0.1 (nginx, its stack work and moat's daemon on CPU {ORIGIN_CPU}; moat on {}), \
         {USERS} returning visitors at {REQUEST_RATE} requests/s, first-time visitors at {NEWCOMER_RATE}/s, \
         a closed-loop client measuring spare capacity; {} scenario(s) x 2 sweeps of {} step(s) \
         ({}), about {} s",
        net.origin_link.host_iface,
        scenarios.len(),
        rates.len(),
        rates
            .iter()
            .map(|&r| report::asked_label(r))
            .collect::<Vec<_>>()
            .join(", "),
        planned.as_secs()
    );
    let lab = Lab {
        net: &net,
        started,
        stop: &stop,
        bots: &bots,
    };
    let mut steps: Vec<(usize, &str, Step)> = Vec::new();
    let baseline = run_step(&lab, None, "baseline", 0, args.duration, false)?;
    std::thread::sleep(SETTLE);
    'scenarios: for (index, &scenario) in scenarios.iter().enumerate() {
        for phase in ["unprotected", "protected"] {
            if stop.load(Ordering::Relaxed) {
                break 'scenarios;
            }
            let daemon = if phase == "protected" {
                let daemon = Daemon::start(
                    &net.origin,
                    &exe,
                    &net.origin_link.host_iface,
                    &["--config", &config.display().to_string()],
                )
                .context("starting moat run on the origin")?;
                if let Some(pid) = daemon.pid() {
                    origin::confine(pid, ORIGIN_CPU)
                        .context("confining moat's daemon to the origin's CPU")?;
                }
                std::thread::sleep(ATTACH_SETTLE);
                Some(daemon)
            } else {
                None
            };
            for (step, &rate) in rates.iter().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let last = step + 1 == rates.len();
                let measured =
                    run_step(&lab, Some(scenario), phase, rate, step_time(scenario), last)?;
                steps.push((index, phase, measured));
            }
            if let Some(daemon) = daemon {
                daemon.stop().context("stopping moat run")?;
            }
            std::thread::sleep(SETTLE);
        }
    }
    // Requests still in flight finish within their timeouts; then every outcome is in.
    let outcomes = pool.stop();
    let newcomer_outcomes = newcomers.stop().context("running first-time visitors")?;
    let mut report = Report {
        baseline: None,
        scenarios: scenarios
            .iter()
            .map(|s| ScenarioResult {
                scenario: s.name().to_string(),
                models: s.models().to_string(),
                ..ScenarioResult::default()
            })
            .collect(),
        timeline: Vec::new(),
    };
    let finish = |mut step: Step| -> (StepResult, Vec<Tick>) {
        fill_visitors(&mut step, &outcomes, &newcomer_outcomes, &prober);
        (step.result, step.ticks)
    };
    let (result, ticks) = finish(baseline);
    report.baseline = Some(result);
    report.timeline.extend(ticks);
    for (index, phase, step) in steps {
        let (result, ticks) = finish(step);
        report.timeline.extend(ticks);
        let scenario = &mut report.scenarios[index];
        if phase == "protected" {
            scenario.protected.push(result);
        } else {
            scenario.unprotected.push(result);
        }
    }
    report
        .scenarios
        .retain(|s| !s.unprotected.is_empty() || !s.protected.is_empty());
    drop(prober);
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

/// How long each of `scenario`'s steps is measured: `asked`, or one whole on/off cycle of a
/// pulse if that is longer.
fn step_duration(scenario: Scenario, asked: Duration) -> Duration {
    scenario.pulse().map_or(asked, |pulse| asked.max(pulse * 2))
}

fn write_report(report: &Report, dir: &Path) -> anyhow::Result<()> {
    let write = |name: String, text: String| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let json = write("lab-report.json".into(), report.to_json())?;
    let summary = write("lab-report.svg".into(), svg::summary(report))?;
    write("lab-timeline.svg".into(), svg::timeline(&report.timeline))?;
    for scenario in &report.scenarios {
        write(
            format!("lab-{}.svg", scenario.scenario),
            svg::curves(scenario, report.baseline.as_ref()),
        )?;
    }
    say!(
        "\nreport: {}, {} (summary), lab-timeline.svg and lab-<scenario>.svg (curves) in {}",
        json.display(),
        summary.display(),
        dir.display()
    );
    Ok(())
}

/// Runs one step: the attack (none for the baseline) at `rate` for `duration` (and [`TAIL`]
/// longer if `last`), with moat attached if the caller started it. Returns the step's counts
/// and timeline; the visitors' outcomes are added once they are all in.
fn run_step(
    lab: &Lab<'_>,
    scenario: Option<Scenario>,
    phase: &str,
    rate: u64,
    duration: Duration,
    last: bool,
) -> anyhow::Result<Step> {
    let net = lab.net;
    let name = scenario.map_or("baseline", Scenario::name);
    let interactive = std::io::stdout().is_terminal();
    let mut ticks = Vec::new();
    let flood_time = duration + if last { TAIL } else { Duration::ZERO };
    let (before, from, offered, after, elapsed) =
        std::thread::scope(|scope| -> anyhow::Result<_> {
            let attack = scenario.map(|scenario| {
                scope.spawn(move || -> anyhow::Result<(u64, Duration)> {
                    if scenario.real_handshakes() {
                        let report = botnet::connect_flood(
                            &net.attackers,
                            lab.bots,
                            SocketAddrV4::new(topology::ORIGIN_IPV4, origin::HTTP_PORT),
                            scenario::connections_per_second(rate),
                            flood_time,
                            lab.stop,
                        )
                        .context("running the botnet")?;
                        Ok((report.attempts, report.elapsed))
                    } else {
                        let report = flood::flood_every_cpu_pulsed(
                            &net.attackers,
                            &net.attacker_link.host_iface,
                            &scenario.plans(net),
                            rate,
                            flood_time,
                            scenario.pulse(),
                            lab.stop,
                        )
                        .context("running the flood generator")?;
                        Ok((report.sent, report.elapsed))
                    }
                })
            });
            // The step starts when the attack does: each sender loads its generator first (tens
            // to hundreds of ms), which would otherwise count as a quiet start of every step.
            if attack.is_some() {
                let idle = net.attack_sent()?;
                let deadline = Instant::now() + Duration::from_secs(3);
                while net.attack_sent()? == idle && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let before = Counters::read(net)?;
            let from = lab.started.elapsed();
            let started = Instant::now();
            let mut last_tick = (Instant::now(), before.reached, before.ring);
            while started.elapsed() < duration && !lab.stop.load(Ordering::Relaxed) {
                std::thread::sleep(
                    Duration::from_secs(1).min(duration.saturating_sub(started.elapsed())),
                );
                let reached = Origin::attack_packets(&net.origin).unwrap_or(last_tick.1);
                let ring = net.ring_drops().unwrap_or(last_tick.2);
                let seconds = last_tick.0.elapsed().as_secs_f64().max(1e-3);
                let t = lab.started.elapsed().as_secs_f64();
                ticks.push(Tick {
                    t: (t - seconds).max(0.0),
                    scenario: name.to_string(),
                    phase: phase.to_string(),
                    asked_pps: rate,
                    reached_pps: reached.saturating_sub(last_tick.1) as f64 / seconds,
                    ring_drops_pps: ring.saturating_sub(last_tick.2) as f64 / seconds,
                    ..Tick::default()
                });
                last_tick = (Instant::now(), reached, ring);
                let left = duration.saturating_sub(started.elapsed()).as_secs();
                let asked = if scenario.is_some() {
                    format!("{} pps asked", report::asked_label(rate))
                } else {
                    "no attack".to_string()
                };
                let line = format!(
                    "{name} / {phase}: {asked}, {left:>2}s left, reaching origin {:>9.0} pps",
                    ticks.last().map_or(0.0, |t| t.reached_pps)
                );
                if interactive {
                    say_raw!("\r\x1b[2K{line}");
                    let _ = std::io::stdout().flush();
                } else {
                    say!("{line}");
                }
            }
            // Counted at the window's end, while the last step's tail still runs.
            let elapsed = started.elapsed();
            let after = Counters::read(net)?;
            let offered = match attack {
                Some(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
                None => (0, Duration::ZERO),
            };
            Ok((before, from, offered, after, elapsed))
        })?;
    let seconds = elapsed.as_secs_f64().max(1e-3);
    // What the attack offered within the window (the tail's share left out).
    let offered_pps = offered.0 as f64 / offered.1.as_secs_f64().max(1e-3);
    let counted = report::Counted {
        sent: after.sent.saturating_sub(before.sent),
        received: after.received.saturating_sub(before.received),
        ring_dropped: after.ring.saturating_sub(before.ring),
        backlog_dropped: after.backlog.saturating_sub(before.backlog),
    };
    let reached = after.reached.saturating_sub(before.reached);
    let (softirq_pct, _) = before.machine.shares_until(after.machine);
    let (origin_softirq_pct, origin_cpu_pct) = before.origin.shares_until(after.origin);
    let by_reason = |verdict: filter_common::Verdict| -> Vec<(String, u64)> {
        match (before.moat, after.moat) {
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
    Ok(Step {
        result: StepResult {
            phase: phase.to_string(),
            asked_pps: rate,
            seconds,
            offered_pps: if scenario.is_some() { offered_pps } else { 0.0 },
            generated: offered.0,
            sent_pps: counted.sent as f64 / seconds,
            arrived_pps: (counted.received + counted.ring_dropped) as f64 / seconds,
            counted,
            reached_pps: reached as f64 / seconds,
            reached_pct: if counted.sent == 0 {
                0.0
            } else {
                (100.0 * reached as f64 / counted.sent as f64).min(100.0)
            },
            softirq_pct,
            origin_cpu_pct,
            origin_softirq_pct,
            drops: by_reason(filter_common::Verdict::Drop),
            answered: by_reason(filter_common::Verdict::Answered),
            ..StepResult::default()
        },
        window: (from, from + elapsed),
        ticks,
    })
}

/// The counters a step reads at its start and end.
struct Counters {
    reached: u64,
    ring: u64,
    sent: u64,
    received: u64,
    backlog: u64,
    machine: CpuTime,
    origin: CpuTime,
    moat: Option<Snapshot>,
}

impl Counters {
    fn read(net: &LabNet) -> anyhow::Result<Counters> {
        Ok(Counters {
            reached: Origin::attack_packets(&net.origin)?,
            ring: net.ring_drops()?,
            sent: net.attack_sent()?,
            received: net.origin_received()?,
            backlog: origin::backlog_drops(),
            machine: CpuTime::read(None),
            origin: CpuTime::read(Some(ORIGIN_CPU)),
            moat: Snapshot::read_pinned(&net.origin_link.host_iface).ok(),
        })
    }
}

/// Adds the visitors' outcomes that were due in `step`'s window, and the prober's rate, to its
/// result and ticks.
fn fill_visitors(step: &mut Step, returning: &[Outcome], new: &[Outcome], prober: &Prober) {
    let (from, to) = step.window;
    let within = |outcomes: &[Outcome]| -> Vec<Outcome> {
        outcomes
            .iter()
            .filter(|o| o.at >= from && o.at < to)
            .copied()
            .collect()
    };
    let (returning, new) = (within(returning), within(new));
    let summary = summarize(&returning);
    let new_summary = summarize(&new);
    let result = &mut step.result;
    result.requests = summary.requests;
    result.success_pct = summary.success_pct;
    result.p50_ms = summary.p50_ms;
    result.p99_ms = summary.p99_ms;
    result.new_requests = new_summary.requests;
    result.new_success_pct = new_summary.success_pct;
    result.spare_rps = prober.rate(from, to);
    fill_returning_ticks(&mut step.ticks, &returning, to);
    fill_newcomer_ticks(&mut step.ticks, &new, to);
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

/// Sets each tick's returning visitors' success and slowest successful request among
/// `outcomes` (those of the step ending at `end`) due in that tick's second.
fn fill_returning_ticks(ticks: &mut [Tick], outcomes: &[Outcome], end: Duration) {
    per_second(ticks, outcomes, end, |tick, window| {
        tick.success_pct = (!window.is_empty()).then(|| summarize(&window).success_pct);
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
    fn each_second_gets_its_success_and_slowest_successful_request() {
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
        fill_returning_ticks(&mut ticks, &outcomes, Duration::from_secs(13));
        let slowest: Vec<Option<f64>> = ticks.iter().map(|t| t.slowest_ms).collect();
        assert_eq!(slowest, [Some(210.0), Some(5.0), None]);
        let success: Vec<Option<f64>> = ticks.iter().map(|t| t.success_pct).collect();
        assert_eq!(success, [Some(100.0), Some(50.0), None]);
    }
}
