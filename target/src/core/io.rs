//! NVM command set I/O commands (nvmet's io-cmd-*.c): Read, Write, Flush, Write Zeroes and
//! Dataset Management, checked against the namespace before they reach a backend.

use std::sync::Arc;

use super::controller::Controller;
use super::queue::{Inbound, Outcome, Queue, Work};
use super::subsystem::Namespace;
use crate::backend::BackendOp;
use crate::wire::bytes;
use crate::wire::command::io as opcode;
use crate::wire::{DataPointer, RawCommand, Status};

pub(crate) fn execute(queue: &mut Queue, controller: &Controller, command: &RawCommand, data: DataPointer) -> Outcome {
    let known = matches!(command.opcode, opcode::READ | opcode::WRITE | opcode::FLUSH | opcode::WRITE_ZEROES | opcode::DATASET_MANAGEMENT);
    let Some(subsystem) = controller.subsystem().filter(|_| known) else {
        return Outcome::status(Status::INVALID_OPCODE.dnr());
    };
    let Some(namespace) = subsystem.namespace(command.namespace_id.get()).cloned() else {
        return Outcome::status(Status::INVALID_NAMESPACE.dnr());
    };
    let stats = &queue.stats;
    match command.opcode {
        opcode::READ | opcode::WRITE => {
            let to_host = command.opcode == opcode::READ;
            let (offset_bytes, len_bytes) = match block_range(&namespace, command.starting_lba(), command.block_count()) {
                Ok(range) => range,
                Err(status) => return Outcome::status(status),
            };
            if len_bytes > u64::from(queue.target.limits.max_transfer_bytes()) {
                return Outcome::status(Status::INVALID_FIELD.dnr());
            }
            if u64::from(data.length_bytes()) != len_bytes {
                return Outcome::status(Status::SGL_INVALID_DATA.dnr());
            }
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
                let durable = command.force_unit_access() || !controller.write_cache_enabled();
                Work::Inbound(Inbound::Write { namespace, offset_bytes, durable })
            };
            Outcome::Transfer(work)
        }
        opcode::FLUSH => {
            stats.other_commands.add(1);
            Outcome::Backend { namespace, op: BackendOp::Flush }
        }
        opcode::WRITE_ZEROES => {
            stats.other_commands.add(1);
            let durable = command.force_unit_access() || !controller.write_cache_enabled();
            // DEAC (CDW12 bit 25): the host allows deallocating instead of writing.
            let deallocate = command.cdw12.get() & (1 << 25) != 0;
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
        _ => Outcome::status(Status::INVALID_OPCODE.dnr()),
    }
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
