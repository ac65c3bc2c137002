//! The I/O a worker polls: receive a burst, look at frames, transmit a burst,
//! free what was not sent. DPDK implements it over mbufs (in the root crate);
//! [`mem::MemIo`] implements it over in-memory rings for tests.

/// A DPDK port id.
pub type PortId = u16;
/// A queue index on a port.
pub type QueueId = u16;

/// Packet I/O for one worker. Implementations are owned by one worker thread;
/// none of the methods may block, lock or allocate.
pub trait PacketIo {
    /// A handle to one received frame (an mbuf pointer, a slab index). `Copy`
    /// because bursts are moved between fixed arrays; ownership is tracked by
    /// the worker: every handle received is either transmitted or freed once.
    type Packet: Copy + Default;

    /// Receives up to `out.len()` frames from `port`/`queue` into `out`;
    /// returns how many.
    fn rx_burst(&mut self, port: PortId, queue: QueueId, out: &mut [Self::Packet]) -> usize;

    /// Offers `pkts` to `port`/`queue`; returns how many were taken, always a
    /// prefix of `pkts`. The caller still owns (and must free) the rest.
    fn tx_burst(&mut self, port: PortId, queue: QueueId, pkts: &[Self::Packet]) -> usize;

    /// The frame's bytes (the first segment of a chained buffer).
    fn frame(&self, pkt: &Self::Packet) -> &[u8];

    /// The frame's buffer for rewriting in place: the frame followed by the
    /// buffer's free tailroom (empty when the frame cannot be rewritten, e.g.
    /// a chained buffer).
    fn frame_room(&mut self, pkt: &Self::Packet) -> &mut [u8];

    /// Sets the frame's length after a rewrite (at most the room's length).
    fn set_frame_len(&mut self, pkt: &Self::Packet, len: usize);

    /// Returns frames to their pool.
    fn free(&mut self, pkts: &[Self::Packet]);

    /// A monotonic cycle counter (the TSC under DPDK).
    fn cycles(&self) -> u64;

    /// Hints that `addr` will be read soon (a prefetch; never faults, even
    /// for a bad address). The default does nothing.
    #[inline(always)]
    fn prefetch(&self, addr: *const u8) {
        let _ = addr;
    }
}

pub mod mem {
    //! In-memory rings standing in for ports, so the worker loop runs in unit
    //! tests without EAL. Frames live in a slab; a packet handle is its index.

    use super::{PacketIo, PortId, QueueId};
    use std::cell::Cell;
    use std::collections::{HashMap, VecDeque};

    /// Ports as queues of frames.
    #[derive(Debug, Default)]
    pub struct MemIo {
        slab: Vec<Option<Vec<u8>>>,
        free_slots: Vec<u32>,
        rx: HashMap<(PortId, QueueId), VecDeque<u32>>,
        sent: HashMap<PortId, Vec<Vec<u8>>>,
        tx_room: HashMap<PortId, usize>,
        clock: Cell<u64>,
        /// Cycles the clock advances on every read, to make latency non-zero.
        pub cycles_per_read: u64,
    }

    impl MemIo {
        /// Empty rings.
        pub fn new() -> Self {
            Self { cycles_per_read: 100, ..Default::default() }
        }

        /// Queues `frame` for reception on `port`/`queue`.
        pub fn inject(&mut self, port: PortId, queue: QueueId, frame: &[u8]) {
            let slot = match self.free_slots.pop() {
                Some(s) => {
                    self.slab[s as usize] = Some(frame.to_vec());
                    s
                }
                None => {
                    self.slab.push(Some(frame.to_vec()));
                    (self.slab.len() - 1) as u32
                }
            };
            self.rx.entry((port, queue)).or_default().push_back(slot);
        }

        /// Limits how many more frames `port` accepts (a full tx ring).
        pub fn set_tx_room(&mut self, port: PortId, room: usize) {
            self.tx_room.insert(port, room);
        }

        /// Frames transmitted on `port`, in order.
        pub fn sent(&self, port: PortId) -> &[Vec<u8>] {
            self.sent.get(&port).map_or(&[], Vec::as_slice)
        }

        /// Frames received but neither sent nor freed (a leak if non-zero
        /// after the worker is done).
        pub fn frames_in_flight(&self) -> usize {
            let queued: usize = self.rx.values().map(VecDeque::len).sum();
            self.slab.iter().filter(|s| s.is_some()).count() - queued
        }
    }

    impl PacketIo for MemIo {
        type Packet = u32;

        fn rx_burst(&mut self, port: PortId, queue: QueueId, out: &mut [u32]) -> usize {
            let Some(q) = self.rx.get_mut(&(port, queue)) else {
                return 0;
            };
            let n = out.len().min(q.len());
            for slot in out.iter_mut().take(n) {
                *slot = q.pop_front().expect("length checked");
            }
            n
        }

        fn tx_burst(&mut self, port: PortId, _queue: QueueId, pkts: &[u32]) -> usize {
            let room = self.tx_room.get(&port).copied().unwrap_or(usize::MAX);
            let n = pkts.len().min(room);
            if let Some(r) = self.tx_room.get_mut(&port) {
                *r -= n;
            }
            for &p in &pkts[..n] {
                let frame = self.slab[p as usize].take().expect("double free or unknown packet");
                self.free_slots.push(p);
                self.sent.entry(port).or_default().push(frame);
            }
            n
        }

        fn frame(&self, pkt: &u32) -> &[u8] {
            self.slab[*pkt as usize].as_deref().expect("packet was freed")
        }

        fn frame_room(&mut self, pkt: &u32) -> &mut [u8] {
            let v = self.slab[*pkt as usize].as_mut().expect("packet was freed");
            // An mbuf's data room is 2048 bytes after the headroom.
            if v.len() < 2048 {
                v.resize(2048, 0);
            }
            v
        }

        fn set_frame_len(&mut self, pkt: &u32, len: usize) {
            self.slab[*pkt as usize].as_mut().expect("packet was freed").truncate(len);
        }

        fn free(&mut self, pkts: &[u32]) {
            for &p in pkts {
                assert!(self.slab[p as usize].take().is_some(), "double free of packet {p}");
                self.free_slots.push(p);
            }
        }

        fn cycles(&self) -> u64 {
            let now = self.clock.get() + self.cycles_per_read;
            self.clock.set(now);
            now
        }
    }
}
