//! What the fake server answers: the token endpoints, the ordinary endpoints, and injected
//! faults. Turns a parsed [`Request`] into a [`Reply`]; never touches a socket.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::fault::Fault;
use super::http::{reason, Request, Response};
use super::log::{RefusedBecause, TokenOutcome};
use super::multipart;
use super::server::Shared;
use super::state::{MakeRefusal, UploadedFile};
use crate::clock::Clock;
use crate::error::Endpoint;
use crate::token::TokenPair;

/// What the connection does with a request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Send this response.
    Send(Response),
    /// Stream a 200 reply of this many bytes.
    Huge {
        /// Body size.
        bytes: u64,
        /// Whether to send `Content-Length`.
        declare_length: bool,
    },
    /// Close the connection without a reply.
    Close,
}

/// How a token pair reply is spoilt, if at all.
enum Shape<'a> {
    Normal,
    Missing(&'a str),
    WrongTypes,
}

/// Answers one request, applying the next fault queued for its route.
pub(crate) fn handle(shared: &Shared, request: &Request) -> Reply {
    let route = Endpoint::of(&request.method, &request.path);
    let Some(fault) = shared.faults.pop(route) else {
        return Reply::Send(serve(shared, route, request, &Shape::Normal, None));
    };
    {
        let mut state = shared.state.lock();
        state.counters.faults_served += 1;
        let does_the_work = matches!(
            fault,
            Fault::Delay(_) | Fault::LostReply | Fault::MissingField(_) | Fault::WrongTypes
        );
        if matches!(route, Endpoint::Make | Endpoint::Refresh) && !does_the_work {
            let now = shared.clock.now();
            let pair = match route {
                Endpoint::Refresh => {
                    state.pair_of_refresh(request.header("refresh").unwrap_or_default())
                }
                _ => None,
            };
            state.log_token(
                route,
                now,
                TokenOutcome::NotServed,
                Some(fault.clone()),
                pair,
            );
        }
    }
    match fault {
        Fault::Status {
            status,
            body,
            content_type,
        } => Reply::Send(Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into_bytes(),
        }),
        Fault::ServerError(status) => {
            let title = format!("{status} {}", reason(status));
            Reply::Send(Response {
                status,
                content_type: "text/html".to_owned(),
                headers: Vec::new(),
                body: format!(
                    "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
                     <center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n\
                     </body>\r\n</html>\r\n"
                )
                .into_bytes(),
            })
        }
        Fault::MalformedJson => Reply::Send(Response {
            status: 200,
            content_type: "application/json".to_owned(),
            headers: Vec::new(),
            body: br#"{"success": tru"#.to_vec(),
        }),
        Fault::MissingField(ref field) => match route {
            Endpoint::Make | Endpoint::Refresh => Reply::Send(serve(
                shared,
                route,
                request,
                &Shape::Missing(field),
                Some(&fault),
            )),
            Endpoint::Check | Endpoint::Request => {
                Reply::Send(Response::json(200, &json!({"data": {}})))
            }
        },
        Fault::WrongTypes => match route {
            Endpoint::Make | Endpoint::Refresh => Reply::Send(serve(
                shared,
                route,
                request,
                &Shape::WrongTypes,
                Some(&fault),
            )),
            Endpoint::Check | Endpoint::Request => Reply::Send(Response::json_text(
                200,
                r#"{"success":"true","data":{}}"#.to_owned(),
            )),
        },
        Fault::DropConnection => Reply::Close,
        Fault::Delay(wait) => {
            if sleep_unless_stopped(shared, wait) {
                Reply::Send(serve(shared, route, request, &Shape::Normal, Some(&fault)))
            } else {
                Reply::Close
            }
        }
        Fault::LostReply => {
            let _lost = serve(shared, route, request, &Shape::Normal, Some(&fault));
            Reply::Close
        }
        Fault::Huge {
            bytes,
            declare_length,
        } => Reply::Huge {
            bytes,
            declare_length,
        },
        Fault::RateLimited => {
            let mut response = error(429, "ApiTooManyRequestsError", "Too many requests");
            response
                .headers
                .push(("Retry-After".to_owned(), "1".to_owned()));
            Reply::Send(response)
        }
    }
}

