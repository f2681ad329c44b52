//! A store in a PostgreSQL database, one row per store key, so that processes on many machines
//! share one session; a row lock (`SELECT ... FOR UPDATE`) is the single flight across them.

mod conninfo;
mod libpq;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::postgres::config::SslMode;
use ::postgres::error::SqlState;
use ::postgres::types::Type;
use ::postgres::{Client, NoTls};
use parking_lot::{Mutex, MutexGuard};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use self::conninfo::Tls;
use super::schema;
use super::transaction::{Transaction, TransactionGuard};
use super::wait::{accepted, take_or_find, Waited};
use super::{
    record_location, LockOrRecord, RecordCodec, StoreKey, StoreLock, StoredRecord, TokenStore,
};
use crate::error::StoreError;

const STORE: &str = "postgres";

/// The schema version this build creates and the newest it reads
/// (`chatapp_session_schema.version`).
const SCHEMA_VERSION: u32 = 1;

/// How long [`TokenStore::lock`] waits for another holder by default.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The bound on every statement that does not wait for the lock (`statement_timeout`).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a lock may be held idle before the server ends the holder's session and so
/// releases the lock (`idle_in_transaction_session_timeout`): a safety net for a frozen holder.
const MAX_IDLE_HOLD: Duration = Duration::from_secs(300);

/// The connect timeout when the connection string sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest timeout PostgreSQL accepts (`i32::MAX` milliseconds, about 24 days).
const MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// The advisory lock that serializes schema creation and migration ("chatapp" in ASCII).
const SCHEMA_LOCK: i64 = 0x0063_6861_7461_7070;

const SELECT: &str = "SELECT record FROM chatapp_session_tokens WHERE store_key = $1";
/// Rows with a record (a lock's empty placeholder is no record), in `COLLATE "C"` order so
/// that the order is the same as Rust's.
const KEYS: &str = "SELECT store_key FROM chatapp_session_tokens WHERE record <> '' \
     ORDER BY store_key COLLATE \"C\"";
const INSERT_PLACEHOLDER: &str = "INSERT INTO chatapp_session_tokens (store_key, record) \
     VALUES ($1, '') ON CONFLICT (store_key) DO NOTHING";
const SELECT_FOR_UPDATE: &str =
    "SELECT record FROM chatapp_session_tokens WHERE store_key = $1 FOR UPDATE";
/// In one round trip: the row inserted if missing, and locked if no other transaction holds
/// it (whether this transaction now holds it: it inserted the row, or locked it), and the
/// record as last committed.
const TRY_LOCK: &str = "WITH inserted AS ( \
         INSERT INTO chatapp_session_tokens (store_key, record) VALUES ($1, '') \
         ON CONFLICT (store_key) DO NOTHING RETURNING true \
     ), locked AS ( \
         SELECT true FROM chatapp_session_tokens WHERE store_key = $1 FOR UPDATE SKIP LOCKED \
     ) \
     SELECT EXISTS (SELECT 1 FROM inserted) OR EXISTS (SELECT 1 FROM locked), \
         (SELECT record FROM chatapp_session_tokens WHERE store_key = $1)";
/// Waits for the holder of the row lock to end its transaction, then reads the row as it left
/// it (every waiter at once: shared locks do not exclude each other).
const SELECT_FOR_SHARE: &str =
    "SELECT record FROM chatapp_session_tokens WHERE store_key = $1 FOR SHARE";
const UPSERT: &str = "INSERT INTO chatapp_session_tokens (store_key, record, updated_at) \
     VALUES ($1, $2, clock_timestamp()) \
     ON CONFLICT (store_key) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at";

