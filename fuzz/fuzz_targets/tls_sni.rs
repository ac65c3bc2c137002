//! `tls::parse_client_hello_sni` against tls-parser: where tls-parser finds
//! a host_name in a ClientHello, ours returns the same bytes (unless the
//! session id is over 32 bytes, which ours rejects as malformed).
#![no_main]

use hbgw_dataplane::parse::tls::{self, TlsError};
use libfuzzer_sys::fuzz_target;
use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};

fuzz_target!(|data: &[u8]| {
    let ours = tls::parse_client_hello_sni(data);
    let Ok((_, rec)) = tls_parser::parse_tls_plaintext(data) else { return };
    let Some(TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch))) = rec.msg.first() else { return };
    let Some(ext) = ch.ext else { return };
    let Ok((_, exts)) = tls_parser::parse_tls_client_hello_extensions(ext) else { return };
    let Some(names) = exts.iter().find_map(|e| match e {
        TlsExtension::SNI(v) => Some(v),
        _ => None,
    }) else {
        return;
    };
    let Some((_, name)) = names.iter().find(|(t, _)| t.0 == 0) else { return };
    if ch.session_id.map_or(0, <[u8]>::len) > 32 {
        assert_eq!(ours, Err(TlsError::Malformed));
    } else {
        assert_eq!(ours, Ok(*name));
    }
});
