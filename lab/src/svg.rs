//! The lab's pictures, as SVG text: per scenario, the curves of what visitors and the origin
//! got against the attack rate, without and with moat (the XDP paper's picture); a summary of
//! every scenario's visitor success for the README; and the timeline, second by second, where
//! latency over time shows. It only draws what [`crate::report`] holds.

use std::fmt::Write as _;

use crate::report::{Report, ScenarioResult, StepResult, Tick};

/// Red: the origin without moat.
const UNPROTECTED: &str = "#c62828";
/// Green: the origin with moat.
const PROTECTED: &str = "#2e7d32";
/// Grey: the baseline, no attack.
const BASELINE: &str = "#757575";

/// How a value maps onto an axis.
#[derive(Clone, Copy, Debug)]
enum Scale {
    /// Linear from `min` to `max`.
    Linear { min: f64, max: f64 },
    /// Logarithmic from `min` to `max` (both > 0); values below `min` sit on it.
    Log { min: f64, max: f64 },
}

impl Scale {
    /// Where `value` falls, from 0 (axis start) to 1 (axis end), clamped.
    fn fraction(self, value: f64) -> f64 {
        let f = match self {
            Scale::Linear { min, max } => (value - min) / (max - min).max(f64::MIN_POSITIVE),
            Scale::Log { min, max } => {
                (value.max(min).log10() - min.log10()) / (max.log10() - min.log10()).max(1e-9)
            }
        };
        f.clamp(0.0, 1.0)
    }

    /// Labels for a few values along the axis.
    fn ticks(self) -> Vec<(f64, String)> {
        match self {
            Scale::Linear { min, max } => (0..=4)
                .map(|i| {
                    let v = min + (max - min) * f64::from(i) / 4.0;
                    (v, short(v))
                })
                .collect(),
            Scale::Log { min, max } => {
                let mut ticks = Vec::new();
                let mut v = 10f64.powf(min.log10().ceil());
                while v <= max * 1.0001 {
                    ticks.push((v, short(v)));
                    v *= 10.0;
                }
                ticks
            }
        }
    }
}

/// A number in few characters: 3, 30, 300, 3k, 30k, 3M.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.1}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// One plot area.
struct Panel {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    xs: Scale,
    ys: Scale,
}

impl Panel {
    fn point(&self, x: f64, y: f64) -> (f64, f64) {
        (
            self.x + self.w * self.xs.fraction(x),
            self.y + self.h * (1.0 - self.ys.fraction(y)),
        )
    }

    /// Frame, title, tick labels and the x axis's name.
    fn frame(&self, svg: &mut String, title: &str, x_name: &str, y_ticks: bool) {
        let _ = writeln!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#fafafa\" stroke=\"#bbb\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" font-weight=\"bold\">{title}</text>",
            self.x,
            self.y,
            self.w,
            self.h,
            self.x,
            self.y - 6.0
        );
        for (v, label) in self.xs.ticks() {
            let (px, _) = self.point(v, 0.0);
            let _ = writeln!(
                svg,
                "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#e0e0e0\"/>\n\
                 <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{label}</text>",
                self.y,
                self.y + self.h,
                self.y + self.h + 11.0
            );
        }
        if y_ticks {
            for (v, label) in self.ys.ticks() {
                let (_, py) = self.point(0.0, v);
                let _ = writeln!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"9\">{label}</text>",
                    self.x - 3.0,
                    py + 3.0
                );
            }
        }
        if !x_name.is_empty() {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\" fill=\"#555\">{x_name}</text>",
                self.x + self.w / 2.0,
                self.y + self.h + 22.0
            );
        }
    }

    /// A line through `points` with a dot on each, or nothing for no points.
    fn line(&self, svg: &mut String, points: &[(f64, f64)], color: &str, dashed: bool) {
        if points.is_empty() {
            return;
        }
        let mapped: Vec<(f64, f64)> = points.iter().map(|&(x, y)| self.point(x, y)).collect();
        let path: Vec<String> = mapped
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let dash = if dashed {
            " stroke-dasharray=\"5,3\""
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
            path.join(" ")
        );
        for (x, y) in mapped {
            let _ = writeln!(
                svg,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{color}\"/>"
            );
        }
    }

    /// A horizontal dashed grey line at `y` (the baseline's value).
    fn level(&self, svg: &mut String, y: f64) {
        let (_, py) = self.point(0.0, y);
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"{BASELINE}\" stroke-dasharray=\"2,3\"/>",
            self.x,
            self.x + self.w
        );
    }
}

