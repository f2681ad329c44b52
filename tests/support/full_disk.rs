//! A full disk: a real one ([`Tmpfs`], a small tmpfs filled to the last byte, as root on
//! Linux), and where a real one cannot be made (another user, a database server, the
//! keyring) a store wrapper whose saves fail with "no space left on device" while its switch
//! says the disk is full. Loads and locks go through.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use chatapp_session::store::{StoreKey, StoreLock, StoredRecord, TokenStore};
use chatapp_session::StoreError;

/// Tells whether the disk is full right now.
type Switch = Arc<dyn Fn() -> bool + Send + Sync>;

/// `inner`, with saves that fail while the switch is on.
pub struct FullDisk<S> {
    inner: S,
    full: Switch,
}

impl<S: TokenStore> FullDisk<S> {
    /// Wraps `inner`; `full` is asked before every save.
    pub fn new(inner: S, full: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        FullDisk {
            inner,
            full: Arc::new(full),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for FullDisk<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FullDisk")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The error a save gets on the full disk.
pub fn no_space() -> StoreError {
    StoreError::Io {
        store: "full-disk",
        location: "test wrapper".into(),
        action: "write",
        source: std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device"),
    }
}

struct FullDiskLock<'a> {
    inner: Box<dyn StoreLock + 'a>,
    full: &'a Switch,
}

impl StoreLock for FullDiskLock<'_> {
    fn load(&mut self) -> Result<Option<StoredRecord>, StoreError> {
        self.inner.load()
    }
    fn save(&mut self, record: &StoredRecord) -> Result<(), StoreError> {
        if (self.full)() {
            return Err(no_space());
        }
        self.inner.save(record)
    }
}

impl<S: TokenStore> TokenStore for FullDisk<S> {
    fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
        self.inner.load(key)
    }
    fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError> {
        Ok(Box::new(FullDiskLock {
            inner: self.inner.lock(key)?,
            full: &self.full,
        }))
    }
    fn keys(&self) -> Result<Vec<StoreKey>, StoreError> {
        self.inner.keys()
    }
}

/// A small tmpfs mounted on a directory (as root, on Linux): [`fill`](Self::fill) writes a
/// filler file until `ENOSPC`, [`empty`](Self::empty) removes it. Unmounted when dropped.
pub struct Tmpfs {
    mount: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `64k`, `32m`) on `dir`, which
    /// should be empty; `None` where that is not possible (not root, not Linux, mount failed).
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root || !cfg!(target_os = "linux") {
            return None;
        }
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs {
            mount: dir.to_owned(),
        })
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    /// Fills the disk to the last byte, and checks that one more byte does not fit.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.filler()).expect("the filler file");
        for block in [64 * 1024, 512, 1] {
            let bytes = vec![0u8; block];
            while f.write_all(&bytes).is_ok() {}
        }
        let _ = f.sync_all();
        let probe = self.mount.join("probe");
        let written = std::fs::write(&probe, b"x");
        let _ = std::fs::remove_file(&probe);
        assert!(
            written.is_err(),
            "the tmpfs still takes a write once filled"
        );
    }

    /// Room again.
    pub fn empty(&self) {
        std::fs::remove_file(self.filler()).expect("removing the filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}
