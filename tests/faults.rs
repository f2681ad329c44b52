//! Server faults on tokens.make, tokens.refresh and an ordinary call, seen by the library and
//! by the `chatapp` CLI (a real child process): 500/502 with an HTML body, malformed JSON, a
//! reply missing `accessToken`, wrong types, a dropped connection, a delay past the timeout,
//! a 64 MiB reply (with and without `Content-Length`). Each gives a typed error (the CLI: exit
//! 5 and one short line on stderr), keeps the stored pair, spends no make that the fault did
//! not cause, and the next call succeeds once the server behaves.
//!
//! `tests/session.rs` already covers the library on tokens.refresh and most faults on
//! ordinary calls; here are tokens.make, the remaining ordinary-call faults, every fault
//! through the CLI, the lost refresh reply through the CLI, and peak memory on a huge reply.

mod support;

use std::time::Duration;

use chatapp_session::store::{FileStore, TokenStore};
use chatapp_session::testing::{FakeChatApp, Fault};
use chatapp_session::{Endpoint, Error, Session};

use support::child::{self, Params};
use support::{
    cli_key, file_record, seed_pair, timeout_for, wait_until, Cli, FAULT_DELAY, FAULT_TIMEOUT,
};

/// 64 MiB.
const HUGE: u64 = 64 << 20;

/// Every fault of the matrix.
fn faults() -> Vec<Fault> {
    vec![
        Fault::ServerError(500),
        Fault::ServerError(502),
        Fault::MalformedJson,
        Fault::MissingField("accessToken".into()),
        Fault::WrongTypes,
        Fault::DropConnection,
        Fault::Delay(FAULT_DELAY),
        Fault::Huge {
            bytes: HUGE,
            declare_length: true,
        },
        Fault::Huge {
            bytes: HUGE,
            declare_length: false,
        },
    ]
}

/// Whether the fake server does the work despite the fault (issues, rotates, serves): a
/// spoilt token reply, or a reply that comes after the client gave up.
fn server_does_the_work(on: Endpoint, fault: &Fault) -> bool {
    match fault {
        Fault::Delay(_) => true,
        Fault::MissingField(_) | Fault::WrongTypes => on != Endpoint::Request,
        _ => false,
    }
}

/// Whether a failed tokens.make stays in the local ledger. `Inner::make` documents it: the
/// attempt counts unless the server clearly answered (an error status, a 5xx included),
/// since a garbled or lost reply may hide a pair the server issued and counted.
fn make_counted_locally(fault: &Fault) -> bool {
    !matches!(fault, Fault::ServerError(_))
}

/// Whether `err` is the typed error `fault` on `on` must give.
fn is_expected(on: Endpoint, fault: &Fault, err: &Error) -> bool {
    let protocol = |needle: &str| {
        matches!(err, Error::Protocol { endpoint: e, status: 200, detail }
            if *e == on && detail.contains(needle))
    };
    match fault {
        Fault::ServerError(status) => {
            matches!(err, Error::Server(a) if a.status == *status && a.endpoint == on)
        }
        Fault::MalformedJson => protocol("not valid JSON"),
        Fault::MissingField(_) if on == Endpoint::Request => protocol("envelope"),
        Fault::MissingField(field) => protocol(field),
        Fault::WrongTypes if on == Endpoint::Request => protocol("envelope"),
        Fault::WrongTypes => protocol("accessTokenEndTime"),
        Fault::DropConnection if on == Endpoint::Refresh => {
            matches!(err, Error::RefreshReplyLost { source }
                if matches!(**source, Error::Network { endpoint: Endpoint::Refresh, .. }))
        }
        Fault::DropConnection => {
            matches!(err, Error::Network { endpoint: e, .. } if *e == on)
        }
        Fault::Delay(_) if on == Endpoint::Refresh => {
            matches!(err, Error::RefreshReplyLost { source }
                if matches!(**source, Error::Timeout { endpoint: Endpoint::Refresh, .. }))
        }
        Fault::Delay(_) => matches!(err, Error::Timeout { endpoint: e, .. } if *e == on),
        Fault::Huge { .. } => protocol("cap"),
        other => panic!("no expectation for {other:?}"),
    }
}

