//! Writes to the running filter's maps. Today that is the settings map; lists and bans join it
//! with the policy work (issue #3).

use aya::maps::{Array, Map, MapData, MapError};
use filter_common::{Settings, maps::SETTINGS, settings::FLAG_DRY_RUN};

/// A map write that failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The object has no map of that name (the object and this binary disagree).
    #[error("the filter has no map named {name}")]
    MissingMap {
        /// The map's name.
        name: &'static str,
    },
    /// The kernel refused the write.
    #[error("writing map {name}: {source}")]
    Write {
        /// The map's name.
        name: &'static str,
        /// What aya reported.
        source: MapError,
    },
}

/// The settings for the given options.
pub const fn settings(dry_run: bool) -> Settings {
    Settings {
        flags: if dry_run { FLAG_DRY_RUN } else { 0 },
        _pad: 0,
    }
}

/// Replaces the running settings in the `SETTINGS` map. One map update: the program sees the
/// old value or the new one, never a mix.
pub fn write_settings(map: Option<&mut Map>, value: Settings) -> Result<(), ControlError> {
    let map = map.ok_or(ControlError::MissingMap { name: SETTINGS })?;
    let mut array: Array<&mut MapData, Settings> =
        Array::try_from(map).map_err(|source| ControlError::Write {
            name: SETTINGS,
            source,
        })?;
    array
        .set(0, value, 0)
        .map_err(|source| ControlError::Write {
            name: SETTINGS,
            source,
        })
}
