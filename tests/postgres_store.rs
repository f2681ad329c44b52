//! `PostgresStore` against a real PostgreSQL server.
//!
//! The server comes from `CHATAPP_TEST_POSTGRES` (a conninfo that allows a plain connection
//! and may create schemas, e.g. `host=127.0.0.1 port=5432 user=postgres dbname=postgres`).
//! `.ci/postgres-env` starts a throwaway cluster and sets it:
//!
//! ```text
//! .ci/postgres-env cargo test --all-features --test postgres_store
//! ```
//!
//! Without it (or with `CHATAPP_SKIP_POSTGRES_TESTS` set) at build time, the tests that need
//! a server are listed as ignored, with that advice (`build.rs` sets `cfg(chatapp_no_postgres)`).
//! Each test works in a schema of its own (`options='-c search_path=...'`), dropped at its end.
//!
//! With `CHATAPP_TEST_POSTGRES_ROUTE=pgbouncer` the same tests reach the server through the
//! transaction-pooling pgbouncer of `CHATAPP_TEST_PGBOUNCER` (also started by the wrapper;
//! `.ci/test` runs them both ways). pgbouncer passes no startup `options`, so there each test
//! works in a database of its own instead, created and dropped on the server directly.
//! The TLS test needs `CHATAPP_TEST_POSTGRES_CA` (the CA of the server's certificate, also set
//! by the wrapper).

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatapp_session::store::{LockOrRecord, PostgresStore, StoreKey, StoredRecord, TokenStore};
use chatapp_session::StoreError;

use support::{refuses_corrupt, secret_record, CORRUPT_RECORDS};

const SERVER_ENV: &str = "CHATAPP_TEST_POSTGRES";
const CA_ENV: &str = "CHATAPP_TEST_POSTGRES_CA";
const ROUTE_ENV: &str = "CHATAPP_TEST_POSTGRES_ROUTE";
const BOUNCER_ENV: &str = "CHATAPP_TEST_PGBOUNCER";

/// The conninfo of the pgbouncer in front of the test server when the tests run through it
/// (`CHATAPP_TEST_POSTGRES_ROUTE=pgbouncer`), `None` when they connect directly.
fn bouncer() -> Option<String> {
    match std::env::var(ROUTE_ENV).as_deref() {
        Ok("pgbouncer") => Some(std::env::var(BOUNCER_ENV).unwrap_or_else(|_| {
            panic!("{ROUTE_ENV}=pgbouncer needs {BOUNCER_ENV}: run under .ci/postgres-env")
        })),
        Ok("") | Ok("direct") | Err(_) => None,
        Ok(other) => panic!("{ROUTE_ENV}={other}: expected pgbouncer or direct"),
    }
}

/// The test server's conninfo. The tests that need it are `ignore`d when it is not set
/// (`cfg(chatapp_no_postgres)`, from build.rs), so this fails only when one is run anyway.
fn server() -> String {
    match std::env::var(SERVER_ENV) {
        Ok(conninfo) if !conninfo.trim().is_empty() => conninfo,
        _ => panic!(
            "{SERVER_ENV} is not set: these tests need a PostgreSQL server. Run them with a \
             throwaway cluster:\n    .ci/postgres-env cargo test --all-features --test postgres_store\n\
             or set {SERVER_ENV} to the conninfo of a server that allows a plain connection and \
             lets the user create schemas (e.g. \"host=127.0.0.1 port=5432 user=postgres \
             dbname=postgres\")."
        ),
    }
}

