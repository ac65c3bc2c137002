//! The stamp every generated frame carries in its last [`STAMP_LEN`] bytes:
//! a magic, the frame's sequence number and the TSC when it was sent. The
//! receiver reads it back to count loss and reordering and to measure
//! end-to-end latency on the same clock.
//!
//! Plain UDP frames carry the stamp as their payload (UDP checksum 0, which
//! IPv4 allows, so rewriting it needs no checksum update). Application frames
//! (DNS, TLS, HTTP, frames from a pcap) carry it as an Ethernet trailer past
//! the IP packet's end, which no checksum covers and parsers ignore.

/// Bytes the stamp occupies at the end of the frame.
pub const STAMP_LEN: usize = 18;
const MAGIC: [u8; 2] = *b"hG";

/// Writes the stamp into the last [`STAMP_LEN`] bytes of `frame`.
#[inline]
pub fn write(frame: &mut [u8], seq: u64, tsc: u64) {
    let at = frame.len() - STAMP_LEN;
    let s = &mut frame[at..];
    s[..2].copy_from_slice(&MAGIC);
    s[2..10].copy_from_slice(&seq.to_le_bytes());
    s[10..18].copy_from_slice(&tsc.to_le_bytes());
}

/// Reads the stamp: `(seq, tsc)`, or `None` for a frame that carries none.
#[inline]
pub fn read(frame: &[u8]) -> Option<(u64, u64)> {
    let at = frame.len().checked_sub(STAMP_LEN)?;
    let s = &frame[at..];
    if s[..2] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(s[2..10].try_into().ok()?);
    let tsc = u64::from_le_bytes(s[10..18].try_into().ok()?);
    Some((seq, tsc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_the_tail() {
        let mut f = vec![0xaau8; 60];
        write(&mut f, 0x0102_0304_0506_0708, u64::MAX - 1);
        assert_eq!(read(&f), Some((0x0102_0304_0506_0708, u64::MAX - 1)));
        assert!(f[..60 - STAMP_LEN].iter().all(|&b| b == 0xaa), "only the tail is written");
    }

    #[test]
    fn foreign_and_short_frames_have_no_stamp() {
        assert_eq!(read(&[0u8; 60]), None);
        assert_eq!(read(&[0u8; 5]), None);
    }
}
