//! Issue 9: the quota and the pair survive what real machines do. Each case ran against the
//! first release and broke its promises; the server's own counters say what was spent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatapp_session::store::{MemoryStore, StoreKey, StoredRecord, TokenStore};
use chatapp_session::testing::ManualClock;
use chatapp_session::testing::{FakeChatApp, Fault, Route};
use chatapp_session::{Error, Session};

const KEY: &str = "reliability";
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// A memory store whose saves fail (as on a full disk) while `full` is set.
fn full_disk() -> (Arc<support::FullDisk<MemoryStore>>, Arc<AtomicBool>) {
    full_disk_over(MemoryStore::new())
}

/// `store`, whose saves fail (as on a full disk) while `full` is set.
fn full_disk_over<S: TokenStore>(store: S) -> (Arc<support::FullDisk<S>>, Arc<AtomicBool>) {
    let full = Arc::new(AtomicBool::new(false));
    let switch = Arc::clone(&full);
    let store = support::FullDisk::new(store, move || switch.load(Ordering::SeqCst));
    (Arc::new(store), full)
}

fn session_on(server: &FakeChatApp, store: Arc<dyn TokenStore>, clock: &ManualClock) -> Session {
    Session::builder()
        .credentials(server.credentials())
        .store(store)
        .store_key(KEY)
        .base_url(server.base_url())
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn stored(store: &dyn TokenStore) -> StoredRecord {
    store.load(&StoreKey::new(KEY)).unwrap().unwrap_or_default()
}

/// Waits until `store` holds the in-flight mark of a tokens.make on its way.
fn wait_for_a_mark_in(store: &dyn TokenStore) {
    assert!(
        support::wait_until(Duration::from_secs(30), || {
            stored(store).make_in_flight_until.is_some()
        }),
        "the make's in-flight mark is saved"
    );
}

/// The disk fills while tokens.make is on its way: the pair is used from memory, and once the
/// disk has room the next call saves it and clears the make's in-flight mark, which the failed
/// save had left in the store (else other processes would wait on it until it expires).
#[test]
fn a_make_whose_final_save_fails_clears_its_mark_at_the_next_save() {
    let server = FakeChatApp::start().unwrap();
    let (store, full) = full_disk();
    let s = session_on(&server, store.clone(), &server.clock());
    server.inject(Route::Make, Fault::Delay(Duration::from_secs(3)));
    let making = {
        let s = s.clone();
        std::thread::spawn(move || s.access_token())
    };
    // The write-ahead entry and the mark are saved; then the disk fills.
    wait_for_a_mark_in(store.as_ref());
    full.store(true, Ordering::SeqCst);
    let token = making.join().unwrap().expect("the pair from memory");
    assert!(s.status().unwrap().unsaved);
    assert!(stored(store.as_ref()).make_in_flight_until.is_some());
    full.store(false, Ordering::SeqCst);
    assert_eq!(s.access_token().unwrap(), token);
    let record = stored(store.as_ref());
    assert_eq!(record.pair.map(|p| p.access), Some(token));
    assert_eq!(
        record.make_in_flight_until, None,
        "the ended make's mark is cleared"
    );
    assert_eq!(record.makes.len(), 1);
}

#[test]
fn a_full_disk_after_the_server_rotated_loses_no_pair_and_spends_no_make() {
    let server = FakeChatApp::start().unwrap();
    let (store, full) = full_disk();
    let s = session_on(&server, store.clone(), &server.clock());
    s.request("GET", "/v1/licenses", None).unwrap();
    full.store(true, Ordering::SeqCst);
    server.advance(DAY + 61);
    for call in 0..5 {
        s.request("GET", "/v1/licenses", None)
            .unwrap_or_else(|e| panic!("call {call}: {e}"));
    }
    support::assert_counters!(server, makes: 1, refreshes: 1, refreshes_rejected: 0);
    let status = s.status().unwrap();
    assert!(status.unsaved, "{status:?}");
    assert_eq!(
        stored(store.as_ref()).makes.len(),
        1,
        "the login's make is in the ledger"
    );
    // The disk has room again: the next call saves the pair in use.
    full.store(false, Ordering::SeqCst);
    s.request("GET", "/v1/licenses", None).unwrap();
    assert!(!s.status().unwrap().unsaved);
    let record = stored(store.as_ref());
    let saved = record.pair.expect("the pair was saved");
    assert_eq!(Some(&saved.access), s.access_token().ok().as_ref());
    assert_eq!(record.makes.len(), 1);
    assert_eq!(server.counters().refreshes, 1);
}

#[test]
fn no_make_is_sent_when_its_ledger_entry_cannot_be_written() {
    let server = FakeChatApp::start().unwrap();
    let (store, full) = full_disk();
    full.store(true, Ordering::SeqCst);
    let s = session_on(&server, store.clone(), &server.clock());
    for _ in 0..5 {
        assert!(matches!(s.access_token(), Err(Error::Storage(_))));
    }
    assert_eq!(server.counters().makes, 0);
}

/// A small tmpfs filled to the last byte: a real ENOSPC for the file store. Needs root (CI
/// runs as root); elsewhere it fails and says so rather than pass untested.
#[cfg(target_os = "linux")]
#[test]
fn a_real_full_tmpfs_keeps_the_pair_and_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let disk = support::Tmpfs::mount(&mount, "64k").expect(
        "this test mounts a tmpfs and needs root: run the suite as root (CI does), or skip it \
         with `--skip a_real_full_tmpfs`",
    );

    let server = FakeChatApp::start().unwrap();
    let store: Arc<dyn TokenStore> =
        Arc::new(chatapp_session::store::FileStore::new(mount.join("s.json")));
    let s = session_on(&server, store.clone(), &server.clock());
    s.request("GET", "/v1/licenses", None).unwrap();
    disk.fill();
    server.advance(DAY + 61);
    for call in 0..5 {
        s.request("GET", "/v1/licenses", None)
            .unwrap_or_else(|e| panic!("call {call} on a full disk: {e}"));
    }
    support::assert_counters!(server, makes: 1, refreshes: 1, refreshes_rejected: 0);
    assert!(s.status().unwrap().unsaved);
    disk.empty();
    s.request("GET", "/v1/licenses", None).unwrap();
    assert!(!s.status().unwrap().unsaved);
    let record = stored(store.as_ref());
    assert_eq!(
        record.pair.map(|p| p.access),
        s.access_token().ok(),
        "the pair in use is the one saved"
    );
    assert_eq!(record.makes.len(), 1);
}

