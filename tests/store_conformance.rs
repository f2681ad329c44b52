//! The conformance suite (`chatapp_session::store::conformance`), one test per check per store.

/// Generates a test module running every conformance check against the store that `$open`
/// (an expression evaluated once per test, returning a `Fn() -> Store`) opens.
macro_rules! conformance_tests {
    ($(#[$attr:meta])* $name:ident, durable = $durable:expr, $open:expr) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use chatapp_session::store::conformance;

            #[test]
            fn empty_load() {
                let open = $open;
                conformance::empty_load(&open());
            }

            #[test]
            fn save_then_load() {
                let open = $open;
                conformance::save_then_load(&open());
            }

            #[test]
            fn overwrite() {
                let open = $open;
                conformance::overwrite(&open());
            }

            #[test]
            fn clear_is_idempotent_and_keeps_ledger() {
                let open = $open;
                conformance::clear_is_idempotent_and_keeps_ledger(&open());
            }

            #[test]
            fn keys_isolated() {
                let open = $open;
                conformance::keys_isolated(&open());
            }

            #[test]
            fn survives_reopen() {
                if $durable {
                    let open = $open;
                    conformance::survives_reopen(&open);
                }
            }

            #[test]
            fn concurrent_saves() {
                let open = $open;
                conformance::concurrent_saves(&open());
            }

            #[test]
            fn lock_excludes_second_holder() {
                let open = $open;
                conformance::lock_excludes_second_holder(&open());
            }

            /// On one store, then on two stores over one storage, as two processes (every
            /// store here is durable).
            #[test]
            fn lock_unless_finds_saved_record() {
                let open = $open;
                let store = open();
                conformance::lock_unless_finds_saved_record(&store);
                conformance::lock_unless_finds_saved_record_across(&store, &open());
            }

            #[test]
            fn lock_then_load_sees_saved() {
                let open = $open;
                conformance::lock_then_load_sees_saved(&open());
            }

            #[test]
            fn run_all() {
                let open = $open;
                conformance::run_all(&open, $durable);
            }
        }
    };
}

// Clones of a MemoryStore share one map, so a clone is a "reopened" store that must see the
// records: the durable checks apply.
conformance_tests!(memory, durable = true, {
    let shared = chatapp_session::store::MemoryStore::new();
    move || shared.clone()
});

conformance_tests!(
    #[cfg(feature = "file")]
    file,
    durable = true,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        move || {
            let _keep = &dir;
            chatapp_session::store::FileStore::new(&path)
        }
    }
);

conformance_tests!(
    #[cfg(feature = "sqlite")]
    sqlite,
    durable = true,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        move || {
            let _keep = &dir;
            chatapp_session::store::SqliteStore::open(&path).unwrap()
        }
    }
);

conformance_tests!(
    #[cfg(all(feature = "file", feature = "encryption"))]
    file_encrypted,
    durable = true,
    {
        use chatapp_session::store::{Encryption, EncryptionKey};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
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
    durable = true,
    {
        use chatapp_session::store::{Encryption, EncryptionKey};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        move || {
            let _keep = &dir;
            chatapp_session::store::SqliteStore::open(&path)
                .unwrap()
                .with_encryption(Encryption::new(EncryptionKey::from_bytes([1; 32])))
        }
    }
);
