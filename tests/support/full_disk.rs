//! A full disk where a real one cannot be made (another user, a database server, the
//! keyring): a store wrapper whose saves fail with "no space left on device" while its
//! switch says the disk is full. Loads and locks go through.

use std::fmt;
use std::sync::Arc;

use chatapp_session::store::{StoreKey, StoreLock, StoredRecord, TokenStore};
use chatapp_session::StoreError;

/// Tells whether the disk is full right now.
type Switch = Arc<dyn Fn() -> bool + Send + Sync>;

/// `inner`, with saves that fail while the switch is on.
pub struct FullDisk<S> {
    inner: S,
    full: Switch,
}

impl<S: TokenStore> FullDisk<S> {
    /// Wraps `inner`; `full` is asked before every save.
    pub fn new(inner: S, full: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        FullDisk {
            inner,
            full: Arc::new(full),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for FullDisk<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FullDisk")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The error a save gets on the full disk.
pub fn no_space() -> StoreError {
    StoreError::Io {
        store: "full-disk",
        location: "test wrapper".into(),
        action: "write",
        source: std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device"),
    }
}

struct FullDiskLock<'a> {
    inner: Box<dyn StoreLock + 'a>,
    full: &'a Switch,
}

impl StoreLock for FullDiskLock<'_> {
    fn load(&mut self) -> Result<Option<StoredRecord>, StoreError> {
        self.inner.load()
    }
    fn save(&mut self, record: &StoredRecord) -> Result<(), StoreError> {
        if (self.full)() {
            return Err(no_space());
        }
        self.inner.save(record)
    }
}

impl<S: TokenStore> TokenStore for FullDisk<S> {
    fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
        self.inner.load(key)
    }
    fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError> {
        Ok(Box::new(FullDiskLock {
            inner: self.inner.lock(key)?,
            full: &self.full,
        }))
    }
    fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
        self.inner.keys()
    }
}
