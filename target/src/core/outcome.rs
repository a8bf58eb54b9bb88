//! What executing a command decides: the work a request does next, in the terms the
//! command handlers and the queue share.

use std::collections::VecDeque;
use std::sync::Arc;

use super::controller::Controller;
use super::storage::BackendOp;
use super::subsystem::Namespace;
use super::Tag;
use crate::wire::Status;

/// Data coming from the host, and what happens once it is here.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Connect data, then the queue associates with a controller.
    Connect,
    /// An authentication message from the host, then the transaction goes on.
    AuthenticationSend,
    /// Dataset Management ranges, then they are deallocated.
    Deallocate { namespace: Arc<Namespace>, ranges: u32 },
    /// Payload, then written to the namespace.
    Write { namespace: Arc<Namespace>, offset_bytes: u64, durable: bool },
    /// Data to compare with the namespace's blocks.
    Compare { namespace: Arc<Namespace>, offset_bytes: u64 },
    /// Copy's source range entries, then the copy.
    Copy { namespace: Arc<Namespace>, ranges: u32, destination_lba: u64, durable: bool },
    /// The compare data of a fused Compare and Write (on the first command's tag).
    FusedCompare { pair: FusedHalf, second: Tag },
    /// A reservation command's keys, then the change.
    Reservation { namespace: Arc<Namespace> },
    /// The write data of a fused Compare and Write (on the second command's tag).
    FusedWrite { pair: FusedHalf, first: Tag, expected: Vec<u8> },
}

/// One command of a fused Compare and Write, checked: both name the same blocks.
#[derive(Debug)]
pub(crate) struct FusedHalf {
    pub namespace: Arc<Namespace>,
    pub offset_bytes: u64,
    pub len_bytes: u64,
    /// The write is FUA or the write cache is off.
    pub durable: bool,
}

impl FusedHalf {
    pub(crate) fn pairs_with(&self, other: &FusedHalf) -> bool {
        self.namespace.id == other.namespace.id && self.offset_bytes == other.offset_bytes && self.len_bytes == other.len_bytes
    }
}

/// Work on the namespace's blocks that needs a buffer of its own, not one the host's
/// data pointer describes.
#[derive(Debug)]
pub(crate) enum MediaJob {
    /// Read the blocks; the data goes nowhere (Verify).
    Verify { offset_bytes: u64 },
    /// Read the blocks and compare them with `expected`; for a fused Compare and Write,
    /// then write `write` in their place, all under the range's lock.
    Compare { offset_bytes: u64, expected: Vec<u8>, write: Option<FusedWrite> },
    /// Read one source range of a Copy, then write it to the destination.
    Copy { source_bytes: u64, progress: CopyProgress },
}

/// The write half of a fused Compare and Write, carried by the first command.
#[derive(Debug)]
pub(crate) struct FusedWrite {
    pub second: Tag,
    pub data: Vec<u8>,
    pub durable: bool,
}

/// Where a Copy stands: the destination of the range in hand and the ranges after it.
#[derive(Debug)]
pub(crate) struct CopyProgress {
    pub remaining: VecDeque<(u64, u64)>,
    pub destination_bytes: u64,
    pub durable: bool,
}

/// What a request does once it has a buffer.
#[derive(Debug)]
pub(crate) enum Work {
    Inbound(Inbound),
    /// Payload read from the namespace, then pushed to the host.
    Read { namespace: Arc<Namespace>, offset_bytes: u64 },
    /// Bytes computed by the controller, pushed to the host.
    Send { data: Vec<u8> },
    /// A buffer of `len_bytes` for work on the namespace's blocks.
    Media { namespace: Arc<Namespace>, len_bytes: u32, job: MediaJob },
}

/// What executing a command decided.
#[derive(Debug)]
pub(crate) enum Outcome {
    Complete { status: Status, result: u64 },
    /// Needs a buffer for the data pointer, then `work`.
    Transfer(Work),
    /// A backend operation without data (Flush, Write Zeroes, Deallocate).
    Backend { namespace: Arc<Namespace>, op: BackendOp },
    HoldForEvent,
    /// The first command of a fused Compare and Write: it waits for the next command.
    FusedCompare(FusedHalf),
    /// The second command of a fused Compare and Write.
    FusedWrite(FusedHalf),
    /// A Preempt and Abort made its change: it answers once no admitted command of the
    /// preempted `hosts` is left on `namespace`.
    AwaitFence { namespace: Arc<Namespace>, hosts: Vec<super::reservation::HostId> },
    /// A valid Connect: the queue joins `controller`; the response carries its CNTLID.
    Connected { controller: Arc<Controller>, reset_generation: u32, disable_sq_flow_control: bool },
}

impl Outcome {
    pub(crate) fn status(status: Status) -> Outcome {
        Outcome::Complete { status, result: 0 }
    }
    pub(crate) fn success(result: u64) -> Outcome {
        Outcome::Complete { status: Status::SUCCESS, result }
    }
    pub(crate) fn send(data: Vec<u8>) -> Outcome {
        Outcome::Transfer(Work::Send { data })
    }
}

