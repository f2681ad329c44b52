//! The OS keyring: Secret Service on Linux, the Keychain on macOS, the Credential Manager on
//! Windows (through `keyring-core` and its per-platform stores), or the Linux kernel keyring.
//!
//! One store key is one secret: the record JSON of its pair
//! and make ledger, kept under (service, account = the key's text). The cross-process lock is
//! an advisory lock on a small file that holds no secret (see [`KeyringStore::lock_path`]),
//! waited for at most the store's lock timeout.

#[cfg(not(unix))]
use std::env;
use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyring_core::api::CredentialPersistence;
use keyring_core::{CredentialStore, Entry, Error as KeyringError};
use parking_lot::Mutex;
use zeroize::{Zeroize, Zeroizing};

use super::fs::lock_file;
use super::wait::DEFAULT_LOCK_TIMEOUT;
use super::{decode_record, encode_record, StoreKey, StoreLock, StoredRecord, TokenStore};
use crate::error::StoreError;

const STORE: &str = "keyring";

/// The account read by [`KeyringStore::connect`] to check that the keyring answers. It is
/// only ever read, never written.
const PROBE_ACCOUNT: &str = "chatapp-session availability probe";

/// The account holding the index of the store keys saved under the service (the keyrings
/// cannot all list their entries): `{"version":1,"keys":[...]}`, no secret. A key is added
/// before its first record is written, under the index's own lock file, so that the index
/// always names every stored key; [`TokenStore::keys`] leaves out keys whose entry is gone.
const INDEX_ACCOUNT: &str = "chatapp-session index";

/// Which credential store a [`KeyringStore`] keeps its secrets in.
#[derive(Clone)]
#[non_exhaustive]
pub enum KeyringBackend {
    /// The platform's own store: the Secret Service (`org.freedesktop.secrets` on the D-Bus
    /// session bus: GNOME Keyring, KeePassXC, KWallet...) on Linux, the user's login
    /// Keychain on macOS, the Credential Manager on Windows. Other platforms have none:
    /// connecting fails with [`StoreError::Unavailable`].
    Native,
    /// The Linux kernel's key retention service (keyutils), in the process's session
    /// keyring. It needs no daemon, but its keys live in kernel memory only: they are lost at
    /// reboot (and when the session keyring goes away, e.g. at logout), so a stored pair may
    /// have to be made again. Processes must share a session keyring to share records.
    #[cfg(target_os = "linux")]
    LinuxKeyutils,
    /// Any other `keyring-core` 1.x credential store, e.g. one configured by the application.
    /// A store whose persistence is only per entry or per process (such as
    /// `keyring_core::mock::Store`) is refused with [`StoreError::Unavailable`].
    Custom(Arc<CredentialStore>),
}

impl fmt::Debug for KeyringBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringBackend::Native => f.write_str("Native"),
            #[cfg(target_os = "linux")]
            KeyringBackend::LinuxKeyutils => f.write_str("LinuxKeyutils"),
            KeyringBackend::Custom(store) => {
                f.debug_tuple("Custom").field(&store.vendor()).finish()
            }
        }
    }
}

/// Keeps records in an OS keyring, one secret per store key, under a service name of the
/// application's choosing.
///
/// Construction with [`new`](Self::new) does not touch the keyring: the connection is made
/// on first use (and made again after the keyring refused access or failed, so a restarted
/// daemon is picked up).
/// [`try_new`](Self::try_new) connects at once. The store never falls back to anything that
/// does not persist: when the keyring cannot be used, every operation fails with
/// [`StoreError::Unavailable`], whose hint says what to start or install.
///
/// [`lock`](TokenStore::lock) locks a file in the user's home directory (see
/// [`lock_path`](Self::lock_path)) and waits for another holder at most the lock timeout (30 s
/// unless [`with_lock_timeout`](Self::with_lock_timeout) says otherwise), then fails with
/// [`StoreError::LockTimeout`].
///
/// Clones share one connection.
///
/// ```no_run
/// use chatapp_session::store::{KeyringStore, StoreKey, TokenStore};
///
/// let store = KeyringStore::try_new("my-app")?;
/// let record = store.load(&StoreKey::new("https://api.chatapp.online me@example.com 123"))?;
/// # Ok::<(), chatapp_session::StoreError>(())
/// ```
#[derive(Clone)]
pub struct KeyringStore {
    inner: Arc<Inner>,
    lock_timeout: Duration,
}

