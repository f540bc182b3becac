//! The bouncer: pulls the LAPI's decision stream every `update_frequency` and makes the
//! CrowdSec tries hold exactly the sources under a ban decision.
//!
//! - The first pull, the first after any failure, and one a day ([`FULL_EVERY`]) ask for
//!   everything (`startup=true`); the tries are then compared with the whole set, so decisions
//!   deleted while moat was away or the LAPI was down end too, and a decision longer than moat
//!   keeps one without news (`decisions::LONGEST`, a year) is renewed. Later pulls carry only
//!   the changes.
//! - Parsing a reply (15 MB for 100,000 decisions) and writing the tries run on the blocking
//!   pool, so scrapes, signals and the samples ring never wait for them.
//! - A failure keeps every decision in force (moat protects with what it has), and the next
//!   pull comes after a backoff that doubles from 1 s up to a minute.
//! - Every second, decisions whose time is up are removed.
//! - After every change the decisions are saved under the state directory; a cold start
//!   (the tries empty) with the LAPI down enforces what was saved, with what is left of each
//!   decision's time, until the first pull replaces it.
//! - A bouncer is stopped through its [`Handle`] (a reload that changes or removes the
//!   `[crowdsec]` section): from then on it writes neither the tries nor the file, even from a
//!   pull still being applied on the blocking pool. With CrowdSec off, the tries are emptied and
//!   the saved decisions removed ([`Handle::stop`], [`clear`]): the program drops the sources of
//!   the CrowdSec tries whatever the configuration says, and nothing would ever end them.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use log::{info, warn};

use super::{
    decisions::{Decisions, SavedDecision, Tally},
    http::Endpoint,
    lapi,
    status::Status,
};
use crate::{
    cidr::Cidr,
    config::CrowdSecConfig,
    control::{ListKind, PinnedList},
};

/// How long one pull may take, the reply included.
const PULL_TIMEOUT: Duration = Duration::from_secs(60);

/// The first wait after a failure.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);

/// The longest wait after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How often a pull asks for everything even when nothing failed.
pub const FULL_EVERY: Duration = Duration::from_secs(86_400);

/// How often expired decisions are removed.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// The decisions and what the tries hold, kept between pulls.
struct Sync {
    iface: String,
    /// Where the decisions are saved.
    file: PathBuf,
    decisions: Decisions,
    /// What the tries hold; `None` until read from them (at start, after a failed write).
    installed: Option<HashSet<Cidr>>,
    /// Set by [`Handle::stop`]: the bouncer writes nothing any more.
    stopped: bool,
}

impl Sync {
    /// Makes the tries hold the decisions' prefixes; returns how many went in and out. A
    /// stopped bouncer changes nothing.
    fn reconcile(&mut self) -> anyhow::Result<(usize, usize)> {
        if self.stopped {
            return Ok((0, 0));
        }
        let mut list = PinnedList::open(&self.iface, ListKind::CrowdSec)?;
        let installed = match self.installed.take() {
            Some(installed) => installed,
            None => list.entries()?.into_iter().collect(),
        };
        let plan = self.decisions.plan(&installed);
        if plan.is_empty() {
            self.installed = Some(installed);
            return Ok((0, 0));
        }
        // On an error, `installed` stays `None`: the next pass reads the tries again.
        let mut installed = installed;
        if !plan.remove.is_empty() {
            list.delete(&plan.remove)?;
            for cidr in &plan.remove {
                installed.remove(cidr);
            }
        }
        if !plan.insert.is_empty() {
            list.add(&plan.insert)?;
            installed.extend(plan.insert.iter().copied());
        }
        self.installed = Some(installed);
        Ok((plan.insert.len(), plan.remove.len()))
    }

    /// Saves the decisions in force, atomically; a failure is logged (only a cold start with
    /// the LAPI down would miss them). A stopped bouncer saves nothing.
    fn save(&self) {
        if self.stopped {
            return;
        }
        let saved = self
            .decisions
            .saved(Instant::now(), crate::state::unix_ms_now());
        let result = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|text| crate::atomicfile::replace(&self.file, &text));
        if let Err(error) = result {
            warn!(
                "saving the crowdsec decisions failed iface={} path={} error=\"{error}\"",
                self.iface,
                self.file.display()
            );
        }
    }

    /// Takes back the saved decisions and enforces them; returns how many.
    fn restore(&mut self) -> anyhow::Result<usize> {
        let text = match std::fs::read(&self.file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        let saved: Vec<SavedDecision> = serde_json::from_slice(&text)?;
        let restored = self
            .decisions
            .restore(&saved, Instant::now(), crate::state::unix_ms_now());
        self.reconcile()?;
        Ok(restored)
    }
}

