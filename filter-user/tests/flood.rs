//! The flood generator: live frames leave the attacker's interface with rewritten sources and
//! valid checksums, and moat counts every one it receives.

#[expect(
    dead_code,
    reason = "each test crate uses part of the shared support module"
)]
mod support;

use std::{sync::atomic::AtomicBool, time::Duration};

use filter_common::flood::{FloodConfig, L4_TCP};
use moat::lab::{flood, traffic};
use support::{Pair, count, require_root, stats_json};

#[test]
fn generator_sends_spoofed_syns_that_moat_counts() {
    require_root();
    let pair = Pair::create();
    let _daemon = pair.start(&[]);
    let template = traffic::syn_frame(
        &pair.client_end,
        "198.19.0.0".parse().expect("literal"),
        &pair.origin_end,
        80,
    );
    let mut src_base_be = [0u8; 16];
    src_base_be[..4].copy_from_slice(&[198, 19, 0, 0]);
    let plan = flood::FloodPlan {
        template,
        config: FloodConfig {
            src_base_be,
            src_count: 10_000,
            l3_offset: 14,
            l4_offset: 34,
            ip_version: 4,
            l4_kind: L4_TCP,
            random_src_port: 1,
            ..FloodConfig::default()
        },
    };
    let stop = AtomicBool::new(false);
    let report = flood::flood(
        &pair.client,
        &pair.client_end.iface,
        &plan,
        50_000,
        Duration::from_secs(1),
        &stop,
    )
    .expect("flood");
    assert!(report.sent > 1000, "the generator ran: {report:?}");
    let stats = stats_json(&pair.origin_end.iface);
    let total = stats["total"]["packets"].as_u64().expect("total");
    assert_eq!(
        total, report.sent,
        "every generated frame reached the filter once"
    );
    let judged = count(&stats, "pass", "pass").0 + count(&stats, "drop", "flood_syn").0;
    assert_eq!(
        judged, report.sent,
        "every frame parsed as a well-formed SYN (checksums and lengths intact): {stats}"
    );
}
