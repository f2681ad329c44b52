//! The refresh policy: pure decisions, no I/O. Every function takes `now` (unix seconds on
//! the server's clock) as an argument, so each rule is tested table by table.
//!
//! The rules follow ChatApp's guidance: use the saved access token until it is known dead (the
//! server said `ApiInvalidTokenError`, or its end time has passed on the server's clock); then
//! refresh whenever a refresh token is stored; make only when none is stored or the server has
//! just refused it, credentials were given, and neither the rolling 24 h make quota nor a
//! server's 429 cooldown forbids it. Nothing is ever refreshed on a timer, and no local clock
//! judgement ever leads to a make.

use crate::error::ApiError;
use crate::store::Cooldown;
use crate::token::{AccessToken, Credentials, RefreshToken, TokenPair};

/// The code ChatApp uses for a dead access token.
pub const INVALID_TOKEN_CODE: &str = "ApiInvalidTokenError";
/// The length of the make quota window.
pub const QUOTA_WINDOW_SECS: i64 = 24 * 60 * 60;
/// ChatApp's documented make limit per day per email+appId.
pub const DEFAULT_MAKE_LIMIT: u32 = 100;
/// The first back-off after tokens.make attempts that never left this machine, in seconds.
pub const OFFLINE_BACKOFF_FIRST_SECS: i64 = 1;
/// The longest back-off after tokens.make attempts that never left this machine, in seconds.
pub const OFFLINE_BACKOFF_MAX_SECS: i64 = 60;

/// The tunable numbers of the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// A token is treated as ended this many seconds before its end time (default 60), so a
    /// request never leaves with a token that dies on the way.
    pub expiry_margin_secs: i64,
    /// Refresh on use when the refresh token has less than this left (default one day), so an
    /// active application never falls back to make.
    pub refresh_ahead_secs: i64,
    /// Makes allowed in any 24 h (default 100).
    pub make_limit: u32,
    /// Makes of the limit kept back for other clients or a human (default 0).
    pub make_reserve: u32,
    /// How long tokens.make is not asked again after the server refused it with HTTP 429
    /// (default one hour); it doubles with each further 429, up to
    /// [`make_cooldown_max_secs`](Self::make_cooldown_max_secs).
    pub make_cooldown_secs: i64,
    /// The longest cooldown after repeated 429s on tokens.make (default 24 h).
    pub make_cooldown_max_secs: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            expiry_margin_secs: 60,
            refresh_ahead_secs: 24 * 60 * 60,
            make_limit: DEFAULT_MAKE_LIMIT,
            make_reserve: 0,
            make_cooldown_secs: 60 * 60,
            make_cooldown_max_secs: 24 * 60 * 60,
        }
    }
}

/// What to do to have a usable pair; each action carries what it acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// The stored pair can be used as it is.
    Use(&'a TokenPair),
    /// Call tokens.refresh with this refresh token.
    Refresh(&'a RefreshToken),
    /// Call tokens.make with these credentials.
    Make(&'a Credentials),
    /// Nothing may be done: say why.
    Fail(Blocked),
}

/// Why no pair can be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// A make is needed and no credentials were given.
    NoCredentials,
    /// A make is needed and the quota is used up, or the server's 429 cooldown runs.
    Quota(Quota),
}

/// The state of the make quota at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Makes counted in the last 24 h (entries from the future included).
    pub used: u32,
    /// Makes allowed in 24 h for this client (the limit less the reserve).
    pub allowed: u32,
    /// When the next make is allowed (unix seconds), if one is not allowed now: when enough
    /// entries leave the window, or when the server's 429 cooldown ends, whichever is later.
    pub next_make_at: Option<i64>,
}

/// What the situation is when [`Policy::decide`] is asked. Times are on the server's clock.
#[derive(Clone, Copy, Debug)]
pub struct Situation<'a> {
    /// The current time on the server's clock, unix seconds.
    pub now: i64,
    /// The pair in the store right now (reloaded under the lock).
    pub stored: Option<&'a TokenPair>,
    /// When the stored pair arrived, on the server's clock, when known.
    pub issued_at: Option<i64>,
    /// The access token the server just refused, if that is why we are here.
    pub rejected_access: Option<&'a AccessToken>,
    /// Whether tokens.refresh just refused the stored refresh token (after a reload).
    pub refresh_rejected: bool,
    /// The credentials, when given.
    pub credentials: Option<&'a Credentials>,
    /// The make ledger (server-clock unix seconds of each make that may have been sent).
    pub makes: &'a [i64],
    /// The cooldown a server's 429 on tokens.make set, if any.
    pub cooldown: Option<&'a Cooldown>,
}

