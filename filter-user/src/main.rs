//! The `moat` binary: parses the command line, runs the subcommand, and turns any error into
//! one line on stderr and exit code 2.

use std::{process::ExitCode, time::Duration};

use clap::{CommandFactory as _, Parser as _};
use moat::{
    bans::{self, PinnedBans},
    cli::{BanAction, Cli, Command, ConfigAction},
    config::{Config, ConfigError},
    control::ListKind,
    daemon, lists, lockout, namespace, top, tuning,
};

/// An error already printed in full (one line per problem); main only sets the exit code.
#[derive(Debug, thiserror::Error)]
#[error("already reported")]
struct Reported;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    if !matches!(cli.command, Command::Run(_)) {
        // Commands that print end quietly when their reader goes away (`moat stats | head`),
        // like other Unix tools; the daemon keeps Rust's ignored SIGPIPE, since it writes to
        // sockets.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if !error.is::<Reported>() {
                eprintln!("moat: {}", moat::oneline::one_line(&error));
            }
            ExitCode::from(2)
        }
    }
}

/// Prints a command-line error as one line (help and version as clap prints them) and returns
/// its exit code: 2 for every mistake.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
    }
    eprintln!("moat: {}", usage_line(&error.render().to_string()));
    ExitCode::from(2)
}

/// clap's multi-line message as one line: the error, its details (the missing arguments, the
/// possible values), its tips and the usage, without the closing pointer to --help.
fn usage_line(text: &str) -> String {
    let mut line = String::new();
    for part in text.lines().map(str::trim).filter(|part| !part.is_empty()) {
        if part.starts_with("For more information") {
            break;
        }
        let part = part.strip_prefix("error: ").unwrap_or(part);
        let part = match part.strip_prefix("Usage: ") {
            Some(usage) => format!("usage: {usage}"),
            None => part.to_string(),
        };
        // A list of arguments or values continues the line before it.
        let continues = line.ends_with(':')
            || part.starts_with('<')
            || part.starts_with("--")
            || part.starts_with('[');
        if !line.is_empty() {
            line.push_str(if continues { " " } else { "; " });
        }
        line.push_str(&part);
    }
    line
}

fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Run(args) => daemon::run(args),
        Command::Stats(args) => {
            moat::preflight::check_iface_name(&args.iface)?;
            top::stats(&args.iface, Duration::from_secs(args.window), args.json)
        }
        Command::Top(args) => {
            moat::preflight::check_iface_name(&args.iface)?;
            top::top(&args.iface, Duration::from_secs(args.interval), args.count)
        }
        Command::Allow(args) => lists::run(ListKind::Allow, &args.action),
        Command::Deny(args) => lists::run(ListKind::Deny, &args.action),
        Command::Ban(args) => ban(&args.action),
        Command::Detach(args) => {
            moat::preflight::check_iface_name(&args.iface)?;
            namespace::check(&args.iface)?;
            // A purge is removing the saved state too, so it saves nothing.
            let save = |iface: &str| {
                if args.purge {
                    Ok(())
                } else {
                    moat::state::save(iface, &args.state_dir)
                }
            };
            if moat::loader::detach_orphan(&args.iface, args.purge, save)? {
                namespace::forget(&args.iface);
                println!("detached the filter left on {}", args.iface);
            } else {
                println!("no filter was left attached on {}", args.iface);
            }
            Ok(())
        }
        Command::Set(args) => {
            moat::preflight::check_iface_name(&args.iface)?;
            namespace::check(&args.iface)?;
            tuning::set(&args.iface, &args.key, &args.value)?;
            println!("set {} = {} on {}", args.key, args.value, args.iface);
            Ok(())
        }
        Command::Config(args) => match &args.action {
            ConfigAction::Check { file } => match Config::load(file) {
                Ok(config) => {
                    // Valid, but worth a word: the same warning `moat run` logs.
                    if let Some(warning) = config.resolv_conf_warning() {
                        eprintln!("moat: {}: warning: {warning}", file.display());
                    }
                    println!("{}: ok", file.display());
                    Ok(())
                }
                Err(ConfigError::Invalid { path, problems }) => {
                    for problem in &problems {
                        eprintln!("moat: {}: {problem}", path.display());
                    }
                    Err(Reported.into())
                }
                Err(error) => Err(error.into()),
            },
            ConfigAction::Show {
                config,
                iface: Some(iface),
            } => {
                debug_assert!(config.is_none(), "clap keeps --config and --iface apart");
                moat::preflight::check_iface_name(iface)?;
                print!("{}", tuning::show(iface)?);
                Ok(())
            }
            ConfigAction::Show {
                config,
                iface: None,
            } => {
                let (config, _) = Config::locate(config.as_deref())?;
                print!("{}", config.to_toml());
                Ok(())
            }
            ConfigAction::Keys => {
                print!("{}", moat::config::schema::markdown_table());
                Ok(())
            }
            ConfigAction::Example => {
                print!("{}", moat::config::template::packaged_toml());
                Ok(())
            }
        },
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "moat", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
    }
}

fn ban(action: &BanAction) -> anyhow::Result<()> {
    match action {
        BanAction::Add {
            iface,
            length,
            addr,
            force,
        } => {
            moat::preflight::check_iface_name(iface)?;
            namespace::check(iface)?;
            let addr = bans::parse_address(addr)?;
            let length = bans::parse_length(length)?;
            let mut bans = PinnedBans::open(iface)?;
            if !force {
                lockout::refuse("ban", &[bans.covered(addr)], lockout::ssh_client())?;
            }
            let source = bans.add(addr, length)?;
            println!(
                "banned {source} on {iface} for {}",
                moat::config::format_duration(length)
            );
        }
        BanAction::Del { iface, addr } => {
            moat::preflight::check_iface_name(iface)?;
            namespace::check(iface)?;
            let addr = bans::parse_address(addr)?;
            let source = PinnedBans::open(iface)?.delete(addr)?;
            println!("unbanned {source} on {iface}");
        }
        BanAction::List(args) => {
            moat::preflight::check_iface_name(&args.iface)?;
            print!(
                "{}",
                bans::render(&PinnedBans::open(&args.iface)?.active()?)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::usage_line;

    #[test]
    fn clap_errors_become_one_line_with_what_would_be_right() {
        let missing = "error: the following required arguments were not provided:\n  --iface <IFACE>\n  <CIDR>...\n\nUsage: moat deny add --iface <IFACE> <CIDR>...\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(missing),
            "the following required arguments were not provided: --iface <IFACE> <CIDR>...; \
             usage: moat deny add --iface <IFACE> <CIDR>..."
        );
        let value = "error: invalid value 'turbo' for '--mode <MODE>'\n  [possible values: auto, native, skb]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(value),
            "invalid value 'turbo' for '--mode <MODE>' [possible values: auto, native, skb]"
        );
    }
}
