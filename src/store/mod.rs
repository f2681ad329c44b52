//! Where the token pair and the make ledger are kept.
//!
//! A [`TokenStore`] keeps one [`StoredRecord`] per [`StoreKey`] and offers an exclusive,
//! cross-process [`lock`](TokenStore::lock) under which a session reloads the record, refreshes
//! and saves the new pair: the single flight of `DESIGN.md`. Backends, each behind its cargo
//! feature: `MemoryStore` (`memory`, a default feature), `FileStore` (`file`), `SqliteStore`
//! (`sqlite`), `KeyringStore` (`keyring`), `PostgresStore` (`postgres`).
//!
//! With the `testing` feature, [`conformance`] holds the checks every store passes, ready to
//! run against a store of your own.

/// The public accessors that several stores share word for word, written once. On a store
/// with the fields they read:
/// - `lock_timeout` (a `lock_timeout: Duration` field): [`lock_timeout`](FileStore::lock_timeout);
/// - `with_lock_timeout` (the same field, taken as given): `with_lock_timeout`;
/// - `encryption` (a `codec: RecordCodec` field): `with_encryption` and `is_encrypted`.
#[cfg(any(
    feature = "file",
    feature = "sqlite",
    feature = "keyring",
    feature = "postgres"
))]
macro_rules! store_accessors {
    (lock_timeout) => {
        /// The lock timeout in force.
        pub fn lock_timeout(&self) -> std::time::Duration {
            self.lock_timeout
        }
    };
    (with_lock_timeout) => {
        /// Sets how long [`lock`](crate::store::TokenStore::lock) waits for another holder
        /// before it fails with [`StoreError::LockTimeout`](crate::StoreError::LockTimeout)
        /// (default 30 s). Keep it no shorter than the session's HTTP timeout: a holder may
        /// wait that long for its refresh.
        pub fn with_lock_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.lock_timeout = timeout;
            self
        }
    };
    (encryption) => {
        /// Encrypts every record this store saves (feature `encryption`); records saved in
        /// clear are still read, and are sealed at their next save. See the crate's
        /// "Secrets" notes.
        #[cfg(feature = "encryption")]
        pub fn with_encryption(mut self, encryption: crate::store::Encryption) -> Self {
            self.codec = crate::store::RecordCodec::encrypted(encryption);
            self
        }

        /// Whether this store encrypts the records it saves.
        pub fn is_encrypted(&self) -> bool {
            self.codec.is_encrypting()
        }
    };
}

#[cfg_attr(
    not(any(feature = "file", feature = "sqlite", feature = "postgres")),
    allow(dead_code)
)]
mod codec;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(feature = "encryption")]
mod encryption;
#[cfg(feature = "file")]
mod file;
#[cfg(any(
    feature = "file",
    feature = "sqlite",
    feature = "keyring",
    feature = "encryption"
))]
#[cfg_attr(not(any(feature = "file", feature = "sqlite")), allow(dead_code))]
mod fs;
#[cfg(feature = "keyring")]
mod keyring;
// Always compiled: the builder's store when none is given. Public with the `memory` feature.
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
pub(crate) mod record;
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod transaction;
mod wait;

#[cfg(feature = "postgres")]
pub use self::postgres::PostgresStore;
#[cfg(any(feature = "file", feature = "sqlite", feature = "postgres"))]
pub(crate) use codec::RecordCodec;
#[cfg(feature = "encryption")]
pub use encryption::{Encryption, EncryptionKey, KEYRING_KEY_ACCOUNT};
#[cfg(feature = "file")]
pub use file::FileStore;
#[cfg(feature = "keyring")]
pub use keyring::{KeyringBackend, KeyringStore};
#[cfg(feature = "memory")]
pub use memory::MemoryStore;
#[cfg(not(feature = "memory"))]
pub(crate) use memory::MemoryStore;
#[cfg(all(test, feature = "file"))]
pub(crate) use record::RECORD_VERSION;
pub(crate) use record::{decode_record, encode_record};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use std::fmt;
use std::sync::Arc;

use crate::error::StoreError;
use crate::token::TokenPair;

/// Names one account's record in a store: derived from the base URL, email and appId, or set
/// explicitly on the session builder. Not a secret.
///
/// An account's key is `<base URL> <email> <appId>`, each part percent-encoded so that it
/// holds no space (`%` becomes `%25`, a space `%20`, control characters `%XX`): no two
/// different accounts share a key. The email is trimmed and lowercased, as the server counts
/// it; the base URL loses its trailing `/`. Keys written by earlier versions (the parts joined
/// by spaces as given) are [`legacy_for_account`](Self::legacy_for_account).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey(String);

