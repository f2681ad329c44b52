//! The libpq connection string: `postgres::Config` reads both of its forms (`key=value`
//! pairs, quoted values and escapes included, and `postgres[ql]://` URLs); this module takes
//! out beforehand only what `Config` refuses or reads otherwise than libpq:
//! - `sslmode`: `Config` knows `disable`, `prefer` and `require` only, and does not verify a
//!   certificate with any of them. Here: `disable`, `allow`: no TLS; `prefer` or none: TLS if
//!   the server offers it, unverified, as libpq; `require`, `verify-ca`, `verify-full`: TLS
//!   with the server certificate verified; `PGSSLMODE` when the string has none;
//! - `sslrootcert` (unknown to `Config`): a PEM file of trusted CAs; `system`, or none, means
//!   the Mozilla roots of `webpki-roots`; `PGSSLROOTCERT` when the string has none;
//! - a key given twice: libpq keeps the last value, `Config` would add a second host.
//!
//! The rest of libpq that `Config` lacks (the `PG*` variables, the password file) is in
//! [`libpq`](super::libpq). A store shows where it connects with [`shown`], built from the
//! parsed `Config`, never from the text: nothing secret can slip through. No error message
//! quotes a value: a conninfo may hold a password.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::PathBuf;

use ::postgres::config::Host;
use ::postgres::Config;
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
    /// What `postgres::Config` parses: the connection string less `sslmode`, `sslrootcert`
    /// and the earlier values of a repeated key.
    pub(crate) config_text: Zeroizing<String>,
    /// The TLS choice.
    pub(crate) tls: Tls,
    /// `sslmode` as given (or from `PGSSLMODE`), for [`shown`].
    pub(crate) sslmode: Option<String>,
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
    let is_url = ["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| text.starts_with(scheme));
    let params = if is_url {
        url_params(text)?
    } else {
        pairs(text)?
    };
    let mut sslmode = None;
    let mut root_cert = None;
    let mut config_text = Zeroizing::new(String::with_capacity(text.len()));
    let mut kept_from = 0;
    for (i, param) in params.iter().enumerate() {
        let repeated = params[i + 1..].iter().any(|later| later.key == param.key);
        match param.key.as_str() {
            "sslmode" if !repeated => sslmode = Some(param.value.as_str().to_owned()),
            "sslrootcert" if !repeated => root_cert = Some(param.value.as_str().to_owned()),
            _ if !repeated => continue,
            _ => {}
        }
        config_text.push_str(&text[kept_from..param.span.start]);
        kept_from = param.span.end;
    }
    config_text.push_str(&text[kept_from..]);
    if is_url {
        // What cutting parameters out of the query may leave: `?&a`, `a&&b`, `?` at the end.
        let cleaned = match config_text.split_once('?') {
            Some((base, query)) => {
                let query: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
                let mut cleaned = Zeroizing::new(base.to_owned());
                if !query.is_empty() {
                    cleaned.push('?');
                    cleaned.push_str(&query.join("&"));
                }
                cleaned
            }
            None => config_text,
        };
        config_text = cleaned;
    } else {
        let len = config_text.trim_end().len();
        config_text.truncate(len);
    }
    let sslmode = sslmode.or_else(|| env_var("PGSSLMODE"));
    let root_cert = root_cert.or_else(|| env_var("PGSSLROOTCERT"));
    Ok(Conninfo {
        config_text,
        tls: tls_mode(sslmode.as_deref(), root_cert)?,
        sslmode,
    })
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where `config` connects, as `key=value` pairs that hold no secret: the hosts, host
/// addresses, ports, user and database, `password=[redacted]` when there is a password, and
/// the TLS settings. For `Debug` and error messages; not a connection string to parse again.
pub(crate) fn shown(config: &Config, info: &Conninfo) -> String {
    let mut out = String::new();
    let mut field = |key: &str, value: &dyn std::fmt::Display| {
        let space = if out.is_empty() { "" } else { " " };
        let _ = write!(out, "{space}{key}={value}");
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        field("host", &hosts.join(","));
    }
    let addrs: Vec<String> = config
        .get_hostaddrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    if !addrs.is_empty() {
        field("hostaddr", &addrs.join(","));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        field("port", &ports.join(","));
    }
    if let Some(user) = config.get_user() {
        field("user", &user);
    }
    if let Some(dbname) = config.get_dbname() {
        field("dbname", &dbname);
    }
    if config.get_password().is_some() {
        field("password", &REDACTED);
    }
    if let Some(mode) = &info.sslmode {
        field("sslmode", mode);
    }
    if let Tls::Verify {
        root_cert: Some(path),
    } = &info.tls
    {
        field("sslrootcert", &path.display());
    }
    out
}

/// The TLS choice of an `sslmode` and `sslrootcert`.
fn tls_mode(sslmode: Option<&str>, root_cert: Option<String>) -> Result<Tls, String> {
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

/// One parameter of a connection string: its key, its value (unquoted, unescaped or
/// percent-decoded) and the bytes it spans in the text (with its `&` in a URL query).
struct Param {
    key: String,
    value: Zeroizing<String>,
    span: Range<usize>,
}

/// The parameters of a URL's query.
fn url_params(text: &str) -> Result<Vec<Param>, String> {
    let Some(start) = text.find('?').map(|i| i + 1) else {
        return Ok(Vec::new());
    };
    let mut params = Vec::new();
    let mut at = start;
    for param in text[start..].split('&') {
        let span = at..(at + param.len() + 1).min(text.len());
        at = span.end;
        if param.is_empty() {
            continue;
        }
        let Some((key, value)) = param.split_once('=') else {
            return Err("a URL parameter has no `=`".to_owned());
        };
        params.push(Param {
            key: percent_decode(key).as_str().to_owned(),
            value: percent_decode(value),
            span,
        });
    }
    Ok(params)
}

/// The `key=value` pairs of `text`, values unquoted and unescaped, as libpq reads them.
fn pairs(text: &str) -> Result<Vec<Param>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.char_indices().peekable();
    let space = |(_, c): &(usize, char)| c.is_whitespace();
    loop {
        while chars.next_if(space).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            return Ok(pairs);
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(space).is_some() {}
        if key.is_empty() || chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!(
                "expected `keyword=value` at byte {start} of the connection string"
            ));
        }
        while chars.next_if(space).is_some() {}
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = Zeroizing::new(String::new());
        loop {
            let c = match chars.peek() {
                None if quoted => return Err(format!("the value of `{key}` has no closing quote")),
                Some(&(_, '\'')) if quoted => {
                    chars.next();
                    break;
                }
                Some((_, c)) if !quoted && c.is_whitespace() => break,
                None => break,
                Some(&(_, c)) => c,
            };
            chars.next();
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                c => value.push(c),
            }
        }
        if !quoted && value.is_empty() {
            return Err(format!("`{key}` has no value"));
        }
        // The span takes the spaces after the value, so that cutting it leaves one space.
        while chars.next_if(space).is_some() {}
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        pairs.push(Param {
            key,
            value,
            span: start..end,
        });
    }
}

