//! A small HTTP/1.1 server side: reading one request (request line, headers, a body by
//! `Content-Length` or chunked, `Expect: 100-continue`) and writing one response, with
//! keep-alive.
//!
//! Written for the fake server instead of tiny_http because tiny_http cannot close a
//! connection without answering (a dropped request sends a 500; a dropped writer leaves the
//! socket open), which [`Fault::DropConnection`](super::Fault::DropConnection) and
//! [`Fault::LostReply`](super::Fault::LostReply) need.

use std::io::{self, BufRead, Read, Write};

/// The longest request head (request line and headers) accepted.
const MAX_HEAD: u64 = 64 * 1024;
/// The largest request body accepted.
const MAX_BODY: u64 = 1024 * 1024;

/// One parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// The method, as sent (`GET`, `POST`, …).
    pub(crate) method: String,
    /// The path, without the query string, not percent-decoded.
    pub(crate) path: String,
    /// Headers in order, names lower-cased.
    headers: Vec<(String, String)>,
    /// The body (empty when there is none).
    pub(crate) body: Vec<u8>,
    /// Whether the connection stays open after the reply.
    pub(crate) keep_alive: bool,
}

impl Request {
    /// The first header called `name` (case-insensitive), if any.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The socket failed or timed out: close it.
    Io(io::Error),
    /// The request was not acceptable: answer with this status and message, then close.
    Bad(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads one line ending in `\n` into `line`, counting against `budget`; the line without its
/// `\r\n`. `Ok(None)` at a clean end of stream before any byte.
fn read_line<R: BufRead>(reader: &mut R, budget: &mut u64) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    let n = reader.by_ref().take(*budget).read_until(b'\n', &mut line)?;
    *budget = budget.saturating_sub(n as u64);
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return if *budget == 0 {
            Err(ReadError::Bad(431, "Request header too large"))
        } else {
            Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))
        };
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| ReadError::Bad(400, "Request header is not UTF-8"))
}

/// Reads the next request from a connection. `Ok(None)` when the client closed it cleanly
/// between requests. `interim` receives `100 Continue` when the client asks for it.
pub(crate) fn read_request<R: BufRead, W: Write>(
    reader: &mut R,
    interim: &mut W,
) -> Result<Option<Request>, ReadError> {
    let mut budget = MAX_HEAD;
    // Empty lines before a request line are allowed (RFC 9112 §2.2).
    let request_line = loop {
        match read_line(reader, &mut budget)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400, "Malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ReadError::Bad(400, "Malformed request line"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(ReadError::Bad(505, "HTTP version not supported")),
    };
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned();

    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader, &mut budget)? else {
            return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
        };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(400, "Malformed header"));
        };
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(ReadError::Bad(400, "Malformed header"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = Request {
        method: method.to_owned(),
        path,
        headers,
        body: Vec::new(),
        keep_alive: false,
    };

    let connection = request
        .header("connection")
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    request.keep_alive = if http10 {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };

    let chunked = match request.header("transfer-encoding") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("chunked") => true,
        Some(_) => return Err(ReadError::Bad(501, "Unsupported Transfer-Encoding")),
    };
    let length = match request.header("content-length") {
        None => 0,
        Some(_) if chunked => return Err(ReadError::Bad(400, "Both Content-Length and chunked")),
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ReadError::Bad(400, "Malformed Content-Length"))?,
    };
    if length > MAX_BODY {
        return Err(ReadError::Bad(413, "Request body too large"));
    }
    if length > 0 || chunked {
        let expects_continue = request
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects_continue && !http10 {
            interim.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            interim.flush()?;
        }
    }
    request.body = if chunked {
        read_chunked(reader)?
    } else {
        read_exact_body(reader, length)?
    };
    Ok(Some(request))
}

/// Reads exactly `length` body bytes.
fn read_exact_body<R: BufRead>(reader: &mut R, length: u64) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::with_capacity(usize::try_from(length).unwrap_or_default());
    reader.by_ref().take(length).read_to_end(&mut body)?;
    if (body.len() as u64) < length {
        return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(body)
}

/// Reads a `Transfer-Encoding: chunked` body (ureq sends an empty POST body this way),
/// trailers skipped.
fn read_chunked<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut budget = MAX_HEAD;
    loop {
        let Some(line) = read_line(reader, &mut budget)? else {
            return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
        };
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| ReadError::Bad(400, "Malformed chunk size"))?;
        if size == 0 {
            break;
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(ReadError::Bad(413, "Request body too large"));
        }
        body.extend(read_exact_body(reader, size)?);
        match read_line(reader, &mut budget)? {
            Some(end) if end.is_empty() => {}
            _ => return Err(ReadError::Bad(400, "Malformed chunk")),
        }
    }
    // Trailers, up to the blank line.
    loop {
        match read_line(reader, &mut budget)? {
            Some(line) if line.is_empty() => return Ok(body),
            Some(_) => {}
            None => return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into())),
        }
    }
}

/// One complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// The `Content-Type`.
    pub(crate) content_type: String,
    /// Extra headers.
    pub(crate) headers: Vec<(String, String)>,
    /// The body.
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub(crate) fn json(status: u16, body: &serde_json::Value) -> Response {
        Response::json_text(status, body.to_string())
    }

    /// A JSON response from its text.
    pub(crate) fn json_text(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json".to_owned(),
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }
}

/// The reason phrase of a status.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The status line and headers, through the blank line.
fn head(
    status: u16,
    content_type: &str,
    length: Option<u64>,
    keep_alive: bool,
    extra: &[(String, String)],
) -> String {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nServer: chatapp-session-fake\r\nContent-Type: {content_type}\r\n",
        reason(status)
    );
    if let Some(length) = length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    head
}

