//! What happens to a frame, and why a frame was dropped.

/// The pipeline's decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it out of the peer port of the bridge, unchanged.
    Forward,
    /// Free it and count the reason.
    Drop(DropReason),
    /// Hand it to the control plane's exception path (frames for the gateway).
    Punt,
}

/// Why a frame was not forwarded. Counted per worker and per ingress port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header (14 bytes): not a frame we can bridge.
    Runt = 0,
    /// The egress queue was full: `tx_burst` took fewer frames than offered.
    TxQueueFull = 1,
    /// A frame for the gateway itself while no exception path is attached.
    NoExceptionPath = 2,
}

impl DropReason {
    /// Number of reasons (the size of per-reason counter arrays).
    pub const COUNT: usize = 3;
    /// Every reason, in counter-index order.
    pub const ALL: [DropReason; Self::COUNT] =
        [DropReason::Runt, DropReason::TxQueueFull, DropReason::NoExceptionPath];

    /// The counter index.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name shown by `hbgw stats` and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::TxQueueFull => "tx_queue_full",
            DropReason::NoExceptionPath => "no_exception_path",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_match_all_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: std::collections::BTreeSet<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
