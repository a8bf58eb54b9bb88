//! Data buffer pools, sized once at start-up, shared by every queue: a small control
//! pool and a payload pool in one host DRAM mapping, and a peer pool over the p2pmem
//! (typically an NVMe SSD's CMB) of each provider some namespace's device can reach.
//! Implements the core's [`BufferPool`] contract; the transport registers each mapping
//! with each NIC it uses and keeps the keys itself (a buffer names only its region).
//!
//! Each pool keeps one line of waiting requests across all queues. A request that finds
//! the pool short, or finds others already waiting, joins the line; pages coming back go
//! to the head of the line while it fits, and the queue that waiter belongs to is woken
//! to take its lease. So a queue with one command waiting is served in its turn even
//! when other queues hold every buffer, and payload pressure never holds up control data,
//! which has its own pool.

pub mod dma;
pub mod p2pmem;
pub mod region;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::debug;

use crate::core::buffer::{LeaseHome, Tag};
use crate::core::{Buffer, BufferPool, Lease, Placement, Region};
use dma::DmaRegion;
use p2pmem::P2pMemMapping;
use region::{PageAllocator, PAGE_BYTES};

/// Bytes of host memory reserved for control data (Connect data, admin replies,
/// discovery logs, DSM ranges), apart from payload. A reply takes the pages it needs
/// (most take one); the pool is at least one maximum transfer (see [`Pools::new`]).
pub const CONTROL_POOL_BYTES: usize = 1 << 20;

/// The bytes behind a pool.
pub enum Memory {
    Host(DmaRegion),
    P2p(P2pMemMapping),
}

impl Memory {
    fn region(&self) -> &DmaRegion {
        match self {
            Memory::Host(host) => host,
            Memory::P2p(p2p) => &p2p.region,
        }
    }

    pub fn address(&self) -> u64 {
        match self {
            Memory::Host(host) => host.address(),
            Memory::P2p(p2p) => p2p.region.address(),
        }
    }
    pub fn len_bytes(&self) -> usize {
        match self {
            Memory::Host(host) => host.len_bytes(),
            Memory::P2p(p2p) => p2p.region.len_bytes(),
        }
    }
}

/// Where a queue's granted leases wait for it, and how to wake it.
pub struct Mailbox {
    grants: Mutex<VecDeque<(Tag, Lease)>>,
    /// Grants not yet taken: read without the lock on every pass of the queue's loop.
    pending: AtomicUsize,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Mailbox {
    fn deliver(&self, tag: Tag, lease: Lease) {
        lock(&self.grants).push_back((tag, lease));
        self.pending.fetch_add(1, Ordering::Release);
    }
}

/// A request in a pool's line.
struct Waiter {
    mailbox: Arc<Mailbox>,
    tag: Tag,
    len_bytes: u32,
    since: Instant,
}

struct Line {
    pages: PageAllocator,
    waiters: VecDeque<Waiter>,
    waits: u64,
    longest_wait: Duration,
}

/// One pool: a page range of a mapping, and its line of waiters.
pub struct RegionPool {
    pub region: Region,
    pub memory: Arc<Memory>,
    /// Where the pool's pages start inside `memory`.
    base_bytes: u64,
    line: Mutex<Line>,
    /// This pool, for the leases it mints (they give their pages back to it).
    me: Weak<RegionPool>,
}

#[derive(Debug, Serialize)]
pub struct PoolStats {
    pub size_bytes: u64,
    pub in_use_bytes: u64,
    pub high_water_bytes: u64,
    /// Requests in line for a buffer now.
    pub waiting: usize,
    /// Requests that ever had to wait.
    pub waits: u64,
    /// The longest time a request waited, in microseconds.
    pub longest_wait_us: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pages_for(len_bytes: u32) -> usize {
    u64::from(len_bytes).div_ceil(PAGE_BYTES) as usize
}

impl RegionPool {
    /// A pool over `len_bytes` of `memory` from `base_bytes` on (whole pages).
    pub fn new(region: Region, memory: Arc<Memory>, base_bytes: u64, len_bytes: u64) -> Arc<RegionPool> {
        let pages = (len_bytes / PAGE_BYTES) as usize;
        Arc::new_cyclic(|me| RegionPool {
            region,
            memory,
            base_bytes,
            line: Mutex::new(Line { pages: PageAllocator::new(pages), waiters: VecDeque::new(), waits: 0, longest_wait: Duration::ZERO }),
            me: me.clone(),
        })
    }

    /// A pool over all of `memory`.
    pub fn whole(region: Region, memory: Memory) -> Arc<RegionPool> {
        let len = memory.len_bytes() as u64;
        RegionPool::new(region, Arc::new(memory), 0, len)
    }

    pub fn capacity_bytes(&self) -> u64 {
        lock(&self.line).pages.pages() as u64 * PAGE_BYTES
    }

    /// The p2pmem provider whose memory this pool is, if it is device memory.
    pub fn provider(&self) -> Option<&p2pmem::Provider> {
        match &*self.memory {
            Memory::P2p(mapping) => Some(&mapping.provider),
            Memory::Host(_) => None,
        }
    }