/// `calls` requests, the server's clock moving `step` seconds before each; the counters.
fn calls(server: &FakeChatApp, s: &Session, calls: usize, step: i64) -> (u64, u64, u64) {
    for call in 0..calls {
        server.advance(step);
        s.request("GET", "/v1/licenses", None)
            .unwrap_or_else(|e| panic!("call {call}: {e}"));
    }
    let c = server.counters();
    (c.makes, c.refreshes, c.refreshes_rejected)
}

#[test]
fn a_local_clock_a_day_or_two_weeks_ahead_causes_no_storm() {
    for ahead in [25 * HOUR, 15 * DAY] {
        let server = FakeChatApp::start().unwrap();
        let local = ManualClock::new(server.now() + ahead);
        let s = session_on(&server, Arc::new(MemoryStore::new()), &local);
        assert_eq!(calls(&server, &s, 10, 60), (1, 0, 0), "{ahead} s ahead");
        // The access token's real end: one refresh, on the server's word or clock.
        server.advance(DAY);
        local.advance(DAY);
        assert_eq!(calls(&server, &s, 10, 60), (1, 1, 0), "{ahead} s ahead");
    }
}

#[test]
fn a_clock_ahead_with_no_date_to_learn_from_uses_the_pair_until_refused() {
    let server = FakeChatApp::builder().send_date(false).start().unwrap();
    let local = ManualClock::new(server.now() + 25 * HOUR);
    let s = session_on(&server, Arc::new(MemoryStore::new()), &local);
    assert_eq!(calls(&server, &s, 10, 60), (1, 0, 0));
    server.advance(DAY);
    assert_eq!(calls(&server, &s, 10, 60), (1, 1, 0));
    assert_eq!(server.counters().invalid_token_replies, 1);
}

