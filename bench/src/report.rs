//! The benchmark's report: the machine, the targets with PASS or MISS, and one table per
//! section, rendered as the markdown `moat-bench` prints and writes to BENCHMARKS.md. Ratios
//! are computed here from figures of the same run; nothing is measured here.

use std::{fmt::Write as _, time::Duration};

use super::{
    Options,
    control_plane::{self, ControlReport},
    cost::{CHUNKS, CostReport, CostRow},
    crowdsec::{CrowdSecReport, Spread},
    machine::Machine,
    scaling::ScalingReport,
    targets::{self, Target},
    throughput::{FloodKind, Ratio, Receiver, ThroughputReport},
};

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// What was asked for.
    pub options: Options,
    /// Cost per path, if that section ran.
    pub cost: Option<CostReport>,
    /// Scaling, if that section ran.
    pub scaling: Option<ScalingReport>,
    /// Throughput, if that section ran.
    pub throughput: Option<ThroughputReport>,
    /// Control plane, if that section ran.
    pub control: Option<ControlReport>,
    /// The CrowdSec bouncer, if that section ran.
    pub crowdsec: Option<CrowdSecReport>,
    /// How long the run took.
    pub elapsed: Duration,
}

/// `n` with thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Bytes as B, KiB, MiB or GiB.
pub fn bytes(n: u64) -> String {
    if n < 1 << 10 {
        format!("{n} B")
    } else if n < 1 << 20 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else if n < 1 << 30 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    }
}

/// A ratio as `1.23×`.
pub fn times(ratio: f64) -> String {
    format!("{ratio:.2}×")
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

impl Report {
    /// The targets judged on this run (those whose sections ran).
    pub fn targets(&self) -> Vec<Target> {
        targets::judge(self)
    }

    /// The report as markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let o = &self.options;
        let _ = writeln!(out, "# moat benchmarks\n");
        let _ = writeln!(
            out,
            "Written by `cargo xtask bench` (`moat-bench --out BENCHMARKS.md`) from one run on \
             {}. Every ratio compares figures measured in that same run, because absolute \
             figures on a shared virtual machine move from run to run; the absolute figures \
             are beside them for context.\n",
            m.date
        );
        let _ = writeln!(out, "## Machine\n");
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| Kernel | Linux {} |", m.kernel);
        let _ = writeln!(out, "| CPU | {} |", m.cpu);
        let _ = writeln!(out, "| Cores | {} |", m.cores);
        let _ = writeln!(out, "| Memory | {} |", bytes(m.memory_bytes));
        let _ = writeln!(out, "| Date | {} |", m.date);
        let _ = writeln!(
            out,
            "| Run | {:.0} s in all; BPF_PROG_TEST_RUN {} repetitions per case per round (in {} \
             calls in section 1), median of {} rounds; floods of {:.0} s, median of {} rounds |\n",
            self.elapsed.as_secs_f64(),
            thousands(u64::from(o.repeat)),
            CHUNKS,
            o.rounds,
            o.flood.as_secs_f64(),
            o.flood_rounds
        );
        self.write_targets(&mut out);
        if let Some(cost) = &self.cost {
            write_cost(&mut out, cost);
        }
        if let Some(throughput) = &self.throughput {
            write_throughput(&mut out, throughput);
        }
        if self.scaling.is_some() || self.throughput.is_some() {
            write_scaling(&mut out, self.scaling.as_ref(), self.throughput.as_ref());
        }
        if let Some(control) = &self.control {
            write_control(&mut out, control);
        }
        if let Some(crowdsec) = &self.crowdsec {
            write_crowdsec(&mut out, crowdsec);
        }
        out
    }

    fn write_targets(&self, out: &mut String) {
        let targets = self.targets();
        if targets.is_empty() {
            return;
        }
        let _ = writeln!(out, "## Targets\n");
        let _ = writeln!(
            out,
            "Goals for this report, never timed tests. Throughput targets are judged on the \
             receiving side's cost per packet (the sender's own cost taken out, see section \
             2).\n"
        );
        let _ = writeln!(
            out,
            "| Target | Measured | Result | Why not |\n|---|---|---|---|"
        );
        for target in targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                target.goal,
                target.measured,
                if target.pass { "PASS" } else { "MISS" },
                if target.pass { "" } else { target.why.as_str() }
            );
        }
        let _ = writeln!(out);
    }
}

