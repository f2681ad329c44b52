//! Encrypted records (issue 11), for the file and SQLite stores here and PostgreSQL in
//! `postgres_store.rs`: after a login no token and no password in any byte the store wrote;
//! a wrong key, no key and a tampered byte give typed errors and leave the bytes as they
//! were; plaintext records are sealed at their next save; rotation; the keyring-held key;
//! canonical store keys and the move of a record saved under an old-style key; the CLI.

mod support;

use std::path::Path;

use chatapp_session::store::{
    Encryption, EncryptionKey, FileStore, SqliteStore, StoreKey, StoredRecord, TokenStore,
};
use chatapp_session::testing::{FakeChatApp, DEFAULT_EMAIL, DEFAULT_PASSWORD};
use chatapp_session::{EncryptionProblem, Session, StoreError};

use support::{write_private, Cli};

/// `store` boxed, sealed with the encryption `e` when there is one.
macro_rules! sealed {
    ($store:expr, $e:expr) => {{
        let store = $store;
        let boxed: Box<dyn TokenStore> = match $e {
            Some(e) => Box::new(store.with_encryption(e)),
            None => Box::new(store),
        };
        boxed
    }};
}

/// A session of `server`'s default account on `store`, on the server's clock.
fn session_on_clock(server: &FakeChatApp, store: impl TokenStore + 'static) -> Session {
    Session::builder()
        .base_url(server.base_url())
        .credentials(server.credentials())
        .store(store)
        .clock(server.clock())
        .build()
        .unwrap()
}

fn key(n: u8) -> EncryptionKey {
    EncryptionKey::from_bytes([n; 32])
}

/// Every byte of every file in `dir` (the store, its temporary files, `-wal`, `-shm`, locks).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// One base64 character of the envelope's `sealed` value changed.
fn tamper(text: &str) -> String {
    let at = text.find("\"sealed\":\"").unwrap() + 14;
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

fn problem(result: Result<Option<StoredRecord>, StoreError>) -> EncryptionProblem {
    match result {
        Err(StoreError::Encrypted { problem, .. }) => problem,
        other => panic!("expected an encryption error, got {other:?}"),
    }
}

/// The checks every durable store passes. `open` opens the store (encrypted or not),
/// `written` is every byte it wrote, `raw`/`set_raw` read and replace one record's text.
pub struct Harness<'a> {
    pub open: &'a dyn Fn(Option<Encryption>) -> Box<dyn TokenStore>,
    pub written: &'a dyn Fn() -> Vec<u8>,
    pub raw: &'a dyn Fn(&StoreKey) -> String,
    pub set_raw: &'a dyn Fn(&StoreKey, &str),
}

/// [`check_store`] on a store whose every byte lives in the files of `dir`.
fn check_store_in(
    dir: &Path,
    open: &dyn Fn(Option<Encryption>) -> Box<dyn TokenStore>,
    raw: &dyn Fn(&StoreKey) -> String,
    set_raw: &dyn Fn(&StoreKey, &str),
) {
    check_store(&Harness {
        open,
        written: &|| all_bytes(dir),
        raw,
        set_raw,
    });
}

