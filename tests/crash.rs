//! Crashes: a child process (this test binary, re-run) refreshes and saves in a loop through a
//! `Session` on a durable store, and is killed (SIGKILL) at a random moment, 200 times per
//! store. After every kill the store must hold a complete pair (the old or the new one) and
//! the whole make ledger, no temporary files may pile up, the dead process's lock must not
//! block anyone, and a new session must make a successful call (one make allowed, only when
//! the killed refresh had rotated the pair server-side before its new pair was saved).
//!
//! The random delays come from a xorshift generator seeded from the time; the seed is
//! printed, and `CHATAPP_CRASH_SEED=<seed>` replays a run.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chatapp_session::store::{StoreKey, StoredRecord, TokenStore};
use chatapp_session::testing::ManualClock;
use chatapp_session::testing::{FakeChatApp, Fault, Route};
use chatapp_session::Session;

/// The server's answer to a dead access token.
fn invalid_token() -> Fault {
    Fault::json(
        401,
        r#"{"success":false,"error":{"code":"ApiInvalidTokenError","message":"Invalid Token"}}"#,
    )
}

mod support;
use support::child::{self, Params};
use support::{listing, open_store, seed_from_env, wait_until, XorShift};

const KILLS: usize = 200;
/// The longest random wait between the child being ready and its kill.
const MAX_DELAY_MICROS: u64 = 30_000;
const KEY: &str = "crash";

/// How many `ApiInvalidTokenError` replies wait for each child's requests: more than it can
/// use before its kill (each request takes two: the first answer and the one after the
/// refresh). A clock ahead of the server's no longer drives refreshes: the session learns
/// the server's time from its `Date` header.
const REFUSALS_PER_CHILD: usize = 400;

/// The child: a session whose every request the server refuses with `ApiInvalidTokenError`
/// (the parent queued the refusals), so that each request is one refresh and one save under
/// the store's lock. No credentials: a child never needs (nor may) make a pair.
#[test]
#[ignore = "child process entry: started by this file's tests"]
fn child_process() {
    child::entry("child_process");
    let (spec, base) = (child::param("store"), child::param("base"));
    let now: i64 = child::parsed("now");
    let session = Session::builder()
        .store(open_store(&spec))
        .store_key(KEY)
        .base_url(base)
        .clock(ManualClock::new(now))
        .timeout(Duration::from_secs(30))
        // As the recovering sessions: the ledger keeps the newest `make_limit` entries, and a
        // run may need more than 100 makes to recover from its kills.
        .make_limit(10_000)
        .build()
        .unwrap();
    // A first refresh opens the one keep-alive connection that every later refresh uses, so
    // the server tracks it (`open_connections`) from before the parent's clock starts.
    let refreshed_request = || match session.request("GET", "/v1/licenses", None) {
        Ok(_) | Err(chatapp_session::Error::TokenRejected(_)) => {}
        Err(e) => {
            println!("child error: {e}");
            std::process::exit(3);
        }
    };
    refreshed_request();
    println!("ready");
    loop {
        refreshed_request();
    }
}

