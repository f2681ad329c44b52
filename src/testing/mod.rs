//! A fake ChatApp for tests: [`FakeChatApp`] is a real HTTP server on `127.0.0.1` (an
//! ephemeral port) that behaves like the ChatApp token service, as far as it is publicly
//! known: tokens.make with a 100-a-day rolling quota per email+appId, tokens.refresh with
//! strict rotation, tokens.check, and a few ordinary endpoints that need a live access token
//! (`GET /v1/licenses`, sending a text message, callback URLs). Its clock is a
//! [`ManualClock`]: [`advance`](FakeChatApp::advance) makes a day pass in no time. Faults can
//! be injected into the next reply to any route: canned statuses, broken JSON, dropped
//! connections, lost replies, delays, huge bodies.
//!
//! Enabled by the cargo feature `testing`.
//!
//! ```
//! use chatapp_session::testing::{Fault, FakeChatApp, Route};
//! use chatapp_session::{Error, Session};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fake = FakeChatApp::start()?;
//! let session = Session::builder()
//!     .credentials(fake.credentials())
//!     .base_url(fake.base_url())
//!     .build()?;
//!
//! let licenses = session.request("GET", "/v1/licenses", None)?;
//! assert_eq!(licenses[0]["licenseId"], 37233);
//!
//! // A day later the access token is dead on the server: one refresh, the call repeated.
//! fake.advance(86_400);
//! session.request("GET", "/v1/licenses", None)?;
//! assert_eq!((fake.counters().makes, fake.counters().refreshes), (1, 1));
//!
//! // The next refresh is done server-side, but its reply never arrives.
//! fake.advance(86_400);
//! fake.inject(Route::Refresh, Fault::LostReply);
//! assert!(matches!(
//!     session.request("GET", "/v1/licenses", None),
//!     Err(Error::RefreshReplyLost { .. })
//! ));
//! assert_eq!(fake.counters().refreshes, 2);
//! # Ok(())
//! # }
//! ```

mod fault;
mod http;
mod log;
mod multipart;
mod routes;
mod server;
mod state;
mod tokens;

pub use self::fault::Fault;
pub use self::log::{RefusedBecause, TokenEvent, TokenOutcome};
pub use self::state::{Counters, Rotation, UploadedFile};
pub use crate::clock::ManualClock;
/// Which requests a [`Fault`] applies to: the crate's [`Endpoint`](crate::Endpoint) under the
/// name this module has always used (one type, two paths).
pub use crate::error::Endpoint as Route;
/// The record codec every durable store uses (its JSON text, zeroized on drop), for tests
/// that look at what a store wrote. Not needed to use a store.
pub use crate::store::record::{decode_record, encode_record};

use std::fmt;
use std::io;
use std::sync::Arc;

use self::server::{Server, Shared};
use self::state::{Account, Limits, State, DAY};
use crate::clock::{Clock, SystemClock};
use crate::token::{Credentials, TokenPair};

/// The default account's email.
pub const DEFAULT_EMAIL: &str = "demo@example.com";
/// The default account's password.
pub const DEFAULT_PASSWORD: &str = "demo-password";
/// The default account's application id.
pub const DEFAULT_APP_ID: &str = "app_demo_1";
/// The `cabinetUserId` of the first account; the next ones count up from it.
pub const FIRST_CABINET_USER_ID: i64 = 14545;

/// A fake ChatApp API server on `127.0.0.1`, for tests. See the [module docs](self).
///
/// Dropping it stops the server: every connection is closed and every thread joined.
pub struct FakeChatApp {
    shared: Arc<Shared>,
    server: Server,
    first: Credentials,
}

impl FakeChatApp {
    /// A server with the defaults: one account ([`DEFAULT_EMAIL`], [`DEFAULT_PASSWORD`],
    /// [`DEFAULT_APP_ID`]), access tokens living 24 h and refresh tokens 14 days, strict
    /// rotation, 100 tokens.make a rolling day, `ApiInvalidTokenError` with HTTP 401, a clock
    /// starting at the system's time.
    ///
    /// # Errors
    /// When no port can be bound or no thread started.
    pub fn start() -> io::Result<FakeChatApp> {
        FakeChatApp::builder().start()
    }

    /// A builder for a server that differs from the defaults.
    pub fn builder() -> FakeChatAppBuilder {
        FakeChatAppBuilder::default()
    }

    /// The URL to give clients: `http://127.0.0.1:PORT`, no trailing `/`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// The first account's valid credentials.
    pub fn credentials(&self) -> Credentials {
        self.first.clone()
    }

    /// The server's clock, unix seconds.
    pub fn now(&self) -> i64 {
        self.shared.clock.now()
    }

