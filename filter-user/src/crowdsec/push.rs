//! moat as a signal source: each ban the operator adds with `moat ban add` goes to the LAPI as
//! an alert carrying a ban decision (scenario `moat/manual`, the ban's remaining length), so
//! every bouncer of the fleet drops that source too; when the operator lifts it early
//! (`moat ban del`), the decision is deleted from the LAPI again. The bans the program issues by
//! itself are withheld: each rests on traffic (SYNs, UDP, ICMP, other) that anyone can send with
//! a visitor's address, and the fleet's bouncers (moat's, or a firewall bouncer) would drop
//! everything from it, so a spoofed flood in a visitor's name would cut that visitor off from
//! every origin. The push still takes a program's ban that covers TCP, should one ever come.
//!
//! The daemon hands signals over with [`Pusher::offer`], which never waits: the queue is
//! bounded ([`QUEUE`]) and a signal that finds it full is counted as failed. The pushing task
//! sends what queued up in order, alerts in batches of at most [`BATCH`], logs in when its
//! token is missing or about to expire, and retries a refused or unreachable request with a
//! doubling backoff a few times before counting it as failed.

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use filter_common::{
    Reason,
    source::{BAN_MANUAL, Ban, SourceKey},
};
use log::warn;
use tokio::sync::mpsc;

use super::{
    credentials::Credentials,
    decisions::Scope,
    status::Status,
    watcher::{BanAlert, Retraction, Watcher},
};

/// The scenario of a manual ban's alert.
pub const MANUAL_SCENARIO: &str = "moat/manual";

/// What the pushing task sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A ban, as an alert.
    Alert(BanAlert),
    /// A pushed ban lifted early: its decision comes off the LAPI.
    Retract(Retraction),
}

/// Signals waiting to be sent, at most.
pub const QUEUE: usize = 10_000;

/// Alerts per `POST v1/alerts`, at most.
pub const BATCH: usize = 100;

/// How long a push may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts per batch before its alerts count as failed.
const ATTEMPTS: u32 = 4;

/// The daemon's end of the queue.
#[derive(Clone, Debug)]
pub struct Pusher {
    queue: mpsc::Sender<Signal>,
    status: Arc<Status>,
}

