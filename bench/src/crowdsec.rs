//! moat as a CrowdSec bouncer under a large decision list: a real Local API (Debian's
//! crowdsec, API only, see [`moat_lab::crowdsec`]) on loopback in the bed's origin namespace
//! holds 100,000 ban decisions, imported once with `cscli decisions import`; then, each round,
//! a fresh `moat run` with a `[crowdsec]` section and a fresh bouncer key pulls the startup
//! stream and writes every decision into its CrowdSec tries.
//!
//! Per round it measures what the daemon itself reports for that pull (`took_ms`, the parse and
//! the apply after the HTTP body arrived, and `bytes`, from its `crowdsec pull` log line), how
//! long after its start `moat stats --json` and `/metrics` show every decision active, how long
//! the bench's own plain HTTP client takes to fetch the same startup stream (the LAPI's serving
//! time, not moat's), and whether the daemon's other work stalled: `/metrics` is scraped in a
//! loop the whole time, each scrape with a timeout, and the slowest scrape is kept. No traffic
//! flows. Judging the figures is [`super::targets`]'s business, rendering them
//! [`super::report`]'s.

use std::{
    collections::HashSet,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use moat_lab::crowdsec::Lapi;

use super::{
    BenchError, Options, check_interrupted, control_plane, median,
    prefixes::Rng,
    throughput::Bed,
    tools::{self, TempFile},
};

/// Where the LAPI listens, inside the origin namespace.
const LAPI_LISTEN: &str = "127.0.0.1:18090";

/// Where `moat run` serves metrics by default, inside its namespace.
const METRICS_ADDR: &str = "127.0.0.1:10910";

/// How long each imported decision lasts: longer than any run.
const DECISION_DURATION: &str = "4h";

/// The daemon's pull interval: the startup pull is the one measured, and a later one finds
/// nothing new.
const UPDATE_FREQUENCY: &str = "10s";

/// How often `moat stats --json` is polled for the active decisions.
const STATS_POLL: Duration = Duration::from_millis(50);

/// How long all decisions may take to become active after the daemon starts.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(60);

/// How long the `crowdsec pull` log line may lag behind the figures `moat stats` shows.
const LOG_DEADLINE: Duration = Duration::from_secs(5);

/// Pause between two scrapes of `/metrics`.
const SCRAPE_PAUSE: Duration = Duration::from_millis(10);

/// How long one scrape may take to connect.
const SCRAPE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one scrape may take to be answered once connected.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long scraping goes on after every decision is active, so the apply's tail is covered.
const SCRAPE_AFTER: Duration = Duration::from_millis(500);

/// Seed of the decisions' addresses: the same list on every run.
const SEED: u64 = 0x6372_6f77_6473_6563;

/// The kinds of decision imported, with their share of the list in percent.
const MIX: [(Kind, usize); 4] = [
    (Kind::V4Ip, 90),
    (Kind::V6Ip, 5),
    (Kind::V4Range, 4),
    (Kind::V6Range, 1),
];

/// A kind of ban decision in the imported list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Ip` scope, an IPv4 address.
    V4Ip,
    /// `Ip` scope, an IPv6 address.
    V6Ip,
    /// `Range` scope, an IPv4 /24.
    V4Range,
    /// `Range` scope, an IPv6 /48.
    V6Range,
}

impl Kind {
    /// How the report names it.
    pub const fn label(self) -> &'static str {
        match self {
            Kind::V4Ip => "IPv4 `Ip`",
            Kind::V6Ip => "IPv6 `Ip`",
            Kind::V4Range => "IPv4 `Range` /24",
            Kind::V6Range => "IPv6 `Range` /48",
        }
    }

    /// The decision's scope as the LAPI spells it.
    const fn scope(self) -> &'static str {
        match self {
            Kind::V4Ip | Kind::V6Ip => "Ip",
            Kind::V4Range | Kind::V6Range => "Range",
        }
    }
}

/// One decision as [`Lapi::import`] takes it: value, scope, duration.
pub type Decision = (String, &'static str, &'static str);

/// What the CrowdSec section measured.
#[derive(Clone, Debug, PartialEq)]
pub struct CrowdSecReport {
    /// Decisions imported, in all.
    pub decisions: usize,
    /// Decisions imported per kind.
    pub mix: Vec<(Kind, usize)>,
    /// How long `cscli decisions import` took for all of them, seconds (the LAPI's work).
    pub import_seconds: f64,
    /// One entry per round.
    pub rounds: Vec<CrowdSecRound>,
}

