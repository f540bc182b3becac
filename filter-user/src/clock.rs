//! Calibrates the program's clock (see `filter_common::clock`): runs the object's
//! `moat_clock` program by BPF_PROG_TEST_RUN until jiffies have advanced a few times, turns the
//! samples into a [`ClockBase`] for the settings (`Settings::clock`), after which every packet
//! reads the time with one load instead of a helper call.

use std::time::{Duration, Instant};

use aya::{
    Ebpf,
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
};
use filter_common::{
    clock::{CalibrateError, ClockBase, ClockSample, calibrate},
    maps::CLOCK_PROGRAM_NAME,
};

/// The most time sampled. Sampling stops as soon as the samples single out one tick rate
/// (two ticks apart with dense samples: 20 ms on a 100 Hz kernel); a busy machine that
/// preempts the sampler, or follows every tick with long softirq work, needs longer.
const MAX_SAMPLING: Duration = Duration::from_secs(1);

/// Why the clock could not be calibrated. The program then keeps reading the kernel's coarse
/// clock, which is as correct and about 20 ns slower per packet.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// The object lacks the sampler, or it is not XDP.
    #[error("the XDP object has no XDP program named {CLOCK_PROGRAM_NAME}")]
    MissingProgram,
    /// The sampler could not be loaded or run.
    #[error("running {CLOCK_PROGRAM_NAME}: {0}")]
    Program(#[from] ProgramError),
    /// The sampler's answer was not two words.
    #[error("{CLOCK_PROGRAM_NAME} returned {0} bytes, fewer than the 16 it writes")]
    ShortAnswer(u32),
    /// The samples did not calibrate.
    #[error("calibrating jiffies against CLOCK_MONOTONIC: {0:?}")]
    Calibrate(CalibrateError),
}

/// Measures the clock base with the object's sampler (loading it if need be, unloading it
/// after) and returns it, for the settings the object's program will read
/// (`Settings::clock`).
pub fn set_up(ebpf: &mut Ebpf) -> Result<ClockBase, ClockError> {
    let clock = measure(ebpf);
    // The sampler has done its work either way; nothing runs it again.
    if let Some(program) = ebpf.program_mut(CLOCK_PROGRAM_NAME)
        && let Ok(program) = <&mut Xdp>::try_from(program)
        && let Err(error) = program.unload()
    {
        log::debug!("unloading {CLOCK_PROGRAM_NAME}: {error}");
    }
    clock
}

/// Samples jiffies and CLOCK_MONOTONIC with the object's sampler until they calibrate.
pub fn measure(ebpf: &mut Ebpf) -> Result<ClockBase, ClockError> {
    let program: &mut Xdp = ebpf
        .program_mut(CLOCK_PROGRAM_NAME)
        .ok_or(ClockError::MissingProgram)?
        .try_into()
        .map_err(|_| ClockError::MissingProgram)?;
    if program.fd().is_err() {
        program.load()?;
    }
    let started = Instant::now();
    let mut samples: Vec<ClockSample> = Vec::new();
    loop {
        let sample = sample(program)?;
        let advanced = samples
            .last()
            .is_some_and(|last| sample.jiffies > last.jiffies);
        samples.push(sample);
        // Each advance tightens the bounds; a refusal only means sample on.
        if advanced && let Ok(clock) = calibrate(&samples) {
            return Ok(clock);
        }
        if started.elapsed() >= MAX_SAMPLING {
            return calibrate(&samples).map_err(ClockError::Calibrate);
        }
    }
}

/// One run of the sampler.
fn sample(program: &Xdp) -> Result<ClockSample, ClockError> {
    // The smallest frame XDP test runs take is an Ethernet header; the sampler writes 16 bytes.
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    let result = program.test_run(TestRunOptions {
        data_in: Some(&frame),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    })?;
    if result.data_size_out < 16 {
        return Err(ClockError::ShortAnswer(result.data_size_out));
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&out[at..at + 8]);
        u64::from_ne_bytes(bytes)
    };
    Ok(ClockSample {
        jiffies: word(0),
        mono_ns: word(8),
    })
}