/// The attack-rate axis every curve shares: frames sent per second, 10k to 3M, log scale.
const RATE_AXIS: Scale = Scale::Log { min: 1e4, max: 3e6 };

fn header(w: f64, h: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    )
}

fn legend(svg: &mut String, x: f64, y: f64, extra: &str) {
    let _ = writeln!(
        svg,
        "<text x=\"{x:.1}\" y=\"{y:.1}\"><tspan fill=\"{UNPROTECTED}\">&#9632; without moat</tspan>   \
         <tspan fill=\"{PROTECTED}\">&#9632; with moat</tspan>   <tspan fill=\"{BASELINE}\">&#8943; no attack</tspan>{extra}</text>"
    );
}

/// One scenario's curves: six panels against the attack rate sent (log scale), each with the
/// unprotected (red) and protected (green) steps and the baseline (grey dots) where it
/// applies.
pub fn curves(scenario: &ScenarioResult, baseline: Option<&StepResult>) -> String {
    const W: f64 = 960.0;
    const H: f64 = 580.0;
    let mut svg = header(W, H);
    let _ = writeln!(
        svg,
        "<text x=\"20\" y=\"24\" font-size=\"15\" font-weight=\"bold\">moat lab: {}</text>",
        scenario.scenario,
    );
    for (index, line) in wrap(&scenario.models, 150).iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text x=\"20\" y=\"{}\" font-size=\"11\" fill=\"#444\">{}</text>",
            40 + 14 * index,
            escape(line)
        );
    }
    legend(&mut svg, 20.0, 75.0, "");
    let spare_max = scenario
        .unprotected
        .iter()
        .chain(&scenario.protected)
        .chain(baseline)
        .map(|s| s.spare_rps)
        .fold(10.0, f64::max)
        * 1.1;
    type Metric = fn(&StepResult) -> f64;
    let panels: [(&str, Scale, Metric, bool); 6] = [
        (
            "first-time visitors served (%)",
            Scale::Linear {
                min: 0.0,
                max: 100.0,
            },
            |s| s.new_success_pct,
            true,
        ),
        (
            "returning visitors served (%)",
            Scale::Linear {
                min: 0.0,
                max: 100.0,
            },
            |s| s.success_pct,
            true,
        ),
        (
            "returning visitors' p99 (ms, log)",
            Scale::Log {
                min: 0.1,
                max: 3000.0,
            },
            |s| s.p99_ms,
            true,
        ),
        (
            "spare capacity (requests/s)",
            Scale::Linear {
                min: 0.0,
                max: spare_max,
            },
            |s| s.spare_rps,
            true,
        ),
        (
            "origin CPU in network work (%)",
            Scale::Linear {
                min: 0.0,
                max: 100.0,
            },
            |s| s.origin_softirq_pct,
            true,
        ),
        (
            "attack reaching the stack (pps, log)",
            Scale::Log { min: 1.0, max: 1e7 },
            |s| s.reached_pps,
            false,
        ),
    ];
    for (index, (title, ys, metric, has_baseline)) in panels.into_iter().enumerate() {
        let (col, row) = ((index % 3) as f64, (index / 3) as f64);
        let panel = Panel {
            x: 60.0 + col * 305.0,
            y: 115.0 + row * 235.0,
            w: 250.0,
            h: 165.0,
            xs: RATE_AXIS,
            ys,
        };
        panel.frame(&mut svg, title, "attack frames sent per second (log)", true);
        if has_baseline && let Some(base) = baseline {
            panel.level(&mut svg, metric(base));
        }
        for (steps, color) in [
            (&scenario.unprotected, UNPROTECTED),
            (&scenario.protected, PROTECTED),
        ] {
            let points: Vec<(f64, f64)> = steps.iter().map(|s| (s.sent_pps, metric(s))).collect();
            panel.line(&mut svg, &points, color, false);
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// Every scenario's visitor success against the attack rate, one small panel each: first-time
/// visitors (solid) and returning visitors (dashed), without (red) and with moat (green).
pub fn summary(report: &Report) -> String {
    const COLS: usize = 4;
    const PW: f64 = 200.0;
    const PH: f64 = 120.0;
    let rows = report.scenarios.len().div_ceil(COLS).max(1);
    let w = 40.0 + COLS as f64 * (PW + 40.0);
    let h = 90.0 + rows as f64 * (PH + 60.0);
    let mut svg = header(w, h);
    let _ = writeln!(
        svg,
        "<text x=\"20\" y=\"24\" font-size=\"15\" font-weight=\"bold\">moat lab: visitors served (%) against the attack rate (frames sent per second, log)</text>"
    );
    legend(
        &mut svg,
        20.0,
        44.0,
        "   solid: first-time visitors   dashed: returning visitors",
    );
    for (index, scenario) in report.scenarios.iter().enumerate() {
        let (col, row) = ((index % COLS) as f64, (index / COLS) as f64);
        let panel = Panel {
            x: 40.0 + col * (PW + 40.0),
            y: 80.0 + row * (PH + 60.0),
            w: PW,
            h: PH,
            xs: RATE_AXIS,
            ys: Scale::Linear {
                min: 0.0,
                max: 100.0,
            },
        };
        panel.frame(&mut svg, &scenario.scenario, "", col == 0.0);
        for (steps, color) in [
            (&scenario.unprotected, UNPROTECTED),
            (&scenario.protected, PROTECTED),
        ] {
            let new: Vec<(f64, f64)> = steps
                .iter()
                .map(|s| (s.sent_pps, s.new_success_pct))
                .collect();
            let returning: Vec<(f64, f64)> =
                steps.iter().map(|s| (s.sent_pps, s.success_pct)).collect();
            panel.line(&mut svg, &new, color, false);
            panel.line(&mut svg, &returning, color, true);
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// The run second by second: returning and first-time visitors' success (top), the slowest
/// returning visitor's request due in each second (middle, log ms: a retransmission timeout
/// shows as a step to 200 ms or 1 s) and the attack reaching the origin's stack with the frames
/// lost at its full receive ring (bottom, log), each sweep marked in its phase's colour.
pub fn timeline(ticks: &[Tick]) -> String {
    const W: f64 = 1200.0;
    const H: f64 = 560.0;
    let mut svg = header(W, H);
    let _ = writeln!(
        svg,
        "<text x=\"20\" y=\"24\" font-size=\"15\" font-weight=\"bold\">moat lab: second by second</text>"
    );
    legend(&mut svg, 20.0, 44.0, "");
    let start = ticks.first().map_or(0.0, |t| t.t);
    let end = ticks.last().map_or(1.0, |t| t.t + 1.0).max(start + 1.0);
    let time = Scale::Linear {
        min: start,
        max: end,
    };
    let bands: [(&str, Scale); 3] = [
        (
            "visitors served (%: solid returning, dashed first-time)",
            Scale::Linear {
                min: 0.0,
                max: 100.0,
            },
        ),
        (
            "slowest request due in the second (ms, log)",
            Scale::Log {
                min: 0.1,
                max: 3000.0,
            },
        ),
        (
            "attack reaching the origin's stack (solid) and frames lost at its full ring (dashed), per second (log)",
            Scale::Log { min: 1.0, max: 1e7 },
        ),
    ];
    for (index, (title, ys)) in bands.into_iter().enumerate() {
        let panel = Panel {
            x: 60.0,
            y: 75.0 + index as f64 * 160.0,
            w: W - 90.0,
            h: 120.0,
            xs: time,
            ys,
        };
        panel.frame(&mut svg, title, "", true);
        for phase in ticks.chunk_by(|a, b| a.phase == b.phase && a.scenario == b.scenario) {
            let color = match phase[0].phase.as_str() {
                "unprotected" => UNPROTECTED,
                "protected" => PROTECTED,
                _ => BASELINE,
            };
            let (x0, _) = panel.point(phase[0].t, 0.0);
            let (x1, _) = panel.point(phase[phase.len() - 1].t + 1.0, 0.0);
            if index == 0 && phase[0].phase == "unprotected" {
                let _ = writeln!(
                    svg,
                    "<text x=\"{x0:.1}\" y=\"{:.1}\" font-size=\"9\">{}</text>",
                    panel.y + 10.0,
                    phase[0].scenario
                );
            }
            let _ = writeln!(
                svg,
                "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"3\" fill=\"{color}\"/>",
                panel.y + panel.h - 3.0,
                (x1 - x0).max(0.5)
            );
            let at = |t: &Tick| t.t + 0.5;
            match index {
                0 => {
                    let returning: Vec<(f64, f64)> = phase
                        .iter()
                        .filter_map(|t| t.success_pct.map(|v| (at(t), v)))
                        .collect();
                    let new: Vec<(f64, f64)> = phase
                        .iter()
                        .filter_map(|t| t.new_success_pct.map(|v| (at(t), v)))
                        .collect();
                    panel.line(&mut svg, &returning, color, false);
                    panel.line(&mut svg, &new, color, true);
                }
                1 => {
                    let slowest: Vec<(f64, f64)> = phase
                        .iter()
                        .filter_map(|t| t.slowest_ms.map(|v| (at(t), v)))
                        .collect();
                    panel.line(&mut svg, &slowest, color, false);
                }
                _ => {
                    let reached: Vec<(f64, f64)> =
                        phase.iter().map(|t| (at(t), t.reached_pps)).collect();
                    let ring: Vec<(f64, f64)> =
                        phase.iter().map(|t| (at(t), t.ring_drops_pps)).collect();
                    panel.line(&mut svg, &reached, color, false);
                    panel.line(&mut svg, &ring, color, true);
                }
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// `text` in lines of at most about `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// `text` safe inside SVG text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(phase: &str, sent_pps: f64, ok: f64) -> StepResult {
        StepResult {
            phase: phase.into(),
            sent_pps,
            success_pct: ok,
            new_success_pct: ok,
            p99_ms: 3.0,
            ..StepResult::default()
        }
    }

    fn scenario() -> ScenarioResult {
        ScenarioResult {
            scenario: "spoofed-syn".into(),
            models: "SYNs <spoofed> & more".into(),
            unprotected: vec![
                step("unprotected", 3e4, 100.0),
                step("unprotected", 1e6, 40.0),
            ],
            protected: vec![step("protected", 3e4, 100.0), step("protected", 1e6, 100.0)],
        }
    }

    #[test]
    fn curves_draw_both_phases_in_every_panel_and_the_baseline() {
        let base = step("baseline", 0.0, 100.0);
        let svg = curves(&scenario(), Some(&base));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<polyline").count(),
            12,
            "two lines in six panels"
        );
        assert_eq!(
            svg.matches("stroke-dasharray=\"2,3\"").count(),
            5,
            "the baseline in every panel but the attack's"
        );
        assert!(svg.contains("SYNs &lt;spoofed&gt; &amp; more"), "escaped");
        assert_eq!(wrap("aa bb cc dd", 5), ["aa bb", "cc dd"]);
    }

    #[test]
    fn points_follow_their_scales() {
        let panel = Panel {
            x: 0.0,
            y: 0.0,
            w: 300.0,
            h: 100.0,
            xs: RATE_AXIS,
            ys: Scale::Linear {
                min: 0.0,
                max: 100.0,
            },
        };
        assert_eq!(panel.point(1e4, 100.0), (0.0, 0.0));
        assert_eq!(panel.point(3e6, 0.0), (300.0, 100.0));
        // One decade of the 2.48 decades from 10k to 3M.
        let (x, y) = panel.point(1e5, 50.0);
        let decade = 300.0 / (3e6f64.log10() - 4.0);
        assert!(
            (x - decade).abs() < 1e-9 && (y - 50.0).abs() < 1e-9,
            "{x} {y}"
        );
        assert_eq!(panel.point(10.0, 500.0), (0.0, 0.0), "clamped to the frame");
    }

    #[test]
    fn summary_has_one_panel_per_scenario_and_timeline_three_bands() {
        let report = Report {
            baseline: None,
            scenarios: vec![scenario(), scenario(), scenario()],
            timeline: vec![
                Tick {
                    t: 0.0,
                    phase: "unprotected".into(),
                    scenario: "spoofed-syn".into(),
                    success_pct: Some(90.0),
                    slowest_ms: Some(1000.0),
                    ..Tick::default()
                },
                Tick {
                    t: 1.0,
                    phase: "protected".into(),
                    scenario: "spoofed-syn".into(),
                    success_pct: Some(100.0),
                    new_success_pct: Some(100.0),
                    slowest_ms: Some(2.0),
                    ..Tick::default()
                },
            ],
        };
        let svg = summary(&report);
        assert_eq!(svg.matches("font-weight=\"bold\">spoofed-syn").count(), 3);
        assert_eq!(svg.matches("<polyline").count(), 12, "four lines per panel");
        let svg = timeline(&report.timeline);
        assert_eq!(
            svg.matches("<polyline").count(),
            2 + 1 + 1 + 2 + 1 + 2,
            "per phase: success (returning; both kinds in the protected second), slowest, attack \
             and ring drops"
        );
    }
}