/// Where the bouncer of `iface` saves its decisions under the state directory `dir`.
pub fn saved_path(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{iface}.crowdsec.json"))
}

/// A bouncer's decisions and what its tries hold, shared by its task ([`run`]) and whoever
/// stops it.
#[derive(Clone)]
pub struct Handle {
    sync: Arc<Mutex<Sync>>,
}

impl Handle {
    /// The state of a bouncer for the filter on `iface` that saves its decisions under
    /// `state_dir`: no decisions yet, the tries not read.
    pub fn new(iface: &str, state_dir: &Path) -> Handle {
        Handle {
            sync: Arc::new(Mutex::new(Sync {
                iface: iface.to_string(),
                file: saved_path(state_dir, iface),
                decisions: Decisions::new(),
                installed: None,
                stopped: false,
            })),
        }
    }

    /// Stops the bouncer's writes: once this returns, neither its task nor a pull it is still
    /// applying changes the tries or the saved file. With `clear` (CrowdSec is off), also
    /// empties the CrowdSec tries and removes the saved decisions; returns how many prefixes
    /// went out. Blocks while a pull is being applied.
    pub fn stop(&self, clear: bool) -> anyhow::Result<usize> {
        let mut sync = self
            .sync
            .lock()
            .map_err(|_| anyhow::anyhow!("the bouncer's state was poisoned"))?;
        sync.stopped = true;
        if !clear {
            return Ok(0);
        }
        let mut list = PinnedList::open(&sync.iface, ListKind::CrowdSec)?;
        let held = list.entries()?;
        if !held.is_empty() {
            list.delete(&held)?;
        }
        match std::fs::remove_file(&sync.file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(
                    anyhow::Error::new(error).context(format!("removing {}", sync.file.display()))
                );
            }
            _ => {}
        }
        Ok(held.len())
    }
}

/// With CrowdSec off: empties the CrowdSec tries of the filter on `iface` (a filter taken
/// over, or one whose configuration had a `[crowdsec]` section before) and removes the
/// decisions saved under `state_dir`; returns how many prefixes went out.
pub fn clear(iface: &str, state_dir: &Path) -> anyhow::Result<usize> {
    Handle::new(iface, state_dir).stop(true)
}

/// Runs the bouncer for the filter on `iface` (the one `handle` was made for) until the task
/// is aborted.
pub async fn run(handle: Handle, config: CrowdSecConfig, status: Arc<Status>) {
    status.enabled.store(true, Ordering::Relaxed);
    let iface = match handle.sync.lock() {
        Ok(sync) => sync.iface.clone(),
        Err(_) => return,
    };
    let endpoint = match Endpoint::parse(&config.api_url) {
        Ok(endpoint) => endpoint,
        Err(message) => {
            // Validated with the configuration; kept for a file edited since.
            warn!("crowdsec bouncer off iface={iface} error=\"crowdsec.api_url: {message}\"");
            return;
        }
    };
    let sync = handle.sync;
    {
        let sync = Arc::clone(&sync);
        let status = Arc::clone(&status);
        let restored = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let mut sync = sync
                .lock()
                .map_err(|_| anyhow::anyhow!("the bouncer's state was poisoned"))?;
            let restored = sync.restore()?;
            record(&status, &sync.decisions, &Tally::default());
            Ok(restored)
        })
        .await;
        match restored {
            Ok(Ok(0)) => {}
            Ok(Ok(count)) => info!("crowdsec decisions restored iface={iface} count={count}"),
            Ok(Err(error)) => {
                warn!(
                    "restoring the crowdsec decisions failed iface={iface} error=\"{}\"",
                    crate::oneline::one_line(&error)
                )
            }
            Err(error) => {
                warn!("restoring the crowdsec decisions failed iface={iface} error={error}")
            }
        }
    }
    let mut full = true;
    let mut last_full = tokio::time::Instant::now();
    // Pulls failed in a row: the first failure and the recovery are logged, not every retry.
    let mut failures: u64 = 0;
    let mut backoff = BACKOFF_FIRST;
    let mut next_pull = tokio::time::Instant::now();
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_pull) => {
                if last_full.elapsed() >= FULL_EVERY {
                    full = true;
                }
                let result = pull(&endpoint, &config, full, &sync, &status).await;
                let wait = match result {
                    Ok(()) => {
                        status.reachable.store(true, Ordering::Relaxed);
                        if failures > 0 {
                            info!(
                                "crowdsec LAPI reachable again, caught up iface={iface} \
                                 failed_pulls={failures}"
                            );
                        }
                        failures = 0;
                        if full {
                            last_full = tokio::time::Instant::now();
                        }
                        full = false;
                        backoff = BACKOFF_FIRST;
                        config.update_frequency
                    }
                    Err(error) => {
                        status.pull_errors.fetch_add(1, Ordering::Relaxed);
                        status.reachable.store(false, Ordering::Relaxed);
                        if failures == 0 {
                            warn!(
                                "crowdsec pull failed, keeping the decisions in force and \
                                 retrying with backoff iface={iface} error=\"{}\"",
                                crate::oneline::one_line(&error)
                            );
                        }
                        failures += 1;
                        full = true;
                        let wait = backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        wait
                    }
                };
                next_pull = tokio::time::Instant::now() + wait;
            }
            _ = expire.tick() => {
                let sync = Arc::clone(&sync);
                let status = Arc::clone(&status);
                let done = tokio::task::spawn_blocking(move || expire_now(&sync, &status)).await;
                if let Ok(Err(error)) = done {
                    warn!("crowdsec expiry failed iface={iface} error=\"{}\"", crate::oneline::one_line(&error));
                }
            }
        }
    }
}

