//! The session against a real HTTP server (`FakeChatApp` on 127.0.0.1) and real stores.

mod support;
use support::session_on;

use std::time::Duration;

use chatapp_session::store::{FileStore, MemoryStore, StoreKey, TokenStore};
use chatapp_session::testing::ManualClock;
use chatapp_session::testing::{FakeChatApp, Fault, Route};
use chatapp_session::{Credentials, Error, Session, TokenPair};

const DAY: i64 = 86_400;

fn server() -> FakeChatApp {
    match FakeChatApp::start() {
        Ok(s) => s,
        Err(e) => panic!("fake server: {e}"),
    }
}

fn stored_pair(store: &dyn TokenStore, session: &Session) -> Option<TokenPair> {
    store
        .load(session.store_key())
        .unwrap()
        .and_then(|r| r.pair)
}

#[test]
fn makes_once_then_reuses_the_saved_pair() {
    let server = server();
    let session = session_on(&server, MemoryStore::new());
    let first = session.access_token().unwrap();
    for _ in 0..5 {
        session.request("GET", "/v1/licenses", None).unwrap();
    }
    assert_eq!(session.access_token().unwrap(), first);
    support::assert_counters!(server, makes: 1, refreshes: 0, requests: 5);
}

#[test]
fn a_dead_token_is_refreshed_saved_and_the_request_repeated_once() {
    let server = server();
    let store = MemoryStore::new();
    let session = session_on(&server, store.clone());
    session.request("GET", "/v1/licenses", None).unwrap();
    let before = stored_pair(&store, &session).unwrap();

    server.advance(DAY + 1);
    let data = session.request("GET", "/v1/licenses", None).unwrap();
    assert!(data.as_array().is_some_and(|a| !a.is_empty()), "{data}");

    let c = server.counters();
    assert_eq!((c.makes, c.refreshes, c.refreshes_rejected), (1, 1, 0));
    assert_eq!(c.invalid_token_replies, 1);
    assert_eq!(c.requests, 3, "one call, one refused, one repeated");
    let after = stored_pair(&store, &session).unwrap();
    assert_ne!(after.access, before.access);
    assert_ne!(after.refresh, before.refresh);
    assert_eq!(session.access_token().unwrap(), after.access);
}

#[test]
fn invalid_token_is_recognised_by_its_code_whatever_the_status() {
    for status in [401, 403, 200] {
        let server = FakeChatApp::builder()
            .invalid_token_status(status)
            .start()
            .unwrap();
        let session = session_on(&server, MemoryStore::new());
        session.request("GET", "/v1/licenses", None).unwrap();
        server.revoke_access_tokens();
        session.request("GET", "/v1/licenses", None).unwrap();
        assert_eq!(server.counters().refreshes, 1, "status {status}");
    }
}

#[test]
fn strict_rotation_old_refresh_token_is_never_reused() {
    let server = server();
    let store = MemoryStore::new();
    let session = session_on(&server, store.clone());
    session.request("GET", "/v1/licenses", None).unwrap();
    let first = stored_pair(&store, &session).unwrap();
    for day in 1..=5 {
        server.advance(DAY + 1);
        session.request("GET", "/v1/licenses", None).unwrap();
        assert_eq!(server.counters().refreshes, day);
    }
    support::assert_counters!(server, makes: 1, refreshes_rejected: 0);
    // The server really rotated: the first refresh token is dead.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let status = agent
        .post(format!("{}/v1/tokens/refresh", server.base_url()))
        .header("Refresh", first.refresh.expose_secret())
        .send_empty()
        .map(|r| r.status().as_u16());
    assert_eq!(status.ok(), Some(401), "the old refresh token still works");
}

#[test]
fn sixteen_threads_on_a_dead_token_cause_one_refresh() {
    let server = server();
    let session = session_on(&server, MemoryStore::new());
    session.request("GET", "/v1/licenses", None).unwrap();
    server.revoke_access_tokens();
    server.reset_counters();

    for result in support::requests_at_once(&session, 16) {
        result.unwrap();
    }
    support::assert_counters!(server, refreshes: 1, refreshes_rejected: 0, makes: 0);
}

