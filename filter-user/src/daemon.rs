//! `moat run`: attach, then serve on a single-threaded tokio runtime until SIGINT or SIGTERM:
//! - SIGHUP re-reads the configuration and replaces the policy in one step;
//! - the metrics server answers scrapes;
//! - the `SAMPLES` ring is drained as it fills (through `AsyncFd`): samples feed `moat top`,
//!   ban events the ban log;
//! - once a second: verified sources from sock_diag, the ban log, `moat top`'s rankings;
//! - with `[crowdsec]`: the bouncer pulls the LAPI's decisions into the CrowdSec tries, and
//!   (with `push`) each `moat ban add` ban the ban count finds is queued for the LAPI as an
//!   alert, and taken back when `moat ban del` lifts it;
//! - at a slower pace: the table figures for the metrics, the ban sweep (bans that expired longer
//!   ago than `bans.forget_after` are forgotten, so a repeat offender's next ban starts short
//!   again), trusted upstreams that follow resolv.conf and the time daemon, and saving the lists
//!   and bans.
//!
//! SIGINT and SIGTERM save the state and detach, unless systemd is restarting the unit (an
//! upgrade): then, as on SIGUSR2, the filter stays attached for the next `moat run` to take
//! over, so no packet meets an unprotected interface.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{Map, MapData, RingBuf};
use filter_common::source::{Ban, SourceKey};
use log::{error, info, warn};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    bans::{self, BanLog, monotonic_ns},
    cli::RunArgs,
    config::{Config, CrowdSecConfig, SynCookies, duration_ns},
    crowdsec::{self, push::Pusher},
    loader::{AttachRequest, Capacities, Filter, InstanceLock, warn_mode_kept},
    metrics::{DaemonState, MetricsServer},
    namespace,
    notify::Notifier,
    pins::PinDir,
    policy::{self, Policy},
    preflight, state,
    top::{self, Record, SampleWindow},
    upstreams::UpstreamWatch,
    verify,
};

/// How often the lists and bans are saved to the state directory.
const SAVE_EVERY: Duration = Duration::from_secs(60);

/// How often expired bans are swept and the tables counted for the metrics.
const COUNT_EVERY: Duration = Duration::from_secs(10);

/// How often the trusted upstreams' sources (resolv.conf, the time daemon's files) are checked.
const UPSTREAMS_EVERY: Duration = Duration::from_secs(2);

/// The daemon's heartbeat: verified sources, ban log, `moat top` rankings.
const TICK: Duration = Duration::from_secs(1);

/// Saves the lists and bans of `iface`; a failure is logged (the filter keeps protecting).
fn save_state(iface: &str, dir: &std::path::Path) {
    if let Err(err) = state::save(iface, dir) {
        error!("saving the lists and bans failed iface={iface} error=\"{err}\"");
    }
}

/// How the daemon ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// Detach the filter (a stop).
    Detach,
    /// Leave the filter attached for the next `moat run` to take over (an upgrade, a restart).
    HandOver,
}

/// Threads that run the daemon's tasks beside its main loop.
const WORKER_THREADS: usize = 2;

/// Runs the daemon until SIGINT or SIGTERM (or SIGUSR2, which hands over).
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    // Validate everything before touching the kernel.
    let (config, config_path) = Config::locate(args.config.as_deref())?;
    let ifindex = preflight::check_all(&args.iface)?;
    // The main loop runs on this thread; scrapes, housekeeping and the CrowdSec client run on
    // the workers, so a tick's work (such as reconciling a full ban table with the ban log)
    // never holds up a scrape.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("moat-worker")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let served = runtime.block_on(serve(args, config, config_path, ifindex));
    // The state is saved and the filter detached or handed over: nothing left is waited for.
    // The debug log's drain (see `spawn_debug_log`) may be inside a flush that a flood keeps
    // going, and a daemon that stayed to wait would hold its metrics port from the next one. A
    // housekeeping round's state file cut short is never seen: it is written aside and renamed.
    runtime.shutdown_background();
    served
}

/// The signals the daemon handles.
struct Signals {
    hangup: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hand_over: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        let install = |kind| signal(kind).context("installing signal handlers");
        Ok(Signals {
            hangup: install(SignalKind::hangup())?,
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hand_over: install(SignalKind::user_defined2())?,
        })
    }
}

