//! What libpq does and the `postgres` crate does not: the `PG*` environment variables for
//! what a connection string leaves out, the password file (`PGPASSFILE`, else `~/.pgpass`),
//! and `sslmode=prefer` (TLS without certificate verification when the server offers it).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::postgres::config::Host;
use ::postgres::Config;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use zeroize::Zeroizing;

/// Fills in from `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGOPTIONS`, `PGAPPNAME`,
/// `PGCONNECT_TIMEOUT`, then the password from `PGPASSWORD` or the password file, each only
/// when `config` has none (the connection string wins, as in libpq). `env` reads a variable.
///
/// # Errors
/// A message (quoting no secret) when a variable is malformed, or the password file is
/// accessible by group or others, or cannot be read.
pub(crate) fn apply_environment(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    // The variable `name`, when the connection string left the setting out (`given` false).
    let unless = |given: bool, name: &str| if given { None } else { var(name) };
    if let Some(hosts) = unless(!config.get_hosts().is_empty(), "PGHOST") {
        for host in hosts.split(',') {
            config.host(host);
        }
    }
    if let Some(port) = unless(!config.get_ports().is_empty(), "PGPORT") {
        config.port(port.parse().map_err(|_| "PGPORT is not a port number")?);
    }
    if let Some(user) = unless(config.get_user().is_some(), "PGUSER") {
        config.user(&user);
    }
    if config.get_user().is_none() {
        // As libpq (and the postgres crate when it connects): the OS user's name, so that
        // the password file is searched for the user that will log in.
        if let Ok(name) = whoami::username() {
            config.user(&name);
        }
    }
    if let Some(db) = unless(config.get_dbname().is_some(), "PGDATABASE") {
        config.dbname(&db);
    }
    if let Some(options) = unless(config.get_options().is_some(), "PGOPTIONS") {
        config.options(&options);
    }
    if let Some(name) = unless(config.get_application_name().is_some(), "PGAPPNAME") {
        config.application_name(&name);
    }
    if let Some(secs) = unless(config.get_connect_timeout().is_some(), "PGCONNECT_TIMEOUT") {
        let secs: u64 = secs
            .parse()
            .map_err(|_| "PGCONNECT_TIMEOUT is not a number of seconds")?;
        config.connect_timeout(Duration::from_secs(secs.max(2)));
    }
    if config.get_password().is_some() {
        return Ok(());
    }
    if let Some(password) = var("PGPASSWORD").map(Zeroizing::new) {
        config.password(password.as_bytes());
        return Ok(());
    }
    let file = match var("PGPASSFILE") {
        Some(path) => PathBuf::from(path),
        None => match var("HOME") {
            Some(home) => Path::new(&home).join(".pgpass"),
            None => return Ok(()),
        },
    };
    if let Some(password) = password_from_file(&file, config)? {
        config.password(password.as_bytes());
    }
    Ok(())
}

/// The password of the first line of the password file `path` that matches `config`'s first
/// host, port, database and user; `None` when the file does not exist or no line matches.
fn password_from_file(path: &Path, config: &Config) -> Result<Option<Zeroizing<String>>, String> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("password file {shown}: {e}")),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "password file {shown} is accessible by group or others (mode {mode:o}); \
                 refusing to use it: run `chmod 600 {shown}`"
            ));
        }
    }
    if !meta.is_file() {
        return Err(format!("password file {shown} is not a regular file"));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("password file {shown}: {e}"))?,
    );
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(Host::Unix(_)) => "localhost".to_owned(),
        None => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let Some(user) = config.get_user() else {
        // No user name at all (not even the OS user's): no line can be meant for it.
        return Ok(None);
    };
    let dbname = config.get_dbname().unwrap_or(user);
    let wanted = [host.as_str(), port.as_str(), dbname, user];
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let fields = split_fields(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = fields[..4]
            .iter()
            .zip(wanted)
            .all(|(field, want)| field.as_str() == "*" || field.as_str() == want);
        if matches {
            return Ok(Some(fields[4].clone()));
        }
    }
    Ok(None)
}

/// The `:`-separated fields of a password file line, `\:` and `\\` unescaped.
fn split_fields(line: &str) -> Vec<Zeroizing<String>> {
    let mut fields = vec![Zeroizing::new(String::new())];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let last = fields.len() - 1;
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields[last].push(next);
                }
            }
            ':' => fields.push(Zeroizing::new(String::new())),
            c => fields[last].push(c),
        }
    }
    fields
}

/// A rustls configuration for `sslmode=prefer`: encryption with any certificate, as libpq's
/// `prefer` (and `require` without a root certificate) does. The handshake's signatures are
/// still checked, so the server holds the key of the certificate it shows.
pub(crate) fn unverified_tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    )
}

struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl fmt::Debug for AnyCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnyCertificate")
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_connection_string_wins_and_the_environment_fills_in() {
        let mut config: Config = "host=db user=app".parse().unwrap();
        let env = env_of(&[
            ("PGHOST", "other"),
            ("PGUSER", "other"),
            ("PGPORT", "6543"),
            ("PGDATABASE", "tokens"),
            ("PGPASSWORD", "pw"),
        ]);
        apply_environment(&mut config, &env).unwrap();
        assert_eq!(config.get_hosts(), &[Host::Tcp("db".into())]);
        assert_eq!(config.get_user(), Some("app"));
        assert_eq!(config.get_ports(), &[6543]);
        assert_eq!(config.get_dbname(), Some("tokens"));
        assert_eq!(config.get_password(), Some(&b"pw"[..]));
    }

    #[test]
    fn with_no_user_given_the_os_user_logs_in_and_is_looked_up() {
        let mut config: Config = "host=db".parse().unwrap();
        apply_environment(&mut config, &env_of(&[])).unwrap();
        let os_user = whoami::username().unwrap();
        assert!(!os_user.is_empty());
        assert_eq!(config.get_user(), Some(os_user.as_str()));
    }

    #[test]
    fn password_file_lines_match_with_wildcards_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(
            &path,
            "# comment\nother:*:*:*:wrong\ndb:5432:*:app:p\\:w\\\\d\n*:*:*:*:fallback\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let config: Config = "host=db user=app dbname=x".parse().unwrap();
        let found = password_from_file(&path, &config).unwrap();
        assert_eq!(found.as_deref().map(String::as_str), Some("p:w\\d"));
        let config: Config = "host=elsewhere user=app".parse().unwrap();
        let found = password_from_file(&path, &config).unwrap();
        assert_eq!(found.as_deref().map(String::as_str), Some("fallback"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = password_from_file(&path, &config).unwrap_err();
            assert!(
                e.contains("group or others") && !e.contains("fallback"),
                "{e}"
            );
        }
        assert!(password_from_file(&dir.path().join("none"), &config)
            .unwrap()
            .is_none());
    }
}
