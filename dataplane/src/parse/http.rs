//! The start of an HTTP/1.x request (RFC 9112): method, target, Host.
//!
//! # Contract
//!
//! [`parse_request`] takes the data of a TCP segment, on any port. Empty
//! lines before the request line are skipped (as RFC 9112 section 2.2 allows).
//! The request line must be complete and exactly `method SP target SP
//! HTTP/1.0|HTTP/1.1`, ending in CRLF or a bare LF: the method a token, the
//! target one or more visible bytes (obs-text allowed). Header lines are then
//! read while they are complete: `name: value`, the name a token with no space
//! before the colon, the value's surrounding spaces and tabs trimmed, a CR
//! anywhere but before the LF rejected. The first `Host` header is returned
//! raw ([`HttpRequest::host_raw`]) and without its port
//! ([`HttpRequest::host`]); a second one is flagged, since two hosts are how
//! requests are smuggled past a filter that reads one of them.
//!
//! A segment that ends inside the headers is not an error: the request comes
//! back with [`HttpRequest::headers_complete`] false and the Host, if it was
//! among the complete lines. A segment that ends inside the request line is
//! [`HttpError::Truncated`]. The grammar follows `httparse`'s (the
//! differential oracle in the tests) so that both read the same Host.
//! No header count limit applies: each line costs a scan of its bytes only.

/// Why a segment gave no HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The request line is not complete in the segment.
    Truncated,
    /// Not an HTTP/1.x request line.
    NotHttp,
    /// A header line that does not parse.
    BadHeader,
}

/// The start of an HTTP/1.x request, borrowed from the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// The method token (`GET`, `POST`, ...).
    pub method: &'a [u8],
    /// The request target as sent (`/index.html`, or absolute form through a
    /// proxy).
    pub path: &'a [u8],
    /// The minor version: 0 or 1.
    pub minor_version: u8,
    /// Whether the segment held the whole header block (up to the empty line).
    pub headers_complete: bool,
    /// Whether more than one Host header was seen.
    pub duplicate_host: bool,
    host: Option<&'a [u8]>,
}

impl<'a> HttpRequest<'a> {
    /// The first Host header's value, trimmed, port included.
    pub fn host_raw(&self) -> Option<&'a [u8]> {
        self.host
    }

    /// The first Host header's value without its port: `example.com:8080`
    /// gives `example.com`, `[2001:db8::1]:443` gives `[2001:db8::1]`.
    pub fn host(&self) -> Option<&'a [u8]> {
        self.host.map(strip_port)
    }
}

/// Parses the HTTP/1.x request at the start of `segment`.
pub fn parse_request(segment: &[u8]) -> Result<HttpRequest<'_>, HttpError> {
    let mut rest = segment;
    let request_line = loop {
        let (line, tail) = next_line(rest).ok_or(HttpError::Truncated)?;
        rest = tail;
        if !line.is_empty() {
            break line;
        }
    };
    let mut req = parse_request_line(request_line)?;
    while let Some((line, tail)) = next_line(rest) {
        rest = tail;
        if line.is_empty() {
            req.headers_complete = true;
            break;
        }
        let (name, value) = parse_header(line)?;
        if name.eq_ignore_ascii_case(b"host") {
            if req.host.is_some() {
                req.duplicate_host = true;
            } else {
                req.host = Some(value);
            }
        }
    }
    Ok(req)
}

/// The next line without its LF or CRLF, and what follows it; `None` if no
/// LF is left.
fn next_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let lf = memchr::memchr(b'\n', buf)?;
    let line = buf.get(..lf)?;
    let tail = buf.get(lf + 1..)?;
    Some((line.strip_suffix(b"\r").unwrap_or(line), tail))
}

fn parse_request_line(line: &[u8]) -> Result<HttpRequest<'_>, HttpError> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().ok_or(HttpError::NotHttp)?;
    let version = parts.next().ok_or(HttpError::NotHttp)?;
    if method.is_empty() || !all_tokens(method) {
        return Err(HttpError::NotHttp);
    }
    if path.is_empty() || !all(path, |b| matches!(b, 0x21..=0x7e | 0x80..=0xff)) {
        return Err(HttpError::NotHttp);
    }
    let minor_version = match version {
        b"HTTP/1.0" => 0,
        b"HTTP/1.1" => 1,
        _ => return Err(HttpError::NotHttp),
    };
    Ok(HttpRequest { method, path, minor_version, headers_complete: false, duplicate_host: false, host: None })
}