fn check_store(h: &Harness<'_>) {
    let server = FakeChatApp::start().unwrap();
    // A login through a session: the store then holds a pair and a ledger.
    let session = Session::builder()
        .base_url(server.base_url())
        .credentials(server.credentials())
        .store((h.open)(Some(Encryption::new(key(1)))))
        .build()
        .unwrap();
    session.login().unwrap();
    let k = session.store_key().clone();
    let store = (h.open)(Some(Encryption::new(key(1))));
    let record = store.load(&k).unwrap().unwrap();
    let pair = record.pair.clone().unwrap();
    let written = (h.written)();
    for secret in [
        pair.access.expose_secret(),
        pair.refresh.expose_secret(),
        DEFAULT_PASSWORD,
    ] {
        assert!(!contains(&written, secret), "a secret in the bytes written");
    }
    let sealed = (h.raw)(&k);
    assert!(sealed.starts_with("{\"chatappEnvelope\":1"), "{sealed}");

    // Wrong key, no key, tampered: typed errors, nothing changed, saves refused.
    let other = (h.open)(Some(Encryption::new(key(2))));
    assert_eq!(problem(other.load(&k)), EncryptionProblem::WrongKey);
    assert!(other.save(&k, &StoredRecord::default()).is_err());
    let none = (h.open)(None);
    assert_eq!(problem(none.load(&k)), EncryptionProblem::KeyRequired);
    assert!(none.save(&k, &StoredRecord::default()).is_err());
    assert!(none.clear(&k).is_err());
    assert_eq!((h.raw)(&k), sealed, "a refused key changed the record");
    let altered = tamper(&sealed);
    (h.set_raw)(&k, &altered);
    assert_eq!(problem(store.load(&k)), EncryptionProblem::Tampered);
    assert!(store.save(&k, &StoredRecord::default()).is_err());
    assert_eq!((h.raw)(&k), altered, "a tampered record was changed");
    (h.set_raw)(&k, &sealed);
    // Another account's sealed record moved under this key does not open.
    let moved = StoreKey::new("someone else");
    (h.set_raw)(&moved, &sealed);
    assert_eq!(problem(store.load(&moved)), EncryptionProblem::Tampered);

    // Rotation: the previous key still reads; the save seals with the new one.
    let rotated = (h.open)(Some(Encryption::new(key(3)).with_previous(key(1))));
    assert_eq!(rotated.load(&k).unwrap(), Some(record.clone()));
    rotated.save(&k, &record).unwrap();
    assert_ne!((h.raw)(&k), sealed);
    assert_eq!(problem(store.load(&k)), EncryptionProblem::WrongKey);
    let new_only = (h.open)(Some(Encryption::new(key(3))));
    assert_eq!(new_only.load(&k).unwrap(), Some(record.clone()));

    // Plaintext to encrypted: read in clear, sealed at the next save.
    let plain_key = StoreKey::new("plain");
    (h.open)(None).save(&plain_key, &record).unwrap();
    assert!((h.raw)(&plain_key).contains(pair.refresh.expose_secret()));
    assert_eq!(new_only.load(&plain_key).unwrap(), Some(record.clone()));
    new_only.save(&plain_key, &record).unwrap();
    let now = (h.raw)(&plain_key);
    assert!(now.starts_with("{\"chatappEnvelope\""));
    assert!(!now.contains(pair.refresh.expose_secret()));
}

#[test]
fn file_store_keeps_secrets_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let p = path.clone();
    let open = move |e: Option<Encryption>| -> Box<dyn TokenStore> {
        let store = FileStore::new(&p);
        sealed!(store, e)
    };
    let entries = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let raw = |k: &StoreKey| entries(&path)["entries"][k.as_str()].to_string();
    let set_raw = |k: &StoreKey, text: &str| {
        let mut v = entries(&path);
        v["entries"][k.as_str()] = serde_json::from_str(text).unwrap();
        write_private(&path, v.to_string());
    };
    check_store_in(dir.path(), &open, &raw, &set_raw);
}

#[test]
fn sqlite_store_keeps_secrets_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.db");
    let p = path.clone();
    let open = move |e: Option<Encryption>| -> Box<dyn TokenStore> {
        let store = SqliteStore::open(&p).unwrap();
        sealed!(store, e)
    };
    let raw = |k: &StoreKey| -> String { support::sqlite_row(&path, k.as_str()) };
    let set_raw = |k: &StoreKey, text: &str| support::set_sqlite_row(&path, k.as_str(), text);
    check_store_in(dir.path(), &open, &raw, &set_raw);
}

