//! What an attack looks like right now: drop and pass rates per reason (from two counter
//! snapshots), the top sources, /24 (IPv4) and /48 (IPv6) prefixes and destination ports among
//! sampled dropped packets, and the bans in force. `moat top` redraws it in place; `moat stats`
//! prints one frame.
//!
//! Samples come from the `SAMPLES` ring buffer, one dropped packet in `sample_every`. The
//! daemon drains the ring continuously (so it never fills with hours-old samples), keeps the
//! last [`SAMPLE_WINDOW`] and publishes its rankings once a second to `/run/moat/IFACE.top.json`,
//! which `moat stats` and `moat top` read. With no daemon (a filter whose daemon died) they
//! drain the ring themselves.

use std::{
    collections::{HashMap, VecDeque},
    io::{IsTerminal as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, RingBuf};
use filter_common::{
    Reason, Verdict,
    maps::SAMPLES,
    sample::{SAMPLE_BAN, Sample},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    bans::{BanView, PinnedBans},
    metrics::samples_lost,
    pins::LOCK_DIR,
    pins::PinDir,
    policy,
    stats::{Snapshot, StatsError},
};

/// Most samples the daemon's window holds, whatever the drop rate.
pub const WINDOW_CAPACITY: usize = 200_000;

/// How old the daemon's published rankings may be before a viewer reads the ring itself.
const DIGEST_FRESH: Duration = Duration::from_secs(5);

/// One record read from the `SAMPLES` ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// A sampled dropped packet.
    Sample(Sample),
    /// The packet on which the program banned its source.
    Ban(Sample),
}

/// Decodes a ring record; `None` for a size moat never writes.
pub fn decode(bytes: &[u8]) -> Option<Record> {
    if bytes.len() != std::mem::size_of::<Sample>() {
        return None;
    }
    // SAFETY: the program writes whole `Sample`s of exactly this size; read_unaligned copes
    // with any alignment, and every bit pattern is a valid `Sample`.
    let sample = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Sample>()) };
    Some(if sample.kind == SAMPLE_BAN {
        Record::Ban(sample)
    } else {
        Record::Sample(sample)
    })
}

/// The daemon's window of recent samples.
#[derive(Debug, Default)]
pub struct SampleWindow {
    window: VecDeque<(Instant, Sample)>,
}

impl SampleWindow {
    /// Adds a sample taken now; past [`WINDOW_CAPACITY`], the oldest goes.
    pub fn push(&mut self, sample: Sample) {
        if self.window.len() >= WINDOW_CAPACITY {
            self.window.pop_front();
        }
        self.window.push_back((Instant::now(), sample));
    }

    /// Forgets samples older than [`SAMPLE_WINDOW`] and ranks the rest.
    pub fn tally(&mut self) -> Tally {
        let now = Instant::now();
        while self
            .window
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > SAMPLE_WINDOW)
        {
            self.window.pop_front();
        }
        let mut tally = Tally::default();
        for (_, sample) in &self.window {
            tally.add(sample);
        }
        tally.digest()
    }

    /// Publishes the rankings of `iface` for viewers, atomically (write, then rename).
    pub fn publish(&mut self, iface: &str) -> std::io::Result<()> {
        let digest = Digest {
            written_unix_ms: crate::state::unix_ms_now(),
            tally: self.tally(),
        };
        crate::atomicfile::replace(&digest_path(iface), &serde_json::to_vec(&digest)?)
    }
}

/// Where the daemon publishes the rankings of `iface`.
pub fn digest_path(iface: &str) -> std::path::PathBuf {
    std::path::Path::new(LOCK_DIR).join(format!("{iface}.top.json"))
}

/// The rankings the daemon publishes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Digest {
    /// When, in ms since the Unix epoch.
    pub written_unix_ms: u64,
    /// The top rows of the last [`SAMPLE_WINDOW`].
    pub tally: Tally,
}

