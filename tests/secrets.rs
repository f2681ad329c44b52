//! Secrets: no token and no password in what the demo and the `chatapp` CLI print, even with
//! `RUST_LOG=trace` (both use env_logger), in any command, failing ones included; none in
//! the `Debug` or `Display` of any public type or error.
//!
//! A secret counts as shown when any 10 characters of a token in a row, or 8 of the password,
//! appear anywhere, or when the whole of it appears in the bytes of a hex dump (the form in
//! which HTTP stacks trace what they send), so a secret cut into pieces is found too.

mod support;

use chatapp_session::store::{FileStore, MemoryStore, StoreKey, StoredRecord, TokenStore};
use chatapp_session::testing::{FakeChatApp, Fault, Route};
use chatapp_session::{Credentials, Error, Session};

use support::{example, Cli, Run};

const EMAIL: &str = "owner@example.com";
/// Distinctive, so that none of its 8-character pieces appears anywhere by chance.
const PASSWORD: &str = "Pw7fK3q9Zx2Lm8Rt";
const WRONG_PASSWORD: &str = "Wq4uJ8c2Vn6Hs0Ty";
const APP_ID: &str = "app_77_1";

/// The bytes of a hex-dump row (8 groups of 4 hex digits, `--` for none, then 16
/// characters), or `None` for any other line.
fn hex_row(line: &str) -> Option<Vec<u8>> {
    let words: Vec<&str> = line.split(' ').collect();
    (0..words.len().saturating_sub(7)).find_map(|start| {
        let groups = &words[start..start + 8];
        let is_group =
            |g: &&str| g.len() == 4 && g.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        groups.iter().all(is_group).then(|| {
            groups
                .iter()
                .flat_map(|g| [&g[..2], &g[2..]])
                .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
                .collect()
        })
    })
}

/// The text, then the bytes of every hex dump in it put back together.
fn searchable(text: &str) -> String {
    let dumped: Vec<u8> = text.lines().filter_map(hex_row).flatten().collect();
    format!("{text}\n{}", String::from_utf8_lossy(&dumped))
}

/// The piece of `secret` that `text` shows, if any.
fn shown(text: &str, secret: &str) -> Option<String> {
    let text = searchable(text);
    if text.contains(secret) {
        return Some(secret.to_owned());
    }
    let piece = if secret.len() >= 40 { 10 } else { 8 };
    let chars: Vec<char> = secret.chars().collect();
    chars
        .windows(piece.min(chars.len()))
        .map(|w| w.iter().collect::<String>())
        .find(|w| text.contains(w.as_str()))
}

/// Every secret seen so far: both passwords and every token ever stored.
#[derive(Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn add_record(&mut self, record: Option<&StoredRecord>) {
        if let Some(pair) = record.and_then(|r| r.pair.as_ref()) {
            for token in [pair.access.expose_secret(), pair.refresh.expose_secret()] {
                if !self.0.iter().any(|s| s == token) {
                    self.0.push(token.to_owned());
                }
            }
        }
    }

    fn assert_none_in(&self, text: &str, what: &str) {
        for secret in self
            .0
            .iter()
            .map(String::as_str)
            .chain([PASSWORD, WRONG_PASSWORD])
        {
            if let Some(piece) = shown(text, secret) {
                panic!("{what} shows a secret ({piece:?}):\n{text}");
            }
        }
        assert!(
            !searchable(text).contains("$2y$10$"),
            "{what} shows a token:\n{text}"
        );
    }
}

fn server() -> FakeChatApp {
    FakeChatApp::builder()
        .account(EMAIL, PASSWORD, APP_ID)
        .start()
        .unwrap()
}