async fn serve(
    args: &RunArgs,
    config: Config,
    config_path: Option<PathBuf>,
    ifindex: u32,
) -> anyhow::Result<()> {
    warn_about(&config);
    // Register before attaching, so a signal during attach is queued, not fatal with pins left.
    let mut signals = Signals::install()?;

    // Another moat on this interface is the likelier mistake than a taken metrics port, so it
    // is reported first.
    let lock = InstanceLock::acquire(&args.iface)?;
    let state = Arc::new(DaemonState::default());
    let capacities = Capacities::of(&config);
    // Bind before attaching: a taken port is a bad argument, reported before anything changes.
    let metrics = if args.metrics == "off" {
        None
    } else {
        Some(MetricsServer::bind(&args.metrics)?)
    };
    // A state directory that cannot be written would only fail at the first save.
    state::check_dir(&args.iface, &args.state_dir)?;
    let metrics_addr = metrics.as_ref().map(MetricsServer::addr);
    if let Some(addr) = metrics_addr
        && !addr.ip().is_loopback()
    {
        warn!(
            "metrics are served on a non-loopback address, reachable from the network \
             addr={addr}"
        );
    }
    let started = Instant::now();
    let request = AttachRequest {
        iface: args.iface.clone(),
        ifindex,
        mode: args.mode.unwrap_or(config.mode),
        force: args.force,
        policy: Policy::compile(&config, args.dry_run),
        capacities,
        debug_log: args.debug_log,
    };
    // A filter taken over keeps its bans, keyed under the prefix it ran with.
    let before = running_v6_prefix(&PinDir::for_iface(&args.iface));
    let mut filter = Filter::attach(&request, Some(lock))?;
    state
        .load_micros
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    if let Ok(mut mode) = state.mode.lock() {
        *mode = filter.mode().name().to_string();
    }
    let iface = filter.iface().to_string();
    // Commands that edit the filter must run in this namespace (see `crate::namespace`).
    if let Err(err) = namespace::record(&iface) {
        warn!("recording the filter's network namespace failed iface={iface} error=\"{err}\"");
    }
    if filter.taken_over() {
        follow_v6_prefix(&iface, before);
    } else {
        match state::restore(&iface, &args.state_dir) {
            Ok(restored) if restored != state::Restored::default() => info!(
                "restored iface={iface} allow={} deny={} bans={}",
                restored.allow, restored.deny, restored.bans
            ),
            Ok(_) => {}
            Err(err) => {
                error!("restoring the saved lists and bans failed iface={iface} error=\"{err}\"")
            }
        }
    }
    // The tables counted once before anything reports the filter attached, so the first
    // scrape already has every metric (the housekeeping task counts them again each tick).
    let in_force_at_start = state.count_tables(filter.pins(), None);
    // Logged once the lists and bans are back and the tables counted: from here on the
    // filter protects with everything it had.
    info!(
        "attached iface={iface} mode={} dry_run={} trusted={} pins={} metrics={}",
        filter.mode().name(),
        request.policy.settings.dry_run(),
        request.policy.trusted.len(),
        filter.pins().path().display(),
        metrics_addr.map_or("off".to_string(), |addr| format!("http://{addr}/metrics"))
    );
    let _server = metrics.map(|server| {
        AbortOnDrop(tokio::spawn(server.serve(
            iface.clone(),
            capacities,
            Arc::clone(&state),
        )))
    });

    let mut ring = open_ring(&filter)?;
    if args.debug_log {
        spawn_debug_log(open_debug_log(&mut filter)?);
    }
    let notifier = Notifier::from_env();
    notifier.ready(&format!("protecting {iface}"));

    let mut running = config;
    if running.crowdsec.is_none() {
        clear_crowdsec(&iface, &args.state_dir).await;
    }
    let mut fleet = Fleet::start(&iface, running.crowdsec.as_ref(), &state, &args.state_dir);
    let mut ban_log = BanLog::new(&iface, capacities.bans, running.bans.ipv6_prefix);
    ban_log.know(in_force_at_start.as_deref().unwrap_or_default());
    let mut window = SampleWindow::default();
    let mut upstreams = UpstreamWatch::new(&running);
    let mut forwarding_watch = ForwardingWatch::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_upstreams = Instant::now();
    let pins = filter.pins().clone();
    let forget_after_ns = Arc::new(AtomicU64::new(duration_ns(running.bans.forget_after)));
    let counted: Counted = Arc::new(Mutex::new(None));
    // Table walks and file writes run on the blocking pool, so no scrape, signal or ring
    // record waits for them.
    let _housekeeping = AbortOnDrop(tokio::spawn(housekeeping(Housekeeping {
        iface: iface.clone(),
        pins: pins.clone(),
        state_dir: args.state_dir.clone(),
        state: Arc::clone(&state),
        forget_after_ns: Arc::clone(&forget_after_ns),
        counted: Arc::clone(&counted),
    })));
    let exit = loop {
        tokio::select! {
            _ = signals.hangup.recv() => {
                notifier.reloading();
                if reload(&mut filter, args, config_path.as_ref(), &mut running) {
                    state.reloads_ok.fetch_add(1, Ordering::Relaxed);
                    if running.crowdsec != fleet.config || fleet.push_failed() {
                        let old = std::mem::replace(&mut fleet, Fleet::off());
                        old.stop(&iface, running.crowdsec.is_none()).await;
                        fleet = Fleet::start(
                            &iface,
                            running.crowdsec.as_ref(),
                            &state,
                            &args.state_dir,
                        );
                    }
                    upstreams = UpstreamWatch::new(&running);
                    forwarding_watch = ForwardingWatch::new();
                    forget_after_ns
                        .store(duration_ns(running.bans.forget_after), Ordering::Relaxed);
                } else {
                    state.reloads_failed.fetch_add(1, Ordering::Relaxed);
                }
                notifier.ready(&format!("protecting {iface}"));
            }
            _ = signals.interrupt.recv() => break stop_kind(&iface, "SIGINT"),
            _ = signals.terminate.recv() => break stop_kind(&iface, "SIGTERM"),
            _ = signals.hand_over.recv() => {
                info!("handing over iface={iface} signal=SIGUSR2");
                break Exit::HandOver;
            }
            readable = ring.readable_mut() => {
                match readable {
                    Ok(mut guard) => {
                        // A ring left with records stays ready, so the next turn of the loop
                        // reads on, after whatever else is due.
                        if drain(guard.get_inner_mut(), &mut ban_log, &mut window, &fleet, &pins) {
                            guard.clear_ready();
                        }
                    }
                    Err(err) => warn!("waiting on the samples ring failed iface={iface} error={err}"),
                }
            }
            _ = tick.tick() => {
                notifier.alive();
                // The program wakes the daemon only for a batch; a trickle is read here.
                let _ = drain(ring.get_mut(), &mut ban_log, &mut window, &fleet, &pins);
                // Peers that completed a handshake (before moat started, too) are verified.
                // The running prefix, which `moat set` may have changed since the last reload.
                let settings = policy::pinned_settings(&pins).ok();
                let v6_prefix =
                    settings.map_or(running.bans.ipv6_prefix, |settings| settings.v6_source_prefix);
                verify::refresh(filter.ebpf_mut(), v6_prefix);
                if let Some(settings) = settings {
                    ban_log.follow_v6_prefix(v6_prefix);
                    ban_log.flush(settings.now_ns(monotonic_ns()));
                }
                if let Err(err) = window.publish(&iface) {
                    warn!("publishing top sources failed iface={iface} error={err}");
                }
                if let Err(err) = state.crowdsec.publish(&iface) {
                    warn!("publishing the crowdsec figures failed iface={iface} error={err}");
                }
                if let Some((taken, in_force)) =
                    counted.lock().ok().and_then(|mut slot| slot.take())
                {
                    let reconciled = ban_log.reconcile(taken, &in_force);
                    // The operator's own bans are the fleet's too (see `crowdsec::push`).
                    if let (Some(pusher), Some(settings)) = (fleet.pusher.as_ref(), settings) {
                        let now_ns = settings.now_ns(monotonic_ns());
                        // A moved end is one more decision beside the first: the fleet keeps
                        // the later end. Taking the first back would not reach a bouncer whose
                        // pull finds the new one already in force (the LAPI reports a deletion
                        // only for a source no decision holds any more).
                        for (key, ban) in &reconciled.added {
                            pusher.offer_manual(key, ban, now_ns, v6_prefix);
                        }
                        for key in &reconciled.lifted {
                            pusher.retract_manual(key, v6_prefix);
                        }
                    }
                }
                forwarding_watch.follow(&running);
                if last_upstreams.elapsed() >= UPSTREAMS_EVERY {
                    last_upstreams = Instant::now();
                    upstreams.follow(&iface, &running);
                }
            }
        }
    };
    notifier.stopping();
    save_state(&iface, &args.state_dir);
    let _ = std::fs::remove_file(top::digest_path(&iface));
    let _ = std::fs::remove_file(crowdsec::status::path(&iface));
    match exit {
        Exit::Detach => {
            filter
                .detach()
                .with_context(|| format!("detaching from {iface}"))?;
            namespace::forget(&iface);
            info!("detached iface={iface}");
        }
        Exit::HandOver => {
            filter.hand_over();
            info!("left the filter attached for the next moat run to take over iface={iface}");
        }
    }
    Ok(())
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stop detaches, unless systemd is restarting this unit (then the next start takes over).
fn stop_kind(iface: &str, signal: &str) -> Exit {
    if systemd_restarting() {
        info!("stopping for a restart, handing over iface={iface} signal={signal}");
        Exit::HandOver
    } else {
        info!("stopping iface={iface} signal={signal}");
        Exit::Detach
    }
}

/// Whether systemd has a restart job running for the unit this process runs in: `systemctl
/// restart` (and a package upgrade's) stops the unit with SIGTERM exactly like `systemctl
/// stop`, and only the job tells them apart.
fn systemd_restarting() -> bool {
    if std::env::var_os("INVOCATION_ID").is_none() {
        return false;
    }
    let Some(unit) = own_unit() else {
        return false;
    };
    let Ok(output) = std::process::Command::new("systemctl")
        .args(["list-jobs", "--no-legend", "--plain"])
        .output()
    else {
        return false;
    };
    restart_job_for(&String::from_utf8_lossy(&output.stdout), &unit)
}

/// The systemd unit of this process, from its cgroup.
fn own_unit() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .filter_map(|line| line.rsplit('/').next())
        .find(|name| name.ends_with(".service"))
        .map(str::to_string)
}