/// The daemon's rankings of `iface`, if it published them within [`DIGEST_FRESH`].
fn fresh_digest(iface: &str) -> Option<Tally> {
    let digest: Digest = serde_json::from_slice(&std::fs::read(digest_path(iface)).ok()?).ok()?;
    let age = crate::state::unix_ms_now().saturating_sub(digest.written_unix_ms);
    (age <= DIGEST_FRESH.as_millis() as u64).then_some(digest.tally)
}

/// How many rows each ranking shows.
pub const TOP_ROWS: usize = 10;

/// How long samples count towards the rankings in `moat top`.
pub const SAMPLE_WINDOW: Duration = Duration::from_secs(10);

/// Packets and bytes per second of one `(verdict, reason)` pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// The verdict.
    pub verdict: Verdict,
    /// The reason.
    pub reason: Reason,
    /// Packets per second.
    pub pps: f64,
    /// Bytes per second.
    pub bytes_per_second: f64,
}

impl Rate {
    /// The rate as `moat stats --json` gives it: `pps` in packets and `bps` in bits per second,
    /// the unit of the text table's BITS/S column.
    pub fn to_json(&self) -> Value {
        json!({
            "verdict": self.verdict.label(),
            "reason": self.reason.label(),
            "pps": self.pps,
            "bps": self.bytes_per_second * 8.0,
        })
    }
}

/// The rates between two snapshots taken `elapsed` apart, non-zero pairs only.
pub fn rates(before: &Snapshot, after: &Snapshot, elapsed: Duration) -> Vec<Rate> {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let mut rates = Vec::new();
    for verdict in Verdict::ALL {
        for reason in Reason::ALL {
            let a = before.get(verdict, reason);
            let b = after.get(verdict, reason);
            let packets = b.packets.saturating_sub(a.packets);
            if packets != 0 {
                rates.push(Rate {
                    verdict,
                    reason,
                    pps: packets as f64 / seconds,
                    bytes_per_second: b.bytes.saturating_sub(a.bytes) as f64 / seconds,
                });
            }
        }
    }
    rates
}

/// Counts of sampled dropped packets by source, prefix and destination port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Samples counted.
    pub samples: u64,
    sources: HashMap<String, u64>,
    prefixes: HashMap<String, u64>,
    ports: HashMap<String, u64>,
}

impl Tally {
    /// Counts one sample.
    pub fn add(&mut self, sample: &Sample) {
        self.samples += 1;
        let (source, prefix) = match sample.ip_version {
            4 => {
                let mut octets = [0u8; 4];
                octets.copy_from_slice(&sample.src_addr_be[..4]);
                let [a, b, c, _] = octets;
                (
                    Ipv4Addr::from(octets).to_string(),
                    format!("{}/24", Ipv4Addr::new(a, b, c, 0)),
                )
            }
            6 => {
                let mut masked = sample.src_addr_be;
                masked[6..].fill(0);
                (
                    Ipv6Addr::from(sample.src_addr_be).to_string(),
                    format!("{}/48", Ipv6Addr::from(masked)),
                )
            }
            _ => ("(unparsed)".to_string(), "(unparsed)".to_string()),
        };
        *self.sources.entry(source).or_default() += 1;
        *self.prefixes.entry(prefix).or_default() += 1;
        let port = match sample.l4_proto {
            // Port 0 means the transport header was never parsed (a malformed packet).
            6 | 17 if sample.dst_port == 0 => {
                format!(
                    "{} (no port)",
                    if sample.l4_proto == 6 { "tcp" } else { "udp" }
                )
            }
            6 => format!("tcp/{}", sample.dst_port),
            17 => format!("udp/{}", sample.dst_port),
            1 | 58 => "icmp".to_string(),
            0 => "(unparsed)".to_string(),
            other => format!("proto {other}"),
        };
        *self.ports.entry(port).or_default() += 1;
    }

    /// The same tally cut to its top rows (what a frame shows), small enough to publish.
    pub fn digest(&self) -> Tally {
        let keep = |map: &HashMap<String, u64>| Tally::top(map).into_iter().collect();
        Tally {
            samples: self.samples,
            sources: keep(&self.sources),
            prefixes: keep(&self.prefixes),
            ports: keep(&self.ports),
        }
    }

