//! The crate's main job, narrated: a session kept in a file store against a built-in fake
//! ChatApp server on 127.0.0.1. Run it with `cargo run --features testing,file --example demo`.
//!
//! 1. first call: nothing stored, so one tokens.make; the pair is saved;
//! 2. more calls reuse the saved access token: no auth call at all;
//! 3. the server's day passes: the next call meets `ApiInvalidTokenError`, the session
//!    refreshes, saves the new pair, and repeats the call;
//! 4. a new `Session` (a restarted application) reads the file and needs no auth call;
//! 5. the server's counters show what was spent.

use std::error::Error as StdError;

use chatapp_session::store::FileStore;
use chatapp_session::testing::FakeChatApp;
use chatapp_session::Session;
use serde_json::json;

#[path = "support/logging.rs"]
mod logging;
use logging::init_logging;

fn counters_line(server: &FakeChatApp) -> String {
    let c = server.counters();
    format!(
        "server counters: makes={} refreshes={} rejected refreshes={} API calls={} invalid-token replies={}",
        c.makes, c.refreshes, c.refreshes_rejected, c.requests, c.invalid_token_replies
    )
}

fn main() -> Result<(), Box<dyn StdError>> {
    init_logging();

    let server = FakeChatApp::start()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("chatapp").join("session.json");
    println!("fake ChatApp server at {}", server.base_url());
    println!("token pair kept in {}", path.display());

    let session = Session::builder()
        .credentials(server.credentials())
        .store(FileStore::new(&path))
        .base_url(server.base_url())
        .build()?;

    println!("\n1. First call, nothing stored yet");
    let licenses = session.request("GET", "/v1/licenses", None)?;
    let count = licenses.as_array().map_or(0, Vec::len);
    println!("   GET /v1/licenses -> {count} license(s)");
    let status = session.status()?;
    println!(
        "   tokens.make gave a pair for cabinet user {}; access ends at {}, refresh at {}; saved before use",
        status.cabinet_user_id.unwrap_or_default(),
        status.access_expires_at.unwrap_or_default(),
        status.refresh_expires_at.unwrap_or_default()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        println!("   store file mode: {mode:o} (owner only)");
    }
    println!("   {}", counters_line(&server));

    println!("\n2. Two more calls reuse the saved access token");
    let reply = session.request(
        "POST",
        "/v1/licenses/37233/messengers/grWhatsApp/chats/79283207637/messages/text",
        Some(&json!({"text": "Hello from chatapp-session"})),
    )?;
    println!("   message sent: {reply}");
    session.request("GET", "/v1/licenses", None)?;
    println!("   {}", counters_line(&server));

    println!("\n3. A day passes on the server: the access token dies there");
    server.advance(24 * 60 * 60 + 60);
    let before = server.counters();
    let old_end = session.status()?.access_expires_at.unwrap_or_default();
    let licenses = session.request("GET", "/v1/licenses", None)?;
    let after = server.counters();
    let new_end = session.status()?.access_expires_at.unwrap_or_default();
    println!(
        "   GET /v1/licenses: {} ApiInvalidTokenError reply, {} tokens.refresh, {} calls sent in all -> {} license(s)",
        after.invalid_token_replies - before.invalid_token_replies,
        after.refreshes - before.refreshes,
        after.requests - before.requests,
        licenses.as_array().map_or(0, Vec::len)
    );
    println!("   the new pair was saved before the call was repeated: access now ends at {new_end} (was {old_end})");
    println!("   {}", counters_line(&server));

    println!("\n4. The application restarts: a new Session reads the same file");
    let before = server.counters();
    let restarted = Session::builder()
        .credentials(server.credentials())
        .store(FileStore::new(&path))
        .base_url(server.base_url())
        .build()?;
    restarted.request("GET", "/v1/licenses", None)?;
    let after = server.counters();
    println!(
        "   one call, {} auth calls (makes {} -> {}, refreshes {} -> {})",
        (after.makes - before.makes) + (after.refreshes - before.refreshes),
        before.makes,
        after.makes,
        before.refreshes,
        after.refreshes
    );

    println!("\n5. In all: {}", counters_line(&server));
    println!(
        "   ChatApp's rules kept: one make, one refresh when the server said so, never on a timer."
    );
    Ok(())
}
