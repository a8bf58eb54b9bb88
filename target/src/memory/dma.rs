//! Memory that devices read and write by DMA: the host payload and control pools, the
//! CMB (p2pmem), the receive buffers. One type fences it all: the CPU reaches the bytes
//! only through range-checked copies from raw pointers (volatile ones for device
//! memory), and a Rust reference to them never exists (vm-memory's first rule).
#![allow(unsafe_code)]

use std::io;

use memmap2::{MmapMut, MmapRaw};

use crate::core::DmaSlice;

pub struct DmaRegion {
    map: MmapRaw,
    /// Device memory (a PCI BAR): accessed with volatile byte copies, which the
    /// compiler keeps as written.
    device: bool,
}

impl DmaRegion {
    /// Anonymous, page-aligned host DRAM of `len_bytes`, allocated once.
    pub fn anonymous(len_bytes: usize) -> io::Result<DmaRegion> {
        Ok(DmaRegion { map: MmapRaw::from(MmapMut::map_anon(len_bytes.max(1))?), device: false })
    }

    /// A mapping of device memory.
    pub fn device(map: MmapRaw) -> DmaRegion {
        DmaRegion { map, device: true }
    }

    pub fn address(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    pub fn len_bytes(&self) -> usize {
        self.map.len()
    }

    fn check(&self, offset: usize, len: usize) {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.map.len()), "access outside the DMA region");
    }

    /// Copies `out.len()` bytes at `offset` out of the region.
    ///
    /// # Safety
    /// No device writes `offset .. offset + out.len()` during the call.
    pub unsafe fn read(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len());
        let source = self.map.as_ptr().wrapping_add(offset);
        if self.device {
            for (index, byte) in out.iter_mut().enumerate() {
                // SAFETY: inside the live mapping (checked above); the caller keeps devices off.
                *byte = unsafe { source.wrapping_add(index).read_volatile() };
            }
        } else {
            // SAFETY: inside the live mapping (checked above); the caller keeps devices
            // off these bytes; `out` is ordinary memory, so the two cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(source, out.as_mut_ptr(), out.len()) };
        }
    }

    /// Copies `data` into the region at `offset`.
    ///
    /// # Safety
    /// No device accesses `offset .. offset + data.len()` during the call.
    pub unsafe fn write(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len());
        let target = self.map.as_mut_ptr().wrapping_add(offset);
        if self.device {
            for (index, byte) in data.iter().enumerate() {
                // SAFETY: inside the live mapping (checked above); the caller keeps devices off.
                unsafe { target.wrapping_add(index).write_volatile(*byte) };
            }
        } else {
            // SAFETY: inside the live mapping (checked above); the caller keeps devices
            // off these bytes; `data` is ordinary memory, so the two cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), target, data.len()) };
        }
    }

    /// A view of `len` bytes at `offset` for the core, which copies out of it; `None`
    /// outside the region.
    ///
    /// # Safety
    /// No device writes those bytes for as long as the view is used (a receive that
    /// completed, its slot not posted again meanwhile).
    pub unsafe fn slice(&self, offset: usize, len: usize) -> Option<DmaSlice<'_>> {
        // SAFETY: the whole mapping lives as long as `self`; the caller keeps devices off
        // the bytes the view covers, and `get` keeps the view inside the mapping.
        let all = unsafe { DmaSlice::new(self.map.as_ptr(), self.map.len()) };
        all.get(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_stay_inside_and_round_trip() {
        let region = DmaRegion::anonymous(8192).unwrap();
        // SAFETY: no device has this test memory.
        unsafe { region.write(4000, b"across a page") };
        let mut out = [0u8; 13];
        // SAFETY: as above.
        unsafe { region.read(4000, &mut out) };
        assert_eq!(&out, b"across a page");
        // SAFETY: as above.
        let view = unsafe { region.slice(4000, 13) }.unwrap();
        assert_eq!(view.to_vec(), b"across a page");
        // SAFETY: as above.
        assert!(unsafe { region.slice(8190, 4) }.is_none(), "outside the region");
    }

    #[test]
    #[should_panic(expected = "outside the DMA region")]
    fn a_copy_past_the_end_stops() {
        let region = DmaRegion::anonymous(4096).unwrap();
        let mut out = [0u8; 2];
        // SAFETY: no device has this test memory; the call must refuse the range.
        unsafe { region.read(4095, &mut out) };
    }
}