#[test]
fn a_dead_refresh_token_falls_back_to_make() {
    let server = server();
    let session = session_on(&server, MemoryStore::new());
    session.request("GET", "/v1/licenses", None).unwrap();
    server.revoke_all();
    session.request("GET", "/v1/licenses", None).unwrap();
    support::assert_counters!(server, makes: 2, refreshes: 0, refreshes_rejected: 1);
    assert_eq!(session.status().unwrap().makes_last_24h, 2);
}

/// A session and a server that share one manual clock.
fn on_clock(server: &FakeChatApp, clock: &ManualClock) -> Session {
    Session::builder()
        .credentials(server.credentials())
        .base_url(server.base_url())
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// The local clock never decides a make: a refresh token past its end is sent all the same
/// (a refresh costs no quota), and only the server's refusal leads to the make.
#[test]
fn a_refresh_token_past_its_end_is_tried_before_a_make() {
    let clock = ManualClock::new(1_800_000_000);
    let server = FakeChatApp::builder().clock(clock.clone()).start().unwrap();
    let session = on_clock(&server, &clock);
    session.access_token().unwrap();
    clock.advance(15 * DAY);
    session.access_token().unwrap();
    support::assert_counters!(server, makes: 2, refreshes: 0, refreshes_rejected: 1);
}

#[test]
fn client_side_expiry_refreshes_without_a_refused_call() {
    let clock = ManualClock::new(1_800_000_000);
    let server = FakeChatApp::builder().clock(clock.clone()).start().unwrap();
    let session = on_clock(&server, &clock);
    session.request("GET", "/v1/licenses", None).unwrap();
    clock.advance(DAY - 30); // inside the 60 s margin
    session.request("GET", "/v1/licenses", None).unwrap();
    support::assert_counters!(server, makes: 1, refreshes: 1, invalid_token_replies: 0);
}

#[test]
fn a_refresh_token_ending_within_a_day_is_renewed_on_use() {
    // A server whose access tokens outlive its refresh tokens (20 days against 14): without
    // renewal on use, an application active every day would have to make on day 20.
    let clock = ManualClock::new(1_800_000_000);
    let server = FakeChatApp::builder()
        .clock(clock.clone())
        .access_lifetime(20 * DAY)
        .refresh_lifetime(14 * DAY)
        .start()
        .unwrap();
    let session = on_clock(&server, &clock);
    session.request("GET", "/v1/licenses", None).unwrap();
    // A call every 20 hours. The refresh token (336 h) has less than a day left at step 16
    // (320 h, 16 h left), and each renewal gives 336 h more: renewed at steps 16, 32, 48.
    for step in 1..=48 {
        clock.advance(20 * 3_600);
        session.request("GET", "/v1/licenses", None).unwrap();
        assert_eq!(server.counters().refreshes, step / 16, "step {step}");
    }
    let c = server.counters();
    assert_eq!(
        (
            c.makes,
            c.refreshes,
            c.refreshes_rejected,
            c.invalid_token_replies
        ),
        (1, 3, 0, 0)
    );
}

#[test]
fn short_refresh_tokens_cause_no_refresh_on_every_call() {
    // A server whose refresh tokens live 12 h: every pair is "due" for renewal from birth.
    let clock = ManualClock::new(1_800_000_000);
    let server = FakeChatApp::builder()
        .clock(clock.clone())
        .access_lifetime(3_600)
        .refresh_lifetime(DAY / 2)
        .start()
        .unwrap();
    let session = on_clock(&server, &clock);
    for _ in 0..20 {
        session.request("GET", "/v1/licenses", None).unwrap();
    }
    let c = server.counters();
    assert_eq!(
        (c.makes, c.refreshes),
        (1, 0),
        "no refresh while the access token lives"
    );
    // Each access lifetime costs one refresh, no more.
    for hour in 1..=5 {
        clock.advance(3_600);
        for _ in 0..10 {
            session.request("GET", "/v1/licenses", None).unwrap();
        }
        assert_eq!(server.counters().refreshes, hour);
    }
    assert_eq!(server.counters().refreshes_rejected, 0);
}

#[test]
fn a_second_rejection_is_an_error_not_a_loop() {
    let server = server();
    let session = session_on(&server, MemoryStore::new());
    session.request("GET", "/v1/licenses", None).unwrap();
    let refused =
        r#"{"success":false,"error":{"code":"ApiInvalidTokenError","message":"Invalid Token"}}"#;
    for _ in 0..2 {
        server.inject(
            Route::Request,
            Fault::Status {
                status: 401,
                body: refused.into(),
                content_type: "application/json".into(),
            },
        );
    }
    match session.request("GET", "/v1/licenses", None) {
        Err(Error::TokenRejected(a)) => {
            assert_eq!(a.code.as_deref(), Some("ApiInvalidTokenError"));
            assert_eq!(a.message.as_deref(), Some("Invalid Token"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.counters().refreshes, 1);
    // The server behaves again: the next call works with the fresh pair.
    session.request("GET", "/v1/licenses", None).unwrap();
    assert_eq!(server.counters().refreshes, 1);
}

#[test]
fn a_wrong_password_keeps_the_servers_code_and_never_shows_the_password() {
    let server = server();
    let good = server.credentials();
    let session = Session::builder()
        .credentials(Credentials::new(
            good.email(),
            "hunter2-WRONG",
            good.app_id(),
        ))
        .base_url(server.base_url())
        .build()
        .unwrap();
    let err = session.request("GET", "/v1/licenses", None).unwrap_err();
    match &err {
        Error::InvalidCredentials(a) => {
            assert_eq!(a.status, 401);
            assert_eq!(a.code.as_deref(), Some("ApiWrongCredentialsError"));
            assert!(a.message.is_some());
        }
        other => panic!("{other:?}"),
    }
    let text = format!("{err} {err:?} {session:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(server.counters().makes, 0);
    // A refused make does not count against the local quota.
    assert_eq!(session.status().unwrap().makes_last_24h, 0);
}

#[test]
fn the_101st_make_is_refused_locally_and_the_ledger_survives_restart_and_logout() {
    let server = FakeChatApp::builder().make_limit(1000).start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let session = session_on(&server, FileStore::new(&path));
    for _ in 0..100 {
        session.login().unwrap();
    }
    assert_eq!(server.counters().makes, 100);
    match session.login() {
        Err(Error::QuotaExhausted {
            used: 100,
            limit: 100,
            next_make_at: Some(t),
            server: None,
        }) => assert!(t > server.now()),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.counters().makes, 100, "no request was sent");

    // A restarted application and a logout still see the ledger.
    let restarted = session_on(&server, FileStore::new(&path));
    restarted.logout().unwrap();
    assert!(!restarted.status().unwrap().stored);
    assert_eq!(restarted.status().unwrap().makes_last_24h, 100);
    assert!(matches!(
        restarted.request("GET", "/v1/licenses", None),
        Err(Error::QuotaExhausted { .. })
    ));
    assert_eq!(server.counters().makes, 100);
}

#[test]
fn a_server_429_on_make_is_the_quota_error() {
    let server = FakeChatApp::builder().make_limit(2).start().unwrap();
    let session = session_on(&server, MemoryStore::new());
    session.login().unwrap();
    session.login().unwrap();
    match session.login() {
        Err(Error::QuotaExhausted {
            server: Some(a), ..
        }) => assert_eq!(a.status, 429),
        other => panic!("{other:?}"),
    }
    // The stored pair is still the second one and still works.
    session.request("GET", "/v1/licenses", None).unwrap();
}

#[test]
fn a_reserve_stops_makes_early() {
    let server = server();
    let session = Session::builder()
        .credentials(server.credentials())
        .base_url(server.base_url())
        .make_limit(3)
        .make_reserve(1)
        .build()
        .unwrap();
    session.login().unwrap();
    session.login().unwrap();
    assert!(matches!(
        session.login(),
        Err(Error::QuotaExhausted {
            used: 2,
            limit: 2,
            ..
        })
    ));
}

#[test]
fn no_credentials_and_nothing_stored_sends_nothing() {
    let server = server();
    let session = Session::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
    assert!(matches!(
        session.access_token(),
        Err(Error::CredentialsRequired)
    ));
    assert_eq!(server.counters(), Default::default());
}

#[test]
fn a_stored_pair_needs_no_credentials_until_its_refresh_token_dies() {
    let server = server();
    let store = MemoryStore::new();
    let key = "shared";
    let with = Session::builder()
        .credentials(server.credentials())
        .store(store.clone())
        .store_key(key)
        .base_url(server.base_url())
        .build()
        .unwrap();
    with.access_token().unwrap();
    let without = Session::builder()
        .store(store.clone())
        .store_key(key)
        .base_url(server.base_url())
        .build()
        .unwrap();
    without.request("GET", "/v1/licenses", None).unwrap();
    server.revoke_access_tokens();
    without.request("GET", "/v1/licenses", None).unwrap();
    server.revoke_all();
    match without.request("GET", "/v1/licenses", None) {
        Err(Error::RefreshRejected(a)) => assert_eq!(a.status, 401),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.counters().makes, 1);
}

/// A failed save of a refreshed pair: the server has rotated, so the new pair is used from
/// memory (the stored one stays as it was meanwhile) and saved at the next call.
#[test]
fn a_failed_save_keeps_the_new_pair_in_memory_and_saves_it_next_time() {
    let server = server();
    let store = MemoryStore::new();
    let session = session_on(&server, store.clone());
    session.access_token().unwrap();
    let old = stored_pair(&store, &session).unwrap();
    server.revoke_access_tokens();
    store.fail_next_save();
    session.request("GET", "/v1/licenses", None).unwrap();
    assert_eq!(stored_pair(&store, &session), Some(old.clone()));
    assert!(session.status().unwrap().unsaved);
    let in_use = session.access_token().unwrap();
    assert_ne!(in_use, old.access);
    assert!(!session.status().unwrap().unsaved);
    assert_eq!(
        stored_pair(&store, &session).map(|p| p.access),
        Some(in_use)
    );
    support::assert_counters!(server, makes: 1, refreshes: 1, refreshes_rejected: 0);
}

/// Whether an error is the one a fault should give.
type IsExpected = fn(&Error) -> bool;

#[test]
fn server_faults_on_refresh_are_typed_and_keep_the_stored_pair() {
    let faults: Vec<(Fault, IsExpected)> = vec![
        (
            Fault::ServerError(500),
            |e| matches!(e, Error::Server(a) if a.status == 500),
        ),
        (
            Fault::ServerError(502),
            |e| matches!(e, Error::Server(a) if a.status == 502),
        ),
        (Fault::MalformedJson, |e| {
            matches!(e, Error::Protocol { .. })
        }),
        (
            Fault::MissingField("accessToken".into()),
            |e| matches!(e, Error::Protocol { detail, .. } if detail.contains("accessToken")),
        ),
        (Fault::WrongTypes, |e| matches!(e, Error::Protocol { .. })),
        (Fault::DropConnection, |e| {
            matches!(e, Error::RefreshReplyLost { .. })
        }),
        (
            Fault::Delay(Duration::from_secs(3)),
            |e| matches!(e, Error::RefreshReplyLost { source } if matches!(**source, Error::Timeout { .. })),
        ),
        (
            Fault::Huge {
                bytes: 64 << 20,
                declare_length: true,
            },
            |e| matches!(e, Error::Protocol { .. }),
        ),
        (
            Fault::Huge {
                bytes: 64 << 20,
                declare_length: false,
            },
            |e| matches!(e, Error::Protocol { .. }),
        ),
        (
            Fault::RateLimited,
            |e| matches!(e, Error::RateLimited(a) if a.status == 429),
        ),
    ];
    for (fault, expected) in faults {
        let name = format!("{fault:?}");
        let server = server();
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("s.json"));
        let session = Session::builder()
            .credentials(server.credentials())
            .store(store.clone())
            .base_url(server.base_url())
            .timeout(support::timeout_for(&fault))
            .build()
            .unwrap();
        session.access_token().unwrap();
        let before = stored_pair(&store, &session);
        server.revoke_access_tokens();
        server.inject(Route::Refresh, fault);
        let err = session.request("GET", "/v1/licenses", None).unwrap_err();
        assert!(expected(&err), "{name}: {err:?}");
        assert_eq!(
            stored_pair(&store, &session),
            before,
            "{name}: the pair changed"
        );
        assert_eq!(server.counters().makes, 1, "{name}: a make was spent");
        // The server behaves again: the session recovers.
        session.request("GET", "/v1/licenses", None).unwrap();
    }
}

#[test]
fn a_lost_refresh_reply_is_reported_then_recovered_by_one_make() {
    let server = server();
    let store = MemoryStore::new();
    let session = session_on(&server, store.clone());
    session.access_token().unwrap();
    server.revoke_access_tokens();
    server.inject(Route::Refresh, Fault::LostReply);
    let err = session.request("GET", "/v1/licenses", None).unwrap_err();
    assert!(matches!(err, Error::RefreshReplyLost { .. }), "{err:?}");
    assert!(err.to_string().contains("lost"), "{err}");
    session.request("GET", "/v1/licenses", None).unwrap();
    support::assert_counters!(server, makes: 2, refreshes: 1, refreshes_rejected: 1);
}

#[test]
fn faults_on_ordinary_calls_are_typed_and_spend_no_auth_call() {
    let server = server();
    // One session per timeout (see `support::timeout_for`), both on one store: one make.
    let store = MemoryStore::new();
    let session_with = |timeout: Duration| {
        Session::builder()
            .credentials(server.credentials())
            .store(store.clone())
            .base_url(server.base_url())
            .timeout(timeout)
            .build()
            .unwrap()
    };
    let (patient, quick) = (
        session_with(support::FAULT_TIMEOUT),
        session_with(support::DELAY_TIMEOUT),
    );
    patient.access_token().unwrap();
    let cases: Vec<(Fault, IsExpected)> = vec![
        (Fault::ServerError(500), |e| matches!(e, Error::Server(_))),
        (Fault::MalformedJson, |e| {
            matches!(e, Error::Protocol { status: 200, .. })
        }),
        (Fault::MissingField("success".into()), |e| {
            matches!(e, Error::Protocol { .. })
        }),
        (Fault::DropConnection, |e| {
            matches!(e, Error::Network { .. })
        }),
        (Fault::Delay(Duration::from_secs(3)), |e| {
            matches!(e, Error::Timeout { .. })
        }),
        (
            Fault::Huge {
                bytes: 64 << 20,
                declare_length: false,
            },
            |e| matches!(e, Error::Protocol { .. }),
        ),
        (Fault::RateLimited, |e| matches!(e, Error::RateLimited(_))),
    ];
    for (fault, expected) in cases {
        let name = format!("{fault:?}");
        let session = match fault {
            Fault::Delay(_) => &quick,
            _ => &patient,
        };
        server.inject(Route::Request, fault);
        let err = session.request("GET", "/v1/licenses", None).unwrap_err();
        assert!(expected(&err), "{name}: {err:?}");
        session.request("GET", "/v1/licenses", None).unwrap();
    }
    let c = server.counters();
    assert_eq!((c.makes, c.refreshes), (1, 0));
}

#[test]
fn the_server_error_of_an_ordinary_call_is_kept() {
    let server = server();
    let session = session_on(&server, MemoryStore::new());
    let err = session
        .request(
            "POST",
            "/v1/licenses/1/messengers/grWhatsApp/chats/79283207637/messages/text",
            Some(&serde_json::json!({})),
        )
        .unwrap_err();
    match err {
        Error::Api(a) => {
            assert_eq!(a.status, 400);
            assert!(a.code.is_some() && a.message.is_some());
        }
        other => panic!("{other:?}"),
    }
    let sent = session
        .request(
            "POST",
            "/v1/licenses/1/messengers/grWhatsApp/chats/79283207637/messages/text",
            Some(&serde_json::json!({"text": "hi"})),
        )
        .unwrap();
    assert_eq!(sent["chatId"], "79283207637@c.us");
}

#[test]
fn debug_of_public_types_shows_no_secret() {
    let server = server();
    let store = MemoryStore::new();
    let builder = Session::builder()
        .credentials(server.credentials())
        .store(store.clone())
        .base_url(server.base_url());
    let builder_text = format!("{builder:?}");
    let session = builder.build().unwrap();
    let token = session.access_token().unwrap();
    let pair = stored_pair(&store, &session).unwrap();
    let record = store.load(session.store_key()).unwrap();
    let text = format!(
        "{builder_text} {session:?} {token:?} {pair:?} {record:?} {:?} {store:?} {:?}",
        server.credentials(),
        StoreKey::new("k")
    );
    for secret in [
        pair.access.expose_secret(),
        pair.refresh.expose_secret(),
        server.credentials().password().expose_secret(),
    ] {
        assert!(!text.contains(secret), "secret in {text}");
    }
    assert!(text.contains("[redacted]"));
}
