//! The root tests' CrowdSec Local API: [`moat_lab::crowdsec::Lapi`] (which the benchmark uses
//! too) with every error turned into a panic that says what failed, as tests fail. The LAPI
//! itself, its configuration and its lifetime are the lab module's business.

use std::{net::SocketAddr, path::PathBuf};

use moat::netns::NetNs;
use moat_lab::crowdsec;

/// A running CrowdSec Local API in a network namespace; stopped, and its directory removed,
/// on drop.
pub struct Lapi(crowdsec::Lapi);

impl Lapi {
    /// Starts a LAPI inside `ns` listening on `listen` ([`crowdsec::Lapi::start`]); panics,
    /// saying why, if crowdsec is not installed or does not answer within 20 s.
    pub fn start(ns: &NetNs, listen: SocketAddr) -> Lapi {
        Lapi(
            crowdsec::Lapi::start(ns, listen)
                .unwrap_or_else(|error| panic!("starting a LAPI on {listen}: {error}")),
        )
    }

    /// Registers the bouncer `name` and returns its API key ([`crowdsec::Lapi::bouncer_key`]).
    pub fn bouncer_key(&self, name: &str) -> String {
        self.0
            .bouncer_key(name)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// The machine's credentials file ([`crowdsec::Lapi::credentials_file`]).
    pub fn credentials_file(&self) -> PathBuf {
        self.0.credentials_file()
    }

    /// The LAPI's base URL inside the namespace ([`crowdsec::Lapi::url`]).
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// Runs cscli with `args` and returns its standard output ([`crowdsec::Lapi::cscli`]);
    /// panics with its standard error unless it succeeds.
    pub fn cscli(&self, args: &[&str]) -> String {
        self.0.cscli(args).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Imports `(value, scope, duration)` decisions ([`crowdsec::Lapi::import`]); panics unless
    /// cscli reports every line imported.
    pub fn import(&self, decisions: &[(String, &str, &str)]) {
        self.0
            .import(decisions)
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// The parsed bouncer stream for `key` ([`crowdsec::Lapi::decisions_stream`]); panics
    /// unless the LAPI answers 200 with JSON.
    pub fn decisions_stream(&self, key: &str, startup: bool) -> serde_json::Value {
        self.0
            .decisions_stream(key, startup)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Stops the LAPI ([`crowdsec::Lapi::stop`]).
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Restarts the LAPI on the same database and address ([`crowdsec::Lapi::restart`]);
    /// panics, with its output and logs, unless it answers again.
    pub fn restart(&mut self) {
        self.0
            .restart()
            .unwrap_or_else(|error| panic!("restarting the LAPI: {error}"));
    }
}
