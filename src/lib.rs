//! # chatapp-session
//!
//! A blocking session for the [ChatApp](https://api.chatapp.online) API that follows
//! ChatApp's own rules for clients: keep the token pair, call the API with the saved access
//! token, and only when the server answers `ApiInvalidTokenError` refresh, save the new pair
//! and repeat the request. tokens.make (100 a day) is the last resort, counted against a
//! persisted rolling 24 h ledger; there is never a refresh on a timer.
//!
//! ## Usage
// The example needs `testing` (the fake server) and `memory`: in a build without them it is
// listed as ignored rather than compiled to nothing and counted as passed.
#![cfg_attr(all(feature = "testing", feature = "memory"), doc = "```")]
#![cfg_attr(not(all(feature = "testing", feature = "memory")), doc = "```ignore")]
//! use chatapp_session::store::MemoryStore;
//! use chatapp_session::testing::FakeChatApp;
//! use chatapp_session::Session;
//!
//! // A fake ChatApp on 127.0.0.1; in production: your credentials and the default base URL.
//! let server = FakeChatApp::start()?;
//! let session = Session::builder()
//!     .credentials(server.credentials())
//!     .store(MemoryStore::new()) // or FileStore, SqliteStore, KeyringStore, PostgresStore
//!     .base_url(server.base_url())
//!     .build()?;
//! let licenses = session.request("GET", "/v1/licenses", None)?;
//! assert!(licenses.is_array());
//!
//! server.advance(24 * 60 * 60); // the access token dies on the server
//! session.request("GET", "/v1/licenses", None)?; // refreshed, saved, repeated once
//! assert_eq!((server.counters().makes, server.counters().refreshes), (1, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! [`Session`] is `Send + Sync` and cheap to clone; share one per account.
//!
//! Beyond JSON: [`Session::request_json`] reads the reply's `data` as your type;
//! [`Session::call`] sends a [`Call`] of any shape (a multipart [`Form`], a raw body, a binary
//! download) under the same one-retry rule and returns the [`Reply`]; an HTTP client of your
//! own gets its token from [`Session::access_token`] and reports a refusal with
//! [`Session::invalidate`] (or runs through [`Session::with_token`]). [`SessionBuilder::on_event`]
//! tells the application about each new pair ([`Event`]), e.g. to re-authorize a push socket.
//!
//! ## Error handling
//! Every failure is an [`Error`] variant: the server's refusals keep its status, code and
//! message ([`ApiError`]); the quota, protocol, timeout, network and storage failures are
//! typed. No error, `Debug` output or log line of this crate contains a token or a password.
//!
//! ## Features
//! `memory` (default): `store::MemoryStore` (without it, a session given no store still keeps
//! its pair in memory). `file`: `store::FileStore`. `sqlite`: `store::SqliteStore`. `keyring`:
//! `store::KeyringStore` (the OS keyring). `postgres`: `store::PostgresStore`. `testing`:
//! `testing::FakeChatApp`, `testing::ManualClock` and `store::conformance`.
//!
//! ## Logging
//! The crate logs through [`log`](https://docs.rs/log): `info` for refreshes and makes,
//! `warn` for refusals, `debug` for each exchange's method, path and status; never a token or
//! a password. Beware of the HTTP stack below it: at `TRACE`, `ureq_proto` writes every byte
//! sent and received as hex, the `Authorization` and `Refresh` headers, the tokens.make body
//! with its password and every token reply included. Keep `ureq_proto` at `debug` or quieter
//! (with env_logger: `.filter_module("ureq_proto", log::LevelFilter::Debug)` after reading
//! `RUST_LOG`, as the examples do).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod call;
mod clock;
mod error;
mod events;
mod policy;
#[cfg(all(test, feature = "file"))]
mod proptests;
mod session;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod token;
mod transport;

pub use call::{Body, Call, Form, FormPart, Reply};
pub use clock::Clock;
pub use error::{ApiError, Delivery, EncryptionProblem, Endpoint, Error, Result, StoreError};
pub use events::Event;
pub use session::{Attempt, Session, SessionBuilder, Status};
pub use token::{AccessToken, Credentials, Password, RefreshToken, TokenPair};
pub use transport::Transport;
