//! Bounded lock waits: an exclusive file lock taken within a deadline, the short-step
//! back-off that every polling wait of the stores shares, so that a waiter wakes within about
//! a millisecond of the lock's release instead of sleeping in long steps, and the wait of
//! [`TokenStore::lock_unless`](super::TokenStore::lock_unless), which also looks at the stored
//! record between its tries.

use std::time::{Duration, Instant};

use super::{LockOrRecord, StoreLock, StoredRecord};
use crate::error::StoreError;

/// The lock timeout of every store unless set otherwise: as long as the session's default
/// HTTP timeout, so that a waiter never gives up while the holder may still be refreshing.
#[cfg_attr(
    not(any(feature = "file", feature = "sqlite", feature = "keyring")),
    allow(dead_code)
)]
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The first pause of a wait.
const FIRST_STEP: Duration = Duration::from_micros(100);

/// The longest pause of a wait: how late at most a waiter notices a released lock.
const MAX_STEP: Duration = Duration::from_millis(2);

/// Pauses of a polling wait that ends at a deadline: 0.1 ms, doubling up to 2 ms.
pub(crate) struct Backoff {
    deadline: Instant,
    step: Duration,
}

impl Backoff {
    /// A wait that may last `timeout` from now.
    pub(crate) fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Backoff {
            deadline: now
                .checked_add(timeout)
                .or_else(|| now.checked_add(MAX_TIMEOUT_FALLBACK))
                .unwrap_or(now),
            step: FIRST_STEP,
        }
    }

    /// Sleeps for the next step and returns `true`, or returns `false` at once when the
    /// deadline has passed. The last step is cut short at the deadline.
    pub(crate) fn pause(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        std::thread::sleep(self.step.min(self.deadline - now));
        self.step = (self.step * 2).min(MAX_STEP);
        true
    }
}

/// How a wait for a lock ended ([`take_or_find`]).
pub(crate) enum Waited<L> {
    /// The lock was taken.
    Taken(L),
    /// A record the caller accepted was found while waiting.
    Found(StoredRecord),
    /// Neither, within the timeout.
    TimedOut,
}

/// Tries `take` until it gives the lock, in [`Backoff`] steps for at most `timeout`; between
/// two tries, while at least `look_every` has passed since the last look, asks `look` for a
/// stored record that ends the wait (a failed look is logged and the wait goes on). The lock
/// is tried first, so an uncontended lock costs no look.
///
/// # Errors
/// Those of `take`.
pub(crate) fn take_or_find<L>(
    timeout: Duration,
    look_every: Duration,
    mut take: impl FnMut() -> Result<Option<L>, StoreError>,
    mut look: impl FnMut() -> Result<Option<StoredRecord>, StoreError>,
) -> Result<Waited<L>, StoreError> {
    let mut backoff = Backoff::new(timeout);
    let mut looked: Option<Instant> = None;
    loop {
        if let Some(lock) = take()? {
            return Ok(Waited::Taken(lock));
        }
        if !backoff.pause() {
            return Ok(Waited::TimedOut);
        }
        // Right before the next try, so that a record saved just before the holder let go is
        // seen here rather than read again under the lock.
        if looked.is_none_or(|at| at.elapsed() >= look_every) {
            looked = Some(Instant::now());
            match look() {
                Ok(Some(record)) => return Ok(Waited::Found(record)),
                Ok(None) => {}
                Err(e) => log::debug!("could not read the record while waiting for the lock: {e}"),
            }
        }
    }
}

/// [`take_or_find`] as [`TokenStore::lock_unless`](super::TokenStore::lock_unless) answers:
/// `locked` makes the guard of a lock taken; `None` when the wait ran out.
///
/// # Errors
/// Those of `take`.
pub(crate) fn lock_or_find<'a, L>(
    timeout: Duration,
    look_every: Duration,
    take: impl FnMut() -> Result<Option<L>, StoreError>,
    look: impl FnMut() -> Result<Option<StoredRecord>, StoreError>,
    locked: impl FnOnce(L) -> Box<dyn StoreLock + 'a>,
) -> Result<Option<LockOrRecord<'a>>, StoreError> {
    Ok(match take_or_find(timeout, look_every, take, look)? {
        Waited::Taken(lock) => Some(LockOrRecord::Locked(locked(lock))),
        Waited::Found(record) => Some(LockOrRecord::Found(record)),
        Waited::TimedOut => None,
    })
}

/// `record` if it is there and `wanted` accepts it: the look of a [`take_or_find`].
pub(crate) fn accepted(
    record: Option<StoredRecord>,
    wanted: &mut dyn FnMut(&StoredRecord) -> bool,
) -> Option<StoredRecord> {
    record.filter(|record| wanted(record))
}

