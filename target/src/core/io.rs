//! NVM command set I/O commands (nvmet's io-cmd-*.c, and what SPDK adds): Read, Write,
//! Flush, Compare (alone or fused with a Write), Write Zeroes, Dataset Management, Verify
//! and Copy, checked against the namespace before they reach a backend.

use std::collections::VecDeque;
use std::sync::Arc;

use super::controller::Controller;
use super::context::Context;
use super::outcome::{FusedHalf, Inbound, MediaJob, Outcome, Work};
use super::subsystem::Namespace;
use super::reservation::Admission;
use super::storage::BackendOp;
use crate::wire::bytes;
use crate::wire::command::{fuse, io as opcode};
use crate::wire::{DataPointer, RawCommand, Status};

/// Executes an I/O command. A command of a registrant admitted under the namespace's
/// reservation comes with its [`Admission`], which the queue holds until it answers.
pub(crate) fn execute(queue: &Context, controller: &Controller, command: &RawCommand, data: DataPointer) -> (Outcome, Option<Admission>) {
    let Some(subsystem) = controller.subsystem() else {
        return (Outcome::status(Status::INVALID_OPCODE.dnr()), None);
    };
    let namespace = subsystem.namespace(command.namespace_id.get());
    // Through a port where the namespace's group is not accessible, every I/O command
    // gets the path status (no DNR: the host retries on another path).
    if let Some(status) = namespace.as_ref().and_then(|n| queue.target.ana_state(controller.port_id, n.ana_group).refusal()) {
        return (Outcome::status(status), None);
    }
    let group = match command.opcode {
        opcode::READ | opcode::COMPARE | opcode::VERIFY => Some(false),
        opcode::WRITE | opcode::WRITE_ZEROES | opcode::DATASET_MANAGEMENT | opcode::FLUSH | opcode::COPY => Some(true),
        _ => None,
    };
    let admission = match (&namespace, group) {
        (Some(namespace), Some(write)) => match namespace.reservations.admit(&controller.host_id, write) {
            Ok(admission) => admission,
            Err(status) => return (Outcome::status(status), None),
        },
        _ => None,
    };
    (execute_admitted(queue, controller, namespace, command, data), admission)
}

