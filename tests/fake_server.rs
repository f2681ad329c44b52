//! `testing::FakeChatApp` driven by a plain ureq 3 client: every assertion here would fail if
//! the fake server behaved differently from the ChatApp token service it imitates.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chatapp_session::testing::{Counters, FakeChatApp, Fault, Rotation, Route};
use serde_json::{json, Value};
use ureq::http;

/// A reply as the test sees it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    json: Value,
}

impl Reply {
    fn code(&self) -> Option<&str> {
        self.json["error"]["code"].as_str()
    }
    fn data(&self) -> &Value {
        &self.json["data"]
    }
}

struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn new(fake: &FakeChatApp) -> Client {
        Client::with_timeout(fake, Duration::from_secs(20))
    }

    fn with_timeout(fake: &FakeChatApp, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        Client {
            agent,
            base: fake.base_url(),
        }
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<Reply, ureq::Error> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .header("Content-Type", "application/json")
            .body(body.unwrap_or_default().as_bytes().to_vec())
            .map_err(ureq::Error::from)?;
        let mut response = self.agent.run(request)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.body_mut().read_to_string()?;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply {
            status,
            headers,
            json,
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        match self.try_call(method, path, headers, body) {
            Ok(reply) => reply,
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    fn make_with(&self, email: &str, password: &str, app_id: &str) -> Reply {
        let body = json!({"email": email, "password": password, "appId": app_id}).to_string();
        self.call("POST", "/v1/tokens", &[], Some(&body))
    }

    fn make(&self, fake: &FakeChatApp) -> Reply {
        let c = fake.credentials();
        self.make_with(c.email(), c.password().expose_secret(), c.app_id())
    }

    fn refresh(&self, refresh: &str) -> Reply {
        self.call("POST", "/v1/tokens/refresh", &[("Refresh", refresh)], None)
    }

    fn check(&self, access: &str) -> Reply {
        self.call(
            "GET",
            "/v1/tokens/check",
            &[("Authorization", access)],
            None,
        )
    }

    fn licenses(&self, access: &str) -> Reply {
        self.call("GET", "/v1/licenses", &[("Authorization", access)], None)
    }
}

/// The two tokens of a successful make or refresh reply.
fn tokens(reply: &Reply) -> (String, String) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["success"], json!(true), "{reply:?}");
    let d = reply.data();
    match (d["accessToken"].as_str(), d["refreshToken"].as_str()) {
        (Some(a), Some(r)) => (a.to_owned(), r.to_owned()),
        _ => panic!("no tokens in {reply:?}"),
    }
}

fn assert_invalid_token(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.json,
        json!({"success": false, "error": {"code": "ApiInvalidTokenError", "message": "Invalid Token"}})
    );
}

fn start() -> FakeChatApp {
    match FakeChatApp::start() {
        Ok(fake) => fake,
        Err(e) => panic!("start: {e}"),
    }
}

fn start_with(builder: chatapp_session::testing::FakeChatAppBuilder) -> FakeChatApp {
    match builder.start() {
        Ok(fake) => fake,
        Err(e) => panic!("start: {e}"),
    }
}

#[test]
fn the_fake_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<FakeChatApp>();
    send_sync::<Fault>();
    send_sync::<Counters>();
}

#[test]
fn base_url_and_default_credentials() {
    let fake = start();
    let url = fake.base_url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(url, format!("http://127.0.0.1:{}", fake.port()));
    let c = fake.credentials();
    assert_eq!(
        (c.email(), c.password().expose_secret(), c.app_id()),
        ("demo@example.com", "demo-password", "app_demo_1")
    );
    let system_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    assert!((fake.now() - system_now).abs() < 5);
}

