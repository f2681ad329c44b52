//! `KeyringStore` against the platform's real keyring: the Secret Service on Linux (and the
//! Linux kernel keyring), the login Keychain on macOS, the Credential Manager on Windows.
//!
//! On Linux they need a D-Bus session bus with an unlocked Secret Service and a session
//! keyring of the process's own; this project's CI runs them as
//!
//! ```text
//! .ci/keyring-env cargo test --all-features --test keyring_store
//! ```
//!
//! On a Mac (or a Windows machine) logged in to a desktop session, no wrapper is needed:
//!
//! ```text
//! cargo test --features keyring --test keyring_store
//! ```
//!
//! (add `testing` to the features for the conformance suite). Each test uses service names
//! of its own (process id, time, counter) and deletes what it wrote. Where no keyring can be
//! reached (no session bus, a locked Keychain...), every test that needs one fails at once
//! with instructions; none passes without having run. The tests of the Linux-only parts (the
//! kernel keyring, a missing bus, a locked collection) are compiled on Linux only. This
//! project's CI runs them on Linux only, and type-checks them for macOS and Windows
//! (`.ci/macos-check`, `.ci/windows-check`): running them there is for a developer on such a
//! machine.
#![cfg(all(
    feature = "keyring",
    any(target_os = "linux", target_os = "macos", target_os = "windows")
))]

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use chatapp_session::store::{KeyringBackend, KeyringStore, StoreKey, StoredRecord, TokenStore};
use chatapp_session::{AccessToken, RefreshToken, StoreError, TokenPair};

use support::child::{self, Params};

#[cfg(target_os = "linux")]
const HOW_TO_RUN: &str = "the keyring tests need a D-Bus session bus with an unlocked Secret \
    Service and a kernel session keyring: run them as `.ci/keyring-env cargo test --all-features \
    --test keyring_store` (or inside `dbus-run-session` with `gnome-keyring-daemon --unlock \
    --components=secrets` and under `keyctl session -`); to leave them out, build without the \
    `keyring` feature";
#[cfg(target_os = "macos")]
const HOW_TO_RUN: &str = "the keyring tests need the user's login Keychain, unlocked: run them \
    as `cargo test --features keyring,testing --test keyring_store` from a logged-in session \
    (over SSH, first `security unlock-keychain ~/Library/Keychains/login.keychain-db`); to leave \
    them out, build without the `keyring` feature";
#[cfg(target_os = "windows")]
const HOW_TO_RUN: &str = "the keyring tests need the Windows Credential Manager of a user with \
    a loaded profile: run them as `cargo test --features keyring,testing --test keyring_store` \
    from that user's session; to leave them out, build without the `keyring` feature";

// ---------------------------------------------------------------------------------------------
// Environment and helpers

/// Checks that the platform's keyring can be used here (once per run), and panics with how
/// to run the tests when it cannot: a test that needs it never passes without it.
fn require_keyring() {
    static STATE: OnceLock<Result<String, String>> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        // A real write and read, so that a locked or missing collection is found too.
        let service = unique_service("probe");
        let key = StoreKey::new("probe");
        let _cleanup = Cleanup::native(&service, &[&key]);
        let probe = || -> Result<(), StoreError> {
            let store = KeyringStore::try_new(service.clone())?;
            store.save(&key, &StoredRecord::default())?;
            store.load(&key)?;
            #[cfg(target_os = "linux")]
            {
                let kernel =
                    KeyringStore::with_backend(service.clone(), KeyringBackend::LinuxKeyutils);
                kernel.save(&key, &StoredRecord::default())?;
            }
            Ok(())
        };
        probe().map_err(|e| e.to_string())?;
        Ok(native_credential_store().vendor())
    });
    match state {
        Ok(vendor) => eprintln!("keyring tests on: {vendor}"),
        Err(e) => panic!("{HOW_TO_RUN}. The keyring answered: {e}"),
    }
}

