//! `FileStore` against real files in temporary directories.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use chatapp_session::store::{FileStore, StoreKey, StoredRecord, TokenStore};
use chatapp_session::StoreError;

use support::{listing, secret_record, write_private};

support::cross_process_tests! {
    place: {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        (dir, path)
    },
    open: |path: &Path| FileStore::new(path)
}

fn store_in(dir: &tempfile::TempDir) -> (FileStore, PathBuf) {
    let path = dir.path().join("store.json");
    (FileStore::new(&path), path)
}

#[test]
fn missing_file_is_an_empty_store_and_loading_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("a").join("store.json"));
    assert!(matches!(store.load(&StoreKey::new("k")), Ok(None)));
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn debug_shows_the_path_encryption_and_lock_timeout_only_and_clones_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    store.save(&StoreKey::new("k"), &secret_record(1)).unwrap();
    let debug = format!("{:?}", store.clone());
    assert_eq!(
        debug,
        format!("FileStore {{ path: {path:?}, encrypted: false, lock_timeout: 30s }}")
    );
    assert_eq!(store.clone().path(), path);
}

#[test]
#[cfg(unix)]
fn file_is_0600_and_created_dirs_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("store.json");
    let store = FileStore::new(&path);
    store.save(&StoreKey::new("k"), &secret_record(1)).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&path.with_file_name("store.json.lock")), 0o600);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&dir.path().join("a").join("b")), 0o700);
    // A second save (a replace) keeps the mode.
    store.save(&StoreKey::new("k"), &secret_record(2)).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
#[cfg(unix)]
fn insecure_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    let key = StoreKey::new("k");
    store.save(&key, &secret_record(1)).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let before = fs::read(&path).unwrap();
        match store.load(&key) {
            Err(e @ StoreError::InsecurePermissions { .. }) => {
                let text = e.to_string();
                assert!(text.contains("chmod 600"), "{text}");
                assert!(text.contains(&path.display().to_string()), "{text}");
                assert!(!text.contains("SECRET"), "{text}");
            }
            other => panic!("mode {mode:o}: load gave {other:?}"),
        }
        assert!(matches!(
            store.save(&key, &secret_record(2)),
            Err(StoreError::InsecurePermissions { .. })
        ));
        let mut guard = store.lock(&key).unwrap();
        assert!(matches!(
            guard.load(),
            Err(StoreError::InsecurePermissions { .. })
        ));
        drop(guard);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            mode
        );
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(store.load(&key).unwrap(), Some(secret_record(1)));
}

/// The typed error a damaged file must give.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Corrupt,
    Unsupported,
}

impl Expect {
    fn matches<T>(self, result: &Result<T, StoreError>) -> bool {
        match self {
            Expect::Corrupt => matches!(result, Err(StoreError::Corrupt { .. })),
            Expect::Unsupported => matches!(result, Err(StoreError::UnsupportedVersion { .. })),
        }
    }
}

#[test]
fn corrupt_files_give_typed_errors_and_stay_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    let key = StoreKey::new("k");
    store.save(&key, &secret_record(1)).unwrap();
    store
        .save(&StoreKey::new("other"), &secret_record(2))
        .unwrap();
    let real = fs::read(&path).unwrap();

    use Expect::{Corrupt, Unsupported};
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("empty", Vec::new(), Corrupt),
        ("an open brace", b"{".to_vec(), Corrupt),
        (
            "a truncated real file",
            real[..real.len() / 2].to_vec(),
            Corrupt,
        ),
        ("a string version", br#"{"version":"x"}"#.to_vec(), Corrupt),
        ("no version", br#"{"entries":{}}"#.to_vec(), Corrupt),
        ("not an object", b"[1,2,3]".to_vec(), Corrupt),
        ("not UTF-8", b"\xff\xfe\x00".to_vec(), Corrupt),
        (
            "entries of the wrong type",
            br#"{"version":1,"entries":[]}"#.to_vec(),
            Corrupt,
        ),
        ("no entries", br#"{"version":1}"#.to_vec(), Corrupt),
        (
            "a newer file version",
            br#"{"version":2,"entries":{}}"#.to_vec(),
            Unsupported,
        ),
        (
            "wrong types in the record",
            br#"{"version":1,"entries":{"k":{"version":1,"pair":{"accessToken":5,"refreshToken":"refresh-SECRET"}}}}"#
                .to_vec(),
            Corrupt,
        ),
        (
            "a record that is not an object",
            br#"{"version":1,"entries":{"k":"access-SECRET"}}"#.to_vec(),
            Corrupt,
        ),
        (
            "a newer record version",
            br#"{"version":1,"entries":{"k":{"version":7,"pair":null}}}"#.to_vec(),
            Unsupported,
        ),
    ];
    for (what, bytes, expected) in cases {
        write_private(&path, &bytes);

        let loaded = store.load(&key);
        assert!(expected.matches(&loaded), "{what}: load gave {loaded:?}");
        let message = loaded.unwrap_err().to_string();
        assert!(!message.contains("SECRET"), "{what}: {message}");
        assert!(message.contains("store.json"), "{what}: {message}");

        let saved = store.save(&key, &secret_record(3));
        assert!(expected.matches(&saved), "{what}: save gave {saved:?}");
        let cleared = store.clear(&key);
        assert!(expected.matches(&cleared), "{what}: clear gave {cleared:?}");
        let mut guard = store.lock(&key).unwrap();
        let under_lock = guard.load();
        assert!(
            expected.matches(&under_lock),
            "{what}: lock load gave {under_lock:?}"
        );
        let saved = guard.save(&secret_record(4));
        assert!(expected.matches(&saved), "{what}: lock save gave {saved:?}");
        drop(guard);

        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "{what}: the file was changed"
        );
    }
}

