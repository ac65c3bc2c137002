//! [`PacketIo`] over DPDK mbufs: how the DPDK-free worker loop drives real
//! ports. Each worker builds its own [`DpdkIo`] on its lcore.

use super::ffi;
use hbgw_dataplane::io::{PacketIo, PortId, QueueId};

/// One mbuf, as a handle the worker moves between its burst arrays.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct Mbuf(*mut ffi::rte_mbuf);

impl Default for Mbuf {
    fn default() -> Self {
        Mbuf(std::ptr::null_mut())
    }
}

/// Port I/O of one worker. Zero-sized: the queues it uses are named per call,
/// and the plan guarantees no other worker uses them.
#[derive(Debug, Default)]
pub struct DpdkIo {
    // Not Send/Sync: built on, and used only by, its worker's lcore.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl DpdkIo {
    /// I/O for the calling worker lcore.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `out.len()` fresh, empty mbufs from `pool`, all or none (a
    /// traffic generator's source of frames). False when the pool is short.
    pub fn alloc_bulk(&mut self, pool: &super::mempool::Mempool, out: &mut [Mbuf]) -> bool {
        // SAFETY: `out` has room for `out.len()` pointers and `Mbuf` is a
        // transparent pointer; on success DPDK hands us ownership of each
        // (reset, single-segment, empty), on failure it writes nothing we keep.
        unsafe { ffi::hbgw_pktmbuf_alloc_bulk(pool.as_ptr(), out.as_mut_ptr().cast(), out.len() as u32) == 0 }
    }
}

impl PacketIo for DpdkIo {
    type Packet = Mbuf;

    #[inline]
    fn rx_burst(&mut self, port: PortId, queue: QueueId, out: &mut [Mbuf]) -> usize {
        let n = out.len().min(usize::from(u16::MAX)) as u16;
        // SAFETY: `out` has room for `n` pointers and `Mbuf` is a transparent
        // pointer; this worker alone polls `queue` of `port` (the plan assigns
        // each rx queue to exactly one worker).
        usize::from(unsafe { ffi::hbgw_rx_burst(port, queue, out.as_mut_ptr().cast(), n) })
    }

    #[inline]
    fn tx_burst(&mut self, port: PortId, queue: QueueId, pkts: &[Mbuf]) -> usize {
        let n = pkts.len().min(usize::from(u16::MAX)) as u16;
        // SAFETY: every pointer came from rx_burst and is owned by this worker;
        // DPDK takes ownership of the first k it returns. tx_burst does not
        // write the array, so casting away const is sound. `queue` is this
        // worker's own tx queue.
        usize::from(unsafe { ffi::hbgw_tx_burst(port, queue, pkts.as_ptr() as *mut *mut ffi::rte_mbuf, n) })
    }

    #[inline]
    fn frame(&self, pkt: &Mbuf) -> &[u8] {
        // SAFETY: the mbuf came from rx_burst and is owned by this worker
        // until it is sent or freed; its first segment holds data_len bytes at
        // buf_addr + data_off, which DPDK keeps valid while we own it.
        unsafe {
            let m = &*pkt.0;
            std::slice::from_raw_parts((m.buf_addr as *const u8).add(usize::from(m.data_off)), usize::from(m.data_len))
        }
    }

    fn frame_room(&mut self, pkt: &Mbuf) -> &mut [u8] {
        // SAFETY: as in `frame`; this worker owns the mbuf exclusively until
        // it is sent or freed, so a mutable view of its single segment's
        // buffer (data_off up to buf_len) aliases nothing. Chained mbufs get
        // an empty room: their frame is not contiguous.
        unsafe {
            let m = &mut *pkt.0;
            if m.nb_segs != 1 {
                return &mut [];
            }
            let off = usize::from(m.data_off);
            std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(off), usize::from(m.buf_len).saturating_sub(off))
        }
    }

    fn set_frame_len(&mut self, pkt: &Mbuf, len: usize) {
        // SAFETY: the mbuf is owned by this worker; the caller wrote `len`
        // bytes within the room `frame_room` returned (single segment), so
        // data_len and pkt_len both become `len`.
        unsafe {
            let m = &mut *pkt.0;
            m.data_len = len as u16;
            m.pkt_len = len as u32;
        }
    }

    #[inline]
    fn free(&mut self, pkts: &[Mbuf]) {
        // SAFETY: every pointer is owned by this worker and freed once: the
        // worker frees exactly the frames it neither sent nor freed before.
        unsafe { ffi::hbgw_pktmbuf_free_bulk(pkts.as_ptr() as *mut *mut ffi::rte_mbuf, pkts.len() as u32) }
    }

    #[inline]
    fn cycles(&self) -> u64 {
        // SAFETY: reads the TSC.
        unsafe { ffi::hbgw_rdtsc() }
    }

    #[inline(always)]
    fn prefetch(&self, addr: *const u8) {
        super::prefetch(addr);
    }
}
