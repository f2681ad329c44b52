//! What the fake server remembers: its accounts, every pair it issued (with end times and
//! whether it was revoked), rotation, the tokens.make quota, callback URLs and the
//! [`Counters`].
//!
//! Pure: every operation takes `now` (unix seconds, the server's clock) as an argument and
//! nothing here touches a socket, a thread or a clock. The server keeps one [`State`] under
//! one mutex, which is what makes a refresh atomic: of two refreshes racing with one refresh
//! token, exactly one wins under strict rotation.

use std::collections::{BTreeMap, HashMap};

use super::fault::Fault;
use super::log::{RefusedBecause, TokenEvent, TokenOutcome};
use super::tokens::TokenGen;
use crate::error::Endpoint;
use crate::token::{AccessToken, RefreshToken, TokenPair};

/// Seconds in a day: the rolling window of the tokens.make quota.
pub(crate) const DAY: i64 = 86_400;

/// What the fake server has counted since it started (or since
/// [`reset_counters`](super::FakeChatApp::reset_counters)).
///
/// A request that a [`Fault`](super::Fault) answered without doing the work
/// (everything but [`Delay`](super::Fault::Delay), [`LostReply`](super::Fault::LostReply),
/// and [`MissingField`](super::Fault::MissingField) / [`WrongTypes`](super::Fault::WrongTypes)
/// on the token endpoints) counts only in `faults_served`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// tokens.make calls that issued a pair.
    pub makes: u64,
    /// tokens.make calls refused: wrong or missing credentials, a malformed body, the quota.
    pub makes_rejected: u64,
    /// tokens.refresh calls that issued a pair.
    pub refreshes: u64,
    /// tokens.refresh calls refused: no, unknown, revoked or expired refresh token.
    pub refreshes_rejected: u64,
    /// tokens.check calls, whatever the answer.
    pub checks: u64,
    /// Every request that is not one of the three token endpoints, whatever the answer
    /// (404s and invalid tokens included).
    pub requests: u64,
    /// `ApiInvalidTokenError` replies sent for ordinary requests and tokens.check (not for
    /// tokens.refresh, which counts in `refreshes_rejected`).
    pub invalid_token_replies: u64,
    /// Injected faults applied.
    pub faults_served: u64,
}

/// A file the fake received with `POST .../messages/file`
/// (see [`FakeChatApp::uploaded_file`](super::FakeChatApp::uploaded_file)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadedFile {
    /// The chat it was sent to, as in the path.
    pub chat: String,
    /// The `filename` of the `file` part (or the `fileName` field when given).
    pub file_name: Option<String>,
    /// The `Content-Type` of the `file` part.
    pub content_type: Option<String>,
    /// The `caption` field.
    pub caption: Option<String>,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

/// What becomes of the old pair when its refresh token is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Rotation {
    /// The refresh token just used, and the access token of its pair, die at once (the
    /// default, and what the SDK must assume of the real server).
    #[default]
    Strict,
    /// The old pair lives on until its end times; its refresh token may be used again.
    Lenient,
}

/// One account tokens.make accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) email: String,
    pub(crate) password: String,
    pub(crate) app_id: String,
    pub(crate) cabinet_user_id: i64,
}

/// Lifetimes and rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) access_lifetime: i64,
    pub(crate) refresh_lifetime: i64,
    pub(crate) rotation: Rotation,
    pub(crate) make_limit: u32,
    pub(crate) make_revokes_older: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            access_lifetime: DAY,
            refresh_lifetime: 14 * DAY,
            rotation: Rotation::Strict,
            make_limit: 100,
            make_revokes_older: false,
        }
    }
}

/// Why tokens.make said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MakeRefusal {
    /// No account has that email, password and appId.
    WrongCredentials,
    /// The email+appId has had `make_limit` successful makes in the last 24 h.
    Quota,
}

/// The token is unknown, revoked or past its end time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InvalidToken;