/// One daemon's startup pull.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrowdSecRound {
    /// The bench's own `GET /v1/decisions/stream?startup=true` with a fresh key, seconds: the
    /// LAPI's time to serve the whole stream to a plain HTTP/1.0 client on loopback.
    pub fetch_seconds: f64,
    /// Bytes of that reply.
    pub fetch_bytes: u64,
    /// Decisions in that reply's `new` list.
    pub fetch_decisions: u64,
    /// From spawning `moat run` to its attach line, seconds.
    pub attach_seconds: f64,
    /// From spawning `moat run` to the first `/metrics` scrape showing every decision active,
    /// seconds (the end of the scrape that showed it).
    pub metrics_active_seconds: Option<f64>,
    /// From spawning `moat run` to the first `moat stats --json` showing every decision
    /// active, seconds (the daemon publishes these figures once a second).
    pub stats_active_seconds: Option<f64>,
    /// The most decisions `moat stats` showed active.
    pub active: u64,
    /// `took_ms` of the startup pull's log line: parse + apply after the body arrived.
    pub took_ms: u64,
    /// `bytes` of that line: the reply's body.
    pub bytes: u64,
    /// `inserted` of that line: prefixes written into the tries.
    pub inserted: u64,
    /// `/metrics` scrapes answered that started once the daemon had attached (a scrape sent
    /// while it loads waits for its start-up, which is not the pull's doing).
    pub scrapes: usize,
    /// Scrapes started after the attach that failed or timed out.
    pub scrapes_failed: usize,
    /// The median scrape started after the attach, milliseconds.
    pub scrape_median_ms: f64,
    /// The slowest scrape started after the attach, milliseconds.
    pub scrape_slowest_ms: f64,
    /// When the slowest scrape started, seconds after spawning `moat run`.
    pub scrape_slowest_at_seconds: f64,
    /// Scrapes that overlapped the apply: the `took_ms` before the first scrape that showed
    /// every decision active.
    pub scrapes_during_apply: usize,
    /// The slowest of those, milliseconds.
    pub scrape_slowest_during_apply_ms: f64,
    /// The daemon's peak resident memory (VmHWM) after the pull, bytes.
    pub rss_peak_bytes: u64,
}

/// The medians of a figure over rounds, with the lowest and highest round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The lowest round.
    pub low: f64,
    /// The highest round.
    pub high: f64,
}

