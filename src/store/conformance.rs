//! One suite of checks that every [`TokenStore`] must pass, for this crate's backends and for
//! yours.
//!
//! Each check takes a store (or a way to open one), works under keys of its own (named after
//! the check, the process id, the time and a counter, so that real OS keyrings and shared
//! files used by several test runs do not collide) and panics with a message saying what went
//! wrong. [`run_all`] runs them all:
//!
//! ```
//! use chatapp_session::store::{conformance, MemoryStore};
//!
//! let shared = MemoryStore::new();
//! conformance::run_all(&|| shared.clone(), false);
//! ```
//!
//! Checks of corrupt or foreign stored data are backend-specific and live in each backend's
//! own tests. Compiled with the `testing` feature.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Cooldown, LockOrRecord, StoreKey, StoredRecord, TokenStore};
use crate::clock::{Clock, SystemClock};
use crate::token::{AccessToken, RefreshToken, TokenPair};

/// How long [`lock_excludes_second_holder`] keeps the lock once the second thread is waiting.
const HOLD: Duration = Duration::from_millis(300);

/// A key no other check, test run or process uses.
fn unique_key(check: &str) -> StoreKey {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    StoreKey::new(format!(
        "conformance {check} {} {} {}",
        std::process::id(),
        SystemClock.now(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A record whose every field is derived from `tag` and `n`, so that a torn or mixed record
/// is recognisable.
fn record(tag: &str, n: i64) -> StoredRecord {
    StoredRecord {
        pair: Some(TokenPair {
            access: AccessToken::new(format!("access {tag} {n}")),
            access_expires_at: 1_700_000_000 + n,
            refresh: RefreshToken::new(format!("refresh {tag} {n}")),
            refresh_expires_at: 1_700_086_400 + n,
            cabinet_user_id: n,
        }),
        makes: vec![n, n + 1],
        issued_at: Some(1_699_913_600 + n),
        server_offset: Some(n - 7),
        make_cooldown: Some(Cooldown {
            until: 1_700_003_600 + n,
            strikes: 1,
        }),
        make_in_flight_until: Some(1_700_000_035 + n),
    }
}

fn load<S: TokenStore + ?Sized>(store: &S, key: &StoreKey, check: &str) -> Option<StoredRecord> {
    match store.load(key) {
        Ok(found) => found,
        Err(e) => panic!("{check}: load({key}) failed: {e}"),
    }
}

fn save<S: TokenStore + ?Sized>(store: &S, key: &StoreKey, record: &StoredRecord, check: &str) {
    if let Err(e) = store.save(key, record) {
        panic!("{check}: save({key}) failed: {e}");
    }
}

fn clear<S: TokenStore + ?Sized>(store: &S, key: &StoreKey, check: &str) {
    if let Err(e) = store.clear(key) {
        panic!("{check}: clear({key}) failed: {e}");
    }
}

/// Removes the pair a check saved, so that no test pair lingers in a real store.
fn tidy<S: TokenStore + ?Sized>(store: &S, keys: &[&StoreKey], check: &str) {
    for key in keys {
        clear(store, key, check);
    }
}

/// A key never written loads as `Ok(None)`, and loading it creates nothing.
///
/// # Panics
/// When the store fails the check.
pub fn empty_load<S: TokenStore + ?Sized>(store: &S) {
    let key = unique_key("empty_load");
    assert_eq!(
        load(store, &key, "empty_load"),
        None,
        "empty_load: a key never written must load as None"
    );
    assert_eq!(
        load(store, &key, "empty_load"),
        None,
        "empty_load: loading must not create a record"
    );
}

/// What is saved is loaded back unchanged, by `load` and by a lock's `load`.
///
/// # Panics
/// When the store fails the check.
pub fn save_then_load<S: TokenStore + ?Sized>(store: &S) {
    let key = unique_key("save_then_load");
    let saved = record("save_then_load", 1);
    save(store, &key, &saved, "save_then_load");
    assert_eq!(
        load(store, &key, "save_then_load"),
        Some(saved.clone()),
        "save_then_load: load must return the saved record"
    );

    let no_pair = StoredRecord {
        pair: None,
        makes: vec![5, 6, 7],
        ..Default::default()
    };
    save(store, &key, &no_pair, "save_then_load");
    assert_eq!(
        load(store, &key, "save_then_load"),
        Some(no_pair),
        "save_then_load: a record without a pair must round-trip"
    );
    tidy(store, &[&key], "save_then_load");
}

/// A second save replaces the first entirely.
///
/// # Panics
/// When the store fails the check.
pub fn overwrite<S: TokenStore + ?Sized>(store: &S) {
    let key = unique_key("overwrite");
    save(store, &key, &record("overwrite", 1), "overwrite");
    let second = StoredRecord {
        makes: vec![9],
        ..record("overwrite", 2)
    };
    save(store, &key, &second, "overwrite");
    assert_eq!(
        load(store, &key, "overwrite"),
        Some(second),
        "overwrite: the second save must replace the first (pair and ledger)"
    );
    tidy(store, &[&key], "overwrite");
}

/// `clear` removes the pair and keeps the make ledger; clearing twice, or clearing a key never
/// written, is not an error.
///
/// # Panics
/// When the store fails the check.
pub fn clear_is_idempotent_and_keeps_ledger<S: TokenStore + ?Sized>(store: &S) {
    const CHECK: &str = "clear_is_idempotent_and_keeps_ledger";
    let key = unique_key(CHECK);
    let saved = record(CHECK, 3);
    save(store, &key, &saved, CHECK);
    clear(store, &key, CHECK);
    let after = load(store, &key, CHECK);
    assert_eq!(
        after.as_ref().map(|r| r.pair.is_none()),
        Some(true),
        "{CHECK}: clear must remove the pair and keep the record"
    );
    assert_eq!(
        after.as_ref().map(|r| &r.makes),
        Some(&saved.makes),
        "{CHECK}: clear must keep the make ledger"
    );
    assert_eq!(
        after.map(|r| (r.make_cooldown, r.server_offset)),
        Some((saved.make_cooldown, saved.server_offset)),
        "{CHECK}: clear must keep the 429 cooldown and the server clock offset"
    );
    clear(store, &key, CHECK);
    assert_eq!(
        load(store, &key, CHECK).map(|r| r.makes),
        Some(saved.makes),
        "{CHECK}: a second clear must change nothing"
    );

    let absent = unique_key(CHECK);
    clear(store, &absent, CHECK);
    assert!(
        load(store, &absent, CHECK).is_none_or(|r| r.pair.is_none()),
        "{CHECK}: clearing an absent key must not create a pair"
    );
}

/// Records under different keys are independent: saving or clearing one leaves the others.
///
/// # Panics
/// When the store fails the check.
pub fn keys_isolated<S: TokenStore + ?Sized>(store: &S) {
    const CHECK: &str = "keys_isolated";
    let a = unique_key(CHECK);
    let b = unique_key(CHECK);
    let (ra, rb) = (record("keys_isolated a", 1), record("keys_isolated b", 2));
    save(store, &a, &ra, CHECK);
    assert_eq!(
        load(store, &b, CHECK),
        None,
        "{CHECK}: saving one key must not create another"
    );
    save(store, &b, &rb, CHECK);
    assert_eq!(
        load(store, &a, CHECK),
        Some(ra.clone()),
        "{CHECK}: saving key b changed key a"
    );
    assert_eq!(load(store, &b, CHECK), Some(rb.clone()));
    clear(store, &a, CHECK);
    assert_eq!(
        load(store, &b, CHECK),
        Some(rb),
        "{CHECK}: clearing key a changed key b"
    );
    assert_eq!(
        load(store, &a, CHECK).and_then(|r| r.pair),
        None,
        "{CHECK}: clear(a) did not clear a"
    );
    tidy(store, &[&b], CHECK);
}

/// What one store saved, a store opened afresh on the same storage loads; a clear survives
/// too. For durable stores only.
///
/// # Panics
/// When the store fails the check.
pub fn survives_reopen<S: TokenStore>(open: &dyn Fn() -> S) {
    const CHECK: &str = "survives_reopen";
    let key = unique_key(CHECK);
    let saved = record(CHECK, 4);
    {
        let first = open();
        save(&first, &key, &saved, CHECK);
    }
    let second = open();
    assert_eq!(
        load(&second, &key, CHECK),
        Some(saved.clone()),
        "{CHECK}: a reopened store must load what was saved before"
    );
    clear(&second, &key, CHECK);
    drop(second);
    let third = open();
    assert_eq!(
        load(&third, &key, CHECK),
        Some(StoredRecord {
            pair: None,
            issued_at: None,
            ..saved
        }),
        "{CHECK}: a clear must survive reopening too"
    );
}

/// 8 threads save 20 records each, every thread under a key of its own and under one key they
/// all share, loading the shared key between saves. Every load, during and after, is one
/// complete record that some thread wrote under that key; afterwards each thread's own key
/// holds its last record and the shared key holds the last record of one of the threads.
///
/// # Panics
/// When the store fails the check.
pub fn concurrent_saves<S: TokenStore + ?Sized>(store: &S) {
    const CHECK: &str = "concurrent_saves";
    const THREADS: i64 = 8;
    const SAVES: i64 = 20;
    // Thread t's i-th record under a key of the given kind ("own" or "shared").
    let numbered = |kind: &str, t: i64, i: i64| record(&format!("{CHECK} {kind}"), t * 1000 + i);
    // Whether `r` is, whole, a record some thread wrote under a key of that kind.
    let written = |r: &StoredRecord, kind: &str| {
        r.makes.first().is_some_and(|&n| {
            let (t, i) = (n / 1000, n % 1000);
            (0..THREADS).contains(&t) && (0..SAVES).contains(&i) && *r == numbered(kind, t, i)
        })
    };
    let shared = unique_key(CHECK);
    let own: Vec<StoreKey> = (0..THREADS).map(|_| unique_key(CHECK)).collect();

    thread::scope(|scope| {
        for (t, key) in (0..THREADS).zip(&own) {
            let shared = &shared;
            scope.spawn(move || {
                for i in 0..SAVES {
                    save(store, key, &numbered("own", t, i), CHECK);
                    save(store, shared, &numbered("shared", t, i), CHECK);
                    if let Some(seen) = load(store, shared, CHECK) {
                        assert!(
                            written(&seen, "shared"),
                            "{CHECK}: a load during concurrent saves returned a record no thread wrote (torn, mixed or from another key)"
                        );
                    }
                }
            });
        }
    });

    for (t, key) in (0..THREADS).zip(&own) {
        assert_eq!(
            load(store, key, CHECK),
            Some(numbered("own", t, SAVES - 1)),
            "{CHECK}: thread {t}'s own key must hold its last save"
        );
    }
    match load(store, &shared, CHECK) {
        Some(r) => {
            assert!(
                written(&r, "shared"),
                "{CHECK}: the shared key holds a record no thread wrote (torn, mixed or from another key)"
            );
            assert_eq!(
                r.makes.first().map(|n| n % 1000),
                Some(SAVES - 1),
                "{CHECK}: the shared key must hold the last save of some thread"
            );
        }
        None => panic!("{CHECK}: the shared key lost its record"),
    }
    let mut keys: Vec<&StoreKey> = own.iter().collect();
    keys.push(&shared);
    tidy(store, &keys, CHECK);
}

/// While one thread holds `lock(key)`, another thread's `lock(key)` does not return; it
/// returns after the first guard is dropped, and then sees what the first holder saved.
///
/// # Panics
/// When the store fails the check.
pub fn lock_excludes_second_holder<S: TokenStore + ?Sized>(store: &S) {
    const CHECK: &str = "lock_excludes_second_holder";
    let key = unique_key(CHECK);
    let first_saved = record(CHECK, 1);
    // Set by the first holder just before it drops its guard.
    let released = AtomicBool::new(false);
    let (b_waiting_tx, b_waiting_rx) = mpsc::channel::<Instant>();
    let (a_locked_tx, a_locked_rx) = mpsc::channel::<()>();

    let (released_at, b_acquired_at, b_saw_release, b_loaded) = thread::scope(|scope| {
        let key = &key;
        let released = &released;
        let first_saved = &first_saved;
        let a = scope.spawn(move || {
            let mut guard = match store.lock(key) {
                Ok(guard) => guard,
                Err(e) => panic!("{CHECK}: the first lock({key}) failed: {e}"),
            };
            let _ = a_locked_tx.send(());
            // Wait until the second thread is about to call lock, then give it time to block.
            let b_started = b_waiting_rx.recv_timeout(Duration::from_secs(30));
            assert!(
                b_started.is_ok(),
                "{CHECK}: the second thread never started"
            );
            thread::sleep(HOLD);
            if let Err(e) = guard.save(first_saved) {
                panic!("{CHECK}: save under the first lock failed: {e}");
            }
            released.store(true, Ordering::SeqCst);
            let released_at = Instant::now();
            drop(guard);
            released_at
        });
        let b = scope.spawn(move || {
            assert!(
                a_locked_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
                "{CHECK}: the first thread never took the lock"
            );
            let _ = b_waiting_tx.send(Instant::now());
            let mut guard = match store.lock(key) {
                Ok(guard) => guard,
                Err(e) => panic!("{CHECK}: the second lock({key}) failed: {e}"),
            };
            let acquired_at = Instant::now();
            let saw_release = released.load(Ordering::SeqCst);
            let loaded = match guard.load() {
                Ok(found) => found,
                Err(e) => panic!("{CHECK}: load under the second lock failed: {e}"),
            };
            (acquired_at, saw_release, loaded)
        });
        let released_at = match a.join() {
            Ok(at) => at,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let (acquired_at, saw_release, loaded) = match b.join() {
            Ok(b) => b,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (released_at, acquired_at, saw_release, loaded)
    });

    assert!(
        b_saw_release,
        "{CHECK}: the second lock() returned while the first guard was still held"
    );
    assert!(
        b_acquired_at >= released_at,
        "{CHECK}: the second lock() returned before the first guard was dropped"
    );
    assert_eq!(
        b_loaded,
        Some(first_saved),
        "{CHECK}: the second holder must see what the first holder saved"
    );
    tidy(store, &[&key], CHECK);
}

/// While one thread holds `lock(key)` and saves a record under it, another thread's
/// [`lock_unless`](TokenStore::lock_unless), whose check accepts only that record, returns it
/// ([`LockOrRecord::Found`]) while the first thread still holds the lock.
///
/// For a store that implements `lock_unless` (every store of this crate does): the default,
/// which only waits for the lock, fails it. Not part of [`run_all`].
///
/// # Panics
/// When the store fails the check.
pub fn lock_unless_finds_saved_record<S: TokenStore + ?Sized>(store: &S) {
    const CHECK: &str = "lock_unless_finds_saved_record";
    assert!(
        lock_unless_attempt(store, store, CHECK),
        "{CHECK}: lock_unless waited for the lock instead of returning the record saved meanwhile"
    );
}

/// [`lock_unless_finds_saved_record`] with the holder and the waiter on two stores opened on
/// the same storage, as two processes would be. A store whose lock ends with each save
/// (SQLite, PostgreSQL) is free once the holder saved, and a waiter that polls may take the
/// lock in the instant between its last look and the save, and then see the record under it,
/// which is correct too. So the check is made up to three times and passes when the waiter
/// found the record without the lock at least once; every attempt must end in one of the two
/// ways.
///
/// # Panics
/// When the stores fail the check.
pub fn lock_unless_finds_saved_record_across<H, W>(holder: &H, waiter: &W)
where
    H: TokenStore + ?Sized,
    W: TokenStore + ?Sized,
{
    const CHECK: &str = "lock_unless_finds_saved_record_across";
    assert!(
        (0..3).any(|_| lock_unless_attempt(holder, waiter, CHECK)),
        "{CHECK}: lock_unless waited for the lock instead of returning the record saved meanwhile, 3 times"
    );
}

/// One attempt of the `lock_unless` checks: whether the waiter found the record without the
/// lock. Panics when it ends any other way than those two.
fn lock_unless_attempt<H, W>(holder: &H, waiter: &W, check: &str) -> bool
where
    H: TokenStore + ?Sized,
    W: TokenStore + ?Sized,
{
    let key = unique_key(check);
    let fresh = record(check, 2);
    save(holder, &key, &record(check, 1), check);
    let asked = AtomicUsize::new(0);
    let (locked_tx, locked_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (released_at, returned_at, outcome) = thread::scope(|scope| {
        let (key, fresh, asked) = (&key, &fresh, &asked);
        let h = scope.spawn(move || {
            let mut guard = match holder.lock(key) {
                Ok(guard) => guard,
                Err(e) => panic!("{check}: the holder's lock({key}) failed: {e}"),
            };
            let _ = locked_tx.send(());
            // Until the waiter has looked at the record once, and a little more, so that it is
            // back to waiting when the record changes.
            let start = Instant::now();
            while asked.load(Ordering::SeqCst) == 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{check}: the waiter never looked at the stored record while it waited"
                );
                thread::sleep(Duration::from_millis(1));
            }
            thread::sleep(HOLD / 3);
            if let Err(e) = guard.save(fresh) {
                panic!("{check}: the holder's save failed: {e}");
            }
            // Keep the guard until the waiter is done (a store whose lock ends with each save
            // holds nothing more across processes; taking the lock again at once would race
            // the waiter that the save has just woken).
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
            let released_at = Instant::now();
            drop(guard);
            released_at
        });
        let w = scope.spawn(move || {
            if locked_rx.recv_timeout(Duration::from_secs(30)).is_err() {
                panic!("{check}: the holder never took the lock");
            }
            let mut wanted = |found: &StoredRecord| {
                asked.fetch_add(1, Ordering::SeqCst);
                found == fresh
            };
            let outcome = match waiter.lock_unless(key, &mut wanted) {
                Ok(LockOrRecord::Found(found)) => Ok(found),
                Ok(LockOrRecord::Locked(mut guard)) => match guard.load() {
                    Ok(under_lock) => Err(under_lock),
                    Err(e) => panic!("{check}: load under the waiter's lock failed: {e}"),
                },
                Err(e) => panic!("{check}: lock_unless({key}) failed: {e}"),
            };
            let returned_at = Instant::now();
            let _ = done_tx.send(());
            (returned_at, outcome)
        });
        let (returned_at, outcome) = joined(w);
        (joined(h), returned_at, outcome)
    });
    tidy(holder, &[&key], check);
    match outcome {
        Ok(found) => {
            assert_eq!(
                found, fresh,
                "{check}: lock_unless returned a record it did not want"
            );
            assert!(
                returned_at < released_at,
                "{check}: lock_unless returned its record only after the holder let go"
            );
            true
        }
        Err(under_lock) => {
            assert_eq!(
                under_lock,
                Some(fresh),
                "{check}: the waiter took the lock, and must then see what the holder saved"
            );
            false
        }
    }
}

/// What a scoped thread returned; its panic goes on in this thread.
fn joined<T>(thread: thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A lock's `load` sees what `save` wrote; what the lock saves, `load` sees after the guard is
/// dropped; a guard dropped without saving changes nothing.
///
/// # Panics
/// When the store fails the check.
pub fn lock_then_load_sees_saved<S: TokenStore + ?Sized>(store: &S) {
    const CHECK: &str = "lock_then_load_sees_saved";
    let key = unique_key(CHECK);
    let lock = |what: &str| match store.lock(&key) {
        Ok(guard) => guard,
        Err(e) => panic!("{CHECK}: lock({key}) {what} failed: {e}"),
    };

    let mut guard = lock("on an empty key");
    assert!(
        matches!(guard.load(), Ok(None)),
        "{CHECK}: a lock's load of a key never written must be Ok(None)"
    );
    drop(guard);
    assert_eq!(
        load(store, &key, CHECK),
        None,
        "{CHECK}: a guard dropped without saving must create nothing"
    );

    let first = record(CHECK, 1);
    save(store, &key, &first, CHECK);
    let mut guard = lock("after a save");
    match guard.load() {
        Ok(found) => assert_eq!(
            found,
            Some(first.clone()),
            "{CHECK}: a lock's load must see the saved record"
        ),
        Err(e) => panic!("{CHECK}: load under the lock failed: {e}"),
    }
    let second = record(CHECK, 2);
    if let Err(e) = guard.save(&second) {
        panic!("{CHECK}: save under the lock failed: {e}");
    }
    drop(guard);
    assert_eq!(
        load(store, &key, CHECK),
        Some(second.clone()),
        "{CHECK}: load must see what the lock saved"
    );

    let mut guard = lock("to drop unsaved");
    assert!(matches!(guard.load(), Ok(Some(_))));
    drop(guard);
    assert_eq!(
        load(store, &key, CHECK),
        Some(second),
        "{CHECK}: a guard dropped without saving must change nothing"
    );
    tidy(store, &[&key], CHECK);
}

/// [`keys`](TokenStore::keys) lists every key saved (still after its pair is cleared: the
/// ledger stays), sorted and once each, and no key never written.
///
/// # Panics
/// When the store fails the check.
pub fn keys_are_listed<S: TokenStore + ?Sized>(store: &S) {
    let check = "keys_are_listed";
    let (a, b, never) = (unique_key(check), unique_key(check), unique_key(check));
    save(store, &a, &record(check, 1), check);
    save(store, &b, &record(check, 2), check);
    save(store, &b, &record(check, 3), check);
    clear(store, &a, check);
    let keys = match store.keys() {
        Ok(keys) => keys,
        Err(e) => panic!("{check}: keys() failed: {e}"),
    };
    assert!(
        keys.contains(&a),
        "{check}: a key whose pair was cleared must still be listed"
    );
    assert!(keys.contains(&b), "{check}: a saved key must be listed");
    assert!(
        !keys.contains(&never),
        "{check}: a key never written must not be listed"
    );
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "{check}: keys must be sorted, each once"
    );
    tidy(store, &[&b], check);
}

/// Runs every check on a store from `open`; [`survives_reopen`] too when `durable`. Not the
/// checks of [`lock_unless`](TokenStore::lock_unless), which a store need not implement (see
/// [`lock_unless_finds_saved_record`]).
///
/// # Panics
/// When the store fails a check.
pub fn run_all<S: TokenStore>(open: &dyn Fn() -> S, durable: bool) {
    let store = open();
    empty_load(&store);
    save_then_load(&store);
    overwrite(&store);
    clear_is_idempotent_and_keeps_ledger(&store);
    keys_isolated(&store);
    keys_are_listed(&store);
    concurrent_saves(&store);
    lock_excludes_second_holder(&store);
    lock_then_load_sees_saved(&store);
    drop(store);
    if durable {
        survives_reopen(open);
    }
}
