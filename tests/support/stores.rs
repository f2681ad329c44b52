//! Stores: one opener for store specs, records, and the cross-process checks of the durable
//! stores, whose other side is a child process (this same test binary, through
//! [`super::child`]) that holds a store's lock or updates it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use chatapp_session::store::{StoreKey, StoredRecord, TokenStore};
use chatapp_session::{AccessToken, RefreshToken, StoreError, TokenPair};

use super::child::{self, Params};

/// What a child prints once it holds the lock.
const LOCKED: &str = "child-holds-the-lock";
/// The ledger entry a `hold` child saves just before it releases the lock.
pub const HOLDER_MARK: i64 = 4242;
/// How long a `hold` child keeps the lock.
pub const HOLD: Duration = Duration::from_millis(1000);
/// Increments per `increment` child.
pub const INCREMENTS: i64 = 100;

/// Opens a store from a spec as the CLI's `--store` takes it (`memory`, `file:PATH`,
/// `sqlite:PATH`, `keyring:SERVICE`, `postgres:CONNINFO`) with its default lock timeout.
pub fn open_store(spec: &str) -> Box<dyn TokenStore> {
    open_store_with(spec, None)
}

/// [`open_store`], with `lock_timeout` when given.
pub fn open_store_with(spec: &str, lock_timeout: Option<Duration>) -> Box<dyn TokenStore> {
    let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
    macro_rules! timed {
        ($store:expr) => {{
            let store = $store;
            match lock_timeout {
                Some(timeout) => Box::new(store.with_lock_timeout(timeout)) as Box<dyn TokenStore>,
                None => Box::new(store),
            }
        }};
    }
    match kind {
        #[cfg(feature = "memory")]
        "memory" => Box::new(chatapp_session::store::MemoryStore::new()),
        #[cfg(feature = "file")]
        "file" => timed!(chatapp_session::store::FileStore::new(arg)),
        #[cfg(feature = "sqlite")]
        "sqlite" => timed!(chatapp_session::store::SqliteStore::open(arg).expect("open SQLite")),
        #[cfg(feature = "keyring")]
        "keyring" => timed!(chatapp_session::store::KeyringStore::new(arg)),
        #[cfg(feature = "postgres")]
        "postgres" => timed!(
            chatapp_session::store::PostgresStore::connect(arg).expect("connect to PostgreSQL")
        ),
        other => panic!("store {other} ({arg}) is not built in"),
    }
}

/// A record whose tokens contain `SECRET`, to check that no error ever quotes one.
pub fn secret_record(n: i64) -> StoredRecord {
    StoredRecord {
        pair: Some(TokenPair {
            access: AccessToken::new(format!("access-SECRET-{n}")),
            access_expires_at: 1_700_000_000 + n,
            refresh: RefreshToken::new(format!("refresh-SECRET-{n}")),
            refresh_expires_at: 1_701_000_000 + n,
            cabinet_user_id: n,
        }),
        makes: vec![n],
        ..Default::default()
    }
}

/// The entry test of the store tests' children: plays the role its parent gave
/// ([`spawn_child`]) on the store `open` opens. Called by each store test binary's
/// `child_process` test.
pub fn run_child<S: TokenStore>(open: impl Fn(&Path) -> S) {
    child::entry("child_process");
    let role = child::param("role");
    let key = StoreKey::new(child::param("key"));
    let store = open(Path::new(&child::param("path")));
    match role.split_once(':').unwrap_or((role.as_str(), "")) {
        ("hold", _) => {
            let mut guard = store.lock(&key).unwrap();
            println!("{LOCKED}");
            thread::sleep(HOLD);
            let mut record = guard.load().unwrap().unwrap_or_default();
            record.makes.push(HOLDER_MARK);
            guard.save(&record).unwrap();
        }
        ("hold-forever", _) => {
            let _guard = store.lock(&key).unwrap();
            println!("{LOCKED}");
            thread::sleep(Duration::from_secs(120));
        }
        ("increment", id) => {
            let id: i64 = id.parse().unwrap();
            for i in 0..INCREMENTS {
                let mut guard = store.lock(&key).unwrap();
                let mut record = guard.load().unwrap().unwrap_or_default();
                record.makes.push(id * 1000 + i);
                guard.save(&record).unwrap();
            }
        }
        (other, _) => panic!("unknown child role {other}"),
    }
}

