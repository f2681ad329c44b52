//! A store in one JSON file, replaced atomically on every save, with an advisory lock file
//! beside it for the cross-process single flight.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::fs::{check_private, io_error, lock_file, parent_dir, sync_dir};
use super::record::describe;
use super::schema::check_json_version;
use super::wait::DEFAULT_LOCK_TIMEOUT;
use super::{record_location, RecordCodec, StoreKey, StoreLock, StoredRecord, TokenStore};
use crate::error::StoreError;

const STORE: &str = "file";

/// The container version this build writes and the newest it reads.
const FILE_VERSION: u64 = 1;

/// Keeps records in one JSON file:
/// `{"version":1,"entries":{"<store key>": <record>, ...}}`, each record in the form of
/// the record JSON form (`{"version":…,"pair":…,"makes":[…]}`, the same in every store), or
/// sealed in an encrypted envelope when the store was given an encryption
/// (`with_encryption`, feature `encryption`).
///
/// - The file is created readable by its owner only (`0600`), its missing parent directories
///   `0700`. A store file that its group or other users may access is refused with
///   [`StoreError::InsecurePermissions`].
/// - Every save rewrites the whole file atomically (a temporary file in the same directory,
///   flushed, renamed over the store, then the directory flushed): a reader sees the old file or
///   the new one, never a mix, and a crash leaves one of the two. Other keys' entries are kept
///   as they were. A process killed in the middle of a save may also leave its temporary file,
///   `.<file name>.XXXXXX.tmp` (`0600`), beside the store; the next save removes it.
/// - A file that cannot be read ([`StoreError::Corrupt`]) or was written by a newer build
///   ([`StoreError::UnsupportedVersion`]) is never overwritten: saves are refused until it is
///   repaired or removed.
/// - [`lock`](TokenStore::lock) takes an exclusive advisory lock (`flock` on Unix, `LockFileEx`
///   on Windows) on `<file name>.lock` beside the store, shared by every key of the store. It
///   excludes other threads and other processes alike, and the operating system releases it
///   when a process dies. The lock file is created `0600`, holds nothing and is never deleted.
/// - The wait for another holder is bounded by the lock timeout (30 s unless
///   [`with_lock_timeout`](Self::with_lock_timeout) says otherwise), then
///   [`StoreError::LockTimeout`]. A waiter polls in steps of at most 2 ms, so it takes the
///   lock within about 2 ms of its release.
///
/// Clones share the path only and are cheap; nothing is touched until the store is used.
#[derive(Clone)]
pub struct FileStore {
    path: Arc<Path>,
    codec: RecordCodec,
    lock_timeout: Duration,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("encrypted", &self.codec.is_encrypting())
            .field("lock_timeout", &self.lock_timeout)
            .finish()
    }
}

impl FileStore {
    /// A store kept in the file at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore {
            path: Arc::from(path.into()),
            codec: RecordCodec::default(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    store_accessors!(with_lock_timeout);
    store_accessors!(lock_timeout);
    store_accessors!(encryption);

    /// The store file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<file name>.lock` beside the store file.
    fn lock_path(&self) -> Result<PathBuf, StoreError> {
        match self.path.file_name() {
            Some(name) => {
                let mut lock_name = name.to_os_string();
                lock_name.push(".lock");
                Ok(self.path.with_file_name(lock_name))
            }
            None => Err(io_error(
                STORE,
                &self.path,
                "lock",
                io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
            )),
        }
    }

    /// The store file's bytes, or `None` when it does not exist.
    fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(STORE, &self.path, "open", e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| io_error(STORE, &self.path, "stat", e))?;
        check_private(&meta, &self.path)?;
        // Room for the whole file up front, so that no secret is left behind in a buffer that
        // was outgrown.
        let size = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
        let mut bytes = Zeroizing::new(Vec::with_capacity(size));
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error(STORE, &self.path, "read", e))?;
        Ok(Some(bytes))
    }

    /// The record under `key` in the file as it is now.
    fn load_now(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
        let Some(bytes) = self.read()? else {
            return Ok(None);
        };
        let entries = parse(&bytes, &self.path)?;
        entries
            .get(key.as_str())
            .map(|raw| {
                self.codec.decode(
                    raw.get().as_bytes(),
                    key,
                    STORE,
                    &record_location(self.path.display(), key),
                )
            })
            .transpose()
    }

    /// Replaces the entry under `key` and keeps every other entry as it is. Refuses when the
    /// file, or the entry being replaced, cannot be read.
    fn save_now(&self, key: &StoreKey, record: &StoredRecord) -> Result<(), StoreError> {
        let bytes = self.read()?;
        let mut entries = match &bytes {
            Some(bytes) => parse(bytes, &self.path)?,
            None => BTreeMap::new(),
        };
        if let Some(old) = entries.get(key.as_str()) {
            // Never replace a record that this build cannot read.
            self.codec.decode(
                old.get().as_bytes(),
                key,
                STORE,
                &record_location(self.path.display(), key),
            )?;
        }
        let encoded = self.codec.encode(
            key,
            record,
            STORE,
            &record_location(self.path.display(), key),
        )?;
        let raw: &RawValue = serde_json::from_str(encoded.as_str())
            .map_err(|e| io_error(STORE, &self.path, "encode", e.into()))?;
        entries.insert(key.as_str().to_owned(), raw);
        self.write(&entries)
    }

    /// Writes the container atomically: temporary file, fsync, rename, fsync of the directory.
    fn write(&self, entries: &BTreeMap<String, &RawValue>) -> Result<(), StoreError> {
        // Room for the whole text up front (keys may grow sixfold when escaped), so that no
        // secret is left behind in a buffer that was outgrown.
        let size = entries
            .iter()
            .fold(64, |n, (key, raw)| n + key.len() * 6 + raw.get().len() + 8);
        let mut text = Zeroizing::new(Vec::with_capacity(size));
        serde_json::to_writer(
            &mut *text,
            &ContainerOut {
                version: FILE_VERSION,
                entries,
            },
        )
        .map_err(|e| io_error(STORE, &self.path, "encode", e.into()))?;

        let dir = parent_dir(&self.path);
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(self.path.file_name().unwrap_or_default());
        prefix.push(".");
        remove_interrupted_saves(dir, &prefix);
        let mut builder = tempfile::Builder::new();
        builder
            .prefix(&prefix)
            .rand_bytes(TEMP_RANDOM_CHARS)
            .suffix(TEMP_SUFFIX);
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
        let mut tmp = builder
            .tempfile_in(dir)
            .map_err(|e| io_error(STORE, dir, "create a temporary file", e))?;
        tmp.write_all(&text)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| io_error(STORE, tmp.path(), "write", e))?;
        // On failure the temporary file is removed when the error drops it.
        tmp.persist(&self.path)
            .map_err(|e| io_error(STORE, &self.path, "replace", e.error))?;
        sync_dir(STORE, dir)
    }
}