/// Sleeps for `wait`, in short naps so that a server being dropped is not held up. Whether the
/// whole wait passed.
fn sleep_unless_stopped(shared: &Shared, wait: Duration) -> bool {
    let start = Instant::now();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

/// A refusal in the ChatApp envelope, `success` first as ChatApp writes it.
fn error(status: u16, code: &str, message: &str) -> Response {
    let error = json!({"code": code, "message": message});
    Response::json_text(status, format!(r#"{{"success":false,"error":{error}}}"#))
}

/// A success in the ChatApp envelope, `success` first as ChatApp writes it.
fn success(data: Value) -> Response {
    Response::json_text(200, format!(r#"{{"success":true,"data":{data}}}"#))
}

/// The invalid-token refusal, localised by the `Lang` header.
fn invalid_token(status: u16, request: &Request) -> Response {
    let lang = request.header("lang").unwrap_or_default();
    let message = match lang.to_ascii_lowercase().as_str() {
        "ru" => "Недействительный токен",
        "pt" => "Token inválido",
        _ => "Invalid Token",
    };
    error(status, "ApiInvalidTokenError", message)
}

fn not_found() -> Response {
    error(404, "ApiNotFoundError", "Not found")
}

fn bad_request(message: &str) -> Response {
    error(400, "ApiBadRequestError", message)
}

/// The tokens.make / tokens.refresh success reply, spoilt as `shape` says.
fn pair_reply(issued: &TokenPair, shape: &Shape<'_>) -> Response {
    let mut data = Map::new();
    data.insert("cabinetUserId".into(), json!(issued.cabinet_user_id));
    data.insert("accessToken".into(), json!(issued.access.expose_secret()));
    data.insert("accessTokenEndTime".into(), json!(issued.access_expires_at));
    data.insert("refreshToken".into(), json!(issued.refresh.expose_secret()));
    data.insert(
        "refreshTokenEndTime".into(),
        json!(issued.refresh_expires_at),
    );
    // An extra field clients must ignore.
    data.insert("tokenType".into(), json!("raw"));
    if let Shape::WrongTypes = shape {
        for name in ["cabinetUserId", "accessTokenEndTime", "refreshTokenEndTime"] {
            if let Some(v) = data.get_mut(name) {
                *v = Value::String(v.to_string());
            }
        }
    }
    let (mut with_success, mut with_data) = (true, true);
    if let Shape::Missing(field) = shape {
        if data.remove(*field).is_none() {
            with_success = *field != "success";
            with_data = *field != "data";
        }
    }
    let mut parts = Vec::new();
    if with_success {
        parts.push(r#""success":true"#.to_owned());
    }
    if with_data {
        parts.push(format!(r#""data":{}"#, Value::Object(data)));
    }
    Response::json_text(200, format!("{{{}}}", parts.join(",")))
}

/// A pair as the server puts it on the wire: end times, or lifetimes when the server is told
/// to be broken that way.
fn as_sent(shared: &Shared, mut issued: TokenPair, now: i64) -> TokenPair {
    if shared.end_times_as_lifetimes {
        issued.access_expires_at = issued.access_expires_at.saturating_sub(now);
        issued.refresh_expires_at = issued.refresh_expires_at.saturating_sub(now);
    }
    issued
}

/// The usual answer to a request (spoilt as `shape` says); `fault` is the injected fault
/// that let the work be done, for the token log.
fn serve(
    shared: &Shared,
    route: Endpoint,
    request: &Request,
    shape: &Shape<'_>,
    fault: Option<&Fault>,
) -> Response {
    let now = shared.clock.now();
    match route {
        Endpoint::Make => {
            let body = serde_json::from_slice::<Value>(&request.body).ok();
            let Some(body) = body.as_ref().and_then(Value::as_object) else {
                let mut state = shared.state.lock();
                state.counters.makes_rejected += 1;
                let outcome = TokenOutcome::Refused(RefusedBecause::BadRequest);
                state.log_token(route, now, outcome, fault.cloned(), None);
                return bad_request("The request body must be a JSON object");
            };
            let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
            let made = {
                let mut state = shared.state.lock();
                let made = state.make(field("email"), field("password"), field("appId"), now);
                let outcome = match &made {
                    Ok(_) => TokenOutcome::Issued,
                    Err(MakeRefusal::WrongCredentials) => {
                        TokenOutcome::Refused(RefusedBecause::WrongCredentials)
                    }
                    Err(MakeRefusal::Quota) => TokenOutcome::Refused(RefusedBecause::Quota),
                };
                let pair = made.as_ref().ok().and(state.last_pair());
                state.log_token(route, now, outcome, fault.cloned(), pair);
                made
            };
            match made {
                Ok(issued) => pair_reply(&as_sent(shared, issued, now), shape),
                Err(MakeRefusal::WrongCredentials) => {
                    error(401, "ApiWrongCredentialsError", "Wrong email or password")
                }
                Err(MakeRefusal::Quota) => error(
                    429,
                    "ApiTooManyRequestsError",
                    "Too many tokens.make requests",
                ),
            }
        }
        Endpoint::Refresh => {
            let token = request.header("refresh").unwrap_or_default();
            let refreshed = {
                let mut state = shared.state.lock();
                let presented = state.pair_of_refresh(token);
                let refreshed = state.refresh(token, now);
                let outcome = match &refreshed {
                    Ok(_) => TokenOutcome::Issued,
                    Err(_) => TokenOutcome::Refused(state.why_refused(token, now)),
                };
                state.log_token(route, now, outcome, fault.cloned(), presented);
                refreshed
            };
            match refreshed {
                Ok(issued) => pair_reply(&as_sent(shared, issued, now), shape),
                Err(_) => invalid_token(401, request),
            }
        }
        Endpoint::Check => {
            let token = request.header("authorization").unwrap_or_default();
            let checked = shared.state.lock().check(token, now);
            match checked {
                Ok(_) => success(json!({})),
                Err(_) => invalid_token(shared.invalid_token_status, request),
            }
        }
        Endpoint::Request => serve_ordinary(shared, request, now),
    }
}

/// The ordinary endpoints the fake knows.
enum Operation {
    Licenses,
    SendText { chat: String },
    SendFile { chat: String },
    Download { message: String },
    Callbacks,
    SetCallback { license: String, messenger: String },
    DeleteCallback { license: String, messenger: String },
}

/// Which ordinary endpoint a request is for.
fn operation(method: &str, path: &str) -> Option<Operation> {
    let segments: Vec<String> = path
        .strip_prefix('/')?
        .split('/')
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let callback = |license: &str, messenger: &str| (license.to_owned(), messenger.to_owned());
    Some(match (method, s.as_slice()) {
        ("GET", ["v1", "licenses"]) => Operation::Licenses,
        ("POST", ["v1", "licenses", _, "messengers", _, "chats", chat, "messages", "text"])
            if !chat.is_empty() =>
        {
            Operation::SendText {
                chat: (*chat).to_owned(),
            }
        }
        ("POST", ["v1", "licenses", _, "messengers", _, "chats", chat, "messages", "file"])
            if !chat.is_empty() =>
        {
            Operation::SendFile {
                chat: (*chat).to_owned(),
            }
        }
        ("GET", ["v1", "licenses", _, "messengers", _, "chats", _, "messages", id, "file"]) => {
            Operation::Download {
                message: (*id).to_owned(),
            }
        }
        ("GET", ["v1", "callbackUrls"]) => Operation::Callbacks,
        ("PUT", ["v1", "licenses", l, "messengers", m, "callbackUrl"]) => {
            let (license, messenger) = callback(l, m);
            Operation::SetCallback { license, messenger }
        }
        ("DELETE", ["v1", "licenses", l, "messengers", m, "callbackUrl"]) => {
            let (license, messenger) = callback(l, m);
            Operation::DeleteCallback { license, messenger }
        }
        _ => return None,
    })
}

/// Decodes `%XX` escapes; anything malformed is kept as it is.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A chat id as ChatApp echoes it: a bare phone number becomes `NUMBER@c.us`.
fn chat_id(chat: &str) -> String {
    let digits = chat.strip_prefix('+').unwrap_or(chat);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        format!("{digits}@c.us")
    } else {
        chat.to_owned()
    }
}

/// A license id as JSON: a number when it is one.
fn license_id(license: &str) -> Value {
    license
        .parse::<i64>()
        .map_or_else(|_| json!(license), |n| json!(n))
}

/// The licenses of the sample account, as in ChatApp's documentation.
fn licenses() -> Value {
    json!([{
        "licenseId": 37233,
        "licenseTo": 1692122395,
        "licenseName": null,
        "meOwner": true,
        "status": {"id": 4, "code": "paid"},
        "messenger": [{"type": "grWhatsApp", "name": "[WEB] WhatsApp"}],
        "app": [],
        "access": []
    }])
}

/// A non-empty string field of a JSON object body.
fn body_string(request: &Request, name: &str) -> Option<String> {
    let body: Value = serde_json::from_slice(&request.body).ok()?;
    let value = body.get(name)?.as_str()?;
    (!value.is_empty()).then(|| value.to_owned())
}

fn serve_ordinary(shared: &Shared, request: &Request, now: i64) -> Response {
    let endpoint = operation(&request.method, &request.path);
    let mut state = shared.state.lock();
    state.counters.requests += 1;
    let Some(endpoint) = endpoint else {
        return not_found();
    };
    let token = request.header("authorization").unwrap_or_default();
    if state.authorize(token, now).is_err() {
        return invalid_token(shared.invalid_token_status, request);
    }
    match endpoint {
        Operation::Licenses => success(licenses()),
        Operation::SendText { chat } => {
            if body_string(request, "text").is_none() {
                return bad_request("The text field is required");
            }
            success(json!({"id": state.message_id(), "chatId": chat_id(&chat)}))
        }
        Operation::SendFile { chat } => {
            let content_type = request.header("content-type").unwrap_or_default();
            let Some(parts) = multipart::parse(content_type, &request.body) else {
                return bad_request("The body must be a multipart/form-data form");
            };
            let text = |name: &str| {
                parts
                    .iter()
                    .find(|p| p.name == name && p.file_name.is_none())
                    .map(|p| String::from_utf8_lossy(&p.data).into_owned())
            };
            let Some(file) = parts.iter().find(|p| p.name == "file") else {
                return bad_request("The file field is required");
            };
            let id = state.message_id();
            let uploaded = UploadedFile {
                chat: chat.clone(),
                file_name: text("fileName").or_else(|| file.file_name.clone()),
                content_type: file.content_type.clone(),
                caption: text("caption"),
                bytes: file.data.clone(),
            };
            state.keep_file(&id, uploaded);
            success(json!({"id": id, "chatId": chat_id(&chat)}))
        }
        Operation::Download { message } => match state.file(&message) {
            Some(file) => Response {
                status: 200,
                content_type: file
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".to_owned()),
                headers: vec![(
                    "Content-Disposition".to_owned(),
                    format!(
                        "attachment; filename=\"{}\"",
                        file.file_name.as_deref().unwrap_or("file")
                    ),
                )],
                body: file.bytes.clone(),
            },
            None => not_found(),
        },
        Operation::Callbacks => success(Value::Array(
            state
                .callbacks()
                .map(|(l, m, u)| json!({"licenseId": license_id(l), "messengerType": m, "url": u}))
                .collect(),
        )),
        Operation::SetCallback { license, messenger } => {
            let Some(url) = body_string(request, "url") else {
                return bad_request("The url field is required");
            };
            state.set_callback(&license, &messenger, &url);
            success(
                json!({"licenseId": license_id(&license), "messengerType": messenger, "url": url}),
            )
        }
        Operation::DeleteCallback { license, messenger } => {
            state.remove_callback(&license, &messenger);
            success(json!({}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{AccessToken, RefreshToken};

    #[test]
    fn paths_are_matched_and_decoded() {
        assert!(matches!(
            operation("GET", "/v1/licenses"),
            Some(Operation::Licenses)
        ));
        assert!(operation("POST", "/v1/licenses").is_none());
        assert!(operation("GET", "/v1/licenses/").is_none());
        assert!(matches!(
            operation("POST", "/v1/licenses/1/messengers/grWhatsApp/chats/7928%40c.us/messages/text"),
            Some(Operation::SendText { chat }) if chat == "7928@c.us"
        ));
        assert!(matches!(
            operation("DELETE", "/v1/licenses/1/messengers/telegram/callbackUrl"),
            Some(Operation::DeleteCallback { license, messenger }) if license == "1" && messenger == "telegram"
        ));
        assert!(operation("GET", "v1/licenses").is_none());
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }

    #[test]
    fn bare_phone_numbers_become_chat_ids() {
        assert_eq!(chat_id("79283207637"), "79283207637@c.us");
        assert_eq!(chat_id("+79283207637"), "79283207637@c.us");
        assert_eq!(chat_id("79283207637@c.us"), "79283207637@c.us");
        assert_eq!(chat_id("-100123"), "-100123");
    }

    #[test]
    fn spoilt_pair_replies() {
        let issued = TokenPair {
            access: AccessToken::new("a"),
            access_expires_at: 10,
            refresh: RefreshToken::new("r"),
            refresh_expires_at: 20,
            cabinet_user_id: 7,
        };
        let body = |shape| -> Value {
            serde_json::from_slice(&pair_reply(&issued, &shape).body).unwrap_or_default()
        };
        let text = String::from_utf8_lossy(&pair_reply(&issued, &Shape::Normal).body).to_string();
        assert!(text.starts_with(r#"{"success":true,"data":{"#), "{text}");
        let normal = body(Shape::Normal);
        assert_eq!(normal["data"]["accessTokenEndTime"], json!(10));
        assert_eq!(normal["data"]["tokenType"], json!("raw"));
        let missing = body(Shape::Missing("refreshToken"));
        assert_eq!(missing["success"], json!(true));
        assert!(missing["data"].get("refreshToken").is_none());
        assert!(missing["data"].get("accessToken").is_some());
        assert!(body(Shape::Missing("success")).get("success").is_none());
        assert!(body(Shape::Missing("data")).get("data").is_none());
        let wrong = body(Shape::WrongTypes);
        assert_eq!(wrong["data"]["cabinetUserId"], json!("7"));
        assert_eq!(wrong["data"]["refreshTokenEndTime"], json!("20"));
    }
}