/// A pair the server issued, and what has become of it.
#[derive(Debug)]
struct Record {
    /// The account's cabinet user (one per account: it names the account).
    cabinet_user_id: i64,
    access_end: i64,
    refresh_end: i64,
    access_dead: bool,
    refresh_dead: bool,
    /// The index in the token log of the refresh that rotated this pair away.
    rotated_by: Option<usize>,
    /// Whether a revocation (not a rotation) killed the refresh token.
    revoked: bool,
}

/// Everything the server knows.
#[derive(Debug)]
pub(crate) struct State {
    limits: Limits,
    accounts: Vec<Account>,
    records: Vec<Record>,
    by_access: HashMap<String, usize>,
    by_refresh: HashMap<String, usize>,
    /// Times of successful makes, per (email, appId).
    makes: HashMap<(String, String), Vec<i64>>,
    callbacks: BTreeMap<(String, String), String>,
    /// Files sent with `messages/file`, by message id.
    files: HashMap<String, UploadedFile>,
    gen: TokenGen,
    /// Every tokens.make and tokens.refresh request, in the order handled.
    token_log: Vec<TokenEvent>,
    /// What has been counted; the server adds to it too.
    pub(crate) counters: Counters,
}

impl State {
    /// A server state with these rules and accounts.
    pub(crate) fn new(limits: Limits, accounts: Vec<Account>) -> Self {
        State {
            limits,
            accounts,
            records: Vec::new(),
            by_access: HashMap::new(),
            by_refresh: HashMap::new(),
            makes: HashMap::new(),
            callbacks: BTreeMap::new(),
            files: HashMap::new(),
            gen: TokenGen::new(),
            token_log: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Issues a pair for the account whose cabinet user is `cabinet_user_id` at `now`,
    /// counting nothing.
    pub(crate) fn issue(&mut self, cabinet_user_id: i64, now: i64) -> TokenPair {
        let issued = TokenPair {
            access: AccessToken::new(self.gen.token()),
            access_expires_at: now.saturating_add(self.limits.access_lifetime),
            refresh: RefreshToken::new(self.gen.token()),
            refresh_expires_at: now.saturating_add(self.limits.refresh_lifetime),
            cabinet_user_id,
        };
        let index = self.records.len();
        self.records.push(Record {
            cabinet_user_id,
            access_end: issued.access_expires_at,
            refresh_end: issued.refresh_expires_at,
            access_dead: false,
            refresh_dead: false,
            rotated_by: None,
            revoked: false,
        });
        self.by_access
            .insert(issued.access.expose_secret().to_owned(), index);
        self.by_refresh
            .insert(issued.refresh.expose_secret().to_owned(), index);
        issued
    }

    /// tokens.make. Counts `makes` or `makes_rejected`; only a success counts toward the quota.
    pub(crate) fn make(
        &mut self,
        email: &str,
        password: &str,
        app_id: &str,
        now: i64,
    ) -> Result<TokenPair, MakeRefusal> {
        let Some(cabinet_user_id) = self
            .accounts
            .iter()
            .find(|a| a.email == email && a.password == password && a.app_id == app_id)
            .map(|a| a.cabinet_user_id)
        else {
            self.counters.makes_rejected += 1;
            return Err(MakeRefusal::WrongCredentials);
        };
        if self.makes_in_window(email, app_id, now) >= u64::from(self.limits.make_limit) {
            self.counters.makes_rejected += 1;
            return Err(MakeRefusal::Quota);
        }
        if self.limits.make_revokes_older {
            for record in self
                .records
                .iter_mut()
                .filter(|r| r.cabinet_user_id == cabinet_user_id)
            {
                record.access_dead = true;
                record.refresh_dead = true;
                record.revoked = true;
            }
        }
        self.makes
            .entry((email.to_owned(), app_id.to_owned()))
            .or_default()
            .push(now);
        self.counters.makes += 1;
        Ok(self.issue(cabinet_user_id, now))
    }

    /// Successful makes for this email+appId in the 24 h before `now` (forgetting older ones).
    pub(crate) fn makes_in_window(&mut self, email: &str, app_id: &str, now: i64) -> u64 {
        let Some(times) = self.makes.get_mut(&(email.to_owned(), app_id.to_owned())) else {
            return 0;
        };
        // `retain`, not a pop from the front: a shared manual clock may be set backwards.
        times.retain(|&t| now.saturating_sub(t) < DAY);
        times.len() as u64
    }

    /// tokens.refresh. Counts `refreshes` or `refreshes_rejected`.
    pub(crate) fn refresh(&mut self, refresh: &str, now: i64) -> Result<TokenPair, InvalidToken> {
        let live = self
            .by_refresh
            .get(refresh)
            .and_then(|&i| self.records.get_mut(i))
            .filter(|r| !r.refresh_dead && now < r.refresh_end);
        let Some(record) = live else {
            self.counters.refreshes_rejected += 1;
            return Err(InvalidToken);
        };
        if self.limits.rotation == Rotation::Strict {
            record.refresh_dead = true;
            record.access_dead = true;
            // The caller logs this refresh next, under the same lock (`log_token`).
            record.rotated_by = Some(self.token_log.len());
        }
        let cabinet_user_id = record.cabinet_user_id;
        self.counters.refreshes += 1;
        Ok(self.issue(cabinet_user_id, now))
    }

    /// Why [`refresh`](Self::refresh) refused `refresh` at `now` (asked right after it, under
    /// the same lock).
    pub(crate) fn why_refused(&self, refresh: &str, now: i64) -> RefusedBecause {
        let Some(record) = self
            .by_refresh
            .get(refresh)
            .and_then(|&i| self.records.get(i))
        else {
            return RefusedBecause::UnknownToken;
        };
        match (record.rotated_by, record.revoked) {
            (Some(by), _) => RefusedBecause::Rotated { by },
            (None, true) => RefusedBecause::Revoked,
            (None, false) if now >= record.refresh_end => RefusedBecause::Expired,
            // A lenient server never kills a refresh token but by time or revocation.
            (None, false) => RefusedBecause::UnknownToken,
        }
    }

    /// Appends a token request to the log.
    pub(crate) fn log_token(
        &mut self,
        route: Endpoint,
        at: i64,
        outcome: TokenOutcome,
        fault: Option<Fault>,
        pair: Option<usize>,
    ) {
        self.token_log.push(TokenEvent {
            at,
            route,
            outcome,
            fault,
            pair,
        });
    }

    /// The number of the pair whose refresh token is `refresh`, if the server issued it.
    pub(crate) fn pair_of_refresh(&self, refresh: &str) -> Option<usize> {
        self.by_refresh.get(refresh).copied()
    }

    /// The number of the pair issued last.
    pub(crate) fn last_pair(&self) -> Option<usize> {
        self.records.len().checked_sub(1)
    }

    /// The token log from index `from` on.
    pub(crate) fn token_log(&self, from: usize) -> Vec<TokenEvent> {
        self.token_log.iter().skip(from).cloned().collect()
    }

    /// Whether `access` is live at `now`; its account's cabinet user id when it is.
    fn live_access(&self, access: &str, now: i64) -> Option<i64> {
        let record = self.records.get(*self.by_access.get(access)?)?;
        if record.access_dead || now >= record.access_end {
            return None;
        }
        Some(record.cabinet_user_id)
    }

    /// tokens.check. Counts `checks`, and `invalid_token_replies` when the token is not live.
    pub(crate) fn check(&mut self, access: &str, now: i64) -> Result<i64, InvalidToken> {
        self.counters.checks += 1;
        self.authorize(access, now)
    }

    /// Whether an ordinary request's `Authorization` is a live access token. Counts
    /// `invalid_token_replies` when it is not (the caller counts `requests`).
    pub(crate) fn authorize(&mut self, access: &str, now: i64) -> Result<i64, InvalidToken> {
        match self.live_access(access, now) {
            Some(cabinet) => Ok(cabinet),
            None => {
                self.counters.invalid_token_replies += 1;
                Err(InvalidToken)
            }
        }
    }

    /// Every access token dies; refresh tokens live on.
    pub(crate) fn revoke_access_tokens(&mut self) {
        for record in &mut self.records {
            record.access_dead = true;
        }
    }

    /// Every access and refresh token dies.
    pub(crate) fn revoke_all(&mut self) {
        for record in &mut self.records {
            record.access_dead = true;
            record.refresh_dead = true;
            record.revoked = true;
        }
    }

    /// Sets the callback URL of a license's messenger.
    pub(crate) fn set_callback(&mut self, license: &str, messenger: &str, url: &str) {
        self.callbacks
            .insert((license.to_owned(), messenger.to_owned()), url.to_owned());
    }

    /// Removes the callback URL of a license's messenger; whether there was one.
    pub(crate) fn remove_callback(&mut self, license: &str, messenger: &str) -> bool {
        self.callbacks
            .remove(&(license.to_owned(), messenger.to_owned()))
            .is_some()
    }

    /// Every callback URL: (license, messenger type, URL), sorted.
    pub(crate) fn callbacks(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.callbacks
            .iter()
            .map(|((l, m), u)| (l.as_str(), m.as_str(), u.as_str()))
    }

    /// A fresh message id.
    pub(crate) fn message_id(&mut self) -> String {
        self.gen.hex16()
    }

    /// Keeps a file sent as message `id`.
    pub(crate) fn keep_file(&mut self, id: &str, file: UploadedFile) {
        self.files.insert(id.to_owned(), file);
    }

    /// The file sent as message `id`.
    pub(crate) fn file(&self, id: &str) -> Option<&UploadedFile> {
        self.files.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    fn account(n: i64) -> Account {
        Account {
            email: format!("user{n}@example.com"),
            password: format!("pw{n}"),
            app_id: format!("app_{n}"),
            cabinet_user_id: 100 + n,
        }
    }

    fn state(limits: Limits) -> State {
        State::new(limits, vec![account(1), account(2)])
    }

    fn make(s: &mut State, n: i64, now: i64) -> Result<TokenPair, MakeRefusal> {
        s.make(
            &format!("user{n}@example.com"),
            &format!("pw{n}"),
            &format!("app_{n}"),
            now,
        )
    }

    #[test]
    fn make_checks_all_three_credentials() {
        let mut s = state(Limits::default());
        let pair = make(&mut s, 2, T0).ok();
        assert_eq!(pair.as_ref().map(|p| p.cabinet_user_id), Some(102));
        assert_eq!(pair.as_ref().map(|p| p.access_expires_at), Some(T0 + DAY));
        assert_eq!(
            pair.as_ref().map(|p| p.refresh_expires_at),
            Some(T0 + 14 * DAY)
        );
        for (e, p, a) in [
            ("user1@example.com", "pw2", "app_1"),
            ("user1@example.com", "pw1", "app_2"),
            ("user2@example.com", "pw1", "app_1"),
            ("", "", ""),
        ] {
            assert_eq!(s.make(e, p, a, T0), Err(MakeRefusal::WrongCredentials));
        }
        assert_eq!((s.counters.makes, s.counters.makes_rejected), (1, 4));
    }

    #[test]
    fn access_lives_until_its_end_time() {
        let mut s = state(Limits::default());
        let Ok(p) = make(&mut s, 1, T0) else {
            panic!("make failed")
        };
        assert_eq!(s.authorize(p.access.expose_secret(), T0 + DAY - 1), Ok(101));
        assert_eq!(s.check(p.access.expose_secret(), T0 + DAY - 1), Ok(101));
        assert_eq!(
            s.authorize(p.access.expose_secret(), T0 + DAY),
            Err(InvalidToken)
        );
        assert_eq!(
            s.check(p.access.expose_secret(), T0 + DAY),
            Err(InvalidToken)
        );
        assert_eq!(
            s.authorize(p.refresh.expose_secret(), T0),
            Err(InvalidToken)
        );
        assert_eq!(s.authorize("nonsense", T0), Err(InvalidToken));
        assert_eq!(s.counters.checks, 2);
        assert_eq!(s.counters.invalid_token_replies, 4);
    }

    #[test]
    fn strict_rotation_kills_the_used_pair() {
        let mut s = state(Limits::default());
        let Ok(old) = make(&mut s, 1, T0) else {
            panic!("make failed")
        };
        let Ok(new) = s.refresh(old.refresh.expose_secret(), T0 + 10) else {
            panic!("refresh failed")
        };
        assert_eq!(new.access_expires_at, T0 + 10 + DAY);
        assert_eq!(new.cabinet_user_id, 101);
        assert_ne!(new.access, old.access);
        assert_ne!(new.refresh, old.refresh);
        assert_eq!(
            s.refresh(old.refresh.expose_secret(), T0 + 11),
            Err(InvalidToken)
        );
        assert_eq!(
            s.authorize(old.access.expose_secret(), T0 + 11),
            Err(InvalidToken)
        );
        assert_eq!(s.authorize(new.access.expose_secret(), T0 + 11), Ok(101));
        assert!(s.refresh(new.refresh.expose_secret(), T0 + 12).is_ok());
        assert_eq!(
            (s.counters.refreshes, s.counters.refreshes_rejected),
            (2, 1)
        );
    }

    #[test]
    fn lenient_rotation_keeps_the_old_pair_until_its_end() {
        let mut s = state(Limits {
            rotation: Rotation::Lenient,
            ..Limits::default()
        });
        let Ok(old) = make(&mut s, 1, T0) else {
            panic!("make failed")
        };
        assert!(s.refresh(old.refresh.expose_secret(), T0 + 1).is_ok());
        assert!(s.refresh(old.refresh.expose_secret(), T0 + 2).is_ok());
        assert_eq!(s.authorize(old.access.expose_secret(), T0 + 2), Ok(101));
        assert_eq!(
            s.refresh(old.refresh.expose_secret(), T0 + 14 * DAY),
            Err(InvalidToken)
        );
    }

    #[test]
    fn refresh_tokens_expire_and_unknown_ones_are_refused() {
        let mut s = state(Limits::default());
        let Ok(p) = make(&mut s, 1, T0) else {
            panic!("make failed")
        };
        assert_eq!(s.refresh("", T0), Err(InvalidToken));
        assert_eq!(s.refresh(p.access.expose_secret(), T0), Err(InvalidToken));
        assert_eq!(
            s.refresh(p.refresh.expose_secret(), T0 + 14 * DAY),
            Err(InvalidToken)
        );
        let Ok(q) = make(&mut s, 1, T0) else {
            panic!("make failed")
        };
        assert!(s
            .refresh(q.refresh.expose_secret(), T0 + 14 * DAY - 1)
            .is_ok());
    }

    #[test]
    fn quota_is_a_rolling_day_per_email_and_app() {
        let mut s = state(Limits {
            make_limit: 3,
            ..Limits::default()
        });
        for i in 0..3 {
            assert!(make(&mut s, 1, T0 + i * 1000).is_ok());
        }
        assert_eq!(make(&mut s, 1, T0 + 5000).err(), Some(MakeRefusal::Quota));
        // Another account has its own quota.
        assert!(make(&mut s, 2, T0 + 5000).is_ok());
        // Wrong credentials never count toward anything.
        assert_eq!(
            s.make("user1@example.com", "bad", "app_1", T0),
            Err(MakeRefusal::WrongCredentials)
        );
        // The first make leaves the window 24 h after it happened, not at midnight.
        assert_eq!(
            make(&mut s, 1, T0 + DAY - 1).err(),
            Some(MakeRefusal::Quota)
        );
        assert!(make(&mut s, 1, T0 + DAY).is_ok());
        assert_eq!(make(&mut s, 1, T0 + DAY).err(), Some(MakeRefusal::Quota));
        assert_eq!(s.makes_in_window("user1@example.com", "app_1", T0 + DAY), 3);
        assert_eq!((s.counters.makes, s.counters.makes_rejected), (5, 4));
    }

    #[test]
    fn refusals_name_what_killed_the_token() {
        let mut s = state(Limits::default());
        let Ok(p) = make(&mut s, 1, T0) else {
            panic!("make failed")
        };
        s.log_token(Endpoint::Make, T0, TokenOutcome::Issued, None, Some(0));
        let Ok(q) = s.refresh(p.refresh.expose_secret(), T0 + 1) else {
            panic!("refresh failed")
        };
        s.log_token(
            Endpoint::Refresh,
            T0 + 1,
            TokenOutcome::Issued,
            None,
            Some(0),
        );
        assert!(s.refresh(p.refresh.expose_secret(), T0 + 2).is_err());
        assert_eq!(
            s.why_refused(p.refresh.expose_secret(), T0 + 2),
            RefusedBecause::Rotated { by: 1 }
        );
        assert_eq!(s.why_refused("nope", T0), RefusedBecause::UnknownToken);
        assert_eq!(
            (s.pair_of_refresh(q.refresh.expose_secret()), s.last_pair()),
            (Some(1), Some(1))
        );
        assert_eq!(
            s.why_refused(q.refresh.expose_secret(), T0 + 1 + 14 * DAY),
            RefusedBecause::Expired
        );
        s.revoke_all();
        assert_eq!(
            s.why_refused(q.refresh.expose_secret(), T0 + 3),
            RefusedBecause::Revoked
        );
        let log = s.token_log(1);
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].at, log[0].route, log[0].issued()),
            (T0 + 1, Endpoint::Refresh, true)
        );
    }

