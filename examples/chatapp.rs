//! `chatapp`: a command-line client that keeps a ChatApp session in a store.
//!
//! ```text
//! chatapp [--base-url URL] [--store SPEC] [--timeout SECS] [--lock-timeout SECS] [--account EMAIL:APPID] <command>
//!   login | status | token | call METHOD PATH [--json BODY] | logout | accounts
//! ```
//! Credentials come from `CHATAPP_EMAIL`, `CHATAPP_PASSWORD` and `CHATAPP_APP_ID`;
//! `CHATAPP_BASE_URL` overrides the default base URL, `--base-url` overrides both.
//! `--timeout` bounds each HTTP exchange (default 30 s); `--lock-timeout` bounds the wait for
//! another process's refresh (default 30 s, or `--timeout` when that is longer; never shorter
//! than `--timeout`), then exit 6.
//! Without `CHATAPP_EMAIL` and `CHATAPP_APP_ID`, status/token/call/logout use the one account
//! stored for the base URL (several: exit 2 naming them; choose with `--account`).
//! `CHATAPP_STORE_KEY` (base64 of 32 bytes | `keyring:SERVICE` | `file:PATH`) encrypts the
//! `file:`, `sqlite:` and `postgres:` stores (feature `encryption`); a PostgreSQL password is
//! best given by `PGPASSWORD` or a `0600` password file, not in the `--store` conninfo.
//! Exit codes: 0 ok, 2 usage, 3 rejected by the server, 4 make quota exhausted,
//! 5 network or server failure, 6 storage failure.

use std::env;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chatapp_session::store::{StoreKey, TokenStore};
use chatapp_session::{Credentials, Error, Session};
use serde_json::{json, Value};

#[path = "support/logging.rs"]
mod logging;
use logging::init_logging;

const USAGE: &str = "usage: chatapp [--base-url URL] [--store SPEC] [--timeout SECS] [--lock-timeout SECS] [--account EMAIL:APPID] <command>
commands:
  login                            tokens.make with CHATAPP_EMAIL, CHATAPP_PASSWORD, CHATAPP_APP_ID; save the pair
  status                           what is stored, as one JSON object (no secrets)
  token                            print a usable access token
  call METHOD PATH [--json BODY]   authenticated request; print the reply's data as JSON
  logout                           delete the stored pair (the quota ledger stays)
  accounts                         the accounts stored for the base URL, as JSON (no secrets)
Without CHATAPP_EMAIL and CHATAPP_APP_ID, status/token/call/logout use the one account
stored for the base URL; with several, choose one with --account EMAIL:APPID.
SPEC: memory | file:PATH | sqlite:PATH | keyring:SERVICE | postgres:CONNINFO
      (default: file in the user's config dir)
--timeout SECS       bound on each HTTP exchange (default 30)
--lock-timeout SECS  bound on the wait for another process's refresh (default 30, or --timeout
                     when that is longer; never shorter than --timeout); past it: exit 6
CHATAPP_STORE_KEY (base64 of 32 bytes | keyring:SERVICE | file:PATH) encrypts file:, sqlite: and
      postgres: stores (feature `encryption`); status then also has \"encrypted\": true.
      CHATAPP_STORE_KEY_PREVIOUS (same forms) is still read: set both to rotate the key.
postgres: the password and any connection setting the CONNINFO leaves out come from PGPASSWORD,
      PGPASSFILE or ~/.pgpass (0600) and PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE,
      PGSSLROOTCERT, PGAPPNAME, PGCONNECT_TIMEOUT, PGOPTIONS: keep the password off the command line";

/// A failure with its exit code and one line for stderr.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidCredentials(_)
            | Error::RefreshRejected(_)
            | Error::TokenRejected(_)
            | Error::CredentialsRequired
            | Error::Api(_) => 3,
            Error::QuotaExhausted { .. } => 4,
            Error::Storage(_) => 6,
            Error::Config(_) => 2,
            _ => 5,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

enum Command {
    Login,
    Status,
    Token,
    Call {
        method: String,
        path: String,
        body: Option<Value>,
    },
    Logout,
    Accounts,
}

struct Options {
    base_url: Option<String>,
    store: Option<String>,
    timeout: Option<Duration>,
    lock_timeout: Option<Duration>,
    /// `--account EMAIL:APPID`.
    account: Option<(String, String)>,
    command: Command,
}

/// The HTTP timeout when `--timeout` is not given (the session's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The lock timeout when `--lock-timeout` is not given (the stores' default).
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// A positive number of seconds given to `flag`.
fn seconds(flag: &str, text: &str) -> Result<Duration, Failure> {
    text.parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            Failure::usage(format!(
                "{flag} {text:?} is not a positive number of seconds"
            ))
        })
}

