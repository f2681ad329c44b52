//! Paths are paths: a call's path can never send the token to another scheme, host or port.

use crate::error::{Error, Result};

/// Checks a call's path before anything is sent: it must start with `/`, and hold no control
/// character, no `\` and no `@` (which some URL parsers read as the end of a user name,
/// making what follows the host).
///
/// # Errors
/// [`Error::InvalidPath`] saying why.
pub(crate) fn check_path(path: &str) -> Result<()> {
    let reason = if !path.starts_with('/') {
        "it must start with `/`"
    } else if path.chars().any(char::is_control) {
        "it holds a control character"
    } else if path.contains('\\') {
        "it holds a `\\`"
    } else if path.contains('@') {
        "it holds an `@`"
    } else {
        return Ok(());
    };
    Err(invalid(path, reason))
}

/// `base_url` joined with `path`, after [`check_path`], and checked to have the base URL's
/// scheme, host and port.
///
/// # Errors
/// [`Error::InvalidPath`] when the path is refused or the joined URL is not one with the
/// base URL's scheme, host and port.
pub(crate) fn join(base_url: &str, path: &str) -> Result<String> {
    check_path(path)?;
    let url = format!("{base_url}{path}");
    let origin = |text: &str| {
        text.parse::<ureq::http::Uri>()
            .ok()
            .and_then(|u| Some((u.scheme_str()?.to_ascii_lowercase(), u.authority()?.clone())))
    };
    match (origin(base_url), origin(&url)) {
        (Some(base), Some(joined)) if base == joined => Ok(url),
        _ => Err(invalid(
            path,
            "joined to the base URL it does not keep its scheme, host and port",
        )),
    }
}

fn invalid(path: &str, reason: &'static str) -> Error {
    // A path is the caller's own text; it is shown escaped and cut short.
    let shown: String = path.chars().take(80).collect();
    Error::InvalidPath {
        path: format!("{shown:?}"),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_pass() {
        for ok in [
            "/v1/licenses",
            "/",
            "/v1/x?limit=5&direction=prev",
            "//double",
            "/a%40b",
        ] {
            assert_eq!(
                join("https://api.chatapp.online", ok).ok(),
                Some(format!("https://api.chatapp.online{ok}")),
                "{ok}"
            );
        }
        for bad in [
            "",
            "v1/licenses",
            "@127.0.0.1:9/x",
            ".evil.com/",
            ":8081/x",
            "/x@evil.com",
            "/a\\b",
            "/a\r\nHost: evil",
            "/a\tb",
            "/a\u{7f}",
            "/a\u{85}",
            "?x",
            "#x",
        ] {
            match join("http://127.0.0.1:8080", bad) {
                Err(Error::InvalidPath { .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_message_names_the_path_escaped() {
        let e = check_path("/a\nb").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("path \"/a\\nb\" refused: it holds a control character")
        );
    }
}
