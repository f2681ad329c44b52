//! The lock of the database stores (SQLite, PostgreSQL): a transaction held from `lock` until
//! a save commits it. One shape for both; each store says how to begin, read, write and roll
//! back on its connection ([`Transaction`]).

use super::{StoreLock, StoredRecord};
use crate::error::StoreError;

/// What a database lock does on its connection.
pub(super) trait Transaction {
    /// Opens the transaction that holds the lock (again, after a save).
    fn begin(&mut self) -> Result<(), StoreError>;
    /// The record under the locked key, read inside the open transaction.
    fn select(&mut self) -> Result<Option<StoredRecord>, StoreError>;
    /// Writes `record` under the locked key and commits, inside the open transaction.
    fn upsert_and_commit(&mut self, record: &StoredRecord) -> Result<(), StoreError>;
    /// Ends the open (or half-opened) transaction without saving. Never fails: a failure is
    /// logged, and the connection left so that the next [`begin`](Self::begin) starts clean.
    fn rollback(&mut self);
}

/// A database store's [`StoreLock`]: the transaction is open from `lock` until a save commits
/// it; a load or a save after a save opens it again (so that a load and the save after it are
/// never split by another writer); a failed save, and a drop without a save, roll back.
pub(super) struct TransactionGuard<T: Transaction> {
    tx: T,
    in_transaction: bool,
}

impl<T: Transaction> TransactionGuard<T> {
    /// A guard on the transaction that `begin` opens now (the first opening may wait for
    /// less than [`Transaction::begin`] would: what is left of the lock timeout).
    ///
    /// # Errors
    /// The error of `begin`; whatever it opened is rolled back.
    pub(super) fn begin_with(
        tx: T,
        begin: impl FnOnce(&mut T) -> Result<(), StoreError>,
    ) -> Result<Self, StoreError> {
        let mut guard = TransactionGuard {
            tx,
            in_transaction: false,
        };
        guard.open_with(begin)?;
        Ok(guard)
    }

    /// Opens the transaction with `begin`, unless it is open.
    fn open_with(
        &mut self,
        begin: impl FnOnce(&mut T) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.in_transaction {
            return Ok(());
        }
        // Whatever `begin` did before it failed is undone by the rollback.
        self.in_transaction = true;
        let result = begin(&mut self.tx);
        if result.is_err() {
            self.rollback();
        }
        result
    }

    /// Opens the transaction again, unless it is open.
    fn open(&mut self) -> Result<(), StoreError> {
        self.open_with(T::begin)
    }

    fn rollback(&mut self) {
        if self.in_transaction {
            self.in_transaction = false;
            self.tx.rollback();
        }
    }
}

impl<T: Transaction> StoreLock for TransactionGuard<T> {
    fn load(&mut self) -> Result<Option<StoredRecord>, StoreError> {
        self.open()?;
        self.tx.select()
    }

    fn save(&mut self, record: &StoredRecord) -> Result<(), StoreError> {
        self.open()?;
        let result = self.tx.upsert_and_commit(record);
        if result.is_ok() {
            self.in_transaction = false;
        } else {
            self.rollback();
        }
        result
    }
}

impl<T: Transaction> Drop for TransactionGuard<T> {
    fn drop(&mut self) {
        self.rollback();
    }
}
