//! The crate's errors. None of them ever carries a token or a password.

use std::fmt;
use std::time::Duration;

/// A shorthand for `Result<T, chatapp_session::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which ChatApp call an error came from (and, for `testing::FakeChatApp`, which requests an
/// injected fault applies to: `testing::Route` is this same type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /v1/tokens` (tokens.make).
    Make,
    /// `POST /v1/tokens/refresh` (tokens.refresh).
    Refresh,
    /// `GET /v1/tokens/check` (tokens.check).
    Check,
    /// Any other, authenticated, call (for the fake server: every ordinary endpoint and any
    /// unknown path).
    Request,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endpoint::Make => "tokens.make",
            Endpoint::Refresh => "tokens.refresh",
            Endpoint::Check => "tokens.check",
            Endpoint::Request => "request",
        })
    }
}

/// Whether a request that failed may have reached the server.
///
/// A tokens.make counts against the quota unless its failure proves that nothing left this
/// machine: the name did not resolve, the connection was refused or could not be opened,
/// the TLS handshake failed, the connect timeout fired, a proxy refused the connection, or
/// not one byte of the request was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Nothing of the request left this machine: the server cannot have seen it.
    NotSent,
    /// The request was sent, or sending began, or it cannot be told: the server may have
    /// seen it.
    MaybeSent,
}

impl Delivery {
    fn suffix(self) -> &'static str {
        match self {
            Delivery::NotSent => " (nothing was sent)",
            Delivery::MaybeSent => "",
        }
    }
}

/// What the server said when it refused a call: its HTTP status and, when the reply carried
/// the ChatApp error envelope, its `code` and `message` unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The call that was refused.
    pub endpoint: Endpoint,
    /// The HTTP status of the reply.
    pub status: u16,
    /// The envelope's `error.code`, e.g. `ApiInvalidTokenError`.
    pub code: Option<String>,
    /// The envelope's `error.message`, as the server wrote it.
    pub message: Option<String>,
}

