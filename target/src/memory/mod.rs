//! Data buffer pools, sized once at start-up: host DRAM always, and the CMB of an NVMe
//! SSD (p2pmem) when one is usable. Implements the core's [`BufferPool`] contract; the
//! transport registers each region with the NIC and records its key here.

pub mod host;
pub mod p2pmem;
pub mod region;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tracing::debug;

use crate::core::{Buffer, BufferPool, Placement, Region};
use host::HostRegion;
use p2pmem::P2pMemMapping;
use region::{PageAllocator, PAGE_BYTES};

/// The bytes behind a pool.
pub enum Memory {
    Host(HostRegion),
    P2p(P2pMemMapping),
}

impl Memory {
    pub fn address(&self) -> u64 {
        match self {
            Memory::Host(host) => host.address(),
            Memory::P2p(p2p) => p2p.address(),
        }
    }
    pub fn len_bytes(&self) -> usize {
        match self {
            Memory::Host(host) => host.len_bytes(),
            Memory::P2p(p2p) => p2p.len_bytes(),
        }
    }
}

/// One region carved into pages.
pub struct RegionPool {
    pub region: Region,
    pub memory: Memory,
    pages: Mutex<PageAllocator>,
    local_key: AtomicU32,
}

#[derive(Debug, Serialize)]
pub struct PoolStats {
    pub size_bytes: u64,
    pub in_use_bytes: u64,
    pub high_water_bytes: u64,
}

impl RegionPool {
    pub fn new(region: Region, memory: Memory) -> RegionPool {
        let pages = memory.len_bytes() / PAGE_BYTES as usize;
        RegionPool { region, memory, pages: Mutex::new(PageAllocator::new(pages)), local_key: AtomicU32::new(0) }
    }

    /// Records the key of the memory region the transport registered over this pool.
    pub fn set_local_key(&self, key: u32) {
        self.local_key.store(key, Ordering::Relaxed);
    }

    fn pages(&self) -> MutexGuard<'_, PageAllocator> {
        self.pages.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn allocate(&self, len_bytes: u32) -> Option<Buffer> {
        let count = u64::from(len_bytes).div_ceil(PAGE_BYTES) as usize;
        let first = self.pages().allocate(count)?;
        let offset_bytes = first as u64 * PAGE_BYTES;
        Some(Buffer {
            region: self.region,
            offset_bytes,
            len_bytes,
            address: self.memory.address() + offset_bytes,
            local_key: self.local_key.load(Ordering::Relaxed),
        })
    }

    fn release(&self, buffer: &Buffer) {
        let count = u64::from(buffer.len_bytes).div_ceil(PAGE_BYTES) as usize;
        self.pages().release((buffer.offset_bytes / PAGE_BYTES) as usize, count);
    }

    pub fn stats(&self) -> PoolStats {
        let pages = self.pages();
        PoolStats {
            size_bytes: pages.pages() as u64 * PAGE_BYTES,
            in_use_bytes: pages.in_use() as u64 * PAGE_BYTES,
            high_water_bytes: pages.high_water() as u64 * PAGE_BYTES,
        }
    }
}

/// The pools of the whole target, shared by every queue.
#[derive(Clone)]
pub struct Pools {
    pub host: Arc<RegionPool>,
    pub cmb: Option<Arc<RegionPool>>,
}

impl Pools {
    pub fn host_only(len_bytes: usize) -> std::io::Result<Pools> {
        Ok(Pools { host: Arc::new(RegionPool::new(Region::Host, Memory::Host(HostRegion::new(len_bytes)?))), cmb: None })
    }

    /// A queue's view of the pools. With `use_cmb` false (the queue's path cannot use the
    /// CMB, e.g. rxe below a 4096-byte path MTU), payload goes to host memory.
    pub fn handle(&self, use_cmb: bool) -> PoolHandle {
        PoolHandle { pools: self.clone(), use_cmb: use_cmb && self.cmb.is_some() }
    }
}

/// Per-queue handle implementing the core's contract.
pub struct PoolHandle {
    pools: Pools,
    use_cmb: bool,
}

impl PoolHandle {
    fn pool(&self, region: Region) -> &RegionPool {
        match (region, &self.pools.cmb) {
            (Region::Cmb, Some(cmb)) => cmb,
            _ => &self.pools.host,
        }
    }
}

impl BufferPool for PoolHandle {
    fn allocate(&mut self, len_bytes: u32, placement: Placement) -> Option<Buffer> {
        let region = if placement == Placement::Payload && self.use_cmb { Region::Cmb } else { Region::Host };
        let buffer = self.pool(region).allocate(len_bytes);
        if buffer.is_none() {
            debug!(?region, len_bytes, "pool exhausted; request waits");
        }
        buffer
    }

    fn release(&mut self, buffer: Buffer) {
        self.pool(buffer.region).release(&buffer);
    }

    fn read(&self, buffer: &Buffer, out: &mut [u8]) {
        let len = out.len().min(buffer.len_bytes as usize);
        match &self.pool(buffer.region).memory {
            // SAFETY: the core reads a buffer only between data arrival and release,
            // when no device writes it.
            #[allow(unsafe_code)]
            Memory::Host(host) => unsafe { host.read(buffer.offset_bytes as usize, &mut out[..len]) },
            Memory::P2p(p2p) => p2p.read_volatile(buffer.offset_bytes as usize, &mut out[..len]),
        }
    }

    fn write(&mut self, buffer: &Buffer, data: &[u8]) {
        let len = data.len().min(buffer.len_bytes as usize);
        match &self.pool(buffer.region).memory {
            // SAFETY: the core writes a buffer only before handing it to a device.
            #[allow(unsafe_code)]
            Memory::Host(host) => unsafe { host.write(buffer.offset_bytes as usize, &data[..len]) },
            Memory::P2p(p2p) => p2p.write_volatile(buffer.offset_bytes as usize, &data[..len]),
        }
    }
}
