//! Prometheus metrics, served at `/metrics` by a small HTTP server on the daemon's tokio
//! runtime. A scrape reads the per-CPU counter arrays (a fixed number of slots, so packet
//! counters come straight from the kernel and never go backwards, even across a restart) and
//! figures the daemon keeps as it goes (tracked sources and bans in force, counted in the
//! background at a fixed pace): it never walks a table, so it costs the same under attack.
//!
//! It serves nothing else and keeps no history; rates are Prometheus's job.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use filter_common::{
    Reason, decide,
    maps::{BAN_EVENTS, BANS, SAMPLES_LOST, SOURCES},
    source::{Ban, SourceKey},
};
use prometheus::{
    Encoder as _, TextEncoder,
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{bans::monotonic_ns, loader::Capacities, pins::PinDir, policy, stats::Snapshot};

/// Where `moat run` serves metrics unless told otherwise. The Prometheus default-port
/// allocations list fills 9100-9999, so moat takes a port outside it that no exporter uses.
pub const DEFAULT_ADDR: &str = "127.0.0.1:10910";

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot serve metrics on {addr}: {message}; pick another with --metrics ADDR:PORT (or --metrics off)"
)]
pub struct MetricsError {
    /// The address asked for.
    pub addr: String,
    /// What went wrong.
    pub message: String,
}

/// What the daemon knows that the maps do not.
#[derive(Debug, Default)]
pub struct DaemonState {
    /// Successful SIGHUP reloads.
    pub reloads_ok: AtomicU64,
    /// Rejected SIGHUP reloads.
    pub reloads_failed: AtomicU64,
    /// The attach mode ("native" or "skb"), set once attached.
    pub mode: Mutex<String>,
    /// How long loading and attaching took, in microseconds.
    pub load_micros: AtomicU64,
    /// Sources with per-source state, as last counted.
    pub tracked_sources: AtomicU64,
    /// Bans in force, as last counted.
    pub banned_sources: AtomicU64,
    /// Whether the two figures above have been counted yet.
    pub tables_counted: AtomicBool,
    /// The CrowdSec bouncer's and pusher's figures (all zero, and not served, when
    /// `[crowdsec]` is off).
    pub crowdsec: Arc<crate::crowdsec::status::Status>,
}

impl DaemonState {
    /// Counts the tables of the filter pinned at `pins` ([`count_tables`]; the ban table's
    /// entries as `bans` gives them, if it does) and records the two figures; returns the bans
    /// in force, or `None` if the tables could not be read.
    pub fn count_tables(
        &self,
        pins: &PinDir,
        bans: Option<Vec<(SourceKey, Ban)>>,
    ) -> Option<Vec<(SourceKey, Ban)>> {
        let (tracked, in_force) = count_tables(pins, bans)?;
        self.tracked_sources.store(tracked, Ordering::Relaxed);
        self.banned_sources
            .store(in_force.len() as u64, Ordering::Relaxed);
        self.tables_counted.store(true, Ordering::Relaxed);
        Some(in_force)
    }
}

/// The sources with per-source state and the bans in force (with their keys) in the filter
/// pinned at `pins`, from the ban table's entries `bans` when the caller has just read them
/// (the housekeeping round's sweep), else from a read of its own. It walks both tables, so the
/// daemon calls it once at start and then at a fixed pace in the background, never per scrape.
pub fn count_tables(
    pins: &PinDir,
    bans: Option<Vec<(SourceKey, Ban)>>,
) -> Option<(u64, Vec<(SourceKey, Ban)>)> {
    let open = |name: &str| MapData::from_pin(pins.map(name)).ok();
    let settings = policy::pinned_settings(pins).ok()?;
    let now = settings.now_ns(monotonic_ns());
    let tracked = crate::sources::tracked(&open(SOURCES)?).ok()?;
    let entries = match bans {
        Some(entries) => entries,
        None => {
            let table: HashMap<MapData, SourceKey, Ban> =
                HashMap::try_from(Map::HashMap(open(BANS)?)).ok()?;
            crate::bans::read_all(&table).ok()?
        }
    };
    let in_force = entries
        .into_iter()
        .filter(|(_, ban)| ban.enforced(now, settings.dry_run()))
        .collect();
    Some((tracked, in_force))
}

