//! The packet buffer pool.

use super::{ffi, rte_errno, strerror};
use std::ffi::CString;
use std::ptr::NonNull;

/// An mbuf pool (`rte_pktmbuf_pool_create`).
pub struct Mempool {
    ptr: NonNull<ffi::rte_mempool>,
}

// SAFETY: DPDK mempools are multi-producer/multi-consumer and designed to be
// used from every lcore; the handle is just a pointer to shared memory.
unsafe impl Send for Mempool {}
// SAFETY: as above, every operation on a mempool is thread-safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `count` mbufs with the default data room (2048 bytes
    /// plus headroom) and a per-lcore cache of `cache`.
    pub fn new(name: &str, count: u32, cache: u32) -> Result<Self, String> {
        let cname = CString::new(name).map_err(|_| format!("mempool name {name:?} contains NUL"))?;
        let cache = cache.min(ffi::RTE_MEMPOOL_CACHE_MAX_SIZE).min(count / 2);
        // SAFETY: the name is NUL-terminated; the sizes are plain integers;
        // SOCKET_ID_ANY (-1) lets EAL place the pool.
        let ptr = unsafe {
            ffi::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                count,
                cache,
                0,
                ffi::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                -1,
            )
        };
        NonNull::new(ptr).map(|ptr| Self { ptr }).ok_or_else(|| {
            format!(
                "cannot create the packet pool ({count} mbufs): {}: reserve more hugepages \
                 (scripts/setup-hugepages.sh), raise -m, or lower dataplane.mempool_size",
                strerror(rte_errno())
            )
        })
    }

    /// The raw pointer, for queue setup.
    pub fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.ptr.as_ptr()
    }

    /// Mbufs currently free in the pool (including lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive for as long as `self` is.
        unsafe { ffi::hbgw_mempool_avail_count(self.ptr.as_ptr()) }
    }
}