/// A service name unique to this run and call, so that runs and tests never collide:
/// `chatapp-session-test-<pid>-<nanos>-<n>-<test>`.
fn unique_service(test: &str) -> String {
    format!("{}-{test}", support::unique_name("chatapp-session-test"))
}

fn pair(tag: &str) -> TokenPair {
    TokenPair {
        access: AccessToken::new(format!("acc-SECRET-{tag}")),
        access_expires_at: 1_700_000_000,
        refresh: RefreshToken::new(format!("ref-SECRET-{tag}")),
        refresh_expires_at: 1_700_086_400,
        cabinet_user_id: 14545,
    }
}

/// What the `hold-lock` child saves at the end of its hold.
fn holder_mark() -> StoredRecord {
    record("holder", vec![7])
}

fn record(tag: &str, makes: Vec<i64>) -> StoredRecord {
    StoredRecord {
        pair: Some(pair(tag)),
        makes,
        ..Default::default()
    }
}

/// The platform's own credential store, as `KeyringBackend::Native` uses it, for reading and
/// writing raw secrets beside the store under test.
fn native_credential_store() -> Arc<keyring_core::CredentialStore> {
    match platform_store() {
        Ok(store) => store,
        Err(e) => panic!("the platform's credential store: {e}"),
    }
}

#[cfg(target_os = "linux")]
fn platform_store() -> keyring_core::Result<Arc<keyring_core::CredentialStore>> {
    zbus_secret_service_keyring_store::Store::new().map(|s| s as Arc<keyring_core::CredentialStore>)
}

#[cfg(target_os = "macos")]
fn platform_store() -> keyring_core::Result<Arc<keyring_core::CredentialStore>> {
    apple_native_keyring_store::keychain::Store::new()
        .map(|s| s as Arc<keyring_core::CredentialStore>)
}

#[cfg(target_os = "windows")]
fn platform_store() -> keyring_core::Result<Arc<keyring_core::CredentialStore>> {
    windows_native_keyring_store::Store::new().map(|s| s as Arc<keyring_core::CredentialStore>)
}

/// The raw secret under (service, account) in the platform's keyring, read with keyring-core.
fn raw_secret(service: &str, key: &StoreKey) -> Option<Vec<u8>> {
    let entry =
        keyring_core::Entry::new_in_store(&native_credential_store(), service, key.as_str())
            .unwrap_or_else(|e| panic!("entry: {e}"));
    match entry.get_secret() {
        Ok(secret) => Some(secret),
        Err(keyring_core::Error::NoEntry) => None,
        Err(e) => panic!("raw read: {e}"),
    }
}

/// Deletes the test's credentials when dropped, so that a real keyring keeps nothing.
struct Cleanup {
    store: Option<Arc<keyring_core::CredentialStore>>,
    service: String,
    accounts: Vec<String>,
}