#[test]
fn end_times_sent_as_lifetimes_cost_one_refresh_a_day() {
    let server = FakeChatApp::builder()
        .end_times_as_lifetimes(true)
        .start()
        .unwrap();
    let s = session_on(&server, Arc::new(MemoryStore::new()), &server.clock());
    // 120 calls over five days: one make, one refresh per real access lifetime.
    let (makes, refreshes, rejected) = calls(&server, &s, 120, HOUR);
    assert_eq!((makes, rejected), (1, 0));
    assert!((4..=5).contains(&refreshes), "{refreshes} refreshes");
}

/// The clock stepped back an hour, then forward two days and corrected, with and without a
/// `Date` to learn the server's time from. Until a reply says otherwise nothing tells the
/// session that its clock jumped forward, so one make may go out then; it is written down,
/// and no entry is dropped, so once the clock is corrected the quota is as full as it was.
#[test]
fn a_clock_that_jumps_frees_no_make() {
    for send_date in [true, false] {
        a_clock_that_jumps(send_date);
    }
}

fn a_clock_that_jumps(send_date: bool) {
    let server = FakeChatApp::builder().send_date(send_date).start().unwrap();
    let local = ManualClock::new(server.now());
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder()
        .credentials(server.credentials())
        .store(store.clone())
        .store_key(KEY)
        .base_url(server.base_url())
        .clock(local.clone())
        .make_limit(3)
        .build()
        .unwrap();
    for _ in 0..3 {
        s.login().unwrap();
    }
    // Stepped back: the entries are "from the future", and count.
    local.set(server.now() - HOUR);
    assert!(
        matches!(s.login(), Err(Error::QuotaExhausted { used: 3, .. })),
        "date {send_date}"
    );
    assert_eq!(server.counters().makes, 3);
    // Two days ahead, with nothing yet to tell the clock is wrong, one make looks allowed;
    // it is written down like any other, and the real entries are kept.
    local.set(server.now() + 2 * DAY);
    s.login().unwrap();
    assert_eq!(
        stored(store.as_ref()).makes.len(),
        3,
        "the newest 3 (the limit) are kept"
    );
    // Corrected: the same real day, the quota is as full as it was.
    local.set(server.now());
    for _ in 0..3 {
        assert!(
            matches!(s.login(), Err(Error::QuotaExhausted { .. })),
            "date {send_date}"
        );
    }
    assert_eq!(server.counters().makes, 4, "date {send_date}");
}

#[test]
fn a_server_429_on_make_is_remembered_by_every_session() {
    let server = FakeChatApp::start().unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let s = session_on(&server, store.clone(), &server.clock());
    server.inject(Route::Make, Fault::RateLimited);
    for call in 0..5 {
        match s.access_token() {
            Err(Error::QuotaExhausted {
                next_make_at,
                server: refusal,
                ..
            }) => {
                assert_eq!(next_make_at, Some(server.now() + HOUR), "call {call}");
                assert_eq!(refusal.is_some(), call == 0, "call {call}");
            }
            other => panic!("call {call}: {other:?}"),
        }
    }
    assert_eq!(server.counters().faults_served, 1);
    // Another session (another process) on the same store: nothing sent either.
    let other = session_on(&server, store.clone(), &server.clock());
    assert!(matches!(
        other.access_token(),
        Err(Error::QuotaExhausted { .. })
    ));
    assert_eq!(
        other.status().unwrap().next_make_at,
        Some(server.now() + HOUR)
    );
    assert_eq!(server.counters().faults_served, 1);
    assert_eq!(server.counters().makes, 0);
    // After the hour, one more try; another 429 doubles the pause.
    server.advance(HOUR);
    server.inject(Route::Make, Fault::RateLimited);
    match s.access_token() {
        Err(Error::QuotaExhausted { next_make_at, .. }) => {
            assert_eq!(next_make_at, Some(server.now() + 2 * HOUR))
        }
        other => panic!("{other:?}"),
    }
    server.advance(2 * HOUR);
    s.access_token().unwrap();
    assert_eq!(server.counters().makes, 1);
    assert_eq!(stored(store.as_ref()).make_cooldown, None);
}

