//! Host DRAM for data buffers: one anonymous mapping, page aligned, allocated once at
//! start-up. The NIC and the SSD write it by DMA, so the CPU reaches it only through
//! range-checked copies from raw pointers, never through a reference to the mapping.
#![allow(unsafe_code)]

use std::io;

use memmap2::{MmapMut, MmapRaw};

/// An anonymous, page-aligned region of host memory.
pub struct HostRegion {
    map: MmapRaw,
}

impl HostRegion {
    pub fn new(len_bytes: usize) -> io::Result<HostRegion> {
        Ok(HostRegion { map: MmapRaw::from(MmapMut::map_anon(len_bytes.max(1))?) })
    }

    pub fn address(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    pub fn len_bytes(&self) -> usize {
        self.map.len()
    }

    /// Copies out of the region.
    ///
    /// # Safety
    /// No device may be writing `offset .. offset + out.len()` during the call.
    pub unsafe fn read(&self, offset: usize, out: &mut [u8]) {
        assert!(offset.checked_add(out.len()).is_some_and(|end| end <= self.map.len()), "read outside the host region");
        // SAFETY: offset + len is inside the live mapping (asserted above); the caller
        // guarantees no device writes these bytes; `out` is ordinary memory.
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().wrapping_add(offset), out.as_mut_ptr(), out.len()) };
    }

    /// Copies into the region.
    ///
    /// # Safety
    /// No device may be accessing `offset .. offset + data.len()` during the call.
    pub unsafe fn write(&self, offset: usize, data: &[u8]) {
        assert!(offset.checked_add(data.len()).is_some_and(|end| end <= self.map.len()), "write outside the host region");
        // SAFETY: offset + len is inside the live mapping (asserted above); the caller
        // guarantees no device touches these bytes; `data` is ordinary memory.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().wrapping_add(offset), data.len()) };
    }
}
