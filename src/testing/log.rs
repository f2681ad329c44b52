//! The server's own record of every tokens.make and tokens.refresh request it received
//! ([`FakeChatApp::token_log`](super::FakeChatApp::token_log)): when, what became of it, and
//! which injected fault (if any) answered it. A test checks a client's books against it: a
//! make the server issued must be in the client's ledger; a refresh token the server refused
//! was killed by something the test can name (a rotation whose reply was lost, a revocation).

use super::fault::Fault;
use crate::error::Endpoint;

/// One tokens.make or tokens.refresh request, as the fake server handled it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenEvent {
    /// When it was handled, on the server's clock (for a [`Fault::Delay`], after the wait).
    pub at: i64,
    /// [`Endpoint::Make`] or [`Endpoint::Refresh`].
    pub route: Endpoint,
    /// What the server did.
    pub outcome: TokenOutcome,
    /// The fault injected into this request, if any: with [`TokenOutcome::NotServed`] it
    /// replaced the work; otherwise the work was done and the reply spoilt, lost or late
    /// ([`Fault::LostReply`], [`Fault::Delay`], [`Fault::MissingField`], [`Fault::WrongTypes`]).
    pub fault: Option<Fault>,
    /// The server's number for the pair concerned (pairs are numbered from 0 in the order
    /// issued): for tokens.refresh the pair whose refresh token was presented, when the
    /// server ever issued it; for tokens.make the pair issued, if any.
    pub pair: Option<usize>,
}

impl TokenEvent {
    /// Whether the server issued a pair for this request.
    pub fn issued(&self) -> bool {
        self.outcome == TokenOutcome::Issued
    }
}

/// What the server did with a token request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenOutcome {
    /// A pair was issued (a refresh also rotated the old pair, under strict rotation).
    Issued,
    /// The server refused, for this reason.
    Refused(RefusedBecause),
    /// An injected fault answered instead of the server: nothing was done.
    NotServed,
}

/// Why a token request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusedBecause {
    /// tokens.make: no account has these credentials.
    WrongCredentials,
    /// tokens.make: the account's rolling-day quota is used up.
    Quota,
    /// tokens.make: the body was not a JSON object.
    BadRequest,
    /// tokens.refresh: the server never issued this refresh token.
    UnknownToken,
    /// tokens.refresh: the token was rotated away by the refresh at index `by` of the
    /// [`token_log`](super::FakeChatApp::token_log).
    Rotated {
        /// The index of the refresh that rotated it.
        by: usize,
    },
    /// tokens.refresh: [`revoke_all`](super::FakeChatApp::revoke_all), or a make that
    /// revokes older pairs, killed it.
    Revoked,
    /// tokens.refresh: the token was past its end time.
    Expired,
}