#[test]
fn a_make_is_sent_only_after_the_server_refused_the_refresh_token() {
    // The local clock says the refresh token ended long ago; only the server knows.
    let server = FakeChatApp::start().unwrap();
    let local = ManualClock::new(server.now());
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let s = session_on(&server, store.clone(), &local);
    s.access_token().unwrap();
    let stale = server.clock();
    drop(stale);
    local.advance(20 * DAY);
    server.advance(DAY + 61);
    s.request("GET", "/v1/licenses", None).unwrap();
    support::assert_counters!(server, makes: 1, refreshes: 1, refreshes_rejected: 0);
}

#[test]
fn twelve_hour_refresh_tokens_cost_no_refresh_per_process() {
    // Each "process" is a new session on the same store, as each CLI run is.
    let server = FakeChatApp::builder()
        .refresh_lifetime(12 * HOUR)
        .start()
        .unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    for run in 0..10 {
        let s = session_on(&server, store.clone(), &server.clock());
        s.request("GET", "/v1/licenses", None)
            .unwrap_or_else(|e| panic!("run {run}: {e}"));
        server.advance(10 * 60);
    }
    support::assert_counters!(server, makes: 1, refreshes: 0, refreshes_rejected: 0);
}

#[test]
fn the_lock_is_never_needed_twice_for_one_make_across_sessions() {
    // Two sessions that share a store and both find nothing stored: one make.
    let server = FakeChatApp::builder().threads(4).start().unwrap();
    server.inject(Route::Make, Fault::Delay(Duration::from_millis(300)));
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let a = session_on(&server, store.clone(), &server.clock());
    let b = session_on(&server, store.clone(), &server.clock());
    std::thread::scope(|scope| {
        let ha = scope.spawn(|| a.access_token().map(drop));
        let hb = scope.spawn(|| b.access_token().map(drop));
        ha.join().unwrap().unwrap();
        hb.join().unwrap().unwrap();
    });
    assert_eq!(server.counters().makes, 1);
}

mod support;

#[test]
fn twelve_hour_refresh_tokens_over_ten_cli_processes() {
    let server = FakeChatApp::builder()
        .access_lifetime(6 * HOUR)
        .refresh_lifetime(12 * HOUR)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = support::Cli::file(&server, &dir.path().join("s.json"));
    for run in 0..10 {
        cli.run(&["call", "GET", "/v1/licenses"])
            .expect_code(0, &format!("run {run}"));
    }
    support::assert_counters!(server, makes: 1, refreshes: 0, refreshes_rejected: 0);
    // The access token's end: one refresh for the next ten runs, not one each.
    server.advance(6 * HOUR);
    for run in 0..10 {
        cli.run(&["call", "GET", "/v1/licenses"])
            .expect_code(0, &format!("run {run} six hours later"));
    }
    support::assert_counters!(server, makes: 1, refreshes: 1, refreshes_rejected: 0);
}

/// Found by the soak (issue 15, invariant 2): once the server has refused the stored refresh
/// token, no process sends it again. Before the fix, while no make was possible (here a 429
/// cooldown; also the quota, a full disk, no credentials) every call re-sent the dead refresh
/// token: 5 calls, 5 refused refreshes, in every process sharing the store.
#[test]
fn a_refused_refresh_token_is_not_sent_again_while_no_make_is_possible() {
    let server = FakeChatApp::start().unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let s = session_on(&server, store.clone(), &server.clock());
    s.access_token().unwrap();
    server.revoke_all();
    server.inject(Route::Make, Fault::RateLimited);
    let other = session_on(&server, store.clone(), &server.clock());
    for call in 0..5 {
        for session in [&s, &other] {
            match session.request("GET", "/v1/licenses", None) {
                Err(Error::QuotaExhausted { .. }) => {}
                other => panic!("call {call}: {other:?}"),
            }
        }
    }
    support::assert_counters!(server, refreshes_rejected: 1, makes: 1, faults_served: 1);
    assert!(!s.status().unwrap().stored, "the dead pair is still stored");
    // The cooldown over, one make and every session has the new pair.
    server.advance(HOUR);
    s.request("GET", "/v1/licenses", None).unwrap();
    other.request("GET", "/v1/licenses", None).unwrap();
    support::assert_counters!(server, refreshes_rejected: 1, makes: 2);
}