/// What the CLI's error line must say for `fault` on `on` (besides the call's name).
fn cli_says(on: Endpoint, fault: &Fault) -> String {
    match fault {
        Fault::ServerError(status) => {
            format!("server failure: {} answered HTTP {status}", on)
        }
        Fault::MalformedJson => "not valid JSON".into(),
        Fault::MissingField(_) | Fault::WrongTypes if on == Endpoint::Request => {
            "without the success/data/error envelope".into()
        }
        Fault::MissingField(field) => format!("`{field}` is missing"),
        Fault::WrongTypes => "`accessTokenEndTime` is missing or not an integer".into(),
        Fault::DropConnection if on == Endpoint::Refresh => {
            "the reply to tokens.refresh was lost".into()
        }
        Fault::DropConnection => "network failure".into(),
        Fault::Delay(_) if on == Endpoint::Refresh => "the reply to tokens.refresh was lost".into(),
        Fault::Delay(_) => "no reply within".into(),
        Fault::Huge { .. } => "byte cap".into(),
        other => panic!("no expectation for {other:?}"),
    }
}

fn server() -> FakeChatApp {
    FakeChatApp::start().expect("fake server")
}

fn session(server: &FakeChatApp, store: &FileStore, timeout: Duration) -> Session {
    Session::builder()
        .credentials(server.credentials())
        .store(store.clone())
        .base_url(server.base_url())
        .timeout(timeout)
        .build()
        .expect("session")
}

/// Waits until a delayed request has been served, so that what it did server-side is known.
fn wait_for_server(server: &FakeChatApp, what: &str, done: impl Fn(&FakeChatApp) -> bool) {
    assert!(
        wait_until(FAULT_DELAY * 4, || done(server)),
        "{what}: the server never finished the delayed request: {:?}",
        server.counters()
    );
}

#[test]
fn faults_on_make_are_typed_keep_no_pair_and_the_next_call_makes() {
    for fault in faults() {
        let what = format!("tokens.make {fault:?}");
        let server = server();
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("s.json"));
        server.inject(Endpoint::Make, fault.clone());
        let short = session(&server, &store, timeout_for(&fault));
        let err = short.request("GET", "/v1/licenses", None).unwrap_err();
        assert!(is_expected(Endpoint::Make, &fault, &err), "{what}: {err:?}");
        assert!(!err.to_string().contains('\n'), "{what}: {err}");

        // Still no pair; the attempt is in the ledger unless the server clearly refused it.
        let record = store.load(short.store_key()).unwrap();
        assert_eq!(
            record.as_ref().and_then(|r| r.pair.as_ref()),
            None,
            "{what}"
        );
        let counted = u32::from(make_counted_locally(&fault));
        assert_eq!(short.status().unwrap().makes_last_24h, counted, "{what}");
        if server_does_the_work(Endpoint::Make, &fault) {
            wait_for_server(&server, &what, |s| s.counters().makes == 1);
        } else {
            assert_eq!(server.counters().makes, 0, "{what}: a pair was issued");
        }
        let issued_before = server.counters().makes;

        // The server behaves again: the next call makes one pair, saves it and succeeds.
        let normal = session(&server, &store, FAULT_TIMEOUT);
        let data = normal.request("GET", "/v1/licenses", None).unwrap();
        assert!(data.is_array(), "{what}: {data}");
        assert_eq!(server.counters().makes, issued_before + 1, "{what}");
        assert_eq!(
            normal.status().unwrap().makes_last_24h,
            counted + 1,
            "{what}"
        );
        let stored = store.load(normal.store_key()).unwrap().and_then(|r| r.pair);
        assert_eq!(
            stored.map(|p| p.access),
            Some(normal.access_token().unwrap()),
            "{what}: the new pair was not saved"
        );
    }
}

#[test]
fn more_faults_on_ordinary_calls_keep_the_pair_and_spend_no_auth_call() {
    // tests/session.rs covers 500, malformed JSON, a missing `success`, a dropped connection,
    // a delay and an undeclared huge body on ordinary calls; these are the rest.
    let cases = [
        Fault::ServerError(502),
        Fault::MissingField("accessToken".into()),
        Fault::WrongTypes,
        Fault::Huge {
            bytes: HUGE,
            declare_length: true,
        },
    ];
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("s.json"));
    let seeded = seed_pair(&server, &store);
    let session = session(&server, &store, FAULT_TIMEOUT);
    for fault in cases {
        let what = format!("request {fault:?}");
        server.inject(Endpoint::Request, fault.clone());
        let err = session.request("GET", "/v1/licenses", None).unwrap_err();
        assert!(
            is_expected(Endpoint::Request, &fault, &err),
            "{what}: {err:?}"
        );
        assert_eq!(
            store.load(&cli_key(&server)).unwrap(),
            Some(seeded.clone()),
            "{what}"
        );
        session.request("GET", "/v1/licenses", None).unwrap();
    }
    support::assert_counters!(server, makes: 0, refreshes: 0, refreshes_rejected: 0);
}