impl TokenStore for FileStore {
    fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
        self.load_now(key)
    }

    fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
        let Some(bytes) = self.read()? else {
            return Ok(Vec::new());
        };
        // A BTreeMap: sorted already.
        Ok(parse(&bytes, &self.path)?
            .into_keys()
            .map(StoreKey::new)
            .collect())
    }

    fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError> {
        let file = lock_file(STORE, &self.lock_path()?, self.lock_timeout)?;
        Ok(Box::new(FileLock {
            store: self,
            key: key.clone(),
            _held: file,
        }))
    }
}

/// Holds the lock file locked; closing it (on drop) releases the lock.
struct FileLock<'a> {
    store: &'a FileStore,
    key: StoreKey,
    _held: File,
}

impl StoreLock for FileLock<'_> {
    fn load(&mut self) -> Result<Option<StoredRecord>, StoreError> {
        self.store.load_now(&self.key)
    }

    fn save(&mut self, record: &StoredRecord) -> Result<(), StoreError> {
        self.store.save_now(&self.key, record)
    }
}

/// Random characters in a temporary file's name, `.<file name>.XXXXXX.tmp`.
const TEMP_RANDOM_CHARS: usize = 6;
const TEMP_SUFFIX: &str = ".tmp";

/// Removes the temporary files that saves of this store killed before their rename left in
/// `dir`: `<prefix>` (`.<file name>.`), exactly [`TEMP_RANDOM_CHARS`] letters or digits, then
/// `.tmp`, and a regular file. Runs under the store's lock, so no save of this store is
/// writing one now; the name pattern cannot match another store's temporary files (theirs
/// have a different file name, hence a dot or more characters in that place). Failures are
/// only logged: a leftover must not stop a save.
fn remove_interrupted_saves(dir: &Path, prefix: &std::ffi::OsStr) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = prefix.as_encoded_bytes();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name
            .as_encoded_bytes()
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX.as_bytes()))
            .is_some_and(|random| {
                random.len() == TEMP_RANDOM_CHARS && random.iter().all(u8::is_ascii_alphanumeric)
            });
        if !ours || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!("removed {}, left by an interrupted save", path.display()),
            Err(e) => log::warn!(
                "could not remove {}, left by an interrupted save: {e}",
                path.display()
            ),
        }
    }
}

#[derive(Deserialize)]
struct ContainerIn<'a> {
    #[serde(borrow)]
    entries: BTreeMap<String, &'a RawValue>,
}

#[derive(Serialize)]
struct ContainerOut<'a> {
    version: u64,
    entries: &'a BTreeMap<String, &'a RawValue>,
}

/// The entries of a store file, each record's text as it is in the file.
fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<BTreeMap<String, &'a RawValue>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        store: STORE,
        location: path.display().to_string(),
        detail,
    };
    check_json_version(
        bytes,
        STORE,
        "file",
        FILE_VERSION,
        &path.display().to_string(),
    )?;
    let container: ContainerIn<'a> =
        serde_json::from_slice(bytes).map_err(|e| corrupt(describe(&e)))?;
    Ok(container.entries)
}
