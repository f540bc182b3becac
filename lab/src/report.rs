//! The lab's report: a table per scenario and phase for the terminal, the same as JSON, and a
//! timeline picture (SVG) of legitimate success (returning and first-time visitors) and attack
//! packets reaching the origin. It only formats; the measuring is done elsewhere.

use std::fmt::Write as _;

use serde::Serialize;

/// What one phase measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PhaseResult {
    /// "baseline", "unprotected" or "protected".
    pub phase: String,
    /// Seconds it ran.
    pub seconds: f64,
    /// Attack packets per second the generator produced (0 in the baseline).
    pub offered_pps: f64,
    /// Attack frames per second that left the attackers' interface (its transmit counter):
    /// what the generator put on the wire, of what it was asked for.
    pub sent_pps: f64,
    /// Frames per second that arrived at the origin's interface: those it received (the
    /// visitors' few included) and those lost at its full receive ring.
    pub arrived_pps: f64,
    /// The counts behind `sent_pps` and `arrived_pps` over the phase, as the interfaces'
    /// counters moved: sent, received, lost at the ring.
    pub counted: Counted,
    /// Attack packets per second that reached the origin's kernel stack.
    pub reached_pps: f64,
    /// Attack packets that reached the stack, as a percentage of those offered.
    pub reached_pct: f64,
    /// Legitimate requests made.
    pub requests: usize,
    /// Legitimate requests that succeeded, in percent.
    pub success_pct: f64,
    /// First-time visitors (one request each, from a never-seen address) started in the phase.
    pub new_requests: usize,
    /// First-time visitors served within their timeout, in percent (none if the scenario does
    /// not measure them).
    pub new_success_pct: Option<f64>,
    /// Median latency of successful requests, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of successful requests, ms.
    pub p99_ms: f64,
    /// Share of the machine's CPU time spent in softirq during the phase, in percent.
    pub softirq_pct: f64,
    /// Frames the router handed to the origin's interface that found its receive ring full
    /// (the router's end counts them as transmit drops): attack and legitimate alike, lost
    /// before any filter on the origin sees them. A lost visitor's segment waits for a
    /// retransmission (200 ms at least, 1 s for a SYN).
    pub ring_drops: u64,
    /// Packets moat dropped, by reason (protected phase only).
    pub drops: Vec<(String, u64)>,
    /// Packets moat answered itself (SYN cookies), by reason (protected phase only).
    pub answered: Vec<(String, u64)>,
}

/// What the interfaces counted over one phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counted {
    /// Frames the attackers' interface transmitted.
    pub sent: u64,
    /// Frames the origin's interface received.
    pub received: u64,
    /// Frames lost at the origin's full receive ring (the router's transmit drops).
    pub ring_dropped: u64,
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
    /// Attack packets per second reaching the origin's stack in this second.
    pub reached_pps: f64,
    /// Legitimate success in this second, in percent (none if no request started).
    pub success_pct: Option<f64>,
    /// First-time visitors' success in this second, in percent (none if none started).
    pub new_success_pct: Option<f64>,
    /// The slowest returning visitor's request that started in this second and succeeded, in
    /// ms (none if none did): latency over time, where a retransmission timeout shows.
    pub slowest_ms: Option<f64>,
}

/// One scenario's three phases.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub scenario: String,
    /// The rate asked for, packets per second.
    pub asked_pps: u64,
    /// Baseline, unprotected, protected.
    pub phases: Vec<PhaseResult>,
}

/// The whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Every scenario run.
    pub scenarios: Vec<ScenarioResult>,
    /// The timeline, one tick per second.
    pub timeline: Vec<Tick>,
}

