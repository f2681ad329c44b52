//! Auth-call efficiency: 30 server days of an application calling `GET /v1/licenses` from 8
//! callers every 3 hours must cost exactly the minimum of auth calls: one tokens.make in all,
//! one tokens.refresh per access-token lifetime, no refused refresh, no dead token sent.
//!
//! Counted, not timed: the FakeChatApp's clock and the sessions' clocks are `ManualClock`s
//! that move only when the test moves them, and the server counts every call.
//!
//! The same is checked for 4 real processes (this test binary re-run as a child) sharing a
//! file store, then a SQLite store. The parent owns the server and its clock; at every tick it
//! sends the server's time to each child on its stdin, and the child sets its own
//! `ManualClock` to it before calling.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use chatapp_session::store::TokenStore;
use chatapp_session::testing::ManualClock;
use chatapp_session::testing::{Counters, FakeChatApp, Rotation};
use chatapp_session::Clock;
use chatapp_session::Session;

mod support;
use support::child::{self, Params};
use support::open_store;

const HOUR: i64 = 3_600;
const DAY: i64 = 24 * HOUR;
/// How long the simulation runs, in server time.
const DAYS: i64 = 30;
/// The application calls at every tick.
const TICK: i64 = 3 * HOUR;
/// Callers at every tick: threads of one process, or processes x threads.
const CALLERS: usize = 8;
/// The FakeChatApp's defaults, spelt out: what the expected counts are derived from.
const ACCESS_LIFETIME: i64 = DAY;
const REFRESH_LIFETIME: i64 = 14 * DAY;
/// The session's default policy: a token counts as ended this long before its end time, and
/// a pair is refreshed on use once its refresh token has less than this left.
const EXPIRY_MARGIN: i64 = 60;
const REFRESH_AHEAD: i64 = DAY;
/// Where the shared clock starts (any time will do; a round one reads better in failures).
const T0: i64 = 1_750_000_000;

const PROCESSES: usize = 4;
const THREADS_PER_PROCESS: usize = CALLERS / PROCESSES;
/// Starts a child's answer to a tick (the test harness may print on the same line before it).
const DONE: &str = "tick-done ";

/// The ticks: `DAYS * DAY / TICK` of them, the first at `T0`.
const TICKS: i64 = DAYS * DAY / TICK;

// A refresh token is used about one access lifetime after it is issued: it must then be
// further than `REFRESH_AHEAD` from its end, or the refresh-ahead rule would add refreshes.
const _: () = assert!(REFRESH_LIFETIME - ACCESS_LIFETIME > REFRESH_AHEAD);

/// The least the server can see over the run: (makes, refreshes).
///
/// One make at the first tick, as nothing is stored. A pair got at a tick `t` is handed out
/// unasked while `now < t + ACCESS_LIFETIME - EXPIRY_MARGIN`, so it serves the ticks
/// `t, t + TICK, ...` below that: `ceil((ACCESS_LIFETIME - EXPIRY_MARGIN) / TICK)` ticks
/// (ceil(86 340 / 10 800) = 8, i.e. t .. t + 21 h), and the tick after them (t + 24 h) refreshes
/// once. The refresh token never gets within `REFRESH_AHEAD` of its end (each refresh brings
/// one with `REFRESH_LIFETIME` = 14 days, and it is used a day later), so no other refresh.
/// So the `TICKS` ticks (240) use `ceil(TICKS / ticks_per_pair)` pairs (30): the first from the
/// make, every other from one refresh (29).
fn minimum_auth_calls() -> (u64, u64) {
    let ticks_per_pair = (ACCESS_LIFETIME - EXPIRY_MARGIN + TICK - 1) / TICK;
    let pairs = (TICKS + ticks_per_pair - 1) / ticks_per_pair;
    (1, u64::try_from(pairs - 1).unwrap())
}

/// A FakeChatApp on `clock`, with its lifetimes, strict rotation and quota spelt out.
fn server(clock: &ManualClock) -> FakeChatApp {
    FakeChatApp::builder()
        .clock(clock.clone())
        .access_lifetime(ACCESS_LIFETIME)
        .refresh_lifetime(REFRESH_LIFETIME)
        .rotation(Rotation::Strict)
        .make_limit(100)
        .start()
        .unwrap()
}