/// Whether `systemctl list-jobs --no-legend --plain` output lists a restart job for `unit`.
pub fn restart_job_for(jobs: &str, unit: &str) -> bool {
    jobs.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&unit) && fields.get(2).is_some_and(|kind| kind.contains("restart"))
    })
}

/// The pinned samples ring, registered with the runtime.
fn open_ring(filter: &Filter) -> anyhow::Result<AsyncFd<RingBuf<MapData>>> {
    let path = filter.pins().map(filter_common::maps::SAMPLES);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening the samples ring {}", path.display()))?;
    let ring = RingBuf::try_from(Map::RingBuf(data)).context("opening the samples ring")?;
    // SAFETY: the ring owns its descriptor, which stays open and the same until the AsyncFd
    // (which owns the ring) is dropped.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|error| anyhow::anyhow!("registering the samples ring: {error}"))
}

/// The program's aya-log ring, registered with the runtime.
fn open_debug_log(filter: &mut Filter) -> anyhow::Result<DebugLog> {
    let logger =
        aya_log::EbpfLogger::init(filter.ebpf_mut()).context("starting the program's log")?;
    // SAFETY: the logger owns its ring's descriptor, which stays open and the same until the
    // AsyncFd (which owns the logger) is dropped.
    unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
        .map_err(|error| anyhow::anyhow!("registering the program's log: {error}"))
}

