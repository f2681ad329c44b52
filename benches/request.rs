//! Request overhead: `Session::request("GET", "/v1/licenses", None)` against its floor, a bare
//! ureq 3 GET with the same headers and agent settings followed by a serde_json parse of the
//! body, both against one FakeChatApp on 127.0.0.1 with keep-alive pooling.
//!
//! `cargo bench --all-features --bench request`

mod common;

use std::io::Read;
use std::time::Duration;

use chatapp_session::testing::FakeChatApp;
use chatapp_session::Session;
use common::{batch, interleave, print_header, print_row, Row};
use serde_json::Value;

/// One request per batch, many rounds: a loopback round trip waits on the scheduler (the
/// server's thread must run), and on a busy machine that wait varies from tens of
/// microseconds to milliseconds; alternating single requests gives both sides the same
/// spread, and the medians drop the tail.
const ROUNDS: usize = 3001;
const ITERS: u64 = 1;
const TIMEOUT: Duration = Duration::from_secs(30);
/// The session's user agent, so that both send the same bytes.
const USER_AGENT: &str = concat!("chatapp-session/", env!("CARGO_PKG_VERSION"));

/// An agent configured as the session's transport configures its own for a loopback URL.
fn bare_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .user_agent(USER_AGENT)
        .max_redirects(0)
        .proxy(None)
        .build()
        .new_agent()
}

/// The floor: one GET with the token, the body read and parsed, its `data` taken out.
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
    let agent = bare_agent();
    let url = format!("{}/v1/licenses", server.base_url());
    // The first request makes the pair; both sides then have a pooled connection.
    let data = session.request("GET", "/v1/licenses", None).unwrap();
    let token = session.access_token().unwrap();
    assert_eq!(bare_get(&agent, &url, token.expose_secret()), data);
    batch(100, || {
        session.request("GET", "/v1/licenses", None).unwrap()
    });
    batch(100, || bare_get(&agent, &url, token.expose_secret()));
    let before = server.counters();

    print_header("request overhead: GET /v1/licenses on a loopback FakeChatApp");
    let (c, f) = interleave(
        ROUNDS,
        || {
            batch(ITERS, || {
                session.request("GET", "/v1/licenses", None).unwrap()
            })
        },
        || batch(ITERS, || bare_get(&agent, &url, token.expose_secret())),
    );
    print_row(&Row {
        name: "request GET /v1/licenses".into(),
        candidate_ns: c,
        floor_ns: Some(f),
        goal: Some(1.05),
    });
    let after = server.counters();
    // The session spent no auth call while measured: its overhead is its own.
    assert_eq!(
        (after.makes, after.refreshes),
        (before.makes, before.refreshes)
    );
}
