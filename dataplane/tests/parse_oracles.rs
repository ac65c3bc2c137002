//! Differential tests of `hbgw_dataplane::parse` against independent parsers:
//! hickory-proto (DNS), tls-parser (TLS ClientHello SNI), httparse (HTTP/1.x)
//! and etherparse (Ethernet .. L4).
//!
//! Each parser is fed (a) well-formed messages generated and, where the
//! oracle can, encoded by the oracle, on which both must agree exactly; and
//! (b) those messages mutated, and plain random bytes, on which ours must not
//! panic and, wherever the oracle accepts the message, must extract the same
//! name / SNI / host. The only disagreements allowed are the documented places
//! where ours is stricter than the oracle (listed at each check).
//!
//! Case counts are kept small so the file runs in seconds in debug builds;
//! the cargo-fuzz targets in `fuzz/` run the same comparisons for as long as
//! one likes.

use hbgw_dataplane::parse::dns::{self, DnsError, DnsName};
use hbgw_dataplane::parse::http;
use hbgw_dataplane::parse::tls::{self, TlsError};
use hbgw_dataplane::parse::{parse_frame, AppHint, Network, Transport};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;

// ---------------------------------------------------------------- oracles --

/// The first question's labels joined by '.', lower-cased, as hickory reads
/// them; `None` when hickory rejects the message or it is not a query with a
/// question.
fn hickory_qname(msg: &[u8]) -> Option<(String, u16)> {
    let m = Message::from_vec(msg).ok()?;
    if m.message_type() != MessageType::Query {
        return None;
    }
    let q = m.queries().first()?;
    let labels: Vec<String> = q.name().iter().map(|l| String::from_utf8_lossy(l).to_ascii_lowercase()).collect();
    Some((labels.join("."), u16::from(q.query_type())))
}

/// The first host_name of the first server_name extension, as tls-parser
/// reads it, with the session id length (ours rejects one over 32 bytes).
fn tls_parser_sni(seg: &[u8]) -> Option<(Vec<u8>, usize)> {
    use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};
    let (_, rec) = tls_parser::parse_tls_plaintext(seg).ok()?;
    let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) = rec.msg.first()? else {
        return None;
    };
    let (_, exts) = tls_parser::parse_tls_client_hello_extensions(ch.ext?).ok()?;
    let names = exts.iter().find_map(|e| match e {
        TlsExtension::SNI(v) => Some(v),
        _ => None,
    })?;
    let (_, name) = names.iter().find(|(t, _)| t.0 == 0)?;
    Some((name.to_vec(), ch.session_id.map_or(0, <[u8]>::len)))
}

/// Method, path and first Host value of a request.
type MethodPathHost = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// Method, path and first Host value, as httparse reads a complete head.
fn httparse_request(seg: &[u8]) -> Option<MethodPathHost> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(seg) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let host = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value.to_vec());
    Some((req.method?.as_bytes().to_vec(), req.path?.as_bytes().to_vec(), host))
}

// ------------------------------------------------------------- comparisons --

fn check_dns(msg: &[u8]) -> Result<(), TestCaseError> {
    let ours = dns::parse_query(msg);
    let oracle = hickory_qname(msg);
    if let (Ok(q), Some((name, qtype))) = (&ours, &oracle) {
        let mut buf = DnsName::new();
        prop_assert_eq!(q.write_name(&mut buf), name.as_str());
        prop_assert_eq!(q.qtype, *qtype);
    }
    if let (Err(e), Some((name, _))) = (&ours, &oracle) {
        // Where ours is stricter than hickory: pointers in the question and
        // label bytes that would need escaping in the text form.
        let printable = name.bytes().all(|b| b.is_ascii_graphic());
        prop_assert!(
            matches!(e, DnsError::CompressedName) || (matches!(e, DnsError::BadLabelByte) && !printable) || {
                // A '.' inside a label is printable but rejected too.
                let m = Message::from_vec(msg).unwrap();
                m.queries()[0].name().iter().any(|l| l.contains(&b'.'))
            },
            "hickory read {name:?}, ours said {e:?}"
        );
    }
    let mut tcp = (msg.len() as u16).to_be_bytes().to_vec();
    tcp.extend_from_slice(msg);
    match dns::parse_tcp_query(&tcp) {
        Err(DnsError::BadLength) => prop_assert!(msg.len() < dns::HEADER_LEN),
        tcp_result => prop_assert_eq!(tcp_result, ours),
    }
    Ok(())
}

