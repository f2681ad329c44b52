//! A server that trickles its reply, one byte a second, is cut off within the documented bound
//! (the session's timeout: the phase budgets add up to it), for tokens.make, tokens.refresh and
//! an ordinary call.
//!
//! The server is a plain `TcpListener` on 127.0.0.1 (FakeChatApp answers at once or not at
//! all). It trickles three ways: the whole reply (the wait for the headers runs out), the body
//! after prompt headers (the body's budget runs out), and the last bytes of the headers then
//! the body (the exchange crosses from one phase to the next; the budgets still add up to the
//! timeout). A bound that restarted with every byte (a per-read timeout) would let each of
//! these run for a minute.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chatapp_session::store::{MemoryStore, StoredRecord, TokenStore};
use chatapp_session::{
    AccessToken, Credentials, Endpoint, Error, RefreshToken, Session, TokenPair,
};

/// The session's bound on one exchange.
const TIMEOUT: Duration = Duration::from_secs(4);
/// Scheduling slack on a busy machine, on top of the bound.
const SLACK: Duration = Duration::from_millis(1500);
/// How long the server would trickle if nobody cut it off (a byte a second).
const REPLY_BYTES: usize = 60;

/// What the server trickles, one byte a second.
#[derive(Clone, Copy, Debug)]
enum Trickle {
    /// The whole reply, from the status line on.
    Whole,
    /// The body, after headers sent at once.
    Body,
    /// The headers' last two bytes, then the body.
    HeadEndThenBody,
}

const ALL: [Trickle; 3] = [Trickle::Whole, Trickle::Body, Trickle::HeadEndThenBody];

impl Trickle {
    /// The earliest the exchange can be cut off: when the budget of the phase that stalls
    /// runs out (half the timeout to receive the headers, 3/20 to receive the body, which
    /// here starts once the second trickled byte has ended the headers).
    fn earliest_cut(self) -> Duration {
        match self {
            Trickle::Whole => TIMEOUT / 2,
            Trickle::Body => TIMEOUT / 20 * 3,
            Trickle::HeadEndThenBody => Duration::from_secs(1) + TIMEOUT / 20 * 3,
        }
    }
}

/// A server on 127.0.0.1 that trickles its reply to `trickled` (a path) and refuses every
/// other call's token at once, as ChatApp does (`ApiInvalidTokenError`). It serves at most 8
/// connections, for at most 30 s, then stops by itself.
struct TrickleServer {
    url: String,
    /// Requests to the trickled path received.
    trickled: Arc<AtomicUsize>,
}

impl TrickleServer {
    fn start(trickled: &'static str, how: Trickle) -> TrickleServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(30);
            let mut served = 0;
            while served < 8 && Instant::now() < until {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        let seen = Arc::clone(&seen);
                        thread::spawn(move || serve(stream, trickled, how, &seen));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TrickleServer {
            url,
            trickled: count,
        }
    }
}

/// Serves requests on one kept-alive connection until it trickles or the peer goes.
fn serve(mut stream: TcpStream, trickled: &str, how: Trickle, seen: &AtomicUsize) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.set_nodelay(true);
    while let Some(path) = read_request(&mut stream) {
        if path == trickled {
            seen.fetch_add(1, Ordering::SeqCst);
            trickle(&mut stream, how);
            return;
        }
        let body = r#"{"success":false,"error":{"code":"ApiInvalidTokenError","message":"Invalid Token"}}"#;
        let reply = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads one request (head and `Content-Length` body); its path, or `None` once the peer
/// closes or sends nonsense.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let head = String::from_utf8(head).ok()?;
    let path = head.split_whitespace().nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some(path)
}

/// Sends a 200 reply, the part `how` says one byte a second, until done or the peer goes.
fn trickle(stream: &mut TcpStream, how: Trickle) {
    let body = format!(
        r#"{{"success":true,"data":{{"pad":"{}"}}}}"#,
        "x".repeat(REPLY_BYTES)
    );
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let bytes = reply.as_bytes();
    let head_len = reply.len() - body.len();
    let prompt = match how {
        Trickle::Whole => 0,
        Trickle::Body => head_len,
        Trickle::HeadEndThenBody => head_len - 2,
    };
    if stream.write_all(&bytes[..prompt]).is_err() {
        return;
    }
    // At most REPLY_BYTES seconds; a write fails soon after the client has given up.
    for b in bytes[prompt..].iter().take(REPLY_BYTES) {
        if stream.write_all(&[*b]).is_err() {
            return;
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// A pair usable until 2096.
fn far_future_pair() -> TokenPair {
    TokenPair {
        access: AccessToken::new("a".repeat(64)),
        access_expires_at: 4_000_000_000,
        refresh: RefreshToken::new("r".repeat(64)),
        refresh_expires_at: 4_000_000_000,
        cabinet_user_id: 14545,
    }
}

/// A session on `server` with the bound under test; `stored` puts a usable pair in its store.
fn session(server: &TrickleServer, stored: bool) -> Session {
    let store = MemoryStore::new();
    let session = Session::builder()
        .credentials(Credentials::new("user@example.com", "pw", "app_1_1"))
        .store(store.clone())
        .base_url(&server.url)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    if stored {
        let record = StoredRecord {
            pair: Some(far_future_pair()),
            ..StoredRecord::default()
        };
        store.save(session.store_key(), &record).unwrap();
    }
    session
}

/// The timeout `err` reports (itself, or what a lost refresh reply wraps).
fn timeout_in(err: &Error) -> Option<Endpoint> {
    match err {
        Error::Timeout { endpoint, .. } => Some(*endpoint),
        Error::RefreshReplyLost { source } => timeout_in(source),
        _ => None,
    }
}

/// Runs one call against a server trickling `path` each way, and checks it was cut off with
/// a timeout on `endpoint` within the bound.
fn cut_off_within_the_bound(path: &'static str, stored: bool, endpoint: Endpoint) {
    for how in ALL {
        let server = TrickleServer::start(path, how);
        let session = session(&server, stored);
        let started = Instant::now();
        let result = session.request("GET", "/v1/licenses", None);
        let took = started.elapsed();
        let what = format!("{endpoint} trickled ({how:?})");
        let err = result.expect_err(&what);
        assert_eq!(timeout_in(&err), Some(endpoint), "{what}: {err:?}");
        assert_eq!(
            server.trickled.load(Ordering::SeqCst),
            1,
            "{what}: one trickled request"
        );
        assert!(
            took <= TIMEOUT + SLACK,
            "{what}: cut off after {took:?}, past the {TIMEOUT:?} bound"
        );
        // Not cut off before its phase's budget ran out: the budgets are as documented.
        assert!(
            took >= how.earliest_cut(),
            "{what}: cut off after {took:?}, before {:?}",
            how.earliest_cut()
        );
        eprintln!("{what}: cut off after {took:?} ({err})");
    }
}

#[test]
fn a_trickled_make_is_cut_off_within_the_timeout() {
    cut_off_within_the_bound("/v1/tokens", false, Endpoint::Make);
}

#[test]
fn a_trickled_refresh_is_cut_off_within_the_timeout() {
    // The stored token is refused at once; the refresh that follows is trickled.
    cut_off_within_the_bound("/v1/tokens/refresh", true, Endpoint::Refresh);
}

#[test]
fn a_trickled_ordinary_call_is_cut_off_within_the_timeout() {
    cut_off_within_the_bound("/v1/licenses", true, Endpoint::Request);
}
