//! Crowds at expiry (issue 12): 8, 32 and 64 processes share one store and each make one call
//! at the same moment, just after the server killed the access token they all hold; exactly
//! one of them refreshes (under the store's lock), the others wait, reload and adopt the new
//! pair. Reported per store: p50, p99 and the last finished call, from the common "go", against
//! the time one process alone takes for the same call (refresh and save included).
//!
//! Goal: the last of 64 within 2x the single-process time plus 64 store loads.
//!
//! `cargo bench --all-features --bench crowd` (file and SQLite stores); PostgreSQL too when
//! `CHATAPP_TEST_POSTGRES` names a server: `.ci/postgres-env cargo bench --all-features --bench
//! crowd`. Each process is this bench binary run again as a child. A few minutes at most.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use chatapp_session::store::{StoreKey, TokenStore};
use chatapp_session::testing::FakeChatApp;
use chatapp_session::{Credentials, Session};
use common::median;

const CHILD_ENV: &str = "CHATAPP_CROWD_CHILD";
const SIZES: [usize; 3] = [8, 32, 64];
/// Crowds of each size per store; the table shows the median run (by its last call).
const RUNS: usize = 3;
/// Single-process runs, for the baseline.
const SINGLE_RUNS: usize = 7;

fn open_store(spec: &str) -> Box<dyn TokenStore> {
    let (kind, arg) = spec.split_once(':').expect("a store spec");
    match kind {
        "file" => Box::new(chatapp_session::store::FileStore::new(arg)),
        #[cfg(feature = "sqlite")]
        "sqlite" => Box::new(chatapp_session::store::SqliteStore::open(arg).expect("sqlite")),
        #[cfg(feature = "postgres")]
        "postgres" => {
            Box::new(chatapp_session::store::PostgresStore::connect(arg).expect("postgres"))
        }
        other => panic!("store {other} is not built in"),
    }
}

fn session(spec: &str, base_url: &str, credentials: Credentials) -> Session {
    Session::builder()
        .credentials(credentials)
        .store(open_store(spec))
        .base_url(base_url)
        .build()
        .expect("session")
}

/// A session on `spec` for `server`, with nothing stored under its key: a PostgreSQL database
/// outlives the runs, and a port (part of the key) may come back, with a pair that an earlier
/// server issued and this one refuses.
fn fresh_session(spec: &str, server: &FakeChatApp) -> Session {
    let session = session(spec, &server.base_url(), server.credentials());
    open_store(spec)
        .clear(session.store_key())
        .expect("clear the key");
    session
}

/// A child: loads the stored pair, says "ready", waits for "go" on stdin, makes one call and
/// says "done". The parent times both on its own monotonic clock (the wall clock of a shared
/// machine may be stepped by other tests).
fn child() {
    let spec = std::env::var("CHATAPP_CROWD_STORE").expect("store");
    let base = std::env::var("CHATAPP_CROWD_BASE").expect("base");
    let server_credentials = Credentials::new(
        chatapp_session::testing::DEFAULT_EMAIL,
        chatapp_session::testing::DEFAULT_PASSWORD,
        chatapp_session::testing::DEFAULT_APP_ID,
    );
    let session = session(&spec, &base, server_credentials);
    session.access_token().expect("the stored pair");
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("go");
    assert_eq!(line.trim(), "go");
    match session.request("GET", "/v1/licenses", None) {
        Ok(_) => println!("done"),
        Err(e) => println!("failed {e}"),
    }
    std::io::stdout().flush().expect("stdout");
}

/// One crowd of `n` processes on `spec`: the finish times (ns after the common start),
/// sorted. With `expire`, the server kills the access token they hold just before the start
/// (one refresh for all); without, their token is good and no process needs the lock: the
/// floor that process start-up, scheduling and HTTP alone cost on this machine.
fn crowd(spec: &str, n: usize, expire: bool) -> Vec<f64> {
    let server = FakeChatApp::builder()
        .threads(64)
        .start()
        .expect("FakeChatApp");
    let seeded = fresh_session(spec, &server);
    seeded.access_token().expect("the first make");
    let exe = std::env::current_exe().expect("the bench binary");
    let mut children: Vec<Child> = (0..n)
        .map(|_| {
            Command::new(&exe)
                .env(CHILD_ENV, "1")
                .env("CHATAPP_CROWD_STORE", spec)
                .env("CHATAPP_CROWD_BASE", server.base_url())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a child")
        })
        .collect();
    // One reader thread per child stamps each line on arrival.
    let (tx, rx) = mpsc::channel::<(usize, String, Instant)>();
    for (id, child) in children.iter_mut().enumerate() {
        let stdout = child.stdout.take().expect("stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send((id, line, Instant::now()));
            }
        });
    }
    drop(tx);
    let mut ready = 0;
    while ready < n {
        let (_, line, _) = rx.recv().expect("a child ended before it was ready");
        assert_eq!(line.trim(), "ready", "a child failed to start: {line}");
        ready += 1;
    }
    if expire {
        // The moment of expiry: the token every child holds is dead from now on.
        server.revoke_access_tokens();
    }
    server.reset_counters();
    let start = Instant::now();
    for child in &mut children {
        let stdin = child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "go").expect("send go");
    }
    let mut finished = Vec::with_capacity(n);
    while finished.len() < n {
        let (id, line, at) = rx.recv().expect("a child ended without an answer");
        match line.as_str() {
            "done" => finished.push(at.duration_since(start).as_nanos() as f64),
            other => panic!("{spec}: child {id}: {other}"),
        }
    }
    for child in &mut children {
        assert!(child.wait().expect("wait").success(), "a child failed");
    }
    let c = server.counters();
    assert_eq!(
        (c.refreshes, c.refreshes_rejected, c.makes),
        (u64::from(expire), 0, 0),
        "{spec}: one refresh for the crowd: {c:?}"
    );
    assert_eq!(finished.len(), n);
    finished.sort_by(f64::total_cmp);
    finished
}

