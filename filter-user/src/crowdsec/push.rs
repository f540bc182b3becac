//! moat as a signal source: each automatic ban that covers TCP goes to the LAPI as an alert
//! carrying a ban decision (scenario `moat/<reason>`, the ban's remaining length), so every
//! bouncer of the fleet drops that source too. Such a ban is earned by SYNs from a source that
//! completed a handshake, so its address is the sender's own. A ban for UDP, ICMP or other
//! traffic is withheld: those packets can carry any source address, and the fleet's bouncers
//! (moat's, or a firewall bouncer) would drop everything from it, so a spoofed flood in a
//! visitor's name would cut that visitor off from every origin.
//!
//! The daemon hands bans over with [`Pusher::offer`], which never waits: the queue is bounded
//! ([`QUEUE`]) and a ban that finds it full is counted as failed. The pushing task sends what
//! queued up in batches of at most [`BATCH`], logs in when its token is missing or about to
//! expire, and retries a refused or unreachable batch with a doubling backoff a few times
//! before counting it as failed.

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use filter_common::{
    Reason,
    source::{Ban, SourceKey},
};
use log::warn;
use tokio::sync::mpsc;

use super::{
    credentials::Credentials,
    decisions::Scope,
    status::Status,
    watcher::{BanAlert, Watcher},
};

/// Bans waiting to be pushed, at most.
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
    queue: mpsc::Sender<BanAlert>,
    status: Arc<Status>,
}

impl Pusher {
    /// Queues one alert without waiting; a full queue counts it as failed.
    pub fn offer(&self, alert: BanAlert) {
        if self.queue.try_send(alert).is_err() {
            self.status.alerts_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a ban that is not pushed (one that does not cover TCP).
    pub fn withhold(&self) {
        self.status.alerts_withheld.fetch_add(1, Ordering::Relaxed);
    }

    /// Offers `ban` of `key` if the fleet may take it on: it covers TCP, so its source cannot
    /// be spoofed; counts it as withheld otherwise. `clock` gives the program's time and IPv6
    /// prefix, read only for a ban that is pushed; `None` from it skips the ban.
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
            self.offer(alert(key, ban, now_ns, v6_prefix));
        }
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
        .collect();
    let watcher = Watcher::new(endpoint, credentials, scenarios);
    let (queue, pending) = mpsc::channel(QUEUE);
    let task = tokio::spawn(push_loop(watcher, pending, Arc::clone(&status)));
    Ok((Pusher { queue, status }, task))
}

/// Sends what queues up until the daemon drops its [`Pusher`].
async fn push_loop(
    mut watcher: Watcher,
    mut pending: mpsc::Receiver<BanAlert>,
    status: Arc<Status>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while pending.recv_many(&mut batch, BATCH).await > 0 {
        let mut backoff = Duration::from_secs(1);
        let mut sent = false;
        for attempt in 1..=ATTEMPTS {
            match watcher.push(&batch, PUSH_TIMEOUT).await {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(error) => {
                    warn!(
                        "pushing bans to the crowdsec LAPI failed alerts={} attempt={attempt} \
                         error=\"{error}\"",
                        batch.len()
                    );
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
        let counter = if sent {
            &status.alerts_pushed
        } else {
            &status.alerts_failed
        };
        counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
        batch.clear();
    }
}

/// The scenario of a ban for `reason`: `moat/rate_syn`, `moat/rate_udp`, ...
pub fn scenario(reason: Reason) -> String {
    format!("moat/{}", reason.label())
}

/// The alert for the automatic ban `ban` of `key` at `now_ns` (the program's clock): an IPv4
/// source, or an IPv6 one when bans are per address, as scope `Ip`; an IPv6 prefix (bans cut
/// to `bans.ipv6_prefix`, a /64 by default) as scope `Range`.
pub fn alert(key: &SourceKey, ban: &Ban, now_ns: u64, v6_prefix: u32) -> BanAlert {
    let (scope, value) = if key.ip_version == 4 {
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
    };
    let reason = Reason::from_u32(u32::from(ban.reason)).unwrap_or(Reason::Banned);
    let length =
        Duration::from_nanos(ban.until_ns.saturating_sub(now_ns)).max(Duration::from_secs(1));
    BanAlert {
        scenario: scenario(reason),
        scope: scope.label(),
        message: format!(
            "moat banned {value} for {}s: {} (offence {})",
            length.as_secs(),
            reason.describe(),
            ban.offences
        ),
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
    }
}