#[test]
fn key_sources_refuse_what_they_cannot_trust() {
    let dir = tempfile::tempdir().unwrap();
    let raw_file = dir.path().join("raw.key");
    write_private(&raw_file, [9u8; 32]);
    let b64_file = dir.path().join("b64.key");
    write_private(&b64_file, "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\n");
    // Both forms name the same key: one seals, the other opens.
    let k = StoreKey::new("k");
    let store = dir.path().join("s.json");
    FileStore::new(&store)
        .with_encryption(Encryption::new(
            EncryptionKey::from_file(&raw_file).unwrap(),
        ))
        .save(&k, &StoredRecord::default())
        .unwrap();
    let spec = format!("file:{}", b64_file.display());
    let opened = FileStore::new(&store)
        .with_encryption(Encryption::new(EncryptionKey::from_spec(&spec).unwrap()));
    assert_eq!(opened.load(&k).unwrap(), Some(StoredRecord::default()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&raw_file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            EncryptionKey::from_file(&raw_file),
            Err(StoreError::InsecurePermissions { .. })
        ));
    }
    for bad in [
        "",
        "not base64!",
        "c2hvcnQ=",
        "file:/nonexistent/key",
        "keyring:",
    ] {
        match EncryptionKey::from_spec(bad) {
            Err(StoreError::Key { .. }) => {}
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

/// A key kept in the OS keyring (made by the first call, found by the second) seals and
/// opens records of the store `open` opens; another service's key does not open them.
#[cfg(feature = "keyring")]
fn keyring_key_round_trip(open: &dyn Fn(Option<Encryption>) -> Box<dyn TokenStore>) {
    use chatapp_session::store::KeyringStore;
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let service = format!(
        "chatapp-session-test-key-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let first = match EncryptionKey::from_keyring(&KeyringStore::new(&service)) {
        Ok(key) => key,
        Err(e) => panic!("no usable keyring ({e}): run under .ci/keyring-env (bash .ci/test does)"),
    };
    let second = EncryptionKey::from_keyring(&KeyringStore::new(&service)).unwrap();
    let k = StoreKey::new("k");
    let record = StoredRecord {
        pair: None,
        makes: vec![7],
        ..StoredRecord::default()
    };
    open(Some(Encryption::new(first)))
        .save(&k, &record)
        .unwrap();
    assert_eq!(
        open(Some(Encryption::new(second))).load(&k).unwrap(),
        Some(record)
    );
    let other =
        EncryptionKey::from_keyring(&KeyringStore::new(format!("{service}-other"))).unwrap();
    assert_eq!(
        problem(open(Some(Encryption::new(other))).load(&k)),
        EncryptionProblem::WrongKey
    );
}

#[cfg(feature = "keyring")]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn a_key_in_the_keyring_serves_the_file_and_sqlite_stores() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.json");
    keyring_key_round_trip(&|e| {
        let store = FileStore::new(&file);
        sealed!(store, e)
    });
    let db = dir.path().join("s.db");
    keyring_key_round_trip(&|e| {
        let store = SqliteStore::open(&db).unwrap();
        sealed!(store, e)
    });
}

#[test]
fn account_keys_never_collide_and_ignore_email_case() {
    let base = "https://api.example";
    let a = StoreKey::for_account(base, "u@x.com a", "b");
    let b = StoreKey::for_account(base, "u@x.com", "a b");
    assert_ne!(a, b);
    assert_eq!(
        StoreKey::legacy_for_account(base, "u@x.com a", "b"),
        StoreKey::legacy_for_account(base, "u@x.com", "a b"),
        "the old keys did collide"
    );
    assert_ne!(
        StoreKey::for_account(base, "u@x.com", "a%20b"),
        StoreKey::for_account(base, "u@x.com", "a b")
    );
    assert_eq!(
        StoreKey::for_account(&format!("{base}/"), " User@X.com ", "b"),
        StoreKey::for_account(base, "user@x.com", "b")
    );
    assert_eq!(
        b.account_parts(),
        Some((base.to_owned(), "u@x.com".to_owned(), "a b".to_owned()))
    );
    // Both accounts keep their own record in one store.
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("s.json"));
    let ra = StoredRecord {
        pair: None,
        makes: vec![1],
        ..StoredRecord::default()
    };
    let rb = StoredRecord {
        pair: None,
        makes: vec![2],
        ..StoredRecord::default()
    };
    store.save(&a, &ra).unwrap();
    store.save(&b, &rb).unwrap();
    assert_eq!(store.load(&a).unwrap(), Some(ra));
    assert_eq!(store.load(&b).unwrap(), Some(rb));
}

