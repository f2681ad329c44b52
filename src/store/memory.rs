//! An in-process store: records live as long as the `MemoryStore` (clones share them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use super::wait::{accepted, lock_or_find};
use super::{LockOrRecord, StoreKey, StoreLock, StoredRecord, TokenStore};
use crate::error::StoreError;

/// Keeps records in memory. Nothing survives the process; clones share one map, so several
/// sessions in one process can share a pair. The default store.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: Mutex<HashMap<StoreKey, StoredRecord>>,
    /// Held by a [`StoreLock`] across a whole reload-refresh-save.
    flight: Mutex<()>,
    fail_next_save: AtomicBool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next save fail once with a storage error, so that applications can test
    /// what they do when their store fails.
    pub fn fail_next_save(&self) {
        self.inner.fail_next_save.store(true, Ordering::SeqCst);
    }
}

impl TokenStore for MemoryStore {
    fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
        Ok(self.inner.records.lock().get(key).cloned())
    }

    fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
        let mut keys: Vec<StoreKey> = self.inner.records.lock().keys().cloned().collect();
        keys.sort();
        Ok(keys)
    }

    fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError> {
        Ok(Box::new(MemoryLock {
            _flight: self.inner.flight.lock(),
            inner: &self.inner,
            key: key.clone(),
        }))
    }

    /// Waits for the lock without a bound (another holder is in this process), looking at
    /// the record between its tries.
    fn lock_unless(
        &self,
        key: &StoreKey,
        wanted: &mut dyn FnMut(&StoredRecord) -> bool,
    ) -> Result<LockOrRecord<'_>, StoreError> {
        let try_lock = || Ok(self.inner.flight.try_lock());
        let locked = |flight| -> Box<dyn StoreLock + '_> {
            Box::new(MemoryLock {
                _flight: flight,
                inner: &self.inner,
                key: key.clone(),
            })
        };
        let load = || Ok(accepted(self.load(key)?, wanted));
        match lock_or_find(Duration::MAX, Duration::ZERO, try_lock, load, locked)? {
            Some(waited) => Ok(waited),
            // After a wait of about a century.
            None => self.lock(key).map(LockOrRecord::Locked),
        }
    }
}

struct MemoryLock<'a> {
    _flight: MutexGuard<'a, ()>,
    inner: &'a Inner,
    key: StoreKey,
}

impl StoreLock for MemoryLock<'_> {
    fn load(&mut self) -> Result<Option<StoredRecord>, StoreError> {
        Ok(self.inner.records.lock().get(&self.key).cloned())
    }

    fn save(&mut self, record: &StoredRecord) -> Result<(), StoreError> {
        if self.inner.fail_next_save.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Io {
                store: "memory",
                location: self.key.to_string(),
                action: "save",
                source: std::io::Error::other("failure injected by MemoryStore::fail_next_save"),
            });
        }
        self.inner
            .records
            .lock()
            .insert(self.key.clone(), record.clone());
        Ok(())
    }
}
