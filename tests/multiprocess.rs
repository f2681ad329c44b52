//! One refresh across processes: real separate processes (this test binary re-run as a child)
//! share a durable store (file, SQLite, keyring, PostgreSQL) and all find the access token dead at once; the strict-rotation
//! FakeChatApp must see exactly one refresh, no rejected refresh and no make.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use chatapp_session::store::{LockOrRecord, StoreKey, StoreLock, StoredRecord, TokenStore};
use chatapp_session::testing::FakeChatApp;
use chatapp_session::{Session, StoreError};

mod support;
use support::child::{self, Params};
use support::open_store;

const THREADS: usize = 4;

fn session(spec: &str, base_url: &str) -> Session {
    Session::builder()
        .credentials(support::default_credentials())
        .store(open_store(spec))
        .base_url(base_url)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The child: waits for the go file, then 4 threads call at once; prints one line per result.
#[test]
#[ignore = "child process entry: started by this file's tests"]
fn child_process() {
    child::entry("child_process");
    let (spec, base, go) = (
        child::param("store"),
        child::param("base"),
        child::param("go"),
    );
    let session = session(&spec, &base);
    // Load the stored pair now: every thread then starts with the dead access token.
    session.access_token().unwrap();
    println!("ready");
    while !Path::new(&go).exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    for result in support::requests_at_once(&session, THREADS) {
        match result {
            Ok(_) => println!("result ok"),
            Err(e) => println!("result error {e}"),
        }
    }
}

/// Runs a crowd of `processes` x 4 threads on `spec` and checks the server's counters.
fn crowd_refreshes_once(spec: &str, processes: usize) {
    let server = FakeChatApp::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    // One make, saved to the shared store; then the server kills every access token.
    let seeded = session(spec, &server.base_url());
    let dead = seeded.access_token().unwrap();
    server.revoke_access_tokens();
    server.reset_counters();

    let mut children: Vec<_> = (0..processes)
        .map(|_| {
            child::command("child_process")
                .param("store", spec)
                .param("base", server.base_url())
                .param("go", &go)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    // Wait until every child has built its session, then let them all go at once.
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()))
        .collect();
    for reader in &mut readers {
        let mut line = String::new();
        while !line.contains("ready") {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "child died before ready"
            );
        }
    }
    std::fs::write(&go, b"go").unwrap();
    let mut results = Vec::new();
    for (child, reader) in children.iter_mut().zip(readers) {
        for line in reader.lines() {
            let line = line.unwrap();
            if let Some(result) = line.strip_prefix("result ") {
                results.push(result.to_owned());
            }
        }
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(results.len(), processes * THREADS, "{results:?}");
    assert!(results.iter().all(|r| r == "ok"), "{results:?}");
    let c = server.counters();
    assert_eq!(
        (c.refreshes, c.refreshes_rejected, c.makes),
        (1, 0, 0),
        "{spec}: {c:?}"
    );
    // Every process starts with the dead token, so each meets at least one refusal; a thread
    // that the scheduler starts after its process adopted the fresh pair sends that instead.
    let refused = c.invalid_token_replies as usize;
    assert!(
        (processes..=processes * THREADS).contains(&refused),
        "{spec}: {refused} invalid-token replies: {c:?}"
    );
    // The refreshed pair is what the store holds now.
    let stored = open_store(spec).load(seeded.store_key()).unwrap();
    let stored = stored.and_then(|r| r.pair).unwrap();
    assert_ne!(
        stored.access, dead,
        "{spec}: the store still holds the dead pair"
    );
}

#[cfg(feature = "file")]
#[test]
fn eight_processes_on_a_file_store_refresh_once() {
    let dir = tempfile::tempdir().unwrap();
    crowd_refreshes_once(&format!("file:{}", dir.path().join("s.json").display()), 8);
}

#[cfg(feature = "sqlite")]
#[test]
fn eight_processes_on_a_sqlite_store_refresh_once() {
    let dir = tempfile::tempdir().unwrap();
    crowd_refreshes_once(&format!("sqlite:{}", dir.path().join("s.db").display()), 8);
}

#[cfg(feature = "keyring")]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn eight_processes_on_a_keyring_store_refresh_once() {
    let service = support::unique_name("chatapp-session-mp");
    crowd_refreshes_once(&format!("keyring:{service}"), 8);
}

/// Twelve processes on one PostgreSQL database: the issue's fleet in miniature. The store key
/// holds the fake server's random port, so no other run shares the row.
#[cfg(feature = "postgres")]
#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn twelve_processes_on_a_postgres_store_refresh_once() {
    // `CHATAPP_TEST_POSTGRES_ROUTE=pgbouncer`: through the transaction-pooling pgbouncer.
    crowd_refreshes_once(&format!("postgres:{}", support::postgres_conninfo()), 12);
}

/// A store that counts the exclusive locks taken through it.
#[derive(Debug)]
struct Counted {
    inner: Box<dyn TokenStore>,
    locks: Arc<AtomicUsize>,
    /// The records `lock_unless` was asked about: its wait has begun once one is.
    looks: Arc<AtomicUsize>,
}

impl TokenStore for Counted {
    fn load(&self, key: &StoreKey) -> Result<Option<StoredRecord>, StoreError> {
        self.inner.load(key)
    }

    fn lock(&self, key: &StoreKey) -> Result<Box<dyn StoreLock + '_>, StoreError> {
        self.locks.fetch_add(1, Ordering::SeqCst);
        self.inner.lock(key)
    }

    fn lock_unless(
        &self,
        key: &StoreKey,
        wanted: &mut dyn FnMut(&StoredRecord) -> bool,
    ) -> Result<LockOrRecord<'_>, StoreError> {
        let mut counted = |record: &StoredRecord| {
            self.looks.fetch_add(1, Ordering::SeqCst);
            wanted(record)
        };
        let waited = self.inner.lock_unless(key, &mut counted)?;
        if let LockOrRecord::Locked(_) = waited {
            self.locks.fetch_add(1, Ordering::SeqCst);
        }
        Ok(waited)
    }
}