fn spawn_child(spec: &str, server: &FakeChatApp) -> Child {
    child::command("child_process")
        .param("store", spec)
        .param("base", server.base_url())
        .param("now", server.now().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A session of a "new process": the real clock, the credentials, room for a make per kill.
fn recovering_session(spec: &str, server: &FakeChatApp) -> Session {
    Session::builder()
        .credentials(support::default_credentials())
        .store(open_store(spec))
        .store_key(KEY)
        .base_url(server.base_url())
        .make_limit(10_000)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Takes the store's lock in another thread, on a store opened there: the lock of a killed
/// process must be free at once (a generous 20 s bound only keeps a failure from hanging).
fn lock_is_free(spec: &str, what: &str) {
    let (tx, rx) = mpsc::channel();
    let spec = spec.to_owned();
    std::thread::spawn(move || {
        let store = open_store(&spec);
        let result = store
            .lock(&StoreKey::new(KEY))
            .map(drop)
            .map_err(|e| e.to_string());
        let _ = tx.send(result);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{what}: lock() failed after the kill: {e}"),
        Err(_) => panic!("{what}: the lock of the killed process blocks the next one"),
    }
}

/// Whether `name` is a FileStore temporary file of the store file `s.json`.
fn is_file_store_temp(name: &str) -> bool {
    name.strip_prefix(".s.json.")
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|middle| {
            middle.len() == 6 && middle.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// What a crash may leave beside the store; returns how many temporary files there are.
fn check_leftovers(dir: &Path, kind: &str, what: &str) -> usize {
    let names = listing(dir);
    let mut temps = 0;
    for name in &names {
        match (kind, name.as_str()) {
            ("file", "s.json" | "s.json.lock") => {}
            ("file", temp) if is_file_store_temp(temp) => {
                temps += 1;
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(dir.join(temp))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{what}: {temp} is not private");
            }
            ("sqlite", "s.db" | "s.db-wal" | "s.db-shm") => {}
            _ => panic!("{what}: unexpected file {name} in {names:?}"),
        }
    }
    // A kill interrupts at most one save, and the next save removes what it left.
    assert!(temps <= 1, "{what}: temporary files pile up: {names:?}");
    temps
}

/// A pair as the server writes it: `$2y$10$` and 53 more characters, nothing cut short.
fn assert_complete(record: &StoredRecord, what: &str) {
    let pair = record
        .pair
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: the store lost the pair"));
    for token in [pair.access.expose_secret(), pair.refresh.expose_secret()] {
        assert!(
            token.len() == 60 && token.starts_with("$2y$10$"),
            "{what}: a token of {} characters",
            token.len()
        );
    }
    assert!(pair.access_expires_at > 0 && pair.refresh_expires_at > pair.access_expires_at);
}

/// Kills a refreshing child [`KILLS`] times at random moments and checks the store each time.
fn survive_kills(kind: &str, spec: &str, dir: &Path) {
    let seed = seed_from_env("CHATAPP_CRASH_SEED");
    eprintln!("{kind} store: kill delays from xorshift seed {seed} (CHATAPP_CRASH_SEED={seed} replays them)");
    let mut rng = XorShift(seed);
    let server = FakeChatApp::builder().make_limit(10_000).start().unwrap();
    // The first pair: one make, saved.
    recovering_session(spec, &server).access_token().unwrap();
    let started = Instant::now();
    let (mut recoveries_by_make, mut max_temps, mut ledger) = (0, 0, 1);
    for kill in 0..KILLS {
        let delay = Duration::from_micros(rng.next() % (MAX_DELAY_MICROS + 1));
        let what = format!("{kind} kill {kill} (seed {seed}, {delay:?} after ready)");
        let before = server.counters();

        server.clear_faults();
        for _ in 0..REFUSALS_PER_CHILD {
            server.inject(Route::Request, invalid_token());
        }
        let mut child = spawn_child(spec, &server);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // The test harness speaks first ("running 1 test"); the child then says "ready".
        let mut said = String::new();
        while !said.ends_with("ready\n") {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).unwrap();
            said.push_str(&line);
            assert!(n > 0, "{what}: the child did not start: {said}");
        }
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        server.clear_faults();
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        assert_eq!(
            status.code(),
            None,
            "{what}: the child ended by itself: {rest}"
        );
        // What the child sent before it died is served and counted before anything is judged.
        assert!(
            wait_until(Duration::from_secs(20), || server.open_connections() == 0),
            "{what}: the server still holds {} connections",
            server.open_connections()
        );

        // The store holds a complete pair and the whole ledger; nothing piles up beside it.
        let record = open_store(spec)
            .load(&StoreKey::new(KEY))
            .unwrap_or_else(|e| panic!("{what}: the store cannot be read: {e}"))
            .unwrap_or_else(|| panic!("{what}: the record is gone"));
        assert_complete(&record, &what);
        assert_eq!(
            record.makes.len(),
            ledger,
            "{what}: the make ledger lost entries"
        );
        max_temps = max_temps.max(check_leftovers(dir, kind, &what));
        lock_is_free(spec, &what);

        // A new process recovers: a successful call, one make at most, and only when the
        // killed refresh had rotated the stored pair away (a rejected refresh first).
        let mid = server.counters();
        recovering_session(spec, &server)
            .request("GET", "/v1/licenses", None)
            .unwrap_or_else(|e| panic!("{what}: no recovery: {e}"));
        let after = server.counters();
        let makes = after.makes - mid.makes;
        assert!(makes <= 1, "{what}: {makes} makes to recover");
        assert_eq!(
            after.refreshes_rejected - mid.refreshes_rejected,
            makes,
            "{what}: a make without a rotated refresh token, or the reverse: {after:?}"
        );
        assert_eq!(
            mid.refreshes_rejected, before.refreshes_rejected,
            "{what}: the child's refresh was refused"
        );
        recoveries_by_make += makes;
        ledger += makes as usize;
    }
    let c = server.counters();
    eprintln!(
        "{kind} store: {KILLS} kills in {:?}: {} refreshes by the children, {recoveries_by_make} kills between a rotation and its save (one make each to recover), at most {max_temps} temporary file left at once",
        started.elapsed(),
        c.refreshes
    );
    assert!(
        c.refreshes as usize >= KILLS / 4,
        "the children hardly refreshed ({} refreshes): the kills did not hit the refresh path",
        c.refreshes
    );
    // The next save leaves no temporary file at all.
    let session = recovering_session(spec, &server);
    session.login().unwrap();
    assert_eq!(check_leftovers(dir, kind, "after a last save"), 0);
}

#[cfg(feature = "file")]
#[test]
fn a_file_store_survives_200_kills_while_refreshing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("file:{}", dir.path().join("s.json").display());
    survive_kills("file", &spec, dir.path());
}

#[cfg(feature = "sqlite")]
#[test]
fn a_sqlite_store_survives_200_kills_while_refreshing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("sqlite:{}", dir.path().join("s.db").display());
    survive_kills("sqlite", &spec, dir.path());
}
