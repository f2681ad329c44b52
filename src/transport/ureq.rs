//! The [`Transport`] over ureq 3: one agent with a keep-alive pool, statuses read by hand so
//! that an error envelope is never lost, bodies capped, proxies skipped for loopback.

use std::io::Read;
use std::net::IpAddr;

use serde_json::Value;
use ureq::http;
use zeroize::Zeroizing;

use parking_lot::Mutex;
use ureq::unversioned::multipart;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector, DefaultConnector};

use super::envelope::{parse_envelope, parse_token_pair, refusal_in};
use super::timeouts::{PhaseBudgets, SteadyTimeouts, MAX_TIMEOUT};
use super::{sent, Transport, TransportConfig};
use crate::call::{Body, Call, Reply};
use crate::clock::SessionClock;
use crate::error::{Delivery, Endpoint, Error, Result};
use crate::token::{AccessToken, Credentials, RefreshToken, TokenPair};

const USER_AGENT: &str = concat!("chatapp-session/", env!("CARGO_PKG_VERSION"));

/// The ureq 3 transport (HTTPS through rustls, certificates verified against the webpki roots).
#[derive(Debug)]
pub(crate) struct UreqTransport {
    agent: ureq::Agent,
    config: TransportConfig,
    /// How `config.timeout` is split among the phases of an exchange.
    budgets: PhaseBudgets,
    /// The clock the server's `Date` is compared with.
    clock: SessionClock,
    /// The server's clock minus `clock`, from the latest reply that had a `Date`.
    offset: Mutex<Option<i64>>,
}

/// The address `host` (as written in a URL authority) spells, when it is an IP literal.
fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether `host` (as written in a URL authority) is this machine.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || ip_literal(host).is_some_and(|ip| ip.is_loopback())
}

/// Splits `scheme://host[:port][/...]` into scheme and host.
fn scheme_and_host(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some((scheme, host))
}

impl UreqTransport {
    /// A transport for `config`.
    ///
    /// # Errors
    /// [`Error::Config`] when the base URL is not `https://` or `http://`, or is plain
    /// `http://` to a host other than loopback without
    /// [`allow_insecure_http`](TransportConfig::allow_insecure_http); when the timeout is zero
    /// or longer than a year.
    #[cfg(test)]
    pub(crate) fn new(config: TransportConfig) -> Result<Self> {
        Self::with_clock(config, SessionClock::new(None))
    }

    /// A transport for `config` whose server clock offset is measured against `clock`.
    pub(crate) fn with_clock(config: TransportConfig, clock: SessionClock) -> Result<Self> {
        if config.timeout.is_zero() || config.timeout > MAX_TIMEOUT {
            return Err(Error::Config(format!(
                "the timeout must be longer than zero and at most a year, not {:?}",
                config.timeout
            )));
        }
        let (scheme, host) = scheme_and_host(&config.base_url).ok_or_else(|| {
            Error::Config(format!(
                "base URL {:?} is not an http(s) URL",
                config.base_url
            ))
        })?;
        let loopback = is_loopback(host);
        match scheme.to_ascii_lowercase().as_str() {
            "https" => {}
            "http" if loopback || config.allow_insecure_http => {}
            "http" => {
                return Err(Error::Config(format!(
                    "refusing plain http:// to {host}: tokens would cross the network unencrypted \
                     (use https://, or allow_insecure_http(true) if you really mean it)"
                )))
            }
            other => {
                return Err(Error::Config(format!(
                    "base URL scheme {other:?} is not supported (use https://)"
                )))
            }
        }
        // Phase budgets, not `timeout_global`: see the `timeouts` module. An IP literal needs
        // no lookup, so it gets no lookup budget (and no lookup thread).
        let budgets = PhaseBudgets::split(config.timeout, ip_literal(host).is_none());
        let mut builder = budgets
            .apply(ureq::Agent::config_builder())
            .http_status_as_error(false)
            .user_agent(USER_AGENT)
            .max_redirects(0);
        if loopback {
            // HTTP(S)_PROXY would otherwise send even 127.0.0.1 through the proxy.
            builder = builder.proxy(None);
        }
        let connector = DefaultConnector::new()
            .chain(sent::WatchSends)
            .chain(SteadyTimeouts);
        let agent = ureq::Agent::with_parts(builder.build(), connector, DefaultResolver::default());
        Ok(UreqTransport {
            agent,
            config,
            budgets,
            clock,
            offset: Mutex::new(None),
        })
    }