/// A name no other test, process or run uses: lowercase letters, digits and `_`.
fn unique(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    format!(
        "chatapp_{tag}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A schema of the test's own on the test server (a database of its own through pgbouncer);
/// dropped (with its tables) at the end.
struct Db {
    base: String,
    schema: String,
    /// What the stores under test connect to: the server's conninfo with `search_path` set to
    /// the schema, or pgbouncer's with the test's database.
    conninfo: String,
    /// A direct connection to the same tables, for the tests' own checks.
    direct: String,
    /// Whether `schema` names a database (through pgbouncer) rather than a schema.
    database: bool,
}

impl Db {
    fn new(tag: &str) -> Db {
        let base = server();
        let schema = unique(tag);
        assert!(
            schema.len() < 64,
            "{schema} is too long for a PostgreSQL name"
        );
        if let Some(bouncer) = bouncer() {
            raw(&base)
                .batch_execute(&format!("CREATE DATABASE {schema}"))
                .unwrap();
            return Db {
                conninfo: format!("{bouncer} dbname={schema}"),
                direct: format!("{base} dbname={schema}"),
                base,
                schema,
                database: true,
            };
        }
        raw(&base)
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
        let conninfo = format!("{base} options='-c search_path={schema}'");
        Db {
            base,
            schema,
            direct: conninfo.clone(),
            conninfo,
            database: false,
        }
    }

    fn open(&self) -> PostgresStore {
        PostgresStore::connect(&self.conninfo).unwrap()
    }

    /// The conninfo with an `application_name` of its own, to find the store's connections.
    fn named(&self, name: &str) -> String {
        format!("{} application_name={name}", self.conninfo)
    }

    /// A plain client in the schema, connected directly.
    fn raw(&self) -> postgres::Client {
        raw(&self.direct)
    }

    /// A store whose connections carry an `application_name` of their own, and that name.
    fn open_named(&self) -> (PostgresStore, String) {
        let name = unique("app");
        (PostgresStore::connect(&self.named(&name)).unwrap(), name)
    }

    /// The first column of the one row `sql` gives, read directly.
    fn one<T: postgres::types::FromSqlOwned>(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> T {
        self.raw().query_one(sql, params).unwrap().get(0)
    }

    /// The `record` column under `key`.
    fn raw_record(&self, key: &str) -> Option<String> {
        self.raw()
            .query_opt(
                "SELECT record FROM chatapp_session_tokens WHERE store_key = $1",
                &[&key],
            )
            .unwrap()
            .map(|row| row.get(0))
    }

    /// Ends every connection named `name` (see [`named`](Self::named)) and waits until they
    /// are gone.
    fn kill_connections(&self, name: &str) {
        let mut client = self.raw();
        let killed: i64 = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .unwrap()
            .get(0);
        assert!(killed > 0, "no connection named {name}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&name],
                )
                .unwrap()
                .get(0);
            if left == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "connections named {name} did not end"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.base, postgres::NoTls) {
            let _ = client.batch_execute(&if self.database {
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.schema)
            } else {
                format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)
            });
        }
    }
}

fn raw(conninfo: &str) -> postgres::Client {
    postgres::Client::connect(conninfo, postgres::NoTls).unwrap()
}

fn open_path(conninfo: &Path) -> PostgresStore {
    PostgresStore::connect(conninfo.to_str().unwrap()).unwrap()
}

support::cross_process_tests! {
    #[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
    place: {
        let db = Db::new("xproc");
        let conninfo = std::path::PathBuf::from(&db.conninfo);
        (db, conninfo)
    },
    open: open_path
}

#[cfg(feature = "testing")]
#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn conformance_run_all() {
    let db = Db::new("conformance");
    chatapp_session::store::conformance::run_all(&|| db.open(), true);
    chatapp_session::store::conformance::lock_unless_finds_saved_record(&db.open());
    chatapp_session::store::conformance::lock_unless_finds_saved_record_across(
        &db.open(),
        &db.open(),
    );
}

