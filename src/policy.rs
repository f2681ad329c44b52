//! The refresh policy: pure decisions, no I/O. Every function takes `now` (unix seconds) as an
//! argument, so each rule is tested table by table.
//!
//! The rules follow ChatApp's guidance: use the saved access token until it is known dead (the
//! server said `ApiInvalidTokenError`, or its end time has passed); then refresh while the
//! refresh token lives; make only when no refresh token can be used, credentials were given
//! and the rolling 24 h make quota allows it. Nothing is ever refreshed on a timer.

use crate::error::ApiError;
use crate::token::{AccessToken, TokenPair};

/// The code ChatApp uses for a dead access token.
pub const INVALID_TOKEN_CODE: &str = "ApiInvalidTokenError";
/// The length of the make quota window.
pub const QUOTA_WINDOW_SECS: i64 = 24 * 60 * 60;
/// ChatApp's documented make limit per day per email+appId.
pub const DEFAULT_MAKE_LIMIT: u32 = 100;

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
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            expiry_margin_secs: 60,
            refresh_ahead_secs: 24 * 60 * 60,
            make_limit: DEFAULT_MAKE_LIMIT,
            make_reserve: 0,
        }
    }
}

/// What to do to have a usable pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The stored pair can be used as it is.
    Use,
    /// Call tokens.refresh with the stored refresh token.
    Refresh,
    /// Call tokens.make with the credentials.
    Make,
    /// Nothing may be done: say why.
    Fail(Blocked),
}

/// Why no pair can be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// A make is needed and no credentials were given.
    NoCredentials,
    /// A make is needed and the quota is used up.
    Quota(Quota),
}

/// The state of the make quota at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Makes in the last 24 h.
    pub used: u32,
    /// Makes allowed in 24 h for this client (the limit less the reserve).
    pub allowed: u32,
    /// When the next make is allowed (unix seconds), if one is not allowed now.
    pub next_make_at: Option<i64>,
}

/// What the situation is when [`Policy::decide`] is asked.
#[derive(Clone, Copy, Debug)]
pub struct Situation<'a> {
    /// The current time, unix seconds.
    pub now: i64,
    /// The pair in the store right now (reloaded under the lock).
    pub stored: Option<&'a TokenPair>,
    /// The access token the server just refused, if that is why we are here.
    pub rejected_access: Option<&'a AccessToken>,
    /// Whether tokens.refresh already refused the stored refresh token.
    pub refresh_rejected: bool,
    /// Whether credentials were given.
    pub has_credentials: bool,
    /// The make ledger (unix seconds of each make sent).
    pub makes: &'a [i64],
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

impl Policy {
    /// Whether the access token of `pair` may be sent at `now`.
    pub fn access_usable(&self, now: i64, pair: &TokenPair) -> bool {
        now < pair
            .access_expires_at
            .saturating_sub(self.expiry_margin_secs)
    }

    /// Whether the refresh token of `pair` may be sent at `now`.
    pub fn refresh_usable(&self, now: i64, pair: &TokenPair) -> bool {
        now < pair
            .refresh_expires_at
            .saturating_sub(self.expiry_margin_secs)
    }

    /// Whether the refresh token of `pair` ends soon enough that it should be renewed on use.
    pub fn refresh_due(&self, now: i64, pair: &TokenPair) -> bool {
        pair.refresh_expires_at.saturating_sub(now) < self.refresh_ahead_secs
    }

    /// Whether `pair` can be handed out at `now` with no auth call: the fast path.
    pub fn usable(&self, now: i64, pair: &TokenPair) -> bool {
        now < self.usable_until(pair)
    }

    /// The first moment (unix seconds) at which `pair` is no longer [`usable`](Self::usable):
    /// when its access token ends (less the margin), or when its refresh token starts to be
    /// [due](Self::refresh_due), whichever comes first.
    pub fn usable_until(&self, pair: &TokenPair) -> i64 {
        let access_end = pair
            .access_expires_at
            .saturating_sub(self.expiry_margin_secs);
        // refresh_due(now) is `refresh_expires_at - now < refresh_ahead_secs`.
        let refresh_due_at = pair
            .refresh_expires_at
            .saturating_sub(self.refresh_ahead_secs)
            .saturating_add(1);
        access_end.min(refresh_due_at)
    }

    /// [`usable_until`](Self::usable_until) for a pair the server issued at `now`. If its
    /// refresh token is already [due](Self::refresh_due) (a server whose refresh tokens live
    /// less than `refresh_ahead_secs`, or that does not extend them on refresh), another
    /// refresh would bring no longer one: such a pair is used until its access token ends,
    /// so that refreshing ahead never turns into a refresh on every call.
    pub fn fresh_usable_until(&self, now: i64, pair: &TokenPair) -> i64 {
        if self.refresh_due(now, pair) {
            pair.access_expires_at
                .saturating_sub(self.expiry_margin_secs)
        } else {
            self.usable_until(pair)
        }
    }