/// How a refusal from the server is to be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The token used is dead (`ApiInvalidTokenError`, whatever the status, or a bare 401).
    InvalidToken,
    /// HTTP 429: too many requests (on tokens.make: the make quota).
    RateLimited,
    /// HTTP 5xx: the server failed; nothing is known about the token.
    Server,
    /// Any other refusal: the request (or the credentials, or the refresh token) is wrong.
    Rejected,
}

/// Classifies a refusal by the error code `ApiInvalidTokenError` first (whatever the status),
/// then by status: a bare 401 is an invalid token, 429 rate, 5xx server, the rest rejected.
pub fn classify(refusal: &ApiError) -> Refusal {
    match (refusal.code.as_deref(), refusal.status) {
        (Some(INVALID_TOKEN_CODE), _) => Refusal::InvalidToken,
        (_, 429) => Refusal::RateLimited,
        (_, 500..=599) => Refusal::Server,
        (None, 401) => Refusal::InvalidToken,
        _ => Refusal::Rejected,
    }
}

/// How long tokens.make waits after `failures` attempts in a row that never left this
/// machine: 1 s, doubling, at most 60 s.
pub fn offline_backoff_secs(failures: u32) -> i64 {
    let doublings = failures.saturating_sub(1).min(30);
    OFFLINE_BACKOFF_FIRST_SECS
        .saturating_mul(1_i64 << doublings)
        .min(OFFLINE_BACKOFF_MAX_SECS)
}

impl Policy {
    /// Whether the access token of `pair` may be sent at `now` by its end time alone.
    pub fn access_usable(&self, now: i64, pair: &TokenPair) -> bool {
        now < pair
            .access_expires_at
            .saturating_sub(self.expiry_margin_secs)
    }

    /// Whether the refresh token of `pair` ends soon enough that it should be renewed on use.
    pub fn refresh_due(&self, now: i64, pair: &TokenPair) -> bool {
        pair.refresh_expires_at.saturating_sub(now) < self.refresh_ahead_secs
    }

    /// Whether the end times of a pair that arrived at `issued_at` can be believed: a pair
    /// whose access token had already ended when it arrived (no `Date` to learn the server's
    /// clock from, lifetimes sent instead of end times, a broken clock) is used until the
    /// server refuses it instead.
    pub fn end_times_trusted(&self, pair: &TokenPair, issued_at: Option<i64>) -> bool {
        issued_at.is_none_or(|at| self.access_usable(at, pair))
    }

    /// Whether `pair`, which arrived at `issued_at`, can be handed out at `now` with no auth
    /// call: the fast path.
    pub fn usable(&self, now: i64, pair: &TokenPair, issued_at: Option<i64>) -> bool {
        now < self.usable_until(pair, issued_at)
    }

    /// The first moment (server-clock unix seconds) at which `pair`, which arrived at
    /// `issued_at`, is no longer [`usable`](Self::usable):
    /// - never, when its end times are not [trusted](Self::end_times_trusted): only the
    ///   server's refusal ends it;
    /// - when its access token ends (less the margin), if its refresh token was already
    ///   [due](Self::refresh_due) when it arrived (a server whose refresh tokens are short or
    ///   not extended on refresh: another refresh would bring no longer one);
    /// - otherwise when its access token ends or its refresh token becomes due, whichever
    ///   comes first.
    ///
    /// It depends only on what is stored, so every process sharing a store decides alike.
    pub fn usable_until(&self, pair: &TokenPair, issued_at: Option<i64>) -> i64 {
        if !self.end_times_trusted(pair, issued_at) {
            return i64::MAX;
        }
        let access_end = pair
            .access_expires_at
            .saturating_sub(self.expiry_margin_secs);
        if issued_at.is_some_and(|at| self.refresh_due(at, pair)) {
            return access_end;
        }
        // refresh_due(now) is `refresh_expires_at - now < refresh_ahead_secs`.
        let refresh_due_at = pair
            .refresh_expires_at
            .saturating_sub(self.refresh_ahead_secs)
            .saturating_add(1);
        access_end.min(refresh_due_at)
    }