impl Cleanup {
    fn native(service: &str, keys: &[&StoreKey]) -> Self {
        Cleanup {
            store: platform_store().ok(),
            service: service.to_owned(),
            accounts: keys.iter().map(|k| k.as_str().to_owned()).collect(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(store) = &self.store {
            for account in &self.accounts {
                if let Ok(entry) = keyring_core::Entry::new_in_store(store, &self.service, account)
                {
                    let _ = entry.delete_credential();
                }
            }
        }
    }
}

/// This test binary, run as a child that does `action` (see `child_process`).
fn child(action: &str, service: &str, key: &StoreKey) -> Command {
    let mut command = child::command("child_process");
    command
        .param("action", action)
        .param("service", service)
        .param("key", key.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    command
}

/// Waits until the child prints a line holding `line` on stdout.
fn wait_for_line(child: &mut Child, line: &str) {
    child::wait_for_line(child, line, Duration::from_secs(30));
}

/// Runs `f` on a thread and fails the test if it has not finished within `limit`.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

// ---------------------------------------------------------------------------------------------
// The child side of the cross-process tests

/// In a child started by `child()`, does what its `action` parameter says.
#[test]
#[ignore = "child process entry: started by this file's cross-process tests"]
fn child_process() {
    child::entry("child_process");
    let action = child::param("action");
    let service = child::param("service");
    let key = StoreKey::new(child::param("key"));
    match action.as_str() {
        // Take the lock, say so, keep it for a second (then save the holder's mark under it)
        // or ten minutes, and exit without releasing it: only the end of the process
        // releases it.
        "hold-lock" | "hold-lock-forever" => {
            let store = KeyringStore::new(service);
            let mut guard = store
                .lock(&key)
                .unwrap_or_else(|e| panic!("child lock: {e}"));
            println!("@@locked");
            if action == "hold-lock" {
                thread::sleep(Duration::from_secs(1));
                guard
                    .save(&holder_mark())
                    .unwrap_or_else(|e| panic!("child save: {e}"));
            } else {
                thread::sleep(Duration::from_secs(600));
            }
            std::mem::forget(guard);
            std::process::exit(0);
        }
        // Report how a store without a usable session bus fails.
        #[cfg(target_os = "linux")]
        "no-bus" => {
            let report = |what: &str, result: Result<(), StoreError>| match result {
                Err(e @ StoreError::Unavailable { .. }) => println!("@@{what}: UNAVAILABLE: {e}"),
                Err(e) => println!("@@{what}: OTHER ERROR: {e:?}"),
                Ok(()) => println!("@@{what}: OK"),
            };
            report(
                "try_new",
                KeyringStore::try_new(service.clone()).map(|_| ()),
            );
            let store = KeyringStore::new(service);
            report("load", store.load(&key).map(|_| ()));
            report("save", store.save(&key, &record("child", vec![1])));
            report("lock", store.lock(&key).map(|_| ()));
        }
        // Report what a save does when the Secret Service has no unlocked collection.
        #[cfg(target_os = "linux")]
        "locked-save" => {
            let store = KeyringStore::new(service);
            match store.save(&key, &record("child", vec![1])) {
                Err(e @ StoreError::Unavailable { .. }) => println!("@@save: UNAVAILABLE: {e}"),
                Err(e) => println!("@@save: OTHER ERROR: {e:?}"),
                Ok(()) => println!("@@save: OK"),
            }
        }
        // Print the record stored in the kernel keyring under (service, key).
        #[cfg(target_os = "linux")]
        "kernel-load" => {
            let store = KeyringStore::with_backend(service, KeyringBackend::LinuxKeyutils);
            match store.load(&key) {
                Ok(Some(r)) => println!("@@kernel-load: makes={:?}", r.makes),
                Ok(None) => println!("@@kernel-load: none"),
                Err(e) => println!("@@kernel-load: error {e}"),
            }
        }
        other => panic!("unknown child action {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The platform's keyring (Secret Service, Keychain, Credential Manager)

/// What the conformance suite cannot see: a load (also under the lock) creates no secret.
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn a_load_creates_no_secret() {
    require_keyring();
    let service = unique_service("empty");
    let key = StoreKey::new("https://api.chatapp.online me@example.com 1");
    let store = KeyringStore::new(service.clone());
    assert_eq!(store.load(&key).ok(), Some(None));
    let mut guard = store.lock(&key).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(guard.load().ok(), Some(None));
    drop(guard);
    assert_eq!(
        raw_secret(&service, &key),
        None,
        "a load must not create a secret"
    );
}

#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn a_record_is_one_secret_of_the_record_codec_text() {
    require_keyring();
    let service = unique_service("roundtrip");
    let key = StoreKey::new("https://api.chatapp.online me@example.com 1");
    let _cleanup = Cleanup::native(&service, &[&key]);
    let store = KeyringStore::try_new(service.clone()).unwrap_or_else(|e| panic!("{e}"));
    let saved = record("one", vec![1_700_000_000, 1_700_000_100]);
    store.save(&key, &saved).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.load(&key).ok(), Some(Some(saved.clone())));

    // The pair and the ledger are one secret, the record codec's JSON, under
    // (service, account = the key's text).
    let raw = raw_secret(&service, &key).unwrap_or_else(|| panic!("no secret stored"));
    let json: serde_json::Value =
        serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("the secret is not JSON: {e}"));
    assert!(json.get("version").is_some(), "{json}");
    #[cfg(feature = "testing")]
    {
        use chatapp_session::testing::{decode_record, encode_record};
        assert_eq!(
            raw,
            encode_record(&saved, "test", "here").unwrap().as_bytes()
        );
        assert_eq!(decode_record(&raw, "t", "here").ok(), Some(saved));
    }
    assert_eq!(store.service(), service);
}

#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn overwrite_replaces_the_record() {
    require_keyring();
    let service = unique_service("overwrite");
    let key = StoreKey::new("k");
    let _cleanup = Cleanup::native(&service, &[&key]);
    let store = KeyringStore::new(service.clone());
    store
        .save(&key, &record("first", vec![1]))
        .unwrap_or_else(|e| panic!("{e}"));
    let second = record("second", vec![1, 2]);
    {
        let mut guard = store.lock(&key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(guard.load().ok(), Some(Some(record("first", vec![1]))));
        guard.save(&second).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            guard.load().ok(),
            Some(Some(second.clone())),
            "the guard re-reads"
        );
    }
    assert_eq!(store.load(&key).ok(), Some(Some(second)));
    // Still exactly one item: an overwrite must not add a second credential. (The search
    // attributes are the Secret Service's; the other stores key an item by service and
    // account alone, so they cannot hold two.)
    #[cfg(target_os = "linux")]
    let matches = keyring_core::Entry::search_in_store(
        &native_credential_store(),
        &[("service", service.as_str()), ("username", "k")]
            .into_iter()
            .collect(),
    )
    .unwrap_or_else(|e| panic!("search: {e}"));
    #[cfg(target_os = "linux")]
    assert_eq!(matches.len(), 1);
}

/// Beside the conformance suite's keys: two services never see each other's records, and
/// two keys have lock files of their own.
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn services_are_isolated_and_keys_lock_apart() {
    require_keyring();
    let service = unique_service("isolated");
    let other_service = unique_service("isolated-other");
    let a = StoreKey::for_account("https://api.chatapp.online", "a@example.com", "1");
    let b = StoreKey::for_account("https://api.chatapp.online", "b@example.com", "1");
    let _cleanup = Cleanup::native(&service, &[&a]);
    let _cleanup_other = Cleanup::native(&other_service, &[&a]);
    let store = KeyringStore::new(service.clone());
    let other = KeyringStore::new(other_service);
    store
        .save(&a, &record("a", vec![1]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other.load(&a).ok(), Some(None));
    other
        .save(&a, &record("other", vec![3]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.load(&a).ok(), Some(Some(record("a", vec![1]))));
    assert_eq!(other.load(&a).ok(), Some(Some(record("other", vec![3]))));
    assert_ne!(store.lock_path(&a).ok(), store.lock_path(&b).ok());
}

#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn eight_threads_of_read_modify_write_lose_nothing() {
    require_keyring();
    const THREADS: usize = 8;
    const ROUNDS: usize = 3;
    let service = unique_service("threads");
    let key = StoreKey::new("k");
    let _cleanup = Cleanup::native(&service, &[&key]);
    let store = KeyringStore::new(service.clone());
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            // Half share the instance, half open their own: the lock must hold for both.
            let store = if t % 2 == 0 {
                store.clone()
            } else {
                KeyringStore::new(service.clone())
            };
            let key = key.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..ROUNDS {
                    let mut guard = store.lock(&key).unwrap_or_else(|e| panic!("lock: {e}"));
                    let mut makes = match guard.load() {
                        Ok(Some(r)) => r.makes,
                        Ok(None) => Vec::new(),
                        Err(e) => panic!("load: {e}"),
                    };
                    makes.push(t as i64);
                    guard
                        .save(&record(&format!("thread-{t}"), makes))
                        .unwrap_or_else(|e| panic!("save: {e}"));
                }
            })
        })
        .collect();
    for handle in handles {
        if handle.join().is_err() {
            panic!("a writer thread failed");
        }
    }
    let last = match store.load(&key) {
        Ok(Some(r)) => r,
        other => panic!("expected a record, got {other:?}"),
    };
    // One complete record: every increment is there and the pair is one writer's whole pair.
    assert_eq!(
        last.makes.len(),
        THREADS * ROUNDS,
        "lost updates: {:?}",
        last.makes
    );
    let writer = last.makes[THREADS * ROUNDS - 1];
    assert_eq!(last.pair, Some(pair(&format!("thread-{writer}"))));
    for t in 0..THREADS as i64 {
        assert_eq!(last.makes.iter().filter(|&&m| m == t).count(), ROUNDS);
    }
}