/// The same without credentials: the first call says the refresh token was refused, the next
/// ones that credentials are needed, and the dead token is sent once.
#[test]
fn a_refused_refresh_token_is_sent_once_without_credentials() {
    let server = FakeChatApp::start().unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    session_on(&server, store.clone(), &server.clock())
        .access_token()
        .unwrap();
    server.revoke_all();
    let s = Session::builder()
        .store(store.clone())
        .store_key(KEY)
        .base_url(server.base_url())
        .clock(server.clock())
        .build()
        .unwrap();
    assert!(matches!(
        s.request("GET", "/v1/licenses", None),
        Err(Error::RefreshRejected(_))
    ));
    for _ in 0..3 {
        assert!(matches!(
            s.request("GET", "/v1/licenses", None),
            Err(Error::CredentialsRequired)
        ));
    }
    assert_eq!(server.counters().refreshes_rejected, 1);
}

/// Found by the soak (issue 15, invariant 1, SQLite): on a store whose lock ends with each save
/// (SQLite, PostgreSQL), a make whose in-flight mark expired before its reply came (a clock
/// step, a suspended process) let another process make and save its ledger entry; the first
/// make's final save then wrote its own stale copy of the ledger, and the other entry was
/// gone: the ledger counted fewer makes than the server.
#[cfg(feature = "sqlite")]
#[test]
fn a_slow_make_keeps_the_ledger_entries_written_meanwhile() {
    let server = FakeChatApp::start().unwrap();
    let file = SqliteFile::new(None);
    let store = file.open();
    let a = session_on(&server, file.open(), &server.clock());
    let b = session_on(&server, file.open(), &server.clock());
    a.access_token().unwrap();
    server.revoke_all();
    // A's make is served late; meanwhile the clock passes A's in-flight mark and B makes.
    server.inject(Route::Make, Fault::Delay(Duration::from_millis(1500)));
    let slow = std::thread::spawn(move || a.request("GET", "/v1/licenses", None));
    wait_for_a_make_at(&server);
    server.advance(60);
    b.request("GET", "/v1/licenses", None).unwrap();
    slow.join().unwrap().unwrap();
    assert_eq!(server.counters().makes, 3);
    assert_eq!(
        stored(store.as_ref()).makes.len(),
        3,
        "every make the server issued is in the ledger"
    );
}

/// The lock timeout of [`SqliteFile::stalled`] stores.
#[cfg(feature = "sqlite")]
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a slow tokens.make takes to be answered (a delay, a slow network): time enough
/// for another session to make meanwhile, and for a holder to take the lock.
#[cfg(feature = "sqlite")]
const REPLY_AFTER: Duration = Duration::from_secs(3);

/// One SQLite file in a temporary directory (removed with it), and stores opened on it.
#[cfg(feature = "sqlite")]
struct SqliteFile {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    lock_timeout: Option<Duration>,
}

#[cfg(feature = "sqlite")]
impl SqliteFile {
    /// A new file whose stores wait `lock_timeout` for the lock (the store's default if none).
    fn new(lock_timeout: Option<Duration>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        SqliteFile {
            _dir: dir,
            path,
            lock_timeout,
        }
    }

    /// A new file whose stores wait [`LOCK_TIMEOUT`] for the lock.
    fn stalled() -> Self {
        Self::new(Some(LOCK_TIMEOUT))
    }

