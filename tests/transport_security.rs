//! Transport security: plain `http://` to a host other than loopback is refused before any
//! connection (library: a unit test in `transport/ureq.rs`; here the CLI, exit 2); TLS
//! certificates are verified (a local TLS server with a self-signed certificate is refused
//! with `Error::Network`, and it never receives a decrypted byte); `--timeout` bounds every
//! exchange of the CLI.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chatapp_session::store::{FileStore, TokenStore};
use chatapp_session::testing::{FakeChatApp, Fault, Route};
use chatapp_session::{Endpoint, Error, Session};

use support::{seed_pair, Cli};

/// A loopback listener standing in for a proxy: any connection the CLI tries, to any host,
/// goes to it when the proxy variables name it.
struct ProxyTrap {
    listener: TcpListener,
}

impl ProxyTrap {
    fn new() -> ProxyTrap {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        ProxyTrap { listener }
    }

    fn url(&self) -> String {
        format!("http://{}", self.listener.local_addr().unwrap())
    }

    /// The CLI with every proxy variable aimed at the trap.
    fn around(&self, cli: Cli) -> Cli {
        [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ]
        .iter()
        .fold(cli, |cli, name| cli.with_env(name, &self.url()))
    }

    /// Whether a connection came (the child has exited: anything it tried is queued).
    fn was_contacted(&self) -> bool {
        match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn cli_refuses_plain_http_to_other_hosts_without_touching_the_network() {
    let server = FakeChatApp::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let trap = ProxyTrap::new();
    let cli = trap.around(Cli::file(&server, &path));

    for url in [
        "http://example.com",
        "http://10.1.2.3:8080",
        "http://localhost.example.com",
    ] {
        for args in [
            vec!["--base-url", url, "call", "GET", "/v1/licenses"],
            vec!["--base-url", url, "login"],
            vec!["--base-url", url, "token"],
        ] {
            let what = args.join(" ");
            let mut all = vec!["--store", cli.store.as_str()];
            all.extend(&args);
            let run = cli.run_raw(&all);
            run.expect_code(2, &what);
            let line = run.one_error_line(&what);
            assert!(line.contains("refusing plain http://"), "{what}: {line}");
            assert!(!trap.was_contacted(), "{what}: a connection was tried");
        }
        // The same from CHATAPP_BASE_URL.
        let run = cli.clone().with_env("CHATAPP_BASE_URL", url).run_raw(&[
            "--store",
            cli.store.as_str(),
            "call",
            "GET",
            "/v1/licenses",
        ]);
        run.expect_code(2, url);
        assert!(
            !trap.was_contacted(),
            "{url} from the environment: a connection was tried"
        );
    }
    assert!(!path.exists(), "the store was touched");

    // The control: the same CLI, to an https:// host, does try the network, through the
    // trap, so the trap would have seen any attempt above.
    let run = cli.run_raw(&[
        "--store",
        cli.store.as_str(),
        "--base-url",
        // `.invalid` never resolves: even a CLI that ignored the proxy would reach nothing.
        "https://chatapp.invalid",
        "--timeout",
        "1",
        "login",
    ]);
    run.expect_code(5, "https:// through the trap");
    assert!(
        trap.was_contacted(),
        "the trap saw nothing: it proves nothing"
    );
    assert_eq!(server.counters(), Default::default());
}

/// What the TLS server saw.
#[derive(Debug, Default)]
struct Seen {
    connections: usize,
    /// Bytes received on the wire (the handshake: a ClientHello, an alert).
    wire_bytes: usize,
    /// Bytes decrypted: an HTTP request, if one was ever sent.
    plaintext: Vec<u8>,
    errors: Vec<String>,
}

/// A TCP stream that counts what it reads.
struct Counting<'a> {
    tcp: &'a mut TcpStream,
    read: &'a mut usize,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.tcp.read(buf)?;
        *self.read += n;
        Ok(n)
    }
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// A TLS server on 127.0.0.1 with a fresh self-signed certificate for `127.0.0.1` and
/// `localhost`: valid for the name, signed by no authority anyone trusts.
struct TlsServer {
    port: u16,
    certificate: rustls::pki_types::CertificateDer<'static>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Seen>>,
}

impl TlsServer {
    fn start() -> TlsServer {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        let certificate = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![certificate.clone()], key)
                .unwrap(),
        );
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Seen::default();
            while !stopping.load(Ordering::SeqCst) {
                let mut tcp = match listener.accept() {
                    Ok((tcp, _)) => tcp,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                seen.connections += 1;
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut counting = Counting {
                    tcp: &mut tcp,
                    read: &mut seen.wire_bytes,
                };
                let mut tls = rustls::Stream::new(&mut conn, &mut counting);
                let mut buf = [0u8; 4096];
                loop {
                    match tls.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => seen.plaintext.extend_from_slice(&buf[..n]),
                        Err(e) => {
                            seen.errors.push(e.to_string());
                            break;
                        }
                    }
                }
            }
            seen
        });
        TlsServer {
            port,
            certificate,
            stop,
            thread: Some(thread),
        }
    }

    fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Stops the server and tells what it saw.
    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The whole chain of an error's messages.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(" / {s}"));
        source = s.source();
    }
    text
}

