//! The [`Session`]: a usable access token on demand, authenticated requests retried once on
//! `ApiInvalidTokenError`, and the single flight of refreshes inside the process (a refresh
//! lock) and across processes (the store's lock).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::call::{Call, Reply};
use crate::clock::{Clock, Deadline, SessionClock};
use crate::error::{ApiError, Delivery, Endpoint, Error, Result, StoreError};
use crate::events::{Event, Events, Hook, QUOTA_LOW_BELOW};
use crate::policy::{self, Action, Blocked, Policy, Refusal, Situation};
use crate::store::{LockOrRecord, MemoryStore, StoreKey, StoreLock, StoredRecord, TokenStore};
use crate::token::{AccessToken, Credentials, TokenPair};
use crate::transport::{
    check_path, data_as, Transport, TransportConfig, UreqTransport, DEFAULT_BASE_URL,
};

/// A ChatApp session: cheap to clone (clones share one state), `Send + Sync`.
///
/// It hands out the stored access token while it is usable, and only when the server refuses
/// it (or its end time has passed) refreshes the pair, saves the new pair to the store, and
/// then uses it. tokens.make happens only when no refresh token can be used, credentials were
/// given, and the persisted rolling 24 h quota allows it.
///
/// ```no_run
/// use chatapp_session::{Credentials, Session};
///
/// let session = Session::builder()
///     .credentials(Credentials::new("me@example.com", "password", "app_4242_1"))
///     .build()?;
/// let licenses = session.request("GET", "/v1/licenses", None)?;
/// println!("{licenses}");
/// # Ok::<(), chatapp_session::Error>(())
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Box<dyn Transport>,
    store: Box<dyn TokenStore>,
    key: StoreKey,
    /// The key earlier versions gave this account, looked up when `key` holds nothing.
    legacy_key: Option<StoreKey>,
    /// Whether the pair under `legacy_key` is known to be gone (or never was there).
    legacy_retired: AtomicBool,
    credentials: Option<Credentials>,
    policy: Policy,
    clock: SessionClock,
    /// The access token in use. Never held across I/O.
    current: Mutex<Option<Current>>,
    /// Held across a whole reload-refresh-save: one at a time in this process.
    flight: Mutex<()>,
    /// What the store has not taken yet (a pair the server gave, a 429 cooldown, a ledger
    /// entry taken back): used from memory, and laid over the stored record at the next call,
    /// under the lock.
    unsaved: Mutex<Option<Unsaved>>,
    /// Whether `unsaved` holds a record: read on the hot path, so that the next call goes
    /// to the slow path and saves it again.
    dirty: AtomicBool,
    /// The back-off after tokens.make attempts that never left this machine.
    offline: Mutex<Option<Offline>>,
    /// How long a tokens.make may be on its way: the HTTP timeout and a margin (seconds).
    lease_secs: i64,
    /// The access token last reported refused ([`Session::invalidate`]), until a fresh one
    /// replaces it.
    refused: Mutex<Option<AccessToken>>,
    /// The application's event hook and the events waiting for it.
    events: Events,
}

/// What a call made with a token (see [`Session::with_token`]) came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt<T> {
    /// The server took the token (whatever else it said).
    Done(T),
    /// The server refused the token (`ApiInvalidTokenError`, a bare 401, ...).
    Refused(T),
}

/// What this session could not save (the store refused it, or its lock could not be taken
/// again after tokens.make, so the record there was not read): laid over what the store holds
/// at the next call ([`merge_unsaved`]), never written over it unread.
#[derive(Clone)]
struct Unsaved {
    /// The record as this session would have saved it. Its ledger is not used: the stored one
    /// holds every write-ahead entry, this session's included.
    record: StoredRecord,
    /// Ledger entries of this session's own attempts, taken back (refused by the server, or
    /// never sent), that the stored ledger still holds.
    taken_back: Vec<i64>,
    /// This session's in-flight mark of a tokens.make that has ended, which the stored record
    /// may still hold.
    mark: Option<i64>,
    /// Whether `record` holds what the server said and no store has (a pair, a 429
    /// cooldown): [`Status::unsaved`].
    from_server: bool,
}

impl Unsaved {
    /// `record`, with nothing taken back, no mark of ours to clear, nothing from the server.
    fn record(record: StoredRecord) -> Self {
        Unsaved {
            record,
            taken_back: Vec::new(),
            mark: None,
            from_server: false,
        }
    }
}

/// tokens.make attempts in a row that failed before anything was sent.
struct Offline {
    failures: u32,
    /// When the next attempt may be sent (the session clock, unix seconds).
    retry_at: i64,
    /// What the last attempt ran into (no secrets: a network error's text).
    last: String,
}

/// The source of the error a call gets while tokens.make backs off.
#[derive(Debug)]
struct BackingOff {
    failures: u32,
    last: String,
}

impl fmt::Display for BackingOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tokens.make is backing off after {} attempt(s) that never left this machine (last: {})",
            self.failures, self.last
        )
    }
}

impl std::error::Error for BackingOff {}

/// The access token in use and the moment the policy stops letting it out unasked
/// ([`Policy::usable_until`]): all the hot path needs, so that it reads the clock once, takes
/// the lock, compares, and clones one `Arc`.
struct Current {
    access: AccessToken,
    usable_until: Deadline,
}

/// What the store holds for this session's key, without secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Whether a pair is stored.
    pub stored: bool,
    /// When the stored access token ends (unix seconds).
    pub access_expires_at: Option<i64>,
    /// When the stored refresh token ends (unix seconds).
    pub refresh_expires_at: Option<i64>,
    /// The cabinet user of the stored pair.
    pub cabinet_user_id: Option<i64>,
    /// tokens.make sent in the last 24 h for this key.
    pub makes_last_24h: u32,
    /// Whether this session holds a pair the server gave (or a 429 cooldown) that is not in
    /// the store (the store refused it, or could not be read again after tokens.make): it is
    /// used from memory and saved again at the next call. The fields above then describe it.
    pub unsaved: bool,
    /// When tokens.make may be sent again, when it may not be now (the quota is used up, or
    /// the server answered 429): server-clock unix seconds.
    pub next_make_at: Option<i64>,
}