fn parse_args(args: &[String]) -> Result<Options, Failure> {
    let mut base_url = None;
    let mut store = None;
    let mut timeout = None;
    let mut lock_timeout = None;
    let mut account = None;
    let mut json_body: Option<String> = None;
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| Failure::usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--base-url" => base_url = Some(value("--base-url")?),
            "--store" => store = Some(value("--store")?),
            "--timeout" => timeout = Some(seconds("--timeout", &value("--timeout")?)?),
            "--lock-timeout" => {
                lock_timeout = Some(seconds("--lock-timeout", &value("--lock-timeout")?)?)
            }
            "--json" => json_body = Some(value("--json")?),
            "--account" => {
                let text = value("--account")?;
                let parsed = text
                    .rsplit_once(':')
                    .filter(|(e, a)| !e.is_empty() && !a.is_empty())
                    .map(|(e, a)| (e.to_owned(), a.to_owned()));
                account = Some(parsed.ok_or_else(|| {
                    Failure::usage(format!("--account {text:?} is not EMAIL:APPID"))
                })?);
            }
            "-h" | "--help" => {
                return Err(Failure {
                    code: 0,
                    message: USAGE.into(),
                })
            }
            flag if flag.starts_with("--") => {
                return Err(Failure::usage(format!("unknown option {flag}")))
            }
            word => words.push(word.to_owned()),
        }
    }
    let command = match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["login"] => Command::Login,
        ["status"] => Command::Status,
        ["token"] => Command::Token,
        ["logout"] => Command::Logout,
        ["accounts"] => Command::Accounts,
        ["call", method, path] => {
            if !path.starts_with('/') {
                return Err(Failure::usage(format!("PATH {path:?} must start with /")));
            }
            let body = match &json_body {
                None => None,
                Some(text) => Some(
                    serde_json::from_str(text)
                        .map_err(|e| Failure::usage(format!("--json is not valid JSON: {e}")))?,
                ),
            };
            Command::Call {
                method: method.to_ascii_uppercase(),
                path: (*path).to_owned(),
                body,
            }
        }
        [] => return Err(Failure::usage("no command given")),
        other => {
            return Err(Failure::usage(format!(
                "unknown command {:?}",
                other.join(" ")
            )))
        }
    };
    if json_body.is_some() && !matches!(command, Command::Call { .. }) {
        return Err(Failure::usage("--json goes with call"));
    }
    // A waiter must not give up while the holder may still be waiting for its refresh.
    if let Some(lock) = lock_timeout {
        let http = timeout.unwrap_or(DEFAULT_TIMEOUT);
        if lock < http {
            return Err(Failure::usage(format!(
                "--lock-timeout {} s is shorter than the HTTP timeout ({} s): a process would \
                 give up while another may still be refreshing",
                lock.as_secs_f64(),
                http.as_secs_f64()
            )));
        }
    }
    Ok(Options {
        base_url,
        store,
        timeout,
        lock_timeout,
        account,
        command,
    })
}

/// The default store: `session.json` in the user's config directory.
fn default_store_path() -> Result<PathBuf, Failure> {
    let base = env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| Failure::usage("no HOME or XDG_CONFIG_HOME: pass --store"))?;
    Ok(base.join("chatapp-session").join("session.json"))
}

/// The store encryption `CHATAPP_STORE_KEY` (and `CHATAPP_STORE_KEY_PREVIOUS`) ask for.
#[cfg(feature = "encryption")]
fn store_encryption() -> Result<Option<chatapp_session::store::Encryption>, Failure> {
    use chatapp_session::store::{Encryption, EncryptionKey};
    let Some(spec) = env_nonempty("CHATAPP_STORE_KEY") else {
        return Ok(None);
    };
    let key = EncryptionKey::from_spec(&spec).map_err(Error::from)?;
    let mut encryption = Encryption::new(key);
    if let Some(previous) = env_nonempty("CHATAPP_STORE_KEY_PREVIOUS") {
        encryption =
            encryption.with_previous(EncryptionKey::from_spec(&previous).map_err(Error::from)?);
    }
    Ok(Some(encryption))
}

