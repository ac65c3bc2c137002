//! The server name (SNI, RFC 6066) of a TLS ClientHello (RFC 8446 / 5246).
//!
//! # Contract
//!
//! [`parse_client_hello_sni`] takes the data of a TCP segment, on any port,
//! and reads one TLS record: content type 22 (handshake), any version (RFC
//! 8446 has servers ignore it), a length that must fit in the segment. Inside it, the first
//! handshake message must be a ClientHello (type 1) whose whole body fits in
//! the record; its session id (at most 32 bytes), cipher suites, compression
//! methods and extensions are walked by their length prefixes, each of which
//! must stay inside its parent. The first `host_name` entry of the
//! `server_name` extension (type 0) is returned as a slice of the segment,
//! exactly as sent: not lower-cased and not checked to be a host name (that
//! is policy's job, and an IP literal or an empty name is worth seeing).
//!
//! A ClientHello split across records or segments yields
//! [`TlsError::Truncated`] and so, at the frame level, no hint. The gateway
//! does not reassemble: a client that fragments its hello on purpose is one
//! policy can still catch by the missing hint.

use super::Cursor;

/// TLS record content type of a handshake.
pub const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
pub const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Extension type of server_name.
pub const EXT_SERVER_NAME: u16 = 0;
/// Bytes in a TLS record header.
pub const RECORD_HEADER_LEN: usize = 5;

/// Why a segment gave no SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsError {
    /// Not a TLS handshake record.
    NotHandshake,
    /// The first handshake message is not a ClientHello.
    NotClientHello,
    /// The record or the ClientHello does not fit in the bytes present.
    Truncated,
    /// A length prefix inside the ClientHello overruns its parent.
    Malformed,
    /// A well-formed ClientHello with no server_name host_name.
    NoServerName,
}

/// Returns the SNI host name of the ClientHello at the start of `segment`.
pub fn parse_client_hello_sni(segment: &[u8]) -> Result<&[u8], TlsError> {
    let mut rec = Cursor::new(segment);
    if rec.u8().ok_or(TlsError::Truncated)? != CONTENT_HANDSHAKE {
        return Err(TlsError::NotHandshake);
    }
    // legacy_record_version: RFC 8446 says to ignore it, and servers do, so
    // a filter that required 3.x would be one a client could walk past.
    rec.u16().ok_or(TlsError::Truncated)?;
    let record = rec.vec16().ok_or(TlsError::Truncated)?;

    let mut hs = Cursor::new(record);
    let msg_type = hs.u8().ok_or(TlsError::Truncated)?;
    if msg_type != HANDSHAKE_CLIENT_HELLO {
        return Err(TlsError::NotClientHello);
    }
    let body_len = hs.u24().ok_or(TlsError::Truncated)?;
    let body = hs.take(usize::try_from(body_len).unwrap_or(usize::MAX)).ok_or(TlsError::Truncated)?;

    let mut ch = Cursor::new(body);
    ch.take(2 + 32).ok_or(TlsError::Malformed)?; // legacy_version, random
    let session_id = ch.vec8().ok_or(TlsError::Malformed)?;
    if session_id.len() > 32 {
        return Err(TlsError::Malformed);
    }
    let suites = ch.vec16().ok_or(TlsError::Malformed)?;
    if suites.len() % 2 != 0 {
        return Err(TlsError::Malformed);
    }
    ch.vec8().ok_or(TlsError::Malformed)?; // compression methods
    if ch.rest().is_empty() {
        return Err(TlsError::NoServerName); // no extensions block at all
    }
    let extensions = ch.vec16().ok_or(TlsError::Malformed)?;

    let mut exts = Cursor::new(extensions);
    while !exts.rest().is_empty() {
        let ext_type = exts.u16().ok_or(TlsError::Malformed)?;
        let data = exts.vec16().ok_or(TlsError::Malformed)?;
        if ext_type == EXT_SERVER_NAME {
            return server_name_host(data);
        }
    }
    Err(TlsError::NoServerName)
}

/// The first host_name (type 0) of a server_name extension's data.
fn server_name_host(data: &[u8]) -> Result<&[u8], TlsError> {
    let mut c = Cursor::new(data);
    let list = c.vec16().ok_or(TlsError::Malformed)?;
    let mut names = Cursor::new(list);
    while !names.rest().is_empty() {
        let name_type = names.u8().ok_or(TlsError::Malformed)?;
        let name = names.vec16().ok_or(TlsError::Malformed)?;
        if name_type == 0 {
            return Ok(name);
        }
    }
    Err(TlsError::NoServerName)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a ClientHello record with the given SNI (or none) and extra
    /// extensions placed before server_name, as a TLS 1.3 client sends one.
    pub(crate) fn client_hello(sni: Option<&[u8]>, session_id: &[u8]) -> Vec<u8> {
        let mut exts = Vec::new();
        // supported_versions: TLS 1.3, TLS 1.2.
        exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03]);
        if let Some(name) = sni {
            let n = name.len() as u16;
            exts.extend_from_slice(&EXT_SERVER_NAME.to_be_bytes());
            exts.extend_from_slice(&(n + 5).to_be_bytes());
            exts.extend_from_slice(&(n + 3).to_be_bytes());
            exts.push(0);
            exts.extend_from_slice(&n.to_be_bytes());
            exts.extend_from_slice(name);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x5a; 32]);
        body.push(session_id.len() as u8);
        body.extend_from_slice(session_id);
        body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02, 0x01, 0x00]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![HANDSHAKE_CLIENT_HELLO];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![CONTENT_HANDSHAKE, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn deconstruct() {
        let rec = client_hello(Some(b"Example.COM"), &[7; 32]);
        assert_eq!(parse_client_hello_sni(&rec), Ok(&b"Example.COM"[..]));
        assert_eq!(parse_client_hello_sni(&client_hello(None, &[])), Err(TlsError::NoServerName));
    }

    #[test]
    fn truncated_and_overlong() {
        let rec = client_hello(Some(b"a.example"), &[]);
        for n in 0..rec.len() {
            assert_eq!(parse_client_hello_sni(&rec[..n]), Err(TlsError::Truncated), "{n}");
        }
        let mut more = rec.clone();
        more.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0xff]);
        assert_eq!(parse_client_hello_sni(&more), Ok(&b"a.example"[..]));
    }

    #[test]
    fn rejected() {
        let rec = client_hello(Some(b"a.example"), &[]);
        let with = |at: usize, v: u8| {
            let mut b = rec.clone();
            b[at] = v;
            parse_client_hello_sni(&b).map(<[u8]>::to_vec)
        };
        assert_eq!(with(0, 0x17), Err(TlsError::NotHandshake));
        assert_eq!(with(1, 0x7f), Ok(b"a.example".to_vec()), "record version is ignored");
        assert_eq!(with(5, 2), Err(TlsError::NotClientHello));
        assert_eq!(with(5 + 4 + 34, 33), Err(TlsError::Malformed), "session id over 32");
        assert_eq!(with(5 + 4 + 35 + 1, 3), Err(TlsError::Malformed), "odd cipher suites");
        let end = rec.len();
        assert_eq!(with(end - 9 - 2, 0xff), Err(TlsError::Malformed), "name overruns its list");
        assert_eq!(with(end - 9 - 3, 1), Err(TlsError::NoServerName), "not a host_name");
    }
}
