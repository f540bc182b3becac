//! The command line of `moat-lab`.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

/// Shows, on one machine, what a self-hosted origin faces without protection and with moat:
/// attacks from network namespaces it creates and removes, swept over rates, visitors measured in
/// every step.
/// Needs root; `cargo xtask lab` builds and runs it.
#[derive(Debug, Parser)]
#[command(name = "moat-lab", version, about)]
pub struct LabArgs {
    /// Which attacks: all, or a comma-separated list of spoofed-syn, botnet-syn, udp-flood,
    /// reflection, icmp-flood, fragment-flood, ipv6-syn, ack-flood, carpet-bomb, ipv6-rotate,
    /// botnet-connect, pulse, mixed.
    #[arg(long, default_value = "all", value_name = "NAME|all")]
    pub scenario: String,
    /// Seconds each step of a sweep (and the baseline) is measured, 1 to 600 (fractions
    /// allowed); a pulse's steps last at least one whole on/off cycle.
    #[arg(long, default_value = "1.5", value_name = "S", value_parser = parse_seconds)]
    pub duration: Duration,
    /// The attack rates to sweep, rising, in packets per second (botnet-connect asks for one
    /// connection per second per 100): a comma-separated list of numbers with an optional k or
    /// M, and `max` for as fast as the generator goes.
    #[arg(long, default_value = "30k,100k,300k,1M,max", value_name = "RATES", value_parser = parse_sweep)]
    pub sweep: Sweep,
    /// One rate instead of a sweep, in packets per second (the report says what the generator
    /// reached).
    #[arg(long, value_name = "PPS", conflicts_with = "sweep", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub rate: Option<u64>,
    /// Where to write lab-report.json, lab-report.svg (the summary), lab-<scenario>.svg (the
    /// curves) and lab-timeline.svg.
    #[arg(long, default_value = "moat-lab", value_name = "DIR")]
    pub out: PathBuf,
    /// The moat binary to run as `moat run` for the protected sweeps [default: `moat` next to
    /// this binary].
    #[arg(long, value_name = "FILE")]
    pub moat: Option<PathBuf>,
}

/// Parses a step's length in seconds, 1 to 600, fractions allowed.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if (1.0..=600.0).contains(&seconds) => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(format!(
            "{text:?} is not a step length; give seconds from 1 to 600, like 2 or 1.5"
        )),
    }
}

/// The rates of a sweep, packets per second; 0 is as fast as the generator goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sweep(pub Vec<u64>);

/// Parses `30k,100k,1M,max`: rates with an optional k or M suffix, each above the last (a sweep
/// rises), `max` only last.
fn parse_sweep(text: &str) -> Result<Sweep, String> {
    let mut rates = Vec::new();
    for item in text.split(',').map(str::trim) {
        let rate = if item == "max" {
            0
        } else {
            let (digits, scale) = match item.strip_suffix(['k', 'K']) {
                Some(digits) => (digits, 1_000.0),
                None => match item.strip_suffix('M') {
                    Some(digits) => (digits, 1_000_000.0),
                    None => (item, 1.0),
                },
            };
            let value: f64 = digits.parse().map_err(|_| {
                format!("{item:?} is not a rate; use numbers like 30000, 30k or 1.5M, or max")
            })?;
            let rate = (value * scale).round();
            if !(1.0..=100_000_000.0).contains(&rate) {
                return Err(format!("{item:?} is outside 1..=100M packets per second"));
            }
            rate as u64
        };
        if let Some(&last) = rates.last()
            && (last == 0 || (rate != 0 && rate <= last))
        {
            return Err(format!(
                "{item:?} does not rise above the rate before it; list rates in rising order, max last"
            ));
        }
        rates.push(rate);
    }
    Ok(Sweep(rates))
}

impl LabArgs {
    /// The rates to run: `--rate` alone, else the sweep.
    pub fn rates(&self) -> Vec<u64> {
        self.rate
            .map_or_else(|| self.sweep.0.clone(), |rate| vec![rate])
    }

    /// The moat binary to run: `--moat`, else `moat` beside this binary.
    pub fn moat_binary(&self) -> std::io::Result<PathBuf> {
        match &self.moat {
            Some(path) => Ok(path.clone()),
            None => Ok(std::env::current_exe()?.with_file_name("moat")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_rise_and_name_their_rates_as_people_write_them() {
        assert_eq!(
            parse_sweep("30k,100k, 1.5M,max"),
            Ok(Sweep(vec![30_000, 100_000, 1_500_000, 0]))
        );
        assert_eq!(parse_sweep("5000"), Ok(Sweep(vec![5_000])));
        for bad in ["100k,30k", "max,1M", "fast", "0", "200M", "30k,30k"] {
            let error = parse_sweep(bad).expect_err(bad);
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }

    #[test]
    fn a_rate_replaces_the_sweep() {
        let args = LabArgs::parse_from(["moat-lab", "--rate", "500000"]);
        assert_eq!(args.rates(), [500_000]);
        let args = LabArgs::parse_from(["moat-lab"]);
        assert_eq!(args.rates(), [30_000, 100_000, 300_000, 1_000_000, 0]);
        assert_eq!(args.duration, Duration::from_millis(1_500));
        let args = LabArgs::parse_from(["moat-lab", "--duration", "4"]);
        assert_eq!(args.duration, Duration::from_secs(4));
        for bad in ["0.5", "601", "soon"] {
            assert!(
                LabArgs::try_parse_from(["moat-lab", "--duration", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(LabArgs::try_parse_from(["moat-lab", "--rate", "1", "--sweep", "1k"]).is_err());
    }
}
