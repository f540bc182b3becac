//! `moat run`: attach, then wait for signals. SIGHUP re-reads the configuration; SIGINT and
//! SIGTERM detach and exit. Every few seconds, bans that expired longer ago than
//! `bans.forget_after` are forgotten, so a repeat offender's next ban starts short again.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log::{error, info, warn};
use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use crate::{
    bans,
    cli::RunArgs,
    config::{Config, SynCookies, duration_ns},
    control::Policy,
    loader::{AttachRequest, Capacities, Filter, InstanceLock},
    metrics::{DaemonState, MetricsServer},
    notify::Notifier,
    preflight, state, verify,
};

/// How often the lists and bans are saved to the state directory.
const SAVE_EVERY: Duration = Duration::from_secs(60);

/// Saves the lists and bans of `iface`; a failure is logged (the filter keeps protecting).
fn save_state(iface: &str, dir: &std::path::Path) {
    if let Err(err) = state::save(iface, dir) {
        error!("saving the lists and bans failed iface={iface} error=\"{err}\"");
    }
}

/// How often expired bans are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How often the ban table is compared with the last look (to log bans and unbans) and the
/// origin's sockets are read for verified sources.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    // Validate everything before touching the kernel.
    let (config, config_path) = Config::locate(args.config.as_deref())?;
    let ifindex = preflight::check_all(&args.iface)?;
    warn_if_ssh_closed(&config);
    warn_if_syncookies_off(&config);
    // Register before attaching, so a signal during attach is queued, not fatal with pins left.
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;

    // Another moat on this interface is the likelier mistake than a taken metrics port, so it
    // is reported first.
    let lock = InstanceLock::acquire(&args.iface)?;
    let state = Arc::new(DaemonState::default());
    let capacities = Capacities::of(&config);
    // Bind before attaching: a taken port is a bad argument, reported before anything changes.
    let metrics = if args.metrics == "off" {
        None
    } else {
        Some(MetricsServer::start(
            &args.metrics,
            &args.iface,
            capacities,
            Arc::clone(&state),
        )?)
    };
    if let Some(server) = &metrics
        && !server.addr().ip().is_loopback()
    {
        warn!(
            "metrics are served on a non-loopback address, reachable from the network \
             addr={}",
            server.addr()
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
    };
    let mut filter = Filter::attach(&request, Some(lock))?;
    state
        .load_micros
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    if let Ok(mut mode) = state.mode.lock() {
        *mode = filter.mode().name().to_string();
    }
    info!(
        "attached iface={} mode={} dry_run={} trusted={} pins={} metrics={}",
        filter.iface(),
        filter.mode().name(),
        request.policy.settings.dry_run(),
        request.policy.trusted.len(),
        filter.pins().path().display(),
        metrics.as_ref().map_or("off".to_string(), |server| format!(
            "http://{}/metrics",
            server.addr()
        ))
    );

    if !filter.taken_over() {
        match state::restore(filter.iface(), &args.state_dir) {
            Ok(restored) if restored != state::Restored::default() => info!(
                "restored iface={} allow={} deny={} bans={}",
                filter.iface(),
                restored.allow,
                restored.deny,
                restored.bans
            ),
            Ok(_) => {}
            Err(err) => error!(
                "restoring the saved lists and bans failed iface={} error=\"{err}\"",
                filter.iface()
            ),
        }
    }
    let notifier = Notifier::from_env();
    notifier.ready(&format!("protecting {}", filter.iface()));
    let mut last_save = Instant::now();
    let mut running = config;
    let mut last_sweep = Instant::now();
    let mut last_watch = Instant::now();
    let mut known_bans = HashMap::new();
    let mut verified = HashMap::new();
    // Peers that completed a handshake before moat started are verified from the start.
    verify::refresh(filter.ebpf_mut(), running.bans.ipv6_prefix, &mut verified);
    'serve: loop {
        for signal in signals.pending() {
            if signal == SIGHUP {
                notifier.reloading();
                if reload(&mut filter, args, config_path.as_ref(), &mut running) {
                    state.reloads_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    state.reloads_failed.fetch_add(1, Ordering::Relaxed);
                }
                notifier.ready(&format!("protecting {}", filter.iface()));
            } else {
                info!("stopping iface={} signal={signal}", filter.iface());
                notifier.stopping();
                break 'serve;
            }
        }
        if last_watch.elapsed() >= WATCH_EVERY {
            last_watch = Instant::now();
            verify::refresh(filter.ebpf_mut(), running.bans.ipv6_prefix, &mut verified);
            let iface = filter.iface().to_string();
            bans::log_changes(filter.ebpf_mut(), &iface, &mut known_bans);
        }
        if last_save.elapsed() >= SAVE_EVERY {
            last_save = Instant::now();
            save_state(filter.iface(), &args.state_dir);
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            let forget_after_ns = duration_ns(running.bans.forget_after);
            match bans::sweep(filter.ebpf_mut(), forget_after_ns) {
                Ok(0) => {}
                Ok(forgotten) => info!(
                    "forgot expired bans iface={} count={forgotten}",
                    filter.iface()
                ),
                Err(err) => warn!(
                    "sweeping bans failed iface={} error=\"{err}\"",
                    filter.iface()
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let iface = filter.iface().to_string();
    save_state(&iface, &args.state_dir);
    filter
        .detach()
        .with_context(|| format!("detaching from {iface}"))?;
    drop(metrics);
    info!("detached iface={iface}");
    Ok(())
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
    if Capacities::of(&config) != Capacities::of(running) {
        warn!(
            "capacity changes need a restart, keeping capacities iface={}",
            filter.iface()
        );
    }
    if config.mode != running.mode && args.mode.is_none() {
        warn!(
            "mode change needs a restart, keeping mode iface={} requested={}",
            filter.iface(),
            config.mode.name()
        );
    }
    warn_if_ssh_closed(&config);
    warn_if_syncookies_off(&config);
    let policy = Policy::compile(&config, args.dry_run);
    match filter.write_policy(&policy) {
        Ok(()) => {
            info!(
                "reloaded iface={} config={} dry_run={}",
                filter.iface(),
                path.display(),
                policy.settings.dry_run()
            );
            *running = config;
            true
        }
        Err(err) => {
            error!("reload failed, keeping the running configuration error=\"{err}\"");
            false
        }
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