impl Spread {
    /// The spread of the finite `values` (all zero for none).
    pub fn of(values: &[f64]) -> Spread {
        let values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return Spread {
                median: 0.0,
                low: 0.0,
                high: 0.0,
            };
        }
        Spread {
            median: median(&values),
            low: values.iter().copied().fold(f64::INFINITY, f64::min),
            high: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

impl CrowdSecReport {
    /// The spread of `figure` over the rounds.
    pub fn spread(&self, figure: impl Fn(&CrowdSecRound) -> f64) -> Spread {
        Spread::of(&self.rounds.iter().map(figure).collect::<Vec<_>>())
    }

    /// Whether every round saw every decision active.
    pub fn all_active(&self) -> bool {
        self.rounds
            .iter()
            .all(|round| round.active >= self.decisions as u64 && round.took_ms > 0)
    }
}

/// `count` decisions in [`MIX`]'s shares (IPv6 ranges take what rounding leaves), all
/// distinct, no address inside another decision's range, none in 0/8, 127/8 or the bench's
/// 198.18.0.0/15: `(value, scope, duration)` as [`Lapi::import`] takes them, and the count
/// per kind.
pub fn decisions(count: usize) -> (Vec<Decision>, Vec<(Kind, usize)>) {
    let mut counts: Vec<(Kind, usize)> = MIX
        .iter()
        .map(|(kind, percent)| (*kind, count * percent / 100))
        .collect();
    let assigned: usize = counts.iter().map(|(_, n)| n).sum();
    if let Some(last) = counts.last_mut() {
        last.1 += count - assigned;
    }
    let share = |kind: Kind| {
        counts
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    };
    let mut rng = Rng::new(SEED);
    let mut out = Vec::with_capacity(count);
    let excluded = |addr: u32| {
        let first = addr >> 24;
        first == 0 || first == 127 || first >= 224 || addr >> 17 == 0xc612_0000 >> 17
    };
    // IPv4 /24s first, so no `Ip` decision falls inside one.
    let mut v4_ranges = HashSet::new();
    while v4_ranges.len() < share(Kind::V4Range) {
        let network = (rng.next_u64() as u32) & 0xffff_ff00;
        if !excluded(network) && v4_ranges.insert(network) {
            out.push((
                format!("{}/24", Ipv4Addr::from(network)),
                Kind::V4Range.scope(),
                DECISION_DURATION,
            ));
        }
    }
    let mut v4_ips = HashSet::new();
    while v4_ips.len() < share(Kind::V4Ip) {
        let addr = rng.next_u64() as u32;
        if !excluded(addr) && !v4_ranges.contains(&(addr & 0xffff_ff00)) && v4_ips.insert(addr) {
            out.push((
                Ipv4Addr::from(addr).to_string(),
                Kind::V4Ip.scope(),
                DECISION_DURATION,
            ));
        }
    }
    // IPv6 addresses in 2001:db8:8000::/33, /48s in 2001:db8::/33: apart by construction.
    let mut v6_ips = HashSet::new();
    while v6_ips.len() < share(Kind::V6Ip) {
        let low = (u128::from(rng.next_u64()) << 32) | u128::from(rng.next_u64() as u32);
        let addr = (0x2001_0db8_u128 << 96) | (1u128 << 95) | (low & ((1u128 << 95) - 1));
        if v6_ips.insert(addr) {
            out.push((
                Ipv6Addr::from(addr).to_string(),
                Kind::V6Ip.scope(),
                DECISION_DURATION,
            ));
        }
    }
    let mut v6_ranges = HashSet::new();
    // 2001:db8::/33 holds 32,768 /48s; never ask for more.
    while v6_ranges.len() < share(Kind::V6Range).min(1 << 15) {
        let third = rng.below(1 << 15) as u16;
        if v6_ranges.insert(third) {
            out.push((
                format!("2001:db8:{third:x}::/48"),
                Kind::V6Range.scope(),
                DECISION_DURATION,
            ));
        }
    }
    (out, counts)
}

/// Runs the section: one LAPI with the decisions, then `options.crowdsec_rounds` daemons.
pub fn measure(
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<CrowdSecReport, BenchError> {
    let bed = Bed::create()?;
    let listen: SocketAddr = LAPI_LISTEN.parse().expect("a literal socket address");
    let lapi = Lapi::start(&bed.origin, listen)?;
    let (list, mix) = decisions(options.crowdsec_decisions);
    let started = Instant::now();
    lapi.import(&list)?;
    let import_seconds = started.elapsed().as_secs_f64();
    drop(list);
    progress(&format!(
        "crowdsec: {} decisions imported into the LAPI in {import_seconds:.1} s",
        options.crowdsec_decisions
    ));
    let mut rounds = Vec::new();
    for round in 1..=options.crowdsec_rounds.max(1) {
        check_interrupted()?;
        let measured = measure_round(options, &bed, &lapi, round)?;
        progress(&format!(
            "crowdsec: round {round}: parse + apply {} ms for {} bytes ({} inserted); all active \
             {} s after start per /metrics, {} s per moat stats (attached at {:.2} s); a plain \
             client fetches the stream in {:.2} s; slowest /metrics scrape {:.1} ms at {:.2} s \
             ({:.1} ms during the apply, {} scrapes), {} failed",
            measured.took_ms,
            measured.bytes,
            measured.inserted,
            seconds(measured.metrics_active_seconds),
            seconds(measured.stats_active_seconds),
            measured.attach_seconds,
            measured.fetch_seconds,
            measured.scrape_slowest_ms,
            measured.scrape_slowest_at_seconds,
            measured.scrape_slowest_during_apply_ms,
            measured.scrapes_during_apply,
            measured.scrapes_failed
        ));
        rounds.push(measured);
    }
    Ok(CrowdSecReport {
        decisions: options.crowdsec_decisions,
        mix,
        import_seconds,
        rounds,
    })
}

/// An optional figure in seconds, or "never".
pub fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "never".to_string(), |s| format!("{s:.2}"))
}

/// One scrape of `/metrics`: when it started after the daemon's spawn, how long it took, and
/// the active decisions it showed (`None` if it failed).
#[derive(Clone, Copy, Debug)]
struct Scrape {
    at: Duration,
    took: Duration,
    active: Option<u64>,
}

/// Sets the flag when dropped, so the scraper stops on every way out of a round.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One round: a fresh key, a fresh daemon, its startup pull measured, the daemon stopped.
fn measure_round(
    options: &Options,
    bed: &Bed,
    lapi: &Lapi,
    round: usize,
) -> Result<CrowdSecRound, BenchError> {
    let wanted = options.crowdsec_decisions as u64;
    let mut measured = CrowdSecRound::default();

    // The LAPI's own serving time, with a key of its own so the daemon's stays fresh.
    let fetch_key = lapi.bouncer_key(&format!("moat-bench-fetch-{round}"))?;
    let started = Instant::now();
    let body = lapi.stream_body(&fetch_key, true)?;
    measured.fetch_seconds = started.elapsed().as_secs_f64();
    measured.fetch_bytes = body.len() as u64;
    measured.fetch_decisions = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|stream| stream["new"].as_array().map(|new| new.len() as u64))
        .unwrap_or(0);
    drop(body);