fn check_tls(seg: &[u8]) -> Result<(), TestCaseError> {
    let ours = tls::parse_client_hello_sni(seg);
    if let Some((name, session_id_len)) = tls_parser_sni(seg) {
        if session_id_len <= 32 {
            prop_assert_eq!(ours, Ok(&name[..]), "tls-parser read {:?}", String::from_utf8_lossy(&name));
        } else {
            prop_assert_eq!(ours, Err(TlsError::Malformed));
        }
    }
    Ok(())
}

fn check_http(seg: &[u8]) -> Result<(), TestCaseError> {
    let ours = http::parse_request(seg);
    if let Some((method, path, host)) = httparse_request(seg) {
        let Ok(r) = ours else {
            return Err(TestCaseError::fail(format!("httparse accepted, ours said {ours:?}")));
        };
        prop_assert_eq!(r.method, &method[..]);
        prop_assert_eq!(r.path, &path[..]);
        prop_assert_eq!(r.host_raw(), host.as_deref());
        prop_assert!(r.headers_complete);
    }
    Ok(())
}

// ------------------------------------------------------------- generators --

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9][a-zA-Z0-9-]{0,14}",
        1 => "_[a-z]{1,8}",
        1 => "[a-zA-Z0-9]{60,63}",
    ]
}

fn dns_query() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(label(), 0..4), any::<u16>(), prop::sample::select(vec![1u16, 28, 16, 15, 65, 255]))
        .prop_filter_map("name too long", |(labels, id, qtype)| {
            let name = Name::from_labels(labels.iter().map(|l| l.as_bytes())).ok()?;
            let mut m = Message::new();
            m.set_id(id).set_message_type(MessageType::Query).set_recursion_desired(true);
            m.add_query(Query::query(name, RecordType::from(qtype)));
            m.to_vec().ok()
        })
}

fn hostname() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9]{1,12}(\\.[a-z0-9-]{1,12}){0,3}", "[A-Za-z0-9._-]{0,40}", "\\[2001:db8::[0-9a-f]{1,4}\\]",]
}

