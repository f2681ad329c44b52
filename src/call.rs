//! Calls of any shape through a [`Session`](crate::Session): a [`Call`] (method, path and a
//! body that is empty, raw bytes with their own content type, or a multipart [`Form`]) and its
//! [`Reply`] (status, headers and body bytes).
//!
//! A `Call` owns what it sends, so the session can send it a second time after getting a fresh
//! token.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::error::{Endpoint, Error, Result};

/// One authenticated call: `method` on `path`, with a body. See
/// [`Session::call`](crate::Session::call).
///
/// ```
/// use chatapp_session::{Call, Form};
///
/// let upload = Call::new("POST", "/v1/licenses/1/messengers/grWhatsApp/chats/79001234567/messages/file")
///     .form(Form::new()
///         .file("file", "report.pdf", "application/pdf", b"%PDF-1.7 ...".to_vec())
///         .text("caption", "The report"));
/// let raw = Call::new("PUT", "/v1/something").body("text/csv", b"a,b\n1,2\n".to_vec());
/// let download = Call::new("GET", "/v1/some/file").accept("application/octet-stream");
/// # let _ = (upload, raw, download);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Call {
    method: String,
    path: String,
    body: Body,
    accept: Option<String>,
}

/// What a [`Call`] sends.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// No body (`Content-Length: 0` for `POST`, `PUT` and `PATCH`).
    Empty,
    /// These bytes, with this `Content-Type`.
    Raw {
        /// The `Content-Type` header.
        content_type: String,
        /// The bytes sent.
        bytes: Vec<u8>,
    },
    /// A `multipart/form-data` form.
    Form(Form),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Raw {
                content_type,
                bytes,
            } => f
                .debug_struct("Raw")
                .field("content_type", content_type)
                .field("bytes", &bytes.len())
                .finish(),
            Body::Form(form) => f.debug_tuple("Form").field(form).finish(),
        }
    }
}

impl Call {
    /// `method` (e.g. `POST`) on `path` (starting with `/`, e.g. `/v1/licenses`), no body.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Call {
            method: method.into(),
            path: path.into(),
            body: Body::Empty,
            accept: None,
        }
    }

    /// Sends `bytes` as the body, with `content_type` as its `Content-Type`.
    pub fn body(mut self, content_type: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Raw {
            content_type: content_type.into(),
            bytes: bytes.into(),
        };
        self
    }

    /// Sends `value` as a JSON body.
    ///
    /// # Errors
    /// [`Error::Config`] when `value` cannot be written as JSON (a map with non-string keys,
    /// a failing `Serialize` implementation).
    pub fn json<B: serde::Serialize + ?Sized>(self, value: &B) -> Result<Self> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::Config(format!("the body cannot be written as JSON: {e}")))?;
        Ok(self.body("application/json", bytes))
    }

    /// Sends `form` as a `multipart/form-data` body.
    pub fn form(mut self, form: Form) -> Self {
        self.body = Body::Form(form);
        self
    }

    /// The `Accept` header (default `application/json`), e.g. `application/octet-stream` or
    /// `*/*` for a download.
    pub fn accept(mut self, accept: impl Into<String>) -> Self {
        self.accept = Some(accept.into());
        self
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The body.
    pub fn body_ref(&self) -> &Body {
        &self.body
    }

    /// The `Accept` header to send.
    pub fn accept_header(&self) -> &str {
        self.accept.as_deref().unwrap_or("application/json")
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body", &self.body)
            .field("accept", &self.accept_header())
            .finish()
    }
}

/// A `multipart/form-data` form: text fields and files, in order. The transport encodes it
/// (the ureq transport with ureq's own multipart encoder).
///
/// Field names and file names are escaped as browsers do (`"` as `%22`, CR as `%0D`, LF as
/// `%0A`), so no name can end the `Content-Disposition` header early.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Form {
    parts: Vec<FormPart>,
}

/// One part of a [`Form`].
#[derive(Clone, PartialEq, Eq)]
pub struct FormPart {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

/// `"`, CR and LF percent-encoded, as the WHATWG's form encoding does for multipart names.
fn escape_name(name: &str) -> String {
    name.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Form::default()
    }

    /// Adds a text field.
    pub fn text(mut self, name: &str, value: impl Into<String>) -> Self {
        self.parts.push(FormPart {
            name: escape_name(name),
            file_name: None,
            content_type: None,
            data: value.into().into_bytes(),
        });
        self
    }

    /// Adds a file: field `name`, sent as `file_name` with `content_type` (e.g. `image/png`).
    pub fn file(
        mut self,
        name: &str,
        file_name: &str,
        content_type: impl Into<String>,
        data: impl Into<Vec<u8>>,
    ) -> Self {
        self.parts.push(FormPart {
            name: escape_name(name),
            file_name: Some(escape_name(file_name)),
            content_type: Some(content_type.into()),
            data: data.into(),
        });
        self
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[FormPart] {
        &self.parts
    }
}

impl fmt::Debug for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.parts).finish()
    }
}

impl FormPart {
    /// The field name (escaped).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file name (escaped), for a file.
    pub fn file_name(&self) -> Option<&str> {
        self.file_name.as_deref()
    }

    /// The content type, for a file.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The field's value or the file's bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

impl fmt::Debug for FormPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormPart")
            .field("name", &self.name)
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// A reply the server accepted (2xx, and not the ChatApp error envelope): its status, headers
/// and body bytes, whatever the content type.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// A reply with these parts; header names are kept as given (compared without case).
    pub fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Every header, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first header called `name` (without regard to case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Content-Type` header.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taken.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body read as the ChatApp envelope, its `data` as `T` (for a JSON reply to an upload,
    /// for instance).
    ///
    /// # Errors
    /// [`Error::Protocol`] when the body is not the success envelope, or its `data` does not
    /// have the shape of `T` (the message names `T`).
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        let data = crate::transport::parse_envelope(Endpoint::Request, self.status, &self.body)?;
        crate::transport::data_as(self.status, data)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("content_type", &self.content_type())
            .field("bytes", &self.body.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_break_the_part_header() {
        let form =
            Form::new()
                .text("a\"b", "v")
                .file("f\r\nX: 1", "x\".pdf", "application/pdf", vec![1]);
        let names: Vec<&str> = form.parts().iter().map(FormPart::name).collect();
        assert_eq!(names, ["a%22b", "f%0D%0AX: 1"]);
        assert_eq!(form.parts()[1].file_name(), Some("x%22.pdf"));
    }

    #[test]
    fn debug_shows_sizes_not_bytes() {
        let call = Call::new("PUT", "/x").body("text/plain", b"SECRET-ish".to_vec());
        let text = format!("{call:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("10"), "{text}");
        let reply = Reply::new(
            200,
            vec![("Content-Type".into(), "a/b".into())],
            b"SECRET".to_vec(),
        );
        let text = format!("{reply:?}");
        assert!(!text.contains("SECRET") && text.contains("a/b"), "{text}");
        assert_eq!(reply.header("content-TYPE"), Some("a/b"));
    }

    #[test]
    fn a_reply_reads_its_data() {
        let reply = Reply::new(
            200,
            Vec::new(),
            br#"{"success":true,"data":{"id":"7"}}"#.to_vec(),
        );
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Sent {
            id: String,
        }
        assert_eq!(reply.data::<Sent>().ok(), Some(Sent { id: "7".into() }));
        match reply.data::<Vec<u32>>() {
            Err(e @ Error::Protocol { .. }) => assert!(e.to_string().contains("Vec<u32>"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
