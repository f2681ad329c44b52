//! The example binaries (the `chatapp` CLI and the demo) run as real child processes against a
//! `FakeChatApp` in this process, and the stores they leave behind.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[cfg(feature = "file")]
use chatapp_session::store::FileStore;
use chatapp_session::store::{StoreKey, StoredRecord, TokenStore};
use chatapp_session::testing::{FakeChatApp, DEFAULT_APP_ID, DEFAULT_EMAIL, DEFAULT_PASSWORD};

/// An example binary built by `cargo test`: `target/<profile>/examples/<name>`, found beside
/// this test binary (`target/<profile>/deps/<test>-<hash>`).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run the full `cargo test` (it builds the examples before the tests), \
         not `cargo test --test <name>` alone",
        path.display()
    );
    path
}

/// What a finished child process did.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, showing everything the process said when it differs.
    pub fn expect_code(&self, code: i32, what: &str) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The one line on stderr of a failed command: `chatapp: ...`, short, nothing else.
    pub fn one_error_line(&self, what: &str) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{what}: stderr must be exactly one line:\n{}",
            self.stderr
        );
        let line = lines[0];
        assert!(line.starts_with("chatapp: "), "{what}: {line}");
        assert!(
            line.len() <= 400,
            "{what}: the error line is {} characters long: {line}",
            line.len()
        );
        line
    }
}

/// The `chatapp` CLI, aimed at a server and a store, with a clean environment (no proxy, no
/// `RUST_LOG`, no `CHATAPP_*` from the developer's shell).
#[derive(Clone, Debug)]
pub struct Cli {
    pub base_url: String,
    pub store: String,
    pub env: Vec<(String, String)>,
    /// Run under `/usr/bin/time -f %M -o FILE` to learn the peak memory.
    pub time_file: Option<PathBuf>,
}

impl Cli {
    /// The CLI against `server`, with its default account's credentials in the environment,
    /// keeping the pair in `store` (a SPEC such as `file:PATH`).
    pub fn new(server: &FakeChatApp, store: impl Into<String>) -> Cli {
        Cli {
            base_url: server.base_url(),
            store: store.into(),
            env: vec![
                ("CHATAPP_EMAIL".into(), DEFAULT_EMAIL.into()),
                ("CHATAPP_PASSWORD".into(), DEFAULT_PASSWORD.into()),
                ("CHATAPP_APP_ID".into(), DEFAULT_APP_ID.into()),
            ],
            time_file: None,
        }
    }

    /// The CLI on the file store at `path`.
    pub fn file(server: &FakeChatApp, path: &Path) -> Cli {
        Cli::new(server, format!("file:{}", path.display()))
    }

    /// Sets (or replaces) an environment variable of the child.
    pub fn with_env(mut self, name: &str, value: &str) -> Cli {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.into(), value.into()));
        self
    }

    /// Removes an environment variable of the child.
    pub fn without_env(mut self, name: &str) -> Cli {
        self.env.retain(|(n, _)| n != name);
        self
    }

    /// Runs `chatapp --base-url URL --store SPEC <args>`.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let mut all: Vec<&OsStr> = vec![
            OsStr::new("--base-url"),
            OsStr::new(&self.base_url),
            OsStr::new("--store"),
            OsStr::new(&self.store),
        ];
        all.extend(args.iter().map(AsRef::as_ref));
        self.run_raw(&all)
    }

    /// Runs `chatapp <args>` exactly as given.
    pub fn run_raw<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let chatapp = example("chatapp");
        let mut command = match &self.time_file {
            Some(file) => {
                let mut c = Command::new("/usr/bin/time");
                c.arg("-f").arg("%M").arg("-o").arg(file).arg(&chatapp);
                c
            }
            None => Command::new(&chatapp),
        };
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(n, v)| (n, v)))
            .stdin(Stdio::null());
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        Run::from_output(command.output().expect("the chatapp example runs"))
    }
}

/// The key under which the CLI keeps the default account's record for `server`.
pub fn cli_key(server: &FakeChatApp) -> StoreKey {
    StoreKey::for_account(&server.base_url(), DEFAULT_EMAIL, DEFAULT_APP_ID)
}

/// Saves a pair the server issued (without counting a make) where the CLI will find it.
pub fn seed_pair(server: &FakeChatApp, store: &dyn TokenStore) -> StoredRecord {
    let record = StoredRecord {
        pair: Some(server.issue_pair()),
        makes: Vec::new(),
        ..Default::default()
    };
    store
        .save(&cli_key(server), &record)
        .expect("seeding the store");
    record
}

/// The record the CLI keeps for `server` in the file store at `path`.
#[cfg(feature = "file")]
pub fn file_record(server: &FakeChatApp, path: &Path) -> Option<StoredRecord> {
    FileStore::new(path)
        .load(&cli_key(server))
        .expect("the store file is readable")
}
