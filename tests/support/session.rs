//! Sessions against `FakeChatApp`: its default account, and calls from many threads at once.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use chatapp_session::store::TokenStore;
use chatapp_session::testing::{
    FakeChatApp, Fault, DEFAULT_APP_ID, DEFAULT_EMAIL, DEFAULT_PASSWORD,
};
use chatapp_session::{Credentials, Error, Session};

/// The timeout of an exchange that meets a delay fault (the CLI's too): short of
/// [`FAULT_DELAY`], and room for a loaded machine's ordinary replies before it.
pub const DELAY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a delayed reply waits: past [`DELAY_TIMEOUT`].
pub const FAULT_DELAY: Duration = Duration::from_millis(2500);
/// The timeout of an exchange that meets any other fault, or none: long, so that the outcome
/// does not depend on how fast a loaded machine reads (a 4 MiB body read in a short timeout's
/// 3/20 could run out of time).
pub const FAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeout of an exchange that meets `fault`: [`DELAY_TIMEOUT`] for a delay, which must
/// outlast it; [`FAULT_TIMEOUT`] for every other fault.
pub fn timeout_for(fault: &Fault) -> Duration {
    match fault {
        Fault::Delay(_) => DELAY_TIMEOUT,
        _ => FAULT_TIMEOUT,
    }
}

/// The credentials of a `FakeChatApp`'s default account, where no server is at hand (a child
/// process); with one, `server.credentials()` is the same.
pub fn default_credentials() -> Credentials {
    Credentials::new(DEFAULT_EMAIL, DEFAULT_PASSWORD, DEFAULT_APP_ID)
}

/// `threads` threads, released together by a barrier, each send `GET /v1/licenses` through
/// `session` once: their results, in thread order.
pub fn requests_at_once(
    session: &Session,
    threads: usize,
) -> Vec<Result<serde_json::Value, Error>> {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (session, barrier) = (session.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                session.request("GET", "/v1/licenses", None)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a calling thread panicked"))
        .collect()
}

/// A session of `server`'s default account on `store`, with a 5 s HTTP timeout.
pub fn session_on(server: &FakeChatApp, store: impl TokenStore + 'static) -> Session {
    Session::builder()
        .credentials(server.credentials())
        .store(store)
        .base_url(server.base_url())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a session")
}