#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn the_lock_excludes_a_second_holder_until_released() {
    require_keyring();
    let service = unique_service("lock-thread");
    let key = StoreKey::new("k");
    let store = KeyringStore::new(service.clone());
    let guard = store.lock(&key).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::channel();
    for other in [store.clone(), KeyringStore::new(service.clone())] {
        let key = key.clone();
        let tx = tx.clone();
        thread::spawn(move || {
            let second = other.lock(&key).unwrap_or_else(|e| panic!("{e}"));
            let _ = tx.send(Instant::now());
            drop(second);
        });
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "a second holder got the lock while the first held it"
    );
    let released = Instant::now();
    drop(guard);
    for _ in 0..2 {
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("the lock was not handed over after release"));
        assert!(got >= released);
    }
}

#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn the_lock_excludes_another_process() {
    require_keyring();
    let service = unique_service("lock-process");
    let key = StoreKey::new("k");
    let mut holder = child::KillOnDrop(
        child("hold-lock", &service, &key)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}")),
    );
    wait_for_line(&mut holder.0, "@@locked");
    let seen_locked = Instant::now();
    let store = KeyringStore::new(service.clone());
    let (seen, waited) = within(Duration::from_secs(20), "lock after the child", move || {
        let seen = store.lock(&key).and_then(|mut guard| guard.load());
        (seen, seen_locked.elapsed())
    });
    // The child saves its mark at the end of its hold (1 s): a lock taken any earlier
    // would not see it (whatever the scheduler does to either process).
    assert_eq!(
        seen.unwrap_or_else(|e| panic!("{e}")),
        Some(holder_mark()),
        "the lock was taken after {waited:?}, while another process held it"
    );
    let status = holder.0.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "child: {status}");
}