    /// Moves the server's clock forward by `secs` seconds (and any clock shared with it
    /// through [`FakeChatAppBuilder::clock`]): `advance(86_400)` and a day has passed.
    pub fn advance(&self, secs: i64) {
        self.shared.clock.advance(secs);
    }

    /// The server's clock itself (a clone shares the time).
    pub fn clock(&self) -> ManualClock {
        self.shared.clock.clone()
    }

    /// What the server has counted so far.
    pub fn counters(&self) -> Counters {
        self.shared.state.lock().counters
    }

    /// How many client connections are open now. Each is served to its end before it is
    /// let go: once a client has died (or dropped its connections) and this is zero, every
    /// request it sent has been handled and counted, so a test can wait for zero before it
    /// reads the [`Counters`] of a client it killed.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections()
    }

    /// Every tokens.make and tokens.refresh request received so far, in the order handled
    /// (from index `from` on): when, what the server did, and the fault that answered it.
    /// Kept for the server's whole life ([`reset_counters`](Self::reset_counters) leaves it).
    pub fn token_log(&self, from: usize) -> Vec<TokenEvent> {
        self.shared.state.lock().token_log(from)
    }

    /// How many requests are being handled right now (a [`Fault::Delay`] counts while it
    /// waits). Zero means every request received so far has been answered and logged.
    pub fn requests_in_progress(&self) -> usize {
        self.shared.in_progress()
    }

    /// How many requests on `route` are being handled right now (a [`Fault::Delay`] counts
    /// while it waits). A test that moves the clock fast can wait for zero on
    /// [`Route::Make`] first, so that a make in flight does not see hours pass.
    pub fn requests_in_progress_on(&self, route: Route) -> usize {
        self.shared.in_progress_on(route)
    }

    /// Sets every counter back to zero. The quota's record of past makes is kept.
    pub fn reset_counters(&self) {
        self.shared.state.lock().counters = Counters::default();
    }

    /// Queues `fault` for the next request on `route`. Several faults for one route apply to
    /// successive requests, in order; requests on other routes are not affected.
    pub fn inject(&self, route: Route, fault: Fault) {
        self.shared.faults.push(route, fault);
    }

    /// How many injected faults still wait for a request on `route`.
    pub fn pending_faults(&self, route: Route) -> usize {
        self.shared.faults.pending(route)
    }

    /// Forgets every fault not yet applied.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Every live access token dies now; refresh tokens live on.
    pub fn revoke_access_tokens(&self) {
        self.shared.state.lock().revoke_access_tokens();
    }

    /// Every access and refresh token dies now: only tokens.make helps.
    pub fn revoke_all(&self) {
        self.shared.state.lock().revoke_all();
    }

    /// Issues a pair for the first account at the server's time, as tokens.make would, but
    /// without an HTTP call and without counting it (neither in [`Counters`] nor in the
    /// quota). For seeding a store with a pair the server knows.
    pub fn issue_pair(&self) -> TokenPair {
        let now = self.now();
        self.shared.state.lock().issue(FIRST_CABINET_USER_ID, now)
    }

    /// The file sent as message `id` with `POST .../chats/{chatId}/messages/file` (a
    /// multipart form: `file`, and optionally `fileName` and `caption`). The fake serves it
    /// back, with its content type, at `GET .../chats/{chatId}/messages/{id}/file`.
    pub fn uploaded_file(&self, id: &str) -> Option<UploadedFile> {
        self.shared.state.lock().file(id).cloned()
    }

    /// How many successful tokens.make the server has seen for this email+appId in the last
    /// 24 h of its clock (what its quota counts).
    pub fn makes_in_last_day(&self, email: &str, app_id: &str) -> u64 {
        let now = self.now();
        self.shared.state.lock().makes_in_window(email, app_id, now)
    }
}

impl fmt::Debug for FakeChatApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeChatApp")
            .field("base_url", &self.base_url())
            .field("now", &self.now())
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

/// Builds a [`FakeChatApp`] that differs from the defaults. Every setting is optional.
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until .start()"]
pub struct FakeChatAppBuilder {
    /// Kept as [`Credentials`], so that `Debug` never shows a password.
    accounts: Vec<Credentials>,
    access_lifetime: Option<i64>,
    refresh_lifetime: Option<i64>,
    rotation: Option<Rotation>,
    make_limit: Option<u32>,
    make_revokes_older: bool,
    invalid_token_status: Option<u16>,
    clock: Option<ManualClock>,
    threads: Option<usize>,
    no_date: bool,
    end_times_as_lifetimes: bool,
}

