//! `SqliteStore` against real databases in temporary directories.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chatapp_session::store::{SqliteStore, StoreKey, TokenStore};
use chatapp_session::StoreError;

use support::{refuses_corrupt, secret_record, set_sqlite_row, sqlite_row, CORRUPT_RECORDS};

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).unwrap()
}

support::cross_process_tests! {
    place: {
        let dir = tempfile::tempdir().unwrap();
        let path = db_in(&dir);
        (dir, path)
    },
    open: open
}

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("tokens.db")
}

#[cfg(feature = "testing")]
#[test]
fn the_row_holds_the_record_codec_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path);
    store.save(&StoreKey::new("k"), &secret_record(1)).unwrap();
    let text = sqlite_row(&path, "k");
    assert_eq!(
        text.as_str(),
        support::codec_text(&secret_record(1)).as_str()
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 1);
    let (rows, updated_at): (i64, i64) = conn
        .query_row(
            "SELECT count(*), max(updated_at) FROM chatapp_tokens",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(rows, 1);
    assert!(updated_at > 1_700_000_000, "{updated_at}");
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn several_accounts_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path);
    let keys: Vec<StoreKey> = (0..5)
        .map(|i| StoreKey::for_account("https://api.chatapp.online", &format!("u{i}@x"), "app_1"))
        .collect();
    for (i, key) in (0..).zip(&keys) {
        store.save(key, &secret_record(i)).unwrap();
    }
    drop(store);
    let store = open(&path);
    for (i, key) in (0..).zip(&keys) {
        assert_eq!(store.load(key).unwrap(), Some(secret_record(i)));
    }
}

#[test]
fn debug_shows_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_in(&dir));
    store.save(&StoreKey::new("k"), &secret_record(1)).unwrap();
    let debug = format!("{store:?}");
    assert!(debug.contains("tokens.db"), "{debug}");
    assert!(!debug.contains("SECRET"), "{debug}");
}

#[test]
#[cfg(unix)]
fn files_are_0600_and_created_dirs_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("tokens.db");
    let store = open(&path);
    store.save(&StoreKey::new("k"), &secret_record(1)).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    for side in ["tokens.db-wal", "tokens.db-shm"] {
        let side = path.with_file_name(side);
        assert!(side.exists(), "{side:?} is missing");
        assert_eq!(mode(&side), 0o600, "{side:?}");
    }
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&dir.path().join("a").join("b")), 0o700);
}

#[test]
#[cfg(unix)]
fn an_insecure_database_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    open(&path)
        .save(&StoreKey::new("k"), &secret_record(1))
        .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    match SqliteStore::open(&path) {
        Err(e @ StoreError::InsecurePermissions { .. }) => {
            let text = e.to_string();
            assert!(text.contains("chmod 600"), "{text}");
            assert!(text.contains("tokens.db"), "{text}");
        }
        other => panic!("open gave {other:?}"),
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        open(&path).load(&StoreKey::new("k")).unwrap(),
        Some(secret_record(1))
    );
}

#[test]
fn a_corrupt_row_is_reported_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path);
    let key = StoreKey::new("k");
    let other = StoreKey::new("other");
    store.save(&key, &secret_record(1)).unwrap();
    store.save(&other, &secret_record(2)).unwrap();

    for bad in CORRUPT_RECORDS {
        set_sqlite_row(&path, "k", bad);
        refuses_corrupt(&store, &key, &["sqlite:", "tokens.db key k"], bad);
        assert_eq!(sqlite_row(&path, "k"), bad, "the corrupt row was changed");
        // The other account is unaffected, and the lock is free again.
        store.save(&other, &secret_record(4)).unwrap();
        assert_eq!(store.load(&other).unwrap(), Some(secret_record(4)));
    }

    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            r#"UPDATE chatapp_tokens SET record = '{"version":9,"pair":null}' WHERE store_key = 'k'"#,
            [],
        )
        .unwrap();
    assert!(matches!(
        store.load(&key),
        Err(StoreError::UnsupportedVersion { .. })
    ));
    assert!(matches!(
        store.save(&key, &secret_record(5)),
        Err(StoreError::UnsupportedVersion { .. })
    ));
    assert_eq!(sqlite_row(&path, "k"), r#"{"version":9,"pair":null}"#);
}