impl Session {
    /// A builder with the defaults: the real ChatApp base URL, a [`MemoryStore`], no
    /// credentials, a 30 s timeout, the default policy numbers (see the builder's setters).
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// A usable access token: the cached one if it is still usable, else the stored one, else
    /// a refreshed (or, as a last resort, newly made) one, saved before it is returned.
    ///
    /// # Errors
    /// [`Error::Storage`] when the store fails, [`Error::QuotaExhausted`] or
    /// [`Error::CredentialsRequired`] when a make is needed and not possible, and the
    /// transport's errors for refresh or make.
    pub fn access_token(&self) -> Result<AccessToken> {
        if let Some(access) = self.inner.cached() {
            return Ok(access);
        }
        self.inner.fresh()
    }

    /// Reports that the server refused `token`, e.g. to a call made with an HTTP client of
    /// your own. The next [`access_token`](Self::access_token) gets a fresh one under the
    /// single flight (a refresh first; tokens.make only as the policy allows), however many
    /// threads report the same token. A token already replaced is ignored.
    pub fn invalidate(&self, token: &AccessToken) {
        self.inner.report_refused(token, None);
        self.inner.events.deliver();
    }

    /// Runs `call` with a usable token; when it reports [`Attempt::Refused`], reports the
    /// token refused ([`invalidate`](Self::invalidate)), gets a fresh one and runs `call`
    /// once more. For calls made with another HTTP client:
    ///
    /// ```no_run
    /// # use chatapp_session::{Attempt, Session};
    /// # fn get(url: &str, token: &str) -> (u16, String) { (200, String::new()) }
    /// # let session = Session::builder().build()?;
    /// let outcome = session.with_token(|token| {
    ///     let (status, body) = get("https://api.chatapp.online/v1/licenses", token.expose_secret());
    ///     if status == 401 { Attempt::Refused(body) } else { Attempt::Done(body) }
    /// })?;
    /// match outcome {
    ///     Attempt::Done(body) => println!("{body}"),
    ///     Attempt::Refused(_) => eprintln!("a fresh token was refused too"),
    /// }
    /// # Ok::<(), chatapp_session::Error>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`access_token`](Self::access_token); what `call` returns is its own.
    pub fn with_token<T>(
        &self,
        mut call: impl FnMut(&AccessToken) -> Attempt<T>,
    ) -> Result<Attempt<T>> {
        let token = self.access_token()?;
        match call(&token) {
            Attempt::Refused(_) => {}
            done => return Ok(done),
        }
        self.invalidate(&token);
        let fresh = self.access_token()?;
        Ok(call(&fresh))
    }

    /// Sends with a usable token; on a refusal of the token itself, reports it, gets a fresh
    /// one and sends once more. The path is checked before anything is sent.
    fn retrying<T>(
        &self,
        path: &str,
        mut send: impl FnMut(&AccessToken) -> Result<T>,
    ) -> Result<T> {
        check_path(path)?;
        let token = self.access_token()?;
        let refusal = match send(&token) {
            Err(Error::Api(refusal)) if policy::classify(&refusal) == Refusal::InvalidToken => {
                refusal
            }
            Err(Error::Api(refusal)) => return Err(refused(refusal, None)),
            other => return other,
        };
        log::info!("{path}: the server refused the access token ({refusal}); getting a fresh one");
        self.inner.report_refused(&token, Some(refusal.status));
        let fresh = self.inner.fresh()?;
        match send(&fresh) {
            Err(Error::Api(again)) => Err(refused(again, None)),
            other => other,
        }
    }

