//! # chatapp-session
//!
//! A blocking session for the [ChatApp](https://api.chatapp.online) API that follows
//! ChatApp's own rules for clients: keep the token pair, call the API with the saved access
//! token, and only when the server answers `ApiInvalidTokenError` refresh, save the new pair
//! and repeat the request. tokens.make (100 a day) is the last resort, counted against a
//! persisted rolling 24 h ledger; there is never a refresh on a timer.
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

pub mod clock;
mod error;
pub mod policy;
mod session;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod token;
pub mod transport;

pub use error::{ApiError, Endpoint, Error, Result, StoreError};
pub use session::{Session, SessionBuilder, Status};
pub use token::{AccessToken, Credentials, Password, RefreshToken, TokenPair};