/// The program's aya-log ring as the runtime watches it.
type DebugLog = AsyncFd<aya_log::EbpfLogger<&'static dyn log::Log>>;

/// Drains the program's aya-log ring on a thread of the blocking pool. Under a flood the
/// program logs records faster than they are written out, and one `flush` then never ends: in
/// the daemon's own loop it held up every signal, tick and ring read behind it (a SIGUSR2 under
/// a flood was never handled). The thread waits for the ring through the runtime's reactor,
/// which the daemon's loop drives, so it never polls on a timer.
fn spawn_debug_log(mut log: DebugLog) {
    let runtime = tokio::runtime::Handle::current();
    // Detached: it runs until the runtime is shut down in the background (see `run`).
    drop(tokio::task::spawn_blocking(move || {
        while let Ok(mut guard) = runtime.block_on(log.readable_mut()) {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }));
}

/// Records one drain reads at most: a ring the program fills as fast as the daemon reads it
/// (a low `sample_every` during a flood from every CPU) must not keep the loop from its signals,
/// its tick and the watchdog's ping.
const DRAIN_MAX: usize = 1 << 16;

/// Reads the records waiting in the ring, up to [`DRAIN_MAX`]; whether it read them all.
fn drain(
    ring: &mut RingBuf<MapData>,
    ban_log: &mut BanLog,
    window: &mut SampleWindow,
    fleet: &Fleet,
    pins: &PinDir,
) -> bool {
    // The program's clock, read once per drain and only when a ban is to be pushed.
    let mut clock: Option<(u64, u32)> = None;
    for _ in 0..DRAIN_MAX {
        let Some(item) = ring.next() else {
            return true;
        };
        match top::decode(&item) {
            Some(Record::Sample(sample)) => window.push(sample),
            Some(Record::Ban(sample)) => {
                let banned = ban_log.record(&sample);
                if let (Some((key, ban)), Some(pusher)) = (banned, fleet.pusher.as_ref()) {
                    pusher.offer_ban(&key, &ban, || {
                        clock = clock.or_else(|| {
                            let settings = policy::pinned_settings(pins).ok()?;
                            Some((settings.now_ns(monotonic_ns()), settings.v6_source_prefix))
                        });
                        clock
                    });
                }
            }
            None => {}
        }
    }
    false
}

/// The CrowdSec tasks of `[crowdsec]`: the bouncer and, with `push`, the pusher; both end
/// when this is dropped.
struct Fleet {
    /// The section they run with (`None`: off).
    config: Option<CrowdSecConfig>,
    /// The bouncer's state and its task.
    bouncer: Option<(crowdsec::bouncer::Handle, AbortOnDrop)>,
    pusher: Option<Pusher>,
    _pushing: Option<AbortOnDrop>,
}

/// With CrowdSec off at start: empties the CrowdSec tries a filter taken over (or an earlier
/// configuration's bouncer) left, and the decisions saved for them.
async fn clear_crowdsec(iface: &str, state_dir: &std::path::Path) {
    let (owned_iface, state_dir) = (iface.to_string(), state_dir.to_path_buf());
    let cleared =
        tokio::task::spawn_blocking(move || crowdsec::bouncer::clear(&owned_iface, &state_dir))
            .await;
    report_cleared(iface, cleared);
}

/// Logs what emptying the CrowdSec tries did.
fn report_cleared(iface: &str, cleared: Result<anyhow::Result<usize>, tokio::task::JoinError>) {
    match cleared {
        Ok(Ok(0)) => {}
        Ok(Ok(count)) => info!("crowdsec off, its decisions removed iface={iface} count={count}"),
        Ok(Err(error)) => error!(
            "crowdsec is off but its decisions could not be removed, they are still dropped \
             iface={iface} error=\"{}\"",
            crate::oneline::one_line(&error)
        ),
        Err(error) => error!(
            "crowdsec is off but its decisions could not be removed, they are still dropped \
             iface={iface} error={error}"
        ),
    }
}

impl Fleet {
    /// Whether pushing was asked for but did not start (its credentials could not be read or
    /// used): a reload starts the tasks again, so an operator who mended the file need not
    /// change the section.
    fn push_failed(&self) -> bool {
        self.config
            .as_ref()
            .is_some_and(|config| config.push && config.credentials_file.is_some())
            && self.pusher.is_none()
    }

    /// No CrowdSec tasks.
    fn off() -> Fleet {
        Fleet {
            config: None,
            bouncer: None,
            pusher: None,
            _pushing: None,
        }
    }

    /// Stops the tasks; once this returns, the old bouncer writes nothing more, even from a
    /// pull it was applying. With `clear` (CrowdSec is off now), its decisions go too.
    async fn stop(self, iface: &str, clear: bool) {
        let Some((handle, task)) = self.bouncer else {
            return;
        };
        drop(task);
        let stopped = tokio::task::spawn_blocking(move || handle.stop(clear)).await;
        report_cleared(iface, stopped);
    }

    /// Starts the tasks `config` asks for on `iface`, reporting into `state`; the bouncer
    /// saves its decisions under `state_dir`.
    fn start(
        iface: &str,
        config: Option<&CrowdSecConfig>,
        state: &DaemonState,
        state_dir: &std::path::Path,
    ) -> Fleet {
        let status = Arc::clone(&state.crowdsec);
        status.enabled.store(config.is_some(), Ordering::Relaxed);
        let Some(config) = config else {
            return Fleet::off();
        };
        info!(
            "crowdsec bouncer on iface={iface} api_url={} update_frequency={}s push={}",
            config.api_url,
            config.update_frequency.as_secs(),
            config.push
        );
        let handle = crowdsec::bouncer::Handle::new(iface, state_dir);
        let bouncer = tokio::spawn(crowdsec::bouncer::run(
            handle.clone(),
            config.clone(),
            Arc::clone(&status),
        ));
        let (pusher, pushing) = match (&config.credentials_file, config.push) {
            (Some(file), true) => match crowdsec::push::start(file, status) {
                Ok((pusher, task)) => (Some(pusher), Some(AbortOnDrop(task))),
                Err(err) => {
                    error!(
                        "pushing bans to crowdsec is off iface={iface} error=\"{}\"",
                        crate::oneline::one_line(&err)
                    );
                    (None, None)
                }
            },
            _ => (None, None),
        };
        Fleet {
            config: Some(config.clone()),
            bouncer: Some((handle, AbortOnDrop(bouncer))),
            pusher,
            _pushing: pushing,
        }
    }
}

/// What the housekeeping task works with.
struct Housekeeping {
    iface: String,
    pins: PinDir,
    state_dir: PathBuf,
    state: Arc<DaemonState>,
    forget_after_ns: Arc<AtomicU64>,
    /// The bans in force as last counted, for the ban log (taken by the main loop).
    counted: Counted,
}

/// The bans in force as last counted, and when that count began, handed from the
/// housekeeping task to the main loop.
type Counted = Arc<Mutex<Option<(Instant, Vec<(SourceKey, Ban)>)>>>;

/// Every [`COUNT_EVERY`]: forgets bans that expired longer ago than `bans.forget_after`,
/// clears the verified-source summary bits of buckets whose verifications all ended, counts
/// the tables for the metrics and the ban log; every [`SAVE_EVERY`]: saves the lists
/// and bans. Each walk runs on the blocking pool.
async fn housekeeping(work: Housekeeping) {
    let work = Arc::new(work);
    let mut interval = tokio::time::interval(COUNT_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_save = Instant::now();
    loop {
        interval.tick().await;
        let save = last_save.elapsed() >= SAVE_EVERY;
        if save {
            last_save = Instant::now();
        }
        let job = Arc::clone(&work);
        let done = tokio::task::spawn_blocking(move || {
            // Before the walk: a ban the log learns of after this may be missing from it.
            let taken = Instant::now();
            let forget_after_ns = job.forget_after_ns.load(Ordering::Relaxed);
            let kept = match bans::sweep_pinned(&job.pins, forget_after_ns) {
                Ok(sweep) => {
                    if sweep.forgotten > 0 {
                        info!(
                            "forgot expired bans iface={} count={}",
                            job.iface, sweep.forgotten
                        );
                    }
                    Some(sweep.kept)
                }
                Err(err) => {
                    warn!("sweeping bans failed iface={} error=\"{err}\"", job.iface);
                    None
                }
            };
            if let Err(err) = verify::sweep_pinned(&job.pins) {
                warn!(
                    "sweeping the verified sources' summary failed iface={} error=\"{err}\"",
                    job.iface
                );
            }
            if let Some(in_force) = job.state.count_tables(&job.pins, kept)
                && let Ok(mut slot) = job.counted.lock()
            {
                *slot = Some((taken, in_force));
            }
            if save {
                save_state(&job.iface, &job.state_dir);
            }
        })
        .await;
        if let Err(err) = done {
            error!("housekeeping failed iface={} error=\"{err}\"", work.iface);
        }
    }
}

/// Re-reads the configuration file; a bad file is logged and the running policy is kept.
/// Returns whether the new configuration was applied.
fn reload(
    filter: &mut Filter,
    args: &RunArgs,
    path: Option<&PathBuf>,
    running: &mut Config,
) -> bool {
    let Some(path) = path else {
        info!(
            "reload skipped: no configuration file iface={}",
            filter.iface()
        );
        return false;
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            error!("reload rejected, keeping the running configuration error=\"{err}\"");
            return false;
        }
    };
    let loaded = Capacities::of(running);
    let config = if Capacities::of(&config) == loaded {
        config
    } else {
        warn!(
            "capacity changes need a restart, keeping capacities iface={}",
            filter.iface()
        );
        loaded.kept_in(config)
    };
    if config.mode != running.mode && args.mode.is_none() {
        warn_mode_kept(filter.iface(), filter.mode(), config.mode);
    }
    warn_about(&config);
    let policy = Policy::compile(&config, args.dry_run);
    let before = running_v6_prefix(filter.pins());
    match filter.write_policy(&policy) {
        Ok(()) => {
            info!(
                "reloaded iface={} config={} dry_run={}",
                filter.iface(),
                path.display(),
                policy.settings.dry_run()
            );
            follow_v6_prefix(filter.iface(), before);
            *running = config;
            true
        }
        Err(err) => {
            error!(
                "reload failed and was rolled back: packets still see exactly the previous \
                 settings, ports and trusted upstreams iface={} error=\"{err}\"",
                filter.iface()
            );
            false
        }
    }
}

/// The IPv6 prefix the filter pinned at `pins` runs with, if one runs there.
fn running_v6_prefix(pins: &PinDir) -> Option<u32> {
    policy::pinned_settings(pins)
        .ok()
        .map(|settings| settings.v6_source_prefix)
}

/// Moves the IPv6 bans of `iface` to the prefix it now runs with, if that is not `before`
/// (see `PinnedBans::follow_v6_prefix`); a failure is logged, the filter keeps protecting.
fn follow_v6_prefix(iface: &str, before: Option<u32>) {
    let Some(before) = before else {
        return;
    };
    let Some(now) = running_v6_prefix(&PinDir::for_iface(iface)) else {
        return;
    };
    if now == before {
        return;
    }
    match crate::bans::PinnedBans::open(iface).and_then(|mut bans| bans.follow_v6_prefix(before)) {
        Ok(moved) if now < before => {
            info!(
                "moved IPv6 bans to the new prefix iface={iface} from=/{before} to=/{now} moved={moved}"
            )
        }
        Ok(_) => warn!(
            "bans.ipv6_prefix narrowed iface={iface} from=/{before} to=/{now}: each IPv6 ban in \
             force covers the first /{now} of its /{before} until it ends"
        ),
        Err(err) => error!(
            "moving the IPv6 bans to the new prefix failed iface={iface} from=/{before} \
             to=/{now} error=\"{err}\""
        ),
    }
}

/// Warns when the port list would close the SSH port of the session running moat (from
/// `SSH_CONNECTION`), or port 22 when moat does not run over SSH.
fn warn_if_ssh_closed(config: &Config) {
    let Some(open) = &config.ports.tcp else {
        return;
    };
    let session_port = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|value| value.split_whitespace().nth(3)?.parse::<u16>().ok());
    let port = session_port.unwrap_or(22);
    if !open.contains(&port) {
        let what = if session_port.is_some() {
            "the port of this SSH session"
        } else {
            "the SSH port"
        };
        warn!(
            "ports.tcp does not open {what}; new SSH connections to port {port} will be dropped port={port}"
        );
    }
}

