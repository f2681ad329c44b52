//! Every ChatApp call through the session (issue 10), against `FakeChatApp` on 127.0.0.1:
//! paths that cannot leave the base URL, typed JSON, multipart uploads, raw bodies and binary
//! downloads under the one-retry rule, `invalidate` and `with_token` for other HTTP clients,
//! and the events, counted against the server's counters.

mod support;
use support::session_on;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use chatapp_session::store::{MemoryStore, TokenStore};
use chatapp_session::testing::{FakeChatApp, FIRST_CABINET_USER_ID};
use chatapp_session::{Attempt, Call, Error, Event, Form, Session};
use serde::Deserialize;
use serde_json::json;

const DAY: i64 = 86_400;
const CHAT: &str = "/v1/licenses/37233/messengers/grWhatsApp/chats/79001234567/messages";

fn server() -> FakeChatApp {
    FakeChatApp::start().expect("the fake server starts")
}

/// A session whose events are collected.
fn recorded(server: &FakeChatApp, store: MemoryStore) -> (Session, Arc<Mutex<Vec<Event>>>) {
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = seen.clone();
    let session = Session::builder()
        .credentials(server.credentials())
        .store(store)
        .base_url(server.base_url())
        .timeout(Duration::from_secs(5))
        .on_event(move |e| sink.lock().expect("events").push(e.clone()))
        .build()
        .expect("a session");
    (session, seen)
}

