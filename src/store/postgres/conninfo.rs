//! The libpq connection string, read just enough to pick the TLS mode, to hand the rest to
//! `postgres::Config`, and to show it without its password.
//!
//! Both libpq forms are accepted:
//! - `key=value` pairs separated by spaces, a value in single quotes when it holds spaces,
//!   `\'` and `\\` escaping inside (`host=db.example port=5432 user=app password='a b'`);
//! - a URL, `postgres[ql]://[user[:password]@][host][:port][,...][/dbname][?key=value&...]`.
//!
//! The keys handled here and removed before `postgres::Config` parses the rest: `sslmode`
//! (`disable`, `allow`: no TLS; `prefer` or none: TLS if the server offers it, unverified, as
//! libpq; `require`, `verify-ca`, `verify-full`: TLS with the server certificate verified;
//! `PGSSLMODE` when the string has none) and `sslrootcert` (a PEM file of trusted CAs for TLS;
//! `system`, or no `sslrootcert`, means the Mozilla roots of `webpki-roots`).
//!
//! No error message quotes a value: a conninfo may hold a password.

use std::fmt::Write as _;
use std::path::PathBuf;

use zeroize::Zeroizing;

/// How to secure the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tls {
    /// A plain connection (`disable`, `allow`).
    Off,
    /// TLS when the server offers it, else a plain connection, as libpq's `prefer` (and no
    /// `sslmode`): the certificate is not verified, so it guards against eavesdropping only.
    Prefer,
    /// TLS, the server's certificate chain and name verified (`require`, `verify-ca`,
    /// `verify-full`).
    Verify {
        /// `sslrootcert`: a PEM file of trusted CAs; `None` for the Mozilla roots.
        root_cert: Option<PathBuf>,
    },
}

/// A connection string taken apart.
pub(crate) struct Conninfo {
    /// What `postgres::Config` parses: the connection string less `sslmode` and `sslrootcert`.
    pub(crate) config_text: Zeroizing<String>,
    /// The TLS choice.
    pub(crate) tls: Tls,
    /// The connection string as written, every password replaced by `[redacted]`.
    pub(crate) redacted: String,
}

/// What stands in for a password when a conninfo is shown.
pub(crate) const REDACTED: &str = "[redacted]";

/// Reads `text` (either form).
///
/// # Errors
/// A message (quoting no value) when the text is not a connection string or names an
/// unknown `sslmode`.
pub(crate) fn parse(text: &str) -> Result<Conninfo, String> {
    let text = text.trim();
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = text.strip_prefix(scheme) {
            return parse_url(scheme, rest);
        }
    }
    parse_pairs(text)
}

/// The `key=value` form.
fn parse_pairs(text: &str) -> Result<Conninfo, String> {
    // A key given twice counts once, with its last value, as libpq reads it.
    let mut pairs: Vec<(String, Zeroizing<String>)> = Vec::new();
    for (key, value) in tokenize(text)? {
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(pair) => pair.1 = value,
            None => pairs.push((key, value)),
        }
    }
    let mut sslmode = None;
    let mut root_cert = None;
    let mut config_text = Zeroizing::new(String::with_capacity(text.len() + 16));
    let mut redacted = String::new();
    for (key, value) in &pairs {
        if !redacted.is_empty() {
            redacted.push(' ');
        }
        if key.as_str() == "password" {
            let _ = write!(redacted, "password={REDACTED}");
        } else {
            let _ = write!(redacted, "{key}={}", shown(value));
        }
        match key.as_str() {
            "sslmode" => sslmode = Some(value.as_str().to_owned()),
            "sslrootcert" => root_cert = Some(value.as_str().to_owned()),
            _ => {
                if !config_text.is_empty() {
                    config_text.push(' ');
                }
                config_text.push_str(key);
                config_text.push_str("='");
                for c in value.chars() {
                    if c == '\\' || c == '\'' {
                        config_text.push('\\');
                    }
                    config_text.push(c);
                }
                config_text.push('\'');
            }
        }
    }
    Ok(Conninfo {
        config_text,
        tls: tls_mode(sslmode.as_deref(), root_cert)?,
        redacted,
    })
}

