//! Compare, fused Compare and Write, Verify and Copy through the loopback transport:
//! what they answer, what they leave on the namespace, and that a fused Compare and
//! Write is atomic with respect to a write on another queue.

mod common;

use common::*;
use p2ptgt::memory::Pools;
use p2ptgt::wire::command::io;
use p2ptgt::wire::{Completion, RawCommand, Status};
use zerocopy::little_endian::{U16, U32};

const BLOCK: usize = 512;

fn compare(host: &mut TestHost, lba: u64, data: Vec<u8>) -> Status {
    let cmd = host.rw(io::COMPARE, lba, (data.len() / BLOCK) as u32);
    host.call_write(cmd, data).status()
}

/// Sends a fused pair, compare data and write data each behind a keyed SGL or in the
/// capsule. Returns the first's and the second's completions.
fn compare_and_write(host: &mut TestHost, lba: u64, expected: Vec<u8>, write: Vec<u8>, in_capsule: bool) -> (Completion, Completion) {
    let blocks = (expected.len() / BLOCK) as u32;
    let mut first = host.rw(io::COMPARE, lba, blocks);
    first.flags |= 1;
    first.command_id = U16::new(0x7001);
    let mut second = host.rw(io::WRITE, lba, blocks);
    second.flags |= 2;
    second.command_id = U16::new(0x7002);
    send(host, first, expected, in_capsule);
    send(host, second, write, in_capsule);
    (take(host, 0x7001), take(host, 0x7002))
}

fn send(host: &mut TestHost, cmd: RawCommand, data: Vec<u8>, in_capsule: bool) {
    let capsule = host.capsule(cmd, data, in_capsule);
    host.link.send(&capsule);
}

fn take(host: &mut TestHost, command_id: u16) -> Completion {
    let position = host.link.responses.iter().position(|c| c.command_id.get() == command_id).unwrap_or_else(|| panic!("no completion for {command_id:#x}"));
    host.link.responses.remove(position).unwrap()
}

#[test]
fn compare_answers_whether_the_blocks_match() {
    let mut live = live_queues(1 << 20);
    assert_eq!(live.io.write_blocks(8, pattern(1, 4096)).status(), Status::SUCCESS);
    assert_eq!(compare(&mut live.io, 8, pattern(1, 4096)), Status::SUCCESS);
    assert_eq!(compare(&mut live.io, 8, pattern(2, 4096)), Status::COMPARE_FAILURE.dnr());
    assert_eq!(compare(&mut live.io, 9, vec![0; BLOCK]), Status::COMPARE_FAILURE.dnr(), "a block that holds other data");
    let blocks = (NAMESPACE_BYTES / BLOCK) as u64;
    assert_eq!(compare(&mut live.io, blocks - 1, pattern(1, 1024)), Status::LBA_RANGE.dnr());
}

#[test]
fn fused_compare_and_write_writes_only_on_a_match() {
    for in_capsule in [false, true] {
        let mut live = live_queues(1 << 20);
        assert_eq!(live.io.write_blocks(0, pattern(1, 1024)).status(), Status::SUCCESS);
        let (first, second) = compare_and_write(&mut live.io, 0, pattern(1, 1024), pattern(2, 1024), in_capsule);
        assert_eq!((first.status(), second.status()), (Status::SUCCESS, Status::SUCCESS), "in capsule: {in_capsule}");
        assert_eq!(live.io.read_blocks(0, 2).1, pattern(2, 1024), "written");
        let (first, second) = compare_and_write(&mut live.io, 0, pattern(1, 1024), pattern(3, 1024), in_capsule);
        assert_eq!(first.status(), Status::COMPARE_FAILURE.dnr());
        assert_eq!(second.status(), Status::FUSED_FAILED);
        assert_eq!(live.io.read_blocks(0, 2).1, pattern(2, 1024), "nothing written on a mismatch");
    }
}

