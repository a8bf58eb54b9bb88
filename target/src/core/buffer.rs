//! The contract between the core and the data buffer pools (`crate::memory`). The core
//! asks for buffers and copies control data (Connect data, Identify pages, DSM ranges)
//! through the pool; it never forms pointers into the memory itself.

/// Where a buffer's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    /// Ordinary host DRAM.
    Host,
    /// The Controller Memory Buffer of an NVMe SSD, mapped through p2pmem.
    Cmb,
}

/// What a buffer will carry; the pool decides the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Command data the CPU must read or write (admin data, DSM ranges): host memory.
    Control,
    /// Read/Write payload that only the NIC and the SSD touch: CMB when the pool has one.
    Payload,
}

/// A handle to pool memory. Transports and backends reach the bytes through `address`
/// and `local_key`; the core treats the handle as opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub region: Region,
    /// Offset inside the pool's region, for the pool's own bookkeeping.
    pub offset_bytes: u64,
    pub len_bytes: u32,
    /// Virtual address of the first byte, for work requests and backend I/O.
    pub address: u64,
    /// Local key of the memory region that covers the buffer (0 without RDMA).
    pub local_key: u32,
}

/// A pool of data buffers, sized once at start-up.
pub trait BufferPool: Send {
    /// A buffer of at least `len_bytes`, or `None` while the pool is exhausted (the
    /// request waits; it never fails for lack of buffers).
    fn allocate(&mut self, len_bytes: u32, placement: Placement) -> Option<Buffer>;
    /// Gives a buffer back. Called only once nothing (NIC, SSD) uses it any more.
    fn release(&mut self, buffer: Buffer);
    /// Copies `out.len()` bytes from the start of the buffer.
    fn read(&self, buffer: &Buffer, out: &mut [u8]);
    /// Copies `data` to the start of the buffer.
    fn write(&mut self, buffer: &Buffer, data: &[u8]);
}