    /// The base URL joined with `path`, refused when the path could reach another origin.
    fn url(&self, path: &str) -> Result<String> {
        super::join(&self.config.base_url, path)
    }

    /// Sends one request and returns the status and the (capped) body.
    fn exchange(
        &self,
        endpoint: Endpoint,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<(u16, Zeroizing<Vec<u8>>)> {
        let url = self.url(path)?;
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| Error::Config(format!("{method:?} is not an HTTP method")))?;
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header("Accept", "application/json");
        if let Some(lang) = &self.config.lang {
            request = request.header("Lang", lang.as_str());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let takes_body = matches!(
            method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH
        );
        sent::start();
        let built = match body {
            Some(bytes) => request
                .header("Content-Type", "application/json")
                .body(bytes)
                .map(|r| self.agent.run(r)),
            // An empty body with a length (`Content-Length: 0`), not a chunked one.
            None if takes_body => request.body(&[][..]).map(|r| self.agent.run(r)),
            None => request.body(()).map(|r| self.agent.run(r)),
        };
        let outcome =
            built.map_err(|_| Error::Config(format!("path {path:?} is not a valid URL path")))?;
        let mut response = outcome.map_err(|e| self.map_error(endpoint, e))?;
        self.observe_date(response.headers());
        let status = response.status().as_u16();
        log::debug!("{method} {path} -> HTTP {status}");
        self.read_capped(endpoint, status, &mut response)
            .map(|bytes| (status, bytes))
    }

    /// Reads a reply's body, refusing one larger than the cap without reading it all.
    fn read_capped(
        &self,
        endpoint: Endpoint,
        status: u16,
        response: &mut http::Response<ureq::Body>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let cap = self.config.max_reply_bytes;
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap) {
            return Err(self.too_large(endpoint, status));
        }
        // A zeroizing buffer: make and refresh replies hold a token pair. Room for the
        // declared length up front, so that no copy is left behind in an outgrown buffer.
        let room = declared
            .map_or(8 * 1024, |n| n.saturating_add(1))
            .min(cap.saturating_add(1));
        let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(room).unwrap_or(0)));
        let read = response
            .body_mut()
            .as_reader()
            .take(cap.saturating_add(1))
            .read_to_end(&mut bytes);
        match read {
            Ok(n) if n as u64 > cap => Err(self.too_large(endpoint, status)),
            Ok(_) => Ok(bytes),
            Err(e) => Err(self.map_io(endpoint, e)),
        }
    }

    fn too_large(&self, endpoint: Endpoint, status: u16) -> Error {
        Error::Protocol {
            endpoint,
            status,
            detail: format!(
                "the reply is larger than the {} byte cap",
                self.config.max_reply_bytes
            ),
        }
    }

    /// Learns the server's clock from a reply's `Date` header (one-second resolution).
    fn observe_date(&self, headers: &http::HeaderMap) {
        let date = headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        if let Some(server_now) = date {
            *self.offset.lock() = Some(server_now.saturating_sub(self.clock.now()));
        }
    }

    /// A failure before any reply: a timeout or a network error, with whether the request
    /// may have reached the server. ureq's error kinds that can only happen before a request
    /// is written prove nothing was sent; so does a failure before this thread handed a
    /// single byte of the request to a connection ([`sent`]).
    fn map_error(&self, endpoint: Endpoint, e: ureq::Error) -> Error {
        let delivery = if !sent::wrote() || never_sent(&e) {
            Delivery::NotSent
        } else {
            Delivery::MaybeSent
        };
        match e {
            ureq::Error::Timeout(phase) => Error::Timeout {
                endpoint,
                after: self.expired(Some(phase)),
                delivery,
            },
            ureq::Error::Io(io) if !is_timeout(&io) => Error::Network {
                endpoint,
                delivery,
                retry_at: None,
                source: Box::new(io),
            },
            ureq::Error::Io(io) => Error::Timeout {
                endpoint,
                after: self.expired(timeout_phase(&io)),
                delivery,
            },
            other => Error::Network {
                endpoint,
                delivery,
                retry_at: None,
                source: Box::new(other),
            },
        }
    }

    /// The bound that expired: the budget of `phase`, or the whole timeout when the phase is
    /// not known (a socket timeout that ureq did not name), which bounds every phase too.
    fn expired(&self, phase: Option<ureq::Timeout>) -> std::time::Duration {
        phase
            .and_then(|phase| self.budgets.of(phase))
            .unwrap_or(self.config.timeout)
    }

    /// A failure while the reply's body was read: the request was sent.
    fn map_io(&self, endpoint: Endpoint, e: std::io::Error) -> Error {
        if is_timeout(&e) {
            Error::Timeout {
                endpoint,
                // Reading a body: that phase's bound, unless ureq names another.
                after: self.expired(timeout_phase(&e).or(Some(ureq::Timeout::RecvBody))),
                delivery: Delivery::MaybeSent,
            }
        } else {
            Error::Network {
                endpoint,
                delivery: Delivery::MaybeSent,
                retry_at: None,
                source: Box::new(e),
            }
        }
    }
}

