//! Bad stored data through the `chatapp` CLI: a truncated, empty, mistyped or unknown-version
//! store, or one that other users can read, makes every command exit 6 with one line that
//! names the file, sends nothing to the server, never panics, and leaves the bytes as they
//! were. (`tests/file_store.rs` and `tests/sqlite_store.rs` check the typed errors of the
//! stores themselves.)

mod support;

use std::fs;

use chatapp_session::store::FileStore;
use chatapp_session::testing::FakeChatApp;

use support::{cli_key, seed_pair, write_private, Cli};

/// Every command, each of which must read the store before anything else.
const COMMANDS: &[&[&str]] = &[
    &["status"],
    &["token"],
    &["call", "GET", "/v1/licenses"],
    &["login"],
    &["logout"],
];

/// Runs every command on a damaged store: exit 6, one line naming `location` (and saying
/// `says`), no request to the server, and `unchanged()` still true afterwards.
fn every_command_exits_6(
    server: &FakeChatApp,
    cli: &Cli,
    what: &str,
    location: &str,
    says: &str,
    unchanged: &dyn Fn() -> bool,
) {
    for &command in COMMANDS {
        let what = format!("{what}, `{}`", command.join(" "));
        let run = cli.run(command);
        run.expect_code(6, &what);
        assert_eq!(run.stdout, "", "{what}");
        let line = run.one_error_line(&what);
        assert!(
            line.contains(location),
            "{what}: {line} does not name {location}"
        );
        assert!(line.contains(says), "{what}: {line} does not say {says:?}");
        assert!(!line.contains("SECRET"), "{what}: {line}");
        assert!(unchanged(), "{what}: the stored bytes changed");
    }
    assert_eq!(
        server.counters(),
        Default::default(),
        "{what}: the server was called"
    );
}