struct Inner {
    service: String,
    backend: KeyringBackend,
    /// The connected credential store; `None` until first use or after it was found gone.
    store: Mutex<Option<Arc<CredentialStore>>>,
}

impl fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringStore")
            .field("service", &self.inner.service)
            .field("backend", &self.inner.backend)
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

impl KeyringStore {
    /// A store of the platform's keyring ([`KeyringBackend::Native`]) under `service`. It
    /// connects on first use.
    pub fn new(service: impl Into<String>) -> Self {
        Self::with_backend(service, KeyringBackend::Native)
    }

    /// A store of the platform's keyring under `service`, connected and checked now.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when there is no keyring to use (no D-Bus session bus, no
    /// Secret Service provider on it...), with a hint saying what to start or install;
    /// another [`StoreError`] when the keyring fails otherwise.
    pub fn try_new(service: impl Into<String>) -> Result<Self, StoreError> {
        let store = Self::new(service);
        store.connect()?;
        Ok(store)
    }

    /// A store of the given credential store under `service`. It connects on first use, or
    /// when [`connect`](Self::connect) is called.
    pub fn with_backend(service: impl Into<String>, backend: KeyringBackend) -> Self {
        KeyringStore {
            inner: Arc::new(Inner {
                service: service.into(),
                backend,
                store: Mutex::new(None),
            }),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// Connects to the credential store now, if not connected yet, and checks that it
    /// answers by reading an entry that is never written. A Secret Service collection that
    /// is locked or missing is only found out by the first [`save`](TokenStore::save), which
    /// then fails with [`StoreError::Unavailable`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the credential store cannot be used here, or is one
    /// that does not persist; another [`StoreError`] when it fails otherwise.
    pub fn connect(&self) -> Result<(), StoreError> {
        let probe = StoreKey::new(PROBE_ACCOUNT);
        let entry = self.entry(&probe)?;
        match entry.get_secret() {
            Ok(mut secret) => {
                secret.zeroize();
                Ok(())
            }
            Err(KeyringError::NoEntry | KeyringError::Ambiguous(_)) => Ok(()),
            Err(e) => Err(self.failure(e, "check the keyring", &probe)),
        }
    }

    /// The service name the secrets are kept under.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The credential store in use.
    pub fn backend(&self) -> &KeyringBackend {
        &self.inner.backend
    }

    /// The lock file of `key`: `chatapp-session-keyring-<service>-<hash of key>.lock` in
    /// `.cache/chatapp-session/` of the user's home directory as the user database (not the
    /// environment) gives it, so that every process of the user (a cron job, a desktop
    /// session, a service with another `$XDG_RUNTIME_DIR` or `$HOME`) locks the same file.
    /// Created `0600` in a `0700` directory on first use; it holds no secret.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the user has no home directory.
    pub fn lock_path(&self, key: &StoreKey) -> Result<PathBuf, StoreError> {
        Ok(lock_dir()?.join(lock_file_name(&self.inner.service, key)))
    }

    store_accessors!(with_lock_timeout);
    store_accessors!(lock_timeout);

    /// The index's lock file, beside the keys' lock files.
    fn index_lock_path(&self) -> Result<PathBuf, StoreError> {
        Ok(lock_dir()?.join(format!(
            "chatapp-session-keyring-{}-index.lock",
            clean_service(&self.inner.service)
        )))
    }

    /// The keys named in the index (`entry`), as stored.
    fn read_index(&self, entry: &Entry) -> Result<Vec<String>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Index {
            keys: Vec<String>,
        }
        let index = StoreKey::new(INDEX_ACCOUNT);
        match entry.get_secret() {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                serde_json::from_slice::<Index>(&bytes)
                    .map(|i| i.keys)
                    .map_err(|e| StoreError::Corrupt {
                        store: STORE,
                        location: self.location(&index),
                        detail: format!(
                            "the index of keys cannot be read ({})",
                            super::record::describe(&e)
                        ),
                    })
            }
            Err(KeyringError::NoEntry) => Ok(Vec::new()),
            Err(e) => Err(self.failure(e, "read the index of keys", &index)),
        }
    }