/// Logs what in `config`, valid as it is, the operator should hear of (at start and at each
/// reload): a closed SSH port, SYN cookies the kernel will not make, a `resolv_conf` that is
/// not there (see [`Config::resolv_conf_warning`]), a forwarding host's NAT replies.
fn warn_about(config: &Config) {
    warn_if_ssh_closed(config);
    warn_if_syncookies_off(config);
    if let Some(warning) = config.resolv_conf_warning() {
        warn!("{warning}");
    }
    warn_if_forwarding(config);
}

/// The kernel's forwarding switches (per network namespace), IPv4 then IPv6.
const FORWARDING_SYSCTLS: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// Warns when the host forwards packets (docker, VMs, a VPN, a router) while `require_sockets`
/// is on: the replies to connections it forwards or NATs for the hosts behind it have no socket
/// here, so they are dropped (`no_socket`, `port_closed`); the program cannot see the kernel's
/// connection tracking.
fn warn_if_forwarding(config: &Config) {
    if config.require_sockets && forwarding() {
        warn!(
            "this host forwards packets (containers, VMs, a VPN or a router): with \
             require_sockets = true, replies to the connections it forwards or NATs for hosts \
             behind it have no socket here and are dropped (no_socket, port_closed; a few \
             pass within the refusal budget, so it may seem to work until traffic grows); set \
             require_sockets = false if they must reach out, and list ports forwarded in to \
             them in [ports]"
        );
    }
}