/// Writes `response` (without its body for a `HEAD` request).
pub(crate) fn write_response<W: Write>(
    w: &mut W,
    response: &Response,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut bytes = head(
        response.status,
        &response.content_type,
        Some(response.body.len() as u64),
        keep_alive,
        &response.headers,
    )
    .into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    w.write_all(&bytes)?;
    w.flush()
}

/// The start of a huge body.
const HUGE_PREFIX: &[u8] = br#"{"success":true,"data":""#;
/// What a huge body is padded with, a chunk at a time.
static PAD: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// Writes a 200 reply of `bytes` body bytes, a chunk at a time. Without `declare_length` the
/// reply has no length and the caller must close the connection after it.
pub(crate) fn write_huge<W: Write>(
    w: &mut W,
    bytes: u64,
    declare_length: bool,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let length = declare_length.then_some(bytes);
    let head = head(
        200,
        "application/json",
        length,
        keep_alive && declare_length,
        &[],
    );
    w.write_all(head.as_bytes())?;
    if !head_only {
        let prefix_len = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(HUGE_PREFIX.len());
        w.write_all(HUGE_PREFIX.get(..prefix_len).unwrap_or_default())?;
        let mut left = bytes - prefix_len as u64;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(PAD.len());
            w.write_all(PAD.get(..n).unwrap_or_default())?;
            left -= n as u64;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(raw: &str) -> (Result<Option<Request>, ReadError>, Vec<u8>) {
        let mut interim = Vec::new();
        let mut reader = Cursor::new(raw.as_bytes().to_vec());
        (read_request(&mut reader, &mut interim), interim)
    }

    fn ok(raw: &str) -> Request {
        match parse(raw).0 {
            Ok(Some(r)) => r,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    fn bad(raw: &str) -> u16 {
        match parse(raw).0 {
            Err(ReadError::Bad(status, _)) => status,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn a_request_with_a_body() {
        let r = ok("POST /v1/tokens?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 4\r\nREFRESH:  abc \r\n\r\n{}{}tail");
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/tokens");
        assert_eq!(r.body, b"{}{}");
        assert_eq!(r.header("refresh"), Some("abc"));
        assert_eq!(r.header("Refresh"), Some("abc"));
        assert_eq!(r.header("authorization"), None);
        assert!(r.keep_alive);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(!ok("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(ok("\r\nGET / HTTP/1.1\n\n").keep_alive);
    }

    #[test]
    fn successive_requests_on_one_connection() {
        let raw = "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\n\r\n";
        let mut reader = Cursor::new(raw.as_bytes().to_vec());
        let mut sink = Vec::new();
        let paths: Vec<String> =
            std::iter::from_fn(|| match read_request(&mut reader, &mut sink) {
                Ok(Some(r)) => Some(r.path),
                _ => None,
            })
            .collect();
        assert_eq!(paths, ["/a", "/b"]);
    }

    #[test]
    fn chunked_bodies() {
        let r = ok("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert!(r.body.is_empty());
        let raw = "POST /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n\
                   3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let mut reader = Cursor::new(raw.as_bytes().to_vec());
        let mut sink = Vec::new();
        let first = read_request(&mut reader, &mut sink);
        assert!(
            matches!(first, Ok(Some(ref r)) if r.body == b"abc0123456789"),
            "{first:?}"
        );
        let second = read_request(&mut reader, &mut sink);
        assert!(
            matches!(second, Ok(Some(ref r)) if r.path == "/b"),
            "{second:?}"
        );
    }

    #[test]
    fn expect_continue_is_answered() {
        let (r, interim) =
            parse("PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz");
        assert!(matches!(r, Ok(Some(ref r)) if r.body == b"z"));
        assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn bad_requests() {
        assert_eq!(bad("GET /\r\n\r\n"), 400);
        assert_eq!(bad("get / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(bad("GET / HTTP/1.1\r\nNoColon\r\n\r\n"), 400);
        assert_eq!(bad("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            bad("GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            413
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            400
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70_000));
        assert_eq!(bad(&long), 431);
    }

    #[test]
    fn end_of_stream() {
        assert!(matches!(parse("").0, Ok(None)));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost").0,
            Err(ReadError::Io(_))
        ));
        assert!(matches!(
            parse("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab").0,
            Err(ReadError::Io(_))
        ));
    }

    #[test]
    fn responses_are_written_with_a_length() {
        let mut out = Vec::new();
        let r = Response::json(401, &serde_json::json!({"success": false}));
        assert!(write_response(&mut out, &r, true, false).is_ok());
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("Content-Length: 17\r\n"), "{text}");
        assert!(text.contains("Connection: keep-alive\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"success\":false}"), "{text}");
    }

    #[test]
    fn huge_bodies_have_the_exact_size() {
        for (bytes, declare) in [(0, true), (5, false), (200_000, true), (200_001, false)] {
            let mut out = Vec::new();
            assert!(write_huge(&mut out, bytes, declare, true, false).is_ok());
            let split = out.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
            let Some(split) = split else {
                panic!("no head")
            };
            let head = String::from_utf8_lossy(&out[..split]).to_string();
            assert_eq!((out.len() - split) as u64, bytes);
            assert_eq!(
                head.contains(&format!("Content-Length: {bytes}\r\n")),
                declare,
                "{head}"
            );
            assert_eq!(head.contains("Connection: close"), !declare, "{head}");
        }
    }
}