    fn top(map: &HashMap<String, u64>) -> Vec<(String, u64)> {
        let mut rows: Vec<(String, u64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(TOP_ROWS);
        rows
    }

    /// The sources with the most sampled drops.
    pub fn top_sources(&self) -> Vec<(String, u64)> {
        Tally::top(&self.sources)
    }

    /// The /24 and /48 prefixes with the most sampled drops.
    pub fn top_prefixes(&self) -> Vec<(String, u64)> {
        Tally::top(&self.prefixes)
    }

    /// The destination ports with the most sampled drops.
    pub fn top_ports(&self) -> Vec<(String, u64)> {
        Tally::top(&self.ports)
    }
}

/// A reader of the filter running on one interface.
pub struct Viewer {
    iface: String,
    samples: RingBuf<MapData>,
    window: VecDeque<(Instant, Sample)>,
}

/// One screen's worth of facts.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The interface.
    pub iface: String,
    /// Cumulative counters.
    pub counters: Snapshot,
    /// Rates since the previous frame, if there was one.
    pub rates: Option<Vec<Rate>>,
    /// Sampled drops in the sample window.
    pub tally: Tally,
    /// One sample stands for this many drops.
    pub sample_every: u32,
    /// Bans in force.
    pub bans: Vec<BanView>,
    /// Samples and ban events lost to a full ring since the filter was loaded.
    pub samples_lost: u64,
    /// The CrowdSec figures the daemon published, when it runs a bouncer.
    pub crowdsec: Option<crate::crowdsec::status::Snapshot>,
}

impl Viewer {
    /// Opens the pins of the filter running on `iface`.
    pub fn open(iface: &str) -> anyhow::Result<Viewer> {
        let pins = PinDir::for_iface(iface);
        let path = pins.running_map(iface, SAMPLES).map_err(StatsError::from)?;
        let data = MapData::from_pin(&path)?;
        Ok(Viewer {
            iface: iface.to_string(),
            samples: RingBuf::try_from(Map::RingBuf(data))?,
            window: VecDeque::new(),
        })
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> Result<Snapshot, StatsError> {
        Snapshot::read_pinned(&self.iface)
    }

    /// Drains new samples into the window and forgets those older than `keep`.
    fn drain(&mut self, keep: Duration) {
        let now = Instant::now();
        while let Some(item) = self.samples.next() {
            if let Some(Record::Sample(sample)) = decode(&item) {
                self.window.push_back((now, sample));
            }
        }
        while self
            .window
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > keep)
        {
            self.window.pop_front();
        }
    }

    /// A frame: counters now, rates against `previous` taken `elapsed` ago, samples from the
    /// last `keep`, and the bans in force.
    pub fn frame(
        &mut self,
        previous: Option<(&Snapshot, Duration)>,
        keep: Duration,
    ) -> anyhow::Result<Frame> {
        let counters = self.snapshot()?;
        let pins = PinDir::for_iface(&self.iface);
        let tally = match fresh_digest(&self.iface) {
            Some(tally) => tally,
            None => {
                self.drain(keep);
                let mut tally = Tally::default();
                for (_, sample) in &self.window {
                    tally.add(sample);
                }
                tally
            }
        };
        let sample_every = policy::pinned_settings(&pins)
            .map(|s| s.sample_every)
            .unwrap_or(0);
        Ok(Frame {
            iface: self.iface.clone(),
            rates: previous.map(|(before, elapsed)| rates(before, &counters, elapsed)),
            counters,
            tally,
            sample_every,
            bans: PinnedBans::open(&self.iface)?.active()?,
            samples_lost: samples_lost(&pins).unwrap_or(0),
            crowdsec: crate::crowdsec::status::read(&self.iface),
        })
    }
}

