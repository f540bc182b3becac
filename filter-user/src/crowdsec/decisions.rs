//! The bouncer's view of the LAPI's decisions: which sources the fleet wants dropped and until
//! when, kept by decision id, and what the CrowdSec tries must gain or lose to match it.
//!
//! Pure bookkeeping, no map access: [`Decisions::apply`] takes one pull of the stream,
//! [`Decisions::expire`] ends decisions whose time is up, and [`Decisions::plan`] compares the
//! wanted prefixes with the ones the tries hold. Several decisions may name one source (two
//! alerts, a manual ban beside a scenario's): the source stays dropped until the last of them
//! ends, or until the stream reports one of them deleted. The LAPI (1.4.6, checked) reports a
//! deletion only for a value no decision names any more, and then only one of its deleted
//! decisions: so a deletion ends every decision held for that value (as the LAPI wrote it) and
//! scope. Values are matched as written, not as the prefixes they fold into: `::ffff:192.0.2.7`
//! and `192.0.2.7`, or `192.0.2.7/24` and `192.0.2.0/24`, are one prefix here but two values to
//! the LAPI, and the end of one leaves the other in force.
//!
//! Only `ban` decisions of scope `Ip` (a /32 or /128) and `Range` (its prefix, host bits
//! cleared; an IPv4-mapped IPv6 range as the IPv4 one it names) are enforced; the others are
//! counted in [`Tally::ignored`] and left alone.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::lapi::{Decision, Stream};
use crate::cidr::Cidr;

/// The longest a decision is kept without news of it: a decision that says it lasts longer
/// (or whose duration did not parse) is dropped after this unless a later pull renews it, as
/// the bouncer's daily full pull does (`bouncer::FULL_EVERY`).
pub const LONGEST: Duration = Duration::from_secs(365 * 86_400);

/// One enforced decision.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    cidr: Cidr,
    /// The value as the LAPI wrote it, trimmed: what its deletions name.
    value: String,
    until: Instant,
    origin: String,
    scope: Scope,
}

/// The scopes moat enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One address.
    Ip,
    /// A prefix.
    Range,
}

impl Scope {
    /// The scope's name in the LAPI (and in moat's metric labels).
    pub const fn label(self) -> &'static str {
        match self {
            Scope::Ip => "Ip",
            Scope::Range => "Range",
        }
    }
}

/// What one pull changed, for the metrics and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Decisions taken on (new ids, or renewals of known ones).
    pub added: u64,
    /// Decisions ended by a deletion in the stream (or, on a full pull, by their absence).
    pub deleted: u64,
    /// Decisions not enforced, by `type/scope` (`captcha/Ip`, `ban/Country`, ...), and values
    /// that did not parse (`ban/Ip (bad value)`).
    pub ignored: BTreeMap<String, u64>,
}

/// What the tries must change to match the decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Prefixes to insert.
    pub insert: Vec<Cidr>,
    /// Prefixes to remove.
    pub remove: Vec<Cidr>,
}

impl Plan {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.insert.is_empty() && self.remove.is_empty()
    }
}

/// The decisions in force, by id.
#[derive(Debug, Default)]
pub struct Decisions {
    held: HashMap<i64, Held>,
    /// How many held decisions name each prefix.
    refs: HashMap<Cidr, u32>,
    /// The ids held for each value and scope, so a deletion finds them without a scan (a full
    /// pull may list tens of thousands of deletions against as many decisions held).
    by_value: HashMap<(String, Scope), HashSet<i64>>,
}

impl Decisions {
    /// No decisions.
    pub fn new() -> Decisions {
        Decisions::default()
    }