#[cfg(feature = "testing")]
#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn the_row_holds_the_record_codec_text_and_the_schema_is_versioned() {
    let db = Db::new("row");
    let store = db.open();
    store.save(&StoreKey::new("k"), &secret_record(1)).unwrap();
    assert_eq!(
        db.raw_record("k").as_deref(),
        Some(support::codec_text(&secret_record(1)).as_str())
    );
    let mut client = db.raw();
    let row = client
        .query_one(
            "SELECT count(*), max(updated_at) > now() - interval '1 minute' \
             FROM chatapp_session_tokens",
            &[],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, bool>(1)),
        (1, true),
        "one row, updated just now"
    );
    let versions: Vec<i32> = client
        .query("SELECT version FROM chatapp_session_schema", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1]);
    // The documented column types.
    let types: Vec<(String, String, String)> = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'chatapp_session_tokens' \
             ORDER BY ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let expected = [
        ("store_key", "text", "NO"),
        ("record", "text", "NO"),
        ("updated_at", "timestamp with time zone", "NO"),
    ];
    assert_eq!(
        types,
        expected.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    // Connecting again, from several stores at once, keeps one schema version row.
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| drop(db.open()));
        }
    });
    let rows: i64 = db.one("SELECT count(*) FROM chatapp_session_schema", &[]);
    assert_eq!(rows, 1);
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn several_accounts_share_one_database() {
    let db = Db::new("accounts");
    let keys: Vec<StoreKey> = (0..5)
        .map(|i| StoreKey::for_account("https://api.chatapp.online", &format!("u{i}@x"), "app_1"))
        .collect();
    let store = db.open();
    for (i, key) in (0..).zip(&keys) {
        store.save(key, &secret_record(i)).unwrap();
    }
    drop(store);
    let store = db.open();
    for (i, key) in (0..).zip(&keys) {
        assert_eq!(store.load(key).unwrap(), Some(secret_record(i)));
    }
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn debug_and_errors_never_show_the_password() {
    let db = Db::new("redact");
    // The test server trusts every login, so a password is accepted and ignored.
    let store = PostgresStore::connect(&format!("{} password='pw-SECRET x'", db.conninfo)).unwrap();
    let debug = format!("{store:?}");
    assert!(!debug.contains("SECRET"), "{debug}");
    assert!(debug.contains("password=[redacted]"), "{debug}");
    assert!(debug.contains("lock_timeout"), "{debug}");
    assert!(!store.conninfo().contains("SECRET"));
    store.save(&StoreKey::new("k"), &secret_record(1)).unwrap();
    assert!(!format!("{store:?}").contains("SECRET"));

    // The URL form, with the password in the credentials and as a parameter.
    let port: u16 = raw(&db.base)
        .query_one("SELECT current_setting('port')::int", &[])
        .unwrap()
        .get::<_, i32>(0)
        .try_into()
        .unwrap();
    let url = format!(
        "postgres://postgres:pw-SECRET@127.0.0.1:{port}/postgres?options=-c%20search_path%3D{}&password=pw2-SECRET",
        db.schema
    );
    let store = PostgresStore::connect(&url).unwrap();
    assert_eq!(
        store.load(&StoreKey::new("k")).unwrap(),
        Some(secret_record(1))
    );
    let debug = format!("{store:?}");
    assert!(!debug.contains("SECRET"), "{debug}");

    // A server that is not there: an error naming the place, not the password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    for conninfo in [
        format!("host=127.0.0.1 port={dead_port} user=u password=pw-SECRET connect_timeout=5"),
        format!("postgresql://u:pw-SECRET@127.0.0.1:{dead_port}/db"),
    ] {
        match PostgresStore::connect(&conninfo) {
            Err(e @ StoreError::Unavailable { .. }) => {
                let text = e.to_string();
                assert!(!text.contains("SECRET"), "{text}");
                assert!(text.contains(&dead_port.to_string()), "{text}");
                assert!(!format!("{e:?}").contains("SECRET"));
            }
            other => panic!("a closed port gave {other:?}"),
        }
    }
}

