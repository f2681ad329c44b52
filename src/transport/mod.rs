//! Talking to ChatApp: the [`Transport`] trait, its ureq implementation [`UreqTransport`],
//! and the parsing of the `success/data/error` envelope.
//!
//! A transport only sends what it is told and reports what came back. It never decides when to
//! refresh or make: every refusal comes back as [`Error::Api`](crate::Error::Api) with the
//! HTTP status and the server's code and message, and the [`policy`](crate::policy)
//! classifies it.

mod envelope;
mod path;
mod sent;
mod timeouts;
mod ureq;

pub(crate) use self::envelope::data_as;
pub(crate) use self::envelope::parse_envelope;
#[cfg(all(test, feature = "file"))]
pub(crate) use self::envelope::parse_token_pair;
pub(crate) use self::path::{check_path, join};
pub(crate) use self::ureq::UreqTransport;

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::call::{Call, Reply};
use crate::error::{Error, Result};
use crate::token::{AccessToken, Credentials, RefreshToken, TokenPair};

/// The real ChatApp API.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.chatapp.online";
/// The default bound on one HTTP exchange (see [`TransportConfig::timeout`]).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default cap on a reply body; a larger reply is refused without being read into memory.
pub(crate) const DEFAULT_MAX_REPLY_BYTES: u64 = 4 * 1024 * 1024;

/// How a transport reaches the server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) struct TransportConfig {
    /// The base URL, e.g. `https://api.chatapp.online` (no trailing `/`).
    pub(crate) base_url: String,
    /// Bound on each HTTP exchange, from the name lookup to the reply's last byte. It is
    /// split among the exchange's phases (lookup 1/10, connect 1/10, request headers 1/20,
    /// request body 1/10, waiting for the reply's headers 1/2, reply body 3/20), each cut off
    /// when its share runs out; the shares add up to this bound. Longer than zero and at most
    /// a year.
    pub(crate) timeout: Duration,
    /// The `Lang` header (`en`, `ru`, `pt`), when set.
    pub(crate) lang: Option<String>,
    /// The cap on a reply body, in bytes.
    pub(crate) max_reply_bytes: u64,
    /// Allow plain `http://` to hosts other than loopback.
    pub(crate) allow_insecure_http: bool,
}

impl TransportConfig {
    /// The defaults for `base_url`.
    pub(crate) fn new(base_url: impl Into<String>) -> Self {
        TransportConfig {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            timeout: DEFAULT_TIMEOUT,
            lang: None,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            allow_insecure_http: false,
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig::new(DEFAULT_BASE_URL)
    }
}

/// The calls a session makes. Implementations report; they never retry or refresh.
///
/// Every method returns [`Error::Api`](crate::Error::Api) for a refusal (any non-2xx status,
/// or `"success": false` whatever the status), [`Error::Protocol`](crate::Error::Protocol) for a
/// 2xx reply that is not the envelope expected, and [`Error::Timeout`](crate::Error::Timeout) or
/// [`Error::Network`](crate::Error::Network) when no reply came.
pub trait Transport: Send + Sync + fmt::Debug {
    /// tokens.make: `POST /v1/tokens` with the credentials.
    ///
    /// # Errors
    /// As described on the trait.
    fn make(&self, credentials: &Credentials) -> Result<TokenPair>;

    /// tokens.refresh: `POST /v1/tokens/refresh` with the `Refresh` header.
    ///
    /// # Errors
    /// As described on the trait.
    fn refresh(&self, refresh: &RefreshToken) -> Result<TokenPair>;

    /// tokens.check: `GET /v1/tokens/check`; `Ok(true)` when the server says the token works.
    ///
    /// # Errors
    /// As described on the trait; a refusal of the token itself is `Ok(false)`.
    fn check(&self, access: &AccessToken) -> Result<bool>;

    /// An authenticated call: `method` on `path` (starting with `/v1`), with `body` as JSON.
    /// Returns the envelope's `data` (JSON `null` when absent).
    ///
    /// # Errors
    /// As described on the trait.
    fn send(
        &self,
        access: &AccessToken,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value>;

    /// The server's clock minus the session's, in seconds, as last seen in a reply's `Date`
    /// header; `None` while unknown (the default). The session judges end times on the
    /// server's clock with it, so that a wrong local clock causes no refresh or make storm.
    fn server_offset(&self) -> Option<i64> {
        None
    }

    /// An authenticated call of any shape: `call`'s method, path, body and `Accept` header.
    /// Returns the reply as it came (status, headers, bytes) when the server accepted it.
    ///
    /// The default implementation refuses with [`Error::Config`]: a transport written before
    /// calls existed keeps compiling, and says so when one is asked of it.
    ///
    /// # Errors
    /// As described on the trait: [`Error::Api`] for any non-2xx status, and for the ChatApp
    /// error envelope (`"success": false`) whatever the status; a 2xx reply that is not JSON
    /// is no error.
    fn call(&self, access: &AccessToken, call: &Call) -> Result<Reply> {
        let _ = (access, call);
        Err(Error::Config(format!(
            "the transport {self:?} cannot send calls other than JSON requests"
        )))
    }
}
