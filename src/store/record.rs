//! The one serialized form of a [`StoredRecord`], shared by every durable backend.
//!
//! ```json
//! {"version": 1,
//!  "pair": {"accessToken": "...", "accessTokenEndTime": 1625915202,
//!           "refreshToken": "...", "refreshTokenEndTime": 1626001602, "cabinetUserId": 14545},
//!  "makes": [1625828802]}
//! ```
//! `pair` is `null` after a logout. Unknown fields are ignored; a version newer than
//! [`RECORD_VERSION`] is refused, so an older build never overwrites what it cannot read.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::StoredRecord;
use crate::error::StoreError;
use crate::token::{AccessToken, RefreshToken, TokenPair};

/// The schema version this build writes and the newest it reads.
pub const RECORD_VERSION: u64 = 1;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PairOut<'a> {
    access_token: &'a str,
    access_token_end_time: i64,
    refresh_token: &'a str,
    refresh_token_end_time: i64,
    cabinet_user_id: i64,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    version: u64,
    pair: Option<PairOut<'a>>,
    makes: &'a [i64],
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PairIn {
    access_token: String,
    access_token_end_time: i64,
    refresh_token: String,
    refresh_token_end_time: i64,
    cabinet_user_id: i64,
}

#[derive(Deserialize)]
struct RecordIn {
    pair: Option<PairIn>,
    #[serde(default)]
    makes: Vec<i64>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

/// Serializes `record` as JSON. The text holds secrets and is zeroized when dropped.
pub fn encode_record(record: &StoredRecord) -> Zeroizing<String> {
    let out = RecordOut {
        version: RECORD_VERSION,
        pair: record.pair.as_ref().map(|p| PairOut {
            access_token: p.access.expose_secret(),
            access_token_end_time: p.access_expires_at,
            refresh_token: p.refresh.expose_secret(),
            refresh_token_end_time: p.refresh_expires_at,
            cabinet_user_id: p.cabinet_user_id,
        }),
        makes: &record.makes,
    };
    // Serializing plain strings and integers into a String cannot fail.
    Zeroizing::new(serde_json::to_string(&out).unwrap_or_default())
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
    let version: VersionOnly = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(format!("no readable schema version ({})", describe(&e))))?;
    if version.version == 0 || version.version > RECORD_VERSION {
        return Err(StoreError::UnsupportedVersion {
            store,
            location: location.to_owned(),
            found: version.version,
            supported: RECORD_VERSION,
        });
    }
    let record: RecordIn = serde_json::from_slice(bytes).map_err(|e| corrupt(describe(&e)))?;
    let pair = match record.pair {
        None => None,
        Some(p) => {
            if p.access_token.is_empty() || p.refresh_token.is_empty() {
                return Err(corrupt("an empty token".to_owned()));
            }
            Some(TokenPair {
                access: AccessToken::new(p.access_token),
                access_expires_at: p.access_token_end_time,
                refresh: RefreshToken::new(p.refresh_token),
                refresh_expires_at: p.refresh_token_end_time,
                cabinet_user_id: p.cabinet_user_id,
            })
        }
    };
    Ok(StoredRecord {
        pair,
        makes: record.makes,
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
        }
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let text = encode_record(&r);
        assert_eq!(decode_record(text.as_bytes(), "t", "here").ok(), Some(r));
        let empty = StoredRecord::default();
        let text = encode_record(&empty);
        assert_eq!(
            decode_record(text.as_bytes(), "t", "here").ok(),
            Some(empty)
        );
    }

    #[test]
    fn bad_input_is_typed_and_never_quoted() {
        let good = encode_record(&sample());
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
        for v in ["0", "2", "99"] {
            let bytes = format!(r#"{{"version":{v},"pair":null}}"#);
            assert!(matches!(
                decode_record(bytes.as_bytes(), "t", "here"),
                Err(StoreError::UnsupportedVersion { .. })
            ));
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let bytes = br#"{"version":1,"pair":null,"makes":[5],"future":{"x":1}}"#;
        let r = decode_record(bytes, "t", "here").ok();
        assert_eq!(r.map(|r| r.makes), Some(vec![5]));
    }
}