#[test]
fn saving_one_key_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    let keys: Vec<StoreKey> = (0..3).map(|i| StoreKey::new(format!("key {i}"))).collect();
    for (i, key) in (0..).zip(&keys) {
        store.save(key, &secret_record(i)).unwrap();
    }
    store.save(&keys[1], &secret_record(10)).unwrap();
    store.clear(&keys[2]).unwrap();
    assert_eq!(store.load(&keys[0]).unwrap(), Some(secret_record(0)));
    assert_eq!(store.load(&keys[1]).unwrap(), Some(secret_record(10)));
    assert_eq!(
        store.load(&keys[2]).unwrap(),
        Some(StoredRecord {
            pair: None,
            makes: vec![2],
            ..Default::default()
        })
    );

    // An entry this build cannot read is carried over unchanged when another key is saved.
    let text = fs::read_to_string(&path).unwrap();
    let foreign = r#"{"version":1,"pair":{"accessToken":5}}"#;
    let edited = text.replacen(
        r#""entries":{"#,
        &format!(r#""entries":{{"foreign":{foreign},"#),
        1,
    );
    write_private(&path, edited);
    store.save(&keys[0], &secret_record(20)).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        value["entries"]["foreign"],
        serde_json::from_str::<serde_json::Value>(foreign).unwrap()
    );
    assert!(Expect::Corrupt.matches(&store.load(&StoreKey::new("foreign"))));
    assert_eq!(store.load(&keys[0]).unwrap(), Some(secret_record(20)));
    assert_eq!(store.load(&keys[1]).unwrap(), Some(secret_record(10)));
}

#[cfg(feature = "testing")]
#[test]
fn the_file_has_the_documented_form() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    store.save(&StoreKey::new("k"), &secret_record(1)).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(value["version"], 1);
    let record = value["entries"]["k"].to_string();
    assert_eq!(
        chatapp_session::testing::decode_record(record.as_bytes(), "test", "here").unwrap(),
        secret_record(1)
    );
}

#[cfg(feature = "testing")]
#[test]
fn unknown_top_level_fields_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_in(&dir);
    let record = support::codec_text(&secret_record(1));
    write_private(
        &path,
        format!(
            r#"{{"future":[1,{{"x":2}}],"version":1,"entries":{{"k":{}}},"more":null}}"#,
            record
        ),
    );
    assert_eq!(
        store.load(&StoreKey::new("k")).unwrap(),
        Some(secret_record(1))
    );
    store.save(&StoreKey::new("j"), &secret_record(2)).unwrap();
    assert_eq!(
        store.load(&StoreKey::new("k")).unwrap(),
        Some(secret_record(1))
    );
}

#[test]
fn no_temporary_file_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_in(&dir);
    for i in 0..5 {
        store
            .save(&StoreKey::new(format!("k{}", i % 2)), &secret_record(i))
            .unwrap();
    }
    store.clear(&StoreKey::new("k0")).unwrap();
    assert_eq!(listing(dir.path()), ["store.json", "store.json.lock"]);
}

#[test]
fn a_temporary_file_left_by_a_killed_save_is_removed_by_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_in(&dir);
    let key = StoreKey::new("k");
    store.save(&key, &secret_record(1)).unwrap();
    // What a save killed before its rename leaves (tests/crash.rs makes real ones), and
    // look-alikes that belong to others: another store `store.json.x`, or no such file at all.
    let orphans = [".store.json.Ab12Cd.tmp", ".store.json.zzzzzz.tmp"];
    let others = [
        ".store.json.x.Ab12Cd.tmp",
        ".store.json.Ab12Cd.tmp.bak",
        ".store.json.Ab1.tmp",
        ".store.json.Ab-2Cd.tmp",
        "store.json.Ab12Cd.tmp",
        ".other.json.Ab12Cd.tmp",
    ];
    for name in orphans.iter().chain(&others) {
        write_private(&dir.path().join(name), "access-SECRET-half-writ");
    }
    fs::create_dir(dir.path().join(".store.json.dir123.tmp")).unwrap();
    assert_eq!(store.load(&key).unwrap(), Some(secret_record(1)));
    assert_eq!(listing(dir.path()).len(), 3 + orphans.len() + others.len());

    store.save(&key, &secret_record(2)).unwrap();
    let mut expected: Vec<String> = others.iter().map(|s| s.to_string()).collect();
    expected.extend([".store.json.dir123.tmp", "store.json", "store.json.lock"].map(String::from));
    expected.sort();
    assert_eq!(listing(dir.path()), expected);
    assert_eq!(store.load(&key).unwrap(), Some(secret_record(2)));
}

#[test]
#[cfg(unix)]
fn a_failed_write_keeps_the_last_good_file_and_leaves_no_temporary_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    let path = sub.join("store.json");
    let store = FileStore::new(&path);
    let key = StoreKey::new("k");
    store.save(&key, &secret_record(1)).unwrap();
    let before = fs::read(&path).unwrap();
    // A read-only directory: the temporary file cannot be created. (Root ignores modes, so
    // only check the outcome when the write did fail.)
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o500)).unwrap();
    let result = store.save(&key, &secret_record(2));
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
    if let Err(e) = result {
        assert!(matches!(e, StoreError::Io { .. }), "{e:?}");
        assert!(!e.to_string().contains("SECRET"));
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(listing(&sub), ["store.json", "store.json.lock"]);
    } else {
        eprintln!("skipped: a read-only directory does not stop this user (root?) from writing");
    }
}

#[test]
fn the_default_lock_timeout_is_the_default_http_timeout() {
    assert_eq!(
        FileStore::new("x.json").lock_timeout(),
        std::time::Duration::from_secs(30)
    );
}