/// Keeps records in a PostgreSQL database, so that a fleet of machines shares one ChatApp
/// session: table `chatapp_session_tokens(store_key TEXT PRIMARY KEY, record TEXT NOT NULL,
/// updated_at TIMESTAMPTZ NOT NULL DEFAULT now())`, one row per [`StoreKey`] holding the pair
/// and the make ledger in the record JSON form (`{"version":…,"pair":…,"makes":[…]}`, the
/// same in every store; or sealed in an encrypted envelope, `with_encryption`, feature
/// `encryption`); table
/// `chatapp_session_schema(version INT NOT NULL)` holds the schema version. Both are created
/// on first use, in the connection's `search_path`.
///
/// - [`lock`](TokenStore::lock) opens a transaction, inserts the key's row if it is missing
///   and locks it (`SELECT ... FOR UPDATE`): exactly one holder at a time across every process
///   and machine on the database. The lock's `save` writes the row and commits (durable when
///   it returns: `synchronous_commit` is turned back on for the transaction if the server has
///   it off); dropping the lock without saving rolls back. A holder that dies, or whose
///   connection breaks, releases the lock with its connection; a holder idle in its transaction
///   for 5 minutes is disconnected by the server.
/// - Waits are bounded: another process's lock is waited for at most the lock timeout (30 s
///   unless [`with_lock_timeout`](Self::with_lock_timeout) says otherwise; PostgreSQL's
///   `lock_timeout`), then [`StoreError::LockTimeout`]; another thread of this process holding
///   the lock is waited for as long. [`lock_unless`](TokenStore::lock_unless) waits for a
///   holder with a shared row lock (`SELECT ... FOR SHARE`), which ends for every waiter at
///   once when the holder commits, and returns the record the holder saved when the caller
///   wants it; only then does it queue for the row lock, within what is left of the same lock
///   timeout. Every other statement is bounded by a 30 s `statement_timeout`, and connecting
///   by a 10 s `connect_timeout` unless the connection string sets one.
/// - [`load`](TokenStore::load) never waits for a lock holder (it reads the last committed
///   row). The store keeps one connection, and opens a second one for loads made while a lock
///   is held in this process. A connection found broken is opened again, once per operation;
///   never under a held lock, which the broken connection has lost.
/// - A row that cannot be read ([`StoreError::Corrupt`]) or was written by a newer build
///   ([`StoreError::UnsupportedVersion`]) is never overwritten: saves under its key are refused.
///   An empty `record` is a row with nothing stored (a lock's placeholder) and loads as `None`.
/// - TLS: with `sslmode=require`, `verify-ca` or `verify-full` the connection uses TLS
///   (rustls) and verifies the server's certificate chain *and* name in all three modes,
///   against the CAs of the PEM file `sslrootcert=PATH`, or the Mozilla roots when it is
///   missing (or `system`). `prefer`, and no `sslmode`, try TLS first, as libpq does, and
///   connect in clear only when the server offers no TLS; like libpq they do not verify the
///   certificate (use `verify-full` against an active attacker). `disable` and `allow`
///   connect without TLS. What the connection string leaves out comes from `PGHOST`,
///   `PGPORT`, `PGUSER`, `PGDATABASE`, `PGOPTIONS`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`,
///   `PGSSLMODE`, `PGSSLROOTCERT`, and the password from `PGPASSWORD`, else the password file
///   (`PGPASSFILE`, else `~/.pgpass`), which is refused when group or others can access it.
///   Client certificates are not supported.
/// - Poolers: the store keeps no session state. Every setting it needs (`lock_timeout`,
///   `statement_timeout`, `idle_in_transaction_session_timeout`, `synchronous_commit`) is set
///   with `SET LOCAL` inside the transaction that needs it, and every statement is unnamed
///   and sent inside a transaction. So it works directly, behind pgbouncer (or another
///   pooler) in session or transaction pooling mode, and also with a pgbouncer that has no
///   prepared-statement support (before 1.21, or `max_prepared_statements = 0`). Statement
///   pooling does not work: the lock is a transaction. A pooler may drop startup options such
///   as `options='-c search_path=...'`: set the search path on the role or database instead.
/// - `Debug` and every error show where the store connects (host, host address, port, user,
///   database, TLS settings, and `password=[redacted]` when there is a password), read from
///   the parsed settings, never the text of the connection string; they never quote a row.
pub struct PostgresStore {
    /// Holds the password, if any: never shown.
    config: ::postgres::Config,
    tls: Option<MakeRustlsConnect>,
    /// Where it connects, without secrets ([`conninfo::shown`]).
    conninfo: String,
    /// Where errors say the store is: `postgres:<conninfo>`.
    location: String,
    lock_timeout: Duration,
    /// Held by a lock for its whole life; serves loads when no lock holds it.
    main: Mutex<Option<Client>>,
    /// Serves loads while a lock holds `main`; opened on first need.
    reader: Mutex<Option<Client>>,
    codec: RecordCodec,
}

