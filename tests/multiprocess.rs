//! One refresh across processes: real separate processes (this test binary re-run as a child)
//! share a durable store (file, SQLite, keyring, PostgreSQL) and all find the access token dead at once; the strict-rotation
//! FakeChatApp must see exactly one refresh, no rejected refresh and no make.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chatapp_session::testing::FakeChatApp;
use chatapp_session::Session;

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

/// Twelve processes on one PostgreSQL database: the fleet in miniature. The store key
/// holds the fake server's random port, so no other run shares the row.
#[cfg(feature = "postgres")]
#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn twelve_processes_on_a_postgres_store_refresh_once() {
    // `CHATAPP_TEST_POSTGRES_ROUTE=pgbouncer`: through the transaction-pooling pgbouncer.
    crowd_refreshes_once(&format!("postgres:{}", support::postgres_conninfo()), 12);
}