/// The median ns of one `load` of a stored record on `spec`.
fn load_ns(spec: &str) -> f64 {
    let server = FakeChatApp::start().expect("FakeChatApp");
    let s = fresh_session(spec, &server);
    s.access_token().expect("make");
    let store = open_store(spec);
    let key: StoreKey = s.store_key().clone();
    let mut samples: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            store.load(&key).expect("load");
            t.elapsed().as_nanos() as f64
        })
        .collect();
    median(&mut samples)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: f64) -> f64 {
    ns / 1e6
}

fn bench_store(name: &str, spec_for: &dyn Fn(usize) -> String) {
    let mut runs = 0;
    let mut next = || {
        runs += 1;
        spec_for(runs)
    };
    let mut singles: Vec<f64> = (0..SINGLE_RUNS)
        .map(|_| crowd(&next(), 1, true)[0])
        .collect();
    let single = median(&mut singles);
    let load = load_ns(&next());
    for n in SIZES {
        let mut results: Vec<Vec<f64>> = (0..RUNS).map(|_| crowd(&next(), n, true)).collect();
        results.sort_by(|a, b| a[a.len() - 1].total_cmp(&b[b.len() - 1]));
        let run = &results[RUNS / 2];
        let last = run[run.len() - 1];
        let mut floors: Vec<f64> = (0..RUNS)
            .map(|_| {
                let run = crowd(&next(), n, false);
                run[run.len() - 1]
            })
            .collect();
        let floor = median(&mut floors);
        let goal = 2.0 * single + n as f64 * load;
        println!(
            "{:<10} {:>4} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>9.3} {:>9.2} {:>10.2}  {}",
            name,
            n,
            ms(percentile(run, 50.0)),
            ms(percentile(run, 99.0)),
            ms(last),
            ms(single),
            ms(load),
            ms(goal),
            ms(floor),
            if last <= goal { "PASS" } else { "FAIL" }
        );
    }
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    println!("crowd at expiry: one call per process at the same moment, one refresh in all");
    println!("(times in ms from the common start; the median of {RUNS} crowds by last call;");
    println!(" no-expiry: the last call of the same crowd when no token has expired: the floor)");
    println!(
        "{:<10} {:>4} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10}  goal: last <= 2 x single + n x load",
        "store", "n", "p50", "p99", "last", "single", "load", "goal", "no-expiry"
    );
    // CHATAPP_CROWD_STORES=file,sqlite,postgres (default: all) picks the stores.
    let wanted = |name: &str| {
        std::env::var("CHATAPP_CROWD_STORES")
            .map(|list| list.split(',').any(|s| s == name))
            .unwrap_or(true)
    };
    let file_dir = dir.path().to_owned();
    if wanted("file") {
        bench_store("file", &|run| {
            format!("file:{}", file_dir.join(format!("f{run}.json")).display())
        });
    }
    #[cfg(feature = "sqlite")]
    if wanted("sqlite") {
        let sqlite_dir = dir.path().to_owned();
        bench_store("sqlite", &|run| {
            format!("sqlite:{}", sqlite_dir.join(format!("s{run}.db")).display())
        });
    }
    #[cfg(not(feature = "sqlite"))]
    println!("note: sqlite skipped: the `sqlite` feature is off");
    #[cfg(feature = "postgres")]
    match std::env::var("CHATAPP_TEST_POSTGRES") {
        // Each crowd has a server of its own on a new port, hence a store key of its own.
        Ok(conninfo) if !conninfo.trim().is_empty() && wanted("postgres") => {
            bench_store("postgres", &|_| format!("postgres:{conninfo}"))
        }
        Ok(_) if !wanted("postgres") => {}
        _ => println!("note: postgres skipped: CHATAPP_TEST_POSTGRES is not set"),
    }
    #[cfg(not(feature = "postgres"))]
    println!("note: postgres skipped: the `postgres` feature is off");
}
