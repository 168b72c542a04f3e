//! Parsing of path, query and header values, with the error texts of `rest-api.md` §6.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, header};
use cairn_core::{
    BlockSize, Cid, CidError,
    manifest::{MAX_FILENAME_LEN, MAX_MIMETYPE_LEN},
};

use super::error::{ApiError, ApiResult};

/// The query string as a map; unknown parameters are ignored by the callers. A repeated key keeps
/// its first value.
pub(crate) fn query_map(query: Option<&str>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(percent_decode(k))
            .or_insert_with(|| percent_decode(v));
    }
    map
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CID from a path segment; `400` with upstream's wording when it does not parse.
pub(crate) fn parse_cid(text: &str) -> ApiResult<Cid> {
    text.parse::<Cid>().map_err(|e: CidError| match e {
        CidError::WrongCodec { .. } => ApiError::bad_request(format!("Error parsing Cid: {e}")),
        other => ApiError::bad_request(other.to_string()),
    })
}

/// A boolean query value: `true`/`false` (any case) or `1`/`0`.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// The optional `advertise` query parameter (default true).
pub(crate) fn advertise_param(query: &HashMap<String, String>) -> ApiResult<bool> {
    match query.get("advertise") {
        None => Ok(true),
        Some(v) => parse_bool(v)
            .ok_or_else(|| ApiError::bad_request("Missing or invalid advertise parameter")),
    }
}

/// The optional `blockSize` query parameter.
pub(crate) fn block_size_param(query: &HashMap<String, String>) -> ApiResult<BlockSize> {
    let Some(raw) = query.get("blockSize") else {
        return Ok(BlockSize::DEFAULT);
    };
    let value: u64 = raw
        .parse()
        .map_err(|_| ApiError::bad_request("Invalid blockSize parameter"))?;
    BlockSize::new(value).map_err(|_| {
        ApiError::bad_request("blockSize must be a power of two between 4096 and 524288 bytes")
    })
}

/// The download id path segment.
pub(crate) fn download_id(text: &str) -> ApiResult<u64> {
    text.parse()
        .map_err(|_| ApiError::bad_request("Invalid download ID"))
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// `Content-Type` → manifest mimetype (`rest-api.md` §2.1): stored verbatim (trimmed) when its
/// essence is a known media type.
pub(crate) fn mimetype_header(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| unprocessable("The MIME type is not valid."))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_MIMETYPE_LEN {
        return Err(unprocessable(format!(
            "Mimetype exceeds maximum size of {MAX_MIMETYPE_LEN} bytes"
        )));
    }
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !is_known_media_type(&essence) {
        return Err(unprocessable(format!(
            "The MIME type '{text}' is not valid."
        )));
    }
    Ok(Some(text.to_owned()))
}

/// A media type is known when `mime_guess` maps it to at least one extension (its table is the
/// node's table of known types), or it is `application/octet-stream`.
fn is_known_media_type(essence: &str) -> bool {
    // Types clients send without naming a file type: `application/x-www-form-urlencoded` is
    // what curl `--data-binary` and most HTTP libraries put on a POST body by default.
    const GENERIC: &[&str] = &[
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ];
    if GENERIC.contains(&essence) {
        return true;
    }
    match essence.split_once('/') {
        Some((top, sub)) if !top.is_empty() && !sub.is_empty() && top != "*" && sub != "*" => {
            mime_guess::get_extensions(top, sub).is_some()
        }
        _ => false,
    }
}

/// `Content-Disposition` → manifest filename (`rest-api.md` §2.1).
pub(crate) fn filename_header(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(header::CONTENT_DISPOSITION) else {
        return Ok(None);
    };
    let invalid = || unprocessable("The filename is not valid.");
    let text = std::str::from_utf8(value.as_bytes()).map_err(|_| invalid())?;
    let mut plain = None;
    let mut extended = None;
    for param in split_params(text) {
        let param = param.trim();
        let Some((key, val)) = param.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let val = val.trim();
        if key == "filename" {
            plain = Some(unquote(val));
        } else if key == "filename*" {
            extended = Some(decode_ext_value(val).ok_or_else(invalid)?);
        }
    }
    let Some(name) = extended.or(plain) else {
        return Ok(None);
    };
    validate_filename(&name)?;
    Ok(Some(name))
}

