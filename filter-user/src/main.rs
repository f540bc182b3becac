//! The `moat` binary: parses the command line, runs the subcommand, and turns any error into
//! one line on stderr and exit code 2.

use std::process::ExitCode;

use clap::Parser as _;
use moat::{
    cli::{Cli, Command},
    control::ListKind,
    daemon, lab, lists,
    stats::Snapshot,
};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    match dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("moat: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Run(args) => daemon::run(args),
        Command::Stats(args) => {
            moat::preflight::check_iface_name(&args.iface)?;
            let snapshot = Snapshot::read_pinned(&args.iface)?;
            if args.json {
                println!("{}", snapshot.to_json(&args.iface));
            } else {
                print!("{}", snapshot.to_table(&args.iface));
            }
            Ok(())
        }
        Command::Allow(args) => lists::run(ListKind::Allow, &args.action),
        Command::Deny(args) => lists::run(ListKind::Deny, &args.action),
        Command::Lab(args) => lab::run(args),
    }
}
