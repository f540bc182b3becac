//! Reads the per-CPU counters, sums them, and renders them as a table or JSON.

use aya::maps::{Map, MapData, MapError, PerCpuArray};
use filter_common::{Counter, Reason, Verdict, counter_index, maps::COUNTERS};
use serde_json::{Map as JsonMap, Value, json};

use crate::pins::{NotRunning, PinDir};

/// Why counters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The filter is not running on the interface.
    #[error(transparent)]
    NotRunning(#[from] NotRunning),
    /// The pinned map could not be opened or read.
    #[error("reading the counters of {iface}: {source}")]
    Map {
        /// The interface.
        iface: String,
        /// What aya reported.
        source: MapError,
    },
}

/// All counters, summed over CPUs, indexed `[verdict][reason]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    counters: [[Counter; Reason::COUNT]; Verdict::COUNT],
}

impl Snapshot {
    /// The counter of one `(verdict, reason)` pair.
    pub fn get(&self, verdict: Verdict, reason: Reason) -> Counter {
        self.counters[verdict as usize][reason as usize]
    }

    /// The sum of every counter.
    pub fn total(&self) -> Counter {
        self.counters
            .iter()
            .flatten()
            .fold(Counter::default(), |sum, c| sum.add(*c))
    }

    /// Every pair with a non-zero count, in verdict then reason order.
    pub fn nonzero(&self) -> impl Iterator<Item = (Verdict, Reason, Counter)> + '_ {
        Verdict::ALL.into_iter().flat_map(move |verdict| {
            Reason::ALL.into_iter().filter_map(move |reason| {
                let counter = self.get(verdict, reason);
                (counter.packets != 0).then_some((verdict, reason, counter))
            })
        })
    }

    /// Reads every slot of the counters map and sums each over CPUs.
    pub fn read(map: &Map) -> Result<Snapshot, MapError> {
        let array: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map)?;
        let mut counters = [[Counter::default(); Reason::COUNT]; Verdict::COUNT];
        for verdict in Verdict::ALL {
            for reason in Reason::ALL {
                let values = array.get(&counter_index(verdict, reason), 0)?;
                counters[verdict as usize][reason as usize] =
                    values.iter().fold(Counter::default(), |sum, c| sum.add(*c));
            }
        }
        Ok(Snapshot { counters })
    }

    /// Reads the counters pinned for `iface` by a running `moat run`.
    pub fn read_pinned(iface: &str) -> Result<Snapshot, StatsError> {
        let pins = PinDir::for_iface(iface);
        let path = pins.running_map(iface, COUNTERS)?;
        let map_error = |source| StatsError::Map {
            iface: iface.to_string(),
            source,
        };
        let data = MapData::from_pin(&path).map_err(map_error)?;
        Snapshot::read(&Map::PerCpuArray(data)).map_err(map_error)
    }

    /// JSON with every pair present: `{"iface", "counters": {verdict: {reason: {packets, bytes}}}}`.
    pub fn to_json(&self, iface: &str) -> Value {
        let mut verdicts = JsonMap::new();
        for verdict in Verdict::ALL {
            let mut reasons = JsonMap::new();
            for reason in Reason::ALL {
                let counter = self.get(verdict, reason);
                reasons.insert(
                    reason.label().to_string(),
                    json!({"packets": counter.packets, "bytes": counter.bytes}),
                );
            }
            verdicts.insert(verdict.label().to_string(), Value::Object(reasons));
        }
        let total = self.total();
        json!({
            "iface": iface,
            "total": {"packets": total.packets, "bytes": total.bytes},
            "counters": verdicts,
        })
    }

    /// A table of the non-zero pairs and a total line.
    pub fn to_table(&self, iface: &str) -> String {
        let mut out = format!(
            "moat on {iface}\n{:<11} {:<12} {:>14} {:>16}\n",
            "VERDICT", "REASON", "PACKETS", "BYTES"
        );
        for (verdict, reason, counter) in self.nonzero() {
            out.push_str(&format!(
                "{:<11} {:<12} {:>14} {:>16}\n",
                verdict.label(),
                reason.label(),
                counter.packets,
                counter.bytes
            ));
        }
        let total = self.total();
        out.push_str(&format!(
            "{:<11} {:<12} {:>14} {:>16}\n",
            "total", "", total.packets, total.bytes
        ));
        out
    }
}