/// Every fault on `on` through the CLI: exit 5, one short line naming the call and the
/// failure, the stored pair unchanged, no make, then a plain call exits 0.
fn cli_faults_on(on: Endpoint) {
    for fault in faults() {
        let what = format!("{} {fault:?}", on);
        let server = server();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let cli = Cli::file(&server, &path);
        let seeded = match on {
            Endpoint::Make => None,
            _ => Some(seed_pair(&server, &FileStore::new(&path))),
        };
        if on == Endpoint::Refresh {
            server.revoke_access_tokens();
        }
        server.inject(on, fault.clone());

        let timeout = timeout_for(&fault).as_secs().to_string();
        let mut args = vec!["--timeout", timeout.as_str()];
        match on {
            Endpoint::Make => args.push("login"),
            _ => args.extend(["call", "GET", "/v1/licenses"]),
        }
        let run = cli.run(&args);
        run.expect_code(5, &what);
        assert_eq!(run.stdout, "", "{what}");
        let line = run.one_error_line(&what);
        assert!(line.contains(&on.to_string()), "{what}: {line}");
        let says = cli_says(on, &fault);
        assert!(
            line.contains(&says),
            "{what}: {line:?} does not say {says:?}"
        );
        assert_eq!(server.pending_faults(on), 0, "{what}: fault not served");

        // The pair is as it was; no make was spent but by a make fault itself.
        let record = file_record(&server, &path);
        match (&seeded, on) {
            (None, _) => {
                assert_eq!(
                    record.as_ref().and_then(|r| r.pair.as_ref()),
                    None,
                    "{what}"
                );
                let counted = usize::from(make_counted_locally(&fault));
                assert_eq!(record.map_or(0, |r| r.makes.len()), counted, "{what}");
            }
            (Some(seeded), _) => assert_eq!(record.as_ref(), Some(seeded), "{what}"),
        }
        let work = server_does_the_work(on, &fault);
        match (on, work) {
            (Endpoint::Make, true) => wait_for_server(&server, &what, |s| s.counters().makes == 1),
            (Endpoint::Refresh, true) => {
                wait_for_server(&server, &what, |s| s.counters().refreshes == 1)
            }
            (Endpoint::Request, true) => {
                wait_for_server(&server, &what, |s| s.counters().requests == 1)
            }
            _ => {}
        }
        let before = server.counters();
        assert_eq!(
            before.makes,
            u64::from(on == Endpoint::Make && work),
            "{what}"
        );

        // The server behaves again: the next call succeeds.
        let run = cli.run(&["call", "GET", "/v1/licenses"]);
        run.expect_code(0, &format!("{what}, then a plain call"));
        let data: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        assert!(data.is_array(), "{what}: {data}");
        let after = server.counters();
        // A make is needed when there was no pair, or when the faulty refresh had rotated
        // the stored pair server-side (its reply spoilt or too late): then one, no more.
        let rotated_away = on == Endpoint::Refresh && work;
        let makes = u64::from(on == Endpoint::Make || rotated_away);
        assert_eq!(after.makes - before.makes, makes, "{what}: {after:?}");
        assert_eq!(
            after.refreshes_rejected - before.refreshes_rejected,
            u64::from(rotated_away),
            "{what}: {after:?}"
        );
        let record = file_record(&server, &path).and_then(|r| r.pair);
        assert!(record.is_some(), "{what}: no pair after recovery");
    }
}

#[test]
fn cli_faults_on_make_exit_5_with_one_line() {
    cli_faults_on(Endpoint::Make);
}

#[test]
fn cli_faults_on_refresh_exit_5_with_one_line() {
    cli_faults_on(Endpoint::Refresh);
}

#[test]
fn cli_faults_on_ordinary_calls_exit_5_with_one_line() {
    cli_faults_on(Endpoint::Request);
}

#[test]
fn cli_lost_refresh_reply_says_so_and_the_next_call_recovers_with_one_make() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let cli = Cli::file(&server, &path);
    let seeded = seed_pair(&server, &FileStore::new(&path));
    server.revoke_access_tokens();
    server.inject(Endpoint::Refresh, Fault::LostReply);

    let run = cli.run(&["call", "GET", "/v1/licenses"]);
    run.expect_code(5, "lost refresh reply");
    let line = run.one_error_line("lost refresh reply");
    assert!(
        line.contains("the reply to tokens.refresh was lost"),
        "{line}"
    );
    assert!(line.contains("will make a new pair"), "{line}");
    assert_eq!(file_record(&server, &path), Some(seeded.clone()));
    support::assert_counters!(server, refreshes: 1, refreshes_rejected: 0, makes: 0);

    // The stored refresh token was rotated away: one rejected refresh, one make, success.
    cli.run(&["call", "GET", "/v1/licenses"])
        .expect_code(0, "after a lost refresh reply");
    support::assert_counters!(server, refreshes: 1, refreshes_rejected: 1, makes: 1);
    let record = file_record(&server, &path).unwrap();
    assert_ne!(record.pair, seeded.pair);
    assert_eq!(record.makes.len(), 1, "the make is in the ledger");

    // And then nothing more: the new pair just works.
    for _ in 0..3 {
        cli.run(&["call", "GET", "/v1/licenses"])
            .expect_code(0, "later calls");
    }
    support::assert_counters!(server, refreshes: 1, refreshes_rejected: 1, makes: 1);
}