#[test]
fn make_then_licenses_works() {
    let fake = start();
    let client = Client::new(&fake);
    let made = client.make(&fake);
    let (access, refresh) = tokens(&made);
    let d = made.data();
    assert_eq!(d["cabinetUserId"], json!(14545));
    assert_eq!(d["accessTokenEndTime"], json!(fake.now() + 86_400));
    assert_eq!(d["refreshTokenEndTime"], json!(fake.now() + 14 * 86_400));
    assert!(
        d["tokenType"].is_string(),
        "an extra field clients must ignore"
    );
    for token in [&access, &refresh] {
        assert_eq!(token.len(), 60);
        assert!(token.starts_with("$2y$10$"));
    }
    assert_ne!(access, refresh);

    let licenses = client.licenses(&access);
    assert_eq!(licenses.status, 200);
    assert_eq!(licenses.json["success"], json!(true));
    assert_eq!(licenses.data()[0]["licenseId"], json!(37233));
    assert_eq!(
        licenses.data()[0]["messenger"][0]["type"],
        json!("grWhatsApp")
    );
    assert_eq!(
        licenses
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );

    assert_eq!(
        client.check(&access).json,
        json!({"success": true, "data": {}})
    );
    // The refresh token is not an access token.
    assert_invalid_token(&client.licenses(&refresh), 401);
    assert_invalid_token(&client.check(&refresh), 401);
}