    /// The state of the quota at `now` given the make ledger and any 429 cooldown. Entries
    /// from the future (a clock that moved back) count: they are makes all the same.
    pub fn quota(&self, now: i64, makes: &[i64], cooldown: Option<&Cooldown>) -> Quota {
        let start = now.saturating_sub(QUOTA_WINDOW_SECS);
        let mut counted: Vec<i64> = makes.iter().copied().filter(|&t| t > start).collect();
        counted.sort_unstable();
        let used = u32::try_from(counted.len()).unwrap_or(u32::MAX);
        let allowed = self.make_limit.saturating_sub(self.make_reserve);
        let by_ledger = if used < allowed {
            None
        } else {
            // The window must drop `used - allowed + 1` entries before a make is allowed.
            let index = (used - allowed) as usize;
            Some(
                counted
                    .get(index)
                    .map_or(now, |&t| t.saturating_add(QUOTA_WINDOW_SECS)),
            )
        };
        let by_cooldown = cooldown.map(|c| c.until).filter(|&until| until > now);
        Quota {
            used,
            allowed,
            next_make_at: by_ledger.max(by_cooldown),
        }
    }

    /// Trims the ledger to the newest `make_limit` entries, whatever the clock says: no
    /// entry is ever dropped for its age alone, so a clock that jumps forward and back frees
    /// no make the server would refuse.
    pub fn prune(&self, makes: &mut Vec<i64>) {
        makes.sort_unstable();
        let keep = usize::try_from(self.make_limit).unwrap_or(usize::MAX);
        let excess = makes.len().saturating_sub(keep);
        makes.drain(..excess);
    }

    /// The cooldown after the server refused tokens.make with HTTP 429 at `now`: one
    /// [`make_cooldown_secs`](Self::make_cooldown_secs), doubling with each 429 since the last
    /// successful make, at most [`make_cooldown_max_secs`](Self::make_cooldown_max_secs).
    pub fn cooldown_after_429(&self, now: i64, previous: Option<&Cooldown>) -> Cooldown {
        let strikes = previous.map_or(0, |c| c.strikes).saturating_add(1);
        let doublings = (strikes - 1).min(40);
        let length = self
            .make_cooldown_secs
            .max(0)
            .saturating_mul(1_i64 << doublings)
            .min(self.make_cooldown_max_secs.max(self.make_cooldown_secs));
        Cooldown {
            until: now.saturating_add(length),
            strikes,
        }
    }

