//! The conformance suite (`chatapp_session::store::conformance`), one test per check per store,
//! once per store: the memory, file and SQLite stores here (each also sealed with
//! `Encryption`, whose codec sits between the store and its bytes: a different write path),
//! the keyring and PostgreSQL stores in their own test binaries (`conformance_suite_*`,
//! `conformance_run_all`), which need the keyring or the server their environment gives.
//! A new store: one more `conformance_tests!` line below.

/// One test per named check, on a store that `$open` (a `Fn() -> Store`) opens.
macro_rules! checks {
    ($open:expr; $($check:ident),+) => {
        $(
            #[test]
            fn $check() {
                let open = $open;
                conformance::$check(&open());
            }
        )+
    };
}

/// Generates a test module running every conformance check against the store that `$open`
/// (an expression evaluated once per test, returning a `Fn() -> Store`) opens. Every store
/// here is durable (a clone of a `MemoryStore` shares its map), so `survives_reopen` applies.
macro_rules! conformance_tests {
    ($(#[$attr:meta])* $name:ident, $open:expr) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use chatapp_session::store::conformance;

            checks!(
                $open;
                empty_load,
                save_then_load,
                overwrite,
                clear_is_idempotent_and_keeps_ledger,
                keys_isolated,
                keys_are_listed,
                concurrent_saves,
                lock_excludes_second_holder,
                lock_unless_finds_saved_record,
                lock_then_load_sees_saved
            );

            #[test]
            fn survives_reopen() {
                let open = $open;
                conformance::survives_reopen(&open);
            }

            /// Two stores over one storage, as two processes.
            #[test]
            fn lock_unless_finds_saved_record_across() {
                let open = $open;
                conformance::lock_unless_finds_saved_record_across(&open(), &open());
            }
        }
    };
}

// Clones of a MemoryStore share one map, so a clone is a "reopened" store that must see the
// records: the durable checks apply.
conformance_tests!(
    #[cfg(feature = "memory")]
    memory,
    {
        let shared = chatapp_session::store::MemoryStore::new();
        move || shared.clone()
    }
);

conformance_tests!(
    #[cfg(feature = "file")]
    file,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("store.json");
        move || {
            let _keep = &dir;
            chatapp_session::store::FileStore::new(&path)
        }
    }
);

conformance_tests!(
    #[cfg(feature = "sqlite")]
    sqlite,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("tokens.db");
        move || {
            let _keep = &dir;
            chatapp_session::store::SqliteStore::open(&path).unwrap()
        }
    }
);

conformance_tests!(
    #[cfg(all(feature = "file", feature = "encryption"))]
    file_encrypted,
    {
        use chatapp_session::store::{Encryption, EncryptionKey};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("store.json");
        move || {
            let _keep = &dir;
            chatapp_session::store::FileStore::new(&path)
                .with_encryption(Encryption::new(EncryptionKey::from_bytes([1; 32])))
        }
    }
);

conformance_tests!(
    #[cfg(all(feature = "sqlite", feature = "encryption"))]
    sqlite_encrypted,
    {
        use chatapp_session::store::{Encryption, EncryptionKey};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("tokens.db");
        move || {
            let _keep = &dir;
            chatapp_session::store::SqliteStore::open(&path)
                .unwrap()
                .with_encryption(Encryption::new(EncryptionKey::from_bytes([1; 32])))
        }
    }
);