#[test]
fn a_record_under_the_old_key_moves_to_the_new_key_with_its_ledger() {
    // An appId with a space: the old key joined it as it is, the new one encodes it.
    let app_id = "my app";
    let server = FakeChatApp::builder()
        .account(DEFAULT_EMAIL, DEFAULT_PASSWORD, app_id)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("s.json"));
    let legacy = StoreKey::legacy_for_account(&server.base_url(), DEFAULT_EMAIL, app_id);
    let earlier_make = server.now() - 60;
    let old = StoredRecord {
        pair: Some(server.issue_pair()),
        makes: vec![earlier_make],
        ..StoredRecord::default()
    };
    store.save(&legacy, &old).unwrap();
    let session = session_on_clock(&server, store.clone());
    assert_ne!(session.store_key(), &legacy);
    assert_eq!(
        session.store_key(),
        &StoreKey::for_account(&server.base_url(), DEFAULT_EMAIL, app_id)
    );
    let status = session.status().unwrap();
    assert!(status.stored, "the old record is found");
    assert_eq!(status.makes_last_24h, 1);
    // The first save (a login here) writes under the new key, the old ledger kept.
    session.login().unwrap();
    let moved = store.load(session.store_key()).unwrap().unwrap();
    assert!(moved.makes.contains(&earlier_make), "{:?}", moved.makes);
    assert_eq!(moved.makes.len(), 2);
    assert_eq!(server.counters().makes, 1);
    // Moved, not copied: no pair is left under the old key (its ledger may stay).
    let left = store.load(&legacy).unwrap().unwrap_or_default();
    assert_eq!(left.pair, None, "the pair stays readable under the old key");

    // A dead pair under the old key: the refused refresh, the reload and the make keep the
    // old ledger too.
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("s.json"));
    let mut pair = server.issue_pair();
    pair.access_expires_at = server.now() - 1;
    let old = StoredRecord {
        pair: Some(pair),
        makes: vec![earlier_make],
        ..StoredRecord::default()
    };
    store.save(&legacy, &old).unwrap();
    server.revoke_all();
    let session = session_on_clock(&server, store.clone());
    session.access_token().unwrap();
    let moved = store.load(session.store_key()).unwrap().unwrap();
    assert!(moved.makes.contains(&earlier_make), "{:?}", moved.makes);
    assert_eq!(server.counters().makes, 2);
    assert_eq!(store.load(&legacy).unwrap().and_then(|r| r.pair), None);
}

#[test]
fn the_cli_encrypts_with_chatapp_store_key() {
    let server = FakeChatApp::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let key_file = dir.path().join("store.key");
    write_private(&key_file, [5u8; 32]);
    let spec = format!("file:{}", key_file.display());
    let cli = Cli::file(&server, &path).with_env("CHATAPP_STORE_KEY", &spec);
    cli.run(&["login"]).expect_code(0, "login");
    let status = cli.run(&["status"]);
    status.expect_code(0, "status");
    let v: serde_json::Value = serde_json::from_str(status.stdout.trim()).unwrap();
    assert_eq!(v["encrypted"], true);
    assert_eq!(v["stored"], true);
    let token = cli.run(&["token"]);
    token.expect_code(0, "token");
    let bytes = all_bytes(dir.path());
    assert!(!contains(&bytes, token.stdout.trim()));
    assert!(!contains(&bytes, DEFAULT_PASSWORD));
    // Without the key: a storage failure, and the file is left as it was.
    let before = std::fs::read(&path).unwrap();
    let plain = Cli::file(&server, &path);
    plain
        .run(&["status"])
        .expect_code(6, "status without the key");
    plain
        .run(&["logout"])
        .expect_code(6, "logout without the key");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // A base64 key in the variable; a malformed one is refused.
    Cli::file(&server, &dir.path().join("other.json"))
        .with_env(
            "CHATAPP_STORE_KEY",
            "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=",
        )
        .run(&["status"])
        .expect_code(0, "a base64 key");
    let bad = Cli::file(&server, &path).with_env("CHATAPP_STORE_KEY", "not-a-key");
    let run = bad.run(&["status"]);
    run.expect_code(6, "a malformed key");
    assert!(!run.stderr.contains("not-a-key"), "{}", run.stderr);
}

