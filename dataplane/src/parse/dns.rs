//! The name asked for by a DNS query (RFC 1035), over UDP or TCP.
//!
//! # Contract
//!
//! [`parse_query`] takes a DNS message (a UDP payload) and
//! [`parse_tcp_query`] the start of a TCP stream to port 53 (a 2-byte length
//! prefix, then the message). Both read the 12-byte header, require a query
//! (QR bit clear) with at least one question, and validate the first
//! question's QNAME and its QTYPE/QCLASS; nothing after the first question is
//! read, so later sections may be absent or cut off by the segment.
//!
//! The QNAME is validated, never decoded on the packet path: labels of 1 to
//! 63 bytes, each byte printable ASCII other than `.` (so that the text form is
//! unambiguous and needs no escaping), at most 255 bytes in wire form. A
//! compression pointer in the question is rejected: the first question
//! immediately follows the header, so there is nothing earlier it could
//! legitimately point to, and following one is how crafted queries smuggle a
//! name past a filter. [`DnsQuery::write_name`] then writes the lower-cased
//! text form (`www.example.com`, no trailing dot; the root is empty) into a
//! caller-owned [`DnsName`].
//!
//! A message that fails any of this gives a [`DnsError`], which at the frame
//! level means "no hint", never a malformed frame: port 53 carries other
//! things too.

use super::Cursor;

/// The DNS port.
pub const PORT: u16 = 53;
/// Bytes in a DNS header.
pub const HEADER_LEN: usize = 12;
/// The most bytes a name takes in wire form, length bytes included.
pub const MAX_WIRE_NAME_LEN: usize = 255;
/// The most bytes in one label.
pub const MAX_LABEL_LEN: usize = 63;
/// The most bytes the text form of a valid name takes (255 - 2).
pub const MAX_NAME_LEN: usize = 253;

/// Why a message gave no query name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    /// The header or the first question is cut short.
    Truncated,
    /// The QR bit is set: a response, not a query.
    NotAQuery,
    /// QDCOUNT is zero.
    NoQuestion,
    /// The TCP length prefix is shorter than a DNS header.
    BadLength,
    /// A compression pointer in the question name.
    CompressedName,
    /// A label type other than a plain label (0b01 / 0b10 prefixes).
    BadLabelType,
    /// A label byte that is not printable ASCII, or a `.`.
    BadLabelByte,
    /// Longer than [`MAX_WIRE_NAME_LEN`].
    NameTooLong,
}

/// A validated DNS query: header fields and the first question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsQuery<'a> {
    /// Transaction id.
    pub id: u16,
    /// Opcode (0 QUERY).
    pub opcode: u8,
    /// QTYPE of the first question (1 A, 28 AAAA, ...).
    pub qtype: u16,
    /// QCLASS of the first question (1 IN).
    pub qclass: u16,
    qname: &'a [u8],
}

