//! Issue 14: a tokens.make that never left the machine does not count against the quota, and
//! attempts that fail before anything is sent back off (1 s doubling to 60 s) instead of
//! hammering. Real sockets on 127.0.0.1: a closed port, a name that does not resolve, a TLS
//! server that drops the handshake; and, as the control, a server that reads the whole request
//! before it drops the connection (the request was sent: it counts).

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use chatapp_session::store::{MemoryStore, StoreKey, TokenStore};
use chatapp_session::testing::FakeChatApp;
use chatapp_session::testing::ManualClock;
use chatapp_session::{Credentials, Delivery, Error, Session};
use support::{closed_port, Door};

const KEY: &str = "offline";
const T0: i64 = 1_800_000_000;

fn credentials() -> Credentials {
    let server_like = chatapp_session::testing::DEFAULT_EMAIL;
    Credentials::new(
        server_like,
        chatapp_session::testing::DEFAULT_PASSWORD,
        chatapp_session::testing::DEFAULT_APP_ID,
    )
}

fn session(base: &str, store: &Arc<MemoryStore>, clock: &ManualClock) -> Session {
    Session::builder()
        .credentials(credentials())
        .store(Arc::clone(store))
        .store_key(KEY)
        .base_url(base)
        .allow_insecure_http(true)
        .clock(clock.clone())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn ledger(store: &MemoryStore) -> Vec<i64> {
    store
        .load(&StoreKey::new(KEY))
        .unwrap()
        .map(|r| r.makes)
        .unwrap_or_default()
}

/// A listener on 127.0.0.1 that runs `serve` on each connection and counts the connections.
fn listener(serve: fn(TcpStream)) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || serve(stream));
        }
    });
    (port, count)
}

/// Reads the TLS ClientHello's first bytes, then closes: the handshake never completes.
fn drop_handshake(mut stream: TcpStream) {
    let mut buf = [0u8; 5];
    let _ = stream.read_exact(&mut buf);
}

/// Reads a whole HTTP request (head and `Content-Length` body), then closes with no reply.
fn read_request_then_drop(mut stream: TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return;
            }
        }
    }
}

/// 20 make attempts against `base`, each after the back-off has passed: every one fails with
/// nothing sent, and the ledger stays empty. Then a session on a real server, sharing the
/// store and key, makes exactly once.
fn twenty_unsent_then_one_real(base: &str) {
    let store = Arc::new(MemoryStore::new());
    let clock = ManualClock::new(T0);
    let offline = session(base, &store, &clock);
    for attempt in 0..20 {
        match offline.access_token() {
            Err(
                e @ (Error::Network {
                    delivery: Delivery::NotSent,
                    ..
                }
                | Error::Timeout {
                    delivery: Delivery::NotSent,
                    ..
                }),
            ) => assert_eq!(e.delivery(), Some(Delivery::NotSent)),
            other => panic!("{base}: attempt {attempt}: {other:?}"),
        }
        clock.advance(61);
    }
    assert_eq!(ledger(&store), Vec::<i64>::new(), "{base}");
    assert_eq!(offline.status().unwrap().makes_last_24h, 0, "{base}");

    let server = FakeChatApp::start().unwrap();
    let online = session(&server.base_url(), &store, &clock);
    online.access_token().unwrap();
    assert_eq!(server.counters().makes, 1, "{base}");
    assert_eq!(ledger(&store).len(), 1, "{base}");
}

#[test]
fn a_closed_port_counts_no_make() {
    twenty_unsent_then_one_real(&format!("http://127.0.0.1:{}", closed_port()));
}

#[test]
fn a_name_that_does_not_resolve_counts_no_make() {
    twenty_unsent_then_one_real("http://chatapp-session-test.invalid:8080");
}

#[test]
fn a_tls_server_that_drops_the_handshake_counts_no_make() {
    let (port, connections) = listener(drop_handshake);
    twenty_unsent_then_one_real(&format!("https://127.0.0.1:{port}"));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        20,
        "every attempt reached the listener"
    );
}

