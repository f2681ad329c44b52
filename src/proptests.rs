//! Property tests of the two parsers that read what others wrote: the reply parser
//! (`transport::parse_envelope` + `parse_token_pair`) and the stored-record parser
//! (`store::decode_record`, and the `FileStore` container on disk). Inputs: arbitrary bytes,
//! arbitrary JSON trees, and valid replies and records mutated (fields removed, retyped,
//! added; bytes truncated, flipped, inserted). Properties: no panic; what is accepted is
//! exactly what was written (a reply's fields, a record that round-trips through
//! `encode_record`); what is refused is a typed error that never quotes a token.

use std::path::Path;

use crate::store::{
    decode_record, encode_record, FileStore, StoreKey, StoredRecord, TokenStore, RECORD_VERSION,
};
use crate::transport::{parse_envelope, parse_token_pair};
use crate::{AccessToken, Endpoint, Error, RefreshToken, StoreError, TokenPair};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Field names the parsers look for, so that arbitrary trees hit them often.
const NAMES: &[&str] = &[
    "success",
    "data",
    "error",
    "code",
    "message",
    "accessToken",
    "accessTokenEndTime",
    "refreshToken",
    "refreshTokenEndTime",
    "cabinetUserId",
    "version",
    "pair",
    "makes",
    "entries",
];

const PAIR_FIELDS: &[&str] = &[
    "accessToken",
    "accessTokenEndTime",
    "refreshToken",
    "refreshTokenEndTime",
    "cabinetUserId",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NAMES).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,12}",
    ]
}

/// Arbitrary JSON: every kind of leaf (large integers, floats, odd strings), nested arrays
/// and objects whose keys are often the ones the parsers look for.
fn json_tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        Just(Value::String(String::new())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A token as long as real ones: never found in a message by accident.
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9./$]{24,64}"
}

fn pair() -> impl Strategy<Value = TokenPair> {
    (token(), any::<i64>(), token(), any::<i64>(), any::<i64>()).prop_map(
        |(access, access_end, refresh, refresh_end, user)| TokenPair {
            access: AccessToken::new(access),
            access_expires_at: access_end,
            refresh: RefreshToken::new(refresh),
            refresh_expires_at: refresh_end,
            cabinet_user_id: user,
        },
    )
}

fn record() -> impl Strategy<Value = StoredRecord> {
    (
        prop::option::of(pair()),
        prop::collection::vec(any::<i64>(), 0..8),
    )
        .prop_map(|(pair, makes)| StoredRecord {
            pair,
            makes,
            ..Default::default()
        })
}

/// The `data` of a tokens.make / tokens.refresh reply for `pair`, with an extra field.
fn pair_data(pair: &TokenPair) -> Value {
    json!({
        "cabinetUserId": pair.cabinet_user_id,
        "accessToken": pair.access.expose_secret(),
        "accessTokenEndTime": pair.access_expires_at,
        "refreshToken": pair.refresh.expose_secret(),
        "refreshTokenEndTime": pair.refresh_expires_at,
        "tokenType": "raw",
    })
}

/// One change to a JSON tree: at a path of object keys (as deep as it goes), remove the
/// field, replace it with an arbitrary tree, or add a field.
#[derive(Clone, Debug)]
enum Mutation {
    Remove(Vec<String>),
    Replace(Vec<String>, Value),
    Add(Vec<String>, String, Value),
}

fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(key(), 1..4)
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        path().prop_map(Mutation::Remove),
        (path(), json_tree()).prop_map(|(p, v)| Mutation::Replace(p, v)),
        (path(), key(), json_tree()).prop_map(|(p, k, v)| Mutation::Add(p, k, v)),
    ]
}

