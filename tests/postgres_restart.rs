//! Issue 12: the PostgreSQL cluster restarts (`pg_ctl restart -m fast`) while one instance
//! holds the store's lock and waits for the server's answer to its refresh. The restart ends
//! every connection (and so the lock) under it; afterwards every instance must converge on one
//! pair, no tokens.make may have been sent that the store's ledger does not record, and the
//! store must hold that pair.
//!
//! Needs the throwaway cluster of `.ci/postgres-env`, which exports what a restart takes
//! (`CHATAPP_TEST_PG_CTL`, `CHATAPP_TEST_PGDATA`, `CHATAPP_TEST_PGLOG`,
//! `CHATAPP_TEST_PG_OSUSER`). A test binary of its own: the restart would break the
//! connections of other tests running beside it. With `CHATAPP_TEST_POSTGRES_ROUTE=pgbouncer`
//! the instances reach the cluster through the transaction-pooling pgbouncer.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use chatapp_session::store::{PostgresStore, TokenStore};
use chatapp_session::testing::{FakeChatApp, Fault, Route};
use chatapp_session::{AccessToken, Session};

/// How long the fake server sits on the refresh: long enough for a restart under it.
const REFRESH_DELAY: Duration = Duration::from_secs(4);
const INSTANCES: usize = 3;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run this test under the throwaway cluster, \
             `.ci/postgres-env cargo test --all-features --test postgres_restart` \
             (or skip it with `--skip restart`)"
        )
    })
}

/// The conninfo the instances use: the server, or pgbouncer in front of it.
fn conninfo() -> String {
    match std::env::var("CHATAPP_TEST_POSTGRES_ROUTE").as_deref() {
        Ok("pgbouncer") => env("CHATAPP_TEST_PGBOUNCER"),
        _ => env("CHATAPP_TEST_POSTGRES"),
    }
}

/// `pg_ctl restart -m fast`, as the OS user that runs the cluster (`runuser` when that is
/// not us, i.e. when the tests run as root).
fn restart_cluster() {
    let (pg_ctl, data, log) = (
        env("CHATAPP_TEST_PG_CTL"),
        env("CHATAPP_TEST_PGDATA"),
        env("CHATAPP_TEST_PGLOG"),
    );
    let os_user = env("CHATAPP_TEST_PG_OSUSER");
    let me = Command::new("id").arg("-un").output().expect("id -un");
    let mut command = if String::from_utf8_lossy(&me.stdout).trim() == os_user {
        Command::new(&pg_ctl)
    } else {
        let mut c = Command::new("runuser");
        c.args(["-u", &os_user, "--", &pg_ctl]);
        c
    };
    let output = command
        .args([
            "restart", "-m", "fast", "-w", "-t", "60", "-D", &data, "-l", &log,
        ])
        .output()
        .expect("run pg_ctl");
    assert!(
        output.status.success(),
        "pg_ctl restart failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn instance(server: &FakeChatApp) -> Session {
    let store = PostgresStore::connect(&conninfo()).expect("connect to the test cluster");
    Session::builder()
        .credentials(server.credentials())
        .store(store)
        .base_url(server.base_url())
        .build()
        .expect("session")
}

#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_restart_mid_refresh_converges_on_one_saved_pair_without_unrecorded_makes() {
    let server = FakeChatApp::start().unwrap();
    let instances: Vec<Session> = (0..INSTANCES).map(|_| instance(&server)).collect();
    // One make (the first login), saved; every instance starts from that pair.
    let first = instances[0].access_token().unwrap();
    for i in &instances {
        assert_eq!(i.access_token().unwrap(), first);
    }
    server.revoke_access_tokens();
    server.inject(Route::Refresh, Fault::Delay(REFRESH_DELAY));

    let first_round: Vec<bool> = thread::scope(|s| {
        let calls: Vec<_> = instances
            .iter()
            .map(|i| s.spawn(move || i.request("GET", "/v1/licenses", None).map(drop)))
            .collect();
        // The refresh is in flight once the server has taken the delay fault.
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.pending_faults(Route::Refresh) > 0 {
            assert!(Instant::now() < deadline, "no refresh was sent");
            thread::sleep(Duration::from_millis(5));
        }
        restart_cluster();
        // Whatever each call gave (the holder keeps the pair the server gave although its
        // save failed, and succeeds; a waiter may fail with a storage error), the next rounds
        // must converge.
        calls
            .into_iter()
            .map(|c| c.join().unwrap().is_ok())
            .collect()
    });

    // Every instance calls again, one after another, until a whole round succeeds. Those
    // whose call succeeded go first: the holder, whose next call saves the pair it kept, so
    // that the others adopt it and nobody needs a make.
    let order: Vec<&Session> = (0..INSTANCES)
        .filter(|&n| first_round[n])
        .chain((0..INSTANCES).filter(|&n| !first_round[n]))
        .map(|n| &instances[n])
        .collect();
    let mut converged = false;
    for _round in 0..4 {
        let results: Vec<_> = order
            .iter()
            .map(|i| i.request("GET", "/v1/licenses", None).map(drop))
            .collect();
        if results.iter().all(Result::is_ok) {
            converged = true;
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(converged, "the instances still fail after 4 rounds");

    let tokens: Vec<AccessToken> = instances
        .iter()
        .map(|i| i.access_token().unwrap())
        .collect();
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "the instances hold different pairs"
    );
    assert_ne!(tokens[0], first, "the dead pair is still in use");
    let record = PostgresStore::connect(&conninfo())
        .unwrap()
        .load(instances[0].store_key())
        .unwrap()
        .expect("a stored record");
    let stored = record.pair.as_ref().expect("a stored pair");
    assert_eq!(
        stored.access, tokens[0],
        "the store does not hold the pair in use"
    );
    let c = server.counters();
    assert!(
        c.makes as usize <= record.makes.len(),
        "{} makes sent, {} in the ledger: {c:?}",
        c.makes,
        record.makes.len()
    );
    // The pair the server gave during the restart was kept and saved: no make beyond the
    // first login (issue 9: "a pair the server gave is never dropped").
    assert_eq!(c.makes, 1, "a make beyond the first login: {c:?}");
}