/// Records lost because the samples ring was full, summed over CPUs.
pub fn samples_lost(pins: &PinDir) -> Option<u64> {
    let data = MapData::from_pin(pins.map(SAMPLES_LOST)).ok()?;
    let lost: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(data)).ok()?;
    lost.get(&0, 0).ok().map(|values| values.iter().sum())
}

/// Reads everything a scrape reports.
#[derive(Debug)]
struct MoatCollector {
    iface: String,
    pins: PinDir,
    capacities: Capacities,
    state: Arc<DaemonState>,
}

/// One sample: its labels beyond `iface`, and its value.
type Sample<'a> = (Vec<(&'a str, &'a str)>, f64);

impl MoatCollector {
    /// A metric family whose every sample carries the `iface` label.
    fn family(
        &self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: Vec<Sample<'_>>,
    ) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        for (extra, value) in samples {
            let mut labels = vec![label("iface", &self.iface)];
            labels.extend(extra.into_iter().map(|(name, value)| label(name, value)));
            let mut metric = Metric::from_label(labels);
            if kind == MetricType::COUNTER {
                let mut counter = Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            } else {
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
            family.mut_metric().push(metric);
        }
        family
    }

    /// Tracked sources and active bans (as last counted) and bans issued per reason.
    fn read_tables(&self) -> Option<(u64, u64, [u64; Reason::COUNT])> {
        if !self.state.tables_counted.load(Ordering::Relaxed) {
            return None;
        }
        let tracked = self.state.tracked_sources.load(Ordering::Relaxed);
        let banned = self.state.banned_sources.load(Ordering::Relaxed);
        let data = MapData::from_pin(self.pins.map(BAN_EVENTS)).ok()?;
        let events: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(data)).ok()?;
        let mut issued = [0u64; Reason::COUNT];
        for reason in Reason::ALL {
            issued[reason as usize] = events
                .get(&(reason as u32), 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0);
        }
        Some((tracked, banned, issued))
    }

    /// Every metric family, read now.
    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        if let Ok(snapshot) = Snapshot::read_pinned(&self.iface) {
            let mut packets = Vec::new();
            let mut bytes = Vec::new();
            for reason in Reason::ALL {
                // Only the verdicts this reason can carry: a passing reason never drops.
                let enforced = decide(reason, false);
                let dry_run = decide(reason, true);
                let verdicts = if enforced == dry_run {
                    vec![enforced]
                } else {
                    vec![enforced, dry_run]
                };
                for verdict in verdicts {
                    let value = snapshot.get(verdict, reason);
                    let labels = vec![("verdict", verdict.label()), ("reason", reason.label())];
                    packets.push((labels.clone(), value.packets as f64));
                    bytes.push((labels, value.bytes as f64));
                }
            }
            families.push(self.family(
                "moat_packets_total",
                "Frames the XDP filter judged, by verdict and reason.",
                MetricType::COUNTER,
                packets,
            ));
            families.push(self.family(
                "moat_bytes_total",
                "Bytes of the frames the XDP filter judged, by verdict and reason.",
                MetricType::COUNTER,
                bytes,
            ));
        }
        if let Some((tracked, banned, issued)) = self.read_tables() {
            let one = |value: f64| vec![(Vec::new(), value)];
            families.push(self.family(
                "moat_tracked_sources",
                "Sources with per-source rate state.",
                MetricType::GAUGE,
                one(tracked as f64),
            ));
            families.push(self.family(
                "moat_tracked_sources_capacity",
                "Sources the per-source rate table is sized for (max_tracked_sources; it has twice as many ways).",
                MetricType::GAUGE,
                one(f64::from(self.capacities.sources)),
            ));
            families.push(self.family(
                "moat_banned_sources",
                "Sources banned right now.",
                MetricType::GAUGE,
                one(banned as f64),
            ));
            families.push(self.family(
                "moat_bans_capacity",
                "Capacity of the ban table (max_bans).",
                MetricType::GAUGE,
                one(f64::from(self.capacities.bans)),
            ));
            let reasons = [
                Reason::RateSyn,
                Reason::RateUdp,
                Reason::RateIcmp,
                Reason::RateOther,
                Reason::Banned,
            ];
            families.push(self.family(
                "moat_bans_total",
                "Bans issued: automatic ones by the rate reason that earned them, manual ones as banned.",
                MetricType::COUNTER,
                reasons
                    .into_iter()
                    .map(|reason| (vec![("reason", reason.label())], issued[reason as usize] as f64))
                    .collect(),
            ));
        }
        if let Some(lost) = samples_lost(&self.pins) {
            families.push(self.family(
                "moat_samples_lost_total",
                "Samples and ban events the program could not write because the ring was full.",
                MetricType::COUNTER,
                vec![(Vec::new(), lost as f64)],
            ));
        }
        families.push(self.family(
            "moat_config_reloads_total",
            "SIGHUP configuration reloads, by result.",
            MetricType::COUNTER,
            vec![
                (
                    vec![("result", "success")],
                    self.state.reloads_ok.load(Ordering::Relaxed) as f64,
                ),
                (
                    vec![("result", "failure")],
                    self.state.reloads_failed.load(Ordering::Relaxed) as f64,
                ),
            ],
        ));
        let mode = self
            .state
            .mode
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        // Attach facts only once attached (the server starts just before).
        if !mode.is_empty() {
            families.push(self.family(
                "moat_attach_mode",
                "1 for the mode the XDP program is attached in.",
                MetricType::GAUGE,
                vec![(vec![("mode", mode.as_str())], 1.0)],
            ));
            families.push(self.family(
                "moat_program_load_seconds",
                "Time it took to load, verify and attach the XDP program.",
                MetricType::GAUGE,
                vec![(
                    Vec::new(),
                    self.state.load_micros.load(Ordering::Relaxed) as f64 / 1e6,
                )],
            ));
        }
        if self.state.crowdsec.enabled.load(Ordering::Relaxed) {
            families.extend(self.crowdsec());
        }
        families.push(self.family(
            "moat_build_info",
            "Always 1; labels carry the moat version.",
            MetricType::GAUGE,
            vec![(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        ));
        families
    }
}

