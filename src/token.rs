//! The token pair and the secret newtypes that carry it.
//!
//! Secrets (`AccessToken`, `RefreshToken`, `Password`) print `[redacted]` in `Debug`, have no
//! `Display`, and are zeroized when the last copy is dropped. An access token is an `Arc`
//! inside, so handing one to every request costs a reference-count increment, not a copy.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// Shared, zeroize-on-drop storage for one secret string.
#[derive(Clone)]
struct Secret(Arc<Zeroizing<String>>);

impl Secret {
    fn new(value: impl Into<String>) -> Self {
        Secret(Arc::new(Zeroizing::new(value.into())))
    }

    fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || constant_time_eq(self.expose(), other.expose())
    }
}

impl Eq for Secret {}

/// Compares two strings without stopping at the first difference.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Secret);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                $name(Secret::new(value))
            }

            /// The secret itself.
            ///
            /// # Security
            /// The returned string is the live secret: do not log it, print it or keep
            /// copies of it longer than needed.
            pub fn expose_secret(&self) -> &str {
                self.0.expose()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_type!(
    /// A ChatApp access token: sent raw in `Authorization` on every authenticated call.
    AccessToken
);
secret_type!(
    /// A ChatApp refresh token: sent in the `Refresh` header of tokens.refresh.
    RefreshToken
);
secret_type!(
    /// The password of a ChatApp account, sent only to tokens.make.
    Password
);

/// The token pair ChatApp hands out, with the end times the server gave (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPair {
    /// The access token (lives 24 h on the real server).
    pub access: AccessToken,
    /// When the access token ends, unix seconds, as the server said.
    pub access_expires_at: i64,
    /// The refresh token (lives 14 days on the real server).
    pub refresh: RefreshToken,
    /// When the refresh token ends, unix seconds, as the server said.
    pub refresh_expires_at: i64,
    /// The ChatApp cabinet user the pair belongs to.
    pub cabinet_user_id: i64,
}

/// What tokens.make needs: the account's email and password, and the application id.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    email: String,
    password: Password,
    app_id: String,
}

impl Credentials {
    /// Credentials for tokens.make.
    pub fn new(
        email: impl Into<String>,
        password: impl Into<String>,
        app_id: impl Into<String>,
    ) -> Self {
        Credentials {
            email: email.into(),
            password: Password::new(password),
            app_id: app_id.into(),
        }
    }

    /// The account's email.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// The account's password.
    pub fn password(&self) -> &Password {
        &self.password
    }

    /// The application id (`appId`), e.g. `app_4242_1`.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .field("password", &self.password)
            .field("app_id", &self.app_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let pair = TokenPair {
            access: AccessToken::new("acc-SECRET-1"),
            access_expires_at: 1,
            refresh: RefreshToken::new("ref-SECRET-2"),
            refresh_expires_at: 2,
            cabinet_user_id: 3,
        };
        let creds = Credentials::new("a@b.c", "pw-SECRET-3", "app_1");
        let text = format!("{pair:?} {pair:#?} {creds:?} {creds:#?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("AccessToken([redacted])"));
        assert!(text.contains("RefreshToken([redacted])"));
        assert!(text.contains("Password([redacted])"));
    }

    #[test]
    fn clones_share_one_allocation_and_compare_by_value() {
        let a = AccessToken::new("x".repeat(60));
        let b = a.clone();
        assert!(std::ptr::eq(a.expose_secret(), b.expose_secret()));
        assert_eq!(a, AccessToken::new("x".repeat(60)));
        assert_ne!(a, AccessToken::new("y".repeat(60)));
        assert_ne!(a, AccessToken::new("x"));
    }

    /// Zeroization on drop cannot be watched without `unsafe` (it would mean reading freed
    /// memory), which this crate forbids. What is checked instead: every secret type keeps its
    /// value in one `zeroize::Zeroizing<String>` (whose `Drop` zeroes the bytes) behind an
    /// `Arc` (so the last clone dropped zeroes it, and clones make no copies). `held_in` only
    /// compiles while that is the field's exact type; the value and the sharing are checked
    /// at run time.
    #[test]
    fn every_secret_is_held_in_a_zeroizing_string() {
        fn held_in(secret: &Secret) -> &Arc<Zeroizing<String>> {
            &secret.0
        }
        let access = AccessToken::new("access-value");
        let refresh = RefreshToken::new("refresh-value");
        let credentials = Credentials::new("a@b.c", "password-value", "app_1");
        for (secret, value) in [
            (&access.0, "access-value"),
            (&refresh.0, "refresh-value"),
            (&credentials.password().0, "password-value"),
        ] {
            let zeroizing: &Zeroizing<String> = held_in(secret);
            assert_eq!(zeroizing.as_str(), value);
        }
        let copy = access.clone();
        assert_eq!(Arc::strong_count(held_in(&access.0)), 2);
        assert!(Arc::ptr_eq(held_in(&access.0), held_in(&copy.0)));
        drop(copy);
        assert_eq!(Arc::strong_count(held_in(&access.0)), 1);
    }
}
