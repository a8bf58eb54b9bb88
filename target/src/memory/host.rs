//! Host DRAM for data buffers and receive buffers: one anonymous mapping, page aligned,
//! allocated once at start-up.
#![allow(unsafe_code)]

use std::io;

use memmap2::MmapMut;

/// An anonymous, page-aligned region of host memory.
pub struct HostRegion {
    map: MmapMut,
}

impl HostRegion {
    pub fn new(len_bytes: usize) -> io::Result<HostRegion> {
        Ok(HostRegion { map: MmapMut::map_anon(len_bytes.max(1))? })
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
        let source = &self.map[offset..offset + out.len()];
        out.copy_from_slice(source);
    }

    /// Copies into the region.
    ///
    /// # Safety
    /// No device may be accessing `offset .. offset + data.len()` during the call.
    pub unsafe fn write(&self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= self.map.len(), "write outside the host region");
        // SAFETY: offset + len is inside the mapping (asserted above).
        let target = unsafe { self.map.as_ptr().add(offset) }.cast_mut();
        // SAFETY: the mapping lives as long as self and the caller guarantees no device
        // touches these bytes; the region is shared behind &self, so the copy goes through
        // a raw pointer rather than a &mut slice.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), target, data.len()) };
    }
}
