//! Sending a file and downloading it, through the session, against the built-in fake ChatApp
//! on 127.0.0.1: `cargo run --features testing --example files`.
//!
//! 1. `POST .../chats/{chatId}/messages/file` with a multipart form (`file`, `fileName`,
//!    `caption`), as ChatApp's public clients send it; the reply's `data` read as a type;
//! 2. the server's day passes: the next call (a binary download) meets
//!    `ApiInvalidTokenError`, the session refreshes, saves the pair, and sends it again;
//! 3. the event hook saw each new pair (where an application re-authorizes its socket).

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};

use chatapp_session::testing::FakeChatApp;
use chatapp_session::{Call, Event, Form, Session};
use serde::Deserialize;

#[path = "support/logging.rs"]
mod logging;
use logging::init_logging;

/// The `data` of a sent message.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sent {
    id: String,
    chat_id: String,
}

fn main() -> Result<(), Box<dyn StdError>> {
    init_logging();
    let server = FakeChatApp::start()?;
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&events);
    let session = Session::builder()
        .credentials(server.credentials())
        .base_url(server.base_url())
        .on_event(move |event| {
            if let Event::Made {
                access_expires_at, ..
            }
            | Event::Refreshed {
                access_expires_at, ..
            } = event
            {
                // A real application re-authorizes its push channel here.
                println!("   event: new access token, valid until {access_expires_at}");
            }
            if let Ok(mut seen) = seen.lock() {
                seen.push(format!("{event:?}"));
            }
        })
        .build()?;

    let chat = "/v1/licenses/37233/messengers/grWhatsApp/chats/79001234567/messages";
    let picture: Vec<u8> = b"\x89PNG\r\n\x1a\n...not really a picture...".to_vec();
    println!("1. Sending a file ({} bytes)", picture.len());
    let form = Form::new()
        .file("file", "photo.png", "image/png", picture.clone())
        .text("fileName", "photo.png")
        .text("caption", "The view from the office");
    let sent: Sent = session
        .call(&Call::new("POST", format!("{chat}/file")).form(form))?
        .data()?;
    println!("   sent as message {} to {}", sent.id, sent.chat_id);

    println!("\n2. A day later on the server, downloading it back");
    server.advance(24 * 60 * 60 + 1);
    let reply =
        session.call(&Call::new("GET", format!("{chat}/{}/file", sent.id)).accept("*/*"))?;
    println!(
        "   HTTP {}, {} bytes of {}, same as sent: {}",
        reply.status(),
        reply.body().len(),
        reply.content_type().unwrap_or("?"),
        reply.body() == picture.as_slice()
    );

    let c = server.counters();
    println!(
        "\n3. Server counters: makes={} refreshes={} invalid-token replies={}",
        c.makes, c.refreshes, c.invalid_token_replies
    );
    for event in events.lock().map(|e| e.clone()).unwrap_or_default() {
        println!("   {event}");
    }
    Ok(())
}