/// The URL form; `rest` follows the scheme.
fn parse_url(scheme: &str, rest: &str) -> Result<Conninfo, String> {
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, query),
        None => (rest, ""),
    };
    let mut sslmode = None;
    let mut root_cert = None;
    let mut kept: Vec<&str> = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = param.split_once('=') else {
            return Err("a URL parameter has no `=`".to_owned());
        };
        match percent_decode(key).as_str() {
            "sslmode" => sslmode = Some(percent_decode(value).as_str().to_owned()),
            "sslrootcert" => root_cert = Some(percent_decode(value).as_str().to_owned()),
            _ => kept.push(param),
        }
    }
    let mut config_text = Zeroizing::new(format!("{scheme}{base}"));
    if !kept.is_empty() {
        config_text.push('?');
        config_text.push_str(&kept.join("&"));
    }
    // Like `postgres::Config`, the credentials end at the first `@`, and a password follows
    // the first `:` in them.
    let redacted = match rest.split_once('@') {
        Some((credentials, after)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}{user}:{REDACTED}@{}", redact_query(after)),
            None => format!("{scheme}{credentials}@{}", redact_query(after)),
        },
        None => format!("{scheme}{}", redact_query(rest)),
    };
    Ok(Conninfo {
        config_text,
        tls: tls_mode(sslmode.as_deref(), root_cert)?,
        redacted,
    })
}

/// `text` with the value of every `password` parameter after its `?` redacted.
fn redact_query(text: &str) -> String {
    let Some((base, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if percent_decode(key).as_str() == "password" => {
                format!("{key}={REDACTED}")
            }
            _ => param.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// The TLS choice of an `sslmode` and `sslrootcert`.
/// `PGSSLMODE` and `PGSSLROOTCERT` stand in for what the connection string leaves out.
fn tls_mode(sslmode: Option<&str>, root_cert: Option<String>) -> Result<Tls, String> {
    let env_mode = std::env::var("PGSSLMODE").ok().filter(|v| !v.is_empty());
    let sslmode = sslmode.or(env_mode.as_deref());
    let root_cert = root_cert.or_else(|| {
        std::env::var("PGSSLROOTCERT")
            .ok()
            .filter(|v| !v.is_empty())
    });
    match sslmode {
        Some("disable" | "allow") => Ok(Tls::Off),
        None | Some("prefer") => Ok(Tls::Prefer),
        Some("require" | "verify-ca" | "verify-full") => Ok(Tls::Verify {
            root_cert: root_cert.filter(|p| p != "system").map(PathBuf::from),
        }),
        Some(_) => Err(
            "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full"
                .to_owned(),
        ),
    }
}

/// The `key=value` pairs of `text`, values unquoted and unescaped, as libpq reads them.
fn tokenize(text: &str) -> Result<Vec<(String, Zeroizing<String>)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            return Ok(pairs);
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if key.is_empty() || chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!(
                "expected `keyword=value` at byte {start} of the connection string"
            ));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = Zeroizing::new(String::new());
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("the value of `{key}` has no closing quote")),
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => {
                        if let Some((_, c)) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, c)) = chars.next() {
                        value.push(c);
                    }
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return Err(format!("`{key}` has no value"));
            }
        }
        pairs.push((key, value));
    }
}