/// Follows `path` through objects as far as it goes; returns the last object and key.
fn walk<'a>(
    value: &'a mut Value,
    path: &'a [String],
) -> Option<(&'a mut Map<String, Value>, &'a str)> {
    let (last, first) = path.split_last()?;
    let mut here = value;
    for step in first {
        let next_is_object = here.get(step.as_str()).is_some_and(Value::is_object);
        if !next_is_object {
            break;
        }
        here = here.get_mut(step.as_str())?;
    }
    here.as_object_mut().map(|map| (map, last.as_str()))
}

fn mutate(mut value: Value, mutations: &[Mutation]) -> Value {
    for m in mutations {
        match m {
            Mutation::Remove(path) => {
                if let Some((map, key)) = walk(&mut value, path) {
                    // Remove the named field, or else any one, so removals really happen.
                    let victim = if map.contains_key(key) {
                        Some(key.to_owned())
                    } else {
                        map.keys().next().cloned()
                    };
                    if let Some(victim) = victim {
                        map.remove(&victim);
                    }
                }
            }
            Mutation::Replace(path, new) => {
                if let Some((map, key)) = walk(&mut value, path) {
                    let target = if map.contains_key(key) {
                        Some(key.to_owned())
                    } else {
                        map.keys().nth(key.len() % map.len().max(1)).cloned()
                    };
                    if let Some(target) = target {
                        map.insert(target, new.clone());
                    }
                }
            }
            Mutation::Add(path, key, new) => {
                if let Some((map, _)) = walk(&mut value, path) {
                    map.insert(key.clone(), new.clone());
                }
            }
        }
    }
    value
}

/// A change to bytes: cut, flip, insert or delete.
#[derive(Clone, Debug)]
enum ByteEdit {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(ByteEdit::Truncate),
        (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(i, x)| ByteEdit::Flip(i, x)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        (any::<prop::sample::Index>(), 1..16usize).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
    ]
}

fn edit(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len();
        match e {
            ByteEdit::Truncate(i) => bytes.truncate(i.index(len + 1)),
            ByteEdit::Flip(i, x) if len > 0 => bytes[i.index(len)] ^= x,
            ByteEdit::Flip(..) => {}
            ByteEdit::Insert(i, b) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            ByteEdit::Delete(i, n) => {
                let at = i.index(len + 1);
                bytes.drain(at..(at + n).min(len));
            }
        }
    }
    bytes
}

/// Any HTTP status, weighted to the interesting ones.
fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => Just(200u16),
        1 => prop::sample::select(&[201u16, 204, 299, 400, 401, 403, 404, 429, 500, 502, 503][..]),
        1 => 100..600u16,
    ]
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop::sample::select(
        &[
            Endpoint::Make,
            Endpoint::Refresh,
            Endpoint::Check,
            Endpoint::Request,
        ][..],
    )
}

/// Checks one reply body through both reply parsers: no panic, the typed outcome, and an
/// accepted pair equal field by field to what the body said.
fn check_reply(endpoint: Endpoint, status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    match parse_envelope(endpoint, status, body) {
        Ok(data) => {
            prop_assert!((200..300).contains(&status), "accepted HTTP {}", status);
            let start = body.iter().find(|b| !b.is_ascii_whitespace());
            prop_assert_eq!(start, Some(&b'{'), "accepted a reply that is not an object");
            // (A reply can be accepted and still not parse as a `Value`: serde skips unknown
            // fields without checking their strings.)
            if let Ok(parsed) = serde_json::from_slice::<Value>(body) {
                prop_assert_eq!(parsed.get("success"), Some(&Value::Bool(true)));
                prop_assert_eq!(&data, parsed.get("data").unwrap_or(&Value::Null));
            }
            check_token_pair(endpoint, status, data)?;
        }
        Err(Error::Api(a)) => {
            prop_assert_eq!((a.endpoint, a.status), (endpoint, status));
        }
        Err(Error::Protocol {
            endpoint: e,
            status: s,
            detail,
        }) => {
            prop_assert_eq!((e, s), (endpoint, status));
            prop_assert!((200..300).contains(&status));
            prop_assert!(detail.len() < 200, "a long detail: {}", detail);
        }
        Err(other) => prop_assert!(false, "an unexpected error: {:?}", other),
    }
    Ok(())
}

