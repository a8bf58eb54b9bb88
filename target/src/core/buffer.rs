//! The contract between the core and the data buffer pools (`crate::memory`), and the
//! ownership rule every device access relies on.
//!
//! A data buffer is owned by exactly one party at a time, and that is expressed by who
//! holds a value, not by bookkeeping:
//!
//! - A [`Lease`] is a range of pool memory. Only a pool mints one; it cannot be copied,
//!   and dropping it is the only way its pages go back to the pool.
//! - A [`SlotLoan`] is a transport's receive slot lent to an in-capsule write. It is never
//!   pool memory: it has no way into a pool. Dropping it tells the slot's home (its
//!   [`SlotHome`]), which may post the slot for a receive again from then on.
//!
//! Whoever holds the value is the one party allowed to let a device (the NIC, the SSD)
//! or the CPU touch the bytes: the core while it computes, the transport while an RDMA
//! transfer is posted, the backend while an operation is out. A holder that cannot be
//! sure the hardware is done (a ring torn down with operations out) leaks the value
//! rather than drop it.
// The constructors are `unsafe fn`s: minting ownership is the pools' and transports' job.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::sync::Arc;

pub use super::Tag;

/// Bytes a device writes (a receive slot, pool pages), seen by the CPU only through
/// copies: no Rust reference to them ever exists, so nothing assumes they hold still
/// (vm-memory's `VolatileSlice` is the model). Valid for `'a`.
#[derive(Clone, Copy, Debug)]
pub struct DmaSlice<'a> {
    address: *const u8,
    len: usize,
    _memory: PhantomData<&'a [u8]>,
}

impl<'a> DmaSlice<'a> {
    /// # Safety
    /// `address .. address + len` is mapped for `'a`, and no device writes it while the
    /// slice is read (a completed receive, a buffer whose holder is the CPU).
    pub unsafe fn new(address: *const u8, len: usize) -> DmaSlice<'a> {
        DmaSlice { address, len, _memory: PhantomData }
    }

    /// Ordinary memory seen the same way (tests, the loopback transport).
    pub fn from_bytes(bytes: &'a [u8]) -> DmaSlice<'a> {
        DmaSlice { address: bytes.as_ptr(), len: bytes.len(), _memory: PhantomData }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `len` bytes from `start`, if they lie inside.
    pub fn get(&self, start: usize, len: usize) -> Option<DmaSlice<'a>> {
        let end = start.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: `start .. end` is inside this slice (checked above), so it is mapped
        // for `'a` under the same promise as this slice.
        Some(unsafe { DmaSlice::new(self.address.wrapping_add(start), len) })
    }

    /// Copies the first `out.len()` bytes (at most `len`) into `out`; returns how many.
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let len = out.len().min(self.len);
        // SAFETY: `len` bytes from `address` are mapped and not written by a device
        // (the constructor's promise); `out` is ordinary memory that cannot overlap them.
        unsafe { std::ptr::copy_nonoverlapping(self.address, out.as_mut_ptr(), len) };
        len
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        self.copy_to(&mut out);
        out
    }
}

/// Which of the target's peer memory pools (one per p2pmem provider it maps, in the
/// order the pools were made).
pub type PeerPool = u8;

/// Where a buffer's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    /// Ordinary host DRAM.
    Host,
    /// A PCI device's memory (an NVMe SSD's Controller Memory Buffer), mapped through
    /// p2pmem: peer pool `n`.
    Peer(PeerPool),
}

/// What a buffer will carry, and so which pool it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Command data the CPU must read or write (Connect data, admin pages, DSM ranges):
    /// the small reserved control pool in host memory.
    Control,
    /// Read/Write payload in host memory (the payload pool).
    Host,
    /// Read/Write payload that only the NIC and the SSD touch, in peer pool `n`; host
    /// memory when the queue's path cannot use device memory.
    Peer(PeerPool),
}

/// Where a buffer's bytes are, for work requests and backend I/O. It owns nothing: the
/// [`Lease`] or [`SlotLoan`] it was read from does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub region: Region,
    /// Virtual address of the first byte.
    pub address: u64,
    pub len_bytes: u32,
}

/// Where a lease's pages go back to.
pub trait LeaseHome: Send + Sync {
    /// The range `offset_bytes .. + len_bytes` that a lease held is free again.
    fn give_back(&self, offset_bytes: u64, len_bytes: u32);
}

/// Exclusive ownership of a range of pool memory; dropping it returns the range.
pub struct Lease {
    buffer: Buffer,
    offset_bytes: u64,
    home: Arc<dyn LeaseHome>,
}

impl Lease {
    /// # Safety
    /// Only a pool calls this, for a range of its memory that no other lease covers and
    /// that stays mapped while `home` lives; `home` frees exactly that range.
    pub unsafe fn new(buffer: Buffer, offset_bytes: u64, home: Arc<dyn LeaseHome>) -> Lease {
        Lease { buffer, offset_bytes, home }
    }

    pub fn buffer(&self) -> Buffer {
        self.buffer
    }

    /// Offset inside the pool's memory, for the pool's own bookkeeping and copies.
    pub fn offset_bytes(&self) -> u64 {
        self.offset_bytes
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.home.give_back(self.offset_bytes, self.buffer.len_bytes);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("buffer", &self.buffer).field("offset_bytes", &self.offset_bytes).finish()
    }
}