    /// Decisions in force.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is in force.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Takes one pull at `now`. A `full` pull (`startup=true`) lists every decision in force,
    /// so the ones it does not list end: the LAPI may have been reset, or deletions may have
    /// happened while moat was away.
    pub fn apply(&mut self, stream: &Stream, full: bool, now: Instant) -> Tally {
        let mut tally = Tally::default();
        for decision in &stream.deleted {
            if self.end(decision.id) {
                tally.deleted += 1;
            }
            // The value's other decisions are gone too (see the module's doc).
            if let Ok((_, scope)) = enforced(decision) {
                let key = (decision.value.trim().to_string(), scope);
                let same = self.by_value.get(&key).cloned().unwrap_or_default();
                for id in same {
                    if self.end(id) {
                        tally.deleted += 1;
                    }
                }
            }
        }
        let mut listed = HashSet::new();
        for decision in &stream.new {
            match enforced(decision) {
                Ok((cidr, scope)) => {
                    let length = decision.duration.min(LONGEST);
                    if length.is_zero() {
                        continue;
                    }
                    listed.insert(decision.id);
                    let held = Held {
                        cidr,
                        value: decision.value.trim().to_string(),
                        until: now + length,
                        origin: decision.origin.clone(),
                        scope,
                    };
                    self.hold(decision.id, held);
                    tally.added += 1;
                }
                Err(kind) => *tally.ignored.entry(kind).or_default() += 1,
            }
        }
        if full {
            let gone: Vec<i64> = self
                .held
                .keys()
                .filter(|id| !listed.contains(id))
                .copied()
                .collect();
            for id in gone {
                self.end(id);
                tally.deleted += 1;
            }
        }
        tally
    }

    /// Ends every decision whose time is up at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let over: Vec<i64> = self
            .held
            .iter()
            .filter(|(_, held)| held.until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &over {
            self.end(*id);
        }
        over.len()
    }

    /// What the tries, holding `installed`, must change to hold exactly the wanted prefixes.
    pub fn plan(&self, installed: &HashSet<Cidr>) -> Plan {
        let mut plan = Plan {
            insert: self
                .refs
                .keys()
                .filter(|cidr| !installed.contains(cidr))
                .copied()
                .collect(),
            remove: installed
                .iter()
                .filter(|cidr| !self.refs.contains_key(cidr))
                .copied()
                .collect(),
        };
        plan.insert.sort_unstable_by_key(Cidr::address_order);
        plan.remove.sort_unstable_by_key(Cidr::address_order);
        plan
    }

    /// Decisions in force by origin and scope, for the metrics.
    pub fn by_origin(&self) -> BTreeMap<(String, Scope), u64> {
        let mut counts = BTreeMap::new();
        for held in self.held.values() {
            *counts.entry((held.origin.clone(), held.scope)).or_default() += 1;
        }
        counts
    }

    /// The decisions in force, to be saved: each end as wall-clock time (`now` is
    /// `now_unix_ms`), so a restart after any while restores what is left of each.
    pub fn saved(&self, now: Instant, now_unix_ms: u64) -> Vec<SavedDecision> {
        let mut saved: Vec<SavedDecision> = self
            .held
            .iter()
            .map(|(id, held)| SavedDecision {
                id: *id,
                cidr: held.cidr.to_string(),
                value: held.value.clone(),
                origin: held.origin.clone(),
                scope: held.scope.label().to_string(),
                until_unix_ms: now_unix_ms
                    .saturating_add(held.until.saturating_duration_since(now).as_millis() as u64),
            })
            .collect();
        saved.sort_unstable_by_key(|decision| decision.id);
        saved
    }

    /// Takes back saved decisions that have time left at `now` (`now_unix_ms`); returns how
    /// many. Entries that do not parse are skipped.
    pub fn restore(&mut self, saved: &[SavedDecision], now: Instant, now_unix_ms: u64) -> usize {
        let mut restored = 0;
        for decision in saved {
            let left = decision.until_unix_ms.saturating_sub(now_unix_ms);
            let scope = match decision.scope.as_str() {
                "Ip" => Scope::Ip,
                "Range" => Scope::Range,
                _ => continue,
            };
            let Ok(cidr) = decision.cidr.parse::<Cidr>() else {
                continue;
            };
            if left == 0 {
                continue;
            }
            // A file saved before values were kept names the prefix only.
            let value = if decision.value.is_empty() {
                decision.cidr.clone()
            } else {
                decision.value.clone()
            };
            let held = Held {
                cidr,
                value,
                until: now + Duration::from_millis(left).min(LONGEST),
                origin: decision.origin.clone(),
                scope,
            };
            self.hold(decision.id, held);
            restored += 1;
        }
        restored
    }