/// One pull: fetch, then parse and apply on the blocking pool.
async fn pull(
    endpoint: &Endpoint,
    config: &CrowdSecConfig,
    full: bool,
    sync: &Arc<Mutex<Sync>>,
    status: &Arc<Status>,
) -> anyhow::Result<()> {
    let key = config
        .api_key
        .read()
        .map_err(|message| anyhow::anyhow!("crowdsec.api_key_file: {message}"))?;
    let body = lapi::pull_stream(endpoint, &key, full, PULL_TIMEOUT).await?;
    let sync = Arc::clone(sync);
    let status = Arc::clone(status);
    tokio::task::spawn_blocking(move || apply(&body, full, &sync, &status)).await?
}

/// Parses one reply and brings the tries in line with it.
fn apply(body: &[u8], full: bool, sync: &Mutex<Sync>, status: &Status) -> anyhow::Result<()> {
    let started = Instant::now();
    let stream = lapi::parse_stream(body)?;
    let mut sync = sync
        .lock()
        .map_err(|_| anyhow::anyhow!("the bouncer's state was poisoned"))?;
    let tally = sync.decisions.apply(&stream, full, Instant::now());
    let (inserted, removed) = sync.reconcile()?;
    record(status, &sync.decisions, &tally);
    if full || tally.added + tally.deleted > 0 {
        sync.save();
    }
    status.pulls.fetch_add(1, Ordering::Relaxed);
    status
        .last_pull_unix_ms
        .store(crate::state::unix_ms_now(), Ordering::Relaxed);
    if full || tally != Tally::default() || inserted + removed > 0 {
        info!(
            "crowdsec pull iface={} startup={full} new={} deleted={} ignored={} active={} \
             inserted={inserted} removed={removed} bytes={} took_ms={}",
            sync.iface,
            tally.added,
            tally.deleted,
            tally.ignored.values().sum::<u64>(),
            sync.decisions.len(),
            body.len(),
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

/// Ends the decisions whose time is up and takes their prefixes out of the tries.
fn expire_now(sync: &Mutex<Sync>, status: &Status) -> anyhow::Result<()> {
    let mut sync = sync
        .lock()
        .map_err(|_| anyhow::anyhow!("the bouncer's state was poisoned"))?;
    let ended = sync.decisions.expire(Instant::now());
    if ended == 0 {
        return Ok(());
    }
    let tally = Tally {
        deleted: ended as u64,
        ..Tally::default()
    };
    let result = sync.reconcile();
    record(status, &sync.decisions, &tally);
    sync.save();
    result.map(|_| ())
}

/// Adds a pull's or an expiry's figures to `status`.
fn record(status: &Status, decisions: &Decisions, tally: &Tally) {
    status.applied.fetch_add(tally.added, Ordering::Relaxed);
    status.removed.fetch_add(tally.deleted, Ordering::Relaxed);
    if let Ok(mut active) = status.active.lock() {
        *active = decisions.by_origin();
    }
    if let Ok(mut ignored) = status.ignored.lock() {
        for (kind, count) in &tally.ignored {
            *ignored.entry(kind.clone()).or_default() += count;
        }
    }
}