#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn a_killed_holders_lock_does_not_block() {
    require_keyring();
    let service = unique_service("lock-killed");
    let key = StoreKey::new("k");
    let mut holder = child::KillOnDrop(
        child("hold-lock-forever", &service, &key)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}")),
    );
    wait_for_line(&mut holder.0, "@@locked");
    let store = KeyringStore::new(service.clone());
    {
        let store = store.clone();
        let key = key.clone();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(store.lock(&key).map(|_| ()).is_ok());
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "the lock was taken while the child held it"
        );
        holder.0.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}")); // SIGKILL on Unix
        let _ = holder.0.wait();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).ok(), Some(true));
    }
    within(Duration::from_secs(10), "lock after the kill", move || {
        store
            .lock(&key)
            .map(|_| ())
            .unwrap_or_else(|e| panic!("{e}"))
    });
}

#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn the_lock_file_is_private_and_holds_no_secret() {
    require_keyring();
    let service = unique_service("lockfile");
    let key = StoreKey::new("https://api.chatapp.online me@example.com 1");
    let _cleanup = Cleanup::native(&service, &[&key]);
    let store = KeyringStore::new(service.clone());
    store
        .save(&key, &record("file", vec![1]))
        .unwrap_or_else(|e| panic!("{e}"));
    let path = store.lock_path(&key).unwrap_or_else(|e| panic!("{e}"));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(
        name.starts_with(&format!("chatapp-session-keyring-{service}-")) && name.ends_with(".lock"),
        "{name}"
    );
    // In the user's home directory from the user database, whatever the environment says.
    assert!(
        path.parent()
            .is_some_and(|dir| dir.ends_with(".cache/chatapp-session")),
        "{}",
        path.display()
    );
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        assert!(!path.starts_with(&runtime), "{}", path.display());
    }
    assert!(
        !path.starts_with(std::env::temp_dir()),
        "{}",
        path.display()
    );
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(meta.len(), 0, "the lock file holds nothing");
}

