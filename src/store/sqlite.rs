//! A store in a SQLite database (WAL mode), one row per store key; the database's own write
//! lock (`BEGIN IMMEDIATE`) is the cross-process single flight.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::fs::{
    check_private, create_parent_dirs, io_error, make_private_if_exists, open_or_create_private,
};
use super::schema;
use super::transaction::{Transaction, TransactionGuard};
use super::wait::{Backoff, DEFAULT_LOCK_TIMEOUT};
use super::{record_location, RecordCodec, StoreKey, StoreLock, StoredRecord, TokenStore};
use crate::error::StoreError;

const STORE: &str = "sqlite";

/// The schema version this build creates and the newest it reads (`PRAGMA user_version`).
const SCHEMA_VERSION: u32 = 1;

/// The longest busy timeout SQLite accepts (`i32::MAX` milliseconds, about 24 days).
const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

const SELECT: &str = "SELECT record FROM chatapp_tokens WHERE store_key = ?1";
const KEYS: &str = "SELECT store_key FROM chatapp_tokens ORDER BY store_key";
const UPSERT: &str = "INSERT INTO chatapp_tokens (store_key, record, updated_at) \
     VALUES (?1, ?2, unixepoch()) \
     ON CONFLICT (store_key) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at";

/// Keeps records in a SQLite database: table `chatapp_tokens(store_key TEXT PRIMARY KEY,
/// record TEXT NOT NULL, updated_at INTEGER NOT NULL)`, one row per [`StoreKey`], the record in
/// the record JSON form (`{"version":…,"pair":…,"makes":[…]}`, the same in every store; or
/// sealed in an encrypted envelope, `with_encryption`, feature `encryption`);
/// `PRAGMA user_version` is the schema version. Several
/// accounts, and several processes, can share one database.
///
/// - [`open`](Self::open) creates the database file readable by its owner only (`0600`), its
///   missing parent directories `0700`, and refuses an existing file that its group or other
///   users may access ([`StoreError::InsecurePermissions`]). The `-wal` and `-shm` files beside
///   it are made `0600` too.
/// - The database runs in WAL mode with `synchronous = FULL`: a save that returned is on disk,
///   and [`load`](TokenStore::load) (on a connection of its own) never waits for a lock holder.
/// - [`lock`](TokenStore::lock) opens a `BEGIN IMMEDIATE` transaction, which excludes every
///   other writer of the database, in this process or another, and which SQLite releases if
///   the process dies. The lock's `save` writes the row and commits; dropping the lock without
///   saving rolls back. A waiter, in this process or another, waits at most the lock timeout
///   (30 s unless [`with_lock_timeout`](Self::with_lock_timeout) says otherwise), then fails
///   with [`StoreError::LockTimeout`]. It retries `BEGIN IMMEDIATE` in steps of at most 2 ms
///   (not SQLite's default busy handler, which sleeps up to 100 ms at a time), so it takes the
///   lock within about 2 ms of its release.
/// - A row that cannot be read ([`StoreError::Corrupt`]) or was written by a newer build
///   ([`StoreError::UnsupportedVersion`]) is never overwritten: saves under its key are refused.
pub struct SqliteStore {
    path: PathBuf,
    /// Where errors say the store is: `sqlite:<path>`.
    location: String,
    lock_timeout: Duration,
    /// Serves [`TokenStore::load`]; in WAL mode a reader never waits for the writer.
    reader: Mutex<Connection>,
    /// Held by a [`SqliteLock`] for its whole life, inside `BEGIN IMMEDIATE`.
    writer: Mutex<Connection>,
    codec: RecordCodec,
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (and its missing parent directories) when it
    /// does not exist, and creating or checking its schema.
    ///
    /// # Errors
    /// - [`StoreError::InsecurePermissions`] when the file is accessible by group or others;
    /// - [`StoreError::UnsupportedVersion`] when a newer build created the schema;
    /// - [`StoreError::Corrupt`] when the file is not a SQLite database;
    /// - [`StoreError::Io`] or [`StoreError::Backend`] when the file or the database cannot be
    ///   opened, set up or migrated.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_owned();
        let location = format!("sqlite:{}", path.display());
        create_private_file(&path)?;
        let writer = connect(&path, &location, DEFAULT_LOCK_TIMEOUT)?;
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| sql_error(e, &location))?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!("{location}: SQLite refused WAL mode (journal mode {mode}); loads may wait for a lock holder");
        }
        migrate(&writer, &location)?;
        // From now on the writer waits for the lock in `begin_immediate`'s short steps only.
        writer
            .busy_timeout(Duration::ZERO)
            .map_err(|e| sql_error(e, &location))?;
        let reader = connect(&path, &location, DEFAULT_LOCK_TIMEOUT)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = OsString::from(path.as_os_str());
            side.push(suffix);
            make_private_if_exists(STORE, Path::new(&side))?;
        }
        Ok(SqliteStore {
            path,
            location,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
            codec: RecordCodec::default(),
        })
    }

    store_accessors!(encryption);

    /// Sets how long [`lock`](TokenStore::lock) waits for another holder before it fails with
    /// [`StoreError::LockTimeout`] (default 30 s; at most about 24 days), and how long a load
    /// waits for the database when SQLite finds it busy. Keep it no shorter than the
    /// session's HTTP timeout: a holder may wait that long for its refresh.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        let timeout = timeout.min(MAX_BUSY_TIMEOUT);
        // `sqlite3_busy_timeout` cannot fail; should it ever, loads keep the default wait.
        if let Err(e) = self.reader.lock().busy_timeout(timeout) {
            log::warn!(
                "{}: cannot set the busy timeout of loads: {e}",
                self.location
            );
        }
        self.lock_timeout = timeout;
        self
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    store_accessors!(lock_timeout);

    /// The record under `key`, read on `conn` (inside its transaction, if any).
    fn select(
        &self,
        conn: &Connection,
        key: &StoreKey,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let sql = |e| sql_error(e, &self.location);
        let mut stmt = conn.prepare_cached(SELECT).map_err(sql)?;
        let mut rows = stmt.query([key.as_str()]).map_err(sql)?;
        let Some(row) = rows.next().map_err(sql)? else {
            return Ok(None);
        };
        let bytes = match row.get_ref(0).map_err(sql)? {
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes,
            _ => {
                return Err(StoreError::Corrupt {
                    store: STORE,
                    location: record_location(&self.location, key),
                    detail: "the record is not text".to_owned(),
                })
            }
        };
        self.codec
            .decode(bytes, key, STORE, &record_location(&self.location, key))
            .map(Some)
    }

    fn lock_timeout_error(&self) -> StoreError {
        StoreError::LockTimeout {
            store: STORE,
            location: self.location.clone(),
            waited: self.lock_timeout,
        }
    }

    /// Starts the write transaction that is the store's lock, retrying in short steps while
    /// another connection holds it, up to the lock timeout.
    fn begin_immediate(&self, conn: &Connection, timeout: Duration) -> Result<(), StoreError> {
        let mut backoff = Backoff::new(timeout);
        loop {
            match conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => return Ok(()),
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                    if !backoff.pause() {
                        return Err(self.lock_timeout_error());
                    }
                }
                Err(e) => return Err(sql_error(e, &self.location)),
            }
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("lock_timeout", &self.lock_timeout)
            .field("encrypted", &self.codec.is_encrypting())
            .finish_non_exhaustive()
    }
}

