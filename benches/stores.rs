//! Store costs: `load` and `save` (lock, write, durable) for each store built in, and the cold
//! start of an application: a new `Session` on a `FileStore` that holds a far-future pair, up
//! to its first usable token, with no network call.
//!
//! `cargo bench --all-features --bench stores`. The keyring needs a session bus with an
//! unlocked Secret Service (and, for keyutils, a session keyring): run the bench under
//! `.ci/keyring-env`. PostgreSQL is measured when `CHATAPP_TEST_POSTGRES` names a server
//! (`.ci/postgres-env` sets it). A store whose feature is off, or whose service is absent, is
//! skipped with a note.
//!
//! The keyring entry and the PostgreSQL row are kept under the key `chatapp-session-bench`
//! (service `chatapp-session-bench` in the keyring), overwritten by every run and cleared at
//! its end.

mod common;

use std::path::Path;

use chatapp_session::store::{MemoryStore, StoreKey, TokenStore};
use chatapp_session::{AccessToken, Session};
use common::{
    batch, far_future_record, interleave, measure, print_header, print_row, Row, NO_SERVER,
};

const ROUNDS: usize = 31;

/// The key (and keyring service) the bench writes under.
const BENCH_KEY: &str = "chatapp-session-bench";

/// Rows for `load` and `save` of `store`, `iters` calls per batch. Saves alternate between
/// two records, so that every save changes what is stored (SQLite skips writing a row that
/// is unchanged, and so would not touch the disk).
fn load_and_save(name: &str, store: &dyn TokenStore, iters: u64) {
    let key = StoreKey::new(BENCH_KEY);
    let records = [far_future_record(0), far_future_record(1)];
    store.save(&key, &records[0]).unwrap();
    assert_eq!(store.load(&key).unwrap().as_ref(), Some(&records[0]));
    let load = measure(ROUNDS, || batch(iters, || store.load(&key).unwrap()));
    let mut n = 0;
    let save = measure(ROUNDS, || {
        batch(iters, || {
            n += 1;
            store.save(&key, &records[n % 2]).unwrap()
        })
    });
    assert_eq!(store.load(&key).unwrap().as_ref(), Some(&records[n % 2]));
    store.clear(&key).unwrap();
    for (op, ns) in [("load", load), ("save", save)] {
        print_row(&Row {
            name: format!("{name} {op}"),
            candidate_ns: ns,
            floor_ns: None,
            goal: None,
        });
    }
}

/// A new session on the file at `path` and its first token: a cold start.
fn cold_start(path: &Path) -> AccessToken {
    let session = Session::builder()
        .store(chatapp_session::store::FileStore::new(path))
        .store_key(BENCH_KEY)
        .base_url(NO_SERVER)
        .build()
        .unwrap();
    session.access_token().unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    print_header("stores: load and save (save = lock + write + durable)");
    load_and_save("memory", &MemoryStore::new(), 10_000);

    let file_path = dir.path().join("store").join("session.json");
    let file = chatapp_session::store::FileStore::new(&file_path);
    load_and_save("file (fsync)", &file, 10);

    #[cfg(feature = "sqlite")]
    {
        let sqlite = chatapp_session::store::SqliteStore::open(dir.path().join("session.db"))
            .expect("open the SQLite store");
        load_and_save("sqlite", &sqlite, 10);
    }
    #[cfg(not(feature = "sqlite"))]
    println!("note: sqlite skipped: the `sqlite` feature is off");

    #[cfg(feature = "encryption")]
    {
        use chatapp_session::store::{Encryption, EncryptionKey};
        let sealed = || Encryption::new(EncryptionKey::from_bytes([7; 32]));
        let file = chatapp_session::store::FileStore::new(dir.path().join("sealed.json"))
            .with_encryption(sealed());
        load_and_save("file (fsync), encrypted", &file, 10);
        #[cfg(feature = "sqlite")]
        {
            let sqlite = chatapp_session::store::SqliteStore::open(dir.path().join("sealed.db"))
                .expect("open the SQLite store")
                .with_encryption(sealed());
            load_and_save("sqlite, encrypted", &sqlite, 10);
        }
    }

    #[cfg(feature = "keyring")]
    keyrings();
    #[cfg(not(feature = "keyring"))]
    println!("note: keyring skipped: the `keyring` feature is off");

    #[cfg(feature = "postgres")]
    match std::env::var("CHATAPP_TEST_POSTGRES") {
        Ok(conninfo) if !conninfo.trim().is_empty() => {
            let postgres = chatapp_session::store::PostgresStore::connect(&conninfo)
                .expect("connect to CHATAPP_TEST_POSTGRES");
            load_and_save("postgres (loopback)", &postgres, 10);
        }
        _ => println!("note: postgres skipped: CHATAPP_TEST_POSTGRES is not set"),
    }
    #[cfg(not(feature = "postgres"))]
    println!("note: postgres skipped: the `postgres` feature is off");

    print_header("cold start: new Session on a FileStore with a far-future pair -> access_token()");
    // The floor: reading the stored pair once, which a cold start cannot avoid.
    let key = StoreKey::new(BENCH_KEY);
    file.save(&key, &far_future_record(0)).unwrap();
    let (c, f) = interleave(
        ROUNDS * 3,
        || batch(10, || cold_start(&file_path)),
        || {
            batch(10, || {
                chatapp_session::store::FileStore::new(&file_path)
                    .load(&key)
                    .unwrap()
            })
        },
    );
    print_row(&Row {
        name: "cold start vs one FileStore load".into(),
        candidate_ns: c,
        floor_ns: Some(f),
        goal: None,
    });
}

/// The keyring's two Linux backends (the platform's store elsewhere), each skipped with a
/// note when it cannot be used here.
#[cfg(feature = "keyring")]
fn keyrings() {
    use chatapp_session::store::{KeyringBackend, KeyringStore};

    let mut backends = vec![("keyring (Secret Service)", KeyringBackend::Native)];
    #[cfg(target_os = "linux")]
    backends.push(("keyring (keyutils)", KeyringBackend::LinuxKeyutils));
    for (name, backend) in backends {
        let store = KeyringStore::with_backend(BENCH_KEY, backend);
        // A save too: a locked or missing collection shows only then.
        let usable = store
            .connect()
            .and_then(|()| store.save(&StoreKey::new(BENCH_KEY), &far_future_record(0)));
        match usable {
            Ok(()) => load_and_save(name, &store, 5),
            Err(e) => println!("note: {name} skipped (run under .ci/keyring-env): {e}"),
        }
    }
}
