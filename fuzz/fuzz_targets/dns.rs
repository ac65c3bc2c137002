//! `dns::parse_query` / `parse_tcp_query` against hickory-proto: where
//! hickory reads a query, ours reads the same lower-cased name, or refuses it
//! for one of its documented stricter rules (a compression pointer in the
//! question; a label byte that is not printable ASCII, or a '.').
#![no_main]

use hbgw_dataplane::parse::dns::{self, DnsError, DnsName};
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = dns::parse_query(data);
    let mut tcp = (data.len() as u16).to_be_bytes().to_vec();
    tcp.extend_from_slice(data);
    let tcp_ours = dns::parse_tcp_query(&tcp);
    if data.len() >= dns::HEADER_LEN && data.len() <= usize::from(u16::MAX) {
        assert_eq!(tcp_ours, ours);
    }
    let Ok(m) = Message::from_vec(data) else { return };
    if m.message_type() != MessageType::Query {
        return;
    }
    let Some(q) = m.queries().first() else { return };
    let labels: Vec<&[u8]> = q.name().iter().collect();
    let name = labels.iter().map(|l| String::from_utf8_lossy(l).to_ascii_lowercase()).collect::<Vec<_>>().join(".");
    match ours {
        Ok(mine) => {
            let mut buf = DnsName::new();
            assert_eq!(mine.write_name(&mut buf), name);
            assert_eq!(mine.qtype, u16::from(q.query_type()));
        }
        Err(DnsError::CompressedName) => {}
        Err(DnsError::BadLabelByte) => {
            assert!(labels.iter().any(|l| l.iter().any(|&b| !b.is_ascii_graphic() || b == b'.')));
        }
        Err(e) => panic!("hickory read {name:?}, ours said {e:?}"),
    }
});
