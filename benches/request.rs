//! Request overhead: `Session::request("GET", "/v1/licenses", None)` against its floor, a bare
//! ureq 3 GET with the same headers followed by a serde_json parse of the body, all against
//! one FakeChatApp on 127.0.0.1 with keep-alive pooling.
//!
//! The floor is a bare agent with **no timeout at all**: the least any ureq client pays. Two
//! more bare agents show what bounding costs: one with `timeout_global` (the bound this crate
//! used before, and what most clients set), one with the per-phase budgets the session now
//! sets (see `src/transport/timeouts.rs`).
//!
//! `cargo bench --all-features --bench request`

mod common;

use std::io::Read;
use std::time::Duration;

use chatapp_session::testing::FakeChatApp;
use chatapp_session::Session;
use common::{batch, interleave, interleave_all, print_header, print_row, Row};
use serde_json::Value;

/// One request per batch, many rounds: a loopback round trip waits on the scheduler (the
/// server's thread must run), and on a busy machine that wait varies from tens of
/// microseconds to milliseconds; rotating single requests gives every side the same
/// spread, and the medians drop the tail.
const ROUNDS: usize = 3001;
const ITERS: u64 = 1;
const TIMEOUT: Duration = Duration::from_secs(30);
/// The session's user agent, so that all send the same bytes.
const USER_AGENT: &str = concat!("chatapp-session/", env!("CARGO_PKG_VERSION"));

/// How a bare agent bounds its exchanges.
#[derive(Clone, Copy)]
enum Bound {
    /// No timeout: the floor.
    None,
    /// `timeout_global(30 s)`.
    Global,
    /// The session's split of 30 s over the phases of an exchange to an IP literal.
    Phases,
}

/// A bare agent with the session's other settings for a loopback URL.
fn bare_agent(bound: Bound) -> ureq::Agent {
    let builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(USER_AGENT)
        .max_redirects(0)
        .proxy(None);
    let builder = match bound {
        Bound::None => builder,
        Bound::Global => builder.timeout_global(Some(TIMEOUT)),
        Bound::Phases => builder
            .timeout_connect(Some(TIMEOUT / 10))
            .timeout_send_request(Some(TIMEOUT / 20))
            .timeout_send_body(Some(TIMEOUT / 10))
            .timeout_recv_response(Some(TIMEOUT / 2))
            .timeout_recv_body(Some(TIMEOUT / 20 * 3)),
    };
    builder.build().new_agent()
}

/// One GET with the token, the body read and parsed, its `data` taken out.
fn bare_get(agent: &ureq::Agent, url: &str, token: &str) -> Value {
    let mut response = agent
        .get(url)
        .header("Accept", "application/json")
        .header("Authorization", token)
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .unwrap();
    let mut reply: Value = serde_json::from_slice(&body).unwrap();
    reply["data"].take()
}

fn main() {
    let server = FakeChatApp::start().expect("fake server");
    let session = Session::builder()
        .credentials(server.credentials())
        .base_url(server.base_url())
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let untimed = bare_agent(Bound::None);
    let global = bare_agent(Bound::Global);
    let phases = bare_agent(Bound::Phases);
    let url = format!("{}/v1/licenses", server.base_url());
    // The first request makes the pair; every side then has a pooled connection.
    let data = session.request("GET", "/v1/licenses", None).unwrap();
    let token = session.access_token().unwrap();
    let token = token.expose_secret();
    for agent in [&untimed, &global, &phases] {
        assert_eq!(bare_get(agent, &url, token), data);
        batch(100, || bare_get(agent, &url, token));
    }
    batch(100, || {
        session.request("GET", "/v1/licenses", None).unwrap()
    });
    let before = server.counters();

    print_header("request overhead: GET /v1/licenses on a loopback FakeChatApp");
    // First the sides that start no thread. A `timeout_global` request leaves its lookup
    // thread exiting after it returns, which would slow whatever runs next: it is measured
    // in a pass of its own.
    let medians = interleave_all(
        ROUNDS,
        &mut [
            &mut || {
                batch(ITERS, || {
                    session.request("GET", "/v1/licenses", None).unwrap()
                })
            },
            &mut || batch(ITERS, || bare_get(&untimed, &url, token)),
            &mut || batch(ITERS, || bare_get(&phases, &url, token)),
        ],
    );
    let [session_ns, untimed_ns, phases_ns] = medians[..] else {
        unreachable!("three sides")
    };
    let (session_ns_2, global_ns) = interleave(
        ROUNDS,
        || {
            batch(ITERS, || {
                session.request("GET", "/v1/licenses", None).unwrap()
            })
        },
        || batch(ITERS, || bare_get(&global, &url, token)),
    );
    let rows = [
        (
            "request vs bare GET, no timeout",
            session_ns,
            untimed_ns,
            Some(1.05),
        ),
        (
            "bare GET: phase timeouts vs none",
            phases_ns,
            untimed_ns,
            None,
        ),
        (
            "request vs bare GET, timeout_global",
            session_ns_2,
            global_ns,
            None,
        ),
    ];
    for (name, candidate_ns, floor_ns, goal) in rows {
        print_row(&Row {
            name: name.into(),
            candidate_ns,
            floor_ns: Some(floor_ns),
            goal,
        });
    }
    let after = server.counters();
    // The session spent no auth call while measured: its overhead is its own.
    assert_eq!(
        (after.makes, after.refreshes),
        (before.makes, before.refreshes)
    );
}