/// `%XX` sequences decoded (invalid ones kept as they are); invalid UTF-8 replaced.
fn percent_decode(text: &str) -> Zeroizing<String> {
    let bytes = text.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|&h| char::from(h).to_digit(16));
        if let (b'%', Some(high), Some(low)) = (b, hex(i + 1), hex(i + 2)) {
            // Two hex digits: at most 255.
            out.extend(u8::try_from(high * 16 + low).ok());
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
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

    fn parsed(c: &Conninfo) -> Config {
        match c.config_text.parse() {
            Ok(config) => config,
            Err(e) => panic!("{}: {e}", c.config_text.as_str()),
        }
    }

    #[test]
    fn pairs_are_passed_on_as_written_less_the_tls_keys() {
        let c = ok("host=127.0.0.1 port = 5432 user=app password='p a\\'ss' dbname=db sslmode=require sslrootcert=/etc/ca.pem");
        assert_eq!(
            c.config_text.as_str(),
            r"host=127.0.0.1 port = 5432 user=app password='p a\'ss' dbname=db"
        );
        assert_eq!(
            c.tls,
            Tls::Verify {
                root_cert: Some(PathBuf::from("/etc/ca.pem"))
            }
        );
        let config = parsed(&c);
        assert_eq!(config.get_password(), Some(&b"p a'ss"[..]));
        assert_eq!(
            shown(&config, &c),
            "host=127.0.0.1 port=5432 user=app dbname=db password=[redacted] sslmode=require sslrootcert=/etc/ca.pem"
        );
    }

    #[test]
    fn a_repeated_key_takes_its_last_value() {
        let c = ok("host=a port=1 host=b password=x password=y");
        assert_eq!(c.config_text.as_str(), "port=1 host=b password=y");
        let config = parsed(&c);
        assert_eq!(config.get_hosts(), &[Host::Tcp("b".into())]);
        assert_eq!(config.get_password(), Some(&b"y"[..]));
        assert_eq!(shown(&config, &c), "host=b port=1 password=[redacted]");
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
    fn urls_keep_their_form_and_are_shown_without_their_password() {
        let c = ok("postgresql://app:s%40cret@db.example:6543/tokens?sslmode=verify-full&application_name=x&password=SECRET2");
        assert_eq!(
            c.config_text.as_str(),
            "postgresql://app:s%40cret@db.example:6543/tokens?application_name=x&password=SECRET2"
        );
        assert_eq!(c.tls, Tls::Verify { root_cert: None });
        let config = parsed(&c);
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(
            shown(&config, &c),
            "host=db.example port=6543 user=app dbname=tokens password=[redacted] sslmode=verify-full"
        );

        let c = ok("postgres://app@db/tokens");
        assert_eq!(
            shown(&parsed(&c), &c),
            "host=db port=5432 user=app dbname=tokens"
        );
        assert_eq!(c.tls, Tls::Prefer);
        let c = ok("postgres://db:5432/tokens?sslrootcert=%2Fetc%2Fca.pem&sslmode=require");
        assert_eq!(c.config_text.as_str(), "postgres://db:5432/tokens");
        assert_eq!(
            c.tls,
            Tls::Verify {
                root_cert: Some(PathBuf::from("/etc/ca.pem"))
            }
        );
        let c = ok("postgres://db/t?a=1&sslmode=disable&&b=2&sslmode=require");
        assert_eq!(c.config_text.as_str(), "postgres://db/t?a=1&b=2");
        assert!(matches!(c.tls, Tls::Verify { .. }));
        // An `@` only in the query: whatever `Config` makes of it, no password is shown.
        let c = ok("postgres://h:SECRET/db?user=a@b");
        if let Ok(config) = c.config_text.parse::<Config>() {
            assert!(!shown(&config, &c).contains("SECRET"));
        }
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
                Ok(c) => panic!("{bad}: parsed as {}", c.config_text.as_str()),
            }
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%zz%4").as_str(), "a/b%zz%4");
    }
}