/// Starts this test binary again as a child playing `role` on the store at `path`.
pub fn spawn_child(role: &str, path: &Path, key: &StoreKey) -> Child {
    child::command("child_process")
        .param("role", role)
        .param("path", path)
        .param("key", key.as_str())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `child` says it holds the lock.
pub fn wait_until_locked(child: &mut Child) {
    child::wait_for_line(child, LOCKED, Duration::from_secs(60));
}

/// A child holds the lock for [`HOLD`] and saves just before releasing it: this process's
/// `lock()` must not return before then.
pub fn lock_waits_for_other_process<S: TokenStore>(store: &S, path: &Path) {
    let key = StoreKey::new("cross-process hold");
    store.save(&key, &secret_record(1)).unwrap();
    let mut child = spawn_child("hold", path, &key);
    wait_until_locked(&mut child);
    let asked = Instant::now();
    let mut guard = store.lock(&key).unwrap();
    let waited = asked.elapsed();
    let seen = guard.load().unwrap().unwrap();
    drop(guard);
    assert!(child.wait().unwrap().success(), "the child failed");
    // The child saves its mark at the end of its hold: a lock() that returned any earlier
    // would not see it (a check on the time waited would depend on the scheduler).
    assert_eq!(
        seen.makes,
        vec![1, HOLDER_MARK],
        "lock() returned before the child saved and released (after {waited:?})"
    );
}

/// A child is killed (SIGKILL on Unix) while it holds the lock: the lock is released. `open`
/// opens another handle on the store (used in a thread that may stay blocked).
pub fn killed_child_releases_lock<S: TokenStore + 'static>(open: fn(&Path) -> S, path: &Path) {
    let key = StoreKey::new("cross-process kill");
    let mut child = spawn_child("hold-forever", path, &key);
    wait_until_locked(&mut child);

    let (tx, rx) = mpsc::channel();
    let owned = path.to_owned();
    let key2 = key.clone();
    thread::spawn(move || {
        let store = open(&owned);
        let result = store.lock(&key2).map(drop).map_err(|e| e.to_string());
        let _ = tx.send(result);
    });
    assert!(
        matches!(
            rx.recv_timeout(Duration::from_millis(500)),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "lock() did not wait for the child holding the lock"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("lock() failed after the holder was killed: {e}"),
        Err(_) => panic!("the lock of a killed process was not released"),
    }
}

/// Two child processes append [`INCREMENTS`] ledger entries each, every one a locked
/// read-modify-write: none may be lost.
pub fn two_processes_increment<S: TokenStore>(store: &S, path: &Path) {
    let key = StoreKey::new("cross-process increments");
    let children: Vec<Child> = (1..=2)
        .map(|id| spawn_child(&format!("increment:{id}"), path, &key))
        .collect();
    for mut child in children {
        assert!(
            child.wait().unwrap().success(),
            "an incrementing child failed"
        );
    }
    let mut makes = store.load(&key).unwrap().unwrap().makes;
    assert_eq!(makes.len(), 2 * INCREMENTS as usize, "lost updates");
    makes.sort_unstable();
    let expected: Vec<i64> = (1..=2)
        .flat_map(|id| (0..INCREMENTS).map(move |i| id * 1000 + i))
        .collect();
    assert_eq!(makes, expected);
}

/// Record texts a database store must refuse as corrupt (some quote a `SECRET`).
pub const CORRUPT_RECORDS: [&str; 5] = [
    "not json",
    "{",
    r#"{"version":1,"pair":{"accessToken":5,"refreshToken":"refresh-SECRET"}}"#,
    r#"{"version":"1","pair":null}"#,
    r#""access-SECRET""#,
];

/// Asserts that every operation on `key` (load, save, clear, and a lock's load and save) is
/// refused with `StoreError::Corrupt`, whose message holds each of `names` and no `SECRET`.
/// `bad` is the stored text, for the messages.
pub fn refuses_corrupt<S: TokenStore + ?Sized>(
    store: &S,
    key: &StoreKey,
    names: &[&str],
    bad: &str,
) {
    match store.load(key) {
        Err(e @ StoreError::Corrupt { .. }) => {
            let text = e.to_string();
            for name in names {
                assert!(text.contains(name), "{text}");
            }
            assert!(!text.contains("SECRET"), "{text}");
        }
        other => panic!("{bad}: load gave {other:?}"),
    }
    let saved = store.save(key, &secret_record(3));
    assert!(
        matches!(saved, Err(StoreError::Corrupt { .. })),
        "{bad}: save gave {saved:?}"
    );
    assert!(matches!(store.clear(key), Err(StoreError::Corrupt { .. })));
    let mut guard = store.lock(key).unwrap();
    assert!(matches!(guard.load(), Err(StoreError::Corrupt { .. })));
    assert!(matches!(
        guard.save(&secret_record(4)),
        Err(StoreError::Corrupt { .. })
    ));
}

/// The lock timeout of the stopped-holder tests: short, so the suite stays quick.
pub const STOPPED_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// How far past its lock timeout a waiter may end (issue 9: "within its lock timeout plus 2 s").
pub const STOPPED_SLACK: Duration = Duration::from_secs(2);

/// Sends `signal` (`STOP`, `CONT`) to a child process with kill(1).
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{signal} {} failed", child.id());
}

