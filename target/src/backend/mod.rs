//! Namespace storage: what the core's [`Storage`] asks for. A namespace is backed by a
//! regular file or a block device (driven through io_uring, O_DIRECT where the file
//! system allows it) or by RAM (tests, benches). The core's [`BackendOp`]s are queued
//! on a per-queue [`Executor`] and complete asynchronously; a failure comes back as a
//! [`BackendError`], which names its NVMe status.

pub mod file;
pub mod memory;
pub mod reservation_file;
pub mod uring;

use std::io;
use std::path::Path;

pub use crate::core::storage::{BackendOp, OpKind, Storage};
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

impl Storage for Backend {
    fn size_bytes(&self) -> u64 {
        match self {
            Backend::File(file) => file.size_bytes(),
            Backend::Memory(memory) => memory.size_bytes(),
        }
    }

    fn block_size_shift(&self) -> u8 {
        match self {
            Backend::File(file) => file.block_size_shift,
            Backend::Memory(memory) => memory.block_size_shift,
        }
    }

    fn volatile_write_cache(&self) -> bool {
        match self {
            Backend::File(file) => file.volatile_write_cache,
            Backend::Memory(_) => false,
        }
    }

    /// Blocks a file punches out read as zeroes; a block device's discard promises
    /// nothing about what reads back.
    fn deallocated_reads_zeroes(&self) -> bool {
        match self {
            Backend::File(file) => !file.block_device,
            Backend::Memory(_) => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Backend::File(file) => file.describe(),
            Backend::Memory(memory) => format!("RAM namespace of {} bytes", memory.size_bytes()),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Backend {
    /// Opens a file or block device; see [`FileBackend::open`].
    pub fn open(path: &Path, block_size_bytes: Option<u32>) -> Result<Backend, BackendError> {
        FileBackend::open(path, block_size_bytes).map(Backend::File)
    }

    /// Reads the size again; a RAM namespace keeps its size.
    pub fn refresh_size(&self) -> Result<u64, BackendError> {
        match self {
            Backend::File(file) => file.refresh_size(),
            Backend::Memory(memory) => Ok(memory.size_bytes()),
        }
    }

    /// The backend behind a namespace's storage (every namespace's is a `Backend`).
    pub fn of(storage: &dyn Storage) -> Option<&Backend> {
        storage.as_any().downcast_ref::<Backend>()
    }

    /// Runs a Read or Write to completion on the calling thread, outside any queue.
    pub fn execute_blocking(&self, op: &BackendOp) -> Result<u32, BackendError> {
        match self {
            Backend::File(file) => file.execute_blocking(op),
            Backend::Memory(memory) => memory.execute(op),
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