/// The peak resident memory (KiB) that `/usr/bin/time -f %M` wrote.
fn peak_kib(file: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .rev()
        .find_map(|l| l.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak memory in {text:?}"))
}

#[test]
fn cli_peak_memory_stays_small_on_a_64_mib_reply() {
    if !std::path::Path::new("/usr/bin/time").is_file() {
        eprintln!("skipped: /usr/bin/time is missing (Debian package `time`); the library's peak is checked by library_peak_memory_stays_small_on_a_64_mib_reply");
        return;
    }
    for on in [Endpoint::Make, Endpoint::Refresh, Endpoint::Request] {
        for declare_length in [true, false] {
            let what = format!("{} 64 MiB, Content-Length {declare_length}", on);
            let server = server();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.json");
            let mut cli = Cli::file(&server, &path);
            cli.time_file = Some(dir.path().join("peak"));
            if on != Endpoint::Make {
                seed_pair(&server, &FileStore::new(&path));
            }
            if on == Endpoint::Refresh {
                server.revoke_access_tokens();
            }
            server.inject(
                on,
                Fault::Huge {
                    bytes: HUGE,
                    declare_length,
                },
            );
            let run = cli.run(&["call", "GET", "/v1/licenses"]);
            run.expect_code(5, &what);
            assert!(run.stderr.contains("byte cap"), "{what}: {}", run.stderr);
            let peak = peak_kib(&dir.path().join("peak"));
            eprintln!("{what}: peak RSS {peak} KiB");
            assert!(
                peak < 40 * 1024,
                "{what}: the CLI peaked at {peak} KiB: the reply was not cut at the 4 MiB cap"
            );
        }
    }
}

/// In a child: one call that meets the huge reply (a pair is stored), then the error's kind
/// and this process's own peak memory (`VmHWM`, KiB) on stdout.
#[test]
#[ignore = "child process entry: started by this file's tests"]
fn child_process() {
    child::entry("child_process");
    let store = FileStore::new(child::param("store"));
    let cap: u64 = child::parsed("cap");
    let session = Session::builder()
        .store(store)
        .store_key(child::param("key"))
        .base_url(child::param("base"))
        .max_reply_bytes(cap)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    match session.request("GET", "/v1/licenses", None) {
        Err(Error::Protocol { .. }) => println!("error protocol"),
        other => println!("error other {other:?}"),
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .to_owned();
    println!("vmhwm {hwm}");
}

/// Runs [`child_process`] with the reply cap `cap` against a 64 MiB reply without a length:
/// its peak memory in KiB.
#[cfg(target_os = "linux")]
fn child_peak_kib(cap: u64) -> u64 {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    seed_pair(&server, &FileStore::new(&path));
    server.inject(
        Endpoint::Request,
        Fault::Huge {
            bytes: HUGE,
            declare_length: false,
        },
    );
    let output = child::command("child_process")
        .param("store", &path)
        .param("base", server.base_url())
        .param("cap", cap.to_string())
        .param("key", cli_key(&server).as_str())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    assert!(stdout.contains("error protocol"), "{stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("vmhwm "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {stdout}"))
}

#[test]
#[cfg(target_os = "linux")]
fn library_peak_memory_stays_small_on_a_64_mib_reply() {
    // The default 4 MiB cap: reading stops there.
    let capped = child_peak_kib(4 * 1024 * 1024); // the default reply cap
                                                  // The control: with the cap above the reply, the same call holds all 64 MiB, which shows
                                                  // that this measure would catch a cap that does not stop the reading.
    let uncapped = child_peak_kib(2 * HUGE);
    eprintln!("peak RSS: {capped} KiB with the 4 MiB cap, {uncapped} KiB without");
    assert!(
        uncapped > 64 * 1024,
        "the control read all 64 MiB: {uncapped} KiB"
    );
    assert!(
        capped < 40 * 1024,
        "the library peaked at {capped} KiB on a 64 MiB reply: not cut at the cap"
    );
}