    /// Adds `key` to the index unless it is there, under the index's lock.
    fn add_to_index(&self, key: &StoreKey) -> Result<(), StoreError> {
        // Bounded like the key's lock.
        let _held = lock_file(STORE, &self.index_lock_path()?, self.lock_timeout)?;
        let index = StoreKey::new(INDEX_ACCOUNT);
        let entry = self.entry(&index)?;
        let mut keys = self.read_index(&entry)?;
        if keys.iter().any(|k| k == key.as_str()) {
            return Ok(());
        }
        keys.push(key.as_str().to_owned());
        keys.sort();
        let text = serde_json::json!({"version": 1, "keys": keys}).to_string();
        entry
            .set_secret(text.as_bytes())
            .map_err(|e| self.failure(e, "write the index of keys", &index))
    }

    /// The secret under `account`; when there is none, the one `create` makes, kept there
    /// first. Under this store's lock for `account`, so that two processes never both create.
    #[cfg(feature = "encryption")]
    pub(crate) fn secret_or_create(
        &self,
        account: &str,
        create: impl FnOnce() -> Result<Zeroizing<String>, StoreError>,
    ) -> Result<Zeroizing<String>, StoreError> {
        let key = StoreKey::new(account);
        let _held = self.lock(&key)?;
        let entry = self.entry(&key)?;
        match entry.get_password() {
            Ok(secret) => Ok(Zeroizing::new(secret)),
            Err(KeyringError::NoEntry) => {
                let secret = create()?;
                entry
                    .set_password(&secret)
                    .map_err(|e| self.failure(e, "write the secret", &key))?;
                Ok(secret)
            }
            Err(e) => Err(self.failure(e, "read the secret", &key)),
        }
    }

    /// The connected credential store, connecting first if needed.
    fn credential_store(&self) -> Result<Arc<CredentialStore>, StoreError> {
        let mut slot = self.inner.store.lock();
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        let store = connect_backend(&self.inner.backend)?;
        *slot = Some(store.clone());
        Ok(store)
    }

    fn entry(&self, key: &StoreKey) -> Result<Entry, StoreError> {
        let store = self.credential_store()?;
        Entry::new_in_store(&store, &self.inner.service, key.as_str())
            .map_err(|e| self.failure(e, "open the entry", key))
    }

    fn location(&self, key: &StoreKey) -> String {
        format!(
            "service {:?} account {:?}",
            self.inner.service,
            key.as_str()
        )
    }

    fn read(&self, entry: &Entry, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
        match entry.get_secret() {
            Ok(secret) => {
                let secret = Zeroizing::new(secret);
                decode_record(&secret, STORE, &self.location(key)).map(Some)
            }
            Err(KeyringError::NoEntry) => Ok(None),
            Err(e) => Err(self.failure(e, "read the secret", key)),
        }
    }

    fn write(
        &self,
        entry: &Entry,
        key: &StoreKey,
        record: &StoredRecord,
    ) -> Result<(), StoreError> {
        let text = encode_record(record, STORE, &self.location(key))?;
        entry
            .set_secret(text.as_bytes())
            .map_err(|e| self.failure(e, "write the secret", key))
    }