impl Report {
    /// The terminal table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        for scenario in &self.scenarios {
            let _ = writeln!(
                out,
                "\n{} (asked {} pps)\n{:<12} {:>12} {:>12} {:>12} {:>12} {:>8} {:>9} {:>7} {:>8} {:>8} {:>8} {:>10}  DROPPED OR ANSWERED BY REASON",
                scenario.scenario,
                scenario.asked_pps,
                "PHASE",
                "OFFERED PPS",
                "SENT PPS",
                "ARRIVED PPS",
                "REACHED PPS",
                "REACHED",
                "LEGIT OK",
                "NEW OK",
                "P50 MS",
                "P99 MS",
                "SOFTIRQ",
                "RING DROPS"
            );
            for p in &scenario.phases {
                let drops: Vec<String> = p
                    .drops
                    .iter()
                    .chain(&p.answered)
                    .filter(|(_, n)| *n > 0)
                    .map(|(reason, n)| format!("{reason}={n}"))
                    .collect();
                let new_ok = p
                    .new_success_pct
                    .map_or_else(|| "-".to_string(), |pct| format!("{pct:.1}%"));
                let _ = writeln!(
                    out,
                    "{:<12} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>7.2}% {:>8.1}% {:>7} {:>8.1} {:>8.1} {:>7.1}% {:>10}  {}",
                    p.phase,
                    p.offered_pps,
                    p.sent_pps,
                    p.arrived_pps,
                    p.reached_pps,
                    p.reached_pct,
                    p.success_pct,
                    new_ok,
                    p.p50_ms,
                    p.p99_ms,
                    p.softirq_pct,
                    p.ring_drops,
                    if drops.is_empty() {
                        "-".to_string()
                    } else {
                        drops.join(" ")
                    }
                );
            }
        }
        out
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    }

    /// A timeline picture: attack packets reaching the origin (log scale, red), returning
    /// visitors' success (green) and first-time visitors' success (blue, dashed, where
    /// measured), one point per second, phases shaded and scenarios labelled.
    pub fn to_svg(&self) -> String {
        const W: f64 = 1000.0;
        const H: f64 = 420.0;
        const LEFT: f64 = 60.0;
        const RIGHT: f64 = 95.0;
        const TOP: f64 = 40.0;
        const BOTTOM: f64 = 70.0;
        let end = self.timeline.last().map_or(1.0, |t| t.t + 1.0).max(1.0);
        let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / end;
        let plot_h = H - TOP - BOTTOM;
        let max_pps = self
            .timeline
            .iter()
            .map(|t| t.reached_pps)
            .fold(10.0_f64, f64::max);
        let y_pps = |pps: f64| TOP + plot_h * (1.0 - (1.0 + pps).log10() / (1.0 + max_pps).log10());
        let y_pct = |pct: f64| TOP + plot_h * (1.0 - pct / 100.0);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{LEFT}\" y=\"22\" font-size=\"14\">moat lab: attack packets reaching the origin (red, log scale), success of returning (green) and first-time visitors (blue)</text>\n"
        );
        // Phase shading: one band per run of ticks with the same scenario and phase.
        let mut start = 0usize;
        while start < self.timeline.len() {
            let first = &self.timeline[start];
            let mut stop = start;
            while stop + 1 < self.timeline.len()
                && self.timeline[stop + 1].phase == first.phase
                && self.timeline[stop + 1].scenario == first.scenario
            {
                stop += 1;
            }
            let fill = match first.phase.as_str() {
                "baseline" => "#f2f2f2",
                "unprotected" => "#fde2e2",
                _ => "#e2f4e2",
            };
            let (x0, x1) = (x(first.t), x(self.timeline[stop].t + 1.0));
            let _ = writeln!(
                svg,
                "<rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"{fill}\"/>",
                x1 - x0
            );
            if first.phase == "baseline" {
                let _ = writeln!(
                    svg,
                    "<text x=\"{x0:.1}\" y=\"{:.1}\" transform=\"rotate(30 {x0:.1} {:.1})\">{}</text>",
                    H - BOTTOM + 14.0,
                    H - BOTTOM + 14.0,
                    first.scenario
                );
            }
            start = stop + 1;
        }
        let line = |svg: &mut String, points: Vec<(f64, f64)>, style: &str| {
            let path: Vec<String> = points
                .iter()
                .map(|(a, b)| format!("{a:.1},{b:.1}"))
                .collect();
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" {style} stroke-width=\"2\"/>",
                path.join(" ")
            );
        };
        // One pair of lines per phase, so the pauses between phases are not drawn as data.
        for band in self
            .timeline
            .chunk_by(|a, b| a.phase == b.phase && a.scenario == b.scenario)
        {
            line(
                &mut svg,
                band.iter()
                    .map(|t| (x(t.t + 0.5), y_pps(t.reached_pps)))
                    .collect(),
                "stroke=\"#c62828\"",
            );
            line(
                &mut svg,
                band.iter()
                    .filter_map(|t| t.success_pct.map(|pct| (x(t.t + 0.5), y_pct(pct))))
                    .collect(),
                "stroke=\"#2e7d32\"",
            );
            let newcomers: Vec<(f64, f64)> = band
                .iter()
                .filter_map(|t| t.new_success_pct.map(|pct| (x(t.t + 0.5), y_pct(pct))))
                .collect();
            if !newcomers.is_empty() {
                line(
                    &mut svg,
                    newcomers,
                    "stroke=\"#1565c0\" stroke-dasharray=\"5,3\"",
                );
            }
        }
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n\
             <text x=\"4\" y=\"{TOP}\" fill=\"#2e7d32\">100% ok</text>\n\
             <text x=\"4\" y=\"{:.1}\" fill=\"#2e7d32\">0% ok</text>\n\
             <text x=\"{:.1}\" y=\"{TOP}\" fill=\"#c62828\">{max_pps:.0} pps</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c62828\">0 pps</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">grey: baseline, red: attack unprotected, green: attack with moat; blue dashes: first-time visitors</text>\n</svg>\n",
            H - BOTTOM,
            W - RIGHT,
            H - BOTTOM,
            H - BOTTOM,
            W - RIGHT + 4.0,
            W - RIGHT + 4.0,
            H - BOTTOM,
            LEFT,
            H - 8.0
        );
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(t: f64, phase: &str, reached_pps: f64, success_pct: f64) -> Tick {
        Tick {
            t,
            scenario: "spoofed-syn".into(),
            phase: phase.into(),
            reached_pps,
            success_pct: Some(success_pct),
            new_success_pct: None,
            slowest_ms: None,
        }
    }

    #[test]
    fn svg_draws_each_phase_apart_and_table_lists_phases() {
        let report = Report {
            scenarios: vec![ScenarioResult {
                scenario: "spoofed-syn".into(),
                asked_pps: 1000,
                phases: vec![
                    PhaseResult {
                        phase: "unprotected".into(),
                        ..PhaseResult::default()
                    },
                    PhaseResult {
                        phase: "protected".into(),
                        new_requests: 40,
                        new_success_pct: Some(97.5),
                        drops: vec![("flood_syn".into(), 7), ("banned".into(), 0)],
                        answered: vec![("syn_cookie".into(), 9)],
                        ..PhaseResult::default()
                    },
                ],
            }],
            timeline: vec![
                tick(0.0, "baseline", 0.0, 100.0),
                tick(1.0, "baseline", 0.0, 100.0),
                tick(3.0, "unprotected", 90_000.0, 80.0),
                tick(4.0, "unprotected", 95_000.0, 70.0),
                Tick {
                    new_success_pct: Some(90.0),
                    ..tick(6.0, "protected", 300.0, 100.0)
                },
            ],
        };
        let svg = report.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<polyline").count(),
            7,
            "two lines per phase, a third where first-time visitors were measured"
        );
        assert_eq!(svg.matches("stroke-dasharray").count(), 1);
        assert_eq!(svg.matches("<rect x=").count(), 3, "one band per phase");
        let table = report.to_table();
        assert!(
            table.contains("protected") && table.contains("flood_syn=7"),
            "{table}"
        );
        assert!(
            table.contains("NEW OK") && table.contains("97.5%") && table.contains("syn_cookie=9"),
            "{table}"
        );
        assert!(
            !table.contains("banned=0"),
            "zero drops are left out: {table}"
        );
        let json = report.to_json();
        assert!(json.contains("\"timeline\""));
        assert!(
            json.contains("\"new_success_pct\": 97.5")
                && json.contains("\"new_success_pct\": null"),
            "{json}"
        );
    }
}
