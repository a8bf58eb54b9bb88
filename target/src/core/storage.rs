//! What the core needs from the storage behind a namespace: a few facts about it
//! ([`Storage`]) and the operations it asks for ([`BackendOp`]). The backends implement
//! them; the transport hands the operations to its backend executor.

use std::any::Any;
use std::fmt::Debug;

use super::buffer::DataBuffer;

/// The storage behind a namespace, as the core sees it.
pub trait Storage: Debug + Send + Sync + 'static {
    fn size_bytes(&self) -> u64;
    /// log2 of the logical block size: 9 or 12.
    fn block_size_shift(&self) -> u8;
    /// Whether acknowledged writes may sit in a volatile cache until a Flush.
    fn volatile_write_cache(&self) -> bool;
    /// Whether deallocated blocks read as zeroes (DLFEAT 001b).
    fn deallocated_reads_zeroes(&self) -> bool;
    /// One line for logs and `p2ptgt stats`.
    fn describe(&self) -> String;
    /// For the transport, which runs operations on the concrete backend.
    fn as_any(&self) -> &dyn Any;
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