impl MoatCollector {
    /// The CrowdSec bouncer's and pusher's figures.
    fn crowdsec(&self) -> Vec<MetricFamily> {
        let status = self.state.crowdsec.snapshot();
        let one = |value: f64| vec![(Vec::new(), value)];
        let active: Vec<(String, String, u64)> = status
            .active
            .iter()
            .map(|(key, count)| {
                let (origin, scope) = key.rsplit_once('/').unwrap_or((key.as_str(), ""));
                (origin.to_string(), scope.to_string(), *count)
            })
            .collect();
        vec![
            self.family(
                "moat_crowdsec_lapi_up",
                "1 if the last pull of the CrowdSec LAPI's decision stream succeeded.",
                MetricType::GAUGE,
                one(if status.reachable { 1.0 } else { 0.0 }),
            ),
            self.family(
                "moat_crowdsec_last_pull_timestamp_seconds",
                "Unix time of the last successful pull (0: none yet).",
                MetricType::GAUGE,
                one(status.last_pull_unix_ms as f64 / 1e3),
            ),
            self.family(
                "moat_crowdsec_pulls_total",
                "Pulls of the decision stream, by result.",
                MetricType::COUNTER,
                vec![
                    (vec![("result", "success")], status.pulls as f64),
                    (vec![("result", "failure")], status.pull_errors as f64),
                ],
            ),
            self.family(
                "moat_crowdsec_decisions_active",
                "CrowdSec ban decisions enforced, by origin and scope.",
                MetricType::GAUGE,
                active
                    .iter()
                    .map(|(origin, scope, count)| {
                        (
                            vec![("origin", origin.as_str()), ("scope", scope.as_str())],
                            *count as f64,
                        )
                    })
                    .collect(),
            ),
            self.family(
                "moat_crowdsec_decisions_applied_total",
                "Decisions taken on from the stream.",
                MetricType::COUNTER,
                one(status.applied as f64),
            ),
            self.family(
                "moat_crowdsec_decisions_removed_total",
                "Decisions ended: deleted in the LAPI, expired, or absent from a full pull.",
                MetricType::COUNTER,
                one(status.removed as f64),
            ),
            self.family(
                "moat_crowdsec_decisions_ignored_total",
                "Decisions not enforced (types other than ban, scopes other than Ip and Range).",
                MetricType::COUNTER,
                status
                    .ignored
                    .iter()
                    .map(|(kind, count)| (vec![("kind", kind.as_str())], *count as f64))
                    .collect(),
            ),
            self.family(
                "moat_crowdsec_alerts_total",
                "moat's bans as alerts for the LAPI, by result: pushed (manual bans), failed, \
                 withheld (the program's bans, whose traffic anyone could send in the source's \
                 name, are not shared), or retracted (a pushed ban lifted early, its decision \
                 deleted).",
                MetricType::COUNTER,
                vec![
                    (vec![("result", "pushed")], status.alerts_pushed as f64),
                    (vec![("result", "failed")], status.alerts_failed as f64),
                    (vec![("result", "withheld")], status.alerts_withheld as f64),
                    (
                        vec![("result", "retracted")],
                        status.alerts_retracted as f64,
                    ),
                ],
            ),
        ]
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

/// The metrics text (Prometheus text format 0.0.4) for the filter on `iface`, or why it could
/// not be encoded.
pub fn render(
    iface: &str,
    capacities: Capacities,
    state: Arc<DaemonState>,
) -> Result<String, prometheus::Error> {
    let collector = MoatCollector {
        iface: iface.to_string(),
        pins: PinDir::for_iface(iface),
        capacities,
        state,
    };
    encode(collector.collect()).map_err(|error| {
        log::warn!("encoding metrics failed iface={iface} error={error}");
        error
    })
}

/// The text exposition of `families`, leaving out those with no sample (a family of labelled
/// series none of which exists yet, such as CrowdSec's ignored decisions before the first one):
/// the encoder refuses an empty family, and would stop the whole page there.
fn encode(families: Vec<MetricFamily>) -> Result<String, prometheus::Error> {
    let families: Vec<MetricFamily> = families
        .into_iter()
        .filter(|family| !family.get_metric().is_empty())
        .collect();
    let mut text = Vec::new();
    TextEncoder::new().encode(&families, &mut text)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The metrics listener, bound before the filter attaches (a taken port is a bad argument).
pub struct MetricsServer {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

/// Longest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST: usize = 8192;

/// How long one connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl MetricsServer {
    /// Binds `addr`.
    pub fn bind(addr: &str) -> Result<MetricsServer, MetricsError> {
        let error = |message: String| MetricsError {
            addr: addr.to_string(),
            message,
        };
        let socket: SocketAddr = addr
            .parse()
            .map_err(|_| error("expected ADDR:PORT, e.g. 127.0.0.1:10910 or [::1]:10910".into()))?;
        let listener = std::net::TcpListener::bind(socket).map_err(|e| error(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| error(e.to_string()))?;
        let addr = listener.local_addr().map_err(|e| error(e.to_string()))?;
        Ok(MetricsServer { listener, addr })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `/metrics` for `iface` until the task is dropped; each connection is its own
    /// task, so a slow client never holds up another.
    pub async fn serve(self, iface: String, capacities: Capacities, state: Arc<DaemonState>) {
        let listener = match tokio::net::TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(error) => {
                log::error!("metrics server failed addr={} error={error}", self.addr);
                return;
            }
        };
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    log::warn!("metrics server error={error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let iface = iface.clone();
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                if let Err(error) = respond(stream, &iface, capacities, state).await {
                    log::debug!("metrics response failed error={error}");
                }
            });
        }
    }
}

/// Reads one request and answers it; the connection then closes.
async fn respond(
    mut stream: tokio::net::TcpStream,
    iface: &str,
    capacities: Capacities,
    state: Arc<DaemonState>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..n]);
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            match render(iface, capacities, state) {
                Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
                // A failed scrape, not a page cut short that looks whole to Prometheus.
                Err(error) => (
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    format!("encoding the metrics failed: {error}\n"),
                ),
            }
        } else {
            (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "moat serves /metrics\n".to_string(),
            )
        };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