#[test]
fn a_damaged_store_file_makes_every_command_exit_6_naming_the_file() {
    let server = FakeChatApp::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.json");
    let cli = Cli::file(&server, &path);
    let key = cli_key(&server);
    let store = FileStore::new(&path);
    seed_pair(&server, &store);
    let real = fs::read(&path).unwrap();
    let record = |body: &str| {
        format!(
            r#"{{"version":1,"entries":{{{}:{body}}}}}"#,
            serde_json::to_string(key.as_str()).unwrap()
        )
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "corrupt"),
        (
            "truncated",
            real[..real.len() * 2 / 3].to_vec(),
            "corrupt",
        ),
        ("not UTF-8", b"\xff\xfe\x00\x01".to_vec(), "corrupt"),
        (
            "a file version of the wrong type",
            br#"{"version":"1","entries":{}}"#.to_vec(),
            "corrupt",
        ),
        (
            "file version 0",
            br#"{"version":0,"entries":{}}"#.to_vec(),
            "schema version 0 is not supported",
        ),
        (
            "a newer file version",
            br#"{"version":2,"entries":{}}"#.to_vec(),
            "schema version 2 is not supported (this build reads up to 1)",
        ),
        (
            "entries of the wrong type",
            br#"{"version":1,"entries":["access-SECRET"]}"#.to_vec(),
            "corrupt",
        ),
        (
            "a token of the wrong type",
            record(r#"{"version":1,"pair":{"accessToken":5,"accessTokenEndTime":1,"refreshToken":"refresh-SECRET","refreshTokenEndTime":2,"cabinetUserId":3}}"#).into_bytes(),
            "corrupt",
        ),
        (
            "an end time of the wrong type",
            record(r#"{"version":1,"pair":{"accessToken":"access-SECRET","accessTokenEndTime":"soon","refreshToken":"refresh-SECRET","refreshTokenEndTime":2,"cabinetUserId":3}}"#).into_bytes(),
            "corrupt",
        ),
        (
            "a record without a version",
            record(r#"{"pair":null,"makes":[]}"#).into_bytes(),
            "corrupt",
        ),
        (
            "a newer record version",
            record(r#"{"version":3,"pair":null}"#).into_bytes(),
            "schema version 3 is not supported (this build reads up to 2)",
        ),
    ];
    let location = path.display().to_string();
    for (what, bytes, says) in cases {
        write_private(&path, &bytes);
        every_command_exits_6(&server, &cli, what, &location, says, &|| {
            fs::read(&path).unwrap() == bytes
        });
    }
    // Repaired, the store works again with the pair it had.
    write_private(&path, &real);
    cli.run(&["call", "GET", "/v1/licenses"])
        .expect_code(0, "the repaired store");
    assert_eq!(server.counters().makes, 0);
}

#[test]
#[cfg(unix)]
fn a_store_file_others_can_read_is_refused() {
    let server = FakeChatApp::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.json");
    let cli = Cli::file(&server, &path);
    seed_pair(&server, &FileStore::new(&path));
    insecure_modes_are_refused(&server, &cli, &path, &[0o644, 0o640, 0o604, 0o620, 0o602]);
}

/// For each of `modes` on the store file at `path`, every command exits 6 saying `chmod 600`
/// and leaves the bytes and the mode as they were; back at 0600, a call works again.
fn insecure_modes_are_refused(
    server: &FakeChatApp,
    cli: &Cli,
    path: &std::path::Path,
    modes: &[u32],
) {
    use std::os::unix::fs::PermissionsExt;
    let bytes = fs::read(path).unwrap();
    for &mode in modes {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        let mode_now = || fs::metadata(path).unwrap().permissions().mode() & 0o777;
        every_command_exits_6(
            server,
            cli,
            &format!("mode {mode:o}"),
            &path.display().to_string(),
            "chmod 600",
            &|| fs::read(path).unwrap() == bytes && mode_now() == mode,
        );
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    cli.run(&["call", "GET", "/v1/licenses"])
        .expect_code(0, "mode 600 again");
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use chatapp_session::store::{SqliteStore, StoredRecord};
    use chatapp_session::testing::encode_record;
    use std::path::Path;

    /// A database holding the CLI's record for `server`, closed again.
    fn seeded(server: &FakeChatApp, path: &Path) -> StoredRecord {
        let store = SqliteStore::open(path).unwrap();
        seed_pair(server, &store)
    }

    #[test]
    fn a_damaged_sqlite_row_makes_every_command_exit_6_naming_the_database() {
        let server = FakeChatApp::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        let cli = Cli::new(&server, format!("sqlite:{}", path.display()));
        let key = cli_key(&server);
        let record = seeded(&server, &path);
        let real = encode_record(&record, "test", "here").unwrap();
        let cases: Vec<(&str, String, &str)> = vec![
            ("an empty record", String::new(), "corrupt"),
            (
                "a truncated record",
                real[..real.len() / 2].to_owned(),
                "corrupt",
            ),
            (
                "a record version of the wrong type",
                r#"{"version":"1","pair":null}"#.into(),
                "corrupt",
            ),
            (
                "a token of the wrong type",
                r#"{"version":1,"pair":{"accessToken":5,"accessTokenEndTime":1,"refreshToken":"refresh-SECRET","refreshTokenEndTime":2,"cabinetUserId":3}}"#.into(),
                "corrupt",
            ),
            (
                "a newer record version",
                r#"{"version":3,"pair":null}"#.into(),
                "schema version 3 is not supported (this build reads up to 2)",
            ),
        ];
        let location = format!("sqlite:{}", path.display());
        for (what, text, says) in cases {
            support::set_sqlite_row(&path, key.as_str(), &text);
            every_command_exits_6(&server, &cli, what, &location, says, &|| {
                support::sqlite_row(&path, key.as_str()) == text
            });
        }
        support::set_sqlite_row(&path, key.as_str(), &real);
        cli.run(&["call", "GET", "/v1/licenses"])
            .expect_code(0, "the repaired row");
        assert_eq!(server.counters().makes, 0);
    }

    #[test]
    fn a_damaged_sqlite_file_makes_every_command_exit_6_naming_the_database() {
        let server = FakeChatApp::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        let cli = Cli::new(&server, format!("sqlite:{}", path.display()));

        // A newer schema.
        seeded(&server, &path);
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        let bytes = fs::read(&path).unwrap();
        every_command_exits_6(
            &server,
            &cli,
            "a newer schema",
            &path.display().to_string(),
            "schema version 7 is not supported (this build reads up to 1)",
            &|| fs::read(&path).unwrap() == bytes,
        );

        // Not a database at all.
        let bytes =
            b"SQLite format 2? no: a text file where the database should be.......\n".repeat(20);
        write_private(&path, &bytes);
        every_command_exits_6(
            &server,
            &cli,
            "not a database",
            &path.display().to_string(),
            "not a SQLite database",
            &|| fs::read(&path).unwrap() == bytes,
        );
    }

    #[test]
    #[cfg(unix)]
    fn a_database_others_can_read_is_refused() {
        let server = FakeChatApp::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.db");
        let cli = Cli::new(&server, format!("sqlite:{}", path.display()));
        seeded(&server, &path);
        insecure_modes_are_refused(&server, &cli, &path, &[0o644, 0o640, 0o604]);
    }
}