    /// A lease over pages the allocator just marked used, starting at `first_page`.
    fn mint(&self, first_page: usize, len_bytes: u32) -> Lease {
        let offset_bytes = self.base_bytes + first_page as u64 * PAGE_BYTES;
        let buffer = Buffer {
            region: self.region,
            address: self.memory.address() + offset_bytes,
            len_bytes,
        };
        // Upgrading cannot fail: minting happens through a live `Arc` of this pool
        // (an allocation through a handle, or a lease's give-back while it holds one).
        let home: Arc<dyn LeaseHome> = match self.me.upgrade() {
            Some(pool) => pool,
            None => unreachable!("a pool mints leases only while it is alive"),
        };
        // SAFETY: the page allocator just marked these pages used, so no other lease
        // covers them; `home` (this pool) keeps the mapping alive and frees exactly
        // these pages in `give_back`.
        #[allow(unsafe_code)]
        unsafe {
            Lease::new(buffer, offset_bytes, home)
        }
    }

    /// A lease now, or `None` with request `tag` of `mailbox`'s queue in line.
    fn allocate(&self, len_bytes: u32, mailbox: &Arc<Mailbox>, tag: Tag) -> Option<Lease> {
        let pages = pages_for(len_bytes);
        let mut line = lock(&self.line);
        if line.waiters.is_empty() {
            if let Some(first) = line.pages.allocate(pages) {
                return Some(self.mint(first, len_bytes));
            }
        }
        line.waits += 1;
        line.waiters.push_back(Waiter { mailbox: mailbox.clone(), tag, len_bytes, since: Instant::now() });
        debug!(region = ?self.region, len_bytes, waiting = line.waiters.len(), "pool short; request waits in line");
        None
    }

    /// A lease now if the pages are free and nobody is in line; never joins the line
    /// (for work outside any queue, such as start-up probes).
    pub fn try_lease(&self, len_bytes: u32) -> Option<Lease> {
        let mut line = lock(&self.line);
        if !line.waiters.is_empty() {
            return None;
        }
        let first = line.pages.allocate(pages_for(len_bytes))?;
        Some(self.mint(first, len_bytes))
    }

    /// A lease as soon as [`RegionPool::try_lease`] gets one, trying for up to `patience`
    /// (work outside any queue that can wait a little: probes, copies).
    pub fn lease_within(&self, len_bytes: u32, patience: Duration) -> Option<Lease> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(lease) = self.try_lease(len_bytes) {
                return Some(lease);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes `mailbox`'s waiters from the line.
    fn leave(&self, mailbox: &Arc<Mailbox>) {
        lock(&self.line).waiters.retain(|waiter| !Arc::ptr_eq(&waiter.mailbox, mailbox));
    }

    pub fn stats(&self) -> PoolStats {
        let line = lock(&self.line);
        let longest = line.waiters.front().map_or(Duration::ZERO, |w| w.since.elapsed()).max(line.longest_wait);
        PoolStats {
            size_bytes: line.pages.pages() as u64 * PAGE_BYTES,
            in_use_bytes: line.pages.in_use() as u64 * PAGE_BYTES,
            high_water_bytes: line.pages.high_water() as u64 * PAGE_BYTES,
            waiting: line.waiters.len(),
            waits: line.waits,
            longest_wait_us: longest.as_micros() as u64,
        }
    }
}

impl LeaseHome for RegionPool {
    /// Frees the pages, then grants them on to the head of the line while it fits, and
    /// wakes the queues that got a lease (after letting go of the line).
    fn give_back(&self, offset_bytes: u64, len_bytes: u32) {
        let mut woken: Vec<Arc<Mailbox>> = Vec::new();
        {
            let mut line = lock(&self.line);
            let first = offset_bytes.saturating_sub(self.base_bytes) / PAGE_BYTES;
            line.pages.release(first as usize, pages_for(len_bytes));
            while let Some(wanted) = line.waiters.front().map(|head| head.len_bytes) {
                let Some(first) = line.pages.allocate(pages_for(wanted)) else { break };
                let Some(waiter) = line.waiters.pop_front() else { break };
                line.longest_wait = line.longest_wait.max(waiter.since.elapsed());
                waiter.mailbox.deliver(waiter.tag, self.mint(first, waiter.len_bytes));
                if !woken.iter().any(|m| Arc::ptr_eq(m, &waiter.mailbox)) {
                    woken.push(waiter.mailbox);
                }
            }
        }
        for mailbox in woken {
            (mailbox.wake)();
        }
    }
}

/// Per-queue handle implementing the core's contract.
pub struct PoolHandle {
    pools: Pools,
    use_peers: bool,
    mailbox: Arc<Mailbox>,
}

impl PoolHandle {
    fn pool(&self, placement: Placement) -> &Arc<RegionPool> {
        match placement {
            Placement::Control => &self.pools.control,
            Placement::Peer(pool) if self.use_peers => self.pools.peers.get(usize::from(pool)).unwrap_or(&self.pools.host),
            Placement::Host | Placement::Peer(_) => &self.pools.host,
        }
    }