#[test]
fn a_fused_command_without_its_partner_is_aborted() {
    let mut live = live_queues(1 << 20);
    let host = &mut live.io;
    // A first followed by a plain read: the first is aborted, the read runs.
    let mut first = host.rw(io::COMPARE, 0, 1);
    first.flags |= 1;
    first.command_id = U16::new(0x7101);
    send(host, first, vec![0; BLOCK], false);
    assert!(host.link.responses.is_empty(), "the first waits for its partner");
    let (read, _) = host.read_blocks(0, 1);
    assert_eq!(read.status(), Status::SUCCESS);
    assert_eq!(take(host, 0x7101).status(), Status::FUSED_MISSING);
    // A second alone.
    let mut second = host.rw(io::WRITE, 0, 1);
    second.flags |= 2;
    second.command_id = U16::new(0x7102);
    send(host, second, vec![9; BLOCK], false);
    assert_eq!(take(host, 0x7102).status(), Status::FUSED_MISSING);
    assert_eq!(host.read_blocks(0, 1).1, vec![0; BLOCK], "the lone second wrote nothing");
    // A pair naming different blocks.
    let (first, second) = {
        let mut first = host.rw(io::COMPARE, 0, 1);
        first.flags |= 1;
        first.command_id = U16::new(0x7103);
        let mut second = host.rw(io::WRITE, 1, 1);
        second.flags |= 2;
        second.command_id = U16::new(0x7104);
        send(host, first, vec![0; BLOCK], false);
        send(host, second, vec![9; BLOCK], false);
        (take(host, 0x7103), take(host, 0x7104))
    };
    assert_eq!((first.status(), second.status()), (Status::INVALID_FIELD.dnr(), Status::INVALID_FIELD.dnr()), "both must name the same blocks");
    // A first refused on arrival (past the end) fails the second that follows it.
    let blocks = (NAMESPACE_BYTES / BLOCK) as u64;
    let mut first = host.rw(io::COMPARE, blocks, 1);
    first.flags |= 1;
    first.command_id = U16::new(0x7105);
    let mut second = host.rw(io::WRITE, blocks, 1);
    second.flags |= 2;
    second.command_id = U16::new(0x7106);
    send(host, first, vec![0; BLOCK], false);
    send(host, second, vec![9; BLOCK], false);
    assert_eq!(take(host, 0x7105).status(), Status::LBA_RANGE.dnr());
    assert_eq!(take(host, 0x7106).status(), Status::FUSED_FAILED);
    // FUSE 11b is reserved; only Compare then Write fuse.
    let mut reserved = host.rw(io::READ, 0, 1);
    reserved.flags |= 3;
    assert_eq!(host.call_read(reserved, BLOCK).0.status(), Status::INVALID_FIELD.dnr());
    let mut fused_read = host.rw(io::READ, 0, 1);
    fused_read.flags |= 1;
    assert_eq!(host.call_read(fused_read, BLOCK).0.status(), Status::INVALID_FIELD.dnr());
    // Admin and Fabrics commands never fuse.
    let mut identify = command(p2ptgt::wire::command::admin::IDENTIFY, 0);
    identify.cdw10 = U32::new(1);
    identify.flags |= 1;
    assert_eq!(live.admin.call_read(identify, 4096).0.status(), Status::INVALID_FIELD.dnr());
}

/// A write on queue 1 is at the backend (its completion held) when queue 2 sends a
/// fused Compare and Write of the same block: the pair waits until the write is done,
/// then compares with what the write left.
#[test]
fn compare_and_write_waits_for_a_write_inside_its_range() {
    let target = target();
    let pools = Pools::host_only(1 << 20).unwrap();
    let mut admin = TestHost::new(&target, &pools, 0, 32);
    let controller_id = admin.bring_up(SUBSYSTEM, HOST);
    let mut hosts: Vec<TestHost> = (1..=2)
        .map(|queue_id| {
            let mut host = TestHost::new(&target, &pools, queue_id, 32);
            assert_eq!(host.connect(SUBSYSTEM, HOST, queue_id, controller_id, 31, true).status(), Status::SUCCESS);
            host
        })
        .collect();
    assert_eq!(hosts[0].write_blocks(4, vec![1; BLOCK]).status(), Status::SUCCESS);
    hosts[0].link.hold = true;
    let mut write = hosts[0].rw(io::WRITE, 4, 1);
    write.command_id = U16::new(0x7201);
    send(&mut hosts[0], write, vec![2; BLOCK], false);
    assert!(hosts[0].link.complete_fetch(), "the write's data is fetched");
    assert_eq!(hosts[0].link.held().1, 1, "the write is at the backend");
    let mut first = hosts[1].rw(io::COMPARE, 4, 1);
    first.flags |= 1;
    first.command_id = U16::new(0x7202);
    let mut second = hosts[1].rw(io::WRITE, 4, 1);
    second.flags |= 2;
    second.command_id = U16::new(0x7203);
    send(&mut hosts[1], first, vec![2; BLOCK], false);
    send(&mut hosts[1], second, vec![3; BLOCK], false);
    assert!(hosts[1].link.responses.is_empty(), "the pair waits for the write inside its range");
    assert!(hosts[1].link.queue.awaits_ranges());
    hosts[0].link.hold = false;
    assert!(hosts[0].link.complete_backend(), "the write completes");
    assert_eq!(take(&mut hosts[0], 0x7201).status(), Status::SUCCESS);
    hosts[1].link.run();
    assert_eq!(take(&mut hosts[1], 0x7202).status(), Status::SUCCESS, "compared with the write's data");
    assert_eq!(take(&mut hosts[1], 0x7203).status(), Status::SUCCESS);
    assert_eq!(hosts[0].read_blocks(4, 1).1, vec![3; BLOCK]);
}