fn parse_header(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    let colon = line.iter().position(|&b| b == b':').ok_or(HttpError::BadHeader)?;
    let name = line.get(..colon).unwrap_or_default();
    let value = line.get(colon + 1..).unwrap_or_default();
    if name.is_empty() || !all_tokens(name) {
        return Err(HttpError::BadHeader);
    }
    if !all(value, |b| matches!(b, b'\t' | 0x20..=0x7e | 0x80..=0xff)) {
        return Err(HttpError::BadHeader);
    }
    Ok((name, value.trim_ascii_start().trim_ascii_end()))
}

/// RFC 9110 `tchar`, as one pattern (compiled to range tests and a bit
/// mask, where searching the list of symbols was a loop per byte).
fn is_token(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

fn all_tokens(bytes: &[u8]) -> bool {
    all(bytes, is_token)
}

/// Whether `ok` holds for every byte, tested without a branch per byte (a
/// request is checked whole before it is a hint, and the early exit of
/// `Iterator::all` was a taken branch per byte: measured, perf annotate).
#[inline(always)]
fn all(bytes: &[u8], ok: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(true, |acc, &b| acc & ok(b))
}

/// `host[:port]` -> `host`, keeping an IPv6 literal's brackets.
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        };
    }
    match host.iter().position(|&b| b == b':') {
        Some(colon) => host.get(..colon).unwrap_or(host),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static REQUEST_BYTES: &[u8] =
        b"GET /a?b=c HTTP/1.1\r\nUser-Agent: t\r\nhOsT: \t Example.com:8080 \r\nAccept: */*\r\n\r\nbody";

    #[test]
    fn deconstruct() {
        let r = parse_request(REQUEST_BYTES).unwrap();
        assert_eq!((r.method, r.path, r.minor_version), (&b"GET"[..], &b"/a?b=c"[..], 1));
        assert_eq!(r.host_raw(), Some(&b"Example.com:8080"[..]));
        assert_eq!(r.host(), Some(&b"Example.com"[..]));
        assert!(r.headers_complete && !r.duplicate_host);
    }

    #[test]
    fn truncated_and_overlong() {
        let line_end = REQUEST_BYTES.iter().position(|&b| b == b'\n').unwrap();
        for n in 0..=line_end {
            assert_eq!(parse_request(&REQUEST_BYTES[..n]), Err(HttpError::Truncated), "{n}");
        }
        // Cut inside the headers: no error; Host once its line is complete.
        let host_end = line_end + 1 + REQUEST_BYTES[line_end + 1..].iter().position(|&b| b == b'\n').unwrap();
        let host_end = host_end + 1 + REQUEST_BYTES[host_end + 1..].iter().position(|&b| b == b'\n').unwrap();
        for n in line_end + 1..REQUEST_BYTES.len() - 5 {
            let r = parse_request(&REQUEST_BYTES[..n]).unwrap();
            assert!(!r.headers_complete);
            assert_eq!(r.host().is_some(), n > host_end, "{n}");
        }
        let r = parse_request(b"\r\n\nPOST * HTTP/1.0\n\n").unwrap();
        assert_eq!((r.method, r.path, r.minor_version, r.host()), (&b"POST"[..], &b"*"[..], 0, None));
    }

    #[test]
    fn rejected() {
        for bad in [
            &b"GET  / HTTP/1.1\r\n"[..],
            b"GET / HTTP/2.0\r\n",
            b"GET /\r\n",
            b"G(T / HTTP/1.1\r\n",
            b"GET / HTTP/1.1 \r\n",
            b"\x16\x03\x01\x00\x05\n",
        ] {
            assert_eq!(parse_request(bad), Err(HttpError::NotHttp), "{:?}", String::from_utf8_lossy(bad));
        }
        for bad in [&b"Host : a\r\n"[..], b"Host\r\n", b": a\r\n", b"Host: a\rb\r\n", b"Host: \x7f\r\n"] {
            let mut req = b"GET / HTTP/1.1\r\n".to_vec();
            req.extend_from_slice(bad);
            assert_eq!(parse_request(&req), Err(HttpError::BadHeader), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn token_bytes_are_tchar() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_token(b), tchar, "{b:#x}");
        }
    }

    #[test]
    fn host_forms() {
        let r = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap();
        assert_eq!((r.host(), r.duplicate_host), (Some(&b"a"[..]), true));
        for (raw, host) in [
            (&b"[2001:db8::1]:443"[..], &b"[2001:db8::1]"[..]),
            (b"[2001:db8::1]", b"[2001:db8::1]"),
            (b"example.com", b"example.com"),
            (b"", b""),
        ] {
            assert_eq!(strip_port(raw), host);
        }
    }
}