#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn a_foreign_secret_is_corrupt_and_left_untouched() {
    require_keyring();
    let service = unique_service("foreign");
    let keys = [
        StoreKey::new("not json"),
        StoreKey::new("other json"),
        StoreKey::new("newer"),
    ];
    let _cleanup = Cleanup::native(&service, &keys.iter().collect::<Vec<_>>());
    let foreign = [
        "hunter2-SECRET-password",
        r#"{"token":"SECRET-abc"}"#,
        r#"{"version":7,"pair":null}"#,
    ];
    let credentials = native_credential_store();
    for (key, text) in keys.iter().zip(foreign) {
        keyring_core::Entry::new_in_store(&credentials, &service, key.as_str())
            .and_then(|e| e.set_secret(text.as_bytes()))
            .unwrap_or_else(|e| panic!("raw write: {e}"));
    }
    let store = KeyringStore::new(service.clone());
    for (i, (key, text)) in keys.iter().zip(foreign).enumerate() {
        let check = |what: &str, result: Result<(), StoreError>| match (i, result) {
            (0 | 1, Err(e @ StoreError::Corrupt { .. })) => {
                let message = e.to_string();
                assert!(
                    !message.contains("SECRET"),
                    "{what}: quoted the secret: {message}"
                );
                assert!(message.contains(&service), "{what}: {message}");
            }
            (2, Err(StoreError::UnsupportedVersion { found: 7, .. })) => {}
            (_, other) => panic!("{what} of {text:?}: {other:?}"),
        };
        check("load", store.load(key).map(|_| ()));
        let guarded = store
            .lock(key)
            .and_then(|mut guard| guard.load().map(|_| ()));
        check("guard load", guarded);
        check("clear", store.clear(key));
        assert_eq!(
            raw_secret(&service, key).as_deref(),
            Some(text.as_bytes()),
            "the foreign secret was changed"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn without_a_session_bus_the_store_is_unavailable_and_says_what_to_start() {
    require_keyring();
    let service = unique_service("nobus");
    let key = StoreKey::new("k");
    let output = child("no-bus", &service, &key)
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for what in ["try_new", "load", "save", "lock"] {
        let line = stdout
            .lines()
            .find_map(|l| l.split_once(&format!("@@{what}: ")).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no {what} line in {stdout}"));
        assert!(
            line.contains("UNAVAILABLE: keyring store is unavailable"),
            "{line}"
        );
        assert!(line.contains("no D-Bus session bus"), "{line}");
        assert!(line.contains("dbus-run-session"), "{line}");
        assert!(line.contains("gnome-keyring-daemon --unlock"), "{line}");
        assert!(!line.contains("SECRET"), "{line}");
    }
}

#[cfg(target_os = "linux")]
/// Runs the `locked-save` child on a D-Bus session bus of its own, after `setup` (a shell
/// snippet run on that bus), with a fresh keyring directory; returns what its save reported.
fn save_on_a_private_bus(setup: &str) -> String {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let runtime = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // The child's command line, run by the shell on the private bus after `setup`.
    let child = child(
        "locked-save",
        &unique_service("locked"),
        &StoreKey::new("k"),
    );
    let script = format!("{setup}\nexec \"$@\"");
    let output = Command::new("dbus-run-session")
        .args(["--", "sh", "-c", &script, "sh"])
        .arg(child.get_program())
        .args(child.get_args())
        .envs(
            child
                .get_envs()
                .filter_map(|(name, value)| Some((name, value?))),
        )
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_DATA_HOME", data.path())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("dbus-run-session: {e}"));
    stop_keyring_daemons_of(runtime.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("@@save: ").map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no save line in {stdout}"))
}

#[cfg(target_os = "linux")]
/// Stops the gnome-keyring-daemon that a private bus started, known by its unique
/// `XDG_RUNTIME_DIR` (it does not always leave with its bus).
fn stop_keyring_daemons_of(runtime: &std::path::Path) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut wanted = b"XDG_RUNTIME_DIR=".to_vec();
    wanted.extend_from_slice(runtime.as_os_str().as_encoded_bytes());
    for entry in procs.flatten() {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "gnome-keyring-d" {
            continue;
        }
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        if environ
            .split(|&b| b == 0)
            .any(|var| var == wanted.as_slice())
        {
            let _ = Command::new("kill")
                .arg(entry.file_name())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn a_missing_collection_is_unavailable_and_says_to_unlock() {
    require_keyring();
    // gnome-keyring, started on demand and never unlocked, has no login collection.
    let line = save_on_a_private_bus("");
    assert!(line.starts_with("UNAVAILABLE"), "{line}");
    assert!(line.contains("locked or missing"), "{line}");
    assert!(line.contains("gnome-keyring-daemon --unlock"), "{line}");
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn a_locked_collection_is_unavailable_and_says_to_unlock() {
    require_keyring();
    // The login collection exists and is locked again; nobody can answer the unlock prompt.
    let line = save_on_a_private_bus(
        "printf %s throwaway | gnome-keyring-daemon --unlock --components=secrets >/dev/null
        for _ in $(seq 100); do
            dbus-send --session --print-reply --dest=org.freedesktop.secrets \
                /org/freedesktop/secrets org.freedesktop.Secret.Service.Lock \
                array:objpath:/org/freedesktop/secrets/collection/login >/dev/null 2>&1 && break
            sleep 0.1
        done",
    );
    assert!(line.starts_with("UNAVAILABLE"), "{line}");
    assert!(line.contains("locked or missing"), "{line}");
    assert!(line.contains("gnome-keyring-daemon --unlock"), "{line}");
}

/// The crate's store conformance suite, on the platform's keyring. Each `KeyringStore`
/// opened is a new connection: "reopen" is a fresh instance of the same service.
#[cfg(feature = "testing")]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn conformance_suite_on_the_platform_keyring() {
    require_keyring();
    let service = unique_service("conformance");
    let open = || KeyringStore::new(service.clone());
    chatapp_session::store::conformance::run_all(&open, true);
    lock_unless_checks(&open);
}

/// The conformance checks of `lock_unless`, on one store and on two of the same service.
#[cfg(feature = "testing")]
fn lock_unless_checks(open: &dyn Fn() -> KeyringStore) {
    use chatapp_session::store::conformance;
    conformance::lock_unless_finds_saved_record(&open());
    conformance::lock_unless_finds_saved_record_across(&open(), &open());
}

// ---------------------------------------------------------------------------------------------
// The Linux kernel keyring

/// The conformance suite on the kernel keyring (durable within the session keyring).
#[cfg(all(feature = "testing", target_os = "linux"))]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn conformance_suite_on_the_kernel_keyring() {
    require_keyring();
    let service = unique_service("conformance-kernel");
    let open = || KeyringStore::with_backend(service.clone(), KeyringBackend::LinuxKeyutils);
    chatapp_session::store::conformance::run_all(&open, true);
    lock_unless_checks(&open);
}

#[cfg(target_os = "linux")]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn kernel_keyring_round_trips_across_instances_and_processes() {
    require_keyring();
    let service = unique_service("kernel");
    let key = StoreKey::new("https://api.chatapp.online me@example.com 1");
    let other = StoreKey::new("other");
    let store = KeyringStore::with_backend(service.clone(), KeyringBackend::LinuxKeyutils);
    store.connect().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.load(&key).ok(), Some(None));
    store
        .save(&key, &record("k1", vec![1]))
        .unwrap_or_else(|e| panic!("{e}"));
    let second = record("k2", vec![1, 2, 3]);
    store.save(&key, &second).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.load(&other).ok(), Some(None));
    let reopened = KeyringStore::with_backend(service.clone(), KeyringBackend::LinuxKeyutils);
    assert_eq!(reopened.load(&key).ok(), Some(Some(second)));
    reopened.clear(&key).unwrap_or_else(|e| panic!("{e}"));
    let cleared = StoredRecord {
        pair: None,
        makes: vec![1, 2, 3],
        ..Default::default()
    };
    assert_eq!(store.load(&key).ok(), Some(Some(cleared)));
    // Nothing went to the Secret Service.
    assert_eq!(raw_secret(&service, &key), None);
    // Another process in the same session keyring sees the record.
    let output = child("kernel-load", &service, &key)
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.ends_with("@@kernel-load: makes=[1, 2, 3]")),
        "{stdout}"
    );
}