/// Crowds at expiry (issue 12): a session whose token the server refused, waiting for the
/// store's lock that another holder (`holder`, the same storage as `store`) keeps, adopts the
/// pair the holder saves meanwhile, without ever taking the lock itself and with no refresh of
/// its own. While the refused pair is stored, the session keeps waiting.
///
/// With `keeps_lock` (the holder's lock outlives its saves: file and keyring stores, or one
/// SQLite store shared by both), the holder first saves the refused pair again (with another
/// ledger), which the session must not adopt either, and the session must return while the
/// holder still holds the lock. Without it (PostgreSQL on two connections, whose lock ends
/// with each save), the holder saves the fresh pair and takes the lock no more: the session,
/// woken by the save, must take the pair without the lock. (Taking the lock again at once
/// would race the woken session for the row's new version.)
fn a_waiter_adopts_a_pair_saved_while_the_lock_is_held(
    holder: &dyn TokenStore,
    store: Box<dyn TokenStore>,
    keeps_lock: bool,
) {
    let server = FakeChatApp::start().unwrap();
    let locks = Arc::new(AtomicUsize::new(0));
    let looks = Arc::new(AtomicUsize::new(0));
    let session = Session::builder()
        .credentials(server.credentials())
        .store(Counted {
            inner: store,
            locks: locks.clone(),
            looks: looks.clone(),
        })
        .base_url(server.base_url())
        .build()
        .unwrap();
    let refused = session.access_token().unwrap();
    server.revoke_access_tokens();
    server.reset_counters();
    locks.store(0, Ordering::SeqCst);
    looks.store(0, Ordering::SeqCst);
    let key = session.store_key().clone();
    let mut guard = holder.lock(&key).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = tx.send(session.request("GET", "/v1/licenses", None));
        });
        // The session meets the refusal and waits for the lock: it has looked at the stored
        // record (a fixed pause would not know, on a loaded machine), and not returned.
        assert!(
            support::wait_until(Duration::from_secs(30), || looks.load(Ordering::SeqCst) > 0),
            "the session never waited for the lock"
        );
        let waiting = Duration::from_millis(500);
        assert!(
            rx.recv_timeout(waiting).is_err(),
            "the session did not wait"
        );
        let mut record = guard.load().unwrap().unwrap();
        assert_eq!(record.pair.as_ref().map(|p| &p.access), Some(&refused));
        if keeps_lock {
            record.makes.push(server.now());
            guard.save(&record).unwrap();
            guard.load().unwrap();
            assert!(
                rx.recv_timeout(waiting).is_err(),
                "the session adopted the pair the server refused"
            );
        }
        let fresh = server.issue_pair();
        record.pair = Some(fresh.clone());
        record.issued_at = Some(server.now());
        guard.save(&record).unwrap();
        if keeps_lock {
            // Still held: the session must return before it is let go.
            guard.load().unwrap();
        }
        let result = rx.recv_timeout(Duration::from_secs(10));
        assert!(
            matches!(result, Ok(Ok(_))),
            "the session did not return with the fresh pair (while the lock was held): {result:?}"
        );
        drop(guard);
        assert_eq!(session.access_token().unwrap(), fresh.access);
    });
    let c = server.counters();
    assert_eq!(
        (c.refreshes, c.refreshes_rejected, c.makes),
        (0, 0, 0),
        "{c:?}"
    );
    assert_eq!(
        locks.load(Ordering::SeqCst),
        0,
        "the session took the exclusive lock to read the pair saved while it waited"
    );
}

/// [`a_waiter_adopts_a_pair_saved_while_the_lock_is_held`] with the holder and the session on
/// two stores opened from `spec`, as two processes would be.
fn a_waiter_adopts_across(spec: &str, keeps_lock: bool) {
    let holder = open_store(spec);
    a_waiter_adopts_a_pair_saved_while_the_lock_is_held(&*holder, open_store(spec), keeps_lock);
}

#[test]
fn a_waiter_adopts_a_pair_saved_while_the_lock_is_held_on_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    a_waiter_adopts_across(
        &format!("file:{}", dir.path().join("s.json").display()),
        true,
    );
}

/// On one `SqliteStore` shared by the holder and the session (the process's write connection
/// is the lock in between); across two connections, SQLite ends the lock with each save, and
/// the conformance suite checks that case.
#[cfg(feature = "sqlite")]
#[test]
fn a_waiter_adopts_a_pair_saved_while_the_lock_is_held_on_a_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("sqlite:{}", dir.path().join("s.db").display());
    let shared: Arc<dyn TokenStore> = Arc::from(open_store(&spec));
    a_waiter_adopts_a_pair_saved_while_the_lock_is_held(&*shared, Box::new(shared.clone()), true);
}

#[cfg(feature = "keyring")]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn a_waiter_adopts_a_pair_saved_while_the_lock_is_held_on_a_keyring_store() {
    let service = support::unique_name("chatapp-session-mp");
    a_waiter_adopts_across(&format!("keyring:{service}"), true);
}

/// Two connections, as two processes: the waiter, in a shared wait for the row, wakes when
/// the holder commits its save.
#[cfg(feature = "postgres")]
#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_waiter_adopts_a_pair_saved_while_the_lock_is_held_on_a_postgres_store() {
    a_waiter_adopts_across(&format!("postgres:{}", support::postgres_conninfo()), false);
}
