//! The ChatApp reply envelope: `{"success": true, "data": ...}` or
//! `{"success": false, "error": {"code": "...", "message": "..."}}`.

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, Endpoint, Error, Result};
use crate::token::{AccessToken, RefreshToken, TokenPair};

#[derive(Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    error: Option<Value>,
}

fn protocol(endpoint: Endpoint, status: u16, detail: impl Into<String>) -> Error {
    Error::Protocol {
        endpoint,
        status,
        detail: detail.into(),
    }
}

/// Reads a reply body: the envelope's `data` on success, [`Error::Api`] for any refusal (a
/// non-2xx status, or `"success": false` whatever the status, with the server's code and
/// message), [`Error::Protocol`] for a 2xx reply that is not an envelope.
///
/// # Errors
/// As above. Messages never quote the body.
pub(crate) fn parse_envelope(endpoint: Endpoint, status: u16, body: &[u8]) -> Result<Value> {
    let ok_status = (200..300).contains(&status);
    let refused = |code: Option<String>, message: Option<String>| {
        Error::Api(ApiError::new(endpoint, status, code, message))
    };
    // serde also reads a struct from a JSON array (`[true, ...]`): only an object is an envelope.
    let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) if is_object => envelope,
        Ok(_) if !ok_status => return Err(refused(None, None)),
        Ok(_) => {
            return Err(protocol(
                endpoint,
                status,
                format!(
                    "JSON without the success/data/error envelope ({} bytes)",
                    body.len()
                ),
            ))
        }
        Err(_) if !ok_status => return Err(refused(None, None)),
        Err(e) if body.is_empty() => {
            return Err(protocol(endpoint, status, format!("an empty body ({e})")))
        }
        Err(e) => {
            let what = if e.is_data() {
                "JSON without the success/data/error envelope"
            } else {
                "not valid JSON"
            };
            return Err(protocol(
                endpoint,
                status,
                format!("{what} ({} bytes)", body.len()),
            ));
        }
    };
    if envelope.success && ok_status {
        return Ok(envelope.data);
    }
    let field = |name: &str| {
        envelope
            .error
            .as_ref()
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Err(refused(field("code"), field("message")))
}

/// The refusal in a reply to a [`Call`](crate::Call), if it is one: any non-2xx status, or
/// the ChatApp error envelope (`"success": false`) whatever the status. `None` for a reply to
/// hand back as it is (a success envelope, or any other 2xx body: bytes, HTML, ...).
pub(crate) fn refusal_in(status: u16, body: &[u8]) -> Option<Error> {
    let ok_status = (200..300).contains(&status);
    match parse_envelope(Endpoint::Request, status, body) {
        Err(e @ Error::Api(_)) => Some(e),
        Err(e) if !ok_status => Some(e),
        _ => None,
    }
}

/// A reply's `data` as `T`.
///
/// # Errors
/// [`Error::Protocol`] naming `T` and what did not fit (quoted values left out).
pub(crate) fn data_as<T: serde::de::DeserializeOwned>(status: u16, data: Value) -> Result<T> {
    serde_json::from_value(data).map_err(|e| {
        protocol(
            Endpoint::Request,
            status,
            format!(
                "`data` does not have the shape of {}: {}",
                std::any::type_name::<T>(),
                unquoted(&e.to_string())
            ),
        )
    })
}

/// `text` with every double-quoted part replaced by `"…"`: serde's messages quote the
/// offending value, which is the server's data, not ours to repeat.
fn unquoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, piece) in text.split('"').enumerate() {
        if i % 2 == 0 {
            out.push_str(piece);
        } else {
            out.push_str("\"…\"");
        }
    }
    out
}