/// A value as it can be written back in a `key=value` string.
fn shown(value: &str) -> String {
    if !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return value.to_owned();
    }
    let mut out = String::from("'");
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `%XX` sequences decoded (invalid ones kept as they are); invalid UTF-8 replaced.
fn percent_decode(text: &str) -> Zeroizing<String> {
    let bytes = text.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => match (hex(h), hex(l)) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    Zeroizing::new(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Conninfo {
        match parse(text) {
            Ok(c) => c,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn pairs_are_passed_on_quoted_and_sslmode_is_taken_out() {
        let c = ok("host=127.0.0.1 port = 5432 user=app password='p a\\'ss' dbname=db sslmode=require sslrootcert=/etc/ca.pem");
        assert_eq!(
            c.config_text.as_str(),
            r"host='127.0.0.1' port='5432' user='app' password='p a\'ss' dbname='db'"
        );
        assert_eq!(
            c.tls,
            Tls::Verify {
                root_cert: Some(PathBuf::from("/etc/ca.pem"))
            }
        );
        assert_eq!(
            c.redacted,
            "host=127.0.0.1 port=5432 user=app password=[redacted] dbname=db sslmode=require sslrootcert=/etc/ca.pem"
        );
        assert!(c.config_text.parse::<::postgres::Config>().is_ok());
    }

    #[test]
    fn a_repeated_key_takes_its_last_value() {
        let c = ok("host=a port=1 host=b password=x password=y");
        assert_eq!(c.config_text.as_str(), "host='b' port='1' password='y'");
        assert_eq!(c.redacted, "host=b port=1 password=[redacted]");
        assert_eq!(ok("sslmode=require sslmode=disable").tls, Tls::Off);
    }

    #[test]
    fn tls_modes() {
        for (mode, tls) in [
            ("", Tls::Prefer),
            (" sslmode=disable", Tls::Off),
            (" sslmode=allow", Tls::Off),
            (" sslmode=prefer", Tls::Prefer),
            (" sslmode=require", Tls::Verify { root_cert: None }),
            (" sslmode=verify-ca", Tls::Verify { root_cert: None }),
            (
                " sslmode=verify-full sslrootcert=system",
                Tls::Verify { root_cert: None },
            ),
        ] {
            assert_eq!(ok(&format!("host=h{mode}")).tls, tls, "{mode}");
        }
        let e = parse("host=h sslmode=bogus password=SECRET").err();
        assert!(e.is_some_and(|e| e.contains("sslmode") && !e.contains("bogus")));
    }

    #[test]
    fn urls_keep_their_form_and_lose_their_password_when_shown() {
        let c = ok("postgresql://app:s%40cret@db.example:6543/tokens?sslmode=verify-full&application_name=x&password=SECRET2");
        assert_eq!(
            c.config_text.as_str(),
            "postgresql://app:s%40cret@db.example:6543/tokens?application_name=x&password=SECRET2"
        );
        assert_eq!(c.tls, Tls::Verify { root_cert: None });
        assert_eq!(
            c.redacted,
            "postgresql://app:[redacted]@db.example:6543/tokens?sslmode=verify-full&application_name=x&password=[redacted]"
        );
        assert!(c.config_text.parse::<::postgres::Config>().is_ok());

        let c = ok("postgres://app@db/tokens");
        assert_eq!(c.redacted, "postgres://app@db/tokens");
        assert_eq!(c.tls, Tls::Prefer);
        let c = ok("postgres://db:5432/tokens?sslrootcert=%2Fetc%2Fca.pem&sslmode=require");
        assert_eq!(c.config_text.as_str(), "postgres://db:5432/tokens");
        assert_eq!(
            c.tls,
            Tls::Verify {
                root_cert: Some(PathBuf::from("/etc/ca.pem"))
            }
        );
        // An `@` only in the query: the parser takes what precedes it as credentials.
        let c = ok("postgres://h:SECRET/db?user=a@b");
        assert_eq!(c.redacted, "postgres://h:[redacted]@b");
    }

    #[test]
    fn malformed_strings_are_refused_without_quoting_values() {
        for bad in [
            "host=h password='SECRET",
            "host=h password=",
            "SECRET",
            "host=h =SECRET",
            "postgres://h/db?SECRET",
        ] {
            match parse(bad) {
                Err(e) => assert!(!e.contains("SECRET"), "{bad}: {e}"),
                Ok(c) => panic!("{bad}: parsed as {}", c.redacted),
            }
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%zz%4").as_str(), "a/b%zz%4");
    }
}