/// Whether an io error is a timeout (ureq reports its own timeouts inside io errors while a
/// body is read).
fn is_timeout(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut || timeout_phase(e).is_some()
}

/// The phase whose bound expired, when `e` is ureq's timeout inside an io error.
fn timeout_phase(e: &std::io::Error) -> Option<ureq::Timeout> {
    match e.get_ref()?.downcast_ref::<ureq::Error>()? {
        ureq::Error::Timeout(phase) => Some(*phase),
        _ => None,
    }
}

/// Whether ureq's error kind alone proves the request never left this machine: the name
/// did not resolve, no connection could be had, the connect (or resolve) phase timed out,
/// a proxy refused the tunnel, or the connection was refused.
fn never_sent(e: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::ConnectProxyFailed(_)
        | ureq::Error::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::AddrNotAvailable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::HostUnreachable
        ),
        _ => false,
    }
}

impl Transport for UreqTransport {
    fn server_offset(&self) -> Option<i64> {
        *self.offset.lock()
    }

    fn make(&self, credentials: &Credentials) -> Result<TokenPair> {
        // Serialized straight into a zeroizing buffer (no `Value` copy of the password),
        // sized up front so that it never reallocates, and lent to ureq.
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct MakeBody<'a> {
            email: &'a str,
            password: &'a str,
            app_id: &'a str,
        }
        let fields = MakeBody {
            email: credentials.email(),
            password: credentials.password().expose_secret(),
            app_id: credentials.app_id(),
        };
        let room = 64 + 6 * (fields.email.len() + fields.password.len() + fields.app_id.len());
        let mut body = Zeroizing::new(Vec::with_capacity(room));
        serde_json::to_writer(&mut *body, &fields)
            .map_err(|e| Error::Config(format!("the tokens.make body: {e}")))?;
        let (status, reply) =
            self.exchange(Endpoint::Make, "POST", "/v1/tokens", &[], Some(&body))?;
        let data = parse_envelope(Endpoint::Make, status, &reply)?;
        parse_token_pair(Endpoint::Make, status, data)
    }

    fn refresh(&self, refresh: &RefreshToken) -> Result<TokenPair> {
        let (status, reply) = self.exchange(
            Endpoint::Refresh,
            "POST",
            "/v1/tokens/refresh",
            &[("Refresh", refresh.expose_secret())],
            None,
        )?;
        let data = parse_envelope(Endpoint::Refresh, status, &reply)?;
        parse_token_pair(Endpoint::Refresh, status, data)
    }

    fn check(&self, access: &AccessToken) -> Result<bool> {
        let (status, reply) = self.exchange(
            Endpoint::Check,
            "GET",
            "/v1/tokens/check",
            &[("Authorization", access.expose_secret())],
            None,
        )?;
        match parse_envelope(Endpoint::Check, status, &reply) {
            Ok(_) => Ok(true),
            Err(Error::Api(a)) if a.status < 500 && a.status != 429 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn send(
        &self,
        access: &AccessToken,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let (status, reply) = self.exchange(
            Endpoint::Request,
            method,
            path,
            &[("Authorization", access.expose_secret())],
            body.map(|v| v.to_string().into_bytes()).as_deref(),
        )?;
        parse_envelope(Endpoint::Request, status, &reply)
    }

    fn call(&self, access: &AccessToken, call: &Call) -> Result<Reply> {
        let endpoint = Endpoint::Request;
        let url = self.url(call.path())?;
        let method = http::Method::from_bytes(call.method().as_bytes())
            .map_err(|_| Error::Config(format!("{:?} is not an HTTP method", call.method())))?;
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header("Accept", call.accept_header())
            .header("Authorization", access.expose_secret());
        if let Some(lang) = &self.config.lang {
            request = request.header("Lang", lang.as_str());
        }
        let takes_body = matches!(
            method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH
        );
        let invalid = |_| Error::Config(format!("{call:?} is not a valid HTTP request"));
        sent::start();
        let outcome = match call.body_ref() {
            Body::Raw {
                content_type,
                bytes,
            } => request
                .header("Content-Type", content_type.as_str())
                .body(bytes.as_slice())
                .map_err(invalid)
                .map(|r| self.agent.run(r)),
            Body::Form(form) => {
                let mut encoder = multipart::Form::new();
                for part in form.parts() {
                    let mut encoded = multipart::Part::bytes(part.data());
                    if let Some(file_name) = part.file_name() {
                        encoded = encoded.file_name(file_name);
                    }
                    if let Some(content_type) = part.content_type() {
                        encoded = encoded.mime_str(content_type).map_err(|_| {
                            Error::Config(format!(
                                "{content_type:?} is not a MIME type (form field {:?})",
                                part.name()
                            ))
                        })?;
                    }
                    encoder = encoder.part(part.name(), encoded);
                }
                // ureq sets this header only for its own request builder, not for `run`.
                let content_type = format!("multipart/form-data; boundary={}", encoder.boundary());
                request
                    .header("Content-Type", content_type)
                    .body(encoder)
                    .map_err(invalid)
                    .map(|r| self.agent.run(r))
            }
            // An empty body with a length (`Content-Length: 0`), not a chunked one.
            Body::Empty if takes_body => request
                .body(&[][..])
                .map_err(invalid)
                .map(|r| self.agent.run(r)),
            _ => request.body(()).map_err(invalid).map(|r| self.agent.run(r)),
        };
        let mut response = outcome?.map_err(|e| self.map_error(endpoint, e))?;
        self.observe_date(response.headers());
        let status = response.status().as_u16();
        log::debug!("{method} {} -> HTTP {status}", call.path());
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = self.read_capped(endpoint, status, &mut response)?;
        match refusal_in(status, &body) {
            Some(refused) => Err(refused),
            // The application's data, not a token reply: handed over as it is.
            None => Ok(Reply::new(status, headers, std::mem::take(&mut *body))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn hosts_are_split_out_of_urls() {
        assert_eq!(
            scheme_and_host("https://api.chatapp.online"),
            Some(("https", "api.chatapp.online"))
        );
        assert_eq!(
            scheme_and_host("http://127.0.0.1:8080/x"),
            Some(("http", "127.0.0.1"))
        );
        assert_eq!(
            scheme_and_host("http://u:p@[::1]:80"),
            Some(("http", "[::1]"))
        );
        assert_eq!(scheme_and_host("nonsense"), None);
        assert_eq!(scheme_and_host("http://"), None);
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        for ok in [
            "http://127.0.0.1:1",
            "http://localhost:1",
            "http://[::1]:1",
            "http://127.8.9.1",
            "https://example.com",
        ] {
            assert!(UreqTransport::new(TransportConfig::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com",
            "http://10.0.0.1:80",
            "ftp://127.0.0.1",
            "example.com",
            "http://localhost.evil.com",
        ] {
            match UreqTransport::new(TransportConfig::new(bad)) {
                Err(Error::Config(_)) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        let mut allowed = TransportConfig::new("http://example.com");
        allowed.allow_insecure_http = true;
        assert!(UreqTransport::new(allowed).is_ok());
    }

    #[test]
    fn exchanges_are_bounded_by_phase_with_a_lookup_budget_only_for_host_names() {
        for (url, lookup) in [
            ("http://127.0.0.1:1", false),
            ("http://[::1]:1", false),
            ("https://10.1.2.3", false),
            ("https://api.chatapp.online", true),
            ("http://localhost:1", true),
        ] {
            let mut config = TransportConfig::new(url);
            config.timeout = Duration::from_secs(20);
            let transport = UreqTransport::new(config).unwrap();
            let t = transport.agent.config().timeouts();
            assert_eq!((t.global, t.per_call), (None, None), "{url}");
            assert_eq!(t.resolve, lookup.then_some(Duration::from_secs(2)), "{url}");
            assert_eq!(t.recv_response, Some(Duration::from_secs(10)), "{url}");
        }
    }

    /// A server on 127.0.0.1 that accepts connections, reads what it is sent and answers
    /// `reply` (nothing when empty) on each, keeping it open; its base URL.
    fn stalling_server(reply: &'static [u8]) -> String {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let _ = std::io::Read::read(&mut conn, &mut buf);
                    let _ = conn.write_all(reply);
                    std::thread::sleep(Duration::from_secs(10));
                });
            }
        });
        base
    }

    #[test]
    fn a_timeout_reports_the_bound_of_the_phase_that_expired() {
        // Every share under a second (kept exact), and the server's thread 950 ms to send
        // its headers before the wait for them runs out.
        let timeout = Duration::from_millis(1900);
        for (reply, phase, share) in [
            // No reply at all: the wait for the reply's headers (1/2) ran out.
            (&b""[..], "recv_response", timeout / 2),
            // Headers, then a body that never comes: reading the body (3/20) ran out.
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"[..],
                "recv_body",
                timeout / 20 * 3,
            ),
        ] {
            let mut config = TransportConfig::new(stalling_server(reply));
            config.timeout = timeout;
            let transport = UreqTransport::new(config).unwrap();
            let started = std::time::Instant::now();
            let result = transport.send(&AccessToken::new("t"), "GET", "/v1/licenses", None);
            let took = started.elapsed();
            match result {
                Err(Error::Timeout {
                    endpoint: Endpoint::Request,
                    after,
                    ..
                }) => assert_eq!(after, share, "{phase}"),
                other => panic!("{phase}: {other:?}"),
            }
            // A bound under a second is kept exact: it cannot expire early.
            assert!(took >= share, "{phase}: {took:?}");
        }
    }

    #[test]
    fn a_zero_or_absurd_timeout_is_refused_not_a_panic_later() {
        for timeout in [
            Duration::ZERO,
            MAX_TIMEOUT + Duration::from_nanos(1),
            Duration::MAX,
        ] {
            let mut config = TransportConfig::new("http://127.0.0.1:1");
            config.timeout = timeout;
            match UreqTransport::new(config) {
                Err(Error::Config(m)) => assert!(m.contains("timeout"), "{m}"),
                other => panic!("{timeout:?}: {other:?}"),
            }
        }
        let mut config = TransportConfig::new("http://127.0.0.1:1");
        config.timeout = MAX_TIMEOUT;
        assert!(UreqTransport::new(config).is_ok());
    }
}
