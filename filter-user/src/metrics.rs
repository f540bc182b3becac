//! Prometheus metrics: a collector that reads the pinned maps on every scrape (so packet
//! counters come straight from the per-CPU kernel counters and never go backwards, even across
//! a daemon restart), plus the daemon's own state, served at `/metrics` by a small HTTP server.
//!
//! It serves nothing else and keeps no history; rates are Prometheus's job.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use filter_common::{
    Reason, Settings, decide,
    maps::{BAN_EVENTS, BANS, SETTINGS, SOURCES},
    rate::RateState,
    source::{Ban, SourceKey},
};
use prometheus::{
    Encoder as _, TextEncoder,
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

use crate::{bans::monotonic_ns, loader::Capacities, pins::PinDir, stats::Snapshot};

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

    /// Tracked sources, active bans and bans issued per reason, read from the pins.
    fn read_tables(&self) -> Option<(u64, u64, [u64; Reason::COUNT])> {
        let open = |name: &str| MapData::from_pin(self.pins.map(name)).ok();
        let settings: Array<MapData, Settings> =
            Array::try_from(Map::Array(open(SETTINGS)?)).ok()?;
        let now = settings.get(&0, 0).ok()?.now_ns(monotonic_ns());
        let sources: HashMap<MapData, SourceKey, RateState> =
            HashMap::try_from(Map::LruHashMap(open(SOURCES)?)).ok()?;
        let tracked = sources.keys().filter(Result::is_ok).count() as u64;
        let bans: HashMap<MapData, SourceKey, Ban> =
            HashMap::try_from(Map::LruHashMap(open(BANS)?)).ok()?;
        let banned = bans
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, ban)| ban.active(now))
            .count() as u64;
        let events: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(open(BAN_EVENTS)?)).ok()?;
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
                "Capacity of the per-source rate table (max_tracked_sources).",
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
        families.push(self.family(
            "moat_build_info",
            "Always 1; labels carry the moat version.",
            MetricType::GAUGE,
            vec![(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        ));
        families
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

/// The metrics text (Prometheus text format 0.0.4) for the filter on `iface`.
pub fn render(iface: &str, capacities: Capacities, state: Arc<DaemonState>) -> String {
    let collector = MoatCollector {
        iface: iface.to_string(),
        pins: PinDir::for_iface(iface),
        capacities,
        state,
    };
    let mut text = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&collector.collect(), &mut text) {
        log::warn!("encoding metrics failed iface={iface} error={error}");
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// A running metrics server; dropping it stops the server.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and serves `/metrics` for `iface` on a thread.
    pub fn start(
        addr: &str,
        iface: &str,
        capacities: Capacities,
        state: Arc<DaemonState>,
    ) -> Result<MetricsServer, MetricsError> {
        let error = |message: String| MetricsError {
            addr: addr.to_string(),
            message,
        };
        let socket: SocketAddr = addr
            .parse()
            .map_err(|_| error("expected ADDR:PORT, e.g. 127.0.0.1:10910 or [::1]:10910".into()))?;
        let server = tiny_http::Server::http(socket).map_err(|e| error(e.to_string()))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| error("not an IP listener".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let iface = iface.to_string();
            std::thread::Builder::new()
                .name("metrics".into())
                .spawn(move || serve(&server, &stop, &iface, capacities, &state))
                .map_err(|e| error(e.to_string()))?
        };
        Ok(MetricsServer {
            stop,
            thread: Some(thread),
            addr: bound,
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    server: &tiny_http::Server,
    stop: &AtomicBool,
    iface: &str,
    capacities: Capacities,
    state: &Arc<DaemonState>,
) {
    while !stop.load(Ordering::Relaxed) {
        let request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(error) => {
                log::warn!("metrics server error={error}");
                continue;
            }
        };
        let response = if request.url() == "/metrics" || request.url().starts_with("/metrics?") {
            let body = render(iface, capacities, Arc::clone(state));
            tiny_http::Response::from_string(body)
                .with_header(content_type("text/plain; version=0.0.4; charset=utf-8"))
        } else {
            tiny_http::Response::from_string("moat serves /metrics\n")
                .with_status_code(404)
                .with_header(content_type("text/plain; charset=utf-8"))
        };
        if let Err(error) = request.respond(response) {
            log::debug!("metrics response failed error={error}");
        }
    }
}

fn content_type(value: &str) -> tiny_http::Header {
    // A constant ASCII header always parses.
    tiny_http::Header::from_bytes("Content-Type", value).unwrap_or_else(|()| {
        tiny_http::Header::from_bytes("Content-Type", "text/plain").expect("ASCII header")
    })
}