prop_compose! {
    fn client_hello()(
        sni in prop::option::weighted(0.9, hostname()),
        session_id in prop::collection::vec(any::<u8>(), 0..=32),
        suites in prop::collection::vec(any::<u16>(), 1..20),
        comp in prop::collection::vec(any::<u8>(), 1..3),
        before in prop::collection::vec((1u16..0xfff0, prop::collection::vec(any::<u8>(), 0..12)), 0..4),
        after in prop::collection::vec((1u16..0xfff0, prop::collection::vec(any::<u8>(), 0..12)), 0..4),
        record_version in 0u8..4,
    ) -> (Vec<u8>, Option<String>) {
        let ext = |out: &mut Vec<u8>, ty: u16, data: &[u8]| {
            out.extend_from_slice(&ty.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
        };
        // Extensions whose content tls-parser parses strictly are left out of
        // the random ones: it would stop at malformed content before SNI.
        let opaque = |ty: u16| if matches!(ty, 1..=60 | 0xff01 | 0x3374 | 0xffce) { ty ^ 0x4000 } else { ty };
        let mut exts = Vec::new();
        for (ty, data) in &before {
            ext(&mut exts, opaque(*ty), data);
        }
        if let Some(name) = &sni {
            let mut entry = vec![0];
            entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
            entry.extend_from_slice(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend_from_slice(&entry);
            ext(&mut exts, 0, &list);
        }
        for (ty, data) in &after {
            ext(&mut exts, opaque(*ty), data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0x42; 32]);
        body.push(session_id.len() as u8);
        body.extend_from_slice(&session_id);
        body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for s in &suites {
            body.extend_from_slice(&s.to_be_bytes());
        }
        body.push(comp.len() as u8);
        body.extend_from_slice(&comp);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut rec = vec![22, 3, record_version];
        rec.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
        rec.push(1);
        rec.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        rec.extend_from_slice(&body);
        (rec, sni)
    }
}

prop_compose! {
    fn http_request()(
        method in prop_oneof!["GET|POST|PUT|HEAD|OPTIONS|DELETE|CONNECT", "[A-Z][A-Za-z!#$%&'*+.^_`|~-]{0,8}"],
        path in prop_oneof!["/[A-Za-z0-9/._~%?=&+-]{0,40}", Just("*".to_string()), "http://[a-z]{1,8}\\.test/[a-z]{0,5}"],
        minor in 0u8..2,
        host in prop::option::weighted(0.9, ("[a-zA-Z0-9.-]{0,20}", prop::option::of(0u16..))),
        host_at in 0usize..4,
        host_name in prop::sample::select(vec!["Host", "host", "HOST", "hOsT"]),
        others in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}"), 0..6),
        ows in prop::sample::select(vec!["", " ", "\t", "  \t"]),
        lf_only in any::<bool>(),
        leading_blank in any::<bool>(),
        body in "[ -~]{0,20}",
    ) -> (Vec<u8>, Option<String>) {
        let nl = if lf_only { "\n" } else { "\r\n" };
        let mut s = String::new();
        if leading_blank {
            s.push_str(nl);
        }
        s.push_str(&format!("{method} {path} HTTP/1.{minor}{nl}"));
        let others: Vec<_> = others.into_iter().filter(|(n, _)| !n.eq_ignore_ascii_case("host")).collect();
        let host_value = host.map(|(h, port)| match port {
            Some(p) => format!("{h}:{p}"),
            None => h,
        });
        for (i, (name, value)) in others.iter().enumerate() {
            if i == host_at {
                if let Some(h) = &host_value {
                    s.push_str(&format!("{host_name}:{ows}{h}{ows}{nl}"));
                }
            }
            s.push_str(&format!("{name}:{ows}{value}{nl}"));
        }
        if host_at >= others.len() {
            if let Some(h) = &host_value {
                s.push_str(&format!("{host_name}:{ows}{h}{ows}{nl}"));
            }
        }
        s.push_str(nl);
        s.push_str(&body);
        (s.into_bytes(), host_value)
    }
}

/// Applies random edits: mostly overwrites (which keep the structure and so
/// often keep the oracle accepting), some inserts, deletes and truncations.
fn mutate(mut b: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(kind, at, v) in edits {
        if b.is_empty() {
            break;
        }
        let at = at % b.len();
        match kind % 8 {
            0..=4 => b[at] = v,
            5 => b.insert(at, v),
            6 => {
                b.remove(at);
            }
            _ => b.truncate(at),
        }
    }
    b
}

fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..3)
}

// ------------------------------------------------------------------ tests --

