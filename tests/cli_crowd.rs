//! Crowds of `chatapp` CLI processes on one store: after one login, the server kills the
//! access token, and 8 CLI processes started at once all call the API. The strict-rotation
//! FakeChatApp must see exactly one refresh, no rejected refresh and no further make, for
//! each durable store.

mod support;

use std::thread;

use chatapp_session::testing::FakeChatApp;
use support::Cli;

const CROWD: usize = 8;

fn crowd_on(store: &str) {
    crowd_with_env(store, &[]);
}

/// The crowd, passing the named variables of this process's environment to the CLI (whose
/// environment is otherwise clean).
fn crowd_with_env(store: &str, pass: &[&str]) {
    let server = FakeChatApp::start().unwrap();
    let mut cli = Cli::new(&server, store);
    for name in pass {
        if let Ok(value) = std::env::var(name) {
            cli = cli.with_env(name, &value);
        }
    }
    cli.run(&["login"]).expect_code(0, "login");
    for round in 1..=3 {
        server.revoke_access_tokens();
        let runs: Vec<_> = (0..CROWD)
            .map(|_| {
                let cli = cli.clone();
                thread::spawn(move || cli.run(&["call", "GET", "/v1/licenses"]))
            })
            .collect();
        for run in runs {
            let run = run.join().unwrap();
            run.expect_code(0, store);
            assert!(run.stdout.contains("licenseId"), "{}", run.stdout);
        }
        let c = server.counters();
        assert_eq!(
            (c.makes, c.refreshes, c.refreshes_rejected),
            (1, round, 0),
            "{store}, round {round}: {c:?}"
        );
    }
    let status = cli.run(&["status"]);
    status.expect_code(0, "status");
    assert!(
        status.stdout.contains(r#""stored":true"#),
        "{}",
        status.stdout
    );
}

#[test]
fn a_crowd_of_cli_processes_on_a_file_store_refreshes_once() {
    let dir = tempfile::tempdir().unwrap();
    crowd_on(&format!("file:{}", dir.path().join("s.json").display()));
}

#[cfg(feature = "sqlite")]
#[test]
fn a_crowd_of_cli_processes_on_a_sqlite_store_refreshes_once() {
    let dir = tempfile::tempdir().unwrap();
    crowd_on(&format!("sqlite:{}", dir.path().join("s.db").display()));
}

#[cfg(feature = "keyring")]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn a_crowd_of_cli_processes_on_the_keyring_refreshes_once() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "no session bus: run the suite as `bash .ci/test` (or set CHATAPP_SKIP_KEYRING_TESTS=1)"
    );
    let service = format!("chatapp-session-crowd-{}", std::process::id());
    // The CLI processes use this process's session bus and runtime directory (lock files).
    crowd_with_env(
        &format!("keyring:{service}"),
        &[
            "DBUS_SESSION_BUS_ADDRESS",
            "XDG_RUNTIME_DIR",
            "XDG_DATA_HOME",
            "HOME",
        ],
    );
}

#[cfg(feature = "postgres")]
#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn a_crowd_of_cli_processes_on_postgresql_refreshes_once() {
    // The store key holds the server's random port: no other run shares the row.
    crowd_on(&format!("postgres:{}", support::postgres_conninfo()));
}

/// The CLI contract: `--lock-timeout SECS` bounds the wait for another process's lock, then
/// exit 6 with one line on stderr; a lock timeout shorter than `--timeout` is a usage error.
#[test]
fn the_cli_gives_up_on_a_held_lock_after_its_lock_timeout() {
    use chatapp_session::store::{FileStore, StoreKey, TokenStore};
    use std::time::{Duration, Instant};

    let server = FakeChatApp::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let cli = Cli::file(&server, &path);
    let store = FileStore::new(&path);
    let guard = store.lock(&StoreKey::new("any")).unwrap();
    let started = Instant::now();
    let run = cli.run(&["--timeout", "1", "--lock-timeout", "1.5", "login"]);
    let took = started.elapsed();
    run.expect_code(6, "login while another process holds the lock");
    let line = run.one_error_line("lock timeout");
    assert!(line.contains("lock was not granted within 1.5s"), "{line}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(1500 + 2000),
        "the CLI ended after {took:?}"
    );
    assert_eq!(
        server.counters().makes,
        0,
        "nothing was sent without the lock"
    );
    drop(guard);

    let run = cli.run(&["--timeout", "5", "--lock-timeout", "1", "status"]);
    run.expect_code(2, "a lock timeout shorter than the HTTP timeout");
    assert!(
        run.stderr.contains("shorter than the HTTP timeout"),
        "{}",
        run.stderr
    );
    cli.run(&["--lock-timeout", "30", "login"])
        .expect_code(0, "login");
}