impl TokenStore for SqliteStore {
    fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
        self.select(&self.reader.lock(), key)
    }

    fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
        let conn = self.reader.lock();
        let sql = |e| sql_error(e, &self.location);
        let mut stmt = conn.prepare_cached(KEYS).map_err(sql)?;
        let keys = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(sql)?
            .map(|key| key.map(StoreKey::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        Ok(keys)
    }

    fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError> {
        let start = Instant::now();
        // Another thread of this process holding the lock is waited for within the same bound.
        let conn = self
            .writer
            .try_lock_for(self.lock_timeout)
            .ok_or_else(|| self.lock_timeout_error())?;
        if !conn.is_autocommit() {
            // A transaction left open by a guard whose rollback failed: end it first.
            conn.execute_batch("ROLLBACK")
                .map_err(|e| sql_error(e, &self.location))?;
        }
        let remaining = self.lock_timeout.saturating_sub(start.elapsed());
        let lock = SqliteLock {
            store: self,
            conn,
            key: key.clone(),
        };
        Ok(Box::new(TransactionGuard::begin_with(lock, |lock| {
            self.begin_immediate(&lock.conn, remaining)
        })?))
    }
}

/// The store's write connection, inside `BEGIN IMMEDIATE` until the record is saved (held
/// by a [`TransactionGuard`]).
struct SqliteLock<'a> {
    store: &'a SqliteStore,
    conn: MutexGuard<'a, Connection>,
    key: StoreKey,
}