/// A ratio with its spread over rounds: `1.23× (1.10–1.31 by round)`.
pub fn times_spread(ratio: &Ratio) -> String {
    if ratio.low.is_finite() && ratio.high.is_finite() {
        format!(
            "{} ({:.2}–{:.2} by round)",
            times(ratio.median),
            ratio.low,
            ratio.high
        )
    } else {
        times(ratio.median)
    }
}

/// An optional figure in ns, or a dash.
fn optional_ns(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_string(), |ns| format!("{ns:.1}"))
}

fn write_cost(out: &mut String, cost: &CostReport) {
    let _ = writeln!(out, "## 1. Cost per packet (BPF_PROG_TEST_RUN)\n");
    let _ = writeln!(
        out,
        "CPU time per packet of the calling thread across a BPF_PROG_TEST_RUN call of {} \
         repetitions, on one pinned CPU. In each round every case runs one such call in turn, \
         {} times over, so the cases a ratio pairs are timed milliseconds apart; the round's \
         figure is a case's fastest call, since what a noisy machine adds (an interrupt, a \
         stolen slice) only ever adds time. Median of {} rounds. moat runs the shipped policy (`Config::default()`) on a fixed clock (its \
         clock calibrated as `moat run` calibrates it, so a packet that needs the time reads \
         jiffies as a live one does, then takes the fixed time instead) with {} IPv4 and {} IPv6 deny prefixes loaded. Every timed moat packet is checked on \
         moat's own counters to have taken its row's path; xdp-filter (Debian's xdp-tools, \
         program `{}`, all features) is checked on its return value. Ratios are to two floors, \
         timed in the same rounds on the same frame (an established TCP segment): XDP_DROP, the \
         trivial program that drops every frame unread, and parse + count, which parses the \
         frame with moat's own parser and counts it in a per-CPU counter as moat does (checked \
         on its counters to have parsed every timed frame), runs no policy and drops it. \
         Sources are 198.19.x.7 and \
         2001:db8:0:x::7; the IPv6 denylist lies in 2001:db8:8000::/33, so IPv6 trie walks end \
         sooner than IPv4 ones, whose list is spread over all of unicast space. moat looks \
         sockets up in the test run's namespace, the calling thread's: every case runs from a \
         thread inside a namespace with listeners on port 80, a real connection from each \
         established source and net.ipv4.tcp_syncookies = 2 (the listener wants a cookie for \
         every SYN, as when its queue is full under a flood). The answered SYN is rewritten in \
         the frame the repetitions of one call share, so it is timed per call instead: {} calls \
         of one repetition, less as many of the floor's, plus the floor's cost per packet.\n",
        thousands(u64::from(cost.repeat)),
        cost.chunks,
        cost.rounds,
        thousands(cost.deny_prefixes as u64),
        thousands(cost.deny_prefixes as u64),
        cost.xdp_filter_program,
        thousands(u64::from(cost.calls))
    );
    let _ = writeln!(
        out,
        "| Path | moat IPv4 ns | × floor | × parse+count | moat IPv6 ns | × floor | × \
         parse+count | xdp-filter IPv4 ns | xdp-filter IPv6 ns | moat speed ÷ xdp-filter's | \
         xdp-filter rule | Notes |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    let _ = writeln!(
        out,
        "| floor: XDP_DROP | {:.1} | 1.00× | {} | {:.1} | 1.00× | {} | — | — | — | — | the \
         harness's own cost |",
        cost.floor_v4,
        times(ratio(cost.floor_v4, cost.parse_count_v4)),
        cost.floor_v6,
        times(ratio(cost.floor_v6, cost.parse_count_v6)),
    );
    let _ = writeln!(
        out,
        "| floor: parse + count | {:.1} | {} | 1.00× | {:.1} | {} | 1.00× | — | — | — | — | \
         moat's parser and a per-CPU counter, no policy, every frame dropped |",
        cost.parse_count_v4,
        times(ratio(cost.parse_count_v4, cost.floor_v4)),
        cost.parse_count_v6,
        times(ratio(cost.parse_count_v6, cost.floor_v6)),
    );
    for row in &cost.rows {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            row.path,
            row.moat_v4,
            times(ratio(row.moat_v4, cost.floor_v4)),
            times(ratio(row.moat_v4, cost.parse_count_v4)),
            row.moat_v6,
            times(ratio(row.moat_v6, cost.floor_v6)),
            times(ratio(row.moat_v6, cost.parse_count_v6)),
            optional_ns(row.xdp_filter_v4),
            optional_ns(row.xdp_filter_v6),
            speed_against_xdp_filter(row),
            row.xdp_filter_rule.unwrap_or("no equivalent"),
            row.note
        );
    }
    let _ = writeln!(out);
}

