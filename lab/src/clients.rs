//! Legitimate visitors: a pool of returning users in the clients namespace, each with its own
//! address, making HTTP requests to the origin at a steady rate, each with a timeout; and
//! first-time visitors, each from a fresh address making one request. Both record success and
//! latency. Addresses and routes are the topology's business, not this module's.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    origin::{HTTP_PORT, PAGE},
    topology::{ORIGIN_IPV4, client_address},
};
use moat::netns::NetNs;

/// How long a visitor waits for a whole answer before counting the request as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a first-time visitor waits for the page: one request, no retry of its own (TCP
/// still retransmits its SYN within this time, at 1 s and 3 s).
pub const NEWCOMER_TIMEOUT: Duration = Duration::from_secs(3);

/// First-time visitors per second.
pub const NEWCOMER_RATE: f64 = 30.0;

/// One request's outcome.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// When it started, since the pool started.
    pub at: Duration,
    /// Whether the page came back whole within the timeout.
    pub ok: bool,
    /// How long it took.
    pub latency: Duration,
}

/// A running pool; stop it to get every outcome.
pub struct Pool {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    started: Instant,
}

impl Pool {
    /// Starts `users` visitors in `ns`, together making `rate` requests per second.
    pub fn start(ns: &NetNs, users: u8, rate: f64) -> std::io::Result<Pool> {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let interval = Duration::from_secs_f64(f64::from(users.max(1)) / rate.max(0.1));
        let netns = std::fs::File::open(ns.path())?;
        let mut threads = Vec::new();
        for user in 0..users {
            let stop = Arc::clone(&stop);
            let outcomes = Arc::clone(&outcomes);
            let netns = netns.try_clone()?;
            // Spread the users over the interval so requests arrive evenly.
            let offset = interval.mul_f64(f64::from(user) / f64::from(users.max(1)));
            threads.push(std::thread::spawn(move || {
                use std::os::fd::AsRawFd as _;
                // SAFETY: `netns` is an open namespace handle; setns changes only this thread.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return;
                }
                let source = client_address(user);
                let mut next = started + offset;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    // Timed from when the request was due, not from when a user busy with
                    // its last one got to it: a slow origin cannot hide its delays by slowing
                    // down the visitors (no coordinated omission).
                    let due = next;
                    next += interval;
                    let ok = request(source, REQUEST_TIMEOUT).unwrap_or(false);
                    let outcome = Outcome {
                        at: due.duration_since(started),
                        ok,
                        latency: due.elapsed(),
                    };
                    if let Ok(mut all) = outcomes.lock() {
                        all.push(outcome);
                    }
                }
            }));
        }
        Ok(Pool {
            stop,
            threads,
            outcomes,
            started,
        })
    }

    /// When the pool started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The outcomes so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Stops the visitors (each finishes its request) and returns every outcome.
    pub fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        self.outcomes.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// A running stream of first-time visitors, each making one request from a fresh address; stop
/// it to get every outcome.
pub struct Newcomers {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
}

impl Newcomers {
    /// Starts first-time visitors from `addresses` in `ns` at `rate` per second, one each,
    /// until the addresses run out or [`Newcomers::stop`]; outcomes are timed from `since`.
    pub fn start(
        ns: &NetNs,
        addresses: Vec<Ipv4Addr>,
        rate: f64,
        since: Instant,
    ) -> std::io::Result<Newcomers> {
        let netns = std::fs::File::open(ns.path())?;
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, outcomes) = (Arc::clone(&stop), Arc::clone(&outcomes));
            std::thread::spawn(move || {
                first_visits(
                    &netns,
                    &addresses,
                    rate,
                    Duration::MAX,
                    &stop,
                    since,
                    &outcomes,
                )
            })
        };
        Ok(Newcomers {
            stop,
            thread: Some(thread),
            outcomes,
        })
    }

    /// Stops starting visitors, waits for those started and returns every outcome.
    pub fn stop(mut self) -> std::io::Result<Vec<Outcome>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        }
        Ok(self.outcomes.lock().map(|o| o.clone()).unwrap_or_default())
    }
}

impl Drop for Newcomers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs first-time visitors in the namespace `netns` is a handle of: the one from
/// `addresses[i]` starts `i / rate` seconds after the call and makes a single request with
/// [`NEWCOMER_TIMEOUT`]. It stops starting visitors after `duration`, when `stop` is set or
/// when the addresses run out, waits for those started, and appends each outcome to `sink`
/// (with `at`, when it was due, counted from `since`) as it finishes. Each address must be on
/// an interface of the namespace and never have been used before.
fn first_visits(
    netns: &std::fs::File,
    addresses: &[Ipv4Addr],
    rate: f64,
    duration: Duration,
    stop: &AtomicBool,
    since: Instant,
    sink: &Mutex<Vec<Outcome>>,
) -> std::io::Result<()> {
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let started = Instant::now();
    std::thread::scope(|scope| -> std::io::Result<()> {
        for (index, &source) in addresses.iter().enumerate() {
            let due = started + interval.mul_f64(index as f64);
            if due.duration_since(started) >= duration {
                break;
            }
            while Instant::now() < due && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(
                    due.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(50)),
                );
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let netns = netns.try_clone()?;
            scope.spawn(move || {
                use std::os::fd::AsRawFd as _;
                // Timed from when the visitor was due (no coordinated omission).
                let now = due;
                // SAFETY: `netns` is an open namespace handle; setns changes only this thread.
                let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
                let ok = entered && request(source, NEWCOMER_TIMEOUT).unwrap_or(false);
                let outcome = Outcome {
                    at: now.duration_since(since),
                    ok,
                    latency: now.elapsed(),
                };
                if let Ok(mut all) = sink.lock() {
                    all.push(outcome);
                }
            });
        }
        Ok(())
    })
}

/// One GET / from `source`; whether the page came back whole within `timeout`.
fn request(source: Ipv4Addr, timeout: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
    let origin = SocketAddr::V4(SocketAddrV4::new(ORIGIN_IPV4, HTTP_PORT));
    socket.connect_timeout(&origin.into(), timeout)?;
    let mut stream: std::net::TcpStream = socket.into();
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(false);
    }
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: origin.lab\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::with_capacity(512);
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    Ok(Instant::now() <= deadline && text.starts_with("HTTP/1.1 200") && text.ends_with(PAGE))
}

/// Success share and latency percentiles of some outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Requests made.
    pub requests: usize,
    /// Share that succeeded, in percent.
    pub success_pct: f64,
    /// Median latency of successful requests, in ms.
    pub p50_ms: f64,
    /// 99th percentile latency of successful requests, in ms.
    pub p99_ms: f64,
}

/// Summarises `outcomes`.
pub fn summarize(outcomes: &[Outcome]) -> Summary {
    if outcomes.is_empty() {
        return Summary::default();
    }
    let mut latencies: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.ok)
        .map(|o| o.latency.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies[index.min(latencies.len() - 1)]
        }
    };
    Summary {
        requests: outcomes.len(),
        success_pct: 100.0 * latencies.len() as f64 / outcomes.len() as f64,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
    }
}