impl FakeChatAppBuilder {
    /// Adds an account tokens.make accepts. Without any, there is one: [`DEFAULT_EMAIL`],
    /// [`DEFAULT_PASSWORD`], [`DEFAULT_APP_ID`]. [`FakeChatApp::credentials`] gives the first.
    /// Accounts get `cabinetUserId`s from [`FIRST_CABINET_USER_ID`] on, in order.
    pub fn account(
        mut self,
        email: impl Into<String>,
        password: impl Into<String>,
        app_id: impl Into<String>,
    ) -> Self {
        self.accounts
            .push(Credentials::new(email, password, app_id));
        self
    }

    /// How long an access token lives, in seconds (default 86 400: a day).
    pub fn access_lifetime(mut self, secs: i64) -> Self {
        self.access_lifetime = Some(secs);
        self
    }

    /// How long a refresh token lives, in seconds (default 14 days).
    pub fn refresh_lifetime(mut self, secs: i64) -> Self {
        self.refresh_lifetime = Some(secs);
        self
    }

    /// What a refresh does to the old pair (default [`Rotation::Strict`]).
    pub fn rotation(mut self, rotation: Rotation) -> Self {
        self.rotation = Some(rotation);
        self
    }

    /// Successful tokens.make allowed per email+appId in any 24 h of the server's clock
    /// (default 100). Past it: HTTP 429 `ApiTooManyRequestsError`.
    pub fn make_limit(mut self, limit: u32) -> Self {
        self.make_limit = Some(limit);
        self
    }

    /// Whether a tokens.make kills every older pair of its account (default `false`; the
    /// real server's behaviour is unknown).
    pub fn make_revokes_older(mut self, yes: bool) -> Self {
        self.make_revokes_older = yes;
        self
    }

    /// The HTTP status of `ApiInvalidTokenError` replies to ordinary calls and tokens.check
    /// (default 401; the real one is unknown, 200 and 403 are plausible). A refused
    /// tokens.refresh is always 401.
    pub fn invalid_token_status(mut self, status: u16) -> Self {
        self.invalid_token_status = Some(status);
        self
    }

    /// The server's clock: pass a clone of the clock your session uses, and both move
    /// together. Default: a [`ManualClock`] starting at the system's time.
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How many requests are handled at once (default 16; at least 1). Every open
    /// connection has its own thread; past this many requests in progress (a
    /// [`Fault::Delay`] keeps its slot while it waits), the others wait their turn.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Whether replies carry a `Date` header with the server's clock (default `true`).
    /// Without it a client cannot learn the server's time.
    pub fn send_date(mut self, yes: bool) -> Self {
        self.no_date = !yes;
        self
    }

    /// Whether tokens.make and tokens.refresh put the tokens' lifetimes (`86400`) where
    /// their end times belong, as a broken server might (default `false`). The server itself
    /// still ends them at the real end times.
    pub fn end_times_as_lifetimes(mut self, yes: bool) -> Self {
        self.end_times_as_lifetimes = yes;
        self
    }

    /// Starts the server.
    ///
    /// # Errors
    /// When no port can be bound or no thread started.
    pub fn start(self) -> io::Result<FakeChatApp> {
        let defaults = Limits::default();
        let limits = Limits {
            access_lifetime: self.access_lifetime.unwrap_or(DAY),
            refresh_lifetime: self.refresh_lifetime.unwrap_or(defaults.refresh_lifetime),
            rotation: self.rotation.unwrap_or(defaults.rotation),
            make_limit: self.make_limit.unwrap_or(defaults.make_limit),
            make_revokes_older: self.make_revokes_older,
        };
        let mut given = self.accounts.into_iter();
        let first = given
            .next()
            .unwrap_or_else(|| Credentials::new(DEFAULT_EMAIL, DEFAULT_PASSWORD, DEFAULT_APP_ID));
        let accounts: Vec<Account> = std::iter::once(first.clone())
            .chain(given)
            .zip(FIRST_CABINET_USER_ID..)
            .map(|(given, cabinet_user_id)| Account {
                email: given.email().to_owned(),
                password: given.password().expose_secret().to_owned(),
                app_id: given.app_id().to_owned(),
                cabinet_user_id,
            })
            .collect();
        let clock = self
            .clock
            .unwrap_or_else(|| ManualClock::new(SystemClock.now()));
        let mut shared = Shared::new(
            State::new(limits, accounts),
            clock,
            self.invalid_token_status.unwrap_or(401),
            self.threads.unwrap_or(16),
        );
        shared.send_date = !self.no_date;
        shared.end_times_as_lifetimes = self.end_times_as_lifetimes;
        let shared = Arc::new(shared);
        let server = Server::start(Arc::clone(&shared))?;
        Ok(FakeChatApp {
            shared,
            server,
            first,
        })
    }
}