impl PostgresStore {
    /// Connects to the database that `conninfo` names and creates or checks the store's
    /// tables.
    ///
    /// `conninfo` is a libpq connection string, either `key=value` pairs
    /// (`host=db.example port=5432 user=app dbname=app password=... sslmode=verify-full`) or a
    /// URL (`postgres://app:...@db.example/app?sslmode=verify-full`). Every key that the
    /// `postgres` crate knows is accepted (`host`, `hostaddr`, `port`, `user`, `password`,
    /// `dbname`, `options`, `application_name`, `connect_timeout`, `keepalives`,
    /// `target_session_attrs`, ...), plus `sslmode` and `sslrootcert` as described on
    /// [`PostgresStore`]. A table in another schema: `options='-c search_path=myschema'`.
    ///
    /// # Errors
    /// - [`StoreError::Backend`] when `conninfo` cannot be read, `sslrootcert` cannot be
    ///   loaded, the server refuses the login, or the tables cannot be created or read;
    /// - [`StoreError::Unavailable`] when the server cannot be reached (or the TLS handshake
    ///   fails);
    /// - [`StoreError::UnsupportedVersion`] when a newer build created the schema;
    /// - [`StoreError::Corrupt`] when the schema version is not one any build writes.
    pub fn connect(conninfo: &str) -> Result<PostgresStore, StoreError> {
        /// Where errors say the store is, until the connection string is read.
        const UNREAD: &str = "postgres:(the connection string)";
        let backend = |location: String, detail: String| StoreError::Backend {
            store: STORE,
            location,
            source: detail.into(),
        };
        let info =
            conninfo::parse(conninfo).map_err(|detail| backend(UNREAD.to_owned(), detail))?;
        let mut config: ::postgres::Config = info
            .config_text
            .parse()
            .map_err(|e| failure(UNREAD, "read the connection string", &e))?;
        libpq::apply_environment(&mut config, &|name| std::env::var(name).ok()).map_err(
            |detail| {
                backend(
                    format!("postgres:{}", conninfo::shown(&config, &info)),
                    detail,
                )
            },
        )?;
        let shown = conninfo::shown(&config, &info);
        let location = format!("postgres:{shown}");
        config.ssl_mode(match info.tls {
            Tls::Off => SslMode::Disable,
            Tls::Prefer => SslMode::Prefer,
            Tls::Verify { .. } => SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("chatapp-session");
        }
        let tls = tls_connector(&info.tls, &location)?;
        let store = PostgresStore {
            config,
            tls,
            conninfo: shown,
            location,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            main: Mutex::new(None),
            reader: Mutex::new(None),
            codec: RecordCodec::default(),
        };
        let mut client = store.open_client()?;
        migrate(&mut client, &store.location)?;
        *store.main.lock() = Some(client);
        Ok(store)
    }

    /// Sets how long [`lock`](TokenStore::lock) waits for another holder before it fails with
    /// [`StoreError::LockTimeout`]; between 1 ms and about 24 days (values outside are moved
    /// to the nearest bound: PostgreSQL reads 0 as "no limit").
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
        self
    }

    store_accessors!(lock_timeout);
    store_accessors!(encryption);