impl Transaction for SqliteLock<'_> {
    fn begin(&mut self) -> Result<(), StoreError> {
        self.store
            .begin_immediate(&self.conn, self.store.lock_timeout)
    }

    fn select(&mut self) -> Result<Option<StoredRecord>, StoreError> {
        self.store.select(&self.conn, &self.key)
    }

    fn upsert_and_commit(&mut self, record: &StoredRecord) -> Result<(), StoreError> {
        let sql = |e| sql_error(e, &self.store.location);
        // Never replace a record that this build cannot read.
        self.store.select(&self.conn, &self.key)?;
        let encoded = self.store.codec.encode(
            &self.key,
            record,
            STORE,
            &record_location(&self.store.location, &self.key),
        )?;
        self.conn
            .prepare_cached(UPSERT)
            .and_then(|mut stmt| stmt.execute([self.key.as_str(), encoded.as_str()]))
            .map_err(sql)?;
        self.conn.execute_batch("COMMIT").map_err(sql)
    }

    fn rollback(&mut self) {
        // No transaction is open when `BEGIN IMMEDIATE` itself failed.
        if self.conn.is_autocommit() {
            return;
        }
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            log::warn!("{}: rollback failed: {e}", self.store.location);
        }
    }
}

/// Creates the database file `0600` (and its directories `0700`) when it is missing, and
/// refuses an existing one that group or others may access.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    create_parent_dirs(STORE, path)?;
    let file = open_or_create_private(STORE, path)?;
    let meta = file
        .metadata()
        .map_err(|e| io_error(STORE, path, "stat", e))?;
    check_private(&meta, path)
}

/// A connection to the existing database file at `path`.
fn connect(path: &Path, location: &str, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(e, location))?;
    conn.busy_timeout(busy_timeout)
        .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
        .map_err(|e| sql_error(e, location))?;
    Ok(conn)
}

/// `PRAGMA user_version`.
fn user_version(conn: &Connection, location: &str) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| sql_error(e, location))
}

/// Brings the schema to [`SCHEMA_VERSION`], one step at a time, in one write transaction.
fn migrate(conn: &Connection, location: &str) -> Result<(), StoreError> {
    if check_schema_version(user_version(conn, location)?, location)? == u64::from(SCHEMA_VERSION) {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| sql_error(e, location))?;
    let result = (|| {
        // Another process may have migrated while this one waited for the lock.
        let found = check_schema_version(user_version(conn, location)?, location)?;
        for from in found..u64::from(SCHEMA_VERSION) {
            migrate_from(conn, from, location)?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .and_then(|()| conn.execute_batch("COMMIT"))
            .map_err(|e| sql_error(e, location))
    })();
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// One migration step, from schema version `from` to `from + 1`.
fn migrate_from(conn: &Connection, from: u64, location: &str) -> Result<(), StoreError> {
    let sql = match from {
        0 => {
            "CREATE TABLE IF NOT EXISTS chatapp_tokens (
                 store_key TEXT PRIMARY KEY,
                 record TEXT NOT NULL,
                 updated_at INTEGER NOT NULL
             )"
        }
        // Later versions: `1 => "ALTER TABLE ..."`, and so on.
        _ => return Err(unsupported(from, location)),
    };
    conn.execute_batch(sql).map_err(|e| sql_error(e, location))
}

/// Passes a schema version this build can read or migrate.
fn check_schema_version(found: i64, location: &str) -> Result<u64, StoreError> {
    schema::check_version(STORE, found, 0..=u64::from(SCHEMA_VERSION), location)
}

fn unsupported(found: u64, location: &str) -> StoreError {
    schema::unsupported(STORE, found, u64::from(SCHEMA_VERSION), location)
}

/// A SQLite failure as a [`StoreError`]: a file that is no database, or a damaged one, is
/// [`StoreError::Corrupt`]. SQLite's messages name statements, never bound values.
fn sql_error(e: rusqlite::Error, location: &str) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::Corrupt {
            store: STORE,
            location: location.to_owned(),
            detail: "the file is not a SQLite database".to_owned(),
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            store: STORE,
            location: location.to_owned(),
            detail: "the database is damaged".to_owned(),
        },
        _ => StoreError::Backend {
            store: STORE,
            location: location.to_owned(),
            source: Box::new(e),
        },
    }
}