    /// The state of the quota at `now` given the make ledger.
    pub fn quota(&self, now: i64, makes: &[i64]) -> Quota {
        let start = now - QUOTA_WINDOW_SECS;
        let mut in_window: Vec<i64> = makes
            .iter()
            .copied()
            .filter(|&t| t > start && t <= now)
            .collect();
        in_window.sort_unstable();
        let used = u32::try_from(in_window.len()).unwrap_or(u32::MAX);
        let allowed = self.make_limit.saturating_sub(self.make_reserve);
        let next_make_at = if used < allowed {
            None
        } else {
            // The window must drop `used - allowed + 1` entries before a make is allowed.
            let index = (used - allowed) as usize;
            Some(in_window.get(index).map_or(now, |&t| t + QUOTA_WINDOW_SECS))
        };
        Quota {
            used,
            allowed,
            next_make_at,
        }
    }

    /// Drops ledger entries that can no longer count against the quota. Entries from the
    /// future (a clock moved back) are kept: they still count until they age out.
    pub fn prune(&self, now: i64, makes: &mut Vec<i64>) {
        let start = now - QUOTA_WINDOW_SECS;
        makes.retain(|&t| t > start);
        makes.sort_unstable();
    }

    /// What to do in `situation`: use the stored pair, refresh, make, or fail.
    pub fn decide(&self, situation: &Situation<'_>) -> Action {
        let now = situation.now;
        if let Some(pair) = situation.stored {
            let rejected = situation.rejected_access == Some(&pair.access);
            if !rejected && self.usable(now, pair) {
                return Action::Use;
            }
            if !situation.refresh_rejected && self.refresh_usable(now, pair) {
                return Action::Refresh;
            }
        }
        if !situation.has_credentials {
            return Action::Fail(Blocked::NoCredentials);
        }
        let quota = self.quota(now, situation.makes);
        if quota.next_make_at.is_some() {
            return Action::Fail(Blocked::Quota(quota));
        }
        Action::Make
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Endpoint;
    use crate::token::RefreshToken;

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

    fn situation<'a>(now: i64, stored: Option<&'a TokenPair>, makes: &'a [i64]) -> Situation<'a> {
        Situation {
            now,
            stored,
            rejected_access: None,
            refresh_rejected: false,
            has_credentials: true,
            makes,
        }
    }

    #[test]
    fn freshness_table() {
        let p = Policy::default();
        let fresh = pair("a", T0 + DAY, T0 + 14 * DAY);
        // (now, expected usable)
        for (now, usable) in [
            (T0, true),
            (T0 + DAY - 61, true),
            (T0 + DAY - 60, false),
            (T0 + DAY, false),
            (T0 + 2 * DAY, false),
        ] {
            assert_eq!(
                p.access_usable(now, &fresh),
                usable,
                "now = T0 + {}",
                now - T0
            );
        }
        assert!(!p.refresh_due(T0, &fresh));
        assert!(p.refresh_due(T0 + 13 * DAY + 1, &fresh));
        let custom = Policy {
            expiry_margin_secs: 0,
            ..Policy::default()
        };
        assert!(custom.access_usable(T0 + DAY - 1, &fresh));
        assert!(!custom.access_usable(T0 + DAY, &fresh));
    }

    #[test]
    fn a_fresh_pair_already_due_is_used_until_its_access_ends() {
        let p = Policy::default();
        // The server's refresh tokens live 12 h: due from the start.
        let short = pair("a", T0 + 3_600, T0 + DAY / 2);
        assert!(p.refresh_due(T0, &short));
        assert_eq!(p.usable_until(&short), T0 + 1 - DAY / 2);
        assert_eq!(p.fresh_usable_until(T0, &short), T0 + 3_600 - 60);
        // A fresh pair with a long refresh token: the ordinary rule.
        let long = pair("a", T0 + DAY, T0 + 14 * DAY);
        assert_eq!(p.fresh_usable_until(T0, &long), p.usable_until(&long));
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
                pair("a", T0 + DAY, T0 + 14 * DAY), // the access end comes first
                pair("a", T0 + DAY, T0 + DAY / 2),  // the refresh rule comes first
                pair("a", T0 + DAY, T0 + 2 * DAY - 61), // both at one second (default policy)
                pair("a", T0 - DAY, T0 + 14 * DAY), // already over
                pair("a", i64::MAX, i64::MAX),      // never
                pair("a", i64::MIN, i64::MIN),      // always over
            ] {
                let until = p.usable_until(&pair);
                let around = [until.saturating_sub(1), until, until.saturating_add(1)];
                for now in around.into_iter().chain([T0, T0 + DAY - 61, T0 + DAY - 60]) {
                    let by_rules = p.access_usable(now, &pair) && !p.refresh_due(now, &pair);
                    assert_eq!(p.usable(now, &pair), by_rules, "{p:?} {pair:?} now {now}");
                }
                if until != i64::MIN {
                    assert!(p.usable(until - 1, &pair), "{p:?} {pair:?}");
                }
                assert!(!p.usable(until, &pair), "{p:?} {pair:?}");
            }
        }
    }

    #[test]
    fn decision_table() {
        let p = Policy::default();
        let live = pair("a", T0 + DAY, T0 + 14 * DAY);
        let access_over = pair("a", T0 - 1, T0 + 13 * DAY);
        let refresh_over = pair("a", T0 - DAY, T0 - 1);
        let refresh_ending = pair("a", T0 + DAY, T0 + DAY / 2);
        let dead = AccessToken::new("a");
        let other = AccessToken::new("zz");
        let none: [i64; 0] = [];
        let full: Vec<i64> = (0..100).map(|i| T0 - 1000 + i).collect();

        type Tweak = fn(&mut Situation<'_>);
        type Case<'a> = (&'a str, Option<&'a TokenPair>, &'a [i64], Tweak, Action);
        let cases: Vec<Case<'_>> = vec![
            ("nothing stored: make", None, &none, |_| {}, Action::Make),
            ("live pair: use", Some(&live), &none, |_| {}, Action::Use),
            (
                "access past its end: refresh",
                Some(&access_over),
                &none,
                |_| {},
                Action::Refresh,
            ),
            (
                "refresh token ending within a day: refresh",
                Some(&refresh_ending),
                &none,
                |_| {},
                Action::Refresh,
            ),
            (
                "both past their end: make",
                Some(&refresh_over),
                &none,
                |_| {},
                Action::Make,
            ),
            (
                "refresh rejected: make",
                Some(&access_over),
                &none,
                |s| s.refresh_rejected = true,
                Action::Make,
            ),
            (
                "nothing stored, no credentials",
                None,
                &none,
                |s| s.has_credentials = false,
                Action::Fail(Blocked::NoCredentials),
            ),
            (
                "dead refresh, no credentials",
                Some(&refresh_over),
                &none,
                |s| s.has_credentials = false,
                Action::Fail(Blocked::NoCredentials),
            ),
            (
                "live pair needs no credentials",
                Some(&live),
                &none,
                |s| s.has_credentials = false,
                Action::Use,
            ),
            (
                "quota full: fail",
                None,
                &full,
                |_| {},
                Action::Fail(Blocked::Quota(Quota {
                    used: 100,
                    allowed: 100,
                    next_make_at: Some(T0 - 1000 + DAY),
                })),
            ),
            (
                "quota full but refresh possible",
                Some(&access_over),
                &full,
                |_| {},
                Action::Refresh,
            ),
        ];
        for (name, stored, makes, tweak, expected) in cases {
            let mut s = situation(T0, stored, makes);
            tweak(&mut s);
            assert_eq!(p.decide(&s), expected, "{name}");
        }

        // The server refused exactly the stored access token: refresh even though its end
        // time has not come.
        let mut s = situation(T0, Some(&live), &none);
        s.rejected_access = Some(&dead);
        assert_eq!(p.decide(&s), Action::Refresh);
        // Another process already replaced the refused token: adopt the stored one.
        s.rejected_access = Some(&other);
        assert_eq!(p.decide(&s), Action::Use);
    }

    #[test]
    fn quota_is_a_rolling_window_with_reserve() {
        let p = Policy::default();
        let makes: Vec<i64> = (0..100).map(|i| T0 + i).collect();
        let q = p.quota(T0 + 100, &makes);
        assert_eq!(
            (q.used, q.allowed, q.next_make_at),
            (100, 100, Some(T0 + DAY))
        );
        // The first make leaves the window exactly 24 h later.
        assert_eq!(p.quota(T0 + DAY, &makes).used, 99);
        assert_eq!(p.quota(T0 + DAY, &makes).next_make_at, None);
        assert_eq!(p.quota(T0 + DAY - 1, &makes).used, 100);
        // 99 makes: one left.
        assert_eq!(p.quota(T0 + 100, &makes[..99]).next_make_at, None);
        // A reserve of 10 stops at 90, and the next slot opens when the 11th-from-last ages out.
        let reserved = Policy {
            make_reserve: 10,
            ..Policy::default()
        };
        let q = reserved.quota(T0 + 100, &makes[..95]);
        assert_eq!(
            (q.used, q.allowed, q.next_make_at),
            (95, 90, Some(T0 + 5 + DAY))
        );
        // A reserve larger than the limit allows nothing.
        let none = Policy {
            make_reserve: 200,
            ..Policy::default()
        };
        assert_eq!(none.quota(T0, &[]).next_make_at, Some(T0));
        // Old entries are pruned, future ones (clock moved back) kept.
        let mut ledger = vec![T0 - 2 * DAY, T0 - 10, T0 + 50];
        p.prune(T0, &mut ledger);
        assert_eq!(ledger, vec![T0 - 10, T0 + 50]);
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
