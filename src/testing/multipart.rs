//! Reading a `multipart/form-data` request body, for the fake's `messages/file` endpoint.
//! Lenient where clients differ (quoting, header case), strict where a wrong reading would
//! hide a client bug (a missing boundary, a part without a name).

/// One part of a form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) file_name: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) data: Vec<u8>,
}

/// The boundary named by a `multipart/form-data` content type.
fn boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
            .filter(|b| !b.is_empty())
    })
}

/// The value of `key="..."` (or unquoted) in a `Content-Disposition` header.
fn disposition_param(header: &str, key: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The parts of `body`, or `None` when it is not a well-formed form of `content_type`.
pub(crate) fn parse(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let delimiter = format!("--{}", boundary(content_type)?).into_bytes();
    let mut at = find(body, &delimiter, 0)? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        // After a delimiter: `--` ends the form, CRLF starts a part.
        match body.get(at..at + 2)? {
            b"--" => return Some(parts),
            b"\r\n" => at += 2,
            _ => return None,
        }
        let head_end = find(body, b"\r\n\r\n", at)?;
        let head = std::str::from_utf8(body.get(at..head_end)?).ok()?;
        let mut next_delimiter = b"\r\n".to_vec();
        next_delimiter.extend_from_slice(&delimiter);
        let data_end = find(body, &next_delimiter, head_end + 4)?;
        let (mut name, mut file_name, mut content_type) = (None, None, None);
        for line in head.split("\r\n") {
            let (key, value) = line.split_once(':')?;
            if key.trim().eq_ignore_ascii_case("content-disposition") {
                name = disposition_param(value, "name");
                file_name = disposition_param(value, "filename");
            } else if key.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(value.trim().to_owned());
            }
        }
        parts.push(Part {
            name: name?,
            file_name,
            content_type,
            data: body.get(head_end + 4..data_end)?.to_vec(),
        });
        at = data_end + next_delimiter.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_read() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"caption\"\r\n\r\nhi\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\
            Content-Type: application/octet-stream\r\n\r\n\x00\x01\r\n--X\r\n--XyZ--\r\n";
        let parts = parse("multipart/form-data; boundary=XyZ", body).unwrap_or_default();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].data.as_slice()),
            ("caption", &b"hi"[..])
        );
        assert_eq!(parts[1].file_name.as_deref(), Some("a.bin"));
        assert_eq!(parts[1].data, b"\x00\x01\r\n--X");
        assert_eq!(
            parts[1].content_type.as_deref(),
            Some("application/octet-stream")
        );
    }

    #[test]
    fn malformed_forms_are_refused() {
        let ct = "multipart/form-data; boundary=B";
        assert!(parse("application/json", b"").is_none());
        assert!(parse("multipart/form-data", b"--B--").is_none());
        assert!(parse(ct, b"no delimiter").is_none());
        assert!(parse(
            ct,
            b"--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--"
        )
        .is_none());
        assert!(parse(
            ct,
            b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated"
        )
        .is_none());
        assert_eq!(parse(ct, b"--B--\r\n"), Some(Vec::new()));
    }
}