    /// Where the store connects, as `key=value` pairs that hold no secret: the hosts, host
    /// addresses, ports, user and database (the connection string's, or from the `PG*`
    /// variables), `password=[redacted]` when there is a password, and `sslmode` and
    /// `sslrootcert` as given. Read from the parsed settings, not from the text given to
    /// [`connect`](Self::connect), which it does not repeat (a URL is shown as pairs too).
    pub fn conninfo(&self) -> &str {
        &self.conninfo
    }

    /// A new connection. It carries no session state: every setting the store needs is set
    /// per transaction ([`transaction_settings`]), so a pooler may hand the server connection
    /// to another client between two transactions.
    fn open_client(&self) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        connected.map_err(|e| {
            if e.as_db_error().is_some() {
                failure(&self.location, "connect", &e)
            } else {
                StoreError::Unavailable {
                    store: STORE,
                    hint: format!("cannot connect to {}: {}", self.location, describe(&e)),
                }
            }
        })
    }

    /// The record under `key` as last committed, read in a short read-only transaction of its
    /// own (so that its statement timeout is a transaction setting, not session state).
    fn read_committed(
        &self,
        client: &mut Client,
        key: &StoreKey,
    ) -> Result<Option<Zeroizing<String>>, StoreError> {
        client
            .batch_execute(&format!(
                "BEGIN READ ONLY; {}",
                transaction_settings(STATEMENT_TIMEOUT)
            ))
            .map_err(|e| failure(&self.location, "begin a read", &e))?;
        let read = self.select(client, key, SELECT);
        let end = client.batch_execute(if read.is_ok() { "COMMIT" } else { "ROLLBACK" });
        let raw = read?;
        end.map_err(|e| failure(&self.location, "end a read", &e))?;
        Ok(raw)
    }

    /// Runs `op` on the connection in `slot`, connecting first when there is none or it is
    /// closed, and once more on a new connection when it breaks during `op`.
    fn with_client<T>(
        &self,
        slot: &mut Option<Client>,
        mut op: impl FnMut(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut retried = false;
        loop {
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = None;
                *slot = Some(self.open_client()?);
            }
            let Some(client) = slot.as_mut() else {
                continue;
            };
            match op(client) {
                Err(e) if !retried && client.is_closed() => {
                    log::warn!("the connection broke, reconnecting: {e}");
                    *slot = None;
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// The `record` column under `key`, read on `client` (inside its transaction, if any).
    fn select(
        &self,
        client: &mut Client,
        key: &StoreKey,
        sql: &str,
    ) -> Result<Option<Zeroizing<String>>, StoreError> {
        let row = client
            .query_typed_opt(sql, &[(&key.as_str(), Type::TEXT)])
            .map_err(|e| self.lock_error("read the record", &e))?;
        row.map(|row| {
            row.try_get::<_, &str>(0)
                .map(|text| Zeroizing::new(text.to_owned()))
        })
        .transpose()
        .map_err(|e| failure(&self.location, "read the record", &e))
    }

    /// The record in a `record` column: empty (a placeholder) or absent is `None`.
    fn decode(
        &self,
        key: &StoreKey,
        raw: Option<Zeroizing<String>>,
    ) -> Result<Option<StoredRecord>, StoreError> {
        match raw {
            Some(text) if !text.is_empty() => self
                .codec
                .decode(
                    text.as_bytes(),
                    key,
                    STORE,
                    &record_location(&self.location, key),
                )
                .map(Some),
            _ => Ok(None),
        }
    }

    /// Opens the lock's transaction on `client`: bounded waits (`lock_timeout`), the row
    /// inserted if missing, then locked. Returns nothing: the holder reads the row when it
    /// needs it.
    fn begin_on(
        &self,
        client: &mut Client,
        key: &StoreKey,
        lock_timeout: Duration,
    ) -> Result<(), StoreError> {
        self.begin_waiting(client, lock_timeout)?;
        client
            .execute_typed(INSERT_PLACEHOLDER, &[(&key.as_str(), Type::TEXT)])
            .map_err(|e| self.lock_error("insert the row to lock", &e))?;
        self.select(client, key, SELECT_FOR_UPDATE).map(drop)
    }

    /// Opens a transaction whose waits for a lock last at most `lock_timeout`.
    fn begin_waiting(&self, client: &mut Client, lock_timeout: Duration) -> Result<(), StoreError> {
        // At least 1 ms: PostgreSQL reads 0 as "no limit".
        let lock_ms = millis(lock_timeout).max(1);
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = '{lock_ms}ms'; {}",
                transaction_settings(lock_timeout.saturating_add(STATEMENT_TIMEOUT))
            ))
            .map_err(|e| failure(&self.location, "begin the lock's transaction", &e))
    }

    /// [`lock_unless`](TokenStore::lock_unless)'s first attempt, in a transaction it opens on
    /// `client`: the row lock if it is free; else the record as it is stored now and, if
    /// `wanted` refuses it, as the holder leaves it when its transaction ends (a shared row
    /// lock, waited for at most `lock_timeout`). The caller ends the transaction unless the
    /// lock was taken.
    fn lock_or_look(
        &self,
        client: &mut Client,
        key: &StoreKey,
        lock_timeout: Duration,
        wanted: &mut dyn FnMut(&StoredRecord) -> bool,
    ) -> Result<FirstTry, StoreError> {
        self.begin_waiting(client, lock_timeout)?;
        let row = client
            .query_typed_one(TRY_LOCK, &[(&key.as_str(), Type::TEXT)])
            .map_err(|e| self.lock_error("lock the row", &e))?;
        let read = |e| failure(&self.location, "read the record", &e);
        if row.try_get::<_, bool>(0).map_err(read)? {
            return Ok(FirstTry::Locked);
        }
        let stored = row
            .try_get::<_, Option<&str>>(1)
            .map_err(read)?
            .map(|text| Zeroizing::new(text.to_owned()));
        // A record that cannot be read is read again under the lock, which reports it.
        let mut wanted_in = |raw| accepted(self.decode(key, raw).ok().flatten(), &mut *wanted);
        if let Some(record) = wanted_in(stored) {
            return Ok(FirstTry::Found(record));
        }
        let left = self.select(client, key, SELECT_FOR_SHARE)?;
        Ok(wanted_in(left).map_or(FirstTry::Waited, FirstTry::Found))
    }

    /// A failure, or [`StoreError::LockTimeout`] when it was the lock timeout expiring.
    fn lock_error(&self, action: &'static str, e: &::postgres::Error) -> StoreError {
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            self.lock_timeout_error()
        } else {
            failure(&self.location, action, e)
        }
    }

    fn lock_timeout_error(&self) -> StoreError {
        StoreError::LockTimeout {
            store: STORE,
            location: self.location.clone(),
            waited: self.lock_timeout,
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("conninfo", &self.conninfo)
            .field("lock_timeout", &self.lock_timeout)
            .field("encrypted", &self.codec.is_encrypting())
            .finish_non_exhaustive()
    }
}

impl TokenStore for PostgresStore {
    fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
        // The main connection when no lock holds it, so that most processes need only one.
        let mut slot = match self.main.try_lock() {
            Some(slot) => slot,
            None => self.reader.lock(),
        };
        let raw = self.with_client(&mut slot, |client| self.read_committed(client, key))?;
        drop(slot);
        self.decode(key, raw)
    }

    fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
        let mut slot = match self.main.try_lock() {
            Some(slot) => slot,
            None => self.reader.lock(),
        };
        self.with_client(&mut slot, |client| {
            let rows = client
                .query(KEYS, &[])
                .map_err(|e| failure(&self.location, "list the keys", &e))?;
            rows.iter()
                .map(|row| row.try_get::<_, String>(0).map(StoreKey::new))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| failure(&self.location, "list the keys", &e))
        })
    }

    fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError> {
        let slot = self
            .main
            .try_lock_for(self.lock_timeout)
            .ok_or_else(|| self.lock_timeout_error())?;
        let lock = PostgresLock {
            store: self,
            slot,
            key: key.clone(),
        };
        Ok(Box::new(TransactionGuard::begin_with(
            lock,
            PostgresLock::begin,
        )?))
    }

    /// Takes the row lock at once if it is free. Otherwise it reads the record as stored,
    /// then waits with a shared row lock until the holder's transaction ends (the server
    /// wakes every such waiter together when the holder commits its save) and reads it again;
    /// a record that `wanted` accepts ends the wait, without the lock. If neither does, it
    /// queues for the row lock as [`lock`](TokenStore::lock) does (one shared wait per call,
    /// so that waiters cannot keep each other from the row lock). The lock timeout bounds
    /// the whole.
    fn lock_unless(
        &self,
        key: &StoreKey,
        wanted: &mut dyn FnMut(&StoredRecord) -> bool,
    ) -> Result<LockOrRecord<'_>, StoreError> {
        let start = Instant::now();
        // Another thread of this process holding the main connection: waited for in short
        // steps, loads (on the second connection) between them.
        let waited = take_or_find(
            self.lock_timeout,
            Duration::ZERO,
            || Ok(self.main.try_lock()),
            || Ok(accepted(self.load(key)?, wanted)),
        )?;
        let slot = match waited {
            Waited::Taken(slot) => slot,
            Waited::Found(record) => return Ok(LockOrRecord::Found(record)),
            Waited::TimedOut => return Err(self.lock_timeout_error()),
        };
        let mut lock = PostgresLock {
            store: self,
            slot,
            key: key.clone(),
        };
        let left = || self.lock_timeout.saturating_sub(start.elapsed());
        let timeout = left();
        let first = self.with_client(&mut lock.slot, |client| {
            self.lock_or_look(client, key, timeout, wanted)
        });
        match first {
            Ok(FirstTry::Locked) => {
                return Ok(LockOrRecord::Locked(Box::new(TransactionGuard::opened(
                    lock,
                ))))
            }
            Ok(FirstTry::Found(record)) => {
                lock.rollback();
                return Ok(LockOrRecord::Found(record));
            }
            Ok(FirstTry::Waited) => lock.rollback(),
            Err(e) => {
                lock.rollback();
                return Err(e);
            }
        }
        let timeout = left();
        if timeout.is_zero() {
            return Err(self.lock_timeout_error());
        }
        Ok(LockOrRecord::Locked(Box::new(
            TransactionGuard::begin_with(lock, |lock| lock.begin_within(timeout))?,
        )))
    }
}

