//! Namespace storage. A namespace is backed by a regular file or a block device (driven
//! through io_uring, O_DIRECT where the file system allows it) or by RAM (tests,
//! benches). Operations are queued on a per-queue [`Executor`] and complete
//! asynchronously; the core only builds [`BackendOp`]s and maps [`BackendError`]s to
//! statuses.

pub mod file;
pub mod memory;
pub mod uring;

use std::io;
use std::path::Path;

use crate::core::buffer::DataBuffer;
use crate::wire::Status;

pub use file::FileBackend;
pub use memory::MemoryBackend;
pub use uring::Executor;

/// The storage behind one namespace.
#[derive(Debug)]
pub enum Backend {
    File(FileBackend),
    Memory(MemoryBackend),
}

impl Backend {
    /// Opens a file or block device; see [`FileBackend::open`].
    pub fn open(path: &Path, block_size_bytes: Option<u32>) -> Result<Backend, BackendError> {
        FileBackend::open(path, block_size_bytes).map(Backend::File)
    }

    pub fn size_bytes(&self) -> u64 {
        match self {
            Backend::File(file) => file.size_bytes,
            Backend::Memory(memory) => memory.size_bytes(),
        }
    }

    /// log2 of the logical block size: 9 or 12.
    pub fn block_size_shift(&self) -> u8 {
        match self {
            Backend::File(file) => file.block_size_shift,
            Backend::Memory(memory) => memory.block_size_shift,
        }
    }

    /// Whether acknowledged writes may sit in a volatile cache until a Flush.
    /// Whether deallocated blocks read as zeroes (DLFEAT 001b): blocks a file punches
    /// out do; a block device's discard promises nothing about what reads back.
    pub fn deallocated_reads_zeroes(&self) -> bool {
        match self {
            Backend::File(file) => !file.block_device,
            Backend::Memory(_) => true,
        }
    }

    pub fn volatile_write_cache(&self) -> bool {
        match self {
            Backend::File(file) => file.volatile_write_cache,
            Backend::Memory(_) => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Backend::File(file) => file.describe(),
            Backend::Memory(memory) => format!("RAM namespace of {} bytes", memory.size_bytes()),
        }
    }

    /// The sysfs directory of the PCI device that holds this namespace's data, when the
    /// data lives on a PCI device (an NVMe namespace). Files and RAM have none, so their
    /// payload cannot move through another device's CMB.
    pub fn pci_device(&self) -> Option<&Path> {
        match self {
            Backend::File(file) => file.pci_device.as_deref(),
            Backend::Memory(_) => None,
        }
    }
}

/// One operation on a namespace. Offsets and lengths are in bytes and already checked
/// against the namespace size by the core. A read or write owns its buffer: whoever
/// runs the operation holds it until the device is done, then gives it back.
#[derive(Debug)]
pub enum BackendOp {
    /// Storage to buffer (controller to host data).
    Read { offset_bytes: u64, buffer: DataBuffer },
    /// Buffer to storage. With `durable` set the data is on stable media when done.
    Write { offset_bytes: u64, buffer: DataBuffer, durable: bool },
    Flush,
    /// Zeroes a range. With `deallocate` the blocks may be unmapped instead of written
    /// (they read as zeroes either way); with `durable` the zeroes are on stable media
    /// when done.
    WriteZeroes { offset_bytes: u64, len_bytes: u64, deallocate: bool, durable: bool },
    /// Dataset Management deallocate: advisory, ranges already validated.
    Deallocate { ranges: Vec<(u64, u64)> },
}

impl BackendOp {
    /// The buffer the operation owns, given back when it is done.
    pub fn into_buffer(self) -> Option<DataBuffer> {
        match self {
            BackendOp::Read { buffer, .. } | BackendOp::Write { buffer, .. } => Some(buffer),
            _ => None,
        }
    }