impl Frame {
    /// The frame as text, for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = self.counters.to_table(&self.iface);
        if let Some(rates) = &self.rates {
            out.push_str(&format!(
                "\n{:<11} {:<12} {:>14} {:>16}\n",
                "VERDICT", "REASON", "PACKETS/S", "BITS/S"
            ));
            if rates.is_empty() {
                out.push_str("(no traffic)\n");
            }
            for rate in rates {
                out.push_str(&format!(
                    "{:<11} {:<12} {:>14.0} {:>16.0}\n",
                    rate.verdict.label(),
                    rate.reason.label(),
                    rate.pps,
                    rate.bytes_per_second * 8.0
                ));
            }
        }
        let scale = u64::from(self.sample_every.max(1));
        let section = |out: &mut String, title: &str, rows: Vec<(String, u64)>| {
            out.push_str(&format!("\n{title:<44} {:>14}\n", "~DROPPED"));
            if rows.is_empty() {
                out.push_str("(no samples)\n");
            }
            for (name, count) in rows {
                out.push_str(&format!("{name:<44} {:>14}\n", count * scale));
            }
        };
        section(&mut out, "TOP SOURCES", self.tally.top_sources());
        section(
            &mut out,
            "TOP PREFIXES (/24, /48)",
            self.tally.top_prefixes(),
        );
        section(&mut out, "TOP DESTINATION PORTS", self.tally.top_ports());
        if self.samples_lost != 0 {
            out.push_str(&format!(
                "(samples lost to a full ring: {})\n",
                self.samples_lost
            ));
        }
        out.push('\n');
        out.push_str(&crate::bans::render(&self.bans));
        if let Some(crowdsec) = &self.crowdsec {
            out.push('\n');
            out.push_str(&crowdsec_text(crowdsec));
        }
        out
    }

    /// The frame as JSON: the counters of [`Snapshot::to_json`] plus `rates`, `top_sources`,
    /// `top_prefixes`, `top_ports` (sampled drops scaled by `sample_every`) and `bans`.
    pub fn to_json(&self) -> Value {
        let mut value = self.counters.to_json(&self.iface);
        let scale = u64::from(self.sample_every.max(1));
        let rows = |rows: Vec<(String, u64)>| -> Value {
            rows.into_iter()
                .map(|(name, count)| json!({"name": name, "samples": count, "estimated": count * scale}))
                .collect()
        };
        if let Value::Object(map) = &mut value {
            map.insert(
                "rates".into(),
                self.rates.as_ref().map_or(Value::Null, |rates| {
                    rates.iter().map(Rate::to_json).collect()
                }),
            );
            map.insert("sample_every".into(), json!(self.sample_every));
            map.insert("samples_lost".into(), json!(self.samples_lost));
            map.insert("top_sources".into(), rows(self.tally.top_sources()));
            map.insert("top_prefixes".into(), rows(self.tally.top_prefixes()));
            map.insert("top_ports".into(), rows(self.tally.top_ports()));
            map.insert(
                "crowdsec".into(),
                self.crowdsec
                    .as_ref()
                    .and_then(|crowdsec| serde_json::to_value(crowdsec).ok())
                    .unwrap_or(Value::Null),
            );
            map.insert(
                "bans".into(),
                self.bans
                    .iter()
                    .map(|ban| {
                        json!({"source": ban.source, "remaining_s": ban.remaining.as_secs(), "reason": ban.reason, "offences": ban.offences})
                    })
                    .collect(),
            );
        }
        value
    }
}

/// The CrowdSec section of a frame: the LAPI's state, the decisions in force by origin and
/// scope, and what was applied, ignored and pushed.
fn crowdsec_text(status: &crate::crowdsec::status::Snapshot) -> String {
    let last = if status.last_pull_unix_ms == 0 {
        "never".to_string()
    } else {
        let ago = crate::state::unix_ms_now().saturating_sub(status.last_pull_unix_ms) / 1000;
        format!("{ago}s ago")
    };
    let mut out = format!(
        "CROWDSEC  LAPI {}, last pull {last}, pulls {} ok / {} failed\n",
        if status.reachable {
            "reachable"
        } else {
            "UNREACHABLE"
        },
        status.pulls,
        status.pull_errors
    );
    out.push_str(&format!(
        "decisions in force {} (applied {}, removed {}, ignored {})\n",
        status.active_total(),
        status.applied,
        status.removed,
        status.ignored.values().sum::<u64>()
    ));
    for (origin_scope, count) in &status.active {
        out.push_str(&format!("  {origin_scope:<42} {count:>14}\n"));
    }
    out.push_str(&format!(
        "alerts pushed {}, failed {}, withheld {}, retracted {}\n",
        status.alerts_pushed, status.alerts_failed, status.alerts_withheld, status.alerts_retracted
    ));
    out
}