    /// Another store on the file, as another process would open it.
    fn open(&self) -> Arc<dyn TokenStore> {
        let store = chatapp_session::store::SqliteStore::open(&self.path).unwrap();
        Arc::new(match self.lock_timeout {
            Some(timeout) => store.with_lock_timeout(timeout),
            None => store,
        })
    }
}

/// Waits until a tokens.make has reached `server` and is held there (a delay).
#[cfg(feature = "sqlite")]
fn wait_for_a_make_at(server: &FakeChatApp) {
    assert!(
        support::wait_until(Duration::from_secs(30), || {
            server.requests_in_progress_on(Route::Make) == 1
        }),
        "the make reaches the server"
    );
}

/// Holds the store's lock from now, before a slow tokens.make is answered (`answered` holds
/// once it is), until its session's read after the reply has timed out (the answer + 1 lock
/// timeout) and before a save after it would (the answer + 2): a stalled holder. Half a lock
/// timeout of slack on either side.
#[cfg(feature = "sqlite")]
fn stall_past_the_reply(store: &dyn TokenStore, answered: impl Fn() -> bool) {
    let held = store.lock(&StoreKey::new(KEY)).unwrap();
    assert!(!answered(), "the lock is held before the reply");
    assert!(
        support::wait_until(Duration::from_secs(30), &answered),
        "the make is answered"
    );
    std::thread::sleep(LOCK_TIMEOUT + LOCK_TIMEOUT / 2);
    drop(held);
}

/// Found by the soak (issue 15, invariant 1, PostgreSQL, in CI): after a slow make, the lock
/// could not be taken again within the lock timeout (a stalled holder) to read what others
/// saved meanwhile; the session then wrote its own copy of the record once the lock came
/// free, unread, and the ledger entry of a make another process sent meanwhile was gone. The
/// outcome is now kept in memory and laid over what the store holds at the next call.
#[cfg(feature = "sqlite")]
#[test]
fn a_make_whose_store_cannot_be_read_again_writes_nothing_over_it_unread() {
    let server = FakeChatApp::start().unwrap();
    let file = SqliteFile::stalled();
    let store = file.open();
    let a = session_on(&server, file.open(), &server.clock());
    let b = session_on(&server, file.open(), &server.clock());
    a.access_token().unwrap();
    server.revoke_all();
    server.inject(Route::Make, Fault::Delay(REPLY_AFTER));
    let slow = {
        let a = a.clone();
        std::thread::spawn(move || a.request("GET", "/v1/licenses", None))
    };
    // While A's make is on its way, the clock passes A's in-flight mark and B makes.
    wait_for_a_make_at(&server);
    server.advance(60);
    b.request("GET", "/v1/licenses", None).unwrap();
    assert_eq!(stored(store.as_ref()).makes.len(), 3, "A's entry and B's");
    // Then a holder stalls with the lock from before A's reply until A's read has timed out
    // (reply + 1 lock timeout) and before A's save would (reply + 2).
    stall_past_the_reply(store.as_ref(), || {
        server.requests_in_progress_on(Route::Make) == 0
    });
    slow.join()
        .unwrap()
        .expect("A's call succeeds with the pair it made, kept in memory");
    assert_eq!(server.counters().makes, 3);
    assert_eq!(
        stored(store.as_ref()).makes.len(),
        3,
        "nothing was written over the store unread: B's entry is there"
    );
    assert!(
        a.status().unwrap().unsaved,
        "A keeps its pair for the next call"
    );
    // A's next call lays its pair over the stored record: every entry stays, and its own
    // in-flight mark is cleared.
    a.request("GET", "/v1/licenses", None).unwrap();
    let after = stored(store.as_ref());
    assert_eq!(
        after.makes.len(),
        3,
        "every make the server issued is in the ledger"
    );
    assert_eq!(after.make_in_flight_until, None);
    assert!(!a.status().unwrap().unsaved);
    assert_eq!(server.counters().makes, 3);
}