/// Reads the `data` of tokens.make or tokens.refresh into a [`TokenPair`]. Unknown fields are
/// ignored.
///
/// # Errors
/// [`Error::Protocol`] naming the first missing or mistyped field (never its value).
pub(crate) fn parse_token_pair(endpoint: Endpoint, status: u16, data: Value) -> Result<TokenPair> {
    let Value::Object(mut map) = data else {
        return Err(protocol(endpoint, status, "`data` is not an object"));
    };
    let mut token = |name: &str| match map.remove(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(protocol(
            endpoint,
            status,
            format!("`{name}` is missing or not a non-empty string"),
        )),
    };
    let access = AccessToken::new(token("accessToken")?);
    let refresh = RefreshToken::new(token("refreshToken")?);
    let int = |name: &str| {
        map.get(name).and_then(Value::as_i64).ok_or_else(|| {
            protocol(
                endpoint,
                status,
                format!("`{name}` is missing or not an integer"),
            )
        })
    };
    Ok(TokenPair {
        access,
        access_expires_at: int("accessTokenEndTime")?,
        refresh,
        refresh_expires_at: int("refreshTokenEndTime")?,
        cabinet_user_id: int("cabinetUserId")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api(r: Result<Value>) -> ApiError {
        match r {
            Err(Error::Api(a)) => a,
            other => panic!("expected Api, got {other:?}"),
        }
    }

    #[test]
    fn success_gives_data() {
        let body = br#"{"success":true,"data":[1,2],"extra":1}"#;
        assert_eq!(
            parse_envelope(Endpoint::Request, 200, body).ok(),
            Some(json!([1, 2]))
        );
        let body = br#"{"success":true}"#;
        assert_eq!(
            parse_envelope(Endpoint::Request, 200, body).ok(),
            Some(Value::Null)
        );
    }

    #[test]
    fn invalid_token_is_recognised_whatever_the_status() {
        let body =
            br#"{"success":false,"error":{"code":"ApiInvalidTokenError","message":"Invalid Token"}}"#;
        for status in [200, 401, 403] {
            let a = api(parse_envelope(Endpoint::Request, status, body));
            assert_eq!(a.status, status);
            assert_eq!(a.code.as_deref(), Some("ApiInvalidTokenError"));
            assert_eq!(a.message.as_deref(), Some("Invalid Token"));
        }
    }

    #[test]
    fn refusals_without_envelope_keep_the_status() {
        for (status, body) in [
            (401, &b""[..]),
            (500, b"<html>oops</html>"),
            (502, b"{\"nope\":1}"),
        ] {
            let a = api(parse_envelope(Endpoint::Request, status, body));
            assert_eq!((a.status, a.code, a.message), (status, None, None));
        }
    }

    #[test]
    fn a_2xx_that_is_not_an_envelope_is_a_protocol_error() {
        for body in [
            &b""[..],
            b"<html>",
            b"{\"data\":1}",
            b"[1]",
            b"{\"success\":\"yes\"}",
            // Arrays that serde would read as the fields in order.
            b"[true]",
            b" [true, [1, 2]]",
            b"[true, {\"accessToken\": \"x\"}, null]",
        ] {
            match parse_envelope(Endpoint::Make, 200, body) {
                Err(Error::Protocol {
                    status: 200,
                    endpoint: Endpoint::Make,
                    ..
                }) => {}
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_refusal_in_an_array_is_no_envelope() {
        let body = br#"[false, null, {"code": "ApiInvalidTokenError", "message": "x"}]"#;
        let a = api(parse_envelope(Endpoint::Request, 401, body));
        assert_eq!((a.status, a.code, a.message), (401, None, None));
        // An object with the same content is one.
        let body = br#" {"success": false, "error": {"code": "ApiInvalidTokenError"}}"#;
        let a = api(parse_envelope(Endpoint::Request, 401, body));
        assert_eq!(a.code.as_deref(), Some("ApiInvalidTokenError"));
    }

    #[test]
    fn a_wrong_shape_names_the_type_not_the_value() {
        let r: Result<Vec<u32>> = data_as(200, json!({"secret": "VALUE-1"}));
        let text = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("alloc::vec::Vec<u32>"), "{text}");
        assert!(!text.contains("VALUE-1"), "{text}");
        let r: Result<Vec<u32>> = data_as(200, json!(["VALUE-2"]));
        let text = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("invalid type: string"), "{text}");
        assert!(!text.contains("VALUE-2"), "{text}");
        assert_eq!(
            data_as::<Vec<u32>>(200, json!([1, 2])).ok(),
            Some(vec![1, 2])
        );
    }

    #[test]
    fn refusals_in_replies_to_calls() {
        let refused = br#"{"success":false,"error":{"code":"ApiInvalidTokenError"}}"#;
        for status in [200, 401, 403] {
            let found = refusal_in(status, refused);
            assert!(
                matches!(&found, Some(Error::Api(a)) if a.code.as_deref() == Some("ApiInvalidTokenError")),
                "{status}: {found:?}"
            );
        }
        assert!(
            matches!(refusal_in(401, b""), Some(Error::Api(a)) if a.status == 401 && a.code.is_none())
        );
        assert!(matches!(refusal_in(500, b"<html>"), Some(Error::Api(_))));
        for body in [
            &b"\x89PNG\r\n"[..],
            b"",
            b"<html>",
            b"[1]",
            br#"{"success":true,"data":1}"#,
        ] {
            assert!(refusal_in(200, body).is_none(), "{body:?}");
        }
    }

    #[test]
    fn token_pair_fields_are_checked() {
        let good = json!({"cabinetUserId": 14545, "accessToken": "a-SECRET", "accessTokenEndTime": 10,
            "refreshToken": "r-SECRET", "refreshTokenEndTime": 20, "unknown": true});
        let pair = parse_token_pair(Endpoint::Make, 200, good.clone());
        let pair = pair.ok();
        assert_eq!(
            pair.as_ref().map(|p| p.access.expose_secret()),
            Some("a-SECRET")
        );
        assert_eq!(
            pair.map(|p| (p.access_expires_at, p.refresh_expires_at, p.cabinet_user_id)),
            Some((10, 20, 14545))
        );
        for (field, bad) in [
            ("accessToken", Value::Null),
            ("accessToken", json!("")),
            ("refreshToken", json!(5)),
            ("accessTokenEndTime", json!("10")),
            ("refreshTokenEndTime", json!(1.5)),
            ("cabinetUserId", Value::Null),
        ] {
            let mut v = good.clone();
            v[field] = bad;
            match parse_token_pair(Endpoint::Refresh, 200, v) {
                Err(e @ Error::Protocol { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(field), "{text}");
                    assert!(!text.contains("SECRET"), "{text}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(parse_token_pair(Endpoint::Make, 200, json!([1])).is_err());
    }
}