/// Used when `now + timeout` does not fit an `Instant`: a timeout of about a century is as
/// good as none, and still a bound.
const MAX_TIMEOUT_FALLBACK: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Takes the exclusive advisory lock on `file` (`flock` on Unix, `LockFileEx` on Windows),
/// waiting at most `timeout` for another holder (in this process or another).
///
/// Returns `Ok(false)` when the lock was not granted in time.
///
/// # Errors
/// The operating system's error when the lock cannot be taken for another reason.
#[cfg(any(feature = "file", feature = "keyring"))]
pub(crate) fn lock_file_within(file: &std::fs::File, timeout: Duration) -> std::io::Result<bool> {
    let mut backoff = Backoff::new(timeout);
    loop {
        if try_lock_file(file)? {
            return Ok(true);
        }
        if !backoff.pause() {
            return Ok(false);
        }
    }
}

/// One try at the exclusive advisory lock on the file in `slot`: the file, taken out of the
/// slot, once it is locked; `Ok(None)` while another holder has the lock (or the slot is
/// empty).
///
/// # Errors
/// The operating system's error when the lock cannot be taken for another reason.
#[cfg(any(feature = "file", feature = "keyring"))]
pub(crate) fn try_lock_slot(
    slot: &mut Option<std::fs::File>,
) -> std::io::Result<Option<std::fs::File>> {
    let locked = match slot {
        Some(file) => try_lock_file(file)?,
        None => false,
    };
    Ok(if locked { slot.take() } else { None })
}

/// One try at the exclusive advisory lock on `file`: `Ok(false)` when another holder has it.
///
/// # Errors
/// The operating system's error when the lock cannot be taken for another reason.
#[cfg(any(feature = "file", feature = "keyring"))]
pub(crate) fn try_lock_file(file: &std::fs::File) -> std::io::Result<bool> {
    use std::fs::TryLockError;

    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_ends_at_its_deadline_in_short_steps() {
        // The steps: 0.1 ms doubling up to 2 ms, then 2 ms (read from the schedule, not
        // counted against the wall clock, which a loaded machine stretches).
        let mut far = Backoff::new(Duration::from_secs(60));
        let mut steps = Vec::new();
        for _ in 0..8 {
            steps.push(far.step.as_micros());
            assert!(far.pause());
        }
        assert_eq!(steps, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        // A short wait ends at its deadline, not before.
        let start = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(30));
        while backoff.pause() {}
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(!Backoff::new(Duration::ZERO).pause());
        // A huge timeout is a far deadline, not a panic.
        assert!(Backoff::new(Duration::MAX).pause());
    }

    /// The wait of `lock_unless`: a failed look does not end it, a record found does, looks
    /// come no more often than asked, and a wait that finds nothing ends at its timeout.
    #[test]
    fn a_wait_that_looks_ends_with_the_record_found_or_at_its_timeout() {
        let record = StoredRecord {
            makes: vec![42],
            ..StoredRecord::default()
        };
        let mut looks = 0;
        let found = take_or_find(
            Duration::from_secs(5),
            Duration::ZERO,
            || Ok(None::<()>),
            || {
                looks += 1;
                match looks {
                    1 => Err(StoreError::Unavailable {
                        store: "test",
                        hint: "a failed look".into(),
                    }),
                    2 => Ok(None),
                    _ => Ok(Some(record.clone())),
                }
            },
        );
        assert!(matches!(found, Ok(Waited::Found(r)) if r == record));
        assert_eq!(looks, 3);

        let (start, mut looks) = (Instant::now(), 0u32);
        let waited = take_or_find(
            Duration::from_millis(120),
            Duration::from_millis(50),
            || Ok(None::<()>),
            || {
                looks += 1;
                Ok(None)
            },
        );
        let took = start.elapsed();
        assert!(matches!(waited, Ok(Waited::TimedOut)));
        assert!(took >= Duration::from_millis(120));
        // One look at the start, then one per 50 ms at most (a loaded machine may stretch
        // the wait, and fit more looks in it).
        let most = 1 + took.as_millis() / 50;
        assert!(
            looks >= 1 && u128::from(looks) <= most,
            "{looks} looks in {took:?}, one per 50 ms"
        );

        // The lock, once free, is taken; no look is needed for it.
        let mut looks = 0;
        let taken = take_or_find(
            Duration::from_secs(5),
            Duration::ZERO,
            || Ok(Some(7)),
            || {
                looks += 1;
                Ok(None)
            },
        );
        assert!(matches!(taken, Ok(Waited::Taken(7))));
        assert_eq!(looks, 0);
    }

    #[cfg(feature = "file")]
    #[test]
    fn a_file_lock_held_elsewhere_times_out_and_is_granted_once_released() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("l");
        let open = || std::fs::File::create(&path).unwrap_or_else(|e| panic!("open: {e}"));
        let (holder, waiter) = (open(), open());
        assert!(matches!(
            lock_file_within(&holder, Duration::ZERO),
            Ok(true)
        ));
        let start = Instant::now();
        assert!(matches!(
            lock_file_within(&waiter, Duration::from_millis(50)),
            Ok(false)
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
        drop(holder);
        assert!(matches!(
            lock_file_within(&waiter, Duration::ZERO),
            Ok(true)
        ));
    }
}