/// The store, and whether it encrypts its records.
fn open_store(
    spec: Option<&str>,
    lock_timeout: Duration,
) -> Result<(Box<dyn TokenStore>, bool), Failure> {
    #[cfg(feature = "encryption")]
    let encryption = store_encryption()?;
    #[cfg(not(feature = "encryption"))]
    if env_nonempty("CHATAPP_STORE_KEY").is_some() {
        return Err(Failure::usage(
            "CHATAPP_STORE_KEY: this build lacks the `encryption` cargo feature",
        ));
    }
    // The file, SQLite and PostgreSQL stores, encrypted when a key was given.
    macro_rules! maybe_encrypted {
        ($store:expr) => {{
            let store = $store;
            #[cfg(feature = "encryption")]
            let store = match encryption {
                Some(encryption) => store.with_encryption(encryption),
                None => store,
            };
            let encrypted = store.is_encrypted();
            Ok((Box::new(store) as Box<dyn TokenStore>, encrypted))
        }};
    }
    let Some(spec) = spec else {
        return maybe_encrypted!(
            chatapp_session::store::FileStore::new(default_store_path()?)
                .with_lock_timeout(lock_timeout)
        );
    };
    let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
    let need_arg = |what: &str| {
        if arg.is_empty() {
            Err(Failure::usage(format!("store spec {kind}: needs {what}")))
        } else {
            Ok(())
        }
    };
    match kind {
        #[cfg(feature = "memory")]
        "memory" => Ok((Box::new(chatapp_session::store::MemoryStore::new()), false)),
        "file" => {
            need_arg("a PATH")?;
            maybe_encrypted!(chatapp_session::store::FileStore::new(arg).with_lock_timeout(lock_timeout))
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            need_arg("a PATH")?;
            maybe_encrypted!(chatapp_session::store::SqliteStore::open(arg)
                .map_err(Error::from)?
                .with_lock_timeout(lock_timeout))
        }
        #[cfg(feature = "keyring")]
        "keyring" => {
            need_arg("a SERVICE")?;
            Ok((
                Box::new(
                    chatapp_session::store::KeyringStore::new(arg).with_lock_timeout(lock_timeout),
                ),
                false,
            ))
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            need_arg("a CONNINFO")?;
            maybe_encrypted!(chatapp_session::store::PostgresStore::connect(arg)
                .map_err(Error::from)?
                .with_lock_timeout(lock_timeout))
        }
        // Reached only for the stores whose feature is off in this build.
        #[allow(unreachable_patterns)]
        "memory" | "sqlite" | "keyring" | "postgres" => Err(Failure::usage(format!(
            "store {kind}: this build lacks the `{kind}` cargo feature"
        ))),
        other => Err(Failure::usage(format!(
            "unknown store {other:?} (memory | file:PATH | sqlite:PATH | keyring:SERVICE | postgres:CONNINFO)"
        ))),
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.is_empty())
}

fn run(args: &[String]) -> Result<(), Failure> {
    let options = parse_args(args)?;
    let base_url = options
        .base_url
        .or_else(|| env_nonempty("CHATAPP_BASE_URL"))
        .unwrap_or_else(|| "https://api.chatapp.online".to_owned());
    let base_url = base_url.trim_end_matches('/').to_owned();
    let email = env_nonempty("CHATAPP_EMAIL");
    let app_id = env_nonempty("CHATAPP_APP_ID");
    let password = env_nonempty("CHATAPP_PASSWORD");

    let lock_timeout = options
        .lock_timeout
        .unwrap_or_else(|| DEFAULT_LOCK_TIMEOUT.max(options.timeout.unwrap_or(DEFAULT_TIMEOUT)));
    let (store, encrypted) = open_store(options.store.as_deref(), lock_timeout)?;
    let store: Arc<dyn TokenStore> = Arc::from(store);
    if let Command::Accounts = options.command {
        return print_accounts(store.as_ref(), &base_url);
    }
    let from_env = email.clone().zip(app_id.clone());
    if let (Command::Login, Some(chosen), Some(env)) =
        (&options.command, &options.account, &from_env)
    {
        if chosen != env {
            return Err(Failure::usage(
                "--account names another account than CHATAPP_EMAIL and CHATAPP_APP_ID",
            ));
        }
    }
    let mut builder = Session::builder()
        .base_url(base_url.as_str())
        .store(Arc::clone(&store));
    let same_account = options.account.is_none() || options.account == from_env;
    if let (Some(e), Some(p), Some(a), true) = (&email, password, &app_id, same_account) {
        // The session derives the account's key, and finds a record an earlier version saved
        // under its old key.
        builder = builder.credentials(Credentials::new(e.as_str(), p, a.as_str()));
    } else {
        // The key names the account even when the password is not at hand (status, logout);
        // without one in the environment, the one account stored for the base URL.
        let key = match options.account.as_ref().or(from_env.as_ref()) {
            Some((e, a)) => StoreKey::for_account(&base_url, e, a),
            None if matches!(options.command, Command::Login) => StoreKey::for_base_url(&base_url),
            None => the_stored_account(store.as_ref(), &base_url)?
                .unwrap_or_else(|| StoreKey::for_base_url(&base_url)),
        };
        builder = builder.store_key(key.as_str());
    }
    if let Some(timeout) = options.timeout {
        builder = builder.timeout(timeout);
    }
    let session = builder.build()?;

    match options.command {
        Command::Login => {
            if email.is_none() || app_id.is_none() || env_nonempty("CHATAPP_PASSWORD").is_none() {
                return Err(Failure::usage(
                    "login needs CHATAPP_EMAIL, CHATAPP_PASSWORD and CHATAPP_APP_ID",
                ));
            }
            session.login()?;
            let status = session.status()?;
            eprintln!(
                "logged in: cabinet user {}, access token ends at {}",
                status.cabinet_user_id.unwrap_or_default(),
                status.access_expires_at.unwrap_or_default()
            );
        }
        Command::Status => {
            let s = session.status()?;
            println!(
                "{}",
                json!({
                    "stored": s.stored,
                    "access_expires_at": s.access_expires_at,
                    "refresh_expires_at": s.refresh_expires_at,
                    "cabinet_user_id": s.cabinet_user_id,
                    "makes_last_24h": s.makes_last_24h,
                    "unsaved": s.unsaved,
                    "next_make_at": s.next_make_at,
                    "encrypted": encrypted,
                })
            );
        }
        Command::Token => {
            let token = session.access_token()?;
            println!("{}", token.expose_secret());
        }
        Command::Call { method, path, body } => {
            let data = session.request(&method, &path, body.as_ref())?;
            println!("{data}");
        }
        Command::Logout => session.logout()?,
        Command::Accounts => {}
    }
    // The result is out; a pair the server gave that the store refused is still lost to the
    // next run: say so, and exit 6.
    if session.status()?.unsaved {
        return Err(Failure {
            code: 6,
            message: "the new token pair could not be saved to the store (see the warning above); \
                      the next run may have to make a new one"
                .to_owned(),
        });
    }
    Ok(())
}

