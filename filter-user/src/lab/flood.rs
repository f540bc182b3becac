//! The flood generator: loads moat's `moat_flood` XDP program and runs it with
//! BPF_PROG_TEST_RUN live frames on a template frame, so each copy leaves an interface (with
//! `XDP_TX`) with a new source from the pool — millions of spoofed packets per second from one
//! core. It sends only out of interfaces of namespaces the lab created.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::Array,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp},
};
use filter_common::flood::{FLOOD_CONFIG, FLOOD_PROGRAM, FloodConfig};

use crate::netns::NetNs;

/// The generator's object, built by `build.rs` beside the filter.
pub static FLOOD_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/moat-flood"));

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
}

impl Generator {
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
        Ok(Generator { ebpf })
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
    if plans.is_empty() {
        return Ok(FloodReport::default());
    }
    let mut generator = Generator::load()?;
    ns.enter(|| -> Result<FloodReport, FloodError> {
        let ifindex = crate::preflight::iface_index(iface).map_err(|e| FloodError::Run {
            ifindex: 0,
            message: e.to_string(),
        })?;
        let started = Instant::now();
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
            let due = if rate_pps == 0 {
                u64::MAX
            } else {
                (started.elapsed().as_secs_f64() * rate_pps as f64) as u64
            };
            if sent < due {
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
    })
    .map_err(|e| FloodError::Run {
        ifindex: 0,
        message: e.to_string(),
    })?
}
