//! The lab's report: what each step of each sweep measured, as a table for the terminal and as
//! JSON (the pictures are [`crate::svg`]'s). It only formats; the measuring is done elsewhere.

use std::fmt::Write as _;

use serde::Serialize;

/// What one step of a sweep measured: one attack rate, with the origin unprotected or
/// protected (or the baseline, no attack).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StepResult {
    /// "baseline", "unprotected" or "protected".
    pub phase: String,
    /// Attack rate asked of the generator, packets per second (connection attempts per second
    /// for a botnet of real handshakes); 0 for as fast as it goes (and in the baseline).
    pub asked_pps: u64,
    /// Seconds the step was measured.
    pub seconds: f64,
    /// Attack packets per second the generator produced (0 in the baseline), over its whole
    /// run.
    pub offered_pps: f64,
    /// Attack packets (connection attempts for a botnet) the generator produced over its whole
    /// run: the step's window and, for the last step, the tail after it.
    pub generated: u64,
    /// Frames per second that left the attackers' interface (its transmit counter, plus the
    /// frames the router's full ring refused it).
    pub sent_pps: f64,
    /// Frames per second that arrived at the origin's interface: those it received (the
    /// visitors' few included) and those lost at its full receive ring.
    pub arrived_pps: f64,
    /// The counts behind the rates, as the interfaces' and the kernel's counters moved.
    pub counted: Counted,
    /// Attack packets per second that reached the origin's kernel stack.
    pub reached_pps: f64,
    /// Attack packets that reached the stack, as a percentage of those sent.
    pub reached_pct: f64,
    /// Returning visitors' requests started in the step.
    pub requests: usize,
    /// Returning visitors' requests that succeeded, in percent.
    pub success_pct: f64,
    /// First-time visitors (one request each, from a never-seen address) started in the step.
    pub new_requests: usize,
    /// First-time visitors served within their timeout, in percent.
    pub new_success_pct: f64,
    /// Median latency of returning visitors' successful requests, ms, timed from when each
    /// was due.
    pub p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub p99_ms: f64,
    /// Requests per second the origin answered a closed-loop client asking as fast as it is
    /// answered: its spare capacity.
    pub spare_rps: f64,
    /// Share of the origin's CPU (the small origin's one CPU) not idle, in percent.
    pub origin_cpu_pct: f64,
    /// Share of the origin's CPU spent in softirq, in percent.
    pub origin_softirq_pct: f64,
    /// Share of the whole machine's CPU time spent in softirq, in percent.
    pub softirq_pct: f64,
    /// Packets moat dropped, by reason (protected steps only).
    pub drops: Vec<(String, u64)>,
    /// Packets moat answered itself (SYN cookies), by reason (protected steps only).
    pub answered: Vec<(String, u64)>,
}

/// What the interfaces and the kernel counted over one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counted {
    /// Frames the attackers' interface transmitted or had refused by the router's full ring.
    pub sent: u64,
    /// Frames the origin's interface received.
    pub received: u64,
    /// Frames lost at the origin's full receive ring (the router's transmit drops): attack
    /// and legitimate alike, lost before any filter on the origin sees them.
    pub ring_dropped: u64,
    /// Frames the origin's CPU could not take into its input backlog (after XDP, before the
    /// stack): what an overloaded small origin sheds, visitors' frames included.
    pub backlog_dropped: u64,
}

/// One second of the timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Tick {
    /// Seconds since the lab started.
    pub t: f64,
    /// The scenario.
    pub scenario: String,
    /// The phase.
    pub phase: String,
    /// The rate asked in this second (0: as fast as the generator goes).
    pub asked_pps: u64,
    /// Attack packets per second reaching the origin's stack in this second.
    pub reached_pps: f64,
    /// Frames per second lost at the origin's full receive ring in this second (visitors'
    /// segments among them wait for a retransmission).
    pub ring_drops_pps: f64,
    /// Returning visitors' success in this second, in percent (none if no request started).
    pub success_pct: Option<f64>,
    /// First-time visitors' success in this second, in percent (none if none started).
    pub new_success_pct: Option<f64>,
    /// The slowest returning visitor's request that was due in this second and succeeded, in
    /// ms (none if none did): latency over time, where a retransmission timeout shows.
    pub slowest_ms: Option<f64>,
}

/// One scenario's sweep, unprotected and protected, step by step.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub scenario: String,
    /// What it models.
    pub models: String,
    /// The steps without moat, in the order run (rising rate).
    pub unprotected: Vec<StepResult>,
    /// The steps with moat attached, the same rates.
    pub protected: Vec<StepResult>,
}

/// The whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Visitors with no attack.
    pub baseline: Option<StepResult>,
    /// Every scenario run.
    pub scenarios: Vec<ScenarioResult>,
    /// The timeline, one tick per second.
    pub timeline: Vec<Tick>,
}