/// Whether this network namespace forwards packets, either family.
fn forwarding() -> bool {
    FORWARDING_SYSCTLS
        .iter()
        .any(|path| std::fs::read_to_string(path).is_ok_and(|value| value.trim() == "1"))
}

/// Follows the forwarding switches between reloads: docker, libvirt or a VPN often switch
/// forwarding on after moat has started (at boot, just after it), when the warning given at
/// start or reload found it off.
struct ForwardingWatch {
    /// Whether forwarding was on at the last look.
    on: bool,
}

impl ForwardingWatch {
    /// Starts from the switches as they are now (what the start or reload warning saw).
    fn new() -> ForwardingWatch {
        ForwardingWatch { on: forwarding() }
    }

    /// Warns, as at start, once forwarding has been switched on under `config`.
    fn follow(&mut self, config: &Config) {
        let on = forwarding();
        if on && !self.on {
            info!("the host has just switched forwarding on");
            warn_if_forwarding(config);
        }
        self.on = on;
    }
}

/// Where the kernel's SYN-cookie switch lives (per network namespace).
const SYNCOOKIES_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_syncookies";

/// Warns, in one line saying what to set, when `net.ipv4.tcp_syncookies` keeps moat from
/// answering SYNs as configured: at 0 the kernel makes and accepts no cookies at all, and
/// `syn_cookies = "always"` needs 2.
fn warn_if_syncookies_off(config: &Config) {
    let Ok(text) = std::fs::read_to_string(SYNCOOKIES_SYSCTL) else {
        return;
    };
    if let Some(advice) = syncookies_advice(config.syn_cookies, text.trim()) {
        warn!("{advice}");
    }
}

