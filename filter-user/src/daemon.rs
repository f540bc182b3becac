//! `moat run`: attach, then wait for signals. SIGHUP re-reads the configuration; SIGINT and
//! SIGTERM detach and exit.

use std::path::PathBuf;

use anyhow::Context as _;
use log::{error, info, warn};
use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use crate::{
    cli::RunArgs,
    config::Config,
    control,
    loader::{AttachRequest, Filter},
    preflight,
};

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    // Validate everything before touching the kernel.
    let (config, config_path) = Config::locate(args.config.as_deref())?;
    let ifindex = preflight::check_all(&args.iface)?;
    // Register before attaching, so a signal during attach is queued, not fatal with pins left.
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;

    let request = AttachRequest {
        iface: args.iface.clone(),
        ifindex,
        mode: args.mode.unwrap_or(config.mode),
        force: args.force,
        settings: control::settings(args.dry_run || config.dry_run),
        allow_capacity: config.allow_capacity,
        deny_capacity: config.deny_capacity,
    };
    let mut filter = Filter::attach(&request)?;
    info!(
        "attached iface={} mode={} dry_run={} pins={}",
        filter.iface(),
        filter.mode().name(),
        request.settings.dry_run(),
        filter.pins().path().display()
    );

    let mut running = config;
    for signal in signals.forever() {
        if signal == SIGHUP {
            reload(&mut filter, args, config_path.as_ref(), &mut running);
            continue;
        }
        info!("stopping iface={} signal={signal}", filter.iface());
        break;
    }
    let iface = filter.iface().to_string();
    filter
        .detach()
        .with_context(|| format!("detaching from {iface}"))?;
    info!("detached iface={iface}");
    Ok(())
}

/// Re-reads the configuration file; a bad file is logged and the running settings are kept.
fn reload(filter: &mut Filter, args: &RunArgs, path: Option<&PathBuf>, running: &mut Config) {
    let Some(path) = path else {
        info!(
            "reload skipped: no configuration file iface={}",
            filter.iface()
        );
        return;
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            error!("reload rejected, keeping the running configuration error=\"{err}\"");
            return;
        }
    };
    if config.allow_capacity != running.allow_capacity
        || config.deny_capacity != running.deny_capacity
    {
        warn!(
            "list capacity changes need a restart, keeping capacities iface={}",
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
    let settings = control::settings(args.dry_run || config.dry_run);
    match filter.write_settings(settings) {
        Ok(()) => {
            info!(
                "reloaded iface={} config={} dry_run={}",
                filter.iface(),
                path.display(),
                settings.dry_run()
            );
            *running = config;
        }
        Err(err) => error!("reload failed, keeping the running configuration error=\"{err}\""),
    }
}