/// PostgreSQL: run under `.ci/postgres-env` (bash .ci/test does).
#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use chatapp_session::store::PostgresStore;

    fn server() -> String {
        std::env::var("CHATAPP_TEST_POSTGRES").unwrap_or_else(|_| {
            panic!(
                "CHATAPP_TEST_POSTGRES is not set: run under .ci/postgres-env (bash .ci/test does)"
            )
        })
    }

    fn unique(tag: &str) -> String {
        use std::time::{SystemTime, UNIX_EPOCH};
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!(
            "chatapp_{tag}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000
        )
    }

    #[test]
    #[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
    fn postgres_store_keeps_secrets_sealed() {
        let base = server();
        let schema = unique("enc");
        let mut admin = ::postgres::Client::connect(&base, ::postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
        let conninfo = format!("{base} options='-c search_path={schema}'");
        let c = conninfo.clone();
        let open = move |e: Option<Encryption>| -> Box<dyn TokenStore> {
            let store = PostgresStore::connect(&c).unwrap();
            sealed!(store, e)
        };
        let client = || ::postgres::Client::connect(&conninfo, ::postgres::NoTls).unwrap();
        // Every row of the table, as text.
        let written = || -> Vec<u8> {
            client()
                .query("SELECT t::text FROM chatapp_session_tokens t", &[])
                .unwrap()
                .iter()
                .flat_map(|row| row.get::<_, String>(0).into_bytes())
                .collect()
        };
        let raw = |k: &StoreKey| -> String {
            client()
                .query_one(
                    "SELECT record FROM chatapp_session_tokens WHERE store_key = $1",
                    &[&k.as_str()],
                )
                .unwrap()
                .get(0)
        };
        let set_raw = |k: &StoreKey, text: &str| {
            client()
                .execute(
                    "INSERT INTO chatapp_session_tokens (store_key, record) VALUES ($1, $2) \
                     ON CONFLICT (store_key) DO UPDATE SET record = excluded.record",
                    &[&k.as_str(), &text],
                )
                .unwrap();
        };
        check_store(&Harness {
            open: &open,
            written: &written,
            raw: &raw,
            set_raw: &set_raw,
        });
        client()
            .batch_execute("DELETE FROM chatapp_session_tokens")
            .unwrap();
        #[cfg(all(feature = "keyring", not(chatapp_no_keyring)))]
        keyring_key_round_trip(&open);
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .unwrap();
    }

    #[test]
    #[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
    fn sslmode_prefer_and_none_use_tls_like_libpq() {
        let base = server();
        assert!(
            std::env::var("CHATAPP_TEST_POSTGRES_CA").is_ok(),
            "the test cluster has no TLS (openssl missing?)"
        );
        for mode in ["sslmode=prefer", ""] {
            let name = unique("ssl");
            let store =
                PostgresStore::connect(&format!("{base} {mode} application_name={name}")).unwrap();
            store.load(&StoreKey::new("x")).unwrap();
            let mut admin = ::postgres::Client::connect(&base, ::postgres::NoTls).unwrap();
            let ssl: bool = admin
                .query_one(
                    "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                     WHERE a.application_name = $1",
                    &[&name],
                )
                .unwrap()
                .get(0);
            assert!(ssl, "{mode:?} connected without TLS");
            drop(store);
        }
    }

    #[test]
    #[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
    fn the_password_comes_from_pgpassword_or_a_private_password_file() {
        let conninfo = std::env::var("CHATAPP_TEST_POSTGRES_PW_CONNINFO")
            .expect("run under .ci/postgres-env, which makes a role with a password");
        let secret = std::env::var("CHATAPP_TEST_POSTGRES_PW_SECRET").unwrap();
        let fake = FakeChatApp::start().unwrap();
        let cli = Cli::new(&fake, format!("postgres:{conninfo}"));
        let run = cli.run(&["status"]);
        run.expect_code(6, "no password");
        cli.clone_with("PGPASSWORD", &secret)
            .run(&["status"])
            .expect_code(0, "PGPASSWORD");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        write_private(
            &file,
            format!("# test\n127.0.0.1:*:postgres:chatapp_password_test:{secret}\n"),
        );
        let with_file = cli.clone_with("PGPASSFILE", file.to_str().unwrap());
        with_file
            .run(&["status"])
            .expect_code(0, "a 0600 password file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let run = with_file.run(&["status"]);
            run.expect_code(6, "a password file others can read");
            assert!(run.stderr.contains("group or others"), "{}", run.stderr);
            assert!(!run.stderr.contains(&secret));
        }
    }

    trait CloneWith {
        fn clone_with(&self, name: &str, value: &str) -> Cli;
    }

    impl CloneWith for Cli {
        fn clone_with(&self, name: &str, value: &str) -> Cli {
            let mut cli = Cli {
                base_url: self.base_url.clone(),
                store: self.store.clone(),
                env: self.env.clone(),
                time_file: None,
            };
            cli = cli.with_env(name, value);
            cli
        }
    }
}