    #[test]
    fn revocation() {
        let mut s = state(Limits::default());
        let (Ok(a), Ok(b)) = (make(&mut s, 1, T0), make(&mut s, 2, T0)) else {
            panic!("make failed")
        };
        s.revoke_access_tokens();
        assert_eq!(s.authorize(a.access.expose_secret(), T0), Err(InvalidToken));
        assert_eq!(s.authorize(b.access.expose_secret(), T0), Err(InvalidToken));
        let Ok(c) = s.refresh(a.refresh.expose_secret(), T0) else {
            panic!("refresh failed")
        };
        assert_eq!(s.authorize(c.access.expose_secret(), T0), Ok(101));
        s.revoke_all();
        assert_eq!(s.authorize(c.access.expose_secret(), T0), Err(InvalidToken));
        assert_eq!(s.refresh(c.refresh.expose_secret(), T0), Err(InvalidToken));
        assert_eq!(s.refresh(b.refresh.expose_secret(), T0), Err(InvalidToken));
    }

    #[test]
    fn make_may_revoke_older_pairs_of_the_account() {
        let mut s = state(Limits {
            make_revokes_older: true,
            ..Limits::default()
        });
        let (Ok(a), Ok(other)) = (make(&mut s, 1, T0), make(&mut s, 2, T0)) else {
            panic!("make failed")
        };
        let Ok(b) = make(&mut s, 1, T0) else {
            panic!("make failed")
        };
        assert_eq!(s.authorize(a.access.expose_secret(), T0), Err(InvalidToken));
        assert_eq!(s.refresh(a.refresh.expose_secret(), T0), Err(InvalidToken));
        assert_eq!(s.authorize(b.access.expose_secret(), T0), Ok(101));
        assert_eq!(s.authorize(other.access.expose_secret(), T0), Ok(102));
    }

    #[test]
    fn callbacks_are_kept_per_license_and_messenger() {
        let mut s = state(Limits::default());
        s.set_callback("1", "telegram", "https://a");
        s.set_callback("1", "grWhatsApp", "https://b");
        s.set_callback("1", "telegram", "https://c");
        let all: Vec<_> = s.callbacks().collect();
        assert_eq!(
            all,
            [
                ("1", "grWhatsApp", "https://b"),
                ("1", "telegram", "https://c")
            ]
        );
        assert!(s.remove_callback("1", "telegram"));
        assert!(!s.remove_callback("1", "telegram"));
        assert_eq!(s.callbacks().count(), 1);
    }
}