#[test]
fn the_detector_finds_secrets_cut_into_a_hex_dump() {
    let secret = "$2y$10$E47dCl4tDArpVtbii5Al3OPJd3zy6Ey16ZzfhvlqFZFIhhEl1F8Ui";
    let dump = "[T TRACE ureq_proto::util] 6175 7468 3a20 2432 7924 3130 2445 3437  auth:.$2y$10$E47\n\
                [T TRACE ureq_proto::util] 6443 6c34 7444 4172 7056 7462 6969 3541  dCl4tDArpVtbii5A\n\
                [T TRACE ureq_proto::util] 6c33 4f50 4a64 337a 7936 4579 3136 5a7a  l3OPJd3zy6Ey16Zz\n\
                [T TRACE ureq_proto::util] 6668 766c 7146 5a46 4968 6845 6c31 4638  fhvlqFZFIhhEl1F8\n\
                [T TRACE ureq_proto::util] 5569 0d0a ---- ---- ---- ---- ---- ----  Ui..............";
    assert_eq!(shown(dump, secret).as_deref(), Some(secret));
    assert!(shown("nothing here", secret).is_none());
    assert!(shown(&format!("x {} y", &secret[20..31]), secret).is_some());
    assert!(shown("Pw7fK3q9 and the rest", PASSWORD).is_some());
}

/// Runs `args` with `RUST_LOG=trace`; checks its output against every secret known after it.
fn run_checked(
    cli: &Cli,
    server: &FakeChatApp,
    path: &std::path::Path,
    secrets: &mut Secrets,
    args: &[&str],
    code: i32,
) -> Run {
    let what = format!("`chatapp {}`", args.join(" "));
    let run = cli.run(args);
    run.expect_code(code, &what);
    let key = StoreKey::for_account(&server.base_url(), EMAIL, APP_ID);
    secrets.add_record(FileStore::new(path).load(&key).unwrap().as_ref());
    secrets.assert_none_in(&run.stderr, &format!("{what} on stderr"));
    if args != ["token"] {
        secrets.assert_none_in(&run.stdout, &format!("{what} on stdout"));
    }
    run
}

#[test]
fn no_cli_command_prints_a_secret_even_at_trace_level() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.json");
    let cli = Cli::file(&server, &path)
        .with_env("CHATAPP_EMAIL", EMAIL)
        .with_env("CHATAPP_PASSWORD", PASSWORD)
        .with_env("CHATAPP_APP_ID", APP_ID)
        .with_env("RUST_LOG", "trace");
    let mut secrets = Secrets::default();
    let mut run =
        |args: &[&str], code: i32| run_checked(&cli, &server, &path, &mut secrets, args, code);

    run(&["login"], 0);
    run(&["status"], 0);
    let token = run(&["token"], 0);
    run(&["call", "GET", "/v1/licenses"], 0);
    run(
        &[
            "call",
            "POST",
            "/v1/licenses/37233/messengers/grWhatsApp/chats/79283207637/messages/text",
            "--json",
            r#"{"text":"hello"}"#,
        ],
        0,
    );
    server.revoke_access_tokens();
    run(&["call", "GET", "/v1/licenses"], 0); // a refresh
    server.inject(Route::Refresh, Fault::ServerError(500));
    server.revoke_access_tokens();
    run(&["call", "GET", "/v1/licenses"], 5);
    run(&["call", "GET", "/v1/licenses"], 0);
    run(&["token"], 0);
    run(&["logout"], 0);
    run(&["status"], 0);
    assert_eq!(server.counters().makes, 1);

    // The `token` command does print the live access token, and the detector sees it there.
    let printed = token.stdout.trim();
    assert_eq!(printed.len(), 60, "{printed}");
    assert!(shown(&token.stdout, printed).is_some());
    assert!(
        secrets.0.iter().any(|s| s == printed),
        "the printed token was the stored one"
    );

    // Failing commands: a wrong password, and a dead refresh token without and with
    // credentials.
    let wrong = cli.clone().with_env("CHATAPP_PASSWORD", WRONG_PASSWORD);
    let w = run_checked(&wrong, &server, &path, &mut secrets, &["login"], 3);
    assert!(
        w.stderr.contains("rejected the credentials"),
        "{}",
        w.stderr
    );
    run_checked(&cli, &server, &path, &mut secrets, &["login"], 0);
    server.revoke_all();
    let anonymous = cli.clone().without_env("CHATAPP_PASSWORD");
    let dead = run_checked(
        &anonymous,
        &server,
        &path,
        &mut secrets,
        &["call", "GET", "/v1/licenses"],
        3,
    );
    assert!(
        dead.stderr.contains("rejected the stored refresh token"),
        "{}",
        dead.stderr
    );
    run_checked(
        &cli,
        &server,
        &path,
        &mut secrets,
        &["call", "GET", "/v1/licenses"],
        0,
    );
    assert!(secrets.0.len() >= 8, "tokens seen: {}", secrets.0.len());
}

