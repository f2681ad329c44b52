//! The one serialized form of a [`StoredRecord`], shared by every durable backend.
//!
//! ```json
//! {"version": 2,
//!  "pair": {"accessToken": "...", "accessTokenEndTime": 1625915202,
//!           "refreshToken": "...", "refreshTokenEndTime": 1626001602, "cabinetUserId": 14545,
//!           "issuedAt": 1625828802},
//!  "makes": [1625828802],
//!  "serverOffset": -3,
//!  "cooldown": {"until": 1625832402, "strikes": 1},
//!  "makeInFlightUntil": 1625828840}
//! ```
//! `pair` is `null` after a logout; `issuedAt`, `serverOffset`, `cooldown` and
//! `makeInFlightUntil` may be absent
//! or `null`. Version 1 (0.1.0) is read as well (it has none of them). Unknown fields are
//! ignored; a version newer than [`RECORD_VERSION`] is refused, so an older build never
//! overwrites what it cannot read.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::schema::check_json_version;
use super::{Cooldown, StoredRecord};
use crate::error::StoreError;
use crate::token::{AccessToken, RefreshToken, TokenPair};

/// The schema version this build writes and the newest it reads.
pub(crate) const RECORD_VERSION: u64 = 2;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PairOut<'a> {
    access_token: &'a str,
    access_token_end_time: i64,
    refresh_token: &'a str,
    refresh_token_end_time: i64,
    cabinet_user_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_at: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct CooldownJson {
    until: i64,
    strikes: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordOut<'a> {
    version: u64,
    pair: Option<PairOut<'a>>,
    makes: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    server_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cooldown: Option<CooldownJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    make_in_flight_until: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PairIn {
    access_token: String,
    access_token_end_time: i64,
    refresh_token: String,
    refresh_token_end_time: i64,
    cabinet_user_id: i64,
    #[serde(default)]
    issued_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordIn {
    pair: Option<PairIn>,
    #[serde(default)]
    makes: Vec<i64>,
    #[serde(default)]
    server_offset: Option<i64>,
    #[serde(default)]
    cooldown: Option<CooldownJson>,
    #[serde(default)]
    make_in_flight_until: Option<i64>,
}

/// Serializes `record` as JSON, for the `store` store at `location`. The text holds secrets
/// and is zeroized when dropped.
///
/// # Errors
/// [`StoreError::Backend`] if serde_json refuses the record (it never has: the record is
/// strings and integers). It is an error, not an empty text, so that nothing is written in
/// place of the pair.
pub fn encode_record(
    record: &StoredRecord,
    store: &'static str,
    location: &str,
) -> Result<Zeroizing<String>, StoreError> {
    let out = RecordOut {
        version: RECORD_VERSION,
        pair: record.pair.as_ref().map(|p| PairOut {
            access_token: p.access.expose_secret(),
            access_token_end_time: p.access_expires_at,
            refresh_token: p.refresh.expose_secret(),
            refresh_token_end_time: p.refresh_expires_at,
            cabinet_user_id: p.cabinet_user_id,
            issued_at: record.issued_at,
        }),
        makes: &record.makes,
        server_offset: record.server_offset,
        cooldown: record.make_cooldown.map(|c| CooldownJson {
            until: c.until,
            strikes: c.strikes,
        }),
        make_in_flight_until: record.make_in_flight_until,
    };
    serde_json::to_string(&out)
        .map(Zeroizing::new)
        .map_err(|e| StoreError::Backend {
            store,
            location: location.to_owned(),
            source: format!("the record could not be encoded ({})", describe(&e)).into(),
        })
}

/// Parses a record written by [`encode_record`].
///
/// # Errors
/// [`StoreError::Corrupt`] when the bytes are not such a record (the message never quotes
/// them), [`StoreError::UnsupportedVersion`] when a newer build wrote them.
pub fn decode_record(
    bytes: &[u8],
    store: &'static str,
    location: &str,
) -> Result<StoredRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        store,
        location: location.to_owned(),
        detail,
    };
    check_json_version(bytes, store, "schema", RECORD_VERSION, location)?;
    let record: RecordIn = serde_json::from_slice(bytes).map_err(|e| corrupt(describe(&e)))?;
    let (pair, issued_at) = match record.pair {
        None => (None, None),
        Some(p) => {
            if p.access_token.is_empty() || p.refresh_token.is_empty() {
                return Err(corrupt("an empty token".to_owned()));
            }
            let pair = TokenPair {
                access: AccessToken::new(p.access_token),
                access_expires_at: p.access_token_end_time,
                refresh: RefreshToken::new(p.refresh_token),
                refresh_expires_at: p.refresh_token_end_time,
                cabinet_user_id: p.cabinet_user_id,
            };
            (Some(pair), p.issued_at)
        }
    };
    Ok(StoredRecord {
        pair,
        makes: record.makes,
        issued_at,
        server_offset: record.server_offset,
        make_cooldown: record.cooldown.map(|c| Cooldown {
            until: c.until,
            strikes: c.strikes,
        }),
        make_in_flight_until: record.make_in_flight_until,
    })
}