/// `cases` unless `PROPTEST_CASES` asks for more (for longer local runs).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn dns_agrees_on_generated_queries(msg in dns_query()) {
        let (name, _) = hickory_qname(&msg).expect("hickory reads what it wrote");
        let q = dns::parse_query(&msg).expect("ours reads what hickory wrote");
        let mut buf = DnsName::new();
        prop_assert_eq!(q.write_name(&mut buf), name.as_str());
        check_dns(&msg)?;
    }

    #[test]
    fn dns_agrees_on_mutated_queries(msg in dns_query(), e in edits()) {
        check_dns(&mutate(msg, &e))?;
    }

    #[test]
    fn dns_survives_random_bytes(msg in prop::collection::vec(any::<u8>(), 0..80)) {
        check_dns(&msg)?;
    }

    #[test]
    fn tls_agrees_on_generated_client_hellos((rec, sni) in client_hello()) {
        let ours = tls::parse_client_hello_sni(&rec);
        match &sni {
            Some(name) => prop_assert_eq!(ours, Ok(name.as_bytes())),
            None => prop_assert_eq!(ours, Err(TlsError::NoServerName)),
        }
        prop_assert_eq!(tls_parser_sni(&rec).map(|(n, _)| n), sni.map(String::into_bytes));
        // Split across segments: no SNI from the first part, no panic.
        for cut in [1, 5, 9, rec.len() / 2, rec.len() - 1] {
            prop_assert_eq!(tls::parse_client_hello_sni(&rec[..cut]), Err(TlsError::Truncated));
        }
    }

    #[test]
    fn tls_agrees_on_mutated_client_hellos((rec, _) in client_hello(), e in edits()) {
        check_tls(&mutate(rec, &e))?;
    }

    #[test]
    fn tls_survives_random_bytes(tail in prop::collection::vec(any::<u8>(), 0..120)) {
        let mut seg = vec![22, 3, 1];
        seg.extend_from_slice(&tail);
        check_tls(&seg)?;
        check_tls(&tail)?;
    }

    #[test]
    fn http_agrees_on_generated_requests((req, host) in http_request()) {
        let r = http::parse_request(&req).expect("ours reads a generated request");
        prop_assert_eq!(r.host_raw(), host.as_deref().map(str::as_bytes));
        prop_assert!(httparse_request(&req).is_some(), "httparse reads a generated request");
        check_http(&req)?;
    }

    #[test]
    fn http_agrees_on_mutated_requests((req, _) in http_request(), e in edits()) {
        check_http(&mutate(req, &e))?;
    }

    #[test]
    fn http_survives_random_bytes(seg in prop::collection::vec(any::<u8>(), 0..80)) {
        check_http(&seg)?;
    }
}

// ------------------------------------------------------------------ frames --

#[derive(Debug, Clone)]
struct FrameSpec {
    vlans: Vec<u16>,
    v6: bool,
    l4: u8,
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    (
        prop::collection::vec(0u16..4096, 0..3),
        any::<bool>(),
        0u8..3,
        any::<u16>(),
        prop::sample::select(vec![53u16, 80, 443, 8080, 1234]),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(vlans, v6, l4, sport, dport, payload)| FrameSpec { vlans, v6, l4, sport, dport, payload })
}

fn build_frame(s: &FrameSpec) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut out = Vec::new();
    macro_rules! finish {
        ($ip:expr) => {{
            let ip = $ip;
            let ip = if s.v6 {
                ip.ipv6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0xfe; 16], 64)
            } else {
                ip.ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64)
            };
            match s.l4 {
                0 => ip.tcp(s.sport, s.dport, 7, 512).syn().write(&mut out, &s.payload).unwrap(),
                1 => ip.udp(s.sport, s.dport).write(&mut out, &s.payload).unwrap(),
                _ if s.v6 => ip.icmpv6_echo_request(s.sport, s.dport).write(&mut out, &s.payload).unwrap(),
                _ => ip.icmpv4_echo_request(s.sport, s.dport).write(&mut out, &s.payload).unwrap(),
            }
        }};
    }
    match s.vlans[..] {
        [] => finish!(eth),
        [a] => finish!(eth.single_vlan(a.try_into().unwrap())),
        [a, b, ..] => finish!(eth.double_vlan(a.try_into().unwrap(), b.try_into().unwrap())),
    }
    out
}