impl<'a> DnsQuery<'a> {
    /// The first question's name in wire form (length-prefixed labels, ending
    /// with the zero byte), validated.
    pub fn qname_wire(&self) -> &'a [u8] {
        self.qname
    }

    /// The labels of the name, in order, as they appear (not lower-cased).
    pub fn labels(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut c = Cursor::new(self.qname);
        core::iter::from_fn(move || c.vec8().filter(|l| !l.is_empty()))
    }

    /// Writes the lower-cased text form of the name into `out`, replacing what
    /// it held, and returns it as text.
    pub fn write_name<'n>(&self, out: &'n mut DnsName) -> &'n str {
        self.decode_into(out);
        out.as_str()
    }

    /// [`DnsQuery::write_name`] without the text view: the packet path reads
    /// the bytes back ([`DnsName::as_bytes`]) and has no use for the UTF-8
    /// check `as_str` makes (measured: ~2% of a DNS frame's cycles).
    #[inline]
    pub fn decode_into(&self, out: &mut DnsName) {
        // The text form is the wire form without its first length byte and
        // its final zero, each other length byte turned into a dot (labels
        // hold no dots: `read_qname` checked). So: one copy, then one hop per
        // label and one vectorised lower-casing pass, instead of a push per
        // byte (measured: the per-byte length update was a store-to-load
        // chain costing ~5 cycles a byte).
        let text = self.qname.get(1..self.qname.len().saturating_sub(1)).unwrap_or(&[]);
        let n = text.len().min(out.buf.len());
        let dst = out.buf.get_mut(..n).unwrap_or(&mut []);
        dst.copy_from_slice(text.get(..n).unwrap_or(&[]));
        // The label lengths are read from the packet (`text`), not from the
        // copy just written: a byte load from the copy waited on the copy's
        // wide stores (no store-to-load forwarding; measured, perf annotate:
        // a third of the decode's cycles on that one load).
        let mut i = self.qname.first().map_or(usize::MAX, |&l| usize::from(l));
        while let (Some(&len), Some(b)) = (text.get(i), dst.get_mut(i)) {
            *b = b'.';
            i += 1 + usize::from(len);
        }
        dst.make_ascii_lowercase();
        // n <= 253 for a validated name (MAX_WIRE_NAME_LEN - 2).
        out.len = n as u8;
    }
}

/// A caller-owned buffer for the text form of a query name, so that decoding
/// needs no allocation. Holds any valid name: its text takes at most
/// [`MAX_NAME_LEN`] bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DnsName {
    buf: [u8; MAX_WIRE_NAME_LEN],
    len: u8,
}

impl Default for DnsName {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for DnsName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl DnsName {
    /// An empty name.
    pub const fn new() -> Self {
        Self { buf: [0; MAX_WIRE_NAME_LEN], len: 0 }
    }

    /// The name's bytes: lower-case printable ASCII, labels joined by `.`.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The name as text (always valid: [`DnsQuery`] admits ASCII only).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// Bytes in the text form.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether this is the root (or nothing was written).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the name is `domain` or a name under it (`a.example.com` is
    /// under `example.com`; `badexample.com` is not). `domain` must be lower
    /// case, without a trailing dot.
    pub fn is_within(&self, domain: &[u8]) -> bool {
        let name = self.as_bytes();
        match name.len().checked_sub(domain.len()) {
            Some(0) => name == domain,
            Some(cut) => name.get(cut..) == Some(domain) && name.get(cut - 1) == Some(&b'.'),
            None => false,
        }
    }
}

/// Parses the DNS query message `msg` (a UDP payload).
pub fn parse_query(msg: &[u8]) -> Result<DnsQuery<'_>, DnsError> {
    let mut c = Cursor::new(msg);
    let id = c.u16().ok_or(DnsError::Truncated)?;
    let flags = c.u16().ok_or(DnsError::Truncated)?;
    let qdcount = c.u16().ok_or(DnsError::Truncated)?;
    c.take(6).ok_or(DnsError::Truncated)?;
    if flags & 0x8000 != 0 {
        return Err(DnsError::NotAQuery);
    }
    if qdcount == 0 {
        return Err(DnsError::NoQuestion);
    }
    let qname = read_qname(&mut c)?;
    let qtype = c.u16().ok_or(DnsError::Truncated)?;
    let qclass = c.u16().ok_or(DnsError::Truncated)?;
    Ok(DnsQuery { id, opcode: ((flags >> 11) & 0x0f) as u8, qtype, qclass, qname })
}

/// Parses the DNS query at the start of a TCP stream: a 2-byte length, then
/// the message, of which `stream` may hold only the first part.
pub fn parse_tcp_query(stream: &[u8]) -> Result<DnsQuery<'_>, DnsError> {
    let mut c = Cursor::new(stream);
    let len = usize::from(c.u16().ok_or(DnsError::Truncated)?);
    if len < HEADER_LEN {
        return Err(DnsError::BadLength);
    }
    let rest = c.rest();
    parse_query(rest.get(..len).unwrap_or(rest))
}

