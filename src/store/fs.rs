//! File-system helpers shared by the stores that keep files (the file and SQLite stores, the
//! keyring store's lock files, key files): private files and directories, the refusal of
//! files other users can read, and the lock file.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::path::Path;
#[cfg(any(feature = "file", feature = "keyring"))]
use std::time::Duration;

use crate::error::StoreError;

/// A `StoreError::Io` about `path`.
pub(super) fn io_error(
    store: &'static str,
    path: &Path,
    action: &'static str,
    source: io::Error,
) -> StoreError {
    StoreError::Io {
        store,
        location: path.display().to_string(),
        action,
        source,
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates the missing directories above `path`, readable by the owner only (`0700` on Unix).
/// Directories that exist already are left as they are.
pub(super) fn create_parent_dirs(store: &'static str, path: &Path) -> Result<(), StoreError> {
    let dir = parent_dir(path);
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| io_error(store, dir, "create directory", e))
}

/// Opens `path` for reading and writing, creating it readable by the owner only (`0600` on
/// Unix) when it is missing; an existing file is neither truncated nor re-moded.
pub(super) fn open_or_create_private(store: &'static str, path: &Path) -> Result<File, StoreError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map_err(|e| io_error(store, path, "open", e))
}

/// Opens (creating it `0600`, and its missing directories `0700`) and exclusively locks the
/// lock file at `path` ([`lock_file_within`](super::wait::lock_file_within): an interrupted
/// wait is resumed), waiting at most `timeout` for another holder. The lock is held until the
/// returned file is closed; the file holds nothing and is never deleted.
///
/// # Errors
/// [`StoreError::LockTimeout`] when another holder kept it past `timeout`;
/// [`StoreError::Io`] when the file cannot be created, opened or locked.
#[cfg(any(feature = "file", feature = "keyring"))]
pub(super) fn lock_file(
    store: &'static str,
    path: &Path,
    timeout: Duration,
) -> Result<File, StoreError> {
    create_parent_dirs(store, path)?;
    let file = open_or_create_private(store, path)?;
    match super::wait::lock_file_within(&file, timeout) {
        Ok(true) => Ok(file),
        Ok(false) => Err(StoreError::LockTimeout {
            store,
            location: path.display().to_string(),
            waited: timeout,
        }),
        Err(e) => Err(io_error(store, path, "lock", e)),
    }
}

/// Refuses a file that its group or other users may read, write or execute.
///
/// # Errors
/// [`StoreError::InsecurePermissions`], whose message says how to fix it.
pub(super) fn check_private(meta: &Metadata, path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::InsecurePermissions {
                location: path.display().to_string(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (meta, path);
    Ok(())
}

/// Makes `path`, when it exists, readable by the owner only (`0600` on Unix).
#[cfg(feature = "sqlite")]
pub(super) fn make_private_if_exists(store: &'static str, path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(store, path, "chmod 600", e)),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (store, path);
        Ok(())
    }
}

/// Flushes a directory's entries (a rename in it) to disk. A no-op where directories cannot
/// be opened as files.
#[cfg(feature = "file")]
pub(super) fn sync_dir(store: &'static str, dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(store, dir, "sync directory", e))
    }
    #[cfg(not(unix))]
    {
        let _ = (store, dir);
        Ok(())
    }
}