fn session(base_url: &str, clock: &ManualClock, store: Box<dyn TokenStore>) -> Session {
    Session::builder()
        .credentials(support::default_credentials())
        .store(store)
        .base_url(base_url)
        .clock(clock.clone())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `threads` threads each call `GET /v1/licenses` once, all at once; the errors, as text.
fn call_from_threads(session: &Session, threads: usize) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| session.request("GET", "/v1/licenses", None)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap().err().map(|e| e.to_string()))
            .collect()
    })
}

/// Checks the server's counters after the run against the minimum.
fn assert_minimum(what: &str, c: &Counters) {
    let (makes, refreshes) = minimum_auth_calls();
    assert_eq!((makes, refreshes), (1, 29), "the derivation above");
    assert_eq!(
        (c.makes, c.refreshes, c.refreshes_rejected),
        (makes, refreshes, 0),
        "{what}: {c:?}"
    );
    // Every call got through with a live token: none was refused and sent again.
    let calls = u64::try_from(TICKS).unwrap() * CALLERS as u64;
    assert_eq!(
        (c.requests, c.invalid_token_replies),
        (calls, 0),
        "{what}: {c:?}"
    );
    assert_eq!(c.makes_rejected, 0, "{what}: {c:?}");
}

#[test]
fn thirty_days_of_eight_threads_cost_one_make_and_one_refresh_per_lifetime() {
    let clock = ManualClock::new(T0);
    let server = server(&clock);
    let session = session(
        &server.base_url(),
        &clock,
        Box::new(chatapp_session::store::MemoryStore::new()),
    );
    for tick in 0..TICKS {
        if tick > 0 {
            clock.advance(TICK);
        }
        let errors = call_from_threads(&session, CALLERS);
        assert!(errors.is_empty(), "tick {tick}: {errors:?}");
    }
    assert_eq!(clock.now(), T0 + (TICKS - 1) * TICK);
    assert_minimum("one process, 8 threads", &server.counters());
}

/// The child: for every `tick SECS` line on stdin, sets its clock to SECS, calls from
/// `THREADS_PER_PROCESS` threads at once, and answers `tick-done N-ERRORS [first error]`.
#[test]
#[ignore = "child process entry: started by this file's tests"]
fn child_process() {
    child::entry("child_process");
    let clock = ManualClock::new(0);
    let session = session(
        &child::param("base"),
        &clock,
        open_store(&child::param("store")),
    );
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let Some(secs) = line.strip_prefix("tick ") else {
            break;
        };
        clock.set(secs.parse().unwrap());
        let errors = call_from_threads(&session, THREADS_PER_PROCESS);
        writeln!(
            out,
            "{DONE}{} {}",
            errors.len(),
            errors.first().map_or("", String::as_str)
        )
        .unwrap();
        out.flush().unwrap();
    }
}

struct ChildProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildProcess {
    fn spawn(spec: &str, base_url: &str) -> ChildProcess {
        let mut child = child::command("child_process")
            .param("store", spec)
            .param("base", base_url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        ChildProcess {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
        }
    }

    /// The child's answer to the tick: the number of failed calls and the first error.
    fn answer(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "a child died"
            );
            // The test harness prints its own text around the child's.
            if let Some((_, answer)) = line.split_once(DONE) {
                return answer.trim_end().to_owned();
            }
        }
    }
}

/// 4 processes x 2 threads on one shared store, the same 30 days.
fn four_processes_cost_the_minimum(spec: &str) {
    let clock = ManualClock::new(T0);
    let server = server(&clock);
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|_| ChildProcess::spawn(spec, &server.base_url()))
        .collect();
    for tick in 0..TICKS {
        if tick > 0 {
            clock.advance(TICK);
        }
        // Every child gets the tick before any answers: they call at the same time.
        for child in &mut children {
            writeln!(child.stdin, "tick {}", server.now()).unwrap();
            child.stdin.flush().unwrap();
        }
        for child in &mut children {
            assert_eq!(child.answer(), "0", "{spec}, tick {tick}");
        }
    }
    for mut child in children {
        writeln!(child.stdin, "exit").unwrap();
        drop(child.stdin);
        assert!(child.child.wait().unwrap().success());
    }
    assert_minimum(spec, &server.counters());
}

#[cfg(feature = "file")]
#[test]
fn thirty_days_of_four_processes_on_a_file_store_cost_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    four_processes_cost_the_minimum(&format!(
        "file:{}",
        dir.path().join("session.json").display()
    ));
}

#[cfg(feature = "sqlite")]
#[test]
fn thirty_days_of_four_processes_on_a_sqlite_store_cost_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    four_processes_cost_the_minimum(&format!(
        "sqlite:{}",
        dir.path().join("session.db").display()
    ));
}