/// How [`PostgresStore::lock_or_look`] ended.
enum FirstTry {
    /// The row lock is held.
    Locked,
    /// A record the caller wanted; the transaction is still open.
    Found(StoredRecord),
    /// The holder ended its transaction and left no record the caller wanted; the
    /// transaction is still open.
    Waited,
}

/// The store's main connection, inside the transaction that holds the row lock until the
/// record is saved (held by a [`TransactionGuard`]).
struct PostgresLock<'a> {
    store: &'a PostgresStore,
    slot: MutexGuard<'a, Option<Client>>,
    key: StoreKey,
}

impl PostgresLock<'_> {
    /// Takes the row lock, waiting at most `lock_timeout` for another holder: the row
    /// inserted if missing, then locked.
    fn begin_within(&mut self, lock_timeout: Duration) -> Result<(), StoreError> {
        let (store, key) = (self.store, &self.key);
        store.with_client(&mut self.slot, |client| {
            store.begin_on(client, key, lock_timeout)
        })
    }

    /// The connection that holds the lock; an error when it broke (and so lost the lock).
    fn holder(&mut self) -> Result<&mut Client, StoreError> {
        match self.slot.as_mut() {
            Some(client) if !client.is_closed() => Ok(client),
            _ => Err(StoreError::Backend {
                store: STORE,
                location: record_location(&self.store.location, &self.key),
                source: "the connection holding the lock was lost".into(),
            }),
        }
    }
}

