//! The flood generator: loads moat's `moat_flood` XDP program and runs it with
//! BPF_PROG_TEST_RUN live frames on a template frame, so each copy leaves an interface (with
//! `XDP_TX`) with a new source from the pool — millions of spoofed packets per second from one
//! core, or from every CPU at once with [`flood_every_cpu`] (steadily, or in pulses with
//! [`flood_every_cpu_pulsed`]). It sends only out of interfaces of namespaces the lab created.
//! It also attaches [`PeerPass`], the pass-everything program a veth peer needs to receive what
//! the filter answers with `XDP_TX`; it does not load the filter.

use std::{
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::Array,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode, links::FdLink},
};
use filter_common::flood::{
    FLOOD_CONFIG, FLOOD_PROGRAM, FLOOD_TEMPLATE, FloodConfig, FloodTemplate, PASS_PROGRAM,
    SINK_PROGRAM, TEMPLATE_BYTES,
};

use moat::netns::NetNs;

pub use moat::FLOOD_OBJECT;

/// Frames handed to the kernel per live-frames batch. A veth drains its XDP ring (256 frames)
/// 64 at a time (the NAPI budget) after each batch, so a larger batch overflows the ring and
/// loses frames (measured: 0.5% lost with 256).
const BATCH: u32 = 64;

/// How often the sender checks its pace.
const TICK: Duration = Duration::from_millis(10);

/// A generator that could not run.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    /// Loading or configuring the program failed.
    #[error("loading the flood generator: {0}")]
    Load(String),
    /// BPF_PROG_TEST_RUN failed.
    #[error("running the flood generator on ifindex {ifindex}: {message}")]
    Run {
        /// The interface.
        ifindex: u32,
        /// What the kernel said.
        message: String,
    },
    /// Attaching the pass-everything program failed.
    #[error("attaching a peer program to {iface} in netns {namespace} (native mode): {message}")]
    Attach {
        /// The namespace holding the interface.
        namespace: String,
        /// The interface.
        iface: String,
        /// What went wrong.
        message: String,
    },
    /// Reading which CPUs this process may run on failed.
    #[error("reading the CPUs this process may run on: {source}")]
    Cpus {
        /// What the OS said.
        source: std::io::Error,
    },
    /// Pinning a sender thread to its CPU failed.
    #[error("pinning a sender to cpu {cpu}: {source}")]
    Pin {
        /// The CPU.
        cpu: usize,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// What to send: a template frame and how to vary it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloodPlan {
    /// The frame every copy starts from (correct checksums).
    pub template: Vec<u8>,
    /// The rewriting.
    pub config: FloodConfig,
}

