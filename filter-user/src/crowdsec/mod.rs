//! moat's link to CrowdSec, the engine a fleet of origins shares bans through:
//! - [`bouncer`]: pulls the Local API's (LAPI's) decision stream and keeps moat's CrowdSec
//!   tries holding exactly the sources under a ban decision ([`decisions`] does the
//!   bookkeeping);
//! - [`push`]: sends moat's own automatic bans to the LAPI as alerts;
//! - [`status`]: their figures, for the metrics, `moat stats` and `moat top`;
//! - [`lapi`], [`http`] and [`response`]: the LAPI's API over a minimal HTTP/1.1 client.

pub mod bouncer;
pub mod decisions;
pub mod http;
pub mod lapi;
pub mod push;
pub mod response;
pub mod status;