/// Resumes (SIGCONT), kills and reaps a stopped child when dropped, also when a check failed.
pub struct Stopped(pub Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `holder`, a child process that holds the lock of `key` (it said so), is stopped with
/// SIGSTOP, as Ctrl-Z or a paused VM would. Three waiters, each on a store of its own from
/// `open` (with [`STOPPED_LOCK_TIMEOUT`]), ask for the lock at once (the second with
/// `lock_unless`, wanting a record that never comes, as a session in a crowd does): every one
/// must end with `StoreError::LockTimeout` after its lock timeout and within
/// [`STOPPED_SLACK`] more. Then the holder is resumed, killed and reaped, and the lock can be
/// taken again.
pub fn stopped_holder_times_out_every_waiter<S: TokenStore>(
    holder: Child,
    key: &StoreKey,
    open: impl Fn() -> S + Sync,
) {
    let holder = Stopped(holder);
    signal(&holder.0, "STOP");
    let stores: Vec<S> = (0..3).map(|_| open()).collect();
    let outcomes: Vec<(Result<(), StoreError>, Duration)> = thread::scope(|s| {
        let waiters: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                s.spawn(move || {
                    let asked = Instant::now();
                    let result = if i == 1 {
                        store.lock_unless(key, &mut |_| false).map(drop)
                    } else {
                        store.lock(key).map(drop)
                    };
                    (result, asked.elapsed())
                })
            })
            .collect();
        waiters.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (result, elapsed) in &outcomes {
        match result {
            Err(StoreError::LockTimeout { waited, .. }) => {
                assert_eq!(*waited, STOPPED_LOCK_TIMEOUT, "the error names the timeout")
            }
            other => panic!("a waiter on a stopped holder got {other:?} after {elapsed:?}"),
        }
        assert!(
            *elapsed >= STOPPED_LOCK_TIMEOUT - Duration::from_millis(50),
            "a waiter gave up after {elapsed:?}, before its lock timeout"
        );
        assert!(
            *elapsed <= STOPPED_LOCK_TIMEOUT + STOPPED_SLACK,
            "a waiter ended after {elapsed:?}: past its lock timeout plus {STOPPED_SLACK:?}"
        );
    }
    drop(holder);
    // With the holder gone, the lock is granted again.
    let store = open();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.lock(key) {
            Ok(_) => break,
            Err(StoreError::LockTimeout { .. }) if Instant::now() < deadline => {}
            Err(e) => panic!("the lock was not granted after the holder was killed: {e}"),
        }
    }
}