impl Transaction for PostgresLock<'_> {
    /// Takes the row lock: the row inserted if missing, then locked.
    fn begin(&mut self) -> Result<(), StoreError> {
        self.begin_within(self.store.lock_timeout)
    }

    fn select(&mut self) -> Result<Option<StoredRecord>, StoreError> {
        let (store, key) = (self.store, self.key.clone());
        let raw = store.select(self.holder()?, &key, SELECT)?;
        store.decode(&key, raw)
    }

    /// Checks that the row can be replaced, writes it and commits.
    fn upsert_and_commit(&mut self, record: &StoredRecord) -> Result<(), StoreError> {
        let store = self.store;
        let key = self.key.clone();
        let client = self.holder()?;
        // Never replace a record that this build cannot read.
        let current = store.select(client, &key, SELECT)?;
        store.decode(&key, current)?;
        let encoded =
            store
                .codec
                .encode(&key, record, STORE, &record_location(&store.location, &key))?;
        client
            .execute_typed(
                UPSERT,
                &[(&key.as_str(), Type::TEXT), (&encoded.as_str(), Type::TEXT)],
            )
            .map_err(|e| failure(&store.location, "write the record", &e))?;
        client
            .batch_execute("COMMIT")
            .map_err(|e| failure(&store.location, "commit the record", &e))
    }

    /// Ends the transaction; when that fails, closes the connection, which ends it too.
    fn rollback(&mut self) {
        let failed = match self.slot.as_mut() {
            Some(client) if !client.is_closed() => client.batch_execute("ROLLBACK").err(),
            _ => None,
        };
        if let Some(e) = failed {
            log::warn!(
                "{}: rollback failed ({}); closing the connection",
                self.store.location,
                describe(&e)
            );
            *self.slot = None;
        }
    }
}

