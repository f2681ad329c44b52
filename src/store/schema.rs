//! Versions of what the stores write: the record JSON (every store), the file store's
//! container, and the database schemas (SQLite, PostgreSQL). One check, one error.

use std::fmt::Display;
use std::ops::RangeInclusive;

use serde::Deserialize;

use super::record::describe;
use crate::error::StoreError;

/// Passes a version `found` in `readable` (the versions this build can read or migrate).
///
/// # Errors
/// [`StoreError::Corrupt`] for a negative version, [`StoreError::UnsupportedVersion`] for
/// one outside `readable` (one newer than this build, or 0 where 0 is not a version).
pub(super) fn check_version<T: Copy + Display + TryInto<u64>>(
    store: &'static str,
    found: T,
    readable: RangeInclusive<u64>,
    location: &str,
) -> Result<u64, StoreError> {
    let Ok(n) = found.try_into() else {
        return Err(StoreError::Corrupt {
            store,
            location: location.to_owned(),
            detail: format!("a negative schema version ({found})"),
        });
    };
    if readable.contains(&n) {
        Ok(n)
    } else {
        Err(unsupported(store, n, *readable.end(), location))
    }
}

/// The `version` field of a JSON text (a record, a file store's container), checked by
/// [`check_version`] against `1..=newest`; `what` names the version in the error.
///
/// # Errors
/// [`StoreError::Corrupt`] when the text has no readable `version` (the message never quotes
/// the text); the errors of [`check_version`].
pub(super) fn check_json_version(
    bytes: &[u8],
    store: &'static str,
    what: &str,
    newest: u64,
    location: &str,
) -> Result<u64, StoreError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u64,
    }
    let found: VersionOnly = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        store,
        location: location.to_owned(),
        detail: format!("no readable {what} version ({})", describe(&e)),
    })?;
    check_version(store, found.version, 1..=newest, location)
}

/// The error for a version `found` this build cannot read (`supported` is the newest it can).
pub(super) fn unsupported(
    store: &'static str,
    found: u64,
    supported: u64,
    location: &str,
) -> StoreError {
    StoreError::UnsupportedVersion {
        store,
        location: location.to_owned(),
        found,
        supported,
    }
}