/// A guard that saved and then loads holds the lock again (SQLite and PostgreSQL end their
/// hold with each save): `waiter`, another handle on the same storage with a short lock
/// timeout, is refused until the guard is dropped, so no writer can come between that load
/// and the guard's next save. Found by the soak: a make's final save overwrote a ledger
/// entry another process wrote after the make's reload.
pub fn a_load_after_a_save_takes_the_lock_again<S: TokenStore, W: TokenStore>(
    holder: &S,
    waiter: &W,
) {
    let key = StoreKey::new("load-after-save");
    let mut guard = holder.lock(&key).unwrap();
    guard.save(&secret_record(1)).unwrap();
    assert_eq!(guard.load().unwrap(), Some(secret_record(1)));
    match waiter.lock(&key) {
        Err(StoreError::LockTimeout { .. }) => {}
        Err(other) => panic!("the waiter got {other}"),
        Ok(_) => panic!("the lock was granted between the guard's load and its next save"),
    }
    guard.save(&secret_record(2)).unwrap();
    drop(guard);
    let mut again = waiter.lock(&key).unwrap();
    assert_eq!(again.load().unwrap(), Some(secret_record(2)));
}

/// The test PostgreSQL server's conninfo: `CHATAPP_TEST_POSTGRES`, or pgbouncer's
/// (`CHATAPP_TEST_PGBOUNCER`) with `CHATAPP_TEST_POSTGRES_ROUTE=pgbouncer`. The tests that
/// need it carry `#[cfg_attr(chatapp_no_postgres, ignore = "...")]` (see build.rs), so this
/// fails only when such a test is run anyway.
pub fn postgres_conninfo() -> String {
    let var = match std::env::var("CHATAPP_TEST_POSTGRES_ROUTE").as_deref() {
        Ok("pgbouncer") => "CHATAPP_TEST_PGBOUNCER",
        _ => "CHATAPP_TEST_POSTGRES",
    };
    match std::env::var(var) {
        Ok(conninfo) if !conninfo.trim().is_empty() => conninfo,
        _ => panic!(
            "{var} is not set: run the PostgreSQL tests under .ci/postgres-env (bash .ci/test \
             does)"
        ),
    }
}

/// A name no other test, process or run uses: `<prefix>-<pid>-<nanos>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The `record` column of `key` in the SQLite store at `path`, read with a plain connection.
#[cfg(feature = "sqlite")]
pub fn sqlite_row(path: &Path, key: &str) -> String {
    rusqlite::Connection::open(path)
        .expect("open the database")
        .query_row(
            "SELECT record FROM chatapp_tokens WHERE store_key = ?1",
            [key],
            |row| row.get(0),
        )
        .expect("the row of the key")
}

/// Writes `text` as the `record` column of `key` in the SQLite store at `path` (a row is
/// added when there is none), with a plain connection.
#[cfg(feature = "sqlite")]
pub fn set_sqlite_row(path: &Path, key: &str, text: &str) {
    rusqlite::Connection::open(path)
        .expect("open the database")
        .execute(
            "INSERT INTO chatapp_tokens (store_key, record, updated_at) VALUES (?1, ?2, 0) \
             ON CONFLICT (store_key) DO UPDATE SET record = excluded.record",
            [key, text],
        )
        .expect("write the row");
}

/// The text the record codec writes for `record` (what the stores keep, unencrypted).
#[cfg(feature = "testing")]
pub fn codec_text(record: &StoredRecord) -> String {
    let text = chatapp_session::testing::encode_record(record, "test", "here");
    text.expect("the record encodes").to_string()
}