    fn memory(&self, region: Region) -> &Memory {
        match region {
            Region::Peer(pool) => self.pools.peers.get(usize::from(pool)).map_or(&self.pools.control.memory, |peer| &peer.memory),
            Region::Host => &self.pools.control.memory,
        }
    }
}

impl BufferPool for PoolHandle {
    fn capacity_bytes(&self, placement: Placement) -> u64 {
        self.pool(placement).capacity_bytes()
    }

    fn allocate(&mut self, len_bytes: u32, placement: Placement, waiter: Tag) -> Option<Lease> {
        self.pool(placement).allocate(len_bytes, &self.mailbox, waiter)
    }

    fn take_grant(&mut self) -> Option<(Tag, Lease)> {
        if self.mailbox.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let grant = lock(&self.mailbox.grants).pop_front();
        if grant.is_some() {
            self.mailbox.pending.fetch_sub(1, Ordering::Release);
        }
        grant
    }

    fn cancel_waits(&mut self) {
        for (_, pool) in self.pools.all() {
            pool.leave(&self.mailbox);
        }
        // Dropped outside the mailbox's lock: giving them back may grant them on.
        let granted = std::mem::take(&mut *lock(&self.mailbox.grants));
        self.mailbox.pending.store(0, Ordering::Release);
        drop(granted);
    }

    fn read(&self, lease: &Lease, out: &mut [u8]) {
        let buffer = lease.buffer();
        let len = out.len().min(buffer.len_bytes as usize);
        let offset = lease.offset_bytes() as usize;
        let Some(out) = out.get_mut(..len) else { return };
        // SAFETY: the caller holds the lease, so no device is writing its bytes (a lease
        // handed to a device is moved away with the work).
        #[allow(unsafe_code)]
        unsafe {
            self.memory(buffer.region).region().read(offset, out);
        }
    }

    fn write(&self, lease: &Lease, data: &[u8]) {
        let buffer = lease.buffer();
        let len = data.len().min(buffer.len_bytes as usize);
        let offset = lease.offset_bytes() as usize;
        let Some(data) = data.get(..len) else { return };
        // SAFETY: the caller holds the lease: no device touches its bytes.
        #[allow(unsafe_code)]
        unsafe {
            self.memory(buffer.region).region().write(offset, data);
        }
    }
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        self.cancel_waits();
    }
}

/// The pools of the whole target, shared by every queue.
#[derive(Clone)]
pub struct Pools {
    /// Control data, in the host mapping.
    pub control: Arc<RegionPool>,
    /// Payload in host memory, in the same mapping after the control pool.
    pub host: Arc<RegionPool>,
    /// Payload in device memory: one pool per p2pmem provider, indexed by
    /// [`crate::core::buffer::PeerPool`].
    pub peers: Vec<Arc<RegionPool>>,
}

impl Pools {
    /// A host mapping of `host_payload_bytes` plus the control pool, and a peer pool
    /// over each of `peers` (at most 256).
    pub fn new(host_payload_bytes: usize, peers: Vec<Arc<Memory>>) -> std::io::Result<Pools> {
        let control_bytes = CONTROL_POOL_BYTES;
        let memory = Arc::new(Memory::Host(DmaRegion::anonymous(control_bytes + host_payload_bytes)?));
        let control = RegionPool::new(Region::Host, memory.clone(), 0, control_bytes as u64);
        let host = RegionPool::new(Region::Host, memory, control_bytes as u64, host_payload_bytes as u64);
        let peers = (0..=u8::MAX)
            .zip(peers)
            .map(|(index, peer)| {
                let len = peer.len_bytes() as u64;
                RegionPool::new(Region::Peer(index), peer, 0, len)
            })
            .collect();
        Ok(Pools { control, host, peers })
    }

    pub fn host_only(host_payload_bytes: usize) -> std::io::Result<Pools> {
        Pools::new(host_payload_bytes, Vec::new())
    }

    /// The host mapping that holds the control and host payload pools.
    pub fn host_memory(&self) -> &Arc<Memory> {
        &self.control.memory
    }

    /// A queue's view of the pools; `wake` is called (from any thread) when a lease is
    /// granted to one of its waiting requests. With `use_peers` false (the queue's path
    /// cannot use device memory, e.g. rxe below a 4096-byte path MTU), payload goes to
    /// host memory.
    pub fn handle(&self, use_peers: bool, wake: Box<dyn Fn() + Send + Sync>) -> PoolHandle {
        let mailbox = Arc::new(Mailbox { grants: Mutex::new(VecDeque::new()), pending: AtomicUsize::new(0), wake });
        PoolHandle { pools: self.clone(), use_peers: use_peers && !self.peers.is_empty(), mailbox }
    }

    /// Every pool with its name, for stats: `control_pool`, `host_pool`, and
    /// `cmb_pool BDF` for each peer pool.
    pub fn all(&self) -> impl Iterator<Item = (String, &Arc<RegionPool>)> {
        let peers = self.peers.iter().map(|pool| (format!("cmb_pool {}", pool.provider().map_or("?", |p| p.bdf.as_str())), pool));
        [("control_pool".to_string(), &self.control), ("host_pool".to_string(), &self.host)].into_iter().chain(peers)
    }
}