/// The same stalled holder after a tokens.make the server refused with 429: the attempt is
/// taken back from the ledger and the cooldown kept, in memory until the store can be read,
/// and then laid over what it holds: the pair and the ledger entry another process saved
/// meanwhile stay.
#[cfg(feature = "sqlite")]
#[test]
fn a_refused_make_whose_store_cannot_be_read_again_is_taken_back_later() {
    let server = FakeChatApp::start().unwrap();
    let file = SqliteFile::stalled();
    let store = file.open();
    // A reaches the server through a slow network; B directly.
    let door = support::Door::closed(&server.base_url());
    door.open_after(REPLY_AFTER);
    let a = Session::builder()
        .credentials(server.credentials())
        .store(file.open())
        .store_key(KEY)
        .base_url(door.url())
        .clock(server.clock())
        .build()
        .unwrap();
    let b = session_on(&server, file.open(), &server.clock());
    let slow = {
        let a = a.clone();
        std::thread::spawn(move || a.access_token())
    };
    // While A's make is in the door, the clock passes A's in-flight mark and B makes.
    wait_for_a_mark_in(store.as_ref());
    server.advance(60);
    b.access_token().unwrap();
    let b_pair = stored(store.as_ref()).pair.expect("B's pair");
    assert_eq!(stored(store.as_ref()).makes.len(), 2, "A's entry and B's");
    // A's make reaches the server after B's, and is refused.
    server.inject(Route::Make, Fault::RateLimited);
    stall_past_the_reply(store.as_ref(), || server.counters().faults_served == 1);
    assert!(
        matches!(slow.join().unwrap(), Err(Error::QuotaExhausted { .. })),
        "A hears of the 429"
    );
    let record = stored(store.as_ref());
    assert_eq!(
        record.makes.len(),
        2,
        "nothing written over the store unread"
    );
    assert_eq!(record.pair.as_ref(), Some(&b_pair), "B's pair stays");
    assert!(
        a.status().unwrap().unsaved,
        "A keeps the cooldown for the next call"
    );
    // A's next call lays its outcome over the stored record: A's attempt taken back, B's
    // entry and pair kept, the cooldown and A's mark settled; it then uses B's pair.
    a.access_token().unwrap();
    let after = stored(store.as_ref());
    assert_eq!(
        after.makes.len(),
        1,
        "the ledger holds B's make only: {:?}",
        after.makes
    );
    assert_eq!(after.pair.as_ref(), Some(&b_pair));
    assert!(
        after.make_cooldown.is_some(),
        "the 429's cooldown is stored"
    );
    assert_eq!(after.make_in_flight_until, None);
    assert!(!a.status().unwrap().unsaved);
    support::assert_counters!(server, makes: 1, faults_served: 1);
}

/// While a session keeps a pair the store has not taken (a full disk after a rotation), a
/// lock holder stalled past the lock timeout does not fail its calls: the pair stays in use
/// from memory, as it would had the store taken it, and is saved once the lock is free.
#[cfg(feature = "sqlite")]
#[test]
fn a_stalled_holder_does_not_fail_a_session_whose_pair_waits_to_be_saved() {
    let server = FakeChatApp::start().unwrap();
    let file = SqliteFile::stalled();
    let (on_disk, full) = full_disk_over(file.open());
    let s = session_on(&server, on_disk, &server.clock());
    s.access_token().unwrap();
    // The disk fills; the server rotates the pair; the new one cannot be saved.
    full.store(true, Ordering::SeqCst);
    server.revoke_access_tokens();
    s.request("GET", "/v1/licenses", None).unwrap();
    assert!(s.status().unwrap().unsaved);
    let token = s.access_token().unwrap();
    full.store(false, Ordering::SeqCst);
    // Now a holder stalls with the lock: the session's calls go on with the pair in memory.
    let store = file.open();
    let held = store.lock(&StoreKey::new(KEY)).unwrap();
    assert_eq!(s.access_token().expect("the pair in memory"), token);
    s.request("GET", "/v1/licenses", None)
        .expect("a call with the pair in memory");
    drop(held);
    // The lock free, the next call saves it.
    assert_eq!(s.access_token().unwrap(), token);
    assert!(!s.status().unwrap().unsaved);
    let saved = stored(store.as_ref()).pair.expect("the pair is saved");
    assert_eq!(saved.access, token);
    support::assert_counters!(server, makes: 1, refreshes: 1, refreshes_rejected: 0);
}