    /// Turns a keyring error into a [`StoreError`] that quotes no secret. When the keyring
    /// refused access or failed, the connection is dropped so that the next call connects
    /// anew.
    fn failure(&self, e: KeyringError, action: &'static str, key: &StoreKey) -> StoreError {
        let location = self.location(key);
        // After these, the next call connects anew: a restarted daemon or bus is picked up.
        let reconnect = matches!(
            e,
            KeyringError::NoStorageAccess(_) | KeyringError::PlatformFailure(_)
        );
        let backend = |message: String, source: Option<PlatformError>| StoreError::Backend {
            store: STORE,
            location: location.clone(),
            source: Box::new(Failure {
                action,
                message,
                source,
            }),
        };
        let error = match e {
            KeyringError::NoStorageAccess(inner) => StoreError::Unavailable {
                store: STORE,
                hint: access_hint(&self.inner.backend, &inner),
            },
            KeyringError::PlatformFailure(inner) => match gone_hint(&self.inner.backend, &inner) {
                Some(hint) => StoreError::Unavailable { store: STORE, hint },
                None => backend("the credential store failed".to_owned(), Some(inner)),
            },
            KeyringError::BadEncoding(mut bytes) => {
                bytes.zeroize();
                StoreError::Corrupt {
                    store: STORE,
                    location,
                    detail: "the stored secret is not UTF-8".to_owned(),
                }
            }
            KeyringError::BadDataFormat(mut bytes, _) => {
                bytes.zeroize();
                StoreError::Corrupt {
                    store: STORE,
                    location,
                    detail: "the credential store cannot decode the stored secret".to_owned(),
                }
            }
            KeyringError::Ambiguous(entries) => backend(
                format!(
                    "{} credentials match this service and account; remove all but one of them",
                    entries.len()
                ),
                None,
            ),
            KeyringError::TooLong(what, limit) => backend(
                format!("the {what} is longer than the platform's limit of {limit}"),
                None,
            ),
            KeyringError::Invalid(what, why) => backend(format!("{what} is invalid: {why}"), None),
            KeyringError::BadStoreFormat(why) => {
                backend(format!("the store's data is malformed: {why}"), None)
            }
            KeyringError::NotSupportedByStore(what) => backend(
                format!("not supported by the credential store: {what}"),
                None,
            ),
            KeyringError::NoEntry => backend("no such credential".to_owned(), None),
            // The variants above that carry stored bytes are handled; the display of the
            // others never holds a secret.
            other => backend(other.to_string(), None),
        };
        if reconnect {
            *self.inner.store.lock() = None;
        }
        error
    }
}

impl TokenStore for KeyringStore {
    fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
        let entry = self.entry(key)?;
        self.read(&entry, key)
    }

    fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
        let listed = self.read_index(&self.entry(&StoreKey::new(INDEX_ACCOUNT))?)?;
        let mut keys = Vec::with_capacity(listed.len());
        for name in listed {
            let key = StoreKey::new(name);
            match self.entry(&key)?.get_secret() {
                Ok(mut secret) => {
                    secret.zeroize();
                    keys.push(key);
                }
                Err(KeyringError::NoEntry) => {}
                Err(e) => return Err(self.failure(e, "read the secret", &key)),
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError> {
        let entry = self.entry(key)?;
        let file = lock_file(STORE, &self.lock_path(key)?, self.lock_timeout)?;
        Ok(Box::new(KeyringLock {
            store: self,
            key: key.clone(),
            entry,
            _file: file,
        }))
    }
}

/// Holds the lock file of one key; the operating system releases it when the file is closed
/// (on drop, or when the process dies).
struct KeyringLock<'a> {
    store: &'a KeyringStore,
    key: StoreKey,
    entry: Entry,
    _file: File,
}

impl StoreLock for KeyringLock<'_> {
    fn load(&mut self) -> Result<Option<StoredRecord>, StoreError> {
        self.store.read(&self.entry, &self.key)
    }

    fn save(&mut self, record: &StoredRecord) -> Result<(), StoreError> {
        // The index first: it may name a key whose entry is missing, never the reverse.
        self.store.add_to_index(&self.key)?;
        self.store.write(&self.entry, &self.key, record)
    }
}