/// Where a receive slot goes when its loan ends: the transport's receive buffers. Also
/// keeps the slots' memory mapped for as long as any loan exists.
pub trait SlotHome: Send + Sync {
    /// The loan of `slot` has ended: no one touches its bytes any more. The default
    /// does nothing, for a transport that takes its slots back by hand.
    fn returned(&self, _slot: u32) {}
}

impl SlotHome for () {}

/// A transport's receive slot, lent to the request whose in-capsule write data it holds.
/// The memory stays alive as long as the loan does (`home`), so a loan leaked by a
/// holder that could not wait for the hardware never points at unmapped memory; a loan
/// dropped goes back to its home.
pub struct SlotLoan {
    buffer: Buffer,
    slot: u32,
    home: Arc<dyn SlotHome>,
}

impl SlotLoan {
    /// # Safety
    /// Only the transport that owns receive slot `slot` calls this, once per received
    /// capsule, for the slot's data bytes; it posts the slot again only after the loan
    /// has come back (by hand, or through `home` when dropped). `home` keeps the slot's
    /// memory mapped.
    pub unsafe fn new(buffer: Buffer, slot: u32, home: Arc<dyn SlotHome>) -> SlotLoan {
        SlotLoan { buffer, slot, home }
    }

    pub fn buffer(&self) -> Buffer {
        self.buffer
    }

    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The loan narrowed to `len_bytes` at `offset_bytes` inside it (the data an SGL
    /// names); the loan unchanged as the error if that reaches past the slot's data.
    pub fn narrow(mut self, offset_bytes: u32, len_bytes: u32) -> Result<SlotLoan, SlotLoan> {
        match offset_bytes.checked_add(len_bytes) {
            Some(end) if end <= self.buffer.len_bytes => {
                self.buffer.address = self.buffer.address.wrapping_add(u64::from(offset_bytes));
                self.buffer.len_bytes = len_bytes;
                Ok(self)
            }
            _ => Err(self),
        }
    }
}

impl Drop for SlotLoan {
    fn drop(&mut self) {
        self.home.returned(self.slot);
    }
}

impl std::fmt::Debug for SlotLoan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotLoan").field("buffer", &self.buffer).field("slot", &self.slot).finish()
    }
}

/// A request's data buffer: pool memory, or the receive slot its data arrived in.
#[derive(Debug)]
pub enum DataBuffer {
    Pool(Lease),
    Slot(SlotLoan),
}

impl DataBuffer {
    pub fn buffer(&self) -> Buffer {
        match self {
            DataBuffer::Pool(lease) => lease.buffer(),
            DataBuffer::Slot(loan) => loan.buffer(),
        }
    }
}

/// A pool of data buffers shared by every queue, as one queue sees it. Requests that
/// find the pool short wait in one line across all queues, in arrival order: a buffer
/// that comes free goes to the oldest waiter that fits, whichever queue it is on, and
/// the pool wakes that queue (see [`BufferPool::take_grant`]).
pub trait BufferPool: Send {
    /// The largest buffer `placement` can ever get (a longer request would wait forever).
    fn capacity_bytes(&self, placement: Placement) -> u64;
    /// A buffer of at least `len_bytes` now, or `None`: then request `waiter` of this
    /// queue is in line, and its lease comes later through `take_grant`. A request never
    /// fails for lack of buffers. While anyone waits, new requests line up behind them.
    fn allocate(&mut self, len_bytes: u32, placement: Placement, waiter: Tag) -> Option<Lease>;
    /// A lease granted to one of this queue's waiters since the last call.
    fn take_grant(&mut self) -> Option<(Tag, Lease)>;
    /// This queue leaves every line; leases granted and not yet taken go back.
    fn cancel_waits(&mut self);
    /// Copies `out.len()` bytes from the start of the lease.
    fn read(&self, lease: &Lease, out: &mut [u8]);
    /// Copies `data` to the start of the lease.
    fn write(&self, lease: &Lease, data: &[u8]);
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A home that records the slots given back to it.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<u32>>);

    impl SlotHome for Recorded {
        fn returned(&self, slot: u32) {
            self.0.lock().unwrap().push(slot);
        }
    }

    fn loan(home: &Arc<Recorded>, slot: u32) -> SlotLoan {
        let buffer = Buffer { region: Region::Host, address: 0x1000, len_bytes: 4096 };
        let home: Arc<dyn SlotHome> = home.clone();
        // SAFETY: the test owns slot numbers only; no memory is touched.
        unsafe { SlotLoan::new(buffer, slot, home) }
    }

    #[test]
    fn a_dropped_loan_goes_home_once() {
        let home = Arc::new(Recorded::default());
        let first = loan(&home, 3);
        let second = loan(&home, 7);
        assert!(home.0.lock().unwrap().is_empty(), "a live loan is not home");
        drop(second);
        // Narrowing keeps one loan, which goes home once.
        let narrowed = first.narrow(512, 1024).expect("inside the slot");
        assert_eq!(*home.0.lock().unwrap(), [7]);
        let refused = narrowed.narrow(0, 4096).expect_err("past the narrowed data");
        drop(refused);
        assert_eq!(*home.0.lock().unwrap(), [7, 3]);
    }

    #[test]
    fn a_loan_in_a_data_buffer_goes_home_with_it() {
        let home = Arc::new(Recorded::default());
        let data = DataBuffer::Slot(loan(&home, 1));
        assert_eq!(data.buffer().len_bytes, 4096);
        drop(data);
        assert_eq!(*home.0.lock().unwrap(), [1]);
    }
}