#[test]
fn a_path_never_reaches_another_host() {
    let server = server();
    let other = TcpListener::bind("127.0.0.1:0").expect("a second listener");
    other.set_nonblocking(true).expect("non-blocking");
    let port = other.local_addr().expect("its address").port();
    let session = session_on(&server, MemoryStore::new());
    let paths = [
        format!("@127.0.0.1:{port}/v1/licenses"),
        format!(":{port}/v1/licenses"),
        format!(".127.0.0.1:{port}/"),
        format!("/x@127.0.0.1:{port}/v1/licenses"),
        format!("\\\\127.0.0.1:{port}/x"),
        format!("/v1/licenses\r\nHost: 127.0.0.1:{port}"),
        "v1/licenses".to_owned(),
        String::new(),
    ];
    for path in &paths {
        match session.request("GET", path, None) {
            Err(Error::InvalidPath { .. }) => {}
            other => panic!("request {path:?}: {other:?}"),
        }
        match session.call(&Call::new("GET", path.as_str())) {
            Err(Error::InvalidPath { .. }) => {}
            other => panic!("call {path:?}: {other:?}"),
        }
        match session.request_json::<serde_json::Value, ()>("GET", path, None) {
            Err(Error::InvalidPath { .. }) => {}
            other => panic!("request_json {path:?}: {other:?}"),
        }
    }
    match other.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the second listener saw a connection: {other:?}"),
    }
    // Nothing was sent at all, not even a tokens.make.
    support::assert_counters!(server, makes: 0, requests: 0);
    // A good path still works.
    assert!(session.request("GET", "/v1/licenses", None).is_ok());
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct License {
    license_id: i64,
    me_owner: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Sent {
    id: String,
    chat_id: String,
}

#[test]
fn typed_json_calls() {
    let server = server();
    let session = session_on(&server, MemoryStore::new());
    let licenses = session
        .request_json::<Vec<License>, ()>("GET", "/v1/licenses", None)
        .expect("licenses");
    assert_eq!(
        licenses,
        [License {
            license_id: 37233,
            me_owner: true
        }]
    );
    let sent: Sent = session
        .request_json(
            "POST",
            &format!("{CHAT}/text"),
            Some(&json!({"text": "hi"})),
        )
        .expect("a text message");
    assert_eq!(sent.chat_id, "79001234567@c.us");
    // A body of any Serialize type, unsized included.
    #[derive(serde::Serialize)]
    struct Text<'a> {
        text: &'a str,
    }
    let sent: Sent = session
        .request_json(
            "POST",
            &format!("{CHAT}/text"),
            Some(&Text { text: "typed" }),
        )
        .expect("a typed body");
    assert_eq!(sent.id.len(), 16);

    // The wrong shape: a protocol error naming the type, and no retry or refresh.
    match session.request_json::<Vec<Sent>, ()>("GET", "/v1/licenses", None) {
        Err(e @ Error::Protocol { .. }) => {
            let text = e.to_string();
            assert!(text.contains("Sent"), "{text}");
            assert!(text.contains("missing field `id`"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    match session.request_json::<u32, ()>("GET", "/v1/licenses", None) {
        Err(e @ Error::Protocol { .. }) => assert!(e.to_string().contains("u32"), "{e}"),
        other => panic!("{other:?}"),
    }
    let c = server.counters();
    assert_eq!((c.makes, c.refreshes, c.requests), (1, 0, 5));
}

#[test]
fn a_multipart_upload_is_retried_once_after_a_server_side_expiry() {
    let server = server();
    let session = session_on(&server, MemoryStore::new());
    session.access_token().expect("a first pair");
    let file: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let upload = Call::new("POST", format!("{CHAT}/file")).form(
        Form::new()
            .file("file", "scan.bin", "application/octet-stream", file.clone())
            .text("fileName", "scan \"final\".bin")
            .text("caption", "The scan"),
    );

    server.advance(DAY + 1); // the access token dies on the server only
    let reply = session.call(&upload).expect("the upload");
    assert_eq!(reply.status(), 200);
    let sent: Sent = reply.data().expect("the envelope's data");
    assert_eq!(sent.chat_id, "79001234567@c.us");
    let c = server.counters();
    assert_eq!(
        (c.makes, c.refreshes, c.invalid_token_replies, c.requests),
        (1, 1, 1, 2),
        "one refused upload, one refresh, one resent upload"
    );
    let kept = server
        .uploaded_file(&sent.id)
        .expect("the fake kept the file");
    assert_eq!(kept.bytes, file);
    assert_eq!(kept.file_name.as_deref(), Some("scan \"final\".bin"));
    assert_eq!(kept.caption.as_deref(), Some("The scan"));
    assert_eq!(
        kept.content_type.as_deref(),
        Some("application/octet-stream")
    );
}

#[test]
fn a_binary_download_is_retried_once_after_a_server_side_expiry() {
    let server = server();
    let session = session_on(&server, MemoryStore::new());
    let png: Vec<u8> = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let sent: Sent = session
        .call(
            &Call::new("POST", format!("{CHAT}/file")).form(Form::new().file(
                "file",
                "dot.png",
                "image/png",
                png.clone(),
            )),
        )
        .and_then(|r| r.data())
        .expect("an upload");

    server.advance(DAY + 1);
    let download = Call::new("GET", format!("{CHAT}/{}/file", sent.id)).accept("*/*");
    let reply = session.call(&download).expect("the download");
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.content_type(), Some("image/png"));
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"dot.png\"")
    );
    assert_eq!(reply.body(), png.as_slice());
    support::assert_counters!(server, makes: 1, refreshes: 1, invalid_token_replies: 1);

    // A refusal in the envelope is an error, not bytes.
    match session.call(&Call::new("GET", format!("{CHAT}/nope/file"))) {
        Err(Error::Api(a)) => {
            assert_eq!(
                (a.status, a.code.as_deref()),
                (404, Some("ApiNotFoundError"))
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_raw_body_goes_with_its_own_content_type() {
    let server = server();
    let session = session_on(&server, MemoryStore::new());
    // The fake reads the text message's JSON whatever the declared type, so a raw body
    // written by hand passes; a form posted where JSON is wanted is refused by the server.
    let raw = Call::new("POST", format!("{CHAT}/text"))
        .body("application/json", &br#"{"text":"raw"}"#[..]);
    session.access_token().expect("a first pair");
    server.advance(DAY + 1);
    let sent: Sent = session.call(&raw).and_then(|r| r.data()).expect("raw");
    assert_eq!(sent.chat_id, "79001234567@c.us");
    let form = Call::new("POST", format!("{CHAT}/text")).form(Form::new().text("text", "x"));
    match session.call(&form) {
        Err(Error::Api(a)) => assert_eq!(a.status, 400),
        other => panic!("{other:?}"),
    }
    support::assert_counters!(server, makes: 1, refreshes: 1);
}

#[test]
fn sixteen_threads_reporting_one_dead_token_cause_one_refresh() {
    let server = server();
    let store = MemoryStore::new();
    let session = session_on(&server, store);
    let dead = session.access_token().expect("a first pair");
    server.revoke_access_tokens();
    let barrier = Arc::new(Barrier::new(16));
    let fresh: Vec<_> = (0..16)
        .map(|_| {
            let (session, dead, barrier) = (session.clone(), dead.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                session.invalidate(&dead);
                session.access_token().expect("a fresh token")
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert!(fresh.iter().all(|t| *t == fresh[0] && *t != dead));
    support::assert_counters!(server, makes: 1, refreshes: 1);

    // The old token reported again: ignored, no refresh.
    session.invalidate(&dead);
    assert_eq!(session.access_token().expect("token"), fresh[0]);
    assert_eq!(server.counters().refreshes, 1);
    assert!(session.request("GET", "/v1/licenses", None).is_ok());
}

#[test]
fn check_false_and_with_token_report_the_refusal() {
    let server = server();
    let session = session_on(&server, MemoryStore::new());
    let first = session.access_token().expect("a pair");
    server.revoke_access_tokens();
    assert!(!session.check().expect("check"));
    let second = session.access_token().expect("a fresh token");
    assert_ne!(first, second);
    assert_eq!(server.counters().refreshes, 1);
    assert!(session.check().expect("check"));

    // Another HTTP client: a bare ureq agent, its 401 reported through with_token.
    server.revoke_access_tokens();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let url = format!("{}/v1/licenses", server.base_url());
    let mut tokens = Vec::new();
    let outcome = session
        .with_token(|token| {
            tokens.push(token.clone());
            let status = agent
                .get(&url)
                .header("Authorization", token.expose_secret())
                .call()
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status == 401 {
                Attempt::Refused(status)
            } else {
                Attempt::Done(status)
            }
        })
        .expect("with_token");
    assert_eq!(outcome, Attempt::Done(200));
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1]);
    assert_eq!(server.counters().refreshes, 2);
    // Refused twice: the second outcome comes back as it is; no further refresh.
    let twice = session
        .with_token(|_| Attempt::<()>::Refused(()))
        .expect("with_token");
    assert_eq!(twice, Attempt::Refused(()));
    assert_eq!(server.counters().refreshes, 3);
}

fn count(events: &[Event], kind: fn(&Event) -> bool) -> u64 {
    events.iter().filter(|e| kind(e)).count() as u64
}

#[test]
fn events_match_the_server_counters() {
    let server = server();
    let store = MemoryStore::new();
    let (session, seen) = recorded(&server, store.clone());
    session
        .request("GET", "/v1/licenses", None)
        .expect("first call");
    server.advance(DAY + 1);
    session
        .request("GET", "/v1/licenses", None)
        .expect("after a day");
    server.revoke_all();
    session
        .request("GET", "/v1/licenses", None)
        .expect("after revoke_all");

    let events = seen.lock().expect("events").clone();
    let c = server.counters();
    assert_eq!((c.makes, c.refreshes), (2, 1));
    assert_eq!(count(&events, |e| matches!(e, Event::Made { .. })), c.makes);
    assert_eq!(
        count(&events, |e| matches!(e, Event::Refreshed { .. })),
        c.refreshes
    );
    assert_eq!(
        count(&events, |e| matches!(
            e,
            Event::TokenRejected {
                status: Some(401),
                ..
            }
        )),
        c.invalid_token_replies
    );
    // The new end times and the cabinet user, as stored (the store was updated first).
    let stored = store
        .load(session.store_key())
        .expect("load")
        .and_then(|r| r.pair)
        .expect("a pair");
    match events
        .iter()
        .rev()
        .find(|e| matches!(e, Event::Made { .. }))
    {
        Some(Event::Made {
            access_expires_at,
            refresh_expires_at,
            cabinet_user_id,
            ..
        }) => assert_eq!(
            (*access_expires_at, *refresh_expires_at, *cabinet_user_id),
            (
                stored.access_expires_at,
                stored.refresh_expires_at,
                FIRST_CABINET_USER_ID
            )
        ),
        other => panic!("{other:?}"),
    }
    match events.iter().find(|e| matches!(e, Event::Refreshed { .. })) {
        Some(Event::Refreshed {
            access_expires_at,
            cabinet_user_id,
            ..
        }) => {
            assert_eq!(*access_expires_at, server.now() + DAY);
            assert_eq!(*cabinet_user_id, FIRST_CABINET_USER_ID);
        }
        other => panic!("{other:?}"),
    }
    let text = format!("{events:?}");
    assert!(!text.contains(stored.access.expose_secret()), "{text}");
    assert!(!text.contains(stored.refresh.expose_secret()), "{text}");

    // Another session on the store (another process, as far as it knows) adopts the pair.
    let (other, other_seen) = recorded(&server, store.clone());
    other.request("GET", "/v1/licenses", None).expect("adopted");
    let other_events = other_seen.lock().expect("events").clone();
    assert!(
        matches!(other_events.as_slice(), [Event::Adopted { cabinet_user_id, .. }] if *cabinet_user_id == FIRST_CABINET_USER_ID),
        "{other_events:?}"
    );
    assert_eq!(server.counters().makes, 2);
}

#[test]
fn save_failures_and_a_low_quota_are_told() {
    let server = server();
    let store = MemoryStore::new();
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = seen.clone();
    let session = Session::builder()
        .credentials(server.credentials())
        .store(store.clone())
        .base_url(server.base_url())
        .make_limit(11)
        .on_event(move |e| sink.lock().expect("events").push(e.clone()))
        .build()
        .expect("a session");
    session.login().expect("login");
    // 10 of 11 left: not low yet.
    assert!(!seen
        .lock()
        .expect("events")
        .iter()
        .any(|e| matches!(e, Event::QuotaLow { .. })));
    session.login().expect("login");
    assert!(seen.lock().expect("events").iter().any(|e| matches!(
        e,
        Event::QuotaLow {
            used: 2,
            allowed: 11,
            ..
        }
    )));

    store.fail_next_save();
    server.advance(DAY + 1);
    // Whether the call then fails or the session saves again, the failure is told once.
    let _ = session.request("GET", "/v1/licenses", None);
    let events = seen.lock().expect("events").clone();
    let failed: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::SaveFailed { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert!(failed[0].contains("fail_next_save"), "{failed:?}");
    assert_eq!(server.counters().refreshes, 1);
}