type PlatformError = Box<dyn std::error::Error + Send + Sync>;

/// The source of a [`StoreError::Backend`] from the keyring: what was being done, what went
/// wrong, and the platform's own error when there is one.
#[derive(Debug)]
struct Failure {
    action: &'static str,
    message: String,
    source: Option<PlatformError>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {}: {}", self.action, self.message)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(source) => Some(source.as_ref()),
            None => None,
        }
    }
}

#[cfg(target_os = "linux")]
const SECRET_SERVICE_PROVIDERS: &str = "gnome-keyring-daemon --unlock (package gnome-keyring) \
     or KeePassXC with its Secret Service integration providing org.freedesktop.secrets";

/// Builds the credential store of `backend` and refuses one that does not persist.
fn connect_backend(backend: &KeyringBackend) -> Result<Arc<CredentialStore>, StoreError> {
    let store: Arc<CredentialStore> =
        match backend {
            KeyringBackend::Native => native_store()?,
            #[cfg(target_os = "linux")]
            KeyringBackend::LinuxKeyutils => {
                let store: Arc<CredentialStore> = linux_keyutils_keyring_store::Store::new()
                    .map_err(|e| StoreError::Unavailable {
                        store: STORE,
                        hint: format!("the kernel keyring cannot be used ({e})"),
                    })?;
                store
            }
            KeyringBackend::Custom(store) => store.clone(),
        };
    match store.persistence() {
        CredentialPersistence::EntryOnly | CredentialPersistence::ProcessOnly => {
            Err(StoreError::Unavailable {
                store: STORE,
                hint: format!(
                    "the credential store \"{}\" keeps secrets only in this process's memory, so a \
                     token pair would be lost; use a persistent keyring (Secret Service, Keychain, \
                     Credential Manager) or the file store",
                    store.vendor()
                ),
            })
        }
        _ => Ok(store),
    }
}

#[cfg(target_os = "linux")]
fn native_store() -> Result<Arc<CredentialStore>, StoreError> {
    match zbus_secret_service_keyring_store::Store::new() {
        Ok(store) => Ok(store),
        Err(e) => {
            let hint = if session_bus_reachable() {
                format!(
                    "no Secret Service provider answers on the D-Bus session bus ({e}): start \
                     {SECRET_SERVICE_PROVIDERS}"
                )
            } else {
                no_bus_hint(&e)
            };
            Err(StoreError::Unavailable { store: STORE, hint })
        }
    }
}

#[cfg(target_os = "linux")]
fn no_bus_hint(detail: &dyn fmt::Display) -> String {
    format!(
        "no D-Bus session bus ({detail}): run inside a desktop session or under \
         `dbus-run-session`, with {SECRET_SERVICE_PROVIDERS}"
    )
}

/// Whether a connection to the D-Bus session bus can be made (whatever is on it).
#[cfg(target_os = "linux")]
fn session_bus_reachable() -> bool {
    zbus::blocking::Connection::session().is_ok()
}

#[cfg(target_os = "macos")]
fn native_store() -> Result<Arc<CredentialStore>, StoreError> {
    match apple_native_keyring_store::keychain::Store::new() {
        Ok(store) => Ok(store),
        Err(e) => Err(StoreError::Unavailable {
            store: STORE,
            hint: format!("the macOS Keychain cannot be opened ({e}): log in to a user session"),
        }),
    }
}

