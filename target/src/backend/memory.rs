//! A RAM namespace for tests and benches: the data lives in a `Vec` behind a lock, and
//! operations complete at once.
#![allow(unsafe_code)]

use std::sync::Mutex;

use super::{BackendError, BackendOp};

#[derive(Debug)]
pub struct MemoryBackend {
    data: Mutex<Vec<u8>>,
    pub block_size_shift: u8,
}

impl MemoryBackend {
    pub fn new(size_bytes: usize, block_size_shift: u8) -> MemoryBackend {
        MemoryBackend { data: Mutex::new(vec![0; size_bytes]), block_size_shift }
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock().len() as u64
    }

    /// A copy of `len` bytes at `offset` (tests read back what hosts wrote).
    pub fn snapshot(&self, offset: usize, len: usize) -> Vec<u8> {
        self.lock()[offset..offset + len].to_vec()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock cannot leave the bytes inconsistent in a way
        // that matters more than losing the namespace; keep serving.
        self.data.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `op` to completion. RAM namespaces are only paired with host pools, so a
    /// read's or write's buffer is host memory the CPU may touch.
    pub fn execute(&self, op: &BackendOp) -> Result<u32, BackendError> {
        let mut data = self.lock();
        let size = data.len();
        let range = |offset: u64, len: u64| -> Result<std::ops::Range<usize>, BackendError> {
            let start = usize::try_from(offset).ok();
            let end = start.and_then(|s| s.checked_add(usize::try_from(len).ok()?));
            match (start, end) {
                (Some(s), Some(e)) if e <= size => Ok(s..e),
                _ => Err(BackendError::Io { op: op.kind(), source: std::io::Error::from_raw_os_error(libc::EINVAL) }),
            }
        };
        match op {
            BackendOp::Read { offset_bytes, buffer } => {
                let buffer = buffer.buffer();
                let r = range(*offset_bytes, buffer.len_bytes.into())?;
                // SAFETY: the op owns its buffer (a lease or a slot loan): mapped memory of
                // len_bytes that nobody else touches while we hold it; `r` has exactly
                // that length.
                unsafe { std::ptr::copy_nonoverlapping(data[r].as_ptr(), buffer.address as *mut u8, buffer.len_bytes as usize) };
                Ok(buffer.len_bytes)
            }
            BackendOp::Write { offset_bytes, buffer, .. } => {
                let buffer = buffer.buffer();
                let r = range(*offset_bytes, buffer.len_bytes.into())?;
                // SAFETY: as for Read; the source is the op's own buffer.
                unsafe { std::ptr::copy_nonoverlapping(buffer.address as *const u8, data[r].as_mut_ptr(), buffer.len_bytes as usize) };
                Ok(buffer.len_bytes)
            }
            BackendOp::Flush => Ok(0),
            BackendOp::WriteZeroes { offset_bytes, len_bytes, .. } => {
                let r = range(*offset_bytes, *len_bytes)?;
                data[r].fill(0);
                Ok(0)
            }
            BackendOp::Deallocate { ranges } => {
                for &(offset, len) in ranges {
                    let r = range(offset, len)?;
                    data[r].fill(0);
                }
                Ok(0)
            }
        }
    }
}