/// A serde_json error without the offending input (which may hold a secret).
pub(super) fn describe(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "a missing or mistyped field",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredRecord {
        StoredRecord {
            pair: Some(TokenPair {
                access: AccessToken::new("acc-SECRET"),
                access_expires_at: 1_625_915_202,
                refresh: RefreshToken::new("ref-SECRET"),
                refresh_expires_at: 1_626_001_602,
                cabinet_user_id: 14545,
            }),
            makes: vec![1, 2, 3],
            issued_at: Some(1_625_828_802),
            server_offset: Some(-3),
            make_cooldown: Some(Cooldown {
                until: 1_625_832_402,
                strikes: 2,
            }),
            make_in_flight_until: Some(1_625_828_840),
        }
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let text = encode_record(&r, "test", "here").unwrap();
        assert_eq!(decode_record(text.as_bytes(), "t", "here").ok(), Some(r));
        let empty = StoredRecord::default();
        let text = encode_record(&empty, "test", "here").unwrap();
        assert_eq!(
            decode_record(text.as_bytes(), "t", "here").ok(),
            Some(empty)
        );
    }

    #[test]
    fn bad_input_is_typed_and_never_quoted() {
        let good = encode_record(&sample(), "test", "here").unwrap();
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"{".to_vec(),
            good.as_bytes()[..good.len() / 2].to_vec(),
            br#"{"version":"1"}"#.to_vec(),
            br#"{"version":1,"pair":{"accessToken":5}}"#.to_vec(),
            br#"[1,2,3]"#.to_vec(),
            b"\xff\xfe".to_vec(),
        ];
        for bytes in cases {
            match decode_record(&bytes, "t", "here") {
                Err(e @ StoreError::Corrupt { .. }) => {
                    assert!(!e.to_string().contains("SECRET"), "{e}")
                }
                other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(&bytes)),
            }
        }
        for v in ["0", "3", "99"] {
            let bytes = format!(r#"{{"version":{v},"pair":null}}"#);
            assert!(matches!(
                decode_record(bytes.as_bytes(), "t", "here"),
                Err(StoreError::UnsupportedVersion { .. })
            ));
        }
    }

    #[test]
    fn version_1_records_are_read() {
        let v1 = br#"{"version":1,"pair":{"accessToken":"a","accessTokenEndTime":5,"refreshToken":"r","refreshTokenEndTime":6,"cabinetUserId":7},"makes":[1,2]}"#;
        let r = decode_record(v1, "t", "here").ok();
        assert_eq!(r.as_ref().map(|r| r.makes.clone()), Some(vec![1, 2]));
        assert_eq!(
            r.as_ref()
                .and_then(|r| r.pair.as_ref())
                .map(|p| p.refresh_expires_at),
            Some(6)
        );
        assert_eq!(
            r.map(|r| (r.issued_at, r.server_offset, r.make_cooldown)),
            Some((None, None, None))
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let bytes = br#"{"version":1,"pair":null,"makes":[5],"future":{"x":1}}"#;
        let r = decode_record(bytes, "t", "here").ok();
        assert_eq!(r.map(|r| r.makes), Some(vec![5]));
    }
}