impl StoreKey {
    /// A key with an explicit name.
    pub fn new(name: impl Into<String>) -> Self {
        StoreKey(name.into())
    }

    /// The key of an account: `base_url` (without a trailing `/`), email (trimmed, lowercase)
    /// and appId, each percent-encoded (see [`StoreKey`]).
    pub fn for_account(base_url: &str, email: &str, app_id: &str) -> Self {
        StoreKey(format!(
            "{} {} {}",
            encode_part(base_url.trim_end_matches('/')),
            encode_part(&canonical_email(email)),
            encode_part(app_id)
        ))
    }

    /// The key earlier versions gave the account: the parts joined by spaces as given (the
    /// base URL without its trailing `/`). Two accounts could share it, and `User@x` and
    /// `user@x` did not. Only for finding records saved by those versions: see
    /// [`load_with_legacy`].
    pub fn legacy_for_account(base_url: &str, email: &str, app_id: &str) -> Self {
        StoreKey(format!(
            "{} {} {}",
            base_url.trim_end_matches('/'),
            email,
            app_id
        ))
    }

    /// The (base URL, email, appId) of a key made by [`for_account`](Self::for_account);
    /// `None` for any other key (a legacy key whose parts hold a `%` may be misread, and
    /// one whose parts hold spaces gives `None`).
    pub fn account_parts(&self) -> Option<(String, String, String)> {
        let mut parts = self.0.split(' ');
        let (Some(base), Some(email), Some(app), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some((decode_part(base)?, decode_part(email)?, decode_part(app)?))
    }

    /// The key used when only the base URL is known (no credentials given).
    pub fn for_base_url(base_url: &str) -> Self {
        StoreKey(base_url.trim_end_matches('/').to_owned())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The email as the server counts it: trimmed, lowercase.
pub fn canonical_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// `part` with `%`, spaces and control characters percent-encoded (UTF-8 bytes).
fn encode_part(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        if c == '%' || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of [`encode_part`]; `None` for a bad escape.
fn decode_part(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The record under the lock's key, or, when there is none, the record under `legacy` (an
/// account's key as earlier versions made it, [`StoreKey::legacy_for_account`]), which the
/// caller then saves under the lock's key: the record and its make ledger move to the new key
/// on the first save. The legacy record is only read, never changed; once the new key holds a
/// record it is no longer looked at. Nothing is looked up when `legacy` is the lock's key.
///
/// Call it under the lock, in place of [`StoreLock::load`].
///
/// # Errors
/// The errors of [`StoreLock::load`] and [`TokenStore::load`].
pub fn load_with_legacy(
    store: &dyn TokenStore,
    guard: &mut dyn StoreLock,
    key: &StoreKey,
    legacy: &StoreKey,
) -> Result<Option<StoredRecord>, StoreError> {
    if let Some(record) = guard.load()? {
        return Ok(Some(record));
    }
    if legacy == key {
        return Ok(None);
    }
    let found = store.load(legacy)?;
    if found.is_some() {
        log::info!("store key {legacy} is an earlier version's key of {key}: its record moves there at the next save");
    }
    Ok(found)
}

/// Where the record under `key` is, for errors: `<the store's location> key <key>`.
#[cfg(any(feature = "file", feature = "sqlite", feature = "postgres"))]
pub(crate) fn record_location(store_location: impl fmt::Display, key: &StoreKey) -> String {
    format!("{store_location} key {key}")
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a store keeps under one key: the current pair (if any), the make ledger, and what
/// every process sharing the store must agree on (the server's clock, a 429 cooldown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredRecord {
    /// The current token pair; `None` after a logout or before the first make.
    pub pair: Option<TokenPair>,
    /// Unix seconds (on the server's clock when known) of every tokens.make that may have
    /// reached the server, written *before* it is sent; the newest `make_limit` entries are
    /// kept whatever the clock says. Kept across logouts so the quota survives them.
    pub makes: Vec<i64>,
    /// When the stored pair arrived, on the server's clock (unix seconds); `None` when not
    /// known (a record written by version 0.1).
    pub issued_at: Option<i64>,
    /// The server's clock minus this machine's, in seconds, as last learned from a reply's
    /// `Date` header; `None` while unknown.
    pub server_offset: Option<i64>,
    /// Set when the server refused tokens.make with HTTP 429: no make is sent before it ends.
    pub make_cooldown: Option<Cooldown>,
    /// Set while a process has a tokens.make on its way (server-clock unix seconds: the end
    /// of that attempt's HTTP timeout, plus a margin). A store whose lock ends with each save
    /// (SQLite, PostgreSQL) lets others in between the ledger entry and the new pair: they
    /// wait for it instead of making too. Cleared when that attempt ends; a crashed
    /// attempt's mark simply expires.
    pub make_in_flight_until: Option<i64>,
}

/// A pause on tokens.make after the server refused it with HTTP 429, persisted with the
/// record so that no process asks again before it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cooldown {
    /// When tokens.make may be sent again (server-clock unix seconds).
    pub until: i64,
    /// How many 429s in a row since the last successful make (the pause doubles with each).
    pub strikes: u32,
}

/// A store of token records.
///
/// Implementations must be safe to share between threads and must make [`lock`](Self::lock)
/// exclusive across threads *and* processes that open the same underlying storage.
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// The record under `key`, or `Ok(None)` when there is none.
    ///
    /// # Errors
    /// [`StoreError`] when the storage cannot be read or the record is corrupt.
    fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError>;

    /// Takes the exclusive lock for `key`, waiting for another holder (in this or another
    /// process) to release it. The lock is released when the returned guard is dropped, and
    /// by the operating system if the process dies.
    ///
    /// Every durable store of this crate bounds the wait by its lock timeout (30 s unless its
    /// `with_lock_timeout` says otherwise), so a holder that stops (Ctrl-Z, a paused VM)
    /// cannot block the others for ever. Keep the lock timeout no shorter than the session's
    /// HTTP timeout ([`SessionBuilder::timeout`](crate::SessionBuilder::timeout)): a holder
    /// may be waiting that long for the server's answer to its refresh.
    ///
    /// # Errors
    /// [`StoreError::LockTimeout`] when another holder kept the lock past the lock timeout;
    /// another [`StoreError`] when the lock cannot be taken.
    fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError>;

    /// Takes the exclusive lock for `key` as [`lock`](Self::lock) does, unless, while it
    /// waits for another holder, the record stored under `key` becomes one that `wanted`
    /// accepts: then the wait ends at once and that record is returned, without the lock.
    ///
    /// A crowd of processes at the end of an access token uses it: one of them holds the
    /// lock and refreshes; the others take the pair it saved as soon as it is there, instead
    /// of each taking the lock in turn only to read that pair. What `wanted` accepts is the
    /// caller's decision; the store only reads (with [`load`](Self::load) or the like, no
    /// lock held) and asks. `wanted` is asked only while another holder keeps the store
    /// waiting, never about a record read under the lock, and a record it refused may be
    /// shown to it again.
    ///
    /// The wait is bounded as [`lock`](Self::lock)'s is. A failed read while waiting is not
    /// an error: the wait goes on for the lock, under which the caller reads again.
    ///
    /// The default, for a store written before this method existed, is [`lock`](Self::lock)
    /// (never [`LockOrRecord::Found`]): correct, only slower for a crowd. Every store of this
    /// crate overrides it; the file, SQLite and memory stores read the record between their
    /// polls of the lock, the keyring store every 50 ms, and the PostgreSQL store when it
    /// arrives and once more when the holder's transaction ends (a shared row lock, woken by
    /// the server), after which it queues for the row lock as [`lock`](Self::lock) does.
    ///
    /// # Errors
    /// Those of [`lock`](Self::lock).
    fn lock_unless(
        &self,
        key: &StoreKey,
        wanted: &mut dyn FnMut(&StoredRecord) -> bool,
    ) -> Result<LockOrRecord<'_>, StoreError> {
        let _ = wanted;
        self.lock(key).map(LockOrRecord::Locked)
    }

    /// Every key under which a record is stored (with a pair, or only a make ledger after a
    /// logout), sorted, each once. A snapshot, taken without the lock: a key saved or
    /// removed meanwhile may or may not be in it, and a key listed may be gone when it is
    /// loaded. Keys hold no secret; records are not read (but by a store that must check an
    /// index against its entries).
    ///
    /// Every store of this crate implements it, and [`conformance`] checks it. The default,
    /// for a store written before this method existed, fails with [`StoreError::Backend`]
    /// saying so (it keeps compiling; `chatapp accounts` then reports the error).
    ///
    /// # Errors
    /// [`StoreError`] when the storage cannot be read.
    fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
        Err(StoreError::Backend {
            store: "custom",
            location: format!("{self:?}"),
            source: "this store cannot list its keys (TokenStore::keys is not implemented)".into(),
        })
    }

    /// Saves `record` under `key`, durably, under the lock.
    ///
    /// # Errors
    /// [`StoreError`] when the lock cannot be taken or the write fails; the previous record
    /// then stays in place.
    fn save(&self, key: &StoreKey, record: &StoredRecord) -> Result<(), StoreError> {
        let mut guard = self.lock(key)?;
        guard.save(record)
    }

    /// Removes the pair (and its arrival time) under `key` and keeps the rest: the make
    /// ledger, the 429 cooldown, the server clock offset, so the quota survives a logout.
    /// Clearing an absent key is not an error.
    ///
    /// # Errors
    /// [`StoreError`] when the storage cannot be read or written.
    fn clear(&self, key: &StoreKey) -> Result<(), StoreError> {
        let mut guard = self.lock(key)?;
        match guard.load()? {
            Some(mut record) if record.pair.is_some() => {
                record.pair = None;
                record.issued_at = None;
                guard.save(&record)
            }
            _ => Ok(()),
        }
    }
}

/// The exclusive hold on one key of a store, returned by [`TokenStore::lock`].
///
/// Once [`save`](Self::save) returns `Ok` the record is durable. A store may end its hold with
/// each save (SQLite and PostgreSQL commit a transaction); a later `load` or `save` on the same
/// guard then takes the hold again first, so that a load followed by a save is never split by
/// another writer. Dropping the guard without saving changes nothing.
pub trait StoreLock {
    /// The record under the locked key, as it is now.
    ///
    /// # Errors
    /// [`StoreError`] when the storage cannot be read or the record is corrupt.
    fn load(&mut self) -> Result<Option<StoredRecord>, StoreError>;

