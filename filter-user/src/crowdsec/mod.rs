//! moat's link to CrowdSec, the engine a fleet of origins shares bans through:
//! - [`bouncer`]: pulls the Local API's (LAPI's) decision stream and keeps moat's CrowdSec
//!   tries holding exactly the sources under a ban decision ([`decisions`] does the
//!   bookkeeping);
//! - [`push`]: sends the operator's `moat ban add` bans to the LAPI as alerts (and takes them
//!   back when lifted early), through the machine
//!   [`watcher`] logged in with [`credentials`];
//! - [`status`]: their figures, for the metrics, `moat stats` and `moat top`;
//! - [`lapi`] (the decision stream), [`http`] and [`response`]: the LAPI's API over a minimal
//!   HTTP/1.1 client; [`timefmt`]: Go durations and RFC 3339 times.

pub mod bouncer;
pub mod credentials;
pub mod decisions;
pub mod http;
pub mod lapi;
pub mod push;
pub mod response;
pub mod status;
pub mod timefmt;
pub mod watcher;