    /// The bytes of the namespace the operation reads or writes (for Deallocate, the
    /// span of its ranges); `None` for Flush.
    pub fn byte_range(&self) -> Option<(u64, u64)> {
        match self {
            BackendOp::Read { offset_bytes, buffer } | BackendOp::Write { offset_bytes, buffer, .. } => {
                Some((*offset_bytes, u64::from(buffer.buffer().len_bytes)))
            }
            BackendOp::WriteZeroes { offset_bytes, len_bytes, .. } => Some((*offset_bytes, *len_bytes)),
            BackendOp::Deallocate { ranges } => {
                let start = ranges.iter().map(|&(offset, _)| offset).min()?;
                let end = ranges.iter().map(|&(offset, len)| offset.saturating_add(len)).max()?;
                Some((start, end.saturating_sub(start)))
            }
            BackendOp::Flush => None,
        }
    }

    pub fn kind(&self) -> OpKind {
        match self {
            BackendOp::Read { .. } => OpKind::Read,
            BackendOp::Write { .. } => OpKind::Write,
            BackendOp::Flush => OpKind::Flush,
            BackendOp::WriteZeroes { .. } => OpKind::WriteZeroes,
            BackendOp::Deallocate { .. } => OpKind::Deallocate,
        }
    }
}

/// What kind of operation failed: it chooses the NVMe status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    Flush,
    WriteZeroes,
    Deallocate,
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Flush => "flush",
            OpKind::WriteZeroes => "write zeroes",
            OpKind::Deallocate => "deallocate",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("opening namespace backing {path}")]
    Open { path: String, #[source] source: io::Error },
    #[error("{path}: {what}")]
    Unusable { path: String, what: String },
    #[error("{op} failed")]
    Io { op: OpKind, #[source] source: io::Error },
    #[error("{op} moved {done} of {expected} bytes")]
    Short { op: OpKind, done: u32, expected: u32 },
    #[error("setting up io_uring")]
    Uring(#[source] io::Error),
}

/// The one place where a storage failure becomes an NVMe status.
impl From<&BackendError> for Status {
    fn from(error: &BackendError) -> Status {
        match error {
            BackendError::Io { op, source } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => Status::CAPACITY_EXCEEDED.dnr(),
                Some(libc::EROFS) | Some(libc::EPERM) | Some(libc::EACCES) => Status::ACCESS_DENIED.dnr(),
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => Status::INVALID_FIELD.dnr(),
                _ if *op == OpKind::Read => Status::UNRECOVERED_READ_ERROR,
                _ if matches!(op, OpKind::Write | OpKind::WriteZeroes) => Status::WRITE_FAULT,
                _ => Status::INTERNAL_ERROR,
            },
            BackendError::Short { op: OpKind::Read, .. } => Status::UNRECOVERED_READ_ERROR,
            BackendError::Short { .. } => Status::WRITE_FAULT,
            _ => Status::INTERNAL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(op: OpKind, errno: i32) -> BackendError {
        BackendError::Io { op, source: io::Error::from_raw_os_error(errno) }
    }

    #[test]
    fn errno_maps_to_status() {
        assert_eq!(Status::from(&io(OpKind::Write, libc::ENOSPC)), Status::CAPACITY_EXCEEDED.dnr());
        assert_eq!(Status::from(&io(OpKind::Write, libc::EIO)), Status::WRITE_FAULT);
        assert_eq!(Status::from(&io(OpKind::Read, libc::EIO)), Status::UNRECOVERED_READ_ERROR);
        assert_eq!(Status::from(&io(OpKind::Flush, libc::EIO)), Status::INTERNAL_ERROR);
        assert_eq!(Status::from(&io(OpKind::Read, libc::EROFS)), Status::ACCESS_DENIED.dnr());
        let short = BackendError::Short { op: OpKind::Read, done: 1, expected: 2 };
        assert_eq!(Status::from(&short), Status::UNRECOVERED_READ_ERROR);
    }
}