/// Reads and validates a name with no compression, returning its wire form.
fn read_qname<'a>(c: &mut Cursor<'a>) -> Result<&'a [u8], DnsError> {
    let start = c.rest();
    let mut wire_len = 0usize;
    loop {
        let len = c.u8().ok_or(DnsError::Truncated)?;
        match len & 0xc0 {
            0x00 => {}
            0xc0 => return Err(DnsError::CompressedName),
            _ => return Err(DnsError::BadLabelType),
        }
        wire_len += 1 + usize::from(len);
        if wire_len > MAX_WIRE_NAME_LEN {
            return Err(DnsError::NameTooLong);
        }
        if len == 0 {
            return start.get(..wire_len).ok_or(DnsError::Truncated);
        }
        let ahead = c.rest();
        let label = c.take(usize::from(len)).ok_or(DnsError::Truncated)?;
        if !label_bytes_ok(label, ahead) {
            return Err(DnsError::BadLabelByte);
        }
    }
}

/// The top bit of each byte of `w` that is not printable ASCII (`!` to `~`)
/// or is a `.`: eight bytes at once, exact per byte (no carry crosses a
/// byte: each test adds to seven bits).
#[inline(always)]
fn bad_label_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = w & !HIGH;
    let below_bang = !(low7 + ONES * u64::from(0x80 - b'!')) & HIGH;
    let del = (low7 + ONES) & HIGH;
    let dot = !((low7 ^ (ONES * u64::from(b'.'))) + ONES * 0x7f) & HIGH;
    (w & HIGH) | below_bang | del | dot
}

