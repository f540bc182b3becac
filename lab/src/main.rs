//! `moat-lab`: runs the lab ([`moat_lab::run`]) and turns any error into one line on stderr
//! and exit code 2.

use std::process::ExitCode;

use clap::Parser as _;
use moat_lab::LabArgs;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = LabArgs::parse();
    match moat_lab::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("moat-lab: {error:#}");
            ExitCode::from(2)
        }
    }
}