/// The command past the path and reservation checks; `namespace` is the one its NSID
/// names, if any.
fn execute_admitted(queue: &Context, controller: &Controller, namespace: Option<Arc<Namespace>>, command: &RawCommand, data: DataPointer) -> Outcome {
    const KNOWN: [u8; 12] = [
        opcode::READ,
        opcode::WRITE,
        opcode::FLUSH,
        opcode::COMPARE,
        opcode::WRITE_ZEROES,
        opcode::DATASET_MANAGEMENT,
        opcode::VERIFY,
        opcode::COPY,
        opcode::RESERVATION_REGISTER,
        opcode::RESERVATION_REPORT,
        opcode::RESERVATION_ACQUIRE,
        opcode::RESERVATION_RELEASE,
    ];
    if !KNOWN.contains(&command.opcode) {
        return Outcome::status(Status::INVALID_OPCODE.dnr());
    }
    let Some(namespace) = namespace else {
        return Outcome::status(Status::INVALID_NAMESPACE.dnr());
    };
    // As nvmet: a write-protected namespace takes what only reads (no DNR: the
    // protection may be lifted).
    if namespace.is_read_only() && !matches!(command.opcode, opcode::READ | opcode::FLUSH | opcode::COMPARE | opcode::VERIFY) && !super::reservation_cmd::is_reservation(command.opcode) {
        return Outcome::status(Status::NAMESPACE_WRITE_PROTECTED);
    }
    if let Some(outcome) = super::reservation_cmd::begin(controller, namespace.clone(), command, data) {
        return outcome;
    }
    let max_transfer_bytes = u64::from(queue.target.limits.max_transfer_bytes());
    let durable = command.force_unit_access() || !controller.write_cache_enabled();
    match (command.fuse(), command.opcode) {
        (fuse::NONE, _) => {}
        // Compare and Write is the one fused operation (FUSES bit 0).
        (fuse::FIRST, opcode::COMPARE) | (fuse::SECOND, opcode::WRITE) => {
            let half = match transfer(&namespace, command, data, max_transfer_bytes) {
                Ok((offset_bytes, len_bytes)) => FusedHalf { namespace, offset_bytes, len_bytes, durable },
                Err(status) => return Outcome::status(status),
            };
            queue.stats.other_commands.add(1);
            return if command.fuse() == fuse::FIRST { Outcome::FusedCompare(half) } else { Outcome::FusedWrite(half) };
        }
        _ => return Outcome::status(Status::INVALID_FIELD.dnr()),
    }
    let stats = queue.stats;
    match command.opcode {
        opcode::READ | opcode::WRITE => {
            let to_host = command.opcode == opcode::READ;
            let (offset_bytes, len_bytes) = match transfer(&namespace, command, data, max_transfer_bytes) {
                Ok(range) => range,
                Err(status) => return Outcome::status(status),
            };
            if to_host && matches!(data, DataPointer::InCapsule { .. }) {
                return Outcome::status(Status::INVALID_FIELD.dnr());
            }
            let (commands, bytes, namespace_commands, namespace_bytes) = if to_host {
                (&stats.read_commands, &stats.read_bytes, &namespace.stats.read_commands, &namespace.stats.read_bytes)
            } else {
                (&stats.write_commands, &stats.write_bytes, &namespace.stats.write_commands, &namespace.stats.write_bytes)
            };
            commands.add(1);
            bytes.add(len_bytes);
            namespace_commands.add(1);
            namespace_bytes.add(len_bytes);
            let work = if to_host {
                Work::Read { namespace, offset_bytes }
            } else {
                Work::Inbound(Inbound::Write { namespace, offset_bytes, durable })
            };
            Outcome::Transfer(work)
        }
        opcode::COMPARE => {
            stats.other_commands.add(1);
            match transfer(&namespace, command, data, max_transfer_bytes) {
                Ok((offset_bytes, _)) => Outcome::Transfer(Work::Inbound(Inbound::Compare { namespace, offset_bytes })),
                Err(status) => Outcome::status(status),
            }
        }
        opcode::VERIFY => {
            stats.other_commands.add(1);
            match block_range(&namespace, command.starting_lba(), command.block_count()) {
                // VSL (Identify Controller, NVM command set) is MDTS.
                Ok((_, len_bytes)) if len_bytes > max_transfer_bytes => Outcome::status(Status::INVALID_FIELD.dnr()),
                Ok((offset_bytes, len_bytes)) => Outcome::Transfer(Work::Media { namespace, len_bytes: len_bytes as u32, job: MediaJob::Verify { offset_bytes } }),
                Err(status) => Outcome::status(status),
            }
        }
        opcode::FLUSH => {
            stats.other_commands.add(1);
            Outcome::Backend { namespace, op: BackendOp::Flush }
        }
        opcode::WRITE_ZEROES => {
            stats.other_commands.add(1);
            // DEAC: the host allows deallocating instead of writing.
            let deallocate = command.write_zeroes_deallocate();
            match block_range(&namespace, command.starting_lba(), command.block_count()) {
                Ok((offset_bytes, len_bytes)) => Outcome::Backend { namespace, op: BackendOp::WriteZeroes { offset_bytes, len_bytes, deallocate, durable } },
                Err(status) => Outcome::status(status),
            }
        }
        opcode::DATASET_MANAGEMENT => {
            stats.other_commands.add(1);
            let ranges = (command.cdw10.get() & 0xFF).saturating_add(1);
            let deallocate = command.cdw11.get() & (1 << 2) != 0;
            if !deallocate {
                // Only attribute hints: nothing to do.
                return Outcome::success(0);
            }
            if data.length_bytes() < ranges.saturating_mul(16) {
                return Outcome::status(Status::SGL_INVALID_DATA.dnr());
            }
            Outcome::Transfer(Work::Inbound(Inbound::Deallocate { namespace, ranges }))
        }
        opcode::COPY => {
            stats.other_commands.add(1);
            let cdw12 = command.cdw12.get();
            let ranges = (cdw12 & 0xFF).saturating_add(1);
            // Descriptor format (bits 11:8): only format 0h (OCFS bit 0).
            if (cdw12 >> 8) & 0xF != 0 {
                return Outcome::status(Status::INVALID_FIELD.dnr());
            }
            if ranges > u32::from(COPY_RANGES_MAX) {
                return Outcome::status(Status::COMMAND_SIZE_LIMIT.dnr());
            }
            if data.length_bytes() < ranges.saturating_mul(COPY_RANGE_BYTES as u32) {
                return Outcome::status(Status::SGL_INVALID_DATA.dnr());
            }
            let destination_lba = command.starting_lba();
            Outcome::Transfer(Work::Inbound(Inbound::Copy { namespace, ranges, destination_lba, durable }))
        }
        _ => Outcome::status(Status::INVALID_OPCODE.dnr()),
    }
}

