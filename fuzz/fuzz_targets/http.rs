//! `http::parse_request` against httparse: where httparse reads a complete
//! request head, ours reads the same method, target and first Host value.
#![no_main]

use hbgw_dataplane::parse::http;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = http::parse_request(data);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else { return };
    let r = ours.unwrap_or_else(|e| panic!("httparse accepted, ours said {e:?}"));
    assert_eq!(Some(r.method), req.method.map(str::as_bytes));
    assert_eq!(Some(r.path), req.path.map(str::as_bytes));
    let host = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value);
    assert_eq!(r.host_raw(), host);
    assert!(r.headers_complete);
});