/// What a flood did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FloodReport {
    /// Frames generated.
    pub sent: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl FloodReport {
    /// Frames per second actually generated.
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The loaded generator.
pub struct Generator {
    ebpf: Ebpf,
    /// The template last written to `FLOOD_TEMPLATE`.
    template: Vec<u8>,
}

/// Loaded generators waiting for this process's next flood: loading one takes hundreds of
/// milliseconds (the verifier), and the lab floods in many short steps.
static SPARE: Mutex<Vec<Generator>> = Mutex::new(Vec::new());

impl Generator {
    /// A loaded generator: one an earlier flood of this process left, or a new one.
    fn take() -> Result<Generator, FloodError> {
        match SPARE.lock().ok().and_then(|mut spare| spare.pop()) {
            Some(generator) => Ok(generator),
            None => Generator::load(),
        }
    }

    /// Keeps this generator for the next flood.
    fn put_back(self) {
        if let Ok(mut spare) = SPARE.lock() {
            spare.push(self);
        }
    }

    /// Loads the generator program.
    pub fn load() -> Result<Generator, FloodError> {
        let mut ebpf = Ebpf::load(FLOOD_OBJECT).map_err(|e| FloodError::Load(e.to_string()))?;
        let program: &mut Xdp = ebpf
            .program_mut(FLOOD_PROGRAM)
            .ok_or_else(|| FloodError::Load(format!("no program {FLOOD_PROGRAM}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| FloodError::Load(e.to_string()))?;
        program
            .load()
            .map_err(|e| FloodError::Load(e.to_string()))?;
        Ok(Generator {
            ebpf,
            template: Vec::new(),
        })
    }

    /// Sets how copies are rewritten.
    pub fn configure(&mut self, config: FloodConfig) -> Result<(), FloodError> {
        let map = self
            .ebpf
            .map_mut(FLOOD_CONFIG)
            .ok_or_else(|| FloodError::Load(format!("no map {FLOOD_CONFIG}")))?;
        let mut array: Array<_, FloodConfig> =
            Array::try_from(map).map_err(|e| FloodError::Load(e.to_string()))?;
        array
            .set(0, config, 0)
            .map_err(|e| FloodError::Load(e.to_string()))
    }

    /// Sends `count` copies of `template` out of `ifindex`, which must be in the calling
    /// thread's network namespace.
    pub fn send(&mut self, template: &[u8], ifindex: u32, count: u32) -> Result<(), FloodError> {
        if self.template != template {
            let mut value = FloodTemplate {
                bytes: [0; TEMPLATE_BYTES],
            };
            let len = template.len().min(TEMPLATE_BYTES);
            value.bytes[..len].copy_from_slice(&template[..len]);
            let map = self
                .ebpf
                .map_mut(FLOOD_TEMPLATE)
                .ok_or_else(|| FloodError::Load(format!("no map {FLOOD_TEMPLATE}")))?;
            Array::<_, FloodTemplate>::try_from(map)
                .and_then(|mut array| array.set(0, value, 0))
                .map_err(|e| FloodError::Load(e.to_string()))?;
            self.template = template.to_vec();
        }
        let program: &mut Xdp = self
            .ebpf
            .program_mut(FLOOD_PROGRAM)
            .ok_or_else(|| FloodError::Load(format!("no program {FLOOD_PROGRAM}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| FloodError::Load(e.to_string()))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. Live frames need data = 0 and data_end = the frame's length.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(template.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let options = TestRunOptions {
            data_in: Some(template),
            ctx_in: Some(&ctx),
            repeat: count,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
            ..TestRunOptions::default()
        };
        program
            .test_run(options)
            .map(drop)
            .map_err(|e| FloodError::Run {
                ifindex,
                message: e.to_string(),
            })
    }
}

/// Floods `plan` out of `iface` in `ns` at up to `rate_pps` (0: as fast as possible) for
/// `duration`, or until `stop` is set.
pub fn flood(
    ns: &NetNs,
    iface: &str,
    plan: &FloodPlan,
    rate_pps: u64,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<FloodReport, FloodError> {
    flood_rotating(
        ns,
        iface,
        std::slice::from_ref(plan),
        rate_pps,
        duration,
        stop,
    )
}

/// Like [`flood`], taking the plans in turn, one chunk each.
pub fn flood_rotating(
    ns: &NetNs,
    iface: &str,
    plans: &[FloodPlan],
    rate_pps: u64,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<FloodReport, FloodError> {
    let sender = Sender {
        rate_pps,
        duration,
        pulse: None,
    };
    sender.run(ns, iface, plans, &OnceLock::new(), stop)
}

/// For a flood pulsed `pulse` on, `pulse` off from its start: whether it is on `elapsed` after
/// its start, and how long it has been on in all by then. Without a pulse it is always on.
fn on_time(elapsed: Duration, pulse: Option<Duration>) -> (bool, Duration) {
    let Some(pulse) = pulse.filter(|pulse| !pulse.is_zero()) else {
        return (true, elapsed);
    };
    let period = pulse.as_nanos() * 2;
    let periods = elapsed.as_nanos() / period;
    let into_period = elapsed.as_nanos() % period;
    let on_ns = periods * pulse.as_nanos() + into_period.min(pulse.as_nanos());
    let on_ns = u64::try_from(on_ns).unwrap_or(u64::MAX);
    (into_period < pulse.as_nanos(), Duration::from_nanos(on_ns))
}

/// One sender's pace.
#[derive(Clone, Copy, Debug)]
struct Sender {
    /// Frames per second while on (0: as fast as possible).
    rate_pps: u64,
    /// How long to send for, from the shared start.
    duration: Duration,
    /// On and off half-periods, if pulsed.
    pulse: Option<Duration>,
}

impl Sender {
    /// Sends `plans` in turn out of `iface` in `ns`. The flood's clock starts at `start`,
    /// which the first sender ready to send sets, so senders sharing it pulse in phase and
    /// stop together.
    fn run(
        self,
        ns: &NetNs,
        iface: &str,
        plans: &[FloodPlan],
        start: &OnceLock<Instant>,
        stop: &AtomicBool,
    ) -> Result<FloodReport, FloodError> {
        if plans.is_empty() {
            return Ok(FloodReport::default());
        }
        let mut generator = Generator::take()?;
        let report = ns
            .enter(|| self.send(&mut generator, iface, plans, start, stop))
            .map_err(|e| FloodError::Run {
                ifindex: 0,
                message: e.to_string(),
            })?;
        generator.put_back();
        report
    }

    /// The sending loop, inside the namespace.
    fn send(
        self,
        generator: &mut Generator,
        iface: &str,
        plans: &[FloodPlan],
        start: &OnceLock<Instant>,
        stop: &AtomicBool,
    ) -> Result<FloodReport, FloodError> {
        let Sender {
            rate_pps,
            duration,
            pulse,
        } = self;
        let ifindex = moat::preflight::iface_index(iface).map_err(|e| FloodError::Run {
            ifindex: 0,
            message: e.to_string(),
        })?;
        let started = *start.get_or_init(Instant::now);
        let mut sent = 0u64;
        let mut turn = 0usize;
        // Each BPF_PROG_TEST_RUN call has a fixed cost (measured: tens of ms for the live-frames
        // setup), so send a tenth of a second's worth per call and pace between calls.
        let chunk = if rate_pps == 0 {
            65_536
        } else {
            (rate_pps / 10).clamp(1, 262_144) as u32
        };
        while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
            let (on, on_for) = on_time(started.elapsed(), pulse);
            let due = if rate_pps == 0 {
                u64::MAX
            } else {
                (on_for.as_secs_f64() * rate_pps as f64) as u64
            };
            if on && sent < due {
                let plan = &plans[turn % plans.len()];
                if plans.len() > 1 || turn == 0 {
                    generator.configure(plan.config)?;
                }
                turn += 1;
                let count = chunk.min(u32::try_from(due - sent).unwrap_or(u32::MAX));
                generator.send(&plan.template, ifindex, count)?;
                sent += u64::from(count);
            } else {
                std::thread::sleep(TICK.min(duration.saturating_sub(started.elapsed())));
            }
        }
        Ok(FloodReport {
            sent,
            elapsed: started.elapsed(),
        })
    }
}

/// [`flood_rotating`] from every CPU this process may run on at once: one sender thread per
/// CPU, pinned to it before it enters `ns`, each at `rate_pps / cpus` (0: as fast as possible),
/// all stopping after `duration` or when `stop` is set (or as soon as one of them fails). A veth
/// end receives on its sender's CPU, so a flood from one CPU loads only that CPU's share of a
/// per-CPU filter and flatters it; this one loads them all. The report sums the frames sent and
/// takes the longest sender's time.
pub fn flood_every_cpu(
    ns: &NetNs,
    iface: &str,
    plans: &[FloodPlan],
    rate_pps: u64,
    duration: Duration,
    stop: &AtomicBool,
) -> Result<FloodReport, FloodError> {
    flood_every_cpu_pulsed(ns, iface, plans, rate_pps, duration, None, stop)
}

/// [`flood_every_cpu`], optionally pulsed: with `Some(p)` every sender sends for `p`, pauses for
/// `p`, and repeats, all in phase from the moment the first sender is ready (a pulse-wave
/// attack, which a filter that reacts slower than `p` meets afresh on every pulse). `rate_pps`
/// is the pace while on, so the average rate is half of it. `duration` counts from the same
/// moment and includes the pauses; `Some(Duration::ZERO)` is the same as `None`.
pub fn flood_every_cpu_pulsed(
    ns: &NetNs,
    iface: &str,
    plans: &[FloodPlan],
    rate_pps: u64,
    duration: Duration,
    pulse: Option<Duration>,
    stop: &AtomicBool,
) -> Result<FloodReport, FloodError> {
    let cpus = crate::cpus::allowed().map_err(|source| FloodError::Cpus { source })?;
    // Set when the caller stops or a sender fails, so every sender ends together.
    let halt = AtomicBool::new(false);
    // The flood's start, set by the first sender ready to send: the pulses' phase and the end.
    let start = OnceLock::new();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = cpus
            .iter()
            .enumerate()
            .map(|(index, &cpu)| {
                let share = crate::cpus::share(rate_pps, cpus.len(), index);
                let sender = Sender {
                    rate_pps: share,
                    duration,
                    pulse,
                };
                let (halt, start) = (&halt, &start);
                scope.spawn(move || {
                    // Threads inherit affinity, so the thread `NetNs::enter` spawns to enter
                    // the namespace stays on this CPU too.
                    let result = crate::cpus::pin(cpu)
                        .map_err(|source| FloodError::Pin { cpu, source })
                        .and_then(|()| sender.run(ns, iface, plans, start, halt));
                    if result.is_err() {
                        halt.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        while !handles.iter().all(|handle| handle.is_finished()) {
            if stop.load(Ordering::Relaxed) {
                halt.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(TICK);
        }
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Vec<_>>()
    });
    let mut total = FloodReport::default();
    for result in results {
        let report = result?;
        total.sent += report.sent;
        total.elapsed = total.elapsed.max(report.elapsed);
    }
    Ok(total)
}

/// moat's pass-everything program attached natively to a veth end, detached on drop. A frame a
/// program on the other end returns with `XDP_TX` is dropped by veth unless this end has an XDP
/// program, so attach this to the peer of the interface moat runs on whenever moat answers
/// (SYN-ACKs) with `XDP_TX`.
pub struct PeerPass {
    /// The attachment as a bpf link: closing it detaches the program from any namespace,
    /// so it is dropped before the object that holds the program.
    _link: FdLink,
    /// The loaded object.
    _ebpf: Ebpf,
}

impl PeerPass {
    /// Loads `moat_pass` and attaches it in native (driver) mode to `iface` inside `ns`.
    pub fn attach(ns: &NetNs, iface: &str) -> Result<PeerPass, FloodError> {
        PeerPass::attach_program(ns, iface, PASS_PROGRAM)
    }

    /// Like [`PeerPass::attach`] with `moat_sink`, which also drops what is addressed to the
    /// lab's spoofed sources (moat's SYN-ACKs to them above all) at XDP, as the internet would
    /// carry them away, instead of handing them to the router's kernel to blackhole.
    pub fn attach_sink(ns: &NetNs, iface: &str) -> Result<PeerPass, FloodError> {
        PeerPass::attach_program(ns, iface, SINK_PROGRAM)
    }

    fn attach_program(ns: &NetNs, iface: &str, name: &str) -> Result<PeerPass, FloodError> {
        let attach_error = |message: String| FloodError::Attach {
            namespace: ns.name().to_string(),
            iface: iface.to_string(),
            message,
        };
        let mut ebpf = Ebpf::load(FLOOD_OBJECT).map_err(|e| FloodError::Load(e.to_string()))?;
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| FloodError::Load(format!("no program {name}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| FloodError::Load(e.to_string()))?;
        program
            .load()
            .map_err(|e| FloodError::Load(e.to_string()))?;
        let link = ns
            .enter(|| -> Result<FdLink, String> {
                let ifindex = moat::preflight::iface_index(iface).map_err(|e| e.to_string())?;
                let id = program
                    .attach_to_if_index(ifindex, XdpMode::Driver)
                    .map_err(|e| e.to_string())?;
                let link = program.take_link(id).map_err(|e| e.to_string())?;
                // Only a bpf link (Linux 5.9+) detaches when closed, wherever the guard is
                // dropped; aya's netlink fallback would need this namespace again to detach.
                FdLink::try_from(link).map_err(|e| {
                    format!("the kernel attached it without a bpf link, so it cannot be owned: {e}")
                })
            })
            .map_err(|e| attach_error(e.to_string()))?
            .map_err(attach_error)?;
        log::info!(
            "attached program={name} iface={iface} netns={} mode=native",
            ns.name()
        );
        Ok(PeerPass {
            _link: link,
            _ebpf: ebpf,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn unpulsed_flood_is_always_on() {
        for elapsed in [Duration::ZERO, 700 * MS, 5_000 * MS] {
            assert_eq!(on_time(elapsed, None), (true, elapsed));
            assert_eq!(on_time(elapsed, Some(Duration::ZERO)), (true, elapsed));
        }
    }

    #[test]
    fn pulsed_flood_alternates_and_counts_only_time_on() {
        let pulse = Some(500 * MS);
        for (elapsed_ms, on, on_ms) in [
            (0, true, 0),
            (499, true, 499),
            (500, false, 500),
            (999, false, 500),
            (1_000, true, 500),
            (1_250, true, 750),
            (1_600, false, 1_000),
            (4_100, true, 2_100),
        ] {
            assert_eq!(
                on_time(elapsed_ms * MS, pulse),
                (on, on_ms * MS),
                "{elapsed_ms} ms into a 500 ms on, 500 ms off flood"
            );
        }
    }
}