/// Splits on `;` outside double quotes.
fn split_params(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unquote(val: &str) -> String {
    match val.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => val.to_owned(),
    }
}

/// RFC 5987 `charset'lang'pct-encoded`; only UTF-8 (and its ASCII subset) is accepted.
fn decode_ext_value(val: &str) -> Option<String> {
    let mut parts = val.splitn(3, '\'');
    let charset = parts.next()?.to_ascii_lowercase();
    let _lang = parts.next()?;
    let encoded = parts.next()?;
    if charset != "utf-8" && charset != "us-ascii" {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn validate_filename(name: &str) -> ApiResult<()> {
    if name.len() > MAX_FILENAME_LEN {
        return Err(unprocessable(format!(
            "Filename exceeds maximum size of {MAX_FILENAME_LEN} bytes"
        )));
    }
    let invalid = || unprocessable("The filename is not valid.");
    if name.is_empty()
        || name.starts_with(' ')
        || name.ends_with(' ')
        || name.ends_with('.')
        || name
            .chars()
            .any(|c| c.is_control() || "/\\:*?\"<>|^".contains(c))
    {
        return Err(invalid());
    }
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let upper = stem.to_ascii_uppercase();
    let device = matches!(upper.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && upper.len() == 4
            && upper.as_bytes()[3].is_ascii_digit());
    if device {
        return Err(invalid());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn disposition(v: &str) -> ApiResult<Option<String>> {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(v).expect("header"),
        );
        filename_header(&h)
    }

    #[test]
    fn filenames() {
        assert_eq!(
            disposition("attachment; filename=\"a b.txt\"").expect("ok"),
            Some("a b.txt".into())
        );
        assert_eq!(disposition("filename=\"x\"").expect("ok"), Some("x".into()));
        assert_eq!(
            disposition("inline; filename=y.bin").expect("ok"),
            Some("y.bin".into())
        );
        assert_eq!(
            disposition("attachment; filename=\"a\"; filename*=UTF-8''%C3%A9t%C3%A9.txt")
                .expect("ok"),
            Some("été.txt".into())
        );
        assert_eq!(disposition("attachment").expect("ok"), None);
        for bad in [
            "attachment; filename=\"\"",
            "attachment; filename=\"a/b\"",
            "attachment; filename=\"CON.txt\"",
            "attachment; filename=\"com1\"",
            "attachment; filename=\"trailing.\"",
            "attachment; filename=\" lead\"",
            "attachment; filename=\"a?b\"",
        ] {
            let e = disposition(bad).expect_err(bad);
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(e.message, "The filename is not valid.", "{bad}");
        }
        let long = format!("attachment; filename=\"{}\"", "a".repeat(256));
        assert_eq!(
            disposition(&long).expect_err("long").message,
            "Filename exceeds maximum size of 255 bytes"
        );
    }

    #[test]
    fn mimetypes() {
        let mut h = HeaderMap::new();
        for ok in [
            "text/plain",
            "application/octet-stream",
            "image/png; q=1",
            "TEXT/HTML",
            "application/x-www-form-urlencoded",
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            assert_eq!(mimetype_header(&h).expect(ok), Some(ok.to_owned()));
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("foo/bar"));
        assert_eq!(
            mimetype_header(&h).expect_err("unknown").message,
            "The MIME type 'foo/bar' is not valid."
        );
    }

    #[test]
    fn queries() {
        let q = query_map(Some("blockSize=4096&advertise=FALSE&x"));
        assert_eq!(block_size_param(&q).expect("bs").get(), 4096);
        assert!(!advertise_param(&q).expect("adv"));
        let q = query_map(Some("blockSize=abc&advertise=maybe"));
        assert_eq!(
            block_size_param(&q).expect_err("bs").message,
            "Invalid blockSize parameter"
        );
        assert!(advertise_param(&q).is_err());
        let q = query_map(Some("blockSize=5000"));
        assert!(block_size_param(&q).is_err());
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
    }
}