/// `parse_token_pair`: no panic; a pair only when all five fields are there with their
/// types, each value as given; otherwise a protocol error naming a field, quoting no token.
fn check_token_pair(endpoint: Endpoint, status: u16, data: Value) -> Result<(), TestCaseError> {
    let strings: Vec<String> = ["accessToken", "refreshToken"]
        .iter()
        .filter_map(|f| data.get(f).and_then(Value::as_str).map(str::to_owned))
        .collect();
    match parse_token_pair(endpoint, status, data.clone()) {
        Ok(pair) => {
            prop_assert_eq!(
                Some(pair.access.expose_secret()),
                data["accessToken"].as_str()
            );
            prop_assert_eq!(
                Some(pair.refresh.expose_secret()),
                data["refreshToken"].as_str()
            );
            prop_assert!(!pair.access.expose_secret().is_empty());
            prop_assert!(!pair.refresh.expose_secret().is_empty());
            prop_assert_eq!(
                Some(pair.access_expires_at),
                data["accessTokenEndTime"].as_i64()
            );
            prop_assert_eq!(
                Some(pair.refresh_expires_at),
                data["refreshTokenEndTime"].as_i64()
            );
            prop_assert_eq!(Some(pair.cabinet_user_id), data["cabinetUserId"].as_i64());
        }
        Err(e @ Error::Protocol { .. }) => {
            let text = e.to_string();
            prop_assert!(
                text.contains("`data` is not an object")
                    || PAIR_FIELDS.iter().any(|f| text.contains(&format!("`{f}`"))),
                "names no field: {}",
                text
            );
            for s in strings.iter().filter(|s| s.len() >= 8) {
                prop_assert!(!text.contains(s.as_str()), "quotes a token: {}", text);
            }
        }
        Err(other) => prop_assert!(false, "an unexpected error: {:?}", other),
    }
    Ok(())
}

/// `decode_record`: no panic; an accepted record round-trips through `encode_record`; a
/// refused one is `Corrupt` or `UnsupportedVersion`, quoting no token of `tokens`.
fn check_record(bytes: &[u8], tokens: &[&str]) -> Result<Option<StoredRecord>, TestCaseError> {
    match decode_record(bytes, "prop", "here") {
        Ok(record) => {
            let again = encode_record(&record, "test", "here").unwrap();
            let decoded = decode_record(again.as_bytes(), "prop", "here");
            prop_assert_eq!(decoded.as_ref().ok(), Some(&record), "no round trip");
            let written: Value = serde_json::from_str(again.as_str()).expect("encoded JSON");
            prop_assert_eq!(&written["version"], &json!(RECORD_VERSION));
            Ok(Some(record))
        }
        Err(e @ (StoreError::Corrupt { .. } | StoreError::UnsupportedVersion { .. })) => {
            let text = e.to_string();
            for t in tokens.iter().filter(|t| t.len() >= 8) {
                prop_assert!(!text.contains(t), "quotes a token: {}", text);
            }
            Ok(None)
        }
        Err(other) => {
            prop_assert!(false, "an unexpected error: {:?}", other);
            Ok(None)
        }
    }
}