#[test]
fn verify_reads_the_blocks_and_moves_no_data() {
    let mut live = live_queues(1 << 20);
    let mut verify = live.io.rw(io::VERIFY, 0, 16);
    assert_eq!(live.io.call(verify, &[]).status(), Status::SUCCESS);
    let blocks = (NAMESPACE_BYTES / BLOCK) as u64;
    verify = live.io.rw(io::VERIFY, blocks - 8, 16);
    assert_eq!(live.io.call(verify, &[]).status(), Status::LBA_RANGE.dnr());
    // More than VSL (MDTS, 128 KiB).
    verify = live.io.rw(io::VERIFY, 0, 512);
    assert_eq!(live.io.call(verify, &[]).status(), Status::INVALID_FIELD.dnr());
}

/// A Copy source range entry, descriptor format 0h.
fn range(lba: u64, blocks: u16) -> Vec<u8> {
    let mut entry = vec![0u8; 32];
    entry[8..16].copy_from_slice(&lba.to_le_bytes());
    entry[16..18].copy_from_slice(&(blocks - 1).to_le_bytes());
    entry
}

fn copy(host: &mut TestHost, destination: u64, ranges: &[Vec<u8>], cdw12_extra: u32) -> Status {
    let mut cmd = host.rw(io::COPY, destination, 1);
    cmd.cdw12 = U32::new((ranges.len() as u32).saturating_sub(1) | cdw12_extra);
    host.call_write(cmd, ranges.concat()).status()
}

#[test]
fn copy_gathers_its_source_ranges_at_the_destination() {
    let mut live = live_queues(1 << 20);
    assert_eq!(live.io.write_blocks(0, pattern(1, 2 * BLOCK)).status(), Status::SUCCESS);
    assert_eq!(live.io.write_blocks(100, pattern(2, 3 * BLOCK)).status(), Status::SUCCESS);
    assert_eq!(copy(&mut live.io, 1000, &[range(100, 3), range(0, 2)], 0), Status::SUCCESS);
    let (_, copied) = live.io.read_blocks(1000, 5);
    assert_eq!(copied, [pattern(2, 3 * BLOCK), pattern(1, 2 * BLOCK)].concat());
    let blocks = (NAMESPACE_BYTES / BLOCK) as u64;
    assert_eq!(copy(&mut live.io, 1000, &[range(blocks - 1, 2)], 0), Status::LBA_RANGE.dnr(), "source past the end");
    assert_eq!(copy(&mut live.io, blocks - 1, &[range(0, 2)], 0), Status::LBA_RANGE.dnr(), "destination past the end");
    assert_eq!(copy(&mut live.io, 1000, &[range(0, 257)], 0), Status::COMMAND_SIZE_LIMIT.dnr(), "longer than MSSRL");
    assert_eq!(copy(&mut live.io, 1000, &[range(0, 1)], 1 << 8), Status::INVALID_FIELD.dnr(), "descriptor format 1h");
    let many: Vec<Vec<u8>> = (0..129).map(|i| range(i, 1)).collect();
    assert_eq!(copy(&mut live.io, 1000, &many, 0), Status::COMMAND_SIZE_LIMIT.dnr(), "more than MSRC + 1 ranges");
    assert_eq!(live.io.read_blocks(1000, 5).1, copied, "failed copies wrote nothing");
}