/// The byte range of a command that moves NLB blocks through its data pointer: in the
/// namespace, at most MDTS, and exactly what the data pointer describes.
fn transfer(namespace: &Namespace, command: &RawCommand, data: DataPointer, max_transfer_bytes: u64) -> Result<(u64, u64), Status> {
    let (offset_bytes, len_bytes) = block_range(namespace, command.starting_lba(), command.block_count())?;
    if len_bytes > max_transfer_bytes {
        return Err(Status::INVALID_FIELD.dnr());
    }
    if u64::from(data.length_bytes()) != len_bytes {
        return Err(Status::SGL_INVALID_DATA.dnr());
    }
    Ok((offset_bytes, len_bytes))
}

/// Source ranges one Copy may name (MSRC + 1).
pub const COPY_RANGES_MAX: u16 = 128;
/// A source range entry of descriptor format 0h (NVM Command Set 1.0, Figure 44).
const COPY_RANGE_BYTES: usize = 32;

/// The largest source range, in blocks (MSSRL): one transfer of at most MDTS.
pub fn copy_range_blocks_max(max_transfer_bytes: u32, block_size_shift: u8) -> u32 {
    (max_transfer_bytes >> block_size_shift).min(u32::from(u16::MAX))
}

/// Copy's source ranges as byte ranges, checked against the namespace and the limits
/// Identify Namespace advertises (MSSRL, MCL); `destination_lba` must fit the total.
pub(crate) fn copy_ranges(namespace: &Namespace, ranges: u32, destination_lba: u64, max_transfer_bytes: u32, bytes: &[u8]) -> Result<(VecDeque<(u64, u64)>, u64), Status> {
    let longest = copy_range_blocks_max(max_transfer_bytes, namespace.backend.block_size_shift());
    let mut byte_ranges = VecDeque::with_capacity(ranges as usize);
    let mut total_blocks: u64 = 0;
    for entry in bytes.chunks_exact(COPY_RANGE_BYTES).take(ranges as usize) {
        let (Some(lba), Some(blocks)) = (bytes::get::<8>(entry, 8), bytes::get::<2>(entry, 16)) else { continue };
        let blocks = u32::from(u16::from_le_bytes(blocks)) + 1;
        if blocks > longest {
            return Err(Status::COMMAND_SIZE_LIMIT.dnr());
        }
        total_blocks = total_blocks.saturating_add(u64::from(blocks));
        byte_ranges.push_back(block_range(namespace, u64::from_le_bytes(lba), blocks)?);
    }
    if total_blocks > u64::from(longest).saturating_mul(u64::from(COPY_RANGES_MAX)) {
        return Err(Status::COMMAND_SIZE_LIMIT.dnr());
    }
    let (destination_bytes, _) = block_range(namespace, destination_lba, u32::try_from(total_blocks).map_err(|_| Status::LBA_RANGE.dnr())?)?;
    Ok((byte_ranges, destination_bytes))
}

/// Byte offset and length of `blocks` blocks at `lba`, or LBA Out of Range.
fn block_range(namespace: &Namespace, lba: u64, blocks: u32) -> Result<(u64, u64), Status> {
    let end = lba.checked_add(u64::from(blocks)).ok_or(Status::LBA_RANGE.dnr())?;
    if end > namespace.size_blocks() {
        return Err(Status::LBA_RANGE.dnr());
    }
    let shift = namespace.backend.block_size_shift();
    Ok((lba << shift, u64::from(blocks) << shift))
}

/// Dataset Management ranges (NVM Command Set 1.0, Figure 39): 16 bytes each, context
/// attributes, length in blocks (1's based) and starting LBA.
pub(crate) fn deallocate(namespace: &Arc<Namespace>, ranges: u32, bytes: &[u8]) -> Outcome {
    let mut byte_ranges = Vec::with_capacity(ranges as usize);
    for chunk in bytes.chunks_exact(16).take(ranges as usize) {
        let (Some(blocks), Some(lba)) = (bytes::get::<4>(chunk, 4), bytes::get::<8>(chunk, 8)) else { continue };
        let blocks = u32::from_le_bytes(blocks);
        if blocks == 0 {
            continue;
        }
        match block_range(namespace, u64::from_le_bytes(lba), blocks) {
            Ok(range) => byte_ranges.push(range),
            Err(status) => return Outcome::status(status),
        }
    }
    Outcome::Backend { namespace: namespace.clone(), op: BackendOp::Deallocate { ranges: byte_ranges } }
}