impl Pusher {
    /// Queues one signal without waiting; a full queue counts it as failed.
    pub fn offer(&self, signal: Signal) {
        if self.queue.try_send(signal).is_err() {
            self.status.alerts_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a ban that is not pushed (one whose traffic anyone could have sent).
    pub fn withhold(&self) {
        self.status.alerts_withheld.fetch_add(1, Ordering::Relaxed);
    }

    /// Offers the program's `ban` of `key` if the fleet may take it on: it covers TCP, so its
    /// source cannot be spoofed (the program issues none such today); counts it as withheld
    /// otherwise. `clock` gives the program's time and IPv6 prefix, read only for a ban that is
    /// pushed; `None` from it skips the ban.
    pub fn offer_ban(
        &self,
        key: &SourceKey,
        ban: &Ban,
        clock: impl FnOnce() -> Option<(u64, u32)>,
    ) {
        if !ban.covers_tcp() {
            self.withhold();
            return;
        }
        if let Some((now_ns, v6_prefix)) = clock() {
            self.offer(Signal::Alert(alert(key, ban, now_ns, v6_prefix)));
        }
    }

    /// Offers the operator's manual `ban` of `key` (the operator's word, which no packet can
    /// forge), at `now_ns` on the program's clock under `v6_prefix`.
    pub fn offer_manual(&self, key: &SourceKey, ban: &Ban, now_ns: u64, v6_prefix: u32) {
        self.offer(Signal::Alert(alert(key, ban, now_ns, v6_prefix)));
    }

    /// Takes back the manual ban of `key` the operator lifted early, under `v6_prefix`.
    pub fn retract_manual(&self, key: &SourceKey, v6_prefix: u32) {
        let (scope, value) = scope_and_value(key, v6_prefix);
        self.offer(Signal::Retract(Retraction {
            scenario: MANUAL_SCENARIO.to_string(),
            scope: scope.label(),
            value,
        }));
    }
}

/// Starts the pushing task for the machine in `credentials_file` (read now: a file that
/// cannot be read or parsed is reported and nothing is pushed).
pub fn start(
    credentials_file: &PathBuf,
    status: Arc<Status>,
) -> anyhow::Result<(Pusher, tokio::task::JoinHandle<()>)> {
    let text = std::fs::read_to_string(credentials_file).map_err(|error| {
        anyhow::anyhow!(
            "crowdsec.credentials_file: cannot read {}: {error}",
            credentials_file.display()
        )
    })?;
    let credentials = Credentials::parse(&text).map_err(|message| {
        anyhow::anyhow!(
            "crowdsec.credentials_file: {}: {message}",
            credentials_file.display()
        )
    })?;
    let endpoint = credentials
        .endpoint()
        .map_err(|message| anyhow::anyhow!("crowdsec.credentials_file url: {message}"))?;
    let scenarios = Reason::ALL
        .iter()
        .filter(|reason| reason.drops())
        .map(|reason| scenario(*reason))
        .chain([MANUAL_SCENARIO.to_string()])
        .collect();
    let watcher = Watcher::new(endpoint, credentials, scenarios);
    let (queue, pending) = mpsc::channel(QUEUE);
    let task = tokio::spawn(push_loop(watcher, pending, Arc::clone(&status)));
    Ok((Pusher { queue, status }, task))
}

/// Sends what queues up, in order, until the daemon drops its [`Pusher`]: the alerts between
/// two retractions in one request, each retraction in its own.
async fn push_loop(mut watcher: Watcher, mut pending: mpsc::Receiver<Signal>, status: Arc<Status>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut alerts = Vec::with_capacity(BATCH);
    while pending.recv_many(&mut batch, BATCH).await > 0 {
        for signal in batch.drain(..) {
            match signal {
                Signal::Alert(alert) => alerts.push(alert),
                Signal::Retract(retraction) => {
                    send_alerts(&mut watcher, &mut alerts, &status).await;
                    send_retraction(&mut watcher, &retraction, &status).await;
                }
            }
        }
        send_alerts(&mut watcher, &mut alerts, &status).await;
    }
}

/// Pushes `alerts` (emptied) in one request, retried with backoff; counts them.
async fn send_alerts(watcher: &mut Watcher, alerts: &mut Vec<BanAlert>, status: &Status) {
    if alerts.is_empty() {
        return;
    }
    let mut retry = Retry::new("pushing bans to", alerts.len());
    let sent = loop {
        match watcher.push(alerts, PUSH_TIMEOUT).await {
            Ok(()) => break true,
            Err(error) => {
                if !retry.failed(&error).await {
                    break false;
                }
            }
        }
    };
    let counter = if sent {
        &status.alerts_pushed
    } else {
        &status.alerts_failed
    };
    counter.fetch_add(alerts.len() as u64, Ordering::Relaxed);
    alerts.clear();
}

/// Deletes `retraction`'s decisions, retried with backoff; counts it.
async fn send_retraction(watcher: &mut Watcher, retraction: &Retraction, status: &Status) {
    let mut retry = Retry::new("taking a lifted ban back from", 1);
    let deleted = loop {
        match watcher.retract(retraction, PUSH_TIMEOUT).await {
            Ok(_) => break true,
            Err(error) => {
                if !retry.failed(&error).await {
                    break false;
                }
            }
        }
    };
    let counter = if deleted {
        &status.alerts_retracted
    } else {
        &status.alerts_failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The attempts at one request: up to [`ATTEMPTS`], with a doubling backoff.
struct Retry {
    doing: &'static str,
    signals: usize,
    attempt: u32,
    backoff: Duration,
}

impl Retry {
    /// The first attempt at `doing` the LAPI, for `signals` signals.
    fn new(doing: &'static str, signals: usize) -> Retry {
        Retry {
            doing,
            signals,
            attempt: 1,
            backoff: Duration::from_secs(1),
        }
    }

    /// Warns of `error`, then waits out the backoff; false when no attempt is left.
    async fn failed(&mut self, error: &super::lapi::LapiError) -> bool {
        warn!(
            "{} the crowdsec LAPI failed signals={} attempt={} error=\"{error}\"",
            self.doing, self.signals, self.attempt
        );
        if self.attempt >= ATTEMPTS {
            return false;
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff *= 2;
        self.attempt += 1;
        true
    }
}

/// The scenario of a ban for `reason`: `moat/rate_syn`, `moat/rate_udp`, ...
pub fn scenario(reason: Reason) -> String {
    format!("moat/{}", reason.label())
}

/// The scope and value of `key`'s ban under `v6_prefix`: an IPv4 source, or an IPv6 one when
/// bans are per address, as scope `Ip`; an IPv6 prefix (bans cut to `bans.ipv6_prefix`, a /64
/// by default) as scope `Range`.
fn scope_and_value(key: &SourceKey, v6_prefix: u32) -> (Scope, String) {
    if key.ip_version == 4 {
        let mut octets = [0u8; 4];
        octets.copy_from_slice(&key.addr_be[..4]);
        (Scope::Ip, IpAddr::from(octets).to_string())
    } else if v6_prefix >= 128 {
        (Scope::Ip, IpAddr::from(key.addr_be).to_string())
    } else {
        (
            Scope::Range,
            format!("{}/{v6_prefix}", IpAddr::from(key.addr_be)),
        )
    }
}

/// The alert for `ban` of `key` at `now_ns` (the program's clock), in the scope
/// [`scope_and_value`] gives: scenario `moat/manual` for a manual ban, `moat/<reason>` for the
/// program's.
pub fn alert(key: &SourceKey, ban: &Ban, now_ns: u64, v6_prefix: u32) -> BanAlert {
    let (scope, value) = scope_and_value(key, v6_prefix);
    let reason = Reason::from_u32(u32::from(ban.reason)).unwrap_or(Reason::Banned);
    let length =
        Duration::from_nanos(ban.until_ns.saturating_sub(now_ns)).max(Duration::from_secs(1));
    let (scenario, message) = if ban.flags & BAN_MANUAL != 0 {
        (
            MANUAL_SCENARIO.to_string(),
            format!(
                "moat's operator banned {value} for {}s (moat ban add)",
                length.as_secs()
            ),
        )
    } else {
        (
            scenario(reason),
            format!(
                "moat banned {value} for {}s: {} (offence {})",
                length.as_secs(),
                reason.describe(),
                ban.offences
            ),
        )
    };
    BanAlert {
        scenario,
        scope: scope.label(),
        message,
        value,
        duration: length,
        at: SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_become_alerts_with_their_scope_and_remaining_length() {
        let v4 = SourceKey::for_addr(
            "192.0.2.55".parse().expect("address"),
            filter_common::source::BAN_CLASS,
            64,
        );
        let ban = Ban {
            until_ns: 700_000_000_000,
            offences: 2,
            reason: Reason::RateSyn as u16,
            flags: 0,
        };
        let alert = alert(&v4, &ban, 100_000_000_000, 64);
        assert_eq!(alert.scenario, "moat/rate_syn");
        assert_eq!((alert.scope, alert.value.as_str()), ("Ip", "192.0.2.55"));
        assert_eq!(alert.duration, Duration::from_secs(600));
        let v6 = SourceKey::for_addr(
            "2001:db8:1:2:3::9".parse().expect("address"),
            filter_common::source::BAN_CLASS,
            64,
        );
        let alert = super::alert(&v6, &ban, 100_000_000_000, 64);
        assert_eq!(
            (alert.scope, alert.value.as_str()),
            ("Range", "2001:db8:1:2::/64")
        );
        let alert = super::alert(&v6, &ban, 800_000_000_000, 64);
        assert_eq!(
            alert.duration,
            Duration::from_secs(1),
            "an ended ban still lasts 1 s"
        );
        let manual = Ban {
            reason: Reason::Banned as u16,
            flags: BAN_MANUAL,
            ..ban
        };
        let alert = super::alert(&v4, &manual, 100_000_000_000, 64);
        assert_eq!(alert.scenario, "moat/manual");
        assert_eq!(
            alert.message,
            "moat's operator banned 192.0.2.55 for 600s (moat ban add)"
        );
    }
}