#[cfg(feature = "testing")]
#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    open(&path)
        .save(&StoreKey::new("k"), &secret_record(1))
        .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::UnsupportedVersion {
            found, supported, ..
        }) => assert_eq!((found, supported), (99, 1)),
        other => panic!("open gave {other:?}"),
    }
    assert_eq!(sqlite_row(&path, "k"), {
        let text = support::codec_text(&secret_record(1));
        text.as_str().to_owned()
    });
}

#[test]
fn a_file_that_is_no_database_is_corrupt_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let bytes = b"this is not a SQLite database, but it is long enough to look like a header........................................".to_vec();
    fs::write(&path, &bytes).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    match SqliteStore::open(&path) {
        Err(e @ StoreError::Corrupt { .. }) => {
            assert!(e.to_string().contains("not a SQLite database"))
        }
        other => panic!("open gave {other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_lock_dropped_without_saving_rolls_back_and_frees_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path);
    let key = StoreKey::new("k");
    store.save(&key, &secret_record(1)).unwrap();
    drop(store.lock(&key).unwrap());
    // Another connection can write at once: no transaction was left open.
    let other = open(&path).with_lock_timeout(Duration::ZERO);
    other.save(&key, &secret_record(2)).unwrap();
    assert_eq!(store.load(&key).unwrap(), Some(secret_record(2)));
}

#[test]
fn load_does_not_wait_for_a_lock_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path);
    let key = StoreKey::new("k");
    store.save(&key, &secret_record(1)).unwrap();
    let mut guard = store.lock(&key).unwrap();
    assert_eq!(guard.load().unwrap(), Some(secret_record(1)));
    // Same store, another thread: the reader connection answers while the lock is held.
    std::thread::scope(|s| {
        let loaded = s.spawn(|| store.load(&key).unwrap()).join().unwrap();
        assert_eq!(loaded, Some(secret_record(1)));
    });
    // Another store on the same file (as another process would): the same.
    assert_eq!(open(&path).load(&key).unwrap(), Some(secret_record(1)));
    guard.save(&secret_record(2)).unwrap();
    drop(guard);
    assert_eq!(store.load(&key).unwrap(), Some(secret_record(2)));
}

#[test]
fn a_lock_held_elsewhere_past_the_lock_timeout_is_a_lock_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let holder = open(&path);
    let key = StoreKey::new("k");
    let guard = holder.lock(&key).unwrap();
    let waiter = open(&path).with_lock_timeout(Duration::from_millis(200));
    assert_eq!(waiter.lock_timeout(), Duration::from_millis(200));
    let asked = Instant::now();
    match waiter.lock(&key) {
        Err(StoreError::LockTimeout { waited, .. }) => {
            assert_eq!(waited, Duration::from_millis(200));
            assert!(asked.elapsed() >= Duration::from_millis(150));
        }
        Err(other) => panic!("lock gave {other:?}"),
        Ok(_) => panic!("lock was granted while another connection held it"),
    }
    assert!(matches!(
        waiter.save(&key, &secret_record(1)),
        Err(StoreError::LockTimeout { .. })
    ));
    drop(guard);
    waiter.save(&key, &secret_record(1)).unwrap();
    assert_eq!(holder.load(&key).unwrap(), Some(secret_record(1)));
}

#[test]
fn a_huge_lock_timeout_is_capped_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_in(&dir)).with_lock_timeout(Duration::from_secs(u64::MAX));
    assert!(store.lock_timeout() < Duration::from_secs(30 * 24 * 3600));
    assert_eq!(
        open(&db_in(&dir)).lock_timeout(),
        Duration::from_secs(30),
        "the default lock timeout is the default HTTP timeout"
    );
}

#[test]
fn a_load_after_a_save_takes_the_lock_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let holder = open(&path);
    let waiter = open(&path).with_lock_timeout(Duration::from_millis(200));
    support::a_load_after_a_save_takes_the_lock_again(&holder, &waiter);
}