    /// What to do in `situation`: use the stored pair, refresh, make, or fail.
    ///
    /// A stored refresh token is always tried before a make, whatever its end time says: a
    /// refresh costs no quota, and only the server knows whether it is dead.
    pub fn decide<'a>(&self, situation: &Situation<'a>) -> Action<'a> {
        if let Some(pair) = situation.stored {
            let rejected = situation.rejected_access == Some(&pair.access);
            if !rejected && self.usable(situation.now, pair, situation.issued_at) {
                return Action::Use(pair);
            }
            if !situation.refresh_rejected {
                return Action::Refresh(&pair.refresh);
            }
        }
        let Some(credentials) = situation.credentials else {
            return Action::Fail(Blocked::NoCredentials);
        };
        let quota = self.quota(situation.now, situation.makes, situation.cooldown);
        if quota.next_make_at.is_some() {
            return Action::Fail(Blocked::Quota(quota));
        }
        Action::Make(credentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Endpoint;

    const DAY: i64 = 86_400;
    const T0: i64 = 1_700_000_000;

    fn pair(access: &str, access_end: i64, refresh_end: i64) -> TokenPair {
        TokenPair {
            access: AccessToken::new(access),
            access_expires_at: access_end,
            refresh: RefreshToken::new(format!("r-{access}")),
            refresh_expires_at: refresh_end,
            cabinet_user_id: 1,
        }
    }

    fn creds() -> Credentials {
        Credentials::new("a@b.c", "pw", "app_1")
    }

    fn situation<'a>(
        now: i64,
        stored: Option<&'a TokenPair>,
        makes: &'a [i64],
        credentials: &'a Credentials,
    ) -> Situation<'a> {
        Situation {
            now,
            stored,
            issued_at: None,
            rejected_access: None,
            refresh_rejected: false,
            credentials: Some(credentials),
            makes,
            cooldown: None,
        }
    }

    #[test]
    fn freshness_table() {
        let p = Policy::default();
        let fresh = pair("a", T0 + DAY, T0 + 14 * DAY);
        for (now, usable) in [
            (T0, true),
            (T0 + DAY - 61, true),
            (T0 + DAY - 60, false),
            (T0 + DAY, false),
            (T0 + 2 * DAY, false),
        ] {
            assert_eq!(p.access_usable(now, &fresh), usable, "T0 + {}", now - T0);
            assert_eq!(p.usable(now, &fresh, Some(T0)), usable, "T0 + {}", now - T0);
        }
        assert!(!p.refresh_due(T0, &fresh));
        assert!(p.refresh_due(T0 + 13 * DAY + 1, &fresh));
    }

    #[test]
    fn end_times_that_ended_on_arrival_are_not_trusted() {
        let p = Policy::default();
        // Lifetimes sent as end times: "86400" is 1970.
        let lifetimes = pair("a", DAY, 14 * DAY);
        assert!(!p.end_times_trusted(&lifetimes, Some(T0)));
        assert_eq!(p.usable_until(&lifetimes, Some(T0)), i64::MAX);
        assert!(p.usable(T0 + 30 * DAY, &lifetimes, Some(T0)));
        // A pair that arrived 25 h after its access end (a clock a day off, no Date).
        let skewed = pair("a", T0 + DAY, T0 + 14 * DAY);
        assert!(!p.end_times_trusted(&skewed, Some(T0 + DAY + 3_600)));
        // Unknown arrival (an old record): trusted, as before.
        assert!(p.end_times_trusted(&skewed, None));
        assert!(!p.usable(T0 + DAY, &skewed, None));
    }

    #[test]
    fn a_pair_that_arrived_due_is_used_until_its_access_ends() {
        let p = Policy::default();
        // The server's refresh tokens live 12 h: due from the start.
        let short = pair("a", T0 + 3_600, T0 + DAY / 2);
        assert!(p.refresh_due(T0, &short));
        assert_eq!(p.usable_until(&short, Some(T0)), T0 + 3_600 - 60);
        // Known to every process from the stored arrival time; unknown arrival: the old rule.
        assert_eq!(p.usable_until(&short, None), T0 + 1 - DAY / 2);
        // A long refresh token: the refresh-ahead rule applies.
        let long = pair("a", T0 + 20 * DAY, T0 + 14 * DAY);
        assert_eq!(p.usable_until(&long, Some(T0)), T0 + 13 * DAY + 1);
    }

    #[test]
    fn usable_until_is_where_the_access_and_refresh_rules_meet() {
        let custom = Policy {
            expiry_margin_secs: 0,
            refresh_ahead_secs: 3_600,
            ..Policy::default()
        };
        for p in [Policy::default(), custom] {
            for pair in [
                pair("a", T0 + DAY, T0 + 14 * DAY),
                pair("a", T0 + DAY, T0 + DAY / 2),
                pair("a", T0 + DAY, T0 + 2 * DAY - 61),
                pair("a", T0 - DAY, T0 + 14 * DAY),
                pair("a", i64::MAX, i64::MAX),
                pair("a", i64::MIN, i64::MIN),
            ] {
                let until = p.usable_until(&pair, None);
                let around = [until.saturating_sub(1), until, until.saturating_add(1)];
                for now in around.into_iter().chain([T0, T0 + DAY - 61, T0 + DAY - 60]) {
                    let by_rules = p.access_usable(now, &pair) && !p.refresh_due(now, &pair);
                    assert_eq!(p.usable(now, &pair, None), by_rules, "{p:?} {pair:?} {now}");
                }
                if until != i64::MIN {
                    assert!(p.usable(until - 1, &pair, None), "{p:?} {pair:?}");
                }
                assert!(!p.usable(until, &pair, None), "{p:?} {pair:?}");
            }
        }
    }

    #[test]
    fn decision_table() {
        let p = Policy::default();
        let c = creds();
        let live = pair("a", T0 + DAY, T0 + 14 * DAY);
        let access_over = pair("a", T0 - 1, T0 + 13 * DAY);
        let refresh_over = pair("a", T0 - DAY, T0 - 1);
        let refresh_ending = pair("a", T0 + DAY, T0 + DAY / 2);
        let none: [i64; 0] = [];
        let full: Vec<i64> = (0..100).map(|i| T0 - 1000 + i).collect();
        let cooling = Cooldown {
            until: T0 + 10,
            strikes: 1,
        };

        let base = |stored, makes| situation(T0, stored, makes, &c);
        let d = |s: Situation<'_>| format!("{:?}", p.decide(&s));
        let quota_fail = |next: i64| {
            format!(
                "{:?}",
                Action::Fail(Blocked::Quota(Quota {
                    used: 100,
                    allowed: 100,
                    next_make_at: Some(next),
                }))
            )
        };
        let cases: Vec<(&str, String, String)> = vec![
            (
                "nothing stored: make",
                d(base(None, &none)),
                format!("{:?}", Action::Make(&c)),
            ),
            (
                "live pair: use",
                d(base(Some(&live), &none)),
                format!("{:?}", Action::Use(&live)),
            ),
            (
                "access over: refresh",
                d(base(Some(&access_over), &none)),
                format!("{:?}", Action::Refresh(&access_over.refresh)),
            ),
            (
                "refresh ending: refresh",
                d(base(Some(&refresh_ending), &none)),
                format!("{:?}", Action::Refresh(&refresh_ending.refresh)),
            ),
            // The local clock never decides a make: a refresh token past its end is tried.
            (
                "both over: refresh, not make",
                d(base(Some(&refresh_over), &none)),
                format!("{:?}", Action::Refresh(&refresh_over.refresh)),
            ),
            (
                "refresh rejected: make",
                d(Situation {
                    refresh_rejected: true,
                    ..base(Some(&access_over), &none)
                }),
                format!("{:?}", Action::Make(&c)),
            ),
            (
                "nothing, no credentials",
                d(Situation {
                    credentials: None,
                    ..base(None, &none)
                }),
                format!("{:?}", Action::Fail(Blocked::NoCredentials)),
            ),
            (
                "refused, no credentials",
                d(Situation {
                    credentials: None,
                    refresh_rejected: true,
                    ..base(Some(&refresh_over), &none)
                }),
                format!("{:?}", Action::Fail(Blocked::NoCredentials)),
            ),
            (
                "live needs no credentials",
                d(Situation {
                    credentials: None,
                    ..base(Some(&live), &none)
                }),
                format!("{:?}", Action::Use(&live)),
            ),
            (
                "quota full: fail",
                d(base(None, &full)),
                quota_fail(T0 - 1000 + DAY),
            ),
            (
                "quota full, refresh possible",
                d(base(Some(&access_over), &full)),
                format!("{:?}", Action::Refresh(&access_over.refresh)),
            ),
            (
                "429 cooldown: fail",
                d(Situation {
                    cooldown: Some(&cooling),
                    ..base(None, &none)
                }),
                format!(
                    "{:?}",
                    Action::Fail(Blocked::Quota(Quota {
                        used: 0,
                        allowed: 100,
                        next_make_at: Some(T0 + 10)
                    }))
                ),
            ),
        ];
        for (name, got, expected) in cases {
            assert_eq!(got, expected, "{name}");
        }

        let dead = AccessToken::new("a");
        let other = AccessToken::new("zz");
        let mut s = situation(T0, Some(&live), &none, &c);
        s.rejected_access = Some(&dead);
        assert_eq!(p.decide(&s), Action::Refresh(&live.refresh));
        s.rejected_access = Some(&other);
        assert_eq!(p.decide(&s), Action::Use(&live));
    }

    #[test]
    fn quota_is_a_rolling_window_with_reserve() {
        let p = Policy::default();
        let makes: Vec<i64> = (0..100).map(|i| T0 + i).collect();
        let q = p.quota(T0 + 100, &makes, None);
        assert_eq!(
            (q.used, q.allowed, q.next_make_at),
            (100, 100, Some(T0 + DAY))
        );
        assert_eq!(p.quota(T0 + DAY, &makes, None).used, 99);
        assert_eq!(p.quota(T0 + DAY, &makes, None).next_make_at, None);
        assert_eq!(p.quota(T0 + DAY - 1, &makes, None).used, 100);
        assert_eq!(p.quota(T0 + 100, &makes[..99], None).next_make_at, None);
        let reserved = Policy {
            make_reserve: 10,
            ..Policy::default()
        };
        let q = reserved.quota(T0 + 100, &makes[..95], None);
        assert_eq!(
            (q.used, q.allowed, q.next_make_at),
            (95, 90, Some(T0 + 5 + DAY))
        );
        let nothing = Policy {
            make_reserve: 200,
            ..Policy::default()
        };
        assert_eq!(nothing.quota(T0, &[], None).next_make_at, Some(T0));
    }

    #[test]
    fn a_clock_that_jumps_frees_no_make() {
        let p = Policy::default();
        let makes: Vec<i64> = (0..100).map(|i| T0 + i).collect();
        // Stepped back an hour: every entry is "from the future", and every one counts.
        let back = p.quota(T0 - 3_600, &makes, None);
        assert_eq!(back.used, 100);
        assert_eq!(back.next_make_at, Some(T0 + DAY));
        // Forward two days: pruning keeps the newest `limit` entries whatever the clock says,
        // so once the clock is corrected the quota is as full as it was.
        let mut ledger = makes.clone();
        ledger.push(T0 - 5 * DAY);
        p.prune(&mut ledger);
        assert_eq!(ledger, makes);
        let corrected = p.quota(T0 + 200, &ledger, None);
        assert_eq!(corrected.used, 100);
        assert!(corrected.next_make_at.is_some());
        // A small limit keeps only that many, the newest.
        let two = Policy {
            make_limit: 2,
            ..Policy::default()
        };
        let mut ledger = vec![T0 + 50, T0 - 10, T0 + 5];
        two.prune(&mut ledger);
        assert_eq!(ledger, vec![T0 + 5, T0 + 50]);
    }

    #[test]
    fn cooldowns_double_up_to_the_cap() {
        let p = Policy::default();
        let mut previous = None;
        let mut lengths = Vec::new();
        for _ in 0..7 {
            let c = p.cooldown_after_429(T0, previous.as_ref());
            lengths.push(c.until - T0);
            previous = Some(c);
        }
        assert_eq!(
            lengths,
            vec![3_600, 7_200, 14_400, 28_800, 57_600, 86_400, 86_400]
        );
        assert_eq!(previous.map(|c| c.strikes), Some(7));
        let q = p.quota(T0 + 10, &[], previous.as_ref());
        assert_eq!(q.next_make_at, Some(T0 + DAY));
        assert_eq!(p.quota(T0 + DAY, &[], previous.as_ref()).next_make_at, None);
    }

    #[test]
    fn offline_backoff_doubles_to_a_minute() {
        let got: Vec<i64> = (1..=9).map(offline_backoff_secs).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(offline_backoff_secs(u32::MAX), 60);
    }

    #[test]
    fn refusal_table() {
        let r = |status, code: Option<&str>| {
            classify(&ApiError::new(
                Endpoint::Request,
                status,
                code.map(str::to_owned),
                None,
            ))
        };
        for status in [200, 400, 401, 403, 500] {
            assert_eq!(r(status, Some(INVALID_TOKEN_CODE)), Refusal::InvalidToken);
        }
        assert_eq!(r(401, None), Refusal::InvalidToken);
        assert_eq!(r(401, Some("ApiAuthError")), Refusal::Rejected);
        assert_eq!(r(403, None), Refusal::Rejected);
        assert_eq!(r(429, None), Refusal::RateLimited);
        assert_eq!(r(429, Some("TooMany")), Refusal::RateLimited);
        assert_eq!(r(500, None), Refusal::Server);
        assert_eq!(r(503, Some("X")), Refusal::Server);
        assert_eq!(r(404, Some("NotFound")), Refusal::Rejected);
        assert_eq!(r(200, Some("Weird")), Refusal::Rejected);
    }
}