#[test]
fn a_malformed_conninfo_is_a_typed_error_without_secrets() {
    for bad in [
        "host=127.0.0.1 password='pw-SECRET",
        "host=127.0.0.1 sslmode=sometimes password=pw-SECRET",
        "host=127.0.0.1 nonsense_option=1 password=pw-SECRET",
        "pw-SECRET",
    ] {
        match PostgresStore::connect(bad) {
            Err(e @ StoreError::Backend { .. }) => {
                let text = e.to_string();
                assert!(!text.contains("SECRET"), "{bad}: {text}");
                assert!(!format!("{e:?}").contains("SECRET"), "{bad}: {e:?}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_corrupt_row_is_reported_and_left_unchanged() {
    let db = Db::new("corrupt");
    let store = db.open();
    let key = StoreKey::new("k");
    let other = StoreKey::new("other");
    store.save(&key, &secret_record(1)).unwrap();
    store.save(&other, &secret_record(2)).unwrap();
    for bad in CORRUPT_RECORDS {
        db.raw()
            .execute(
                "UPDATE chatapp_session_tokens SET record = $1 WHERE store_key = 'k'",
                &[&bad],
            )
            .unwrap();
        refuses_corrupt(&store, &key, &["postgres:", " key k"], bad);
        assert_eq!(
            db.raw_record("k").as_deref(),
            Some(bad),
            "the corrupt row was changed"
        );
        // The other account is unaffected, and the lock is free again.
        store.save(&other, &secret_record(5)).unwrap();
        assert_eq!(store.load(&other).unwrap(), Some(secret_record(5)));
    }

    let newer = r#"{"version":9,"pair":null}"#;
    db.raw()
        .execute(
            "UPDATE chatapp_session_tokens SET record = $1 WHERE store_key = 'k'",
            &[&newer],
        )
        .unwrap();
    assert!(matches!(
        store.load(&key),
        Err(StoreError::UnsupportedVersion { .. })
    ));
    assert!(matches!(
        store.save(&key, &secret_record(6)),
        Err(StoreError::UnsupportedVersion { .. })
    ));
    assert_eq!(db.raw_record("k").as_deref(), Some(newer));

    // An empty record is a row with nothing stored.
    db.raw()
        .execute(
            "UPDATE chatapp_session_tokens SET record = '' WHERE store_key = 'k'",
            &[],
        )
        .unwrap();
    assert_eq!(store.load(&key).unwrap(), None);
    store.save(&key, &secret_record(7)).unwrap();
    assert_eq!(store.load(&key).unwrap(), Some(secret_record(7)));
}

#[cfg(feature = "testing")]
#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_newer_schema_is_refused() {
    let db = Db::new("schema");
    db.open()
        .save(&StoreKey::new("k"), &secret_record(1))
        .unwrap();
    db.raw()
        .batch_execute("UPDATE chatapp_session_schema SET version = 99")
        .unwrap();
    match PostgresStore::connect(&db.conninfo) {
        Err(StoreError::UnsupportedVersion {
            found, supported, ..
        }) => assert_eq!((found, supported), (99, 1)),
        other => panic!("connect gave {other:?}"),
    }
    assert_eq!(
        db.raw_record("k").as_deref(),
        Some(support::codec_text(&secret_record(1)).as_str())
    );
    let version: i32 = db.one("SELECT version FROM chatapp_session_schema", &[]);
    assert_eq!(version, 99, "the schema version was changed");
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_lock_dropped_without_saving_leaves_no_row_and_frees_the_lock() {
    let db = Db::new("rollback");
    let (store, name) = db.open_named();
    let key = StoreKey::new("k");
    let guard = store.lock(&key).unwrap();
    drop(guard);
    assert_eq!(
        db.raw_record("k"),
        None,
        "the placeholder row was committed"
    );
    store.save(&key, &secret_record(1)).unwrap();
    drop(store.lock(&key).unwrap());
    // Another store takes the lock at once: no transaction was left open.
    let other = PostgresStore::connect(&db.named(&name))
        .unwrap()
        .with_lock_timeout(Duration::from_millis(100));
    other.save(&key, &secret_record(2)).unwrap();
    assert_eq!(store.load(&key).unwrap(), Some(secret_record(2)));
    let idle_in_transaction: i64 = db.one(
        "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
        &[&name],
    );
    assert_eq!(idle_in_transaction, 0);
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn load_does_not_wait_for_a_lock_holder() {
    let db = Db::new("load");
    let store = db.open();
    let key = StoreKey::new("k");
    store.save(&key, &secret_record(1)).unwrap();
    let mut guard = store.lock(&key).unwrap();
    assert_eq!(guard.load().unwrap(), Some(secret_record(1)));
    // Same store, another thread: the second connection answers while the lock is held.
    thread::scope(|s| {
        let loaded = s.spawn(|| store.load(&key).unwrap()).join().unwrap();
        assert_eq!(loaded, Some(secret_record(1)));
    });
    // Another store (as another machine would): the same.
    assert_eq!(db.open().load(&key).unwrap(), Some(secret_record(1)));
    guard.save(&secret_record(2)).unwrap();
    // A save after a save takes the lock again.
    guard.save(&secret_record(3)).unwrap();
    assert_eq!(guard.load().unwrap(), Some(secret_record(3)));
    drop(guard);
    assert_eq!(store.load(&key).unwrap(), Some(secret_record(3)));
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_lock_held_elsewhere_past_the_lock_timeout_is_a_lock_timeout() {
    let db = Db::new("timeout");
    let key = StoreKey::new("k");
    let holder = db.open().with_lock_timeout(Duration::from_millis(300));
    holder.save(&key, &secret_record(1)).unwrap();
    let guard = holder.lock(&key).unwrap();

    // Another connection (another process or machine): PostgreSQL's lock_timeout.
    let waiter = db.open().with_lock_timeout(Duration::from_millis(200));
    assert_eq!(waiter.lock_timeout(), Duration::from_millis(200));
    let asked = Instant::now();
    match waiter.lock(&key) {
        Err(e @ StoreError::LockTimeout { waited, .. }) => {
            assert_eq!(waited, Duration::from_millis(200));
            let elapsed = asked.elapsed();
            assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
            assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
            assert!(e.to_string().contains("postgres"), "{e}");
        }
        Err(other) => panic!("lock gave {other:?}"),
        Ok(_) => panic!("lock was granted while another connection held it"),
    }
    assert!(matches!(
        waiter.save(&key, &secret_record(2)),
        Err(StoreError::LockTimeout { .. })
    ));
    // A key nobody holds is free.
    waiter
        .save(&StoreKey::new("free"), &secret_record(3))
        .unwrap();
    // A key never written, held elsewhere (its placeholder row not yet committed): the same.
    let fresh = StoreKey::new("fresh");
    let fresh_holder = db.open();
    let fresh_guard = fresh_holder.lock(&fresh).unwrap();
    assert!(matches!(
        waiter.lock(&fresh),
        Err(StoreError::LockTimeout { .. })
    ));
    drop(fresh_guard);
    // Another thread of the holder's process: the store's own wait, bounded the same way.
    thread::scope(|s| {
        let result = s.spawn(|| holder.lock(&key).map(drop)).join().unwrap();
        assert!(
            matches!(result, Err(StoreError::LockTimeout { waited, .. }) if waited == Duration::from_millis(300)),
            "{result:?}"
        );
    });

    drop(guard);
    waiter.save(&key, &secret_record(2)).unwrap();
    assert_eq!(holder.load(&key).unwrap(), Some(secret_record(2)));
    // A zero timeout still waits a little (PostgreSQL reads 0 as "forever").
    assert_eq!(
        db.open().with_lock_timeout(Duration::ZERO).lock_timeout(),
        Duration::from_millis(1)
    );
    assert!(
        db.open()
            .with_lock_timeout(Duration::from_secs(u64::MAX))
            .lock_timeout()
            < Duration::from_secs(30 * 24 * 3600)
    );
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_broken_connection_is_opened_again() {
    let _ = env_logger::builder().is_test(true).try_init();
    let db = Db::new("reconnect");
    let (store, name) = db.open_named();
    let key = StoreKey::new("k");
    store.save(&key, &secret_record(1)).unwrap();

    db.kill_connections(&name);
    assert_eq!(store.load(&key).unwrap(), Some(secret_record(1)));
    db.kill_connections(&name);
    store.save(&key, &secret_record(2)).unwrap();
    db.kill_connections(&name);
    let mut guard = store.lock(&key).unwrap();
    assert_eq!(guard.load().unwrap(), Some(secret_record(2)));
    guard.save(&secret_record(3)).unwrap();
    drop(guard);
    assert_eq!(db.open().load(&key).unwrap(), Some(secret_record(3)));
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_holder_whose_connection_dies_releases_the_lock_and_saves_nothing() {
    let db = Db::new("holderdies");
    let (store, name) = db.open_named();
    let key = StoreKey::new("k");
    store.save(&key, &secret_record(1)).unwrap();
    let mut guard = store.lock(&key).unwrap();
    db.kill_connections(&name);

    // The lock went with the connection: another store takes it at once.
    let other = db.open().with_lock_timeout(Duration::from_secs(5));
    let mut other_guard = other.lock(&key).unwrap();
    assert_eq!(other_guard.load().unwrap(), Some(secret_record(1)));
    other_guard.save(&secret_record(2)).unwrap();
    drop(other_guard);

    // The first holder cannot save any more (it no longer holds the lock), and says so.
    match guard.save(&secret_record(9)) {
        Err(e @ StoreError::Backend { .. }) => assert!(!e.to_string().contains("SECRET"), "{e}"),
        other => panic!("a save without the lock gave {other:?}"),
    }
    drop(guard);
    assert_eq!(store.load(&key).unwrap(), Some(secret_record(2)));
    // The store connects again for the next lock.
    store.save(&key, &secret_record(3)).unwrap();
    assert_eq!(other.load(&key).unwrap(), Some(secret_record(3)));
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn tls_verifies_the_server_certificate() {
    let db = Db::new("tls");
    let ca = std::env::var(CA_ENV).unwrap_or_else(|_| {
        panic!(
            "no {CA_ENV} (the CA of the test server's certificate): .ci/postgres-env sets it \
             when openssl is installed"
        )
    });
    let key = StoreKey::new("k");
    for (mode, host) in [
        ("verify-full", "127.0.0.1"),
        ("verify-full", "localhost"),
        ("require", "127.0.0.1"),
        ("verify-ca", "localhost"),
    ] {
        let name = unique("tls");
        let conninfo = format!(
            "{} host={host} application_name={name} sslmode={mode} sslrootcert='{ca}'",
            db.conninfo
        );
        let store = PostgresStore::connect(&conninfo).unwrap();
        store.save(&key, &secret_record(1)).unwrap();
        assert_eq!(store.load(&key).unwrap(), Some(secret_record(1)));
        let all_tls: Option<bool> = db
            .raw()
            .query_one(
                "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&name],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            all_tls,
            Some(true),
            "{mode} {host}: a connection without TLS"
        );
    }
    // Without our CA the certificate is not trusted: TLS is verified, never just "on".
    for mode in ["require", "verify-full"] {
        let e = refusal(&format!("{} sslmode={mode}", db.conninfo));
        let text = e.to_string();
        assert!(
            matches!(e, StoreError::Unavailable { .. })
                && (text.contains("TLS") || text.contains("certificate")),
            "{mode} with an unknown CA gave {e:?}"
        );
    }
    // A name the certificate does not carry (the same server, reached by address), and a CA
    // file that is not there: (conninfo, error variant, what its message names, what).
    let wrong_host = format!(
        "{} host=chatapp-session.invalid hostaddr=127.0.0.1 sslmode=verify-full sslrootcert='{ca}'",
        db.conninfo
    );
    let no_ca = format!(
        "{} sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
        db.conninfo
    );
    for (conninfo, variant, named, what) in [
        (
            wrong_host,
            "Unavailable",
            "certificate",
            "a wrong host name",
        ),
        (
            no_ca,
            "Backend",
            "/nonexistent/ca.pem",
            "a missing sslrootcert",
        ),
    ] {
        let e = refusal(&conninfo);
        assert!(
            format!("{e:?}").starts_with(variant) && e.to_string().contains(named),
            "{what} gave {e:?}"
        );
    }
}

/// The error of a connection that must fail.
fn refusal(conninfo: &str) -> StoreError {
    match PostgresStore::connect(conninfo) {
        Err(e) => e,
        Ok(store) => panic!("connected: {store:?}"),
    }
}

// The crowd of 12 processes x 4 threads on one dead access token is in tests/multiprocess.rs.

/// The in-process single flight of [`TokenStore::lock`] with a channel: a second thread's
/// `lock` returns only after the first guard is dropped (also covered by the conformance
/// suite; here with a lock timeout shorter than the hold to show the wait is not bounded by
/// a stale setting once the holder releases in time).
#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_waiter_gets_the_lock_when_the_holder_releases_within_the_timeout() {
    let db = Db::new("handover");
    let key = StoreKey::new("k");
    let holder = db.open();
    let waiter = db.open().with_lock_timeout(Duration::from_secs(10));
    let guard = holder.lock(&key).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(|| {
            let mut g = waiter.lock(&key).unwrap();
            let _ = tx.send(Instant::now());
            g.save(&secret_record(1)).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        let released = Instant::now();
        drop(guard);
        let acquired = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(acquired >= released);
    });
    assert_eq!(holder.load(&key).unwrap(), Some(secret_record(1)));
}

/// Issue 12: `lock_unless` waits for a holder with a shared row lock, and when the holder
/// leaves a record it does not want, queues for the row lock: the two waits together last no
/// longer than one lock timeout. The waiter (4 s) queues behind a first holder, which lets go
/// without saving after 2 s. While the waiter reads the row under its shared lock, its check
/// has a second holder take a shared lock of its own (the two do not exclude each other), so the
/// row is held when the waiter queues for it again, whatever the scheduler does: the waiter
/// gives up at 4 s in all, where two full waits would last 6 s.
#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn lock_unless_waits_one_lock_timeout_in_all() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(4);
    const FIRST_HOLDS: Duration = Duration::from_secs(2);
    let db = Db::new("unless");
    let key = StoreKey::new("k");
    let first = db.open();
    first.save(&key, &secret_record(1)).unwrap();
    let waiter = db.open().with_lock_timeout(LOCK_TIMEOUT);
    let guard = first.lock(&key).unwrap();
    let released = AtomicBool::new(false);
    let mut second = db.raw();
    let mut second_holds = false;
    let mut check = |_: &StoredRecord| {
        if released.load(Ordering::SeqCst) && !second_holds {
            second.batch_execute("BEGIN").unwrap();
            second
                .query_one(
                    "SELECT 1 FROM chatapp_session_tokens WHERE store_key = $1 FOR SHARE",
                    &[&key.as_str()],
                )
                .unwrap();
            second_holds = true;
        }
        false
    };
    let asked = Instant::now();
    let (result, elapsed) = thread::scope(|s| {
        let waited = s.spawn(|| {
            let result = waiter.lock_unless(&key, &mut check).map(drop);
            (result, asked.elapsed())
        });
        // The waiter is in the row's queue: it holds the tuple lock while it waits.
        let mut direct = db.raw();
        let deadline = Instant::now() + Duration::from_secs(10);
        while direct
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'tuple' \
                 AND relation = 'chatapp_session_tokens'::regclass AND granted",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 0
        {
            assert!(
                Instant::now() < deadline,
                "the waiter never queued for the row"
            );
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(FIRST_HOLDS.saturating_sub(asked.elapsed()));
        released.store(true, Ordering::SeqCst);
        drop(guard);
        waited.join().unwrap()
    });
    assert!(
        second_holds,
        "the waiter read the row after the first holder let go"
    );
    assert!(
        matches!(result, Err(StoreError::LockTimeout { .. })),
        "{result:?}"
    );
    assert!(
        elapsed >= LOCK_TIMEOUT - Duration::from_millis(50),
        "{elapsed:?}"
    );
    assert!(
        elapsed < FIRST_HOLDS + LOCK_TIMEOUT - Duration::from_millis(300),
        "one lock timeout in all, not two waits: {elapsed:?}"
    );
    // Once the second holder is gone, the waiter takes the lock.
    drop(second);
    let taken = waiter.lock_unless(&key, &mut |_| false).unwrap();
    match taken {
        LockOrRecord::Locked(mut guard) => {
            assert_eq!(guard.load().unwrap(), Some(secret_record(1)))
        }
        LockOrRecord::Found(_) => panic!("found a record it did not want"),
    };
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_load_after_a_save_takes_the_lock_again() {
    let db = Db::new("reload");
    let holder = db.open();
    let waiter = db.open().with_lock_timeout(Duration::from_millis(200));
    support::a_load_after_a_save_takes_the_lock_again(&holder, &waiter);
}