/// An asked rate as the table shows it.
pub fn asked_label(asked_pps: u64) -> String {
    match asked_pps {
        0 => "max".to_string(),
        n if n >= 1_000_000 && n % 100_000 == 0 => format!("{}M", n as f64 / 1e6),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

impl Report {
    /// The terminal table: the baseline, then per scenario one row per step and phase.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let header = format!(
            "{:>6} {:<12} {:>10} {:>11} {:>11} {:>8} {:>7} {:>9} {:>7} {:>8} {:>9} {:>8} {:>10} {:>10}  DROPPED OR ANSWERED BY REASON",
            "ASKED",
            "PHASE",
            "SENT PPS",
            "ARRIVED PPS",
            "REACHED PPS",
            "REACHED",
            "NEW OK",
            "RETURN OK",
            "P50 MS",
            "P99 MS",
            "SPARE RPS",
            "ORIG NET",
            "RING DROPS",
            "BACKLOG DR"
        );
        let row = |out: &mut String, p: &StepResult| {
            let reasons: Vec<String> = p
                .drops
                .iter()
                .chain(&p.answered)
                .filter(|(_, n)| *n > 0)
                .map(|(reason, n)| format!("{reason}={n}"))
                .collect();
            let _ = writeln!(
                out,
                "{:>6} {:<12} {:>10.0} {:>11.0} {:>11.0} {:>7.2}% {:>6.1}% {:>8.1}% {:>7.1} {:>8.1} {:>9.0} {:>7.0}% {:>10} {:>10}  {}",
                if p.phase == "baseline" {
                    "-".to_string()
                } else {
                    asked_label(p.asked_pps)
                },
                p.phase,
                p.sent_pps,
                p.arrived_pps,
                p.reached_pps,
                p.reached_pct,
                p.new_success_pct,
                p.success_pct,
                p.p50_ms,
                p.p99_ms,
                p.spare_rps,
                p.origin_softirq_pct,
                p.counted.ring_dropped,
                p.counted.backlog_dropped,
                if reasons.is_empty() {
                    "-".to_string()
                } else {
                    reasons.join(" ")
                }
            );
        };
        if let Some(baseline) = &self.baseline {
            let _ = writeln!(out, "\nbaseline (no attack)\n{header}");
            row(&mut out, baseline);
        }
        for scenario in &self.scenarios {
            let _ = writeln!(
                out,
                "\n{}: {}\n{header}",
                scenario.scenario, scenario.models
            );
            let steps = scenario.unprotected.len().max(scenario.protected.len());
            for index in 0..steps {
                for phase in [&scenario.unprotected, &scenario.protected] {
                    if let Some(step) = phase.get(index) {
                        row(&mut out, step);
                    }
                }
            }
        }
        out
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(phase: &str, asked_pps: u64) -> StepResult {
        StepResult {
            phase: phase.into(),
            asked_pps,
            ..StepResult::default()
        }
    }

    #[test]
    fn table_pairs_each_rate_unprotected_then_protected() {
        let report = Report {
            baseline: Some(step("baseline", 0)),
            scenarios: vec![ScenarioResult {
                scenario: "spoofed-syn".into(),
                models: "a SYN flood".into(),
                unprotected: vec![step("unprotected", 30_000), step("unprotected", 0)],
                protected: vec![
                    StepResult {
                        new_requests: 40,
                        new_success_pct: 97.5,
                        drops: vec![("flood_syn".into(), 7), ("banned".into(), 0)],
                        answered: vec![("syn_cookie".into(), 9)],
                        ..step("protected", 30_000)
                    },
                    step("protected", 0),
                ],
            }],
            timeline: Vec::new(),
        };
        let table = report.to_table();
        let phases: Vec<&str> = table
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|word| ["baseline", "unprotected", "protected"].contains(word))
            .collect();
        assert_eq!(
            phases,
            [
                "baseline",
                "unprotected",
                "protected",
                "unprotected",
                "protected"
            ],
            "{table}"
        );
        assert!(table.contains("spoofed-syn: a SYN flood"), "{table}");
        assert!(
            table.contains("30k") && table.contains("max"),
            "asked rates are labelled: {table}"
        );
        assert!(
            table.contains("97.5%") && table.contains("flood_syn=7 syn_cookie=9"),
            "{table}"
        );
        assert!(
            !table.contains("banned=0"),
            "zero counts are left out: {table}"
        );
        let json = report.to_json();
        assert!(
            json.contains("\"new_success_pct\": 97.5") && json.contains("\"baseline\""),
            "{json}"
        );
    }

    #[test]
    fn asked_rates_read_as_people_write_them() {
        assert_eq!(asked_label(0), "max");
        assert_eq!(asked_label(30_000), "30k");
        assert_eq!(asked_label(1_000_000), "1M");
        assert_eq!(asked_label(1_500_000), "1.5M");
        assert_eq!(asked_label(12_345), "12345");
    }
}
