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

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident = $idx:literal => $text:literal,)*) => {
        /// Why a frame was not forwarded. Counted per worker and per ingress port.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $name = $idx,)*
        }

        impl DropReason {
            /// Every reason, in counter-index order.
            pub const ALL: [DropReason; Self::COUNT] = [$(DropReason::$name,)*];

            /// The name shown by `hbgw stats`, in JSON and in logs.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$name => $text,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header (14 bytes): not a frame we can bridge.
    Runt = 0 => "runt",
    /// The egress queue was full: `tx_burst` took fewer frames than offered.
    TxQueueFull = 1 => "tx_queue_full",
    /// A frame for the gateway itself while no exception path is attached.
    NoExceptionPath = 2 => "no_exception_path",
    /// L2–L4 headers that do not parse (the per-reason breakdown is counted
    /// separately); dropped under the default malformed-frame policy.
    Malformed = 3 => "malformed",
    /// An MDR threat indicator of a *log and drop* feed matched.
    ThreatIndicator = 4 => "threat_indicator",
    /// The source is Missing in a missing-heartbeat zone.
    MissingHeartbeat = 5 => "missing_heartbeat",
    /// The source's health is below the rule's minimum source heartbeat.
    SourceHeartbeat = 6 => "source_heartbeat",
    /// The rule blocks clients with no heartbeat.
    SourceWithoutHeartbeat = 7 => "source_without_heartbeat",
    /// The destination's health is below the rule's minimum destination heartbeat.
    DestinationHeartbeat = 8 => "destination_heartbeat",
    /// The rule blocks requests to destinations with no heartbeat.
    DestinationWithoutHeartbeat = 9 => "destination_without_heartbeat",
    /// Lateral movement protection: one end is Red (or Yellow/Missing, as configured).
    LateralMovement = 10 => "lateral_movement",
    /// A firewall rule with action drop matched.
    PolicyDrop = 11 => "policy_drop",
    /// A firewall rule with action reject matched.
    PolicyReject = 12 => "policy_reject",
    /// No rule matched and the default action is drop.
    DefaultDrop = 13 => "default_drop",
    /// No policy has been received yet and the gateway fails closed.
    NoPolicy = 14 => "no_policy",
}

impl DropReason {
    /// Number of reasons (the size of per-reason counter arrays).
    pub const COUNT: usize = 15;

    /// The counter index.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the reason comes from Security Heartbeat (logged as a
    /// heartbeat-rule drop).
    pub const fn is_heartbeat(self) -> bool {
        matches!(
            self,
            DropReason::MissingHeartbeat
                | DropReason::SourceHeartbeat
                | DropReason::SourceWithoutHeartbeat
                | DropReason::DestinationHeartbeat
                | DropReason::DestinationWithoutHeartbeat
                | DropReason::LateralMovement
        )
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