/// `moat stats`: one frame, with rates measured over `window` (none if zero).
pub fn stats(iface: &str, window: Duration, as_json: bool) -> anyhow::Result<()> {
    let mut viewer = Viewer::open(iface)?;
    let previous = if window.is_zero() {
        None
    } else {
        let before = viewer.snapshot()?;
        std::thread::sleep(window);
        Some(before)
    };
    let frame = viewer.frame(previous.as_ref().map(|b| (b, window)), SAMPLE_WINDOW)?;
    let text = if as_json {
        format!("{}\n", frame.to_json())
    } else {
        frame.to_text()
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// `moat top`: redraws a frame every `interval` until Ctrl-C, or `count` frames.
pub fn top(iface: &str, interval: Duration, count: Option<u64>) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let interactive = std::io::stdout().is_terminal();
    let mut viewer = Viewer::open(iface)?;
    let mut previous = (viewer.snapshot()?, Instant::now());
    let mut shown = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && count.is_none_or(|n| shown < n) {
        std::thread::sleep(interval);
        let elapsed = previous.1.elapsed();
        let frame = viewer.frame(Some((&previous.0, elapsed)), SAMPLE_WINDOW)?;
        let mut text = String::new();
        if interactive {
            // Home and clear, so the view refreshes in place like top(1).
            text.push_str("\x1b[H\x1b[2J");
        }
        text.push_str(&format!(
            "moat top — {iface} — every {}s, Ctrl-C quits\n",
            interval.as_secs_f64()
        ));
        text.push_str(&frame.to_text());
        std::io::stdout().write_all(text.as_bytes())?;
        std::io::stdout().flush()?;
        previous = (frame.counters, Instant::now());
        shown += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(addr: [u8; 4], port: u16) -> Sample {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&addr);
        Sample {
            src_addr_be: src,
            dst_port: port,
            ip_version: 4,
            l4_proto: 17,
            ..Sample::default()
        }
    }

    #[test]
    fn json_rates_are_in_packets_and_bits_per_second() {
        let rate = Rate {
            verdict: Verdict::Drop,
            reason: Reason::PortClosed,
            pps: 2000.0,
            bytes_per_second: 148_000.0,
        };
        let json = rate.to_json();
        assert_eq!(json["pps"], 2000.0);
        assert_eq!(json["bps"], 1_184_000.0, "bits, as the text table's BITS/S");
        assert_eq!(json["reason"], "port_closed");
    }

    #[test]
    fn tally_ranks_sources_prefixes_and_ports() {
        let mut tally = Tally::default();
        for _ in 0..3 {
            tally.add(&sample([192, 0, 2, 1], 53));
        }
        tally.add(&sample([192, 0, 2, 9], 443));
        tally.add(&sample([198, 51, 100, 7], 53));
        assert_eq!(tally.samples, 5);
        assert_eq!(tally.top_sources()[0], ("192.0.2.1".to_string(), 3));
        assert_eq!(tally.top_prefixes()[0], ("192.0.2.0/24".to_string(), 4));
        assert_eq!(tally.top_ports()[0], ("udp/53".to_string(), 4));
        let mut v6 = Sample {
            ip_version: 6,
            l4_proto: 6,
            dst_port: 80,
            ..Sample::default()
        };
        v6.src_addr_be = "2001:db8:aa:bb::1".parse::<Ipv6Addr>().unwrap().octets();
        tally.add(&v6);
        assert!(
            tally
                .top_prefixes()
                .contains(&("2001:db8:aa::/48".to_string(), 1))
        );
    }
}