    let key = lapi.bouncer_key(&format!("moat-bench-{round}"))?;
    let key_file = TempFile::create("crowdsec.key", &format!("{key}\n"))?;
    let toml = format!(
        "[crowdsec]\napi_url = \"{}\"\napi_key_file = \"{}\"\nupdate_frequency = \
         \"{UPDATE_FREQUENCY}\"\n",
        lapi.url(),
        key_file.path().display()
    );
    let iface = bed.origin_end.iface.clone();
    let stop = AtomicBool::new(false);
    let spawned = Instant::now();
    let scrapes = std::thread::scope(|scope| -> Result<Vec<Scrape>, BenchError> {
        let scraper = scope.spawn(|| bed.origin.enter(|| scrape_until(&stop, spawned)));
        let result = (|| -> Result<(), BenchError> {
            let _stop = StopOnDrop(&stop);
            let moat = bed.start_moat_toml(&options.moat_exe, &toml)?;
            measured.attach_seconds = spawned.elapsed().as_secs_f64();
            let until = spawned + ACTIVE_DEADLINE;
            while Instant::now() < until {
                check_interrupted()?;
                let active = stats_active(options, &iface)?;
                measured.active = measured.active.max(active);
                if active >= wanted {
                    measured.stats_active_seconds = Some(spawned.elapsed().as_secs_f64());
                    break;
                }
                std::thread::sleep(STATS_POLL);
            }
            let until = Instant::now() + LOG_DEADLINE;
            loop {
                if let Some(line) = startup_pull(&moat.daemon.log()) {
                    measured.took_ms = field(&line, "took_ms").unwrap_or(0);
                    measured.bytes = field(&line, "bytes").unwrap_or(0);
                    measured.inserted = field(&line, "inserted").unwrap_or(0);
                    break;
                }
                if Instant::now() >= until || measured.stats_active_seconds.is_none() {
                    break;
                }
                std::thread::sleep(STATS_POLL);
            }
            std::thread::sleep(SCRAPE_AFTER);
            let pid = control_plane::daemon_pid(&iface)?;
            measured.rss_peak_bytes = control_plane::resident(pid)?.1;
            stop.store(true, Ordering::Relaxed);
            moat.daemon.stop()?;
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let scrapes = scraper
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        result.map(|()| scrapes)
    })?;
    let attached = Duration::from_secs_f64(measured.attach_seconds);
    let after_attach: Vec<Scrape> = scrapes.into_iter().filter(|s| s.at >= attached).collect();
    summarize_scrapes(&mut measured, &after_attach, wanted);
    Ok(measured)
}

/// Scrapes `/metrics` from the calling thread's namespace until `stop` is set: every scrape
/// from the first that the server answered on, timed from `spawned`.
fn scrape_until(stop: &AtomicBool, spawned: Instant) -> Vec<Scrape> {
    let mut scrapes = Vec::new();
    let mut answered = false;
    while !stop.load(Ordering::Relaxed) {
        let at = spawned.elapsed();
        let body = scrape_metrics();
        let took = spawned.elapsed().saturating_sub(at);
        match body {
            Ok(body) => {
                answered = true;
                scrapes.push(Scrape {
                    at,
                    took,
                    active: Some(active_in_metrics(&body)),
                });
            }
            // Before the daemon serves, a refused connection is no stall.
            Err(_) if !answered => {}
            Err(_) => scrapes.push(Scrape {
                at,
                took,
                active: None,
            }),
        }
        std::thread::sleep(SCRAPE_PAUSE);
    }
    scrapes
}

/// One `GET /metrics` from the calling thread's namespace, with timeouts: its body.
fn scrape_metrics() -> std::io::Result<String> {
    let addr: SocketAddr = METRICS_ADDR.parse().expect("a literal socket address");
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(std::io::Error::other(format!("answered {head:?}")));
    }
    Ok(body.to_string())
}

/// The sum of `moat_crowdsec_decisions_active` in a metrics text.
fn active_in_metrics(body: &str) -> u64 {
    body.lines()
        .filter(|line| line.starts_with("moat_crowdsec_decisions_active{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The decisions `moat stats --json` shows active on `iface` (0 before the daemon has
/// published any).
fn stats_active(options: &Options, iface: &str) -> Result<u64, BenchError> {
    let mut command = std::process::Command::new(&options.moat_exe);
    command.args(["stats", "--iface", iface, "--json", "--window", "0"]);
    let output = moat::netns::run(&mut command)?;
    let stats: serde_json::Value = serde_json::from_str(&output).map_err(|_| {
        tools::unparsable(
            &format!("moat stats --iface {iface} --json"),
            "JSON",
            &output,
        )
    })?;
    Ok(stats["crowdsec"]["active"]
        .as_object()
        .map_or(0, |active| active.values().filter_map(|n| n.as_u64()).sum()))
}

/// The daemon's log line for its first successful startup pull.
fn startup_pull(log: &str) -> Option<String> {
    log.lines()
        .find(|line| line.contains("crowdsec pull iface=") && line.contains(" startup=true "))
        .map(str::to_string)
}

/// The number after ` name=` in a `key=value` log line.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}

/// Fills the scrape figures of `measured` from `scrapes`.
fn summarize_scrapes(measured: &mut CrowdSecRound, scrapes: &[Scrape], wanted: u64) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let answered: Vec<f64> = scrapes
        .iter()
        .filter(|s| s.active.is_some())
        .map(|s| ms(s.took))
        .collect();
    measured.scrapes = answered.len();
    measured.scrapes_failed = scrapes.len() - answered.len();
    measured.scrape_median_ms = median(&answered);
    if let Some(slowest) = scrapes.iter().max_by_key(|s| s.took) {
        measured.scrape_slowest_ms = ms(slowest.took);
        measured.scrape_slowest_at_seconds = slowest.at.as_secs_f64();
    }
    let Some(first_all) = scrapes
        .iter()
        .find(|s| s.active.is_some_and(|active| active >= wanted))
    else {
        return;
    };
    let end = first_all.at + first_all.took;
    measured.metrics_active_seconds = Some(end.as_secs_f64());
    let apply = Duration::from_millis(measured.took_ms);
    let start = end.saturating_sub(apply + first_all.took);
    let during: Vec<f64> = scrapes
        .iter()
        .filter(|s| s.at <= end && s.at + s.took >= start)
        .map(|s| ms(s.took))
        .collect();
    measured.scrapes_during_apply = during.len();
    measured.scrape_slowest_during_apply_ms = during.iter().copied().fold(0.0, f64::max);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_the_mix_and_are_distinct() {
        let (list, mix) = decisions(100_000);
        assert_eq!(list.len(), 100_000);
        assert_eq!(
            mix,
            vec![
                (Kind::V4Ip, 90_000),
                (Kind::V6Ip, 5_000),
                (Kind::V4Range, 4_000),
                (Kind::V6Range, 1_000)
            ]
        );
        let unique: HashSet<&str> = list.iter().map(|(value, _, _)| value.as_str()).collect();
        assert_eq!(unique.len(), list.len());
        for (value, scope, _) in &list {
            let cidr: moat::cidr::Cidr = value.parse().expect("a valid address or prefix");
            assert_eq!(
                *scope == "Range",
                value.contains('/'),
                "{value} {scope} {cidr}"
            );
        }
        let (small, _) = decisions(7);
        assert_eq!(small.len(), 7);
    }

    #[test]
    fn reads_the_pull_line_and_the_metrics() {
        let log = "[x INFO moat] crowdsec bouncer on iface=a\n[x INFO moat::crowdsec] crowdsec \
                   pull iface=a startup=true new=3 deleted=0 ignored=0 active=3 inserted=3 \
                   removed=0 bytes=456 took_ms=12\n";
        let line = startup_pull(log).expect("the pull line");
        assert_eq!(field(&line, "took_ms"), Some(12));
        assert_eq!(field(&line, "bytes"), Some(456));
        assert_eq!(field(&line, "inserted"), Some(3));
        let metrics = concat!(
            "# HELP moat_crowdsec_decisions_active x\n",
            "moat_crowdsec_decisions_active{iface=\"a\",origin=\"cscli\",scope=\"Ip\"} 2\n",
            "moat_crowdsec_decisions_active{iface=\"a\",origin=\"cscli\",scope=\"Range\"} 1\n",
        );
        assert_eq!(active_in_metrics(metrics), 3);
    }
}