#[test]
fn a_request_that_was_sent_counts_even_without_a_reply() {
    let (port, connections) = listener(read_request_then_drop);
    let store = Arc::new(MemoryStore::new());
    let clock = ManualClock::new(T0);
    let s = session(&format!("http://127.0.0.1:{port}"), &store, &clock);
    for attempt in 0..20 {
        match s.access_token() {
            Err(e) => assert_eq!(
                e.delivery(),
                Some(Delivery::MaybeSent),
                "attempt {attempt}: {e:?}"
            ),
            Ok(_) => panic!("attempt {attempt}: a token from a server that never answers"),
        }
    }
    // No back-off for attempts that may have reached the server: each one went out.
    assert_eq!(connections.load(Ordering::SeqCst), 20);
    assert_eq!(ledger(&store).len(), 20);
    assert_eq!(s.status().unwrap().makes_last_24h, 20);
}

#[test]
fn unsent_makes_back_off_and_calls_inside_the_window_send_nothing() {
    let (port, connections) = listener(drop_handshake);
    let store = Arc::new(MemoryStore::new());
    let clock = ManualClock::new(T0);
    let s = session(&format!("https://127.0.0.1:{port}"), &store, &clock);
    let retry_at = |e: &Error| match e {
        Error::Network {
            delivery: Delivery::NotSent,
            retry_at,
            ..
        } => *retry_at,
        other => panic!("{other:?}"),
    };
    // Five failures, each attempt made as soon as the back-off allows: 1, 2, 4, 8, 16 s.
    let mut expected_wait = 1;
    for attempt in 1..=5 {
        let e = s.access_token().unwrap_err();
        assert_eq!(
            retry_at(&e),
            Some(clock_now(&clock) + expected_wait),
            "attempt {attempt}"
        );
        assert_eq!(connections.load(Ordering::SeqCst), attempt);
        if attempt < 5 {
            clock.advance(expected_wait);
            expected_wait *= 2;
        }
    }
    // Inside the 16 s window: every call fails at once, says when, and sends nothing.
    let until = clock_now(&clock) + 16;
    for _ in 0..15 {
        let e = s.access_token().unwrap_err();
        assert_eq!(retry_at(&e), Some(until));
        assert!(e.to_string().contains("never left this machine"), "{e}");
        clock.advance(1);
    }
    assert_eq!(connections.load(Ordering::SeqCst), 5);
    // At the end of the window the next attempt goes out.
    clock.advance(1);
    let e = s.access_token().unwrap_err();
    assert_eq!(retry_at(&e), Some(clock_now(&clock) + 32));
    assert_eq!(connections.load(Ordering::SeqCst), 6);
    assert_eq!(ledger(&store), Vec::<i64>::new());
}

fn clock_now(clock: &ManualClock) -> i64 {
    chatapp_session::Clock::now(clock)
}

/// Found by the soak's review (issue 15): a refresh token the server refused while tokens.make
/// backs off (the last attempt never left this machine) is forgotten in the store all the
/// same, so that no later call, in this process or another, sends it again.
#[test]
fn a_refused_pair_is_forgotten_while_makes_back_off() {
    let server = FakeChatApp::start().unwrap();
    let door = Door::closed(&server.base_url());
    let store = Arc::new(MemoryStore::new());
    let clock = ManualClock::new(T0);
    let s = session(&door.url(), &store, &clock);
    // Nothing stored and the network down: the make never leaves, and backs off 1 s.
    let e = s.access_token().unwrap_err();
    assert_eq!(e.delivery(), Some(Delivery::NotSent), "{e:?}");
    // Another process stores a pair meanwhile, which the server then revokes.
    let key = StoreKey::new(KEY);
    {
        let mut guard = store.lock(&key).unwrap();
        let mut record = guard.load().unwrap().unwrap_or_default();
        record.pair = Some(server.issue_pair());
        guard.save(&record).unwrap();
    }
    server.revoke_all();
    door.open();
    // The network is back, the back-off window is not over (the clock stands still): the
    // dead access token is refused, the refresh is refused, the make waits for its window.
    for call in 0..3 {
        let e = s.request("GET", "/v1/licenses", None).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Network {
                    delivery: Delivery::NotSent,
                    ..
                }
            ),
            "call {call}: {e:?}"
        );
        let stored = store.load(&key).unwrap().unwrap();
        assert!(
            stored.pair.is_none(),
            "call {call}: the refused pair is still stored"
        );
    }
    support::assert_counters!(server, refreshes_rejected: 1, makes: 0);
    // Once the window is over, one make.
    clock.advance(2);
    s.request("GET", "/v1/licenses", None).unwrap();
    assert_eq!(server.counters().makes, 1);
    assert_eq!(ledger(&store).len(), 1);
}