    /// Writes `record` under the locked key, durably.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails; the previous record then stays in place.
    fn save(&mut self, record: &StoredRecord) -> Result<(), StoreError>;
}

/// What [`TokenStore::lock_unless`] came to: the lock, or a record that the caller accepted
/// while it waited for the lock.
pub enum LockOrRecord<'a> {
    /// The exclusive lock, as [`TokenStore::lock`] returns it.
    Locked(Box<dyn StoreLock + 'a>),
    /// The record found stored while another holder kept the lock, which the caller's check
    /// accepted; no lock is held.
    Found(StoredRecord),
}

impl fmt::Debug for LockOrRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockOrRecord::Locked(_) => f.write_str("Locked(..)"),
            LockOrRecord::Found(record) => f.debug_tuple("Found").field(record).finish(),
        }
    }
}

/// Shared and boxed stores are stores: `Arc<FileStore>`, `Box<dyn TokenStore>`, ...
macro_rules! forward_token_store {
    ($($pointer:ident),*) => {$(
        impl<S: TokenStore + ?Sized> TokenStore for $pointer<S> {
            fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
                (**self).load(key)
            }
            fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError> {
                (**self).lock(key)
            }
            fn lock_unless(
                &self,
                key: &StoreKey,
                wanted: &mut dyn FnMut(&StoredRecord) -> bool,
            ) -> Result<LockOrRecord<'_>, StoreError> {
                (**self).lock_unless(key, wanted)
            }
            fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
                (**self).keys()
            }
            fn save(&self, key: &StoreKey, record: &StoredRecord) -> Result<(), StoreError> {
                (**self).save(key, record)
            }
            fn clear(&self, key: &StoreKey) -> Result<(), StoreError> {
                (**self).clear(key)
            }
        }
    )*};
}

forward_token_store!(Arc, Box);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_give_back_their_parts() {
        for (base, email, app) in [
            ("https://api.chatapp.online", "me@example.com", "app_4242_1"),
            ("http://127.0.0.1:8080", "a b@c.d", "app_1"),
        ] {
            let key = StoreKey::for_account(&format!("{base}/"), email, app);
            assert_eq!(
                key.account_parts(),
                Some((base.to_owned(), email.to_owned(), app.to_owned())),
                "{key}"
            );
        }
        assert_eq!(StoreKey::for_base_url("https://x").account_parts(), None);
        assert_eq!(StoreKey::new("mine").account_parts(), None);
    }

    /// A store written before `keys` existed: it compiles, and listing says why it fails.
    #[test]
    fn a_store_without_keys_says_so() {
        #[derive(Debug)]
        struct Old(MemoryStore);
        impl TokenStore for Old {
            fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
                self.0.load(key)
            }
            fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError> {
                self.0.lock(key)
            }
        }
        match Old(MemoryStore::new()).keys() {
            Err(e @ StoreError::Backend { .. }) => {
                assert!(e.to_string().contains("cannot list its keys"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
}
