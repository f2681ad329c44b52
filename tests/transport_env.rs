//! Transport settings that depend on the process environment, in a test binary of their own
//! (they set environment variables).

use chatapp_session::store::{MemoryStore, StoreKey, StoredRecord, TokenStore};
use chatapp_session::testing::FakeChatApp;
use chatapp_session::{Error, Session};

#[test]
fn a_proxy_in_the_environment_does_not_break_loopback() {
    // A proxy that does not exist: if the session used it, every call would fail.
    std::env::set_var("HTTP_PROXY", "http://127.0.0.1:9");
    std::env::set_var("http_proxy", "http://127.0.0.1:9");
    std::env::set_var("ALL_PROXY", "http://127.0.0.1:9");
    let server = FakeChatApp::start().unwrap();
    let session = Session::builder()
        .credentials(server.credentials())
        .store(MemoryStore::new())
        .base_url(server.base_url())
        .build()
        .unwrap();
    session.request("GET", "/v1/licenses", None).unwrap();
    assert_eq!(server.counters().requests, 1);
}

#[test]
fn the_lang_header_reaches_the_server() {
    let server = FakeChatApp::start().unwrap();
    let store = MemoryStore::new();
    let key = "lang";
    store
        .save(
            &StoreKey::new(key),
            &StoredRecord {
                pair: Some(server.issue_pair()),
                makes: Vec::new(),
                ..Default::default()
            },
        )
        .unwrap();
    server.revoke_all();
    let session = Session::builder()
        .store(store)
        .store_key(key)
        .base_url(server.base_url())
        .lang("ru")
        .build()
        .unwrap();
    // The fake localises its invalid-token message by the Lang header.
    match session.request("GET", "/v1/licenses", None) {
        Err(Error::RefreshRejected(a)) => {
            assert_eq!(a.code.as_deref(), Some("ApiInvalidTokenError"));
            assert_eq!(a.message.as_deref(), Some("Недействительный токен"));
        }
        other => panic!("{other:?}"),
    }
}