#[test]
fn a_self_signed_certificate_is_refused_before_any_request_is_sent() {
    let server = TlsServer::start();
    let fake = FakeChatApp::start().unwrap();
    let session = Session::builder()
        .credentials(fake.credentials())
        .base_url(server.base_url())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let err = session.access_token().unwrap_err();
    let text = chain(&err);
    assert!(
        matches!(
            err,
            Error::Network {
                endpoint: Endpoint::Make,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.contains("certificate"), "{text}");
    assert!(
        text.contains("UnknownIssuer"),
        "not refused for its issuer: {text}"
    );
    assert!(!text.contains(fake.credentials().password().expose_secret()));

    // Through the CLI too: exit 5, one line.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let mut cli = Cli::file(&fake, &path);
    cli.base_url = server.base_url();
    let run = cli.run(&["call", "GET", "/v1/licenses"]);
    run.expect_code(5, "self-signed");
    let line = run.one_error_line("self-signed");
    assert!(line.contains("certificate"), "{line}");

    let seen = server.finish();
    assert!(seen.connections >= 2, "{seen:?}");
    assert!(
        seen.wire_bytes > 0,
        "no handshake reached the server: {seen:?}"
    );
    assert!(
        seen.plaintext.is_empty(),
        "the server decrypted {} bytes: {:?}",
        seen.plaintext.len(),
        String::from_utf8_lossy(&seen.plaintext)
    );
    // No pair, and no make in the ledger: the handshake failed, so nothing was sent
    // (`Delivery::NotSent`) and the write-ahead entry was taken back.
    let record = FileStore::new(&path)
        .load(&chatapp_session::store::StoreKey::for_account(
            &cli.base_url,
            chatapp_session::testing::DEFAULT_EMAIL,
            chatapp_session::testing::DEFAULT_APP_ID,
        ))
        .unwrap()
        .unwrap_or_default();
    assert_eq!((record.pair, record.makes.len()), (None, 0));
    assert_eq!(fake.counters(), Default::default());
}

#[test]
fn the_tls_server_does_decrypt_what_a_trusting_client_sends() {
    // The control for the test above: a client that trusts the certificate gets its bytes
    // through, so an empty `plaintext` there means nothing was sent.
    let server = TlsServer::start();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.certificate.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(b"GET /v1/licenses HTTP/1.1\r\n\r\n").unwrap();
    tls.flush().unwrap();
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    drop(tcp);
    let seen = server.finish();
    assert_eq!(
        seen.plaintext, b"GET /v1/licenses HTTP/1.1\r\n\r\n",
        "{seen:?}"
    );
}

#[test]
fn cli_timeout_bounds_every_exchange() {
    for route in [Route::Make, Route::Refresh, Route::Request] {
        let what = format!("{route:?} delayed 8 s, --timeout 4");
        let server = FakeChatApp::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let cli = Cli::file(&server, &path);
        if route != Route::Make {
            seed_pair(&server, &FileStore::new(&path));
        }
        if route == Route::Refresh {
            server.revoke_access_tokens();
        }
        server.inject(route, Fault::Delay(Duration::from_secs(8)));
        let started = Instant::now();
        let run = cli.run(&["--timeout", "4", "call", "GET", "/v1/licenses"]);
        let took = started.elapsed();
        run.expect_code(5, &what);
        let line = run.one_error_line(&what);
        // The wait for the reply's headers ran out: half of the timeout (a short timeout
        // would leave a loaded machine too little for the exchanges before the delayed one).
        assert!(line.contains("no reply within 2s"), "{what}: {line}");
        eprintln!("{what}: exit 5 after {took:?}");
    }
}