/// The accounts stored for `base_url`: (key, email, appId), in key order.
fn accounts_of(
    store: &dyn TokenStore,
    base_url: &str,
) -> Result<Vec<(StoreKey, String, String)>, Failure> {
    let keys = store.keys().map_err(Error::from)?;
    Ok(keys
        .into_iter()
        .filter_map(|key| {
            let (base, email, app_id) = key.account_parts()?;
            (base == base_url).then_some((key, email, app_id))
        })
        .collect())
}

/// The one account with a pair stored for `base_url`, if there is exactly one; a usage
/// failure naming them when there are several.
fn the_stored_account(store: &dyn TokenStore, base_url: &str) -> Result<Option<StoreKey>, Failure> {
    let mut found = Vec::new();
    for (key, email, app_id) in accounts_of(store, base_url)? {
        if store
            .load(&key)
            .map_err(Error::from)?
            .is_some_and(|r| r.pair.is_some())
        {
            found.push((key, format!("{email}:{app_id}")));
        }
    }
    if found.len() > 1 {
        let names: Vec<String> = found.into_iter().map(|(_, name)| name).collect();
        return Err(Failure::usage(format!(
            "several accounts are stored for {base_url}: {}; choose one with --account EMAIL:APPID",
            names.join(", ")
        )));
    }
    Ok(found.pop().map(|(key, _)| key))
}

/// `chatapp accounts`: one JSON array on stdout, no secrets.
fn print_accounts(store: &dyn TokenStore, base_url: &str) -> Result<(), Failure> {
    let mut listed = Vec::new();
    for (key, email, app_id) in accounts_of(store, base_url)? {
        let record = store.load(&key).map_err(Error::from)?.unwrap_or_default();
        let pair = record.pair.as_ref();
        listed.push(json!({
            "email": email,
            "app_id": app_id,
            "stored": pair.is_some(),
            "access_expires_at": pair.map(|p| p.access_expires_at),
            "refresh_expires_at": pair.map(|p| p.refresh_expires_at),
            "cabinet_user_id": pair.map(|p| p.cabinet_user_id),
        }));
    }
    println!("{}", Value::Array(listed));
    Ok(())
}

fn main() -> ExitCode {
    init_logging();
    let args: Vec<String> = env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code: 0, message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(Failure { code, message }) => {
            if code == 2 && !message.contains('\n') {
                eprintln!("chatapp: {message} (see chatapp --help)");
            } else {
                eprintln!("chatapp: {}", message.replace('\n', " "));
            }
            ExitCode::from(code)
        }
    }
}