/// What to tell the operator about `net.ipv4.tcp_syncookies = value` under `mode`, if anything.
pub fn syncookies_advice(mode: SynCookies, value: &str) -> Option<String> {
    match (mode, value) {
        (SynCookies::Off, _) => None,
        (_, "0") => Some(format!(
            "net.ipv4.tcp_syncookies is 0, so no SYN cookie can be made or accepted and new \
             visitors are refused during a SYN flood; set it with `sysctl -w \
             net.ipv4.tcp_syncookies=1` (syn_cookies=\"{}\")",
            mode.name()
        )),
        (SynCookies::Always, "1") => Some(
            "syn_cookies=\"always\" answers only when the SYN queue is full while \
             net.ipv4.tcp_syncookies is 1; set `sysctl -w net.ipv4.tcp_syncookies=2` to answer \
             every SYN"
                .to_string(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_job_is_told_from_a_stop() {
        let jobs = "1234 moat@eth0.service restart running\n1240 other.service start waiting\n";
        assert!(restart_job_for(jobs, "moat@eth0.service"));
        assert!(!restart_job_for(jobs, "moat@eth1.service"));
        assert!(!restart_job_for(
            "1234 moat@eth0.service stop running\n",
            "moat@eth0.service"
        ));
        assert!(restart_job_for(
            "77 moat@eth0.service try-restart running\n",
            "moat@eth0.service"
        ));
        assert!(!restart_job_for("", "moat@eth0.service"));
    }

    #[test]
    fn syncookie_advice_names_the_sysctl_to_set() {
        let advice = syncookies_advice(SynCookies::Auto, "0").expect("0 needs advice");
        assert!(
            advice.contains("sysctl -w net.ipv4.tcp_syncookies=1"),
            "{advice}"
        );
        assert!(!advice.contains('\n'));
        assert_eq!(syncookies_advice(SynCookies::Auto, "1"), None);
        assert_eq!(syncookies_advice(SynCookies::Off, "0"), None);
        let always = syncookies_advice(SynCookies::Always, "1").expect("always needs 2");
        assert!(always.contains("tcp_syncookies=2"), "{always}");
        assert_eq!(syncookies_advice(SynCookies::Always, "2"), None);
    }
}