/// Whether every byte of `label` is printable ASCII other than `.`.
/// `ahead` is the message from `label` on: a label shorter than a word is
/// tested as the word read from there, masked to the label's bytes; a longer
/// one word by word, its last partial word as its last eight bytes. A byte
/// at a time, with its early exit, was a taken branch per byte (measured,
/// perf annotate of a worker).
#[inline(always)]
fn label_bytes_ok(label: &[u8], ahead: &[u8]) -> bool {
    let word = |b: &[u8; 8]| u64::from_le_bytes(*b);
    let mut bad = 0u64;
    let mut chunks = label.chunks_exact(8);
    for c in &mut chunks {
        bad |= c.first_chunk::<8>().map_or(0, |c| bad_label_bytes(word(c)));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        if let Some(last) = label.last_chunk::<8>() {
            bad |= bad_label_bytes(word(last));
        } else if let Some(w) = ahead.first_chunk::<8>() {
            bad |= bad_label_bytes(word(w)) & ((1u64 << (8 * rest.len())) - 1);
        } else if !rest.iter().all(|&b| b.is_ascii_graphic() && b != b'.') {
            return false;
        }
    }
    bad == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_bytes_are_checked_like_a_byte_at_a_time() {
        let ok = |b: u8| b.is_ascii_graphic() && b != b'.';
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b'a', b, b'a', b'a', b, b'a', b'a', b]);
            assert_eq!(bad_label_bytes(w) == 0, ok(b), "{b:#x}");
            assert_eq!(bad_label_bytes(w) & 0x80, 0, "{b:#x}: the first byte is a good one");
        }
        // One bad byte at any position of any label length, with and
        // without message bytes after the label (good or bad).
        for n in 1..=63usize {
            for after in [&b""[..], b"\0", b"\0\0\x01\0\x01", b"........"] {
                for at in 0..n {
                    for b in [b'.', b' ', 0, 0x7f, 0x80, b'A'] {
                        let mut msg = vec![b'x'; n];
                        msg[at] = b;
                        msg.extend_from_slice(after);
                        assert_eq!(label_bytes_ok(&msg[..n], &msg), ok(b), "{n} {at} {b:#x} {after:?}");
                    }
                }
                let mut msg = vec![b'x'; n];
                msg.extend_from_slice(after);
                assert!(label_bytes_ok(&msg[..n], &msg));
            }
        }
    }

    // id 0xbeef, RD, one question: WWW.Example.com A IN.
    static QUERY_BYTES: [u8; 33] = [
        0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 3, b'W', b'W', b'W', 7, b'E', b'x',
        b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0x00, 0x01, 0x00, 0x01,
    ];

    #[test]
    fn deconstruct() {
        let q = parse_query(&QUERY_BYTES).unwrap();
        assert_eq!((q.id, q.opcode, q.qtype, q.qclass), (0xbeef, 0, 1, 1));
        assert_eq!(q.qname_wire(), &QUERY_BYTES[12..29]);
        assert_eq!(q.labels().collect::<Vec<_>>(), [&b"WWW"[..], b"Example", b"com"]);
        let mut name = DnsName::new();
        assert_eq!(q.write_name(&mut name), "www.example.com");
        assert!(name.is_within(b"example.com") && name.is_within(b"com") && name.is_within(b"www.example.com"));
        assert!(!name.is_within(b"ample.com") && !name.is_within(b"xwww.example.com"));
    }

    #[test]
    fn tcp_length_prefix() {
        let mut s = vec![0, QUERY_BYTES.len() as u8];
        s.extend_from_slice(&QUERY_BYTES);
        s.extend_from_slice(&[0, 12, 1, 2]); // the start of a pipelined query
        assert_eq!(parse_tcp_query(&s), parse_query(&QUERY_BYTES));
        assert_eq!(parse_tcp_query(&s[..20]), Err(DnsError::Truncated));
        assert_eq!(parse_tcp_query(&[0, 11, 0, 0]), Err(DnsError::BadLength));
        assert_eq!(parse_tcp_query(&[0]), Err(DnsError::Truncated));
    }

    #[test]
    fn truncated_and_overlong() {
        for n in 0..QUERY_BYTES.len() {
            assert_eq!(parse_query(&QUERY_BYTES[..n]), Err(DnsError::Truncated), "{n}");
        }
        let mut long = QUERY_BYTES.to_vec();
        long.extend_from_slice(&[0xff; 100]);
        assert_eq!(parse_query(&long), parse_query(&QUERY_BYTES));
        // 4 labels of 63 bytes: 4 * 64 + 1 = 257 > 255.
        let mut m = QUERY_BYTES[..12].to_vec();
        for _ in 0..4 {
            m.push(63);
            m.extend_from_slice(&[b'a'; 63]);
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse_query(&m), Err(DnsError::NameTooLong));
        // 3 * 64 + 62 + 1 = 255 bytes: the longest name, 253 bytes of text.
        let mut m = QUERY_BYTES[..12].to_vec();
        for n in [63, 63, 63, 61] {
            m.push(n);
            m.extend(std::iter::repeat(b'A').take(usize::from(n)));
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut name = DnsName::new();
        assert_eq!(parse_query(&m).unwrap().write_name(&mut name).len(), MAX_NAME_LEN);
        assert!(name.as_bytes().iter().all(|&b| b == b'a' || b == b'.'));
    }

    #[test]
    fn rejected_names_and_headers() {
        let with = |at: usize, v: u8| {
            let mut b = QUERY_BYTES;
            b[at] = v;
            parse_query(&b).err()
        };
        assert_eq!(with(2, 0x81), Some(DnsError::NotAQuery));
        assert_eq!(with(5, 0), Some(DnsError::NoQuestion));
        assert_eq!(with(12, 0xc0), Some(DnsError::CompressedName));
        assert_eq!(with(12, 0x40), Some(DnsError::BadLabelType));
        assert_eq!(with(13, b'.'), Some(DnsError::BadLabelByte));
        assert_eq!(with(13, b' '), Some(DnsError::BadLabelByte));
        assert_eq!(with(13, 0x80), Some(DnsError::BadLabelByte));
        let mut root = QUERY_BYTES[..12].to_vec();
        root.extend_from_slice(&[0, 0, 2, 0, 1]);
        let mut name = DnsName::new();
        assert_eq!(parse_query(&root).unwrap().write_name(&mut name), "");
        assert!(name.is_empty() && name.is_within(b""));
    }
}