#[test]
fn a_non_persistent_keyring_core_store_is_refused() {
    // No keyring needed: the mock store lives in this process.
    let mock: Arc<keyring_core::CredentialStore> =
        keyring_core::mock::Store::new().unwrap_or_else(|e| panic!("{e}"));
    let store = KeyringStore::with_backend(unique_service("mock"), KeyringBackend::Custom(mock));
    let key = StoreKey::new("k");
    for result in [
        store.connect(),
        store.load(&key).map(|_| ()),
        store.save(&key, &record("m", vec![])),
    ] {
        match result {
            Err(e @ StoreError::Unavailable { .. }) => {
                assert!(
                    e.to_string().contains("only in this process's memory"),
                    "{e}"
                )
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}

/// Issue 9: a lock holder stopped with SIGSTOP (Ctrl-Z, a paused VM): each waiter ends with
/// `LockTimeout` within its lock timeout + 2 s.
#[cfg(unix)]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn a_stopped_lock_holder_times_out_every_waiter() {
    require_keyring();
    let service = unique_service("lock-stopped");
    let key = StoreKey::new("k");
    let mut holder = child("hold-lock-forever", &service, &key)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    wait_for_line(&mut holder, "@@locked");
    support::stopped_holder_times_out_every_waiter(holder, &key, || {
        KeyringStore::new(service.clone()).with_lock_timeout(support::STOPPED_LOCK_TIMEOUT)
    });
}

/// Issue 9: the lock file does not move with the environment. A holder whose
/// `XDG_RUNTIME_DIR`, `XDG_CACHE_HOME` and `HOME` differ from this process's (a cron job
/// beside a desktop session) still excludes this process.
#[cfg(unix)]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn processes_with_different_runtime_dirs_share_the_lock() {
    require_keyring();
    let service = unique_service("lock-env");
    let key = StoreKey::new("k");
    let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
        Some(elsewhere.path().as_os_str())
    );
    let mut holder = child::KillOnDrop(
        child("hold-lock-forever", &service, &key)
            .env("XDG_RUNTIME_DIR", elsewhere.path())
            .env("XDG_CACHE_HOME", elsewhere.path())
            .env("HOME", elsewhere.path())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}")),
    );
    wait_for_line(&mut holder.0, "@@locked");
    let store = KeyringStore::new(service.clone()).with_lock_timeout(Duration::from_millis(500));
    match store.lock(&key) {
        Err(StoreError::LockTimeout { location, .. }) => assert_eq!(
            Some(location),
            store.lock_path(&key).ok().map(|p| p.display().to_string())
        ),
        Err(e) => panic!("lock: {e}"),
        Ok(_) => {
            panic!("the lock was granted while a process with another XDG_RUNTIME_DIR held it")
        }
    }
    assert_eq!(
        std::fs::read_dir(elsewhere.path())
            .map(|d| d.count())
            .unwrap_or_default(),
        0,
        "the holder put its lock file in its XDG_RUNTIME_DIR, XDG_CACHE_HOME or HOME"
    );
    drop(holder);
    within(Duration::from_secs(10), "lock after the kill", move || {
        store
            .lock(&key)
            .map(|_| ())
            .unwrap_or_else(|e| panic!("{e}"))
    });
}