fn tokens_of(record: &StoredRecord) -> Vec<String> {
    record
        .pair
        .iter()
        .flat_map(|p| {
            [
                p.access.expose_secret().to_owned(),
                p.refresh.expose_secret().to_owned(),
            ]
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn replies_of_arbitrary_bytes(endpoint in endpoint(), status in status(),
                                  body in prop::collection::vec(any::<u8>(), 0..256)) {
        check_reply(endpoint, status, &body)?;
    }

    #[test]
    fn replies_of_arbitrary_json(endpoint in endpoint(), status in status(), body in json_tree()) {
        check_reply(endpoint, status, body.to_string().as_bytes())?;
    }

    #[test]
    fn envelopes_around_arbitrary_json(endpoint in endpoint(), status in status(), data in json_tree(),
                                       code in prop::option::of(any::<String>()),
                                       message in prop::option::of(any::<String>())) {
        let ok = json!({"success": true, "data": data}).to_string();
        check_reply(endpoint, status, ok.as_bytes())?;
        if (200..300).contains(&status) {
            // `data` as serde_json reads it back (floats may not round-trip exactly).
            let written: Value = serde_json::from_str(&ok).expect("JSON");
            let read = parse_envelope(endpoint, status, ok.as_bytes()).ok();
            prop_assert_eq!(read.as_ref(), Some(&written["data"]));
        }
        let refusal = json!({"success": false, "error": {"code": code, "message": message}});
        match parse_envelope(endpoint, status, refusal.to_string().as_bytes()) {
            Err(Error::Api(a)) => {
                prop_assert_eq!(a.code, code);
                prop_assert_eq!(a.message, message);
            }
            other => prop_assert!(false, "a refusal gave {:?}", other),
        }
        check_token_pair(endpoint, status, data)?;
    }

    #[test]
    fn valid_token_replies_are_read_exactly(pair in pair(), status in 200..300u16) {
        let body = json!({"success": true, "data": pair_data(&pair)}).to_string();
        let data = parse_envelope(Endpoint::Refresh, status, body.as_bytes());
        let parsed = data.and_then(|d| parse_token_pair(Endpoint::Refresh, status, d));
        prop_assert_eq!(parsed.ok(), Some(pair));
    }

    #[test]
    fn mutated_token_replies(pair in pair(), status in status(),
                             mutations in prop::collection::vec(mutation(), 1..4),
                             edits in prop::collection::vec(byte_edit(), 0..3)) {
        let reply = json!({"success": true, "data": pair_data(&pair)});
        let body = edit(mutate(reply, &mutations).to_string().into_bytes(), &edits);
        check_reply(Endpoint::Make, status, &body)?;
        if let Ok(Err(e)) = parse_envelope(Endpoint::Make, status, &body)
            .map(|d| parse_token_pair(Endpoint::Make, status, d))
        {
            let text = e.to_string();
            prop_assert!(!text.contains(pair.access.expose_secret()), "{}", text);
            prop_assert!(!text.contains(pair.refresh.expose_secret()), "{}", text);
        }
    }

    #[test]
    fn token_pairs_of_arbitrary_json(endpoint in endpoint(), data in json_tree()) {
        check_token_pair(endpoint, 200, data)?;
    }

    #[test]
    fn records_round_trip(record in record()) {
        let text = encode_record(&record, "test", "here").unwrap();
        prop_assert_eq!(decode_record(text.as_bytes(), "prop", "here").ok(), Some(record));
    }

    #[test]
    fn records_of_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_record(&bytes, &[])?;
    }

    #[test]
    fn records_of_arbitrary_json(value in json_tree(), version in prop::option::of(-2..4i64)) {
        let mut value = value;
        if let (Some(v), Some(map)) = (version, value.as_object_mut()) {
            map.insert("version".into(), json!(v));
        }
        check_record(value.to_string().as_bytes(), &[])?;
    }

    #[test]
    fn mutated_records(record in record(),
                       mutations in prop::collection::vec(mutation(), 1..4),
                       edits in prop::collection::vec(byte_edit(), 0..3)) {
        let tokens = tokens_of(&record);
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let value: Value = serde_json::from_str(encode_record(&record, "test", "here").unwrap().as_str()).expect("JSON");
        let json_mutated = mutate(value, &mutations).to_string().into_bytes();
        check_record(&json_mutated, &tokens)?;
        check_record(&edit(json_mutated, &edits), &tokens)?;
        check_record(&edit(encode_record(&record, "test", "here").unwrap().as_bytes().to_vec(), &edits), &tokens)?;
    }
}

/// Writes `bytes` as a private store file.
fn write_private(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

const FILE_KEYS: &[&str] = &["k", "other", ""];

/// A store file's content: a version, and entries under some of [`FILE_KEYS`], each a valid
/// record, a mutated one, or arbitrary JSON.
fn container() -> impl Strategy<Value = Value> {
    let entry = prop_oneof![
        2 => record().prop_map(|r| serde_json::from_str::<Value>(encode_record(&r, "test", "here").unwrap().as_str()).expect("JSON")),
        2 => (record(), prop::collection::vec(mutation(), 1..3)).prop_map(|(r, m)| {
            mutate(serde_json::from_str(encode_record(&r, "test", "here").unwrap().as_str()).expect("JSON"), &m)
        }),
        1 => json_tree(),
    ];
    (
        prop_oneof![4 => Just(json!(1)), 1 => json_tree(), 1 => (-1..4i64).prop_map(Value::from)],
        prop::collection::vec((prop::sample::select(FILE_KEYS), entry), 0..4),
        prop::collection::vec((key(), json_tree()), 0..2),
    )
        .prop_map(|(version, entries, extra)| {
            let mut top = Map::new();
            top.insert("version".into(), version);
            top.insert(
                "entries".into(),
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                ),
            );
            for (k, v) in extra {
                if k != "version" && k != "entries" {
                    top.insert(k, v);
                }
            }
            Value::Object(top)
        })
}

/// Loads every key of a store file of `bytes`: no panic, typed errors, the file untouched;
/// then, if the test key loaded, saves a record under it: the saved record loads back and
/// every other key loads as before.
fn check_file_store(bytes: &[u8], new_record: &StoredRecord) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.json");
    write_private(&path, bytes);
    let store = FileStore::new(&path);
    let mut before = Vec::new();
    for name in FILE_KEYS {
        let loaded = store.load(&StoreKey::new(*name));
        if let Ok(Some(record)) = &loaded {
            let text = encode_record(record, "test", "here").unwrap();
            let again = decode_record(text.as_bytes(), "p", "h").ok();
            prop_assert_eq!(again.as_ref(), Some(record));
        }
        if let Err(e) = &loaded {
            prop_assert!(
                matches!(
                    e,
                    StoreError::Corrupt { .. } | StoreError::UnsupportedVersion { .. }
                ),
                "{:?}",
                e
            );
            prop_assert!(e.to_string().contains("s.json"), "{}", e);
        }
        before.push(loaded.map_err(|e| e.to_string()));
    }
    prop_assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "a load changed the file"
    );

    let key = StoreKey::new("k");
    match store.save(&key, new_record) {
        Ok(()) => {
            prop_assert!(
                before[0].is_ok(),
                "saved over an unreadable record: {:?}",
                before[0]
            );
            let saved = store.load(&key).ok().flatten();
            prop_assert_eq!(saved.as_ref(), Some(new_record));
            for (name, was) in FILE_KEYS.iter().zip(&before).skip(1) {
                let now = store.load(&StoreKey::new(*name)).map_err(|e| e.to_string());
                prop_assert_eq!(&now, was, "saving k changed {:?}", name);
            }
        }
        Err(_) => {
            prop_assert!(before[0].is_err(), "a readable store refused a save");
            prop_assert_eq!(
                std::fs::read(&path).expect("read"),
                bytes,
                "a refused save changed the file"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn store_files_of_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200), new in record()) {
        check_file_store(&bytes, &new)?;
    }

    #[test]
    fn store_files_of_generated_containers(value in container(), new in record(),
                                           edits in prop::collection::vec(byte_edit(), 0..2)) {
        check_file_store(&edit(value.to_string().into_bytes(), &edits), &new)?;
    }
}