    fn hold(&mut self, id: i64, held: Held) {
        let cidr = held.cidr;
        let key = (held.value.clone(), held.scope);
        if let Some(old) = self.held.insert(id, held) {
            self.release(id, &old);
        }
        *self.refs.entry(cidr).or_default() += 1;
        self.by_value.entry(key).or_default().insert(id);
    }

    /// Ends decision `id`; whether it was held.
    fn end(&mut self, id: i64) -> bool {
        match self.held.remove(&id) {
            Some(old) => {
                self.release(id, &old);
                true
            }
            None => false,
        }
    }

    /// Forgets what decision `id`, `held` until now, counted for.
    fn release(&mut self, id: i64, held: &Held) {
        if let Some(count) = self.refs.get_mut(&held.cidr) {
            *count -= 1;
            if *count == 0 {
                self.refs.remove(&held.cidr);
            }
        }
        let key = (held.value.clone(), held.scope);
        if let Some(ids) = self.by_value.get_mut(&key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_value.remove(&key);
            }
        }
    }
}

/// One decision as the bouncer saves it for a cold start with the LAPI down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDecision {
    /// The LAPI's id.
    pub id: i64,
    /// The prefix dropped.
    pub cidr: String,
    /// The value as the LAPI wrote it (empty in files saved before it was kept).
    #[serde(default)]
    pub value: String,
    /// Who decided (`cscli`, `crowdsec`, `CAPI`, `moat`, ...).
    pub origin: String,
    /// `Ip` or `Range`.
    pub scope: String,
    /// When it ends, in ms since the Unix epoch.
    pub until_unix_ms: u64,
}

/// The prefix a decision drops and its scope, or why it is not enforced (`type/scope`).
fn enforced(decision: &Decision) -> Result<(Cidr, Scope), String> {
    let kind = || format!("{}/{}", decision.kind, decision.scope);
    if !decision.kind.eq_ignore_ascii_case("ban") {
        return Err(kind());
    }
    let value = decision.value.trim();
    let parsed = match decision.scope.as_str() {
        "Ip" => value
            .parse::<IpAddr>()
            .ok()
            .map(|addr| (Cidr::of(addr.to_canonical(), u32::MAX), Scope::Ip)),
        "Range" => parse_range(value).map(|cidr| (cidr, Scope::Range)),
        _ => return Err(kind()),
    };
    parsed.ok_or_else(|| format!("{} (bad value)", kind()))
}