#[cfg(target_os = "windows")]
fn native_store() -> Result<Arc<CredentialStore>, StoreError> {
    match windows_native_keyring_store::Store::new() {
        Ok(store) => Ok(store),
        Err(e) => Err(StoreError::Unavailable {
            store: STORE,
            hint: format!(
                "the Windows Credential Manager cannot be opened ({e}): run as a user with a \
                 loaded profile"
            ),
        }),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn native_store() -> Result<Arc<CredentialStore>, StoreError> {
    Err(StoreError::Unavailable {
        store: STORE,
        hint: "this platform has no OS keyring supported by chatapp-session: use the file or \
               sqlite store, or a keyring-core store through KeyringBackend::Custom"
            .to_owned(),
    })
}

/// The hint for a store that refused access (`NoStorageAccess`).
fn access_hint(backend: &KeyringBackend, inner: &PlatformError) -> String {
    match backend {
        #[cfg(target_os = "linux")]
        KeyringBackend::Native => format!(
            "the Secret Service refused access ({inner}): its default collection is locked or \
             missing; unlock it (log in to the desktop, `gnome-keyring-daemon --unlock` with the \
             password on stdin, or unlock the KeePassXC database)"
        ),
        #[cfg(target_os = "macos")]
        KeyringBackend::Native => {
            format!("the macOS Keychain refused access ({inner}): unlock the login keychain")
        }
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        KeyringBackend::Native => format!("the OS keyring refused access ({inner})"),
        #[cfg(target_os = "linux")]
        KeyringBackend::LinuxKeyutils => format!(
            "the kernel keyring refused access ({inner}): the process needs a session keyring of \
             its own; run it under `keyctl session - <command>` (package keyutils) or in a \
             login session set up by pam_keyinit"
        ),
        KeyringBackend::Custom(store) => format!(
            "the credential store \"{}\" refused access ({inner})",
            store.vendor()
        ),
    }
}

/// The hint when a platform failure means that the store went away (the session bus stopped
/// after connecting), `None` for other failures.
fn gone_hint(backend: &KeyringBackend, inner: &PlatformError) -> Option<String> {
    #[cfg(target_os = "linux")]
    if matches!(backend, KeyringBackend::Native) && !session_bus_reachable() {
        return Some(no_bus_hint(inner));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (backend, inner);
    None
}

/// Where lock files are kept; see [`KeyringStore::lock_path`]. Every process of the user must
/// choose the same directory whatever its environment (a cron job, a desktop session, a
/// service), or exclusion would be lost: so it is found from the user database, never from
/// `$XDG_RUNTIME_DIR`, `$XDG_CACHE_HOME` or `$HOME`, and never in a shared temporary directory.
#[cfg(unix)]
fn lock_dir() -> Result<PathBuf, StoreError> {
    let uid = nix::unistd::Uid::current();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) if user.dir.is_absolute() => {
            Ok(user.dir.join(".cache").join("chatapp-session"))
        }
        Ok(_) => Err(StoreError::Unavailable {
            store: STORE,
            hint: format!(
                "user {uid} has no home directory in the user database, so the keyring store \
                 has no per-user place for its lock file: give the user a home directory, or \
                 use the file or sqlite store"
            ),
        }),
        Err(e) => Err(StoreError::Unavailable {
            store: STORE,
            hint: format!(
                "the user database cannot be read ({e}), so the keyring store has no per-user \
                 place for its lock file"
            ),
        }),
    }
}

/// Where lock files are kept on platforms without a user database: the user's profile
/// directory.
#[cfg(not(unix))]
fn lock_dir() -> Result<PathBuf, StoreError> {
    match env::home_dir().filter(|dir| dir.is_absolute()) {
        Some(home) => Ok(home.join(".cache").join("chatapp-session")),
        None => Err(StoreError::Unavailable {
            store: STORE,
            hint: "the user has no home directory, so the keyring store has no per-user place \
                   for its lock file: use the file or sqlite store"
                .to_owned(),
        }),
    }
}

/// `chatapp-session-keyring-<service, sanitised>-<FNV-1a of the key>.lock`.
fn lock_file_name(service: &str, key: &StoreKey) -> String {
    format!(
        "chatapp-session-keyring-{}-{:016x}.lock",
        clean_service(service),
        fnv1a(key.as_str().as_bytes())
    )
}

/// The service name as a safe part of a file name.
fn clean_service(service: &str) -> String {
    let mut clean: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() {
        clean.push('_');
    }
    clean
}

/// A hash that every build and process computes alike (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The most a Windows Credential Manager secret holds: `CRED_MAX_CREDENTIAL_BLOB_SIZE`, 5 x
/// 512 bytes. The store writes the record's JSON through `set_secret`, which
/// windows-native-keyring-store stores as the bytes given (UTF-8, one byte per character of
/// our ASCII JSON; only `set_password` would widen it to UTF-16), and refuses a longer one
/// with `TooLong` before calling Windows.
#[cfg(test)]
const WINDOWS_SECRET_LIMIT: usize = 5 * 512;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Cooldown;
    use crate::token::{AccessToken, RefreshToken, TokenPair};

    /// The largest record the session writes: a full ledger (`make_limit` entries, 100 by
    /// default), a 429 cooldown, the server clock offset, an in-flight make mark, and a pair
    /// of two 128-character tokens (ChatApp's are 60 to 64). Every number the server chooses
    /// (end times, cabinet user id) and every other field takes the widest JSON an `i64` can
    /// (`-9223372036854775808`, 20 bytes); ledger entries are this machine's clock plus the
    /// offset learned from an HTTP `Date` (which stops at the year 9999), so at most 12
    /// digits; they are spread so that no two are alike.
    fn largest_record(ledger: usize) -> StoredRecord {
        let token = |c: char| "$2y$10$".chars().chain(std::iter::repeat(c)).take(128);
        StoredRecord {
            pair: Some(TokenPair {
                access: AccessToken::new(token('A').collect::<String>()),
                access_expires_at: i64::MIN,
                refresh: RefreshToken::new(token('R').collect::<String>()),
                refresh_expires_at: i64::MIN,
                cabinet_user_id: i64::MIN,
            }),
            makes: (0..ledger as i64)
                .map(|i| 253_402_300_799 - i * 7)
                .collect(),
            issued_at: Some(i64::MIN),
            server_offset: Some(i64::MIN),
            make_cooldown: Some(Cooldown {
                until: i64::MIN,
                strikes: u32::MAX,
            }),
            make_in_flight_until: Some(i64::MIN),
        }
    }

    #[test]
    fn the_largest_record_fits_a_windows_credential_with_room_to_spare() {
        let ledger = usize::try_from(crate::policy::DEFAULT_MAKE_LIMIT).unwrap();
        let text = encode_record(&largest_record(ledger), "test", "here").unwrap();
        assert!(text.is_ascii(), "one byte per character");
        eprintln!(
            "the largest record: {} of {WINDOWS_SECRET_LIMIT} bytes",
            text.len()
        );
        // 1 917 bytes today: a fifth of the limit (512 bytes) stays free for fields to come.
        assert!(
            text.len() + 512 <= WINDOWS_SECRET_LIMIT,
            "{} bytes: too close to the {WINDOWS_SECRET_LIMIT} byte limit",
            text.len()
        );
        // The README says a make limit up to 140 fits (13 bytes per ledger entry).
        assert!(
            encode_record(&largest_record(140), "test", "here")
                .unwrap()
                .len()
                <= WINDOWS_SECRET_LIMIT
        );
    }

    #[test]
    fn lock_file_names_are_safe_and_stable() {
        let key = StoreKey::new("https://api.chatapp.online me@example.com 123");
        let name = lock_file_name("my app/../x", &key);
        assert!(
            name.starts_with("chatapp-session-keyring-my_app_.._x-"),
            "{name}"
        );
        assert!(name.ends_with(".lock"), "{name}");
        assert!(!name.contains('/'), "{name}");
        // FNV-1a is fixed: a change would split processes of two builds onto two lock files.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(
            lock_file_name("s", &StoreKey::new("a")),
            lock_file_name("s", &StoreKey::new("b"))
        );
        assert_eq!(
            lock_file_name("", &key).len(),
            lock_file_name("_", &key).len()
        );
        let long = "x".repeat(500);
        assert!(lock_file_name(&long, &key).len() < 120);
    }
}