/// Compares what both read from a frame they both accept.
fn check_frame_against_etherparse(f: &[u8]) -> Result<(), TestCaseError> {
    let ours = parse_frame(f);
    let Ok(e) = etherparse::SlicedPacket::from_ethernet(f) else { return Ok(()) };
    let Ok(p) = ours else { return Ok(()) };
    let ep_ips = match &e.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            Some((ip.header().source_addr().into(), ip.header().destination_addr().into()))
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            Some((ip.header().source_addr().into(), ip.header().destination_addr().into()))
        }
        _ => None,
    };
    if let Some((src, dst)) = ep_ips {
        prop_assert_eq!(p.src_ip(), Some(src));
        prop_assert_eq!(p.dst_ip(), Some(dst));
    }
    match (&e.transport, &p.transport) {
        (Some(etherparse::TransportSlice::Tcp(t)), Transport::Tcp(o)) => {
            prop_assert_eq!((o.src_port, o.dst_port), (t.source_port(), t.destination_port()));
            prop_assert_eq!(o.payload, t.payload());
        }
        (Some(etherparse::TransportSlice::Udp(u)), Transport::Udp(o)) => {
            prop_assert_eq!((o.src_port, o.dst_port), (u.source_port(), u.destination_port()));
        }
        _ => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn frames_agree_with_etherparse(s in frame_spec()) {
        let f = build_frame(&s);
        let p = parse_frame(&f).expect("a built frame parses");
        let vlans: Vec<u16> = s.vlans.iter().copied().take(2).collect();
        prop_assert_eq!(p.vlans.as_slice(), &vlans[..]);
        prop_assert!(matches!(p.network, Network::Ipv4(_) | Network::Ipv6(_)));
        match (s.l4, &p.transport) {
            (0, Transport::Tcp(t)) => prop_assert_eq!((t.src_port, t.dst_port, t.payload), (s.sport, s.dport, &s.payload[..])),
            (1, Transport::Udp(u)) => prop_assert_eq!((u.src_port, u.dst_port, u.payload), (s.sport, s.dport, &s.payload[..])),
            (2, Transport::Icmp(i) | Transport::Icmpv6(i)) => prop_assert_eq!(i.body, &s.payload[..]),
            (l4, t) => prop_assert!(false, "l4 {} parsed as {:?}", l4, t),
        }
        if let Some(AppHint::DnsQuery(q)) = p.app {
            // Random payload to port 53 that happens to be a valid query.
            prop_assert_eq!(Ok(q), dns::parse_query(&s.payload).or_else(|_| dns::parse_tcp_query(&s.payload)));
        }
        check_frame_against_etherparse(&f)?;
    }

    #[test]
    fn frames_survive_mutation(s in frame_spec(), e in edits()) {
        let f = mutate(build_frame(&s), &e);
        let _ = parse_frame(&f);
        check_frame_against_etherparse(&f)?;
    }

    #[test]
    fn frames_survive_random_bytes(mut f in prop::collection::vec(any::<u8>(), 0..200), et in prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8])) {
        // Half the time, steer the random bytes into an IP/ARP/VLAN parser.
        if f.len() >= 14 && f[0] & 1 == 0 {
            f[12..14].copy_from_slice(&et.to_be_bytes());
        }
        if let Ok(p) = parse_frame(&f) {
            prop_assert!(p.vlans.len() <= 2);
        }
    }
}

/// Guards against a vacuous differential: enough mutated inputs must still be
/// accepted by both the oracle and ours for the comparisons above to bite.
#[test]
fn mutated_inputs_often_reach_the_comparison() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut both = [0usize; 3];
    let n = 300;
    for _ in 0..n {
        let (m, e) = (dns_query(), edits()).new_tree(&mut runner).unwrap().current();
        let m = mutate(m, &e);
        both[0] += usize::from(hickory_qname(&m).is_some() && dns::parse_query(&m).is_ok());
        let ((rec, _), e) = (client_hello(), edits()).new_tree(&mut runner).unwrap().current();
        let rec = mutate(rec, &e);
        both[1] += usize::from(tls_parser_sni(&rec).is_some() && tls::parse_client_hello_sni(&rec).is_ok());
        let ((req, _), e) = (http_request(), edits()).new_tree(&mut runner).unwrap().current();
        let req = mutate(req, &e);
        both[2] += usize::from(httparse_request(&req).is_some() && http::parse_request(&req).is_ok());
    }
    assert!(both.iter().all(|&b| b >= n / 10), "accepted by both (dns, tls, http): {both:?} of {n}");
}