#[test]
fn the_demo_prints_no_secret_even_at_trace_level() {
    // `trace` for all, and the two ways of naming the HTTP stack that dumps bytes at TRACE.
    for filter in ["trace", "ureq=trace", "ureq_proto::util=trace"] {
        let output = std::process::Command::new(example("demo"))
            .env_clear()
            .env("RUST_LOG", filter)
            .output()
            .expect("the demo runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("In all:"), "{stdout}");
        assert!(
            stderr.contains("DEBUG ureq"),
            "RUST_LOG={filter} had no effect: {stderr}"
        );
        let secrets = Secrets(vec![chatapp_session::testing::DEFAULT_PASSWORD.to_owned()]);
        secrets.assert_none_in(&stdout, &format!("RUST_LOG={filter}: the demo's stdout"));
        secrets.assert_none_in(&stderr, &format!("RUST_LOG={filter}: the demo's stderr"));
    }
    // Without RUST_LOG, warnings only: nothing at all in a run that goes well.
    let output = std::process::Command::new(example("demo"))
        .env_clear()
        .output()
        .expect("the demo runs");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

/// The public types and every error, made for real against the fake server and real stores.
#[test]
fn debug_and_display_of_every_public_type_and_error_show_no_secret() {
    let server = server();
    let credentials = Credentials::new(EMAIL, PASSWORD, APP_ID);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let file = FileStore::new(&path);
    let memory = MemoryStore::new();
    let builder = Session::builder()
        .credentials(credentials.clone())
        .store(file.clone())
        .base_url(server.base_url())
        .timeout(support::DELAY_TIMEOUT);
    let mut texts = vec![format!("{builder:?} {builder:#?}")];
    let session = builder.build().unwrap();
    session.request("GET", "/v1/licenses", None).unwrap();
    let key = session.store_key().clone();
    let record = file.load(&key).unwrap().unwrap();
    let pair = record.pair.clone().unwrap();
    memory.save(&key, &record).unwrap();
    let fake_builder = FakeChatApp::builder().account(EMAIL, PASSWORD, APP_ID);
    texts.push(format!(
        "{session:?} {session:#?} {credentials:?} {credentials:#?} {pair:?} {pair:#?} {:?} {:?} {:?} \
         {record:?} {record:#?} {file:?} {memory:?} {server:?} {fake_builder:?} {:?} {key:?} {key} {:?}",
        pair.access,
        pair.refresh,
        credentials.password(),
        session.status().unwrap(),
        server.counters(),
    ));
    #[cfg(feature = "sqlite")]
    {
        let sqlite = chatapp_session::store::SqliteStore::open(dir.path().join("s.db")).unwrap();
        sqlite.save(&key, &record).unwrap();
        texts.push(format!("{sqlite:?} {sqlite:#?}"));
    }
    #[cfg(feature = "keyring")]
    {
        // Unconnected (a keyring daemon is not needed here): its Debug holds no record at all.
        let keyring = chatapp_session::store::KeyringStore::new("chatapp-session-secrets-test");
        texts.push(format!("{keyring:?} {keyring:#?} {:?}", keyring.backend()));
    }
    assert!(texts.concat().contains("[redacted]"));

    // Every error, for real.
    let mut errors: Vec<Error> = Vec::new();
    let on = |store: MemoryStore, credentials: Option<Credentials>| {
        let mut b = Session::builder()
            .store(store)
            .store_key("errors")
            .base_url(server.base_url())
            .timeout(support::DELAY_TIMEOUT);
        if let Some(c) = credentials {
            b = b.credentials(c);
        }
        b.build().unwrap()
    };
    let store = MemoryStore::new();
    let s = on(store.clone(), Some(credentials.clone()));
    s.access_token().unwrap();
    let stored = store.load(&StoreKey::new("errors")).unwrap();
    let mut all_tokens = vec![
        pair.access.expose_secret().to_owned(),
        pair.refresh.expose_secret().to_owned(),
    ];
    if let Some(p) = stored.as_ref().and_then(|r| r.pair.as_ref()) {
        all_tokens.extend([
            p.access.expose_secret().to_owned(),
            p.refresh.expose_secret().to_owned(),
        ]);
    }
    let mut fail = |e: Result<serde_json::Value, Error>| errors.push(e.unwrap_err());
    let get = |s: &Session| s.request("GET", "/v1/licenses", None);
    // InvalidCredentials
    fail(get(&on(
        MemoryStore::new(),
        Some(Credentials::new(EMAIL, WRONG_PASSWORD, APP_ID)),
    )));
    // TokenRejected
    let refused =
        r#"{"success":false,"error":{"code":"ApiInvalidTokenError","message":"Invalid Token"}}"#;
    server.inject(Route::Request, Fault::json(401, refused));
    server.inject(Route::Request, Fault::json(401, refused));
    fail(get(&s));
    // Api, RateLimited, Server, Protocol, Timeout, Network on ordinary calls
    fail(s.request(
        "POST",
        "/v1/licenses/1/messengers/grWhatsApp/chats/1/messages/text",
        Some(&serde_json::json!({})),
    ));
    for fault in [
        Fault::RateLimited,
        Fault::ServerError(503),
        Fault::MalformedJson,
        Fault::Delay(support::FAULT_DELAY),
        Fault::DropConnection,
    ] {
        server.inject(Route::Request, fault);
        fail(get(&s));
    }
    // RefreshReplyLost, then RefreshRejected without credentials
    server.revoke_access_tokens();
    server.inject(Route::Refresh, Fault::LostReply);
    fail(get(&s));
    fail(get(&on(store.clone(), None)));
    // QuotaExhausted, CredentialsRequired
    let quota = Session::builder()
        .credentials(credentials.clone())
        .base_url(server.base_url())
        .make_limit(0)
        .build()
        .unwrap();
    fail(quota.access_token().map(|_| serde_json::Value::Null));
    fail(
        on(MemoryStore::new(), None)
            .access_token()
            .map(|_| serde_json::Value::Null),
    );
    // Storage: corrupt (a store file cut in the middle of a token), newer, insecure, I/O
    let text = std::fs::read(&path).unwrap();
    let at = text.windows(7).position(|w| w == b"$2y$10$").unwrap() + 30;
    let storage = |bytes: &[u8], mode: u32| {
        std::fs::write(&path, bytes).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        session.status().map(|_| serde_json::Value::Null)
    };
    fail(storage(&text[..at], 0o600));
    fail(storage(br#"{"version":5,"entries":{}}"#, 0o600));
    #[cfg(unix)]
    fail(storage(&text, 0o644));
    let not_a_file = Session::builder()
        .store(FileStore::new(dir.path()))
        .base_url(server.base_url())
        .build()
        .unwrap();
    fail(not_a_file.status().map(|_| serde_json::Value::Null));
    // Config
    errors.push(
        Session::builder()
            .base_url("http://example.com")
            .build()
            .unwrap_err(),
    );

    let kinds: Vec<String> = errors
        .iter()
        .map(|e| {
            format!("{e:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    for kind in [
        "InvalidCredentials",
        "RefreshRejected",
        "TokenRejected",
        "QuotaExhausted",
        "CredentialsRequired",
        "Api",
        "RateLimited",
        "Server",
        "Protocol",
        "Timeout",
        "Network",
        "RefreshReplyLost",
        "Storage",
        "Config",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} among {kinds:?}");
    }
    for e in &errors {
        let mut text = format!("{e} {e:?} {e:#?}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(&format!(" {s} {s:?}"));
            source = s.source();
        }
        texts.push(text);
    }

    let all = texts.join("\n");
    for secret in all_tokens
        .iter()
        .map(String::as_str)
        .chain([PASSWORD, WRONG_PASSWORD])
    {
        if let Some(piece) = shown(&all, secret) {
            panic!("a secret ({piece:?}) in:\n{all}");
        }
    }
}