/// moat's speed relative to xdp-filter's on a row (IPv4, IPv6), or a dash.
fn speed_against_xdp_filter(row: &CostRow) -> String {
    match (row.xdp_filter_v4, row.xdp_filter_v6) {
        (Some(v4), Some(v6)) => format!(
            "{} / {}",
            times(ratio(v4, row.moat_v4)),
            times(ratio(v6, row.moat_v6))
        ),
        _ => "—".to_string(),
    }
}

fn write_throughput(out: &mut String, throughput: &ThroughputReport) {
    let _ = writeln!(out, "## 2. Throughput over veth\n");
    let senders: Vec<String> = FloodKind::ALL
        .iter()
        .zip(&throughput.sender_ns)
        .map(|(kind, ns)| format!("{ns:.1} ns per packet ({})", kind.label()))
        .collect();
    let _ = writeln!(
        out,
        "Floods to port 80, where the origin has a listener, from 65,536 spoofed sources \
         (198.19.0.0/16, random source address and port per packet), sent by moat's \
         live-frames generator (BPF_PROG_TEST_RUN with XDP_TX) out of a client namespace's veth \
         end for {:.0} s per round, {} rounds, receivers taking turns in each round (A B A B), \
         so each ratio is also given per round, pairing the two receivers' figures of the same \
         round. XDP receivers are attached in {} mode to the origin namespace's end. A veth end \
         receives on its sender's CPU, in the sender's softirq, so one pinned core does both; \
         its CPU time per packet (the sending thread plus that core's ksoftirqd, so other \
         processes preempting it do not count) is the \"core\" figure. The sender alone \
         (frames refused at transmit, timed in every round) costs {}; a receiver's cost is the \
         core's less that, and its receive-side rate the inverse, what one core would handle \
         if it only received. What a receiver disposed of is counted on its own side: XDP drop \
         counters, moat's own counters where they name the path (answered/syn_cookie for the \
         SYN cookies, drop/cookie_bad for the ACK flood, drop/rate_udp in section 3's live \
         series), nftables counters, the stack's received packets.\n",
        throughput.flood.as_secs_f64(),
        throughput.rounds,
        throughput.xdp_mode,
        senders.join(", ")
    );
    for kind in FloodKind::ALL {
        let heading = match kind {
            FloodKind::Syn => "### SYN flood\n",
            FloodKind::Ack => "### ACK flood at no connection\n",
        };
        let _ = writeln!(out, "{heading}");
        let _ = writeln!(
            out,
            "| Receiver | Disposed of (dropped; stack: received; cookies: answered) | Core \
             ns/packet, each round | Core Mpps (sender + receiver) | Receive side ns/packet | \
             Receive side Mpps | × floor (by round) | × nftables netdev (by round) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for result in throughput
            .receivers
            .iter()
            .filter(|r| r.receiver.flood() == kind)
        {
            let receiver = result.receiver;
            let rounds: Vec<String> = result
                .rounds_ns
                .iter()
                .map(|ns| format!("{ns:.0}"))
                .collect();
            let against = |reference: Receiver| {
                throughput
                    .speed_ratio(receiver, reference)
                    .map_or_else(|| "—".to_string(), |r| times_spread(&r))
            };
            let _ = writeln!(
                out,
                "| {} | {:.1}% | {} | {:.2} | {:.1} | {:.2} | {} | {} |",
                receiver.label(),
                result.disposed_share * 100.0,
                rounds.join(" / "),
                result.core_pps / 1e6,
                result.receive_ns,
                result.receive_pps() / 1e6,
                against(receiver.floor()),
                against(receiver.nftables()),
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "moat's shipped policy answers a spoofed SYN to a listener with a SYN cookie once the \
         listener's SYN queue is full (`syn_cookies = \"auto\"`; net.ipv4.tcp_syncookies = 1 \
         here, so the first SYNs of the run went to the kernel): the SYN is rewritten into the \
         SYN-ACK in place and sent back with XDP_TX. veth drops XDP_TX frames unless the peer \
         has an XDP program, so for that receiver and for the bare stack the client's end runs \
         the XDP_DROP floor, which takes the answers (moat's, or the kernel's own SYN-ACKs) at \
         next to no cost on the same core, as a NIC's transmit would. No spoofed source gets per-source state. The ACK flood matches no \
         connection: at the listener its acknowledgement fails the kernel's cookie check \
         (cookie_bad), in full, since the listener overflowed moments before in the SYN \
         flood's turns, as it does while a SYN flood is on; an ACK to a port with no listener \
         costs less (no_socket, see the cost table).\n"
    );
}

fn write_scaling(
    out: &mut String,
    scaling: Option<&ScalingReport>,
    throughput: Option<&ThroughputReport>,
) {
    let _ = writeln!(out, "## 3. Scaling\n");
    if let Some(scaling) = scaling
        && let Some(first) = scaling.deny.first()
    {
        let _ = writeln!(out, "### Deny prefixes\n");
        let _ = writeln!(
            out,
            "IPv4 denylist grown in the cost section's object (random /32, /24 and /20 \
             prefixes over unicast space), timed at each size: a SYN from a denied source \
             (hit) and an established segment from a source on no list (allowlist and \
             denylist misses, then the other stages and the socket lookup that finds its \
             connection). Memory is the trie's `memlock` in its \
             fdinfo.\n"
        );
        let _ = writeln!(
            out,
            "| Prefixes | Hit ns | × smallest | Miss (pass) ns | × smallest | Floor ns | \
             IPv4 trie memory |\n|---:|---:|---:|---:|---:|---:|---:|"
        );
        for point in &scaling.deny {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {} | {:.1} | {} | {:.1} | {} |",
                thousands(point.prefixes as u64),
                point.hit_ns,
                times(ratio(point.hit_ns, first.hit_ns)),
                point.miss_ns,
                times(ratio(point.miss_ns, first.miss_ns)),
                point.floor_ns,
                bytes(point.trie_bytes)
            );
        }
        let _ = writeln!(out);
    }
    let tracked = throughput.map(|t| t.tracked.as_slice()).unwrap_or(&[]);
    let sources = scaling.map(|s| s.sources.as_slice()).unwrap_or(&[]);
    if !sources.is_empty() || !tracked.is_empty() {
        let _ = writeln!(out, "### Tracked sources\n");
        let _ = writeln!(
            out,
            "BPF_PROG_TEST_RUN: a new connection (every stage, the per-source SYN limit out of \
             reach) from one tracked source that completed a handshake, repeated, while the \
             table holds more and more sources. Live: moat on veth with the largest number of \
             sources tracked beforehand, each over its UDP limit (automatic bans off), flooded \
             by UDP datagrams to a bound port from a random one of the row's first that many \
             per packet (IPv6 sources tracked per address), the sizes taking turns in every \
             round (A B A B), so the target's ratio is also given per round; spoofed SYNs no \
             longer create per-source state, traffic a socket takes does. Receive-side cost as in section 2. One access: what one \
             random memory access costs at that many sources, timed in the same run by a \
             pointer chase in userspace through as many 128-byte sets of a buffer the size of \
             the live table, on 4 KiB pages as the kernel's table is (each load waits for the \
             one before, as a lookup waits for its set; a packet can hide part of such a miss \
             behind its other work). Memory: the sources table created with that capacity (an \
             array of two-way sets, allocated whole).\n"
        );
        let _ = writeln!(
            out,
            "| Sources | Test run ns | × smallest | Floor ns | Live ns | × smallest | Live \
             dropped | One access ns | Sources table memory |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let count = sources.len().max(tracked.len());
        for index in 0..count {
            let test_run = sources.get(index);
            let live = tracked.get(index);
            let size = test_run
                .map(|p| p.sources)
                .or(live.map(|p| p.sources))
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(u64::from(size)),
                test_run.map_or("—".to_string(), |p| format!("{:.1}", p.tracked_ns)),
                test_run.map_or("—".to_string(), |p| times(ratio(
                    p.tracked_ns,
                    sources[0].tracked_ns
                ))),
                test_run.map_or("—".to_string(), |p| format!("{:.1}", p.floor_ns)),
                live.map_or("—".to_string(), |p| format!("{:.0}", p.receive_ns)),
                live.map_or("—".to_string(), |p| times(ratio(
                    p.receive_ns,
                    tracked[0].receive_ns
                ))),
                live.map_or("—".to_string(), |p| format!(
                    "{:.1}%",
                    p.disposed_share * 100.0
                )),
                live.map_or("—".to_string(), |p| format!("{:.0}", p.access_ns)),
                test_run.map_or("—".to_string(), |p| bytes(p.table_bytes)),
            );
        }
        let _ = writeln!(out);
    }
    if let Some(scaling) = scaling
        && !scaling.maps.is_empty()
    {
        let _ = writeln!(out, "### Memory of every map\n");
        let _ = writeln!(
            out,
            "The cost section's object: shipped capacities, the large denylist in both \
             families. Capacity is each map's `max_entries` as created (a ring buffer's bytes), \
             checked against what `moat run` creates with the shipped configuration. Kernel \
             memory is `memlock` in each map's fdinfo (preallocated hashes count their \
             capacity, tries their entries).\n"
        );
        let _ = writeln!(out, "| Map | Capacity | Memory |\n|---|---:|---:|");
        for map in &scaling.maps {
            let shipped = match map.shipped {
                Some(shipped) if shipped == map.capacity => String::new(),
                Some(shipped) => format!(" (`moat run` ships {})", thousands(u64::from(shipped))),
                None => " (not in the shipped object)".to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {}{shipped} | {} |",
                map.name,
                thousands(u64::from(map.capacity)),
                bytes(map.bytes)
            );
        }
        let total: u64 = scaling.maps.iter().map(|m| m.bytes).sum();
        let _ = writeln!(out, "| total | | {} |\n", bytes(total));
    }
}

fn write_control(out: &mut String, control: &ControlReport) {
    let _ = writeln!(out, "## 4. Control plane\n");
    let _ = writeln!(
        out,
        "Against a running `moat run` (native mode on a veth end, no traffic).\n"
    );
    let _ = writeln!(out, "| Operation | Time |\n|---|---:|");
    let median = control.deny_median();
    let (fastest, slowest) = control.deny_spread();
    let rounds: Vec<String> = control
        .deny_loads
        .iter()
        .map(|load| format!("{:.2}", load.seconds))
        .collect();
    let _ = writeln!(
        out,
        "| `moat deny add --file` with {} IPv4 prefixes, each round into a fresh `moat run` | \
         {:.2} s, median of {} rounds ({} s; {:.2}–{:.2}); the median round: {:.2} s of CPU in \
         userspace, {:.2} s in the kernel |",
        thousands(control.deny_prefixes as u64),
        median.seconds,
        control.deny_loads.len(),
        rounds.join(" / "),
        fastest,
        slowest,
        median.user_seconds,
        median.system_seconds
    );
    let _ = writeln!(
        out,
        "| ban {} sources (`bans::PinnedBans::add`, what `moat ban add` runs per address) | \
         {:.2} s |",
        thousands(control.bans as u64),
        control.ban_seconds
    );
    let _ = writeln!(
        out,
        "| one `moat ban add` run (process start included) | {:.1} ms |",
        control.ban_command_seconds * 1e3
    );
    let _ = writeln!(
        out,
        "| one `moat ban list` run with the {} bans (process start included, output discarded) \
         | {:.1} ms |",
        thousands(control.bans as u64),
        control.ban_list_seconds * 1e3
    );
    let _ = writeln!(
        out,
        "| the daemon's CPU time per housekeeping round (every 10 s: it forgets expired bans, \
         counts the tables), with the {} bans, over {} rounds | {:.1} ms |\n",
        thousands(control.bans as u64),
        control_plane::HOUSEKEEPING_ROUNDS,
        control.housekeeping_cpu_seconds * 1e3
    );
    let _ = writeln!(
        out,
        "| Daemon resident memory (VmRSS, the least of ten readings over a second: a table \
         walk maps its table for a few milliseconds) | |\n|---|---:|"
    );
    let _ = writeln!(
        out,
        "| after attaching | {} |",
        bytes(control.rss_idle_bytes)
    );
    let _ = writeln!(
        out,
        "| after the denylist and the bans | {} |",
        bytes(control.rss_loaded_bytes)
    );
    let _ = writeln!(out, "| peak (VmHWM) | {} |", bytes(control.rss_peak_bytes));
    let _ = writeln!(out);
}

/// A spread as `median (low–high)` with `digits` decimals.
pub fn spread(spread: &Spread, digits: usize) -> String {
    format!(
        "{:.digits$} ({:.digits$}–{:.digits$})",
        spread.median, spread.low, spread.high
    )
}

fn write_crowdsec(out: &mut String, crowdsec: &CrowdSecReport) {
    let _ = writeln!(
        out,
        "## 5. CrowdSec bouncer
"
    );
    let mix: Vec<String> = crowdsec
        .mix
        .iter()
        .map(|(kind, count)| format!("{} {}", thousands(*count as u64), kind.label()))
        .collect();
    let _ = writeln!(
        out,
        "A real CrowdSec Local API (Debian's crowdsec, API only, SQLite) on loopback in the \
         origin namespace holds {} ban decisions, imported once with `cscli decisions import` \
         ({}; {:.1} s, the LAPI's work). Each round starts a fresh `moat run` (native mode on a \
         veth end, no traffic) with a `[crowdsec]` section and a fresh bouncer key, so its first \
         pull (`startup=true`) brings every decision, then stops it with SIGTERM (the tries go \
         with the pins, so every round applies the whole list). What each figure is: \
         **parse + apply** is the daemon's own `took_ms` for that pull (parsing the reply and \
         writing the tries on its blocking pool, timed from when the HTTP body had arrived), \
         with the reply's `bytes`; **plain fetch** is the bench's own HTTP/1.0 client getting the \
         same startup stream with another fresh key just before, i.e. the LAPI's time to serve \
         it, not moat's; **start → all active** runs from spawning `moat run` (program load and \
         attach included, the attach time beside it) to the first `/metrics` scrape, and the \
         first `moat stats --json` (polled every 50 ms; the daemon publishes these figures \
         once a second), that count every decision active. `/metrics` is scraped in a loop \
         (10 ms apart, each with a 1 s connect and 5 s answer timeout) from the daemon's start \
         until 0.5 s after all are active; the scrape figures count those started after the \
         attach (one sent while the daemon loads waits for its start-up); **during apply** are \
         the scrapes overlapping the `took_ms` before the first scrape that showed all \
         active.\n",
        thousands(crowdsec.decisions as u64),
        mix.join(", "),
        crowdsec.import_seconds
    );
    let _ = writeln!(
        out,
        "| Round | Parse + apply (took_ms) | Reply | Plain fetch | Start → attached | Start → \
         all active (/metrics) | Start → all active (moat stats) | Scrapes (failed) | Scrape \
         median | Slowest scrape | During apply: scrapes, slowest | Peak RSS |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let optional =
        |value: Option<f64>| value.map_or_else(|| "never".to_string(), |s| format!("{s:.2} s"));
    for (index, round) in crowdsec.rounds.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} ms | {} | {:.2} s ({}) | {:.2} s | {} | {} | {} ({}) | {:.1} ms | {:.1} ms \
             at {:.2} s | {}, {:.1} ms | {} |",
            index + 1,
            round.took_ms,
            bytes(round.bytes),
            round.fetch_seconds,
            bytes(round.fetch_bytes),
            round.attach_seconds,
            optional(round.metrics_active_seconds),
            optional(round.stats_active_seconds),
            round.scrapes,
            round.scrapes_failed,
            round.scrape_median_ms,
            round.scrape_slowest_ms,
            round.scrape_slowest_at_seconds,
            round.scrapes_during_apply,
            round.scrape_slowest_during_apply_ms,
            bytes(round.rss_peak_bytes)
        );
    }
    let active = |value: Option<f64>| value.unwrap_or(f64::NAN);
    let _ = writeln!(
        out,
        "| median (min–max) | {} ms | | {} s | {} s | {} s | {} s | | {} ms | {} ms | {} ms | \
         |\n",
        spread(&crowdsec.spread(|r| r.took_ms as f64), 0),
        spread(&crowdsec.spread(|r| r.fetch_seconds), 2),
        spread(&crowdsec.spread(|r| r.attach_seconds), 2),
        spread(&crowdsec.spread(|r| active(r.metrics_active_seconds)), 2),
        spread(&crowdsec.spread(|r| active(r.stats_active_seconds)), 2),
        spread(&crowdsec.spread(|r| r.scrape_median_ms), 1),
        spread(&crowdsec.spread(|r| r.scrape_slowest_ms), 1),
        spread(&crowdsec.spread(|r| r.scrape_slowest_during_apply_ms), 1),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_counts_and_sizes() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_048_576), "1,048,576");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(bytes(24 << 30), "24.0 GiB");
    }
}
