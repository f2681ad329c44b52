//! Schema versions of the database stores (SQLite, PostgreSQL): one check, one error.

use crate::error::StoreError;

/// Passes a schema version `found` that this build can read or migrate to `supported`.
///
/// # Errors
/// [`StoreError::Corrupt`] for a negative version, [`StoreError::UnsupportedVersion`] for one
/// newer than `supported`.
pub(super) fn check_version<T: Copy + Into<i64>>(
    store: &'static str,
    found: T,
    supported: T,
    location: &str,
) -> Result<T, StoreError> {
    let (n, max) = (found.into(), supported.into());
    if n < 0 {
        Err(StoreError::Corrupt {
            store,
            location: location.to_owned(),
            detail: format!("a negative schema version ({n})"),
        })
    } else if n > max {
        Err(unsupported(store, found, supported, location))
    } else {
        Ok(found)
    }
}

/// The error for a schema version `found` this build cannot read.
pub(super) fn unsupported<T: Into<i64>>(
    store: &'static str,
    found: T,
    supported: T,
    location: &str,
) -> StoreError {
    StoreError::UnsupportedVersion {
        store,
        location: location.to_owned(),
        found: found.into().unsigned_abs(),
        supported: supported.into().unsigned_abs(),
    }
}