impl ApiError {
    /// A refusal with the given parts.
    pub fn new(
        endpoint: Endpoint,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    ) -> Self {
        ApiError {
            endpoint,
            status,
            code,
            message,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} answered HTTP {}", self.endpoint, self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

/// An error of a token store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading, writing or locking the store failed.
    #[error("{store} store {location}: {action} failed: {source}")]
    Io {
        /// Which backend (`file`, `sqlite`, ...).
        store: &'static str,
        /// The file, database or service concerned.
        location: String,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The store is readable or writable by other users, so it is refused.
    #[error("{location} is accessible by group or others (mode {mode:o}); refusing to use it: run `chmod 600 {location}`")]
    InsecurePermissions {
        /// The file concerned.
        location: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A stored record could not be read: it is left as it is.
    #[error(
        "{store} store {location}: the stored record is corrupt ({detail}); it was left untouched"
    )]
    Corrupt {
        /// Which backend.
        store: &'static str,
        /// The file, database or service concerned.
        location: String,
        /// What is wrong with it (never its content).
        detail: String,
    },
    /// A stored record was written by a newer (or unknown) schema version.
    #[error("{store} store {location}: schema version {found} is not supported (this build reads up to {supported}); it was left untouched")]
    UnsupportedVersion {
        /// Which backend.
        store: &'static str,
        /// The file, database or service concerned.
        location: String,
        /// The version found.
        found: u64,
        /// The newest version this build understands.
        supported: u64,
    },
    /// A stored record is encrypted and could not be opened (no key, another key, altered or
    /// cut bytes). It was left untouched, and saves under its key are refused.
    #[error("{store} store {location}: {problem}; it was left untouched")]
    Encrypted {
        /// Which backend.
        store: &'static str,
        /// The file, database or service concerned.
        location: String,
        /// What is wrong.
        problem: EncryptionProblem,
    },
    /// A store encryption key could not be had from where it was asked for.
    #[error("store encryption key from {origin}: {detail}")]
    Key {
        /// Where the key was looked for (a file, a variable, a keyring service), never the key.
        origin: String,
        /// What is wrong (never the key).
        detail: String,
    },
    /// The store's lock was not granted in time: another process held it longer than the
    /// store's lock timeout (`with_lock_timeout` on each durable store). Nothing was read
    /// or changed; trying again later may succeed.
    #[error("{store} store {location}: the lock was not granted within {waited:?}: another process holds it")]
    LockTimeout {
        /// Which backend.
        store: &'static str,
        /// The file, database or service concerned.
        location: String,
        /// How long the store waited.
        waited: Duration,
    },
    /// The backend cannot be used here (no keyring daemon, no database server, ...).
    #[error("{store} store is unavailable: {hint}")]
    Unavailable {
        /// Which backend.
        store: &'static str,
        /// What to start or install.
        hint: String,
    },
    /// A backend-specific failure.
    #[error("{store} store {location}: {source}")]
    Backend {
        /// Which backend.
        store: &'static str,
        /// The file, database or service concerned.
        location: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Why an encrypted record could not be opened ([`StoreError::Encrypted`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncryptionProblem {
    /// The record is encrypted and the store was given no key (the command-line example:
    /// set `CHATAPP_STORE_KEY`).
    KeyRequired,
    /// The record was sealed with a key the store was not given (neither the current one
    /// nor the previous one).
    WrongKey,
    /// The sealed bytes were altered or cut, or the record was moved from another store key:
    /// authentication failed.
    Tampered,
    /// The envelope is not one this build writes (a missing or mistyped field).
    Malformed,
}

impl fmt::Display for EncryptionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncryptionProblem::KeyRequired => {
                "the record is encrypted and no encryption key was given"
            }
            EncryptionProblem::WrongKey => "the record is encrypted with another key",
            EncryptionProblem::Tampered => {
                "the encrypted record was altered, cut or moved from another key"
            }
            EncryptionProblem::Malformed => "the encrypted record's envelope is malformed",
        })
    }
}

/// Everything that can go wrong in a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// tokens.make refused the email, password or appId (HTTP 401/403 or another 4xx).
    #[error("the server rejected the credentials: {0}")]
    InvalidCredentials(ApiError),
    /// tokens.refresh refused the stored refresh token and no credentials were given to make
    /// a new pair.
    #[error("the server rejected the stored refresh token and no credentials were given to make a new pair: {0}")]
    RefreshRejected(ApiError),
    /// A request was refused with `ApiInvalidTokenError` again after the session got a fresh
    /// token and resent it once.
    #[error("the server rejected a freshly obtained access token: {0}")]
    TokenRejected(ApiError),
    /// The make quota (100 a day by default) is used up; nothing was sent.
    #[error("tokens.make quota exhausted: {used} of {limit} used in the last 24 h{}{}",
        next_make_at.map(|t| format!("; the next make is allowed at unix time {t}")).unwrap_or_default(),
        server.as_ref().map(|s| format!(" ({s})")).unwrap_or_default())]
    QuotaExhausted {
        /// Makes counted in the last 24 h (the reserve included in the limit).
        used: u32,
        /// The limit in force.
        limit: u32,
        /// When the next make is allowed, unix seconds, when known.
        next_make_at: Option<i64>,
        /// The server's own refusal, when the server said it (HTTP 429 on tokens.make).
        server: Option<ApiError>,
    },
    /// A new pair is needed but no credentials were given and no usable pair is stored.
    #[error("no usable token pair is stored and no credentials were given to make one")]
    CredentialsRequired,
    /// The server refused an ordinary request (any other 4xx, or an error envelope).
    #[error("{0}")]
    Api(ApiError),
    /// The server asked the client to slow down (HTTP 429 on an ordinary request).
    #[error("rate limited: {0}")]
    RateLimited(ApiError),
    /// The server failed (HTTP 5xx).
    #[error("server failure: {0}")]
    Server(ApiError),
    /// The reply could not be understood: not JSON, no envelope, a missing or mistyped field,
    /// or larger than the cap.
    #[error("{endpoint}: unexpected reply (HTTP {status}): {detail}")]
    Protocol {
        /// The call concerned.
        endpoint: Endpoint,
        /// The HTTP status of the reply.
        status: u16,
        /// What was wrong (never the body itself).
        detail: String,
    },
    /// The exchange took longer than the configured timeout allows: one of its phases ran
    /// past its share of it.
    #[error("{endpoint}: no reply within {after:?}{}", delivery.suffix())]
    Timeout {
        /// The call concerned.
        endpoint: Endpoint,
        /// The bound that expired: with the crate's transport, the share of the timeout of the
        /// phase that ran out (the wait for the reply's headers has half of it, connecting a
        /// tenth, reading the reply's body three twentieths; see
        /// [`SessionBuilder::timeout`](crate::SessionBuilder::timeout)), or the whole timeout
        /// when the phase is not known.
        after: Duration,
        /// Whether the request may have reached the server.
        delivery: Delivery,
    },
    /// The connection failed (refused, reset, DNS, TLS...), or tokens.make is backing off
    /// after attempts that never left this machine (then `retry_at` says when the next
    /// attempt will be made, and nothing was sent).
    #[error("{endpoint}: network failure{}{}: {source}", delivery.suffix(),
        retry_at.map(|t| format!("; the next attempt will be made at unix time {t}")).unwrap_or_default())]
    Network {
        /// The call concerned.
        endpoint: Endpoint,
        /// Whether the request may have reached the server.
        delivery: Delivery,
        /// For a call refused by the session's own back-off: when the next attempt is
        /// allowed (unix seconds, on the session's clock).
        retry_at: Option<i64>,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// tokens.refresh was sent but its reply never arrived. The server may have rotated the
    /// pair already, in which case the stored refresh token is dead: the next call detects
    /// that and, within the quota, makes a new pair.
    #[error("the reply to tokens.refresh was lost; the stored refresh token may have been rotated by the server and the next call will make a new pair if so: {source}")]
    RefreshReplyLost {
        /// What happened to the exchange.
        #[source]
        source: Box<Error>,
    },
    /// Reading or writing the token store failed; the last good pair stays stored.
    #[error("token store: {0}")]
    Storage(#[from] StoreError),
    /// The session was configured in a way it cannot work with.
    #[error("configuration: {0}")]
    Config(String),
    /// A call's path was refused before anything was sent: it must start with `/` and could
    /// otherwise change the scheme, host or port of the base URL (no control character, `\\`
    /// or `@`).
    #[error("path {path} refused: {reason}")]
    InvalidPath {
        /// The path, escaped and cut to 80 characters.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

impl Error {
    /// The server's refusal, for the errors that carry one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::InvalidCredentials(e)
            | Error::RefreshRejected(e)
            | Error::TokenRejected(e)
            | Error::Api(e)
            | Error::RateLimited(e)
            | Error::Server(e) => Some(e),
            Error::QuotaExhausted { server, .. } => server.as_ref(),
            Error::RefreshReplyLost { source } => source.api_error(),
            _ => None,
        }
    }

    /// Whether the failed call may have reached the server: `Some(Delivery::NotSent)` only
    /// when it provably did not (see [`Delivery`]); `None` for errors that are not about
    /// delivery (a refusal, a bad reply, a store failure...).
    pub fn delivery(&self) -> Option<Delivery> {
        match self {
            Error::Timeout { delivery, .. } | Error::Network { delivery, .. } => Some(*delivery),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_send_sync_and_small() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert!(std::mem::size_of::<Error>() <= 128);
    }

    #[test]
    fn api_error_keeps_code_and_message() {
        let e = Error::InvalidCredentials(ApiError::new(
            Endpoint::Make,
            401,
            Some("ApiAuthError".into()),
            Some("Wrong password".into()),
        ));
        let text = e.to_string();
        assert!(text.contains("HTTP 401"), "{text}");
        assert!(text.contains("ApiAuthError"), "{text}");
        assert!(text.contains("Wrong password"), "{text}");
        assert_eq!(e.api_error().map(|a| a.status), Some(401));
    }
}