/// The rustls connector for `tls`, or `None` for a plain connection.
fn tls_connector(tls: &Tls, location: &str) -> Result<Option<MakeRustlsConnect>, StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let tls_error = |detail: String| StoreError::Backend {
        store: STORE,
        location: location.to_owned(),
        source: detail.into(),
    };
    let root_cert = match tls {
        Tls::Off => return Ok(None),
        Tls::Prefer => {
            let config =
                libpq::unverified_tls_config().map_err(|e| tls_error(format!("TLS setup: {e}")))?;
            return Ok(Some(MakeRustlsConnect::new(config)));
        }
        Tls::Verify { root_cert } => root_cert,
    };
    let roots = match root_cert {
        None => rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let unreadable =
                |e: &dyn fmt::Display| tls_error(format!("sslrootcert {}: {e}", path.display()));
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                let cert = cert.map_err(|e| unreadable(&e))?;
                roots.add(cert).map_err(|e| unreadable(&e))?;
            }
            if roots.is_empty() {
                return Err(unreadable(&"no certificate in the file"));
            }
            roots
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_error(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// Creates the tables, or checks their version, in one transaction, serialized across
/// processes by an advisory lock when the tables must be created or migrated. Only unnamed
/// statements, all inside the transaction: a transaction-pooling pgbouncer (no
/// prepared-statement support) serves it.
fn migrate(client: &mut Client, location: &str) -> Result<(), StoreError> {
    let sql = |action: &'static str| move |e: ::postgres::Error| failure(location, action, &e);
    let mut tx = client.transaction().map_err(sql("begin the migration"))?;
    tx.batch_execute(&transaction_settings(STATEMENT_TIMEOUT))
        .map_err(sql("begin the migration"))?;
    let exists: bool = tx
        .query_typed_one(
            "SELECT to_regclass('chatapp_session_schema') IS NOT NULL \
                 AND to_regclass('chatapp_session_tokens') IS NOT NULL",
            &[],
        )
        .and_then(|row| row.try_get(0))
        .map_err(sql("look for the tables"))?;
    if exists
        && check_schema_version(schema_version(&mut tx, location)?, location)?
            == u64::from(SCHEMA_VERSION)
    {
        return tx.commit().map_err(sql("end the schema check"));
    }
    tx.query_typed(
        "SELECT pg_advisory_xact_lock($1)",
        &[(&SCHEMA_LOCK, Type::INT8)],
    )
    .map_err(sql("take the migration lock"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS chatapp_session_schema (version INT NOT NULL)")
        .map_err(sql("create the schema table"))?;
    // Another process may have migrated while this one waited for the lock.
    let found = check_schema_version(schema_version(&mut tx, location)?, location)?;
    for from in found..u64::from(SCHEMA_VERSION) {
        migrate_from(&mut tx, from, location)?;
    }
    tx.batch_execute(&format!(
        "DELETE FROM chatapp_session_schema; \
         INSERT INTO chatapp_session_schema (version) VALUES ({SCHEMA_VERSION})"
    ))
    .map_err(sql("record the schema version"))?;
    tx.commit().map_err(sql("commit the migration"))
}

/// The highest version in `chatapp_session_schema` (0 when it is empty).
fn schema_version(tx: &mut ::postgres::Transaction<'_>, location: &str) -> Result<i32, StoreError> {
    tx.query_typed_one("SELECT max(version) FROM chatapp_session_schema", &[])
        .and_then(|row| row.try_get::<_, Option<i32>>(0))
        .map(Option::unwrap_or_default)
        .map_err(|e| failure(location, "read the schema version", &e))
}

/// The settings every transaction of the store makes for itself (`SET LOCAL`, never session
/// state that a pooler would hand to another client): `statement_timeout`, the
/// idle-in-transaction bound, and durable commits when the server has `synchronous_commit`
/// off.
fn transaction_settings(statement_timeout: Duration) -> String {
    format!(
        "SET LOCAL statement_timeout = '{}ms'; \
         SET LOCAL idle_in_transaction_session_timeout = '{}ms'; \
         SELECT set_config('synchronous_commit', 'on', true) \
             WHERE current_setting('synchronous_commit') = 'off'",
        millis(statement_timeout),
        millis(MAX_IDLE_HOLD)
    )
}

/// One migration step, from schema version `from` to `from + 1`.
fn migrate_from(
    tx: &mut ::postgres::Transaction<'_>,
    from: u64,
    location: &str,
) -> Result<(), StoreError> {
    let sql = match from {
        0 => {
            "CREATE TABLE IF NOT EXISTS chatapp_session_tokens (
                 store_key TEXT PRIMARY KEY,
                 record TEXT NOT NULL,
                 updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )"
        }
        // Later versions: `1 => "ALTER TABLE ..."`, and so on.
        _ => return Err(unsupported(from, location)),
    };
    tx.batch_execute(sql)
        .map_err(|e| failure(location, "create the table", &e))
}

/// Passes a schema version this build can read or migrate.
fn check_schema_version(found: i32, location: &str) -> Result<u64, StoreError> {
    schema::check_version(STORE, found, 0..=u64::from(SCHEMA_VERSION), location)
}

fn unsupported(found: u64, location: &str) -> StoreError {
    schema::unsupported(STORE, found, u64::from(SCHEMA_VERSION), location)
}

/// A duration in whole milliseconds, at most [`MAX_TIMEOUT`].
fn millis(d: Duration) -> u64 {
    u64::try_from(d.min(MAX_TIMEOUT).as_millis()).unwrap_or(i32::MAX as u64)
}

/// A PostgreSQL failure as text: for a server error its SQLSTATE, severity and message, but
/// not its DETAIL, which may quote a row (tokens included).
fn describe(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.code().code(), db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// A failed database operation as a [`StoreError::Backend`] (see [`describe`]).
fn failure(location: &str, action: &'static str, e: &::postgres::Error) -> StoreError {
    StoreError::Backend {
        store: STORE,
        location: location.to_owned(),
        source: format!("{action}: {}", describe(e)).into(),
    }
}