    /// An authenticated call: `method` on `path` (e.g. `GET /v1/licenses`), with `body` as
    /// JSON. Returns the reply's `data`. If the server answers `ApiInvalidTokenError`, the
    /// session gets a fresh token and resends the request once.
    ///
    /// # Errors
    /// [`Error::TokenRejected`] when the fresh token is refused too, [`Error::Api`],
    /// [`Error::RateLimited`] or [`Error::Server`] with the server's code and message, the
    /// transport's errors, and those of [`access_token`](Self::access_token).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        self.retrying(path, |token| {
            self.inner.transport.send(token, method, path, body)
        })
    }

    /// [`request`](Self::request) with typed JSON: `body` is sent as JSON and the reply's
    /// `data` is read as `T`.
    ///
    /// ```no_run
    /// # use chatapp_session::Session;
    /// #[derive(serde::Deserialize)]
    /// #[serde(rename_all = "camelCase")]
    /// struct License { license_id: i64 }
    ///
    /// # let session = Session::builder().build()?;
    /// let licenses = session.request_json::<Vec<License>, ()>("GET", "/v1/licenses", None)?;
    /// # Ok::<(), chatapp_session::Error>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`request`](Self::request); [`Error::Protocol`] naming `T` when `data` does
    /// not have its shape (its status is then 200, standing for the 2xx the reply had);
    /// [`Error::Config`] when `body` cannot be written as JSON.
    pub fn request_json<T, B>(&self, method: &str, path: &str, body: Option<&B>) -> Result<T>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let body = body
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| Error::Config(format!("the body cannot be written as JSON: {e}")))?;
        let data = self.request(method, path, body.as_ref())?;
        data_as(200, data)
    }

    /// A call of any shape (a multipart upload, a raw body, a binary download), under the
    /// same rule as [`request`](Self::request): on `ApiInvalidTokenError` (whatever the
    /// status) or a bare 401 the session gets a fresh token and sends the call once more.
    /// Returns the reply as it came when the server accepted it.
    ///
    /// ```no_run
    /// # use chatapp_session::{Call, Form, Session};
    /// # let session = Session::builder().build()?;
    /// let path = "/v1/licenses/37233/messengers/grWhatsApp/chats/79001234567/messages/file";
    /// let form = Form::new()
    ///     .file("file", "photo.png", "image/png", std::fs::read("photo.png").unwrap_or_default())
    ///     .text("fileName", "photo.png")
    ///     .text("caption", "Look");
    /// let sent: serde_json::Value = session.call(&Call::new("POST", path).form(form))?.data()?;
    /// # Ok::<(), chatapp_session::Error>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`request`](Self::request) (a reply with the ChatApp error envelope, or any
    /// non-2xx status, is an error); [`Error::Config`] when the transport cannot send calls.
    pub fn call(&self, call: &Call) -> Result<Reply> {
        self.retrying(call.path(), |token| self.inner.transport.call(token, call))
    }

    /// Sends tokens.make now and saves the new pair, whatever is stored (within the quota).
    /// Use it for an explicit login; [`access_token`](Self::access_token) and
    /// [`request`](Self::request) make by themselves only when they must.
    ///
    /// # Errors
    /// [`Error::CredentialsRequired`] without credentials, [`Error::QuotaExhausted`],
    /// [`Error::InvalidCredentials`], the transport's and the store's errors.
    pub fn login(&self) -> Result<()> {
        let made = self.login_locked();
        if made.is_ok() {
            self.inner.retire_legacy();
        }
        self.inner.events.deliver();
        made
    }

    /// [`login`](Self::login) under both locks.
    fn login_locked(&self) -> Result<()> {
        let Some(credentials) = &self.inner.credentials else {
            return Err(Error::CredentialsRequired);
        };
        let _flight = self.inner.flight.lock();
        let mut guard = self.inner.store.lock(&self.inner.key)?;
        let record = self.inner.reload(guard.as_mut())?;
        let now = self.inner.server_now(record.server_offset);
        let quota = self
            .inner
            .policy
            .quota(now, &record.makes, record.make_cooldown.as_ref());
        if quota.next_make_at.is_some() {
            return Err(quota_error(quota, None));
        }
        self.inner
            .make(guard.as_mut(), record, credentials, false)
            .map(drop)
    }

    /// Deletes the stored pair (the make ledger stays, so the quota still counts).
    ///
    /// # Errors
    /// [`Error::Storage`] when the store fails.
    pub fn logout(&self) -> Result<()> {
        let _flight = self.inner.flight.lock();
        self.inner.store.clear(&self.inner.key)?;
        *self.inner.current.lock() = None;
        self.inner.set_unsaved(None);
        Ok(())
    }

    /// What the store holds for this session, without secrets and without any network call.
    ///
    /// # Errors
    /// [`Error::Storage`] when the store fails.
    pub fn status(&self) -> Result<Status> {
        let stored = match self.inner.store.load(&self.inner.key)? {
            Some(record) => record,
            None => match &self.inner.legacy_key {
                Some(legacy) => self.inner.store.load(legacy)?.unwrap_or_default(),
                None => StoredRecord::default(),
            },
        };
        let unsaved = self.inner.unsaved.lock().clone();
        let is_unsaved = unsaved.as_ref().is_some_and(|u| u.from_server);
        let record = match &unsaved {
            Some(mine) => merge_unsaved(stored, mine),
            None => stored,
        };
        let pair = record.pair.as_ref();
        let now = self.inner.server_now(record.server_offset);
        let quota = self
            .inner
            .policy
            .quota(now, &record.makes, record.make_cooldown.as_ref());
        Ok(Status {
            stored: pair.is_some(),
            access_expires_at: pair.map(|p| p.access_expires_at),
            refresh_expires_at: pair.map(|p| p.refresh_expires_at),
            cabinet_user_id: pair.map(|p| p.cabinet_user_id),
            makes_last_24h: quota.used,
            unsaved: is_unsaved,
            next_make_at: quota.next_make_at,
        })
    }

    /// Asks tokens.check whether the current access token works (obtaining one first if needed).
    ///
    /// # Errors
    /// Those of [`access_token`](Self::access_token) and the transport's.
    /// A `false` reports the token refused, as [`invalidate`](Self::invalidate) does.
    pub fn check(&self) -> Result<bool> {
        let token = self.access_token()?;
        let works = self.inner.transport.check(&token)?;
        if !works {
            self.invalidate(&token);
        }
        Ok(works)
    }

    /// The key this session's record has in its store.
    pub fn store_key(&self) -> &StoreKey {
        &self.inner.key
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("key", &self.inner.key)
            .field("store", &self.inner.store)
            .field("transport", &self.inner.transport)
            .field("credentials", &self.inner.credentials)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// Maps a refusal from the server to its error, for every endpoint: the one place where a
/// refusal becomes an [`Error`]. `quota` is the quota to report if tokens.make was refused
/// with HTTP 429.
fn refused(refusal: ApiError, quota: Option<policy::Quota>) -> Error {
    match (refusal.endpoint, policy::classify(&refusal)) {
        (Endpoint::Make, Refusal::RateLimited) => match quota {
            Some(quota) => quota_error(quota, Some(refusal)),
            None => Error::RateLimited(refusal),
        },
        (_, Refusal::RateLimited) => Error::RateLimited(refusal),
        (_, Refusal::Server) => Error::Server(refusal),
        (Endpoint::Make, Refusal::InvalidToken | Refusal::Rejected) => {
            Error::InvalidCredentials(refusal)
        }
        (Endpoint::Refresh, Refusal::InvalidToken | Refusal::Rejected) => {
            Error::RefreshRejected(refusal)
        }
        (_, Refusal::InvalidToken) => Error::TokenRejected(refusal),
        (_, Refusal::Rejected) => Error::Api(refusal),
    }
}

fn quota_error(quota: policy::Quota, server: Option<ApiError>) -> Error {
    Error::QuotaExhausted {
        used: quota.used,
        limit: quota.allowed,
        next_make_at: quota.next_make_at,
        server,
    }
}

/// The stored record with what this session could not save laid over it: the newer of the
/// two pairs (the server gave ours after the stored one was read, unless another process
/// has saved a later one since), the later cooldown, our learned clock offset. The stored
/// ledger is kept (every make was written to it before it was sent), less the entries we
/// took back; our ended in-flight mark is cleared, anybody else's kept.
fn merge_unsaved(mut stored: StoredRecord, unsaved: &Unsaved) -> StoredRecord {
    let mine = unsaved.record.clone();
    let ours_is_newer = match (mine.issued_at, stored.issued_at) {
        (Some(ours), Some(theirs)) => ours >= theirs,
        _ => true,
    };
    if mine.pair.is_some() && ours_is_newer {
        stored.pair = mine.pair;
        stored.issued_at = mine.issued_at;
    }
    stored.make_cooldown = match (stored.make_cooldown, mine.make_cooldown) {
        (Some(a), Some(b)) => Some(if b.until > a.until { b } else { a }),
        (a, b) => a.or(b),
    };
    stored.server_offset = mine.server_offset.or(stored.server_offset);
    if unsaved.mark.is_some() && stored.make_in_flight_until == unsaved.mark {
        // Our attempt ended; its mark outlived it only because it could not be saved.
        stored.make_in_flight_until = None;
    }
    for &at in &unsaved.taken_back {
        take_back(&mut stored.makes, at);
    }
    stored
}

impl Inner {
    /// Queues `event` for the application's hook; it is delivered once the session's locks
    /// are released.
    fn emit(&self, event: Event) {
        self.events.push(event);
    }

    /// The slow path of [`Session::access_token`]: past a token reported refused, if any.
    fn fresh(&self) -> Result<AccessToken> {
        let refused = self.refused.lock().clone();
        let result = self.obtain(refused.as_ref());
        if result.is_ok() {
            self.retire_legacy();
        }
        if let (Ok(token), Some(refused)) = (&result, &refused) {
            let mut slot = self.refused.lock();
            if token != refused && slot.as_ref() == Some(refused) {
                *slot = None;
            }
        }
        self.events.deliver();
        result
    }

    /// Once this account's record lives under its canonical key, removes the pair still kept
    /// under the key an earlier version used (its ledger stays there, harmlessly), so that a
    /// moved pair is not left readable in two places. At most once per session, with no lock
    /// held (a store's lock need not be re-entrant); a failure is logged and tried again at
    /// the next slow call.
    fn retire_legacy(&self) {
        let Some(legacy) = self.legacy_key.as_ref().filter(|&k| k != &self.key) else {
            // No earlier key, or the same one (an account whose parts need no encoding).
            return;
        };
        if self.legacy_retired.load(Ordering::Relaxed) {
            return;
        }
        let moved = matches!(self.store.load(&self.key), Ok(Some(_)));
        if !moved {
            return;
        }
        let retired = match self.store.load(legacy) {
            Ok(Some(old)) if old.pair.is_some() => self.store.clear(legacy).map(|()| {
                log::info!("removed the pair left under the earlier key {legacy}");
            }),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match retired {
            Ok(()) => self.legacy_retired.store(true, Ordering::Relaxed),
            Err(e) => log::warn!("could not remove the pair under the earlier key {legacy}: {e}"),
        }
    }

    /// Marks `token` refused, unless another is already in use.
    fn report_refused(&self, token: &AccessToken, status: Option<u16>) {
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|c| c.access != *token) {
            return; // already replaced
        }
        *current = None;
        drop(current);
        let mut refused = self.refused.lock();
        if refused.as_ref() != Some(token) {
            *refused = Some(token.clone());
            drop(refused);
            self.emit(Event::TokenRejected { status });
        }
    }

    /// The cached access token if it is still usable and nothing waits to be saved: the hot
    /// path.
    #[inline]
    fn cached(&self) -> Option<AccessToken> {
        if self.dirty.load(Ordering::Relaxed) {
            return None;
        }
        self.usable_now()
    }

    /// The access token in use if it is still usable now.
    #[inline]
    fn usable_now(&self) -> Option<AccessToken> {
        // The clock is read before the lock is taken, to keep the lock short.
        let now = self.clock.read();
        let current = self.current.lock();
        let current = current.as_ref()?;
        now.before(&current.usable_until)
            .then(|| current.access.clone())
    }

    /// The pair in use, while this session keeps an outcome the store has not taken and the
    /// store cannot be locked to save it (`error`: a stalled holder, a database away): usable
    /// and not `rejected`, it stays in use from memory, as it would on the hot path had the
    /// store taken it.
    fn kept_in_memory(&self, rejected: Option<&AccessToken>, error: &Error) -> Option<AccessToken> {
        if !self.dirty.load(Ordering::Relaxed) {
            return None;
        }
        let token = self.usable_now().filter(|token| Some(token) != rejected)?;
        log::warn!("could not lock the store to save what an earlier call could not ({error}); the pair stays in use from memory");
        Some(token)
    }

    /// The server's clock minus ours: learned from the latest reply, else as stored, else
    /// taken to be zero (nothing says the clocks disagree).
    fn offset(&self, stored: Option<i64>) -> i64 {
        self.transport.server_offset().or(stored).unwrap_or(0)
    }

    /// Now, on the server's clock.
    fn server_now(&self, stored_offset: Option<i64>) -> i64 {
        self.clock.now().saturating_add(self.offset(stored_offset))
    }

    fn set_unsaved(&self, pending: Option<Unsaved>) {
        let mut unsaved = self.unsaved.lock();
        self.dirty.store(pending.is_some(), Ordering::Relaxed);
        *unsaved = pending;
    }

    /// The record under the held lock; when the key holds none, the record an earlier version
    /// saved under this account's legacy key, which then moves to the new key at the next save
    /// (issue 11: canonical store keys).
    fn load_locked(&self, guard: &mut dyn StoreLock) -> Result<Option<StoredRecord>> {
        Ok(match &self.legacy_key {
            Some(legacy) => crate::store::load_with_legacy(&*self.store, guard, &self.key, legacy)?,
            None => guard.load()?,
        })
    }

    /// The record under the lock, with anything this session could not save laid over it
    /// and saved again now. If that save fails once more, the record is still returned (and
    /// kept for the next call): the pair the server gave is never dropped.
    fn reload(&self, guard: &mut dyn StoreLock) -> Result<StoredRecord> {
        let stored = self.load_locked(guard)?.unwrap_or_default();
        let Some(mine) = self.unsaved.lock().clone() else {
            return Ok(stored);
        };
        let record = merge_unsaved(stored, &mine);
        match guard.save(&record) {
            Ok(()) => {
                log::info!("saved what an earlier call could not");
                self.set_unsaved(None);
            }
            Err(e) => {
                // The store is as it was: `mine` is laid over it again at the next call.
                log::warn!("what an earlier call could not save is still not saved ({e}); the pair stays in use from memory");
                self.emit(Event::SaveFailed {
                    error: e.to_string(),
                });
            }
        }
        Ok(record)
    }

    /// The store's lock and the record under it, once no other process has a tokens.make on
    /// its way: while one has (its mark is set and has not expired), the lock is let go and
    /// the record watched until the mark clears, so that its pair is adopted rather than a
    /// second make sent. The wait is bounded by the mark itself and by one lease of real
    /// time (for a clock that does not move).
    ///
    /// While another process holds the lock (refreshing, most likely), a pair it saves that
    /// [`usable_stored`](Self::usable_stored) takes is adopted at once, without the lock
    /// ([`TokenStore::lock_unless`]): a crowd at the end of an access token does not file
    /// through the lock one by one to read it. Not while this session has a record to save
    /// again, which needs the lock.
    fn lock_when_no_make_in_flight(&self, rejected: Option<&AccessToken>) -> Result<Locked<'_>> {
        let started = std::time::Instant::now();
        let bound = Duration::from_secs(self.lease_secs.unsigned_abs());
        loop {
            let mut guard = if self.dirty.load(Ordering::Relaxed) {
                self.store.lock(&self.key)?
            } else {
                let mut wanted =
                    |record: &StoredRecord| self.usable_stored(record, rejected).is_some();
                match self.store.lock_unless(&self.key, &mut wanted)? {
                    LockOrRecord::Locked(guard) => guard,
                    LockOrRecord::Found(record) => match self.usable_stored(&record, rejected) {
                        Some(pair) => return Ok(Locked::Adopted(self.adopt_stored(&record, pair))),
                        // It stopped being usable a moment after the store asked: wait again.
                        None => continue,
                    },
                }
            };
            let record = self.reload(guard.as_mut())?;
            if !self.make_in_flight(&record) || started.elapsed() > bound {
                return Ok(Locked::Held(guard, record));
            }
            drop(guard);
            log::debug!("another process is sending tokens.make; waiting for its pair");
            while started.elapsed() <= bound {
                std::thread::sleep(Duration::from_millis(20));
                let Some(now) = self.store.load(&self.key)? else {
                    break;
                };
                if !self.make_in_flight(&now) {
                    break;
                }
            }
        }
    }

    /// The pair of a record read without the lock, if it may be taken as it is: usable now,
    /// and not the access token the server refused (`rejected`). A pair whose refresh token
    /// the server refused is never stored (it is dropped in the same save).
    fn usable_stored<'r>(
        &self,
        record: &'r StoredRecord,
        rejected: Option<&AccessToken>,
    ) -> Option<&'r TokenPair> {
        let pair = record.pair.as_ref()?;
        let now = self.server_now(record.server_offset);
        (Some(&pair.access) != rejected && self.policy.usable(now, pair, record.issued_at))
            .then_some(pair)
    }

    /// Whether `record` says another process has a tokens.make on its way right now.
    fn make_in_flight(&self, record: &StoredRecord) -> bool {
        record
            .make_in_flight_until
            .is_some_and(|until| until > self.server_now(record.server_offset))
    }

    /// The slow path: a usable token, refreshing or making under both locks if needed.
    /// `rejected` is the access token the server just refused, if that is why we are here.
    fn obtain(&self, rejected: Option<&AccessToken>) -> Result<AccessToken> {
        let _flight = self.flight.lock();
        // Another thread may have done the work while we waited for the flight lock.
        if let Some(access) = self.cached().filter(|a| Some(a) != rejected) {
            return Ok(access);
        }
        // A cold start or another process's refresh: the stored pair may do, with no lock.
        if !self.dirty.load(Ordering::Relaxed) {
            if let Some(record) = self.store.load(&self.key)? {
                if let Some(pair) = self.usable_stored(&record, rejected) {
                    return Ok(self.adopt_stored(&record, pair));
                }
            }
        }
        let (mut guard, mut record) = match self.lock_when_no_make_in_flight(rejected) {
            Ok(Locked::Held(guard, record)) => (guard, record),
            Ok(Locked::Adopted(access)) => return Ok(access),
            Err(e) => return self.kept_in_memory(rejected, &e).ok_or(e),
        };
        let mut refresh_refusal: Option<ApiError> = None;
        loop {
            let situation = Situation {
                now: self.server_now(record.server_offset),
                stored: record.pair.as_ref(),
                issued_at: record.issued_at,
                rejected_access: rejected,
                refresh_rejected: refresh_refusal.is_some(),
                credentials: self.credentials.as_ref(),
                makes: &record.makes,
                cooldown: record.make_cooldown.as_ref(),
            };
            let refresh = match self.policy.decide(&situation) {
                Action::Use(pair) => return Ok(self.adopt_stored(&record, pair)),
                Action::Refresh(refresh) => refresh.clone(),
                Action::Make(credentials) => {
                    let mut record = record.clone();
                    let forgot = refresh_refusal.is_some();
                    if forgot {
                        // Saved with the make's ledger entry, in one save: a store whose lock
                        // ends with each save lets nobody in between.
                        forget_refused_pair(&mut record);
                    }
                    return self.make(guard.as_mut(), record, credentials, forgot);
                }
                Action::Fail(blocked) => {
                    if refresh_refusal.is_some() {
                        let mut record = record.clone();
                        forget_refused_pair(&mut record);
                        self.save_or_keep(guard.as_mut(), Unsaved::record(record), None);
                    }
                    return Err(match (blocked, refresh_refusal) {
                        (Blocked::Quota(quota), _) => quota_error(quota, None),
                        (Blocked::NoCredentials, Some(refusal)) => refused(refusal, None),
                        (Blocked::NoCredentials, None) => Error::CredentialsRequired,
                    });
                }
            };
            match self.transport.refresh(&refresh) {
                Ok(pair) => {
                    log::info!(
                        "tokens.refresh: new pair (access ends at {})",
                        pair.access_expires_at
                    );
                    let pending = Unsaved::record(record);
                    let token = self.keep(guard.as_mut(), pending, pair, Obtained::Refreshed, None);
                    return Ok(token);
                }
                Err(Error::Api(refusal)) => {
                    if matches!(
                        policy::classify(&refusal),
                        Refusal::RateLimited | Refusal::Server
                    ) {
                        return Err(refused(refusal, None));
                    }
                    log::warn!("tokens.refresh refused the stored refresh token ({refusal})");
                    // Another client may have refreshed a moment ago: reload once.
                    let reloaded = self.reload(guard.as_mut())?;
                    let moved_on = reloaded.pair.as_ref().is_some_and(|p| p.refresh != refresh);
                    record = reloaded;
                    if !moved_on {
                        refresh_refusal = Some(refusal);
                    }
                }
                Err(e) if e.delivery() == Some(Delivery::MaybeSent) => {
                    return Err(Error::RefreshReplyLost {
                        source: Box::new(e),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// tokens.make under the store lock. The attempt is written to the ledger before it is
    /// sent (if that write fails, nothing is sent), and taken back when the server refused
    /// it or the failure proves nothing left this machine. Attempts that never left back off
    /// (1 s doubling to 60 s); a 429 sets the persisted cooldown. `changed`: `record` differs
    /// from the stored one (a refused pair forgotten), so it is saved even when no make is sent.
    fn make(
        &self,
        guard: &mut dyn StoreLock,
        mut record: StoredRecord,
        credentials: &Credentials,
        changed: bool,
    ) -> Result<AccessToken> {
        let local_now = self.clock.now();
        let backing_off = self
            .offline
            .lock()
            .as_ref()
            .filter(|offline| local_now < offline.retry_at)
            .map(|offline| (offline.retry_at, offline.failures, offline.last.clone()));
        if let Some((retry_at, failures, last)) = backing_off {
            if changed {
                self.save_or_keep(guard, Unsaved::record(record), None);
            }
            return Err(Error::Network {
                endpoint: Endpoint::Make,
                delivery: Delivery::NotSent,
                retry_at: Some(retry_at),
                source: Box::new(BackingOff { failures, last }),
            });
        }
        let now = self.server_now(record.server_offset);
        self.policy.prune(&mut record.makes);
        record.makes.push(now);
        let mark = now.saturating_add(self.lease_secs);
        record.make_in_flight_until = Some(mark);
        guard.save(&record)?;
        record.make_in_flight_until = None;
        let outcome = self.transport.make(credentials);
        let unread = self.catch_up(guard, &mut record, mark).err();
        // What the attempt leaves to save: `from_server`, a pair or cooldown the server gave.
        let ended = |record: StoredRecord, taken_back: Vec<i64>, from_server: bool| Unsaved {
            from_server,
            record,
            taken_back,
            mark: Some(mark),
        };
        if outcome.as_ref().err().and_then(Error::delivery) != Some(Delivery::NotSent) {
            // Any reply at all (or a request that may have arrived): the network is there.
            *self.offline.lock() = None;
        }
        let error = match outcome {
            Ok(pair) => {
                log::info!(
                    "tokens.make: new pair (access ends at {})",
                    pair.access_expires_at
                );
                record.make_cooldown = None;
                let quota = self
                    .policy
                    .quota(now, &record.makes, record.make_cooldown.as_ref());
                let pending = ended(record, Vec::new(), true);
                let token = self.keep(guard, pending, pair, Obtained::Made, unread.as_ref());
                if quota.allowed.saturating_sub(quota.used) < QUOTA_LOW_BELOW {
                    self.emit(Event::QuotaLow {
                        used: quota.used,
                        allowed: quota.allowed,
                    });
                }
                return Ok(token);
            }
            Err(error) => error,
        };
        let error = match error {
            Error::Api(refusal) => {
                take_back(&mut record.makes, now);
                // The reply's `Date` has just told the server's time: judge the cooldown on
                // it, not on an offset this process had not checked yet.
                let replied_at = self.server_now(record.server_offset);
                let rate_limited = policy::classify(&refusal) == Refusal::RateLimited;
                if rate_limited {
                    let cooldown = self
                        .policy
                        .cooldown_after_429(replied_at, record.make_cooldown.as_ref());
                    log::warn!(
                        "tokens.make refused with HTTP 429: no make before unix time {}",
                        cooldown.until
                    );
                    record.make_cooldown = Some(cooldown);
                }
                let quota =
                    self.policy
                        .quota(replied_at, &record.makes, record.make_cooldown.as_ref());
                let pending = ended(record, vec![now], rate_limited);
                self.save_or_keep(guard, pending, unread.as_ref());
                refused(refusal, Some(quota))
            }
            mut unsent if unsent.delivery() == Some(Delivery::NotSent) => {
                take_back(&mut record.makes, now);
                self.save_or_keep(guard, ended(record, vec![now], false), unread.as_ref());
                let mut offline = self.offline.lock();
                let failures = offline.as_ref().map_or(0, |o| o.failures).saturating_add(1);
                let retry_at = local_now.saturating_add(policy::offline_backoff_secs(failures));
                log::info!("tokens.make never left this machine ({unsent}); next attempt at unix time {retry_at}");
                *offline = Some(Offline {
                    failures,
                    retry_at,
                    last: unsent.to_string(),
                });
                if let Error::Network { retry_at: at, .. } = &mut unsent {
                    *at = Some(retry_at);
                }
                unsent
            }
            // The server may have issued (and counted) a pair whose reply we lost: the
            // ledger keeps the attempt, and the stored pair stays as it was.
            other => {
                self.save_or_keep(guard, ended(record, Vec::new(), false), unread.as_ref());
                other
            }
        };
        Err(error)
    }

    /// After tokens.make, before the record is saved again: on a store whose lock ended with
    /// the write-ahead save (SQLite, PostgreSQL), another process may have saved meanwhile
    /// (our in-flight mark `mark` expired: a slow reply, a clock step, a suspended process).
    /// Keeps every ledger entry it wrote and its own in-flight mark, so that our save drops
    /// neither.
    ///
    /// # Errors
    /// The store's, when it cannot be read (its lock not granted again within the timeout:
    /// a stalled holder): then our record must not be written over it unread.
    fn catch_up(
        &self,
        guard: &mut dyn StoreLock,
        record: &mut StoredRecord,
        mark: i64,
    ) -> std::result::Result<(), StoreError> {
        let Some(stored) = guard.load()? else {
            return Ok(());
        };
        // The union of the two ledgers, as multisets (two makes may share a second).
        let mut values = stored.makes.clone();
        values.sort_unstable();
        values.dedup();
        for value in values {
            let count = |makes: &[i64]| makes.iter().filter(|&&t| t == value).count();
            let missing = count(&stored.makes).saturating_sub(count(&record.makes));
            record.makes.extend(std::iter::repeat_n(value, missing));
        }
        record.makes.sort_unstable();
        record.make_in_flight_until = stored.make_in_flight_until.filter(|&m| m != mark);
        Ok(())
    }

    /// Saves `pending.record` under the lock. If the store refuses it, it is kept in memory
    /// and laid over the store at the next call when it must be (it holds what the server
    /// said and nothing else has, a pair or a cooldown: `from_server`) or when it takes
    /// ledger entries back; else only logged. `unread`: why the record under the lock could
    /// not be read again after tokens.make; then nothing is written over it (another process
    /// may have saved meanwhile), and `pending` is kept for the next call.
    fn save_or_keep(
        &self,
        guard: &mut dyn StoreLock,
        mut pending: Unsaved,
        unread: Option<&StoreError>,
    ) {
        let error = match unread {
            Some(e) => {
                log::warn!("could not read the store again after tokens.make ({e}); keeping the outcome in memory and saving it at the next call");
                e.to_string()
            }
            None => match guard.save(&pending.record) {
                Ok(()) => return self.set_unsaved(None),
                Err(e) if pending.from_server || !pending.taken_back.is_empty() => {
                    log::warn!("could not save ({e}); keeping it in memory and saving it again at the next call");
                    e.to_string()
                }
                Err(e) => return log::warn!("could not update the make ledger ({e})"),
            },
        };
        if pending.from_server {
            self.emit(Event::SaveFailed { error });
        }
        // What an earlier call kept is not in the store either: its take-backs still apply.
        if let Some(earlier) = self.unsaved.lock().take() {
            pending.taken_back.extend(earlier.taken_back);
            pending.mark = pending.mark.or(earlier.mark);
            pending.from_server |= earlier.from_server;
        }
        self.set_unsaved(Some(pending));
    }

    /// A pair the server just gave: recorded with its arrival time on the server's clock and
    /// saved before it is used. If the save fails, the pair is used from memory all the same
    /// and saved again at the next call: the server has already rotated, so dropping it would
    /// cost a make.
    /// The application hears of it (`how`) after the save, or after [`Event::SaveFailed`].
    /// `pending` is the record the pair joins, with what else its exchange leaves (the
    /// in-flight mark of a make); `unread` as for [`save_or_keep`](Self::save_or_keep).
    fn keep(
        &self,
        guard: &mut dyn StoreLock,
        mut pending: Unsaved,
        pair: TokenPair,
        how: Obtained,
        unread: Option<&StoreError>,
    ) -> AccessToken {
        let record = &mut pending.record;
        record.server_offset = self.transport.server_offset().or(record.server_offset);
        record.issued_at = Some(self.server_now(record.server_offset));
        self.policy.prune(&mut record.makes);
        record.pair = Some(pair.clone());
        pending.from_server = true;
        let record = pending.record.clone();
        self.save_or_keep(guard, pending, unread);
        self.emit(how.event(&pair));
        self.adopt(&record, &pair)
    }

    /// [`adopt`](Self::adopt) for a pair found in the store, told as [`Event::Adopted`]
    /// unless it is the one in use already.
    fn adopt_stored(&self, record: &StoredRecord, pair: &TokenPair) -> AccessToken {
        let known = self
            .current
            .lock()
            .as_ref()
            .is_some_and(|c| c.access == pair.access);
        if !known {
            self.emit(Obtained::Adopted.event(pair));
        }
        self.adopt(record, pair)
    }

    /// Makes `pair` (of `record`) the one in use until the policy says otherwise.
    fn adopt(&self, record: &StoredRecord, pair: &TokenPair) -> AccessToken {
        let until = self.policy.usable_until(pair, record.issued_at);
        // The deadline is on our clock: the server's, less the offset.
        let local_until = until.saturating_sub(self.offset(record.server_offset));
        let until = if until == i64::MAX {
            i64::MAX
        } else {
            local_until
        };
        let current = Current {
            usable_until: Deadline::at(until),
            access: pair.access.clone(),
        };
        let access = current.access.clone();
        *self.current.lock() = Some(current);
        access
    }
}

/// What [`Inner::lock_when_no_make_in_flight`] came to.
enum Locked<'a> {
    /// The store's lock and the record under it.
    Held(Box<dyn StoreLock + 'a>, StoredRecord),
    /// A pair another process saved while this one waited, now in use.
    Adopted(AccessToken),
}

/// Drops the stored pair whose refresh token the server has just refused (after a reload
/// showed nobody had moved on): it can never be refreshed again, so no process may send it
/// again. A make, when one is possible, stores the next pair.
fn forget_refused_pair(record: &mut StoredRecord) {
    record.pair = None;
    record.issued_at = None;
}

/// Removes one ledger entry `at` (the attempt being taken back).
fn take_back(makes: &mut Vec<i64>, at: i64) {
    if let Some(i) = makes.iter().rposition(|&t| t == at) {
        makes.remove(i);
    }
}

/// How the session came by a pair, for its [`Event`].
#[derive(Clone, Copy)]
enum Obtained {
    Made,
    Refreshed,
    Adopted,
}

impl Obtained {
    fn event(self, pair: &TokenPair) -> Event {
        let (access_expires_at, refresh_expires_at, cabinet_user_id) = (
            pair.access_expires_at,
            pair.refresh_expires_at,
            pair.cabinet_user_id,
        );
        match self {
            Obtained::Made => Event::Made {
                access_expires_at,
                refresh_expires_at,
                cabinet_user_id,
            },
            Obtained::Refreshed => Event::Refreshed {
                access_expires_at,
                refresh_expires_at,
                cabinet_user_id,
            },
            Obtained::Adopted => Event::Adopted {
                access_expires_at,
                refresh_expires_at,
                cabinet_user_id,
            },
        }
    }
}

/// Configures a [`Session`]. Every setting is optional.
#[must_use]
pub struct SessionBuilder {
    credentials: Option<Credentials>,
    store: Option<Box<dyn TokenStore>>,
    store_key: Option<StoreKey>,
    transport: Option<Box<dyn Transport>>,
    config: TransportConfig,
    policy: Policy,
    clock: Option<Arc<dyn Clock>>,
    hook: Option<Hook>,
}

impl Default for SessionBuilder {
    fn default() -> Self {
        SessionBuilder {
            credentials: None,
            store: None,
            store_key: None,
            transport: None,
            config: TransportConfig::new(DEFAULT_BASE_URL),
            policy: Policy::default(),
            clock: None,
            hook: None,
        }
    }
}

impl fmt::Debug for SessionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("credentials", &self.credentials)
            .field("store", &self.store)
            .field("store_key", &self.store_key)
            .field("config", &self.config)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SessionBuilder {
    /// The credentials for tokens.make. Optional when a usable pair is stored.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Where the pair and the make ledger are kept (default: a new [`MemoryStore`]).
    pub fn store(mut self, store: impl TokenStore + 'static) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// The record's key in the store. Default: derived from the base URL, email and appId
    /// ([`StoreKey::for_account`]), or from the base URL alone without credentials.
    pub fn store_key(mut self, key: impl Into<String>) -> Self {
        self.store_key = Some(StoreKey::new(key));
        self
    }

    /// The API's base URL (default `https://api.chatapp.online`). Plain `http://` is
    /// accepted only for loopback hosts unless [`allow_insecure_http`](Self::allow_insecure_http).
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.config.base_url = base_url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Bound on each HTTP exchange, from the name lookup to the reply's last byte (default
    /// 30 s): a server that stalls or trickles its reply is cut off within it. Half of it is
    /// the longest wait for the reply to begin. The split among the exchange's phases: name
    /// lookup 1/10, connect 1/10, request headers 1/20, request body 1/10, waiting for the
    /// reply's headers 1/2, reply body 3/20.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// The `Lang` header sent with every call (`en`, `ru`, `pt`): localises the server's
    /// error messages.
    pub fn lang(mut self, lang: impl Into<String>) -> Self {
        self.config.lang = Some(lang.into());
        self
    }

    /// Allows plain `http://` to hosts other than loopback. Tokens then cross the network
    /// unencrypted: only for trusted networks.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.config.allow_insecure_http = allow;
        self
    }

    /// The cap on a reply body in bytes (default 4 MiB); a larger reply is a protocol error.
    pub fn max_reply_bytes(mut self, bytes: u64) -> Self {
        self.config.max_reply_bytes = bytes;
        self
    }

    /// Tokens are treated as ended this long before their end time (default 60 s).
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.policy.expiry_margin_secs = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// The most tokens.make in any 24 h (default 100, ChatApp's limit).
    pub fn make_limit(mut self, limit: u32) -> Self {
        self.policy.make_limit = limit;
        self
    }

    /// Makes of the limit this session leaves for others (default 0).
    pub fn make_reserve(mut self, reserve: u32) -> Self {
        self.policy.make_reserve = reserve;
        self
    }

    /// Refresh on use once the refresh token has less than this left (default one day), so
    /// that an application in use never falls back to tokens.make.
    pub fn refresh_ahead(mut self, ahead: Duration) -> Self {
        self.policy.refresh_ahead_secs = i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// How long tokens.make is not asked again after the server refused it with HTTP 429
    /// (default one hour); it doubles with each further 429, up to
    /// [`make_cooldown_max`](Self::make_cooldown_max).
    pub fn make_cooldown(mut self, cooldown: Duration) -> Self {
        self.policy.make_cooldown_secs = i64::try_from(cooldown.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// The longest cooldown after repeated 429s on tokens.make (default 24 h).
    pub fn make_cooldown_max(mut self, cooldown: Duration) -> Self {
        self.policy.make_cooldown_max_secs = i64::try_from(cooldown.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// Calls `hook` with every [`Event`]: a new pair made, refreshed or taken from the store,
    /// a token refused, a failed save, a low make quota. The hook runs on the thread that
    /// caused the event, after the store was updated and outside the session's locks (it may
    /// use the session); keep it short.
    ///
    /// ```
    /// use chatapp_session::{Event, Session};
    ///
    /// let session = Session::builder()
    ///     .on_event(|event| match event {
    ///         Event::Made { access_expires_at, .. } | Event::Refreshed { access_expires_at, .. } => {
    ///             println!("new access token until {access_expires_at}: re-authorize the socket");
    ///         }
    ///         Event::SaveFailed { error, .. } => eprintln!("the token store failed: {error}"),
    ///         _ => {}
    ///     })
    ///     .build()?;
    /// # Ok::<(), chatapp_session::Error>(())
    /// ```
    pub fn on_event(mut self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The clock (default: the system's); tests pass a `testing::ManualClock` shared with
    /// their `FakeChatApp`.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// A transport of your own instead of the ureq one (the base URL, timeout and cap set on
    /// this builder then do not apply).
    pub fn transport(mut self, transport: impl Transport + 'static) -> Self {
        self.transport = Some(Box::new(transport));
        self
    }

    /// The session.
    ///
    /// # Errors
    /// [`Error::Config`] for a base URL that is not `https://` (or loopback `http://`), or
    /// a zero timeout.
    pub fn build(self) -> Result<Session> {
        if self.config.timeout.is_zero() {
            return Err(Error::Config("the timeout must be longer than zero".into()));
        }
        let legacy_key = match (&self.store_key, &self.credentials) {
            (None, Some(c)) => Some(StoreKey::legacy_for_account(
                &self.config.base_url,
                c.email(),
                c.app_id(),
            )),
            _ => None,
        };
        let key = match (self.store_key, &self.credentials) {
            (Some(key), _) => key,
            (None, Some(c)) => StoreKey::for_account(&self.config.base_url, c.email(), c.app_id()),
            (None, None) => StoreKey::for_base_url(&self.config.base_url),
        };
        let lease_secs = i64::try_from(self.config.timeout.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_add(5);
        let transport = match self.transport {
            Some(transport) => transport,
            None => Box::new(UreqTransport::with_clock(
                self.config,
                SessionClock::new(self.clock.clone()),
            )?),
        };
        Ok(Session {
            inner: Arc::new(Inner {
                transport,
                store: self.store.unwrap_or_else(|| Box::new(MemoryStore::new())),
                key,
                legacy_key,
                legacy_retired: AtomicBool::new(false),
                credentials: self.credentials,
                policy: self.policy,
                clock: SessionClock::new(self.clock),
                current: Mutex::new(None),
                flight: Mutex::new(()),
                unsaved: Mutex::new(None),
                dirty: AtomicBool::new(false),
                offline: Mutex::new(None),
                lease_secs,
                refused: Mutex::new(None),
                events: Events::new(self.hook),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Session>();
        assert_eq!(std::mem::size_of::<Session>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn builder_refuses_insecure_and_zero_timeout() {
        assert!(matches!(
            Session::builder().base_url("http://example.com").build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Session::builder().timeout(Duration::ZERO).build(),
            Err(Error::Config(_))
        ));
        assert!(Session::builder()
            .base_url("http://example.com")
            .allow_insecure_http(true)
            .build()
            .is_ok());
    }

    #[test]
    fn keys_follow_credentials() {
        let with = Session::builder()
            .base_url("http://127.0.0.1:9/")
            .credentials(Credentials::new("a@b.c", "pw", "app_1"))
            .build();
        let without = Session::builder().base_url("http://127.0.0.1:9").build();
        let explicit = Session::builder().store_key("mine").build();
        assert_eq!(
            with.map(|s| s.store_key().to_string()).ok().as_deref(),
            Some("http://127.0.0.1:9 a@b.c app_1")
        );
        assert_eq!(
            without.map(|s| s.store_key().to_string()).ok().as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(
            explicit.map(|s| s.store_key().to_string()).ok().as_deref(),
            Some("mine")
        );
    }
}