/// Found by the soak (issue 15, invariant 6): a process whose clock is far off, starting with
/// a serverOffset another machine stored (a shared PostgreSQL store), set a 429 cooldown on
/// its own wrong idea of the server's time: 10 days ahead, the fleet made nothing for 10
/// days. The cooldown is now judged on the server's time as its 429 reply's `Date` tells it.
#[test]
fn a_429_cooldown_is_set_on_the_server_clock_of_the_reply() {
    let server = FakeChatApp::start().unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    // Another machine, whose clock agrees with the server's, left its offset: 0.
    store
        .save(
            &StoreKey::new(KEY),
            &StoredRecord {
                server_offset: Some(0),
                ..StoredRecord::default()
            },
        )
        .unwrap();
    let ahead = ManualClock::new(server.now() + 10 * DAY);
    let s = session_on(&server, store.clone(), &ahead);
    server.inject(Route::Make, Fault::RateLimited);
    match s.access_token() {
        Err(Error::QuotaExhausted { next_make_at, .. }) => {
            assert_eq!(next_make_at, Some(server.now() + HOUR))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        stored(store.as_ref()).make_cooldown.map(|c| c.until),
        Some(server.now() + HOUR)
    );
    server.advance(HOUR);
    ahead.advance(HOUR);
    s.access_token().unwrap();
    assert_eq!(server.counters().makes, 1);
}

/// Found by the soak (issue 15, invariant 2): a refresh the server refused taught the session
/// the server's time (its `Date`), by which the refused pair looked fresh again, and the
/// session used it: the call failed with `ApiInvalidTokenError` and the next refresh sent the
/// same dead refresh token again. A pair whose refresh token was refused is never used.
#[test]
fn a_pair_whose_refresh_token_was_refused_is_not_used_again() {
    let server = FakeChatApp::start().unwrap();
    let local = ManualClock::new(server.now());
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let s = session_on(&server, store.clone(), &local);
    s.request("GET", "/v1/licenses", None).unwrap();
    // The server rotates the pair, but the reply is lost.
    server.revoke_access_tokens();
    server.inject(Route::Refresh, Fault::LostReply);
    assert!(matches!(
        s.request("GET", "/v1/licenses", None),
        Err(Error::RefreshReplyLost { .. })
    ));
    // The local clock steps two days ahead: the stored pair looks ended, a refresh is tried.
    local.advance(2 * DAY);
    s.request("GET", "/v1/licenses", None).unwrap();
    support::assert_counters!(server, refreshes_rejected: 1, makes: 2, invalid_token_replies: 1);
}

/// The `Date` header, not a fallback, puts end times on the server's clock: a local clock
/// 12 h ahead does not refresh early, and one 12 h behind does not send a dead token.
#[test]
fn end_times_are_judged_on_the_servers_clock_learned_from_date() {
    // Ahead: for 23 server hours the pair is good; the local clock reads 35 h by then.
    let server = FakeChatApp::start().unwrap();
    let local = ManualClock::new(server.now() + 12 * HOUR);
    let s = session_on(&server, Arc::new(MemoryStore::new()), &local);
    for _ in 0..23 {
        server.advance(HOUR);
        local.advance(HOUR);
        s.request("GET", "/v1/licenses", None).unwrap();
    }
    support::assert_counters!(server, makes: 1, refreshes: 0, invalid_token_replies: 0);
    // Behind: at the server's 24 h the pair is renewed before it is sent dead.
    let server = FakeChatApp::start().unwrap();
    let local = ManualClock::new(server.now() - 12 * HOUR);
    let s = session_on(&server, Arc::new(MemoryStore::new()), &local);
    s.request("GET", "/v1/licenses", None).unwrap();
    server.advance(DAY);
    local.advance(DAY);
    s.request("GET", "/v1/licenses", None).unwrap();
    support::assert_counters!(server, makes: 1, refreshes: 1, invalid_token_replies: 0);
}
