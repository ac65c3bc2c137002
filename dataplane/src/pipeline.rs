//! One frame in, one verdict out.
//!
//! Today the pipeline is the transparent bridge: any well-formed Ethernet frame
//! is forwarded unchanged to the other side. The enforcement stages (parse ->
//! classify -> verdict against endpoint health, policy and threat indicators)
//! plug in here; the worker loop does not change when they do.

use crate::verdict::{DropReason, Verdict};

/// Bytes in an Ethernet II header (dst MAC, src MAC, EtherType).
pub const ETHERNET_HEADER_LEN: usize = 14;

/// The per-worker pipeline. Each worker owns one, so stages may keep
/// worker-local scratch state without sharing.
#[derive(Debug, Default)]
pub struct Pipeline {
    _private: (),
}

impl Pipeline {
    /// A bridge pipeline with no policy.
    pub fn bridge() -> Self {
        Self::default()
    }

    /// Decides what happens to `frame`. Must not allocate, lock or log.
    #[inline]
    pub fn verdict(&mut self, frame: &[u8]) -> Verdict {
        // The bridge never reads past the length: touching the payload would
        // cost a cache miss per packet that no-policy forwarding does not need.
        if frame.len() < ETHERNET_HEADER_LEN {
            return Verdict::Drop(DropReason::Runt);
        }
        Verdict::Forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_forwards_frames_and_drops_runts() {
        let mut p = Pipeline::bridge();
        assert_eq!(p.verdict(&[0u8; 60]), Verdict::Forward);
        assert_eq!(p.verdict(&[0u8; 14]), Verdict::Forward);
        assert_eq!(p.verdict(&[0u8; 13]), Verdict::Drop(DropReason::Runt));
        assert_eq!(p.verdict(&[]), Verdict::Drop(DropReason::Runt));
    }
}