#[test]
fn ordinary_calls_need_a_raw_live_access_token() {
    let fake = start();
    let client = Client::new(&fake);
    let (access, _) = tokens(&client.make(&fake));
    let bearer = format!("Bearer {access}");
    assert_invalid_token(&client.licenses(&bearer), 401);
    assert_invalid_token(&client.call("GET", "/v1/licenses", &[], None), 401);
    assert_invalid_token(&client.licenses("nonsense"), 401);
    // Localised message, same code.
    let ru = client.call(
        "GET",
        "/v1/licenses",
        &[("Authorization", "x"), ("Lang", "ru")],
        None,
    );
    assert_eq!(ru.code(), Some("ApiInvalidTokenError"));
    assert_ne!(ru.json["error"]["message"], json!("Invalid Token"));
    // Unknown paths and methods: 404 envelope, token or not.
    for (method, path) in [
        ("GET", "/v1/nothing"),
        ("DELETE", "/v1/licenses"),
        ("GET", "/"),
    ] {
        let r = client.call(method, path, &[("Authorization", &access)], None);
        assert_eq!(
            (r.status, r.code()),
            (404, Some("ApiNotFoundError")),
            "{method} {path}"
        );
    }
    // The token endpoints ignore Authorization.
    let c = fake.credentials();
    let body =
        json!({"email": c.email(), "password": c.password().expose_secret(), "appId": c.app_id()});
    let r = client.call(
        "POST",
        "/v1/tokens",
        &[("Authorization", "garbage")],
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn send_message_and_callback_urls() {
    let fake = start();
    let client = Client::new(&fake);
    let (access, _) = tokens(&client.make(&fake));
    let auth = [("Authorization", access.as_str())];
    let path = "/v1/licenses/37233/messengers/grWhatsApp/chats/79283207637/messages/text";
    let sent = client.call("POST", path, &auth, Some(r#"{"text":"hello"}"#));
    assert_eq!(sent.status, 200, "{sent:?}");
    assert_eq!(sent.data()["chatId"], json!("79283207637@c.us"));
    let id = sent.data()["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let again = client.call("POST", path, &auth, Some(r#"{"text":"hello"}"#));
    assert_ne!(again.data()["id"], json!(id));
    let group = "/v1/licenses/37233/messengers/telegram/chats/-100123/messages/text";
    let sent = client.call("POST", group, &auth, Some(r#"{"text":"hi"}"#));
    assert_eq!(sent.data()["chatId"], json!("-100123"));
    for bad in [r#"{"text":""}"#, r#"{}"#, "not json", r#"{"text":5}"#] {
        let r = client.call("POST", path, &auth, Some(bad));
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json["success"], json!(false), "{bad}");
    }

    let cb = "/v1/licenses/37233/messengers/grWhatsApp/callbackUrl";
    let list = client.call("GET", "/v1/callbackUrls", &auth, None);
    assert_eq!(list.data(), &json!([]));
    let put = client.call(
        "PUT",
        cb,
        &auth,
        Some(r#"{"url":"https://example.com/hook"}"#),
    );
    assert_eq!(put.status, 200, "{put:?}");
    let list = client.call("GET", "/v1/callbackUrls", &auth, None);
    assert_eq!(
        list.data(),
        &json!([{"licenseId": 37233, "messengerType": "grWhatsApp", "url": "https://example.com/hook"}])
    );
    assert_eq!(client.call("PUT", cb, &auth, Some("{}")).status, 400);
    assert_eq!(client.call("DELETE", cb, &auth, None).status, 200);
    assert_eq!(
        client.call("GET", "/v1/callbackUrls", &auth, None).data(),
        &json!([])
    );
    // Without a token nothing is stored.
    assert_invalid_token(&client.call("PUT", cb, &[], Some(r#"{"url":"x"}"#)), 401);
    assert_eq!(
        client.call("GET", "/v1/callbackUrls", &auth, None).data(),
        &json!([])
    );
}

#[test]
fn wrong_credentials_are_refused_with_the_code() {
    let fake = start();
    let client = Client::new(&fake);
    let c = fake.credentials();
    let wrong = client.make_with(c.email(), "wrong-password", c.app_id());
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.json,
        json!({"success": false, "error": {"code": "ApiWrongCredentialsError", "message": "Wrong email or password"}})
    );
    assert_eq!(
        client
            .make_with("x@example.com", "demo-password", c.app_id())
            .status,
        401
    );
    assert_eq!(
        client
            .make_with(c.email(), "demo-password", "app_other")
            .status,
        401
    );
    let missing = client.call(
        "POST",
        "/v1/tokens",
        &[],
        Some(r#"{"email":"demo@example.com"}"#),
    );
    assert_eq!(
        (missing.status, missing.code()),
        (401, Some("ApiWrongCredentialsError"))
    );
    let malformed = client.call("POST", "/v1/tokens", &[], Some("{not json"));
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json["success"], json!(false));
    let counters = fake.counters();
    assert_eq!((counters.makes, counters.makes_rejected), (0, 5));
    assert_eq!(fake.makes_in_last_day(c.email(), c.app_id()), 0);
}

#[test]
fn refresh_rotates_strictly() {
    let fake = start();
    let client = Client::new(&fake);
    let (access1, refresh1) = tokens(&client.make(&fake));
    fake.advance(60);
    let refreshed = client.refresh(&refresh1);
    let (access2, refresh2) = tokens(&refreshed);
    assert_eq!(
        refreshed.data()["accessTokenEndTime"],
        json!(fake.now() + 86_400)
    );
    assert_ne!(access1, access2);
    assert_ne!(refresh1, refresh2);
    // The old pair is dead at once, both halves.
    let again = client.refresh(&refresh1);
    assert_invalid_token(&again, 401);
    assert_invalid_token(&client.licenses(&access1), 401);
    // The new pair works.
    assert_eq!(client.licenses(&access2).status, 200);
    let (access3, _) = tokens(&client.refresh(&refresh2));
    assert_eq!(client.licenses(&access3).status, 200);
    // Refresh needs its header; Authorization does not stand in for it.
    let none = client.call(
        "POST",
        "/v1/tokens/refresh",
        &[("Authorization", &access3)],
        None,
    );
    assert_invalid_token(&none, 401);
    let counters = fake.counters();
    assert_eq!((counters.refreshes, counters.refreshes_rejected), (2, 2));
}

#[test]
fn lenient_rotation_keeps_the_old_pair() {
    let fake = start_with(FakeChatApp::builder().rotation(Rotation::Lenient));
    let client = Client::new(&fake);
    let (access1, refresh1) = tokens(&client.make(&fake));
    let (access2, _) = tokens(&client.refresh(&refresh1));
    let (access3, _) = tokens(&client.refresh(&refresh1));
    for access in [&access1, &access2, &access3] {
        assert_eq!(client.licenses(access).status, 200);
    }
    // Until its end time.
    fake.advance(14 * 86_400);
    assert_invalid_token(&client.refresh(&refresh1), 401);
}

#[test]
fn two_concurrent_refreshes_of_one_token_exactly_one_wins() {
    let fake = start();
    let setup = Client::new(&fake);
    for round in 0..20 {
        let (_, refresh) = tokens(&setup.make(&fake));
        let threads = 2 + round % 3;
        let barrier = Arc::new(Barrier::new(threads));
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let barrier = Arc::clone(&barrier);
                    let refresh = refresh.clone();
                    let client = Client::new(&fake);
                    scope.spawn(move || {
                        barrier.wait();
                        client.refresh(&refresh).status
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        assert_eq!(
            statuses.iter().filter(|&&s| s == 200).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|&&s| s == 401).count(),
            threads - 1,
            "{statuses:?}"
        );
    }
}

#[test]
fn make_quota_refuses_the_101st_until_a_day_has_passed() {
    let fake = start_with(
        FakeChatApp::builder()
            .account("demo@example.com", "demo-password", "app_demo_1")
            .account("other@example.com", "pw", "app_other"),
    );
    let client = Client::new(&fake);
    for i in 0..100 {
        assert_eq!(client.make(&fake).status, 200, "make {i}");
        if i == 49 {
            fake.advance(3600);
        }
    }
    let refused = client.make(&fake);
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json,
        json!({"success": false, "error": {"code": "ApiTooManyRequestsError", "message": "Too many tokens.make requests"}})
    );
    // Another email+appId has its own quota.
    assert_eq!(
        client
            .make_with("other@example.com", "pw", "app_other")
            .status,
        200
    );
    assert_eq!(
        fake.makes_in_last_day("demo@example.com", "app_demo_1"),
        100
    );
    // A rolling day: 24 h after the first 50, those 50 are free again, not the other 50.
    fake.advance(86_400 - 3600);
    assert_eq!(fake.makes_in_last_day("demo@example.com", "app_demo_1"), 50);
    for i in 0..50 {
        assert_eq!(client.make(&fake).status, 200, "make {i} of the next day");
    }
    assert_eq!(client.make(&fake).status, 429);
    let counters = fake.counters();
    assert_eq!((counters.makes, counters.makes_rejected), (151, 2));
}

#[test]
fn quota_default_resets_after_advance_86400() {
    let fake = start_with(FakeChatApp::builder().make_limit(3));
    let client = Client::new(&fake);
    for _ in 0..3 {
        assert_eq!(client.make(&fake).status, 200);
    }
    assert_eq!(client.make(&fake).status, 429);
    fake.advance(86_400);
    assert_eq!(client.make(&fake).status, 200);
}

#[test]
fn a_day_kills_the_access_token_with_the_configured_status() {
    for status in [401, 200, 403] {
        let fake = start_with(FakeChatApp::builder().invalid_token_status(status));
        let client = Client::new(&fake);
        let (access, refresh) = tokens(&client.make(&fake));
        fake.advance(86_399);
        assert_eq!(client.licenses(&access).status, 200);
        fake.advance(1);
        assert_invalid_token(&client.licenses(&access), status);
        assert_invalid_token(&client.check(&access), status);
        // The refresh token lives 14 days; a refused refresh is 401 whatever the setting.
        fake.advance(13 * 86_400 - 2);
        let (access2, refresh2) = tokens(&client.refresh(&refresh));
        assert_eq!(client.licenses(&access2).status, 200);
        fake.advance(14 * 86_400);
        assert_invalid_token(&client.refresh(&refresh2), 401);
        let counters = fake.counters();
        assert_eq!(counters.invalid_token_replies, 2, "status {status}");
    }
}

#[test]
fn custom_lifetimes_and_a_shared_clock() {
    let clock = chatapp_session::testing::ManualClock::new(1_000_000);
    let fake = start_with(
        FakeChatApp::builder()
            .clock(clock.clone())
            .access_lifetime(10)
            .refresh_lifetime(100),
    );
    let client = Client::new(&fake);
    let made = client.make(&fake);
    assert_eq!(made.data()["accessTokenEndTime"], json!(1_000_010));
    assert_eq!(made.data()["refreshTokenEndTime"], json!(1_000_100));
    let (access, _) = tokens(&made);
    clock.advance(10);
    assert_eq!(fake.now(), 1_000_010);
    assert_invalid_token(&client.licenses(&access), 401);
}

#[test]
fn revocation() {
    let fake = start();
    let client = Client::new(&fake);
    let (access, refresh) = tokens(&client.make(&fake));
    fake.revoke_access_tokens();
    assert_invalid_token(&client.licenses(&access), 401);
    let (access2, refresh2) = tokens(&client.refresh(&refresh));
    assert_eq!(client.licenses(&access2).status, 200);
    fake.revoke_all();
    assert_invalid_token(&client.licenses(&access2), 401);
    assert_invalid_token(&client.refresh(&refresh2), 401);
    assert_eq!(client.make(&fake).status, 200);
}

#[test]
fn make_may_revoke_older_pairs() {
    let fake = start_with(FakeChatApp::builder().make_revokes_older(true));
    let client = Client::new(&fake);
    let (access1, refresh1) = tokens(&client.make(&fake));
    let (access2, _) = tokens(&client.make(&fake));
    assert_invalid_token(&client.licenses(&access1), 401);
    assert_invalid_token(&client.refresh(&refresh1), 401);
    assert_eq!(client.licenses(&access2).status, 200);
}

#[test]
fn issued_pairs_are_known_to_the_server_and_not_counted() {
    let fake = start();
    let client = Client::new(&fake);
    let pair = fake.issue_pair();
    assert_eq!(pair.cabinet_user_id, 14545);
    assert_eq!(pair.access_expires_at, fake.now() + 86_400);
    assert_eq!(client.licenses(pair.access.expose_secret()).status, 200);
    assert_eq!(client.refresh(pair.refresh.expose_secret()).status, 200);
    let counters = fake.counters();
    assert_eq!(
        (counters.makes, counters.refreshes, counters.requests),
        (0, 1, 1)
    );
    assert_eq!(fake.makes_in_last_day("demo@example.com", "app_demo_1"), 0);
}

#[test]
fn counters_count_correctly() {
    let fake = start();
    let client = Client::new(&fake);
    assert_eq!(fake.counters(), Counters::default());
    let (access, refresh) = tokens(&client.make(&fake)); // makes 1
    client.make_with("demo@example.com", "bad", "app_demo_1"); // makes_rejected 1
    client.licenses(&access); // requests 1
    client.licenses("bad"); // requests 2, invalid 1
    client.call("GET", "/v1/nope", &[], None); // requests 3
    client.check(&access); // checks 1
    client.check("bad"); // checks 2, invalid 2
    let (_, refresh2) = tokens(&client.refresh(&refresh)); // refreshes 1
    client.refresh(&refresh); // refreshes_rejected 1
    fake.inject(Route::Request, Fault::RateLimited);
    client.licenses(&access); // faults_served 1, no request counted
    fake.inject(Route::Refresh, Fault::Delay(Duration::from_millis(1)));
    client.refresh(&refresh2); // faults_served 2, refreshes 2
    let c = fake.counters();
    assert_eq!(
        (c.makes, c.makes_rejected, c.refreshes, c.refreshes_rejected),
        (1, 1, 2, 1)
    );
    assert_eq!(
        (
            c.checks,
            c.requests,
            c.invalid_token_replies,
            c.faults_served
        ),
        (2, 3, 2, 2)
    );
    fake.reset_counters();
    assert_eq!(fake.counters(), Counters::default());
    // The quota is not a counter: it survives the reset.
    assert_eq!(fake.makes_in_last_day("demo@example.com", "app_demo_1"), 1);
}

// ---- faults ----

#[test]
fn fault_status_and_server_error_and_rate_limited() {
    let fake = start();
    let client = Client::new(&fake);
    fake.inject(
        Route::Make,
        Fault::Status {
            status: 418,
            body: "teapot".into(),
            content_type: "text/plain".into(),
        },
    );
    fake.inject(Route::Make, Fault::ServerError(502));
    fake.inject(Route::Make, Fault::RateLimited);
    fake.inject(Route::Make, Fault::json(503, r#"{"success":false}"#));
    assert_eq!(fake.pending_faults(Route::Make), 4);
    let teapot = client.make(&fake);
    assert_eq!((teapot.status, &teapot.json), (418, &json!("teapot")));
    assert_eq!(
        teapot
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain")
    );
    let bad_gateway = client.make(&fake);
    assert_eq!(bad_gateway.status, 502);
    assert!(
        bad_gateway
            .json
            .as_str()
            .is_some_and(|s| s.contains("<html>")),
        "{bad_gateway:?}"
    );
    let limited = client.make(&fake);
    assert_eq!(
        (limited.status, limited.code()),
        (429, Some("ApiTooManyRequestsError"))
    );
    assert_eq!(
        limited
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let canned = client.make(&fake);
    assert_eq!(
        (canned.status, &canned.json),
        (503, &json!({"success": false}))
    );
    // Faults replace the work, and the queue is now empty.
    assert_eq!(fake.counters().makes, 0);
    assert_eq!(fake.counters().faults_served, 4);
    assert_eq!(client.make(&fake).status, 200);
    assert_eq!(fake.counters().makes, 1);
}

#[test]
fn faults_apply_only_to_their_route_and_can_be_cleared() {
    let fake = start();
    let client = Client::new(&fake);
    fake.inject(Route::Refresh, Fault::ServerError(500));
    let (access, refresh) = tokens(&client.make(&fake));
    assert_eq!(client.check(&access).status, 200);
    assert_eq!(client.licenses(&access).status, 200);
    assert_eq!(client.refresh(&refresh).status, 500);
    fake.inject(Route::Check, Fault::ServerError(500));
    fake.clear_faults();
    assert_eq!(fake.pending_faults(Route::Check), 0);
    assert_eq!(client.check(&access).status, 200);
}

#[test]
fn fault_malformed_json() {
    let fake = start();
    let client = Client::new(&fake);
    fake.inject(Route::Check, Fault::MalformedJson);
    let r = client.check("whatever");
    assert_eq!(r.status, 200);
    assert_eq!(r.json, json!(r#"{"success": tru"#));
}

#[test]
fn fault_missing_field() {
    let fake = start();
    let client = Client::new(&fake);
    fake.inject(Route::Make, Fault::MissingField("refreshToken".into()));
    let made = client.make(&fake);
    assert_eq!((made.status, &made.json["success"]), (200, &json!(true)));
    assert!(made.data().get("refreshToken").is_none());
    // The work was done: the access token of the lost pair works.
    let access = made.data()["accessToken"].as_str().unwrap_or_default();
    assert_eq!(client.licenses(access).status, 200);
    assert_eq!(fake.counters().makes, 1);

    let (access, refresh) = tokens(&client.make(&fake));
    fake.inject(
        Route::Refresh,
        Fault::MissingField("accessTokenEndTime".into()),
    );
    let refreshed = client.refresh(&refresh);
    assert!(refreshed.data().get("accessTokenEndTime").is_none());
    assert!(refreshed.data()["refreshToken"].is_string());
    // Rotated: the old pair is dead.
    assert_invalid_token(&client.licenses(&access), 401);

    let (access, _) = tokens(&client.make(&fake));
    fake.inject(Route::Request, Fault::MissingField("success".into()));
    let r = client.licenses(&access);
    assert_eq!(r.status, 200);
    assert!(r.json.get("success").is_none(), "{r:?}");
}

#[test]
fn fault_wrong_types() {
    let fake = start();
    let client = Client::new(&fake);
    fake.inject(Route::Make, Fault::WrongTypes);
    let made = client.make(&fake);
    assert_eq!(made.status, 200);
    let d = made.data();
    assert!(d["accessTokenEndTime"].is_string(), "{d}");
    assert!(d["refreshTokenEndTime"].is_string(), "{d}");
    assert!(d["cabinetUserId"].is_string(), "{d}");
    assert_eq!(d["cabinetUserId"], json!("14545"));
    assert!(d["accessToken"].is_string());
    fake.inject(Route::Request, Fault::WrongTypes);
    assert_eq!(client.licenses("x").json["success"], json!("true"));
}

#[test]
fn fault_drop_connection_gives_no_reply_and_does_nothing() {
    let fake = start();
    let client = Client::new(&fake);
    fake.inject(Route::Make, Fault::DropConnection);
    match client.try_call(
        "POST",
        "/v1/tokens",
        &[],
        Some(&json!({"email": "demo@example.com", "password": "demo-password", "appId": "app_demo_1"}).to_string()),
    ) {
        Err(ureq::Error::StatusCode(s)) => panic!("got a status {s}"),
        Err(_) => {}
        Ok(reply) => panic!("got a reply {reply:?}"),
    }
    support::assert_counters!(fake, makes: 0, makes_rejected: 0, faults_served: 1);
    assert_eq!(fake.makes_in_last_day("demo@example.com", "app_demo_1"), 0);
    // The server goes on serving.
    assert_eq!(client.make(&fake).status, 200);
}

#[test]
fn fault_drop_connection_seen_by_a_raw_socket() {
    let fake = start();
    fake.inject(Route::Check, Fault::DropConnection);
    let Ok(mut socket) = TcpStream::connect(("127.0.0.1", fake.port())) else {
        panic!("connect failed")
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET /v1/tokens/check HTTP/1.1\r\nHost: x\r\nAuthorization: t\r\n\r\n";
    assert!(socket.write_all(request.as_bytes()).is_ok());
    let mut got = Vec::new();
    let started = Instant::now();
    let read = socket.read_to_end(&mut got);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "no close, a timeout"
    );
    match read {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes: {:?}", String::from_utf8_lossy(&got)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(got.is_empty());

    // Without a fault, the same raw request is answered on a kept-alive connection.
    let Ok(mut socket) = TcpStream::connect(("127.0.0.1", fake.port())) else {
        panic!("connect failed")
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 512];
    for _ in 0..2 {
        assert!(socket.write_all(request.as_bytes()).is_ok());
        let n = socket.read(&mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
        assert!(text.ends_with("\"Invalid Token\"}}"), "{text}");
    }
}

#[test]
fn fault_lost_reply_on_refresh_rotates_without_telling() {
    let fake = start();
    let client = Client::new(&fake);
    let (access, refresh) = tokens(&client.make(&fake));
    fake.inject(Route::Refresh, Fault::LostReply);
    match client.try_call("POST", "/v1/tokens/refresh", &[("Refresh", &refresh)], None) {
        Ok(reply) => panic!("got a reply {reply:?}"),
        Err(ureq::Error::StatusCode(s)) => panic!("got a status {s}"),
        Err(_) => {}
    }
    assert_eq!(fake.counters().refreshes, 1);
    // The server rotated: the pair the client still holds is dead.
    assert_invalid_token(&client.refresh(&refresh), 401);
    assert_invalid_token(&client.licenses(&access), 401);
    assert_eq!(fake.counters().refreshes_rejected, 1);
}

#[test]
fn fault_lost_reply_on_make_counts_toward_the_quota() {
    let fake = start_with(FakeChatApp::builder().make_limit(1));
    let client = Client::new(&fake);
    fake.inject(Route::Make, Fault::LostReply);
    assert!(client
        .try_call(
            "POST",
            "/v1/tokens",
            &[],
            Some(&json!({"email": "demo@example.com", "password": "demo-password", "appId": "app_demo_1"}).to_string())
        )
        .is_err());
    assert_eq!(fake.counters().makes, 1);
    assert_eq!(client.make(&fake).status, 429);
}

#[test]
fn fault_delay_times_out_a_short_client_and_serves_a_patient_one() {
    let fake = start();
    let impatient = Client::with_timeout(&fake, Duration::from_millis(200));
    let patient = Client::new(&fake);
    fake.inject(Route::Make, Fault::Delay(Duration::from_secs(3)));
    let started = Instant::now();
    let c = fake.credentials();
    let body =
        json!({"email": c.email(), "password": c.password().expose_secret(), "appId": c.app_id()})
            .to_string();
    match impatient.try_call("POST", "/v1/tokens", &[], Some(&body)) {
        Err(ureq::Error::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // The delay holds only its own request: others are served meanwhile.
    let quick = Instant::now();
    assert_eq!(patient.make(&fake).status, 200);
    assert!(quick.elapsed() < Duration::from_secs(2));

    fake.inject(Route::Check, Fault::Delay(Duration::from_millis(300)));
    let slow = Instant::now();
    let (access, _) = tokens(&patient.make(&fake));
    assert_eq!(patient.check(&access).status, 200);
    assert!(slow.elapsed() >= Duration::from_millis(300));
}

#[test]
fn fault_huge_is_streamed_with_and_without_a_length() {
    const CAP: u64 = 4 * 1024 * 1024;
    let fake = start();
    let client = Client::new(&fake);
    for declare_length in [true, false] {
        let bytes = 1u64 << 34; // 16 GiB: only a stream can send it
        fake.inject(
            Route::Request,
            Fault::Huge {
                bytes,
                declare_length,
            },
        );
        let request = http::Request::builder()
            .uri(format!("{}/v1/licenses", fake.base_url()))
            .body(());
        let Ok(request) = request else {
            panic!("request")
        };
        let mut response = match client.agent.run(request) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(response.status().as_u16(), 200);
        let length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert_eq!(length, declare_length.then_some(bytes));
        let mut got = Vec::new();
        let read = response
            .body_mut()
            .as_reader()
            .take(CAP)
            .read_to_end(&mut got);
        assert!(read.is_ok(), "{read:?}");
        assert_eq!(got.len() as u64, CAP);
        assert!(got.starts_with(br#"{"success":true,"data":"xxx"#));
    }
    // A small one without a length ends with the connection, at exactly its size.
    fake.inject(
        Route::Request,
        Fault::Huge {
            bytes: 1000,
            declare_length: false,
        },
    );
    let r = client.call("GET", "/v1/licenses", &[], None);
    assert_eq!(r.json.as_str().map(str::len), Some(1000));
    assert!(r.headers.get("content-length").is_none());
    // And the server is still fine.
    let (access, _) = tokens(&client.make(&fake));
    assert_eq!(client.licenses(&access).status, 200);
}

#[test]
fn open_connections_counts_clients_until_they_are_served_and_gone() {
    let fake = FakeChatApp::start().unwrap();
    assert_eq!(fake.open_connections(), 0);
    let stream = TcpStream::connect(("127.0.0.1", fake.port())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.open_connections() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(fake.open_connections(), 1);
    drop(stream);
    while fake.open_connections() != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(fake.open_connections(), 0);
}

#[test]
fn the_builders_debug_shows_no_password() {
    let builder = FakeChatApp::builder().account("a@b.c", "pw-SECRET-1", "app_1");
    let text = format!("{builder:?} {builder:#?}");
    assert!(!text.contains("SECRET"), "{text}");
    assert!(
        text.contains("a@b.c") && text.contains("[redacted]"),
        "{text}"
    );
    // The account still works.
    let fake = builder.start().unwrap();
    assert_eq!(fake.credentials().password().expose_secret(), "pw-SECRET-1");
    let session = chatapp_session::Session::builder()
        .credentials(fake.credentials())
        .base_url(fake.base_url())
        .build()
        .unwrap();
    assert!(session.login().is_ok());
}