/// A range as the LAPI writes it; host bits are cleared (`192.0.2.7/24` drops 192.0.2.0/24). An
/// IPv4-mapped IPv6 range of /96 or longer is the IPv4 range it names (`::ffff:192.0.2.0/120`
/// drops 192.0.2.0/24): IPv4 packets carry IPv4 addresses, so the mapped prefix would match
/// none of them.
fn parse_range(value: &str) -> Option<Cidr> {
    let (addr, prefix) = value.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return None;
    }
    match addr {
        IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
            Some(Cidr::of(addr.to_canonical(), prefix - 96))
        }
        _ => Some(Cidr::of(addr, prefix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(id: i64, kind: &str, scope: &str, value: &str, secs: u64) -> Decision {
        Decision {
            id,
            origin: "cscli".into(),
            scenario: "test".into(),
            scope: scope.into(),
            kind: kind.into(),
            value: value.into(),
            duration: Duration::from_secs(secs),
        }
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("valid")
    }

    #[test]
    fn bans_of_ips_and_ranges_are_held_and_others_counted() {
        let now = Instant::now();
        let mut decisions = Decisions::new();
        let stream = Stream {
            new: vec![
                decision(1, "ban", "Ip", "198.51.100.7", 3600),
                decision(2, "ban", "Range", "203.0.113.9/24", 3600),
                decision(3, "ban", "Ip", "2001:db8::7", 3600),
                decision(4, "captcha", "Ip", "198.51.100.8", 3600),
                decision(5, "ban", "Country", "FR", 3600),
                decision(6, "ban", "Ip", "not-an-address", 3600),
            ],
            deleted: Vec::new(),
        };
        let tally = decisions.apply(&stream, true, now);
        assert_eq!(tally.added, 3);
        assert_eq!(tally.ignored.get("captcha/Ip"), Some(&1));
        assert_eq!(tally.ignored.get("ban/Country"), Some(&1));
        assert_eq!(tally.ignored.get("ban/Ip (bad value)"), Some(&1));
        let plan = decisions.plan(&HashSet::new());
        assert_eq!(
            plan.insert,
            vec![
                cidr("198.51.100.7/32"),
                cidr("203.0.113.0/24"),
                cidr("2001:db8::7/128")
            ]
        );
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn a_source_named_twice_stays_until_its_last_decision_ends() {
        let now = Instant::now();
        let mut decisions = Decisions::new();
        let both = Stream {
            new: vec![
                decision(1, "ban", "Ip", "198.51.100.7", 60),
                decision(2, "ban", "Ip", "198.51.100.7", 3600),
            ],
            deleted: Vec::new(),
        };
        decisions.apply(&both, false, now);
        let installed: HashSet<Cidr> = [cidr("198.51.100.7/32")].into();
        // The first ends by its time, the source stays for the second.
        assert_eq!(decisions.expire(now + Duration::from_secs(61)), 1);
        assert!(decisions.plan(&installed).is_empty());
        // A deletion, repeated as the LAPI repeats them, ends the second once.
        let gone = Stream {
            new: Vec::new(),
            deleted: vec![decision(2, "ban", "Ip", "198.51.100.7", 0)],
        };
        assert_eq!(decisions.apply(&gone, false, now).deleted, 1);
        assert_eq!(decisions.apply(&gone, false, now).deleted, 0);
        assert_eq!(
            decisions.plan(&installed).remove,
            vec![cidr("198.51.100.7/32")]
        );
    }

    #[test]
    fn a_deletion_ends_every_decision_of_its_source_and_scope() {
        let now = Instant::now();
        let mut decisions = Decisions::new();
        let three = Stream {
            new: vec![
                decision(6, "ban", "Ip", "192.0.2.88", 600),
                decision(7, "ban", "Ip", "192.0.2.88", 1200),
                decision(8, "ban", "Range", "192.0.2.88/32", 1200),
            ],
            deleted: Vec::new(),
        };
        decisions.apply(&three, false, now);
        // Both Ip decisions were deleted; the LAPI reports one of them.
        let gone = Stream {
            new: Vec::new(),
            deleted: vec![decision(6, "ban", "Ip", "192.0.2.88", 0)],
        };
        assert_eq!(decisions.apply(&gone, false, now).deleted, 2);
        assert_eq!(decisions.len(), 1, "the Range decision is another value");
    }

    #[test]
    fn a_deletion_ends_only_its_own_value_though_another_folds_into_the_same_prefix() {
        let now = Instant::now();
        let mut decisions = Decisions::new();
        let four = Stream {
            new: vec![
                decision(1, "ban", "Ip", "::ffff:198.51.100.7", 3600),
                decision(2, "ban", "Ip", "198.51.100.7", 4 * 3600),
                decision(3, "ban", "Range", "192.0.2.7/24", 3600),
                decision(4, "ban", "Range", "192.0.2.0/24", 4 * 3600),
            ],
            deleted: Vec::new(),
        };
        decisions.apply(&four, false, now);
        let plan = decisions.plan(&HashSet::new());
        assert_eq!(
            plan.insert,
            vec![cidr("192.0.2.0/24"), cidr("198.51.100.7/32")]
        );
        // The mapped Ip value and the /24 written with host bits expire first.
        let gone = Stream {
            new: Vec::new(),
            deleted: vec![
                decision(1, "ban", "Ip", "::ffff:198.51.100.7", 0),
                decision(3, "ban", "Range", "192.0.2.7/24", 0),
            ],
        };
        assert_eq!(decisions.apply(&gone, false, now).deleted, 2);
        assert_eq!(
            decisions.len(),
            2,
            "the other two values are still in force"
        );
        let installed: HashSet<Cidr> = [cidr("192.0.2.0/24"), cidr("198.51.100.7/32")].into();
        assert!(decisions.plan(&installed).is_empty(), "both prefixes stay");
    }

    #[test]
    fn an_ipv4_mapped_range_is_enforced_as_the_ipv4_range_it_names() {
        let now = Instant::now();
        let mut decisions = Decisions::new();
        let stream = Stream {
            new: vec![
                decision(1, "ban", "Range", "::ffff:192.0.2.0/120", 600),
                decision(2, "ban", "Range", "::ffff:0:0/96", 600),
                decision(3, "ban", "Range", "::ffff:0:0/95", 600),
            ],
            deleted: Vec::new(),
        };
        assert_eq!(decisions.apply(&stream, false, now).added, 3);
        let mut insert = decisions.plan(&HashSet::new()).insert;
        insert.sort_unstable_by_key(Cidr::to_string);
        assert_eq!(
            insert,
            vec![
                cidr("0.0.0.0/0"),
                cidr("192.0.2.0/24"),
                cidr("::fffe:0:0/95")
            ],
            "/96 and longer map to IPv4; a shorter one stays an IPv6 range"
        );
        // Saved and restored, each comes back as it was held.
        let saved = decisions.saved(now, 1_000_000);
        let mut restored = Decisions::new();
        assert_eq!(restored.restore(&saved, now, 1_000_000), 3);
        assert_eq!(restored.plan(&HashSet::new()).insert.len(), 3);
    }

    #[test]
    fn a_full_pull_ends_what_it_does_not_list_and_plans_against_the_tries() {
        let now = Instant::now();
        let mut decisions = Decisions::new();
        let first = Stream {
            new: vec![
                decision(1, "ban", "Ip", "198.51.100.7", 600),
                decision(2, "ban", "Range", "2001:db8:1::/48", 600),
            ],
            deleted: Vec::new(),
        };
        decisions.apply(&first, true, now);
        let again = Stream {
            new: vec![decision(2, "ban", "Range", "2001:db8:1::/48", 500)],
            deleted: Vec::new(),
        };
        let tally = decisions.apply(&again, true, now);
        assert_eq!((tally.added, tally.deleted), (1, 1));
        assert_eq!(decisions.len(), 1);
        // The tries hold an entry from before a restart that no decision names any more.
        let installed: HashSet<Cidr> = [cidr("192.0.2.0/24")].into();
        let plan = decisions.plan(&installed);
        assert_eq!(plan.insert, vec![cidr("2001:db8:1::/48")]);
        assert_eq!(plan.remove, vec![cidr("192.0.2.0/24")]);
        let counts = decisions.by_origin();
        assert_eq!(counts.get(&("cscli".to_string(), Scope::Range)), Some(&1));
    }

    #[test]
    fn saved_decisions_come_back_with_what_is_left_of_them() {
        let now = Instant::now();
        let mut decisions = Decisions::new();
        let stream = Stream {
            new: vec![
                decision(1, "ban", "Ip", "2001:db8::7", 600),
                decision(2, "ban", "Range", "203.0.113.0/24", 60),
            ],
            deleted: Vec::new(),
        };
        decisions.apply(&stream, true, now);
        let saved = decisions.saved(now, 1_000_000);
        assert_eq!(saved[0].until_unix_ms, 1_600_000);
        assert_eq!(saved[1].cidr, "203.0.113.0/24");
        // Restored 100 s later: the Range decision has ended, the Ip one has 500 s left.
        let mut restored = Decisions::new();
        assert_eq!(restored.restore(&saved, now, 1_100_000), 1);
        assert_eq!(
            restored.plan(&HashSet::new()).insert,
            vec![cidr("2001:db8::7/128")]
        );
        assert_eq!(restored.expire(now + Duration::from_secs(499)), 0);
        assert_eq!(restored.expire(now + Duration::from_secs(500)), 1);
    }

    #[test]
    fn expired_and_zero_length_decisions_are_not_held() {
        let now = Instant::now();
        let mut decisions = Decisions::new();
        let stream = Stream {
            new: vec![decision(1, "ban", "Ip", "198.51.100.7", 0)],
            deleted: Vec::new(),
        };
        assert_eq!(decisions.apply(&stream, false, now).added, 0);
        assert!(decisions.is_empty());
    }
}
