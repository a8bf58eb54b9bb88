//! Persistent reservations through the loopback transport, two hosts with their own
//! Host Identifiers: conflicts, Report, notices in log 80h with their event, Preempt
//! and Abort fencing the preempted host's commands, bad commands changing nothing, and
//! Persist Through Power Loss in a state file.

mod common;

use std::sync::Arc;

use common::*;
use p2ptgt::backend::reservation_file::ReservationFile;
use p2ptgt::core::reservation::ReservationStore;
use p2ptgt::backend::{Backend, MemoryBackend};
use p2ptgt::core::{Limits, Namespace, Placement, Target};
use p2ptgt::memory::Pools;
use p2ptgt::wire::command::{admin, io};
use p2ptgt::wire::{Completion, Status};
use zerocopy::little_endian::{U16, U32};

const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:22222222-2222-4222-8222-222222222222";
const HOST_B_ID: [u8; 16] = [0x22; 16];

struct Host {
    admin: TestHost,
    io: TestHost,
}

fn host(target: &Arc<Target>, nqn: &str, host_id: [u8; 16]) -> Host {
    let mut admin = TestHost::admin(target);
    let controller_id = admin.bring_up_as(SUBSYSTEM, nqn, host_id);
    let pools = Pools::host_only(1 << 20).unwrap();
    let mut io = TestHost::new(target, &pools, 1, 32);
    assert_eq!(io.connect_as(SUBSYSTEM, nqn, host_id, 1, controller_id, 31, false).status(), Status::SUCCESS);
    Host { admin, io }
}

fn keys(first: u64, second: u64) -> Vec<u8> {
    [first.to_le_bytes(), second.to_le_bytes()].concat()
}

fn reservation_command(opcode: u8, cdw10: u32) -> p2ptgt::wire::RawCommand {
    let mut cmd = command(opcode, 0);
    cmd.namespace_id = U32::new(1);
    cmd.cdw10 = U32::new(cdw10);
    cmd
}

fn register(host: &mut TestHost, cdw10: u32, current: u64, new: u64) -> Status {
    host.call_write(reservation_command(io::RESERVATION_REGISTER, cdw10), keys(current, new)).status()
}

fn acquire(host: &mut TestHost, action: u32, rtype: u32, current: u64, preempt: u64) -> Status {
    host.call_write(reservation_command(io::RESERVATION_ACQUIRE, action | rtype << 8), keys(current, preempt)).status()
}

fn release(host: &mut TestHost, action: u32, rtype: u32, current: u64) -> Status {
    host.call_write(reservation_command(io::RESERVATION_RELEASE, action | rtype << 8), current.to_le_bytes().to_vec()).status()
}

/// A registrant as Report lists it: host ID, key, holds the reservation.
type Registered = ([u8; 16], u64, bool);

/// Report with the extended structure: generation, type, registrants.
fn report(host: &mut TestHost) -> (u32, u8, Vec<Registered>) {
    let mut cmd = reservation_command(io::RESERVATION_REPORT, 4096 / 4 - 1);
    cmd.cdw11 = U32::new(1);
    let (completion, data) = host.call_read(cmd, 4096);
    assert_eq!(completion.status(), Status::SUCCESS);
    let count = u16::from_le_bytes([data[5], data[6]]) as usize;
    let registrants = (0..count)
        .map(|i| {
            let entry = &data[64 + i * 64..128 + i * 64];
            (entry[16..32].try_into().unwrap(), u64::from_le_bytes(entry[8..16].try_into().unwrap()), entry[2] & 1 == 1)
        })
        .collect();
    (u32::from_le_bytes(data[0..4].try_into().unwrap()), data[4], registrants)
}

fn write(host: &mut TestHost, lba: u64) -> Status {
    host.write_blocks(lba, vec![0xAB; 512]).status()
}

fn read(host: &mut TestHost, lba: u64) -> Status {
    host.read_blocks(lba, 1).0.status()
}

/// Log 80h entry: (count, type, NSID).
fn notice_log(admin: &mut TestHost) -> (u64, u8, u32) {
    let (completion, log) = admin.get_log(0x80, 0, 64);
    assert_eq!(completion.status(), Status::SUCCESS);
    (u64::from_le_bytes(log[0..8].try_into().unwrap()), log[8], u32::from_le_bytes(log[12..16].try_into().unwrap()))
}

const CONFLICT: Status = Status::RESERVATION_CONFLICT.dnr();

/// Hosts A and B, registered with keys 0xA and 0xB.
fn registered_pair(target: &Arc<Target>) -> (Host, Host) {
    let mut a = host(target, HOST, HOST_ID);
    let mut b = host(target, HOST_B, HOST_B_ID);
    assert_eq!(register(&mut a.io, 0, 0, 0xA), Status::SUCCESS);
    assert_eq!(register(&mut b.io, 0, 0, 0xB), Status::SUCCESS);
    (a, b)
}

#[test]
fn write_exclusive_keeps_the_other_hosts_writes_out_and_lets_it_read() {
    let target = target();
    let (mut a, mut b) = registered_pair(&target);
    assert_eq!(acquire(&mut a.io, 0, 1, 0xA, 0), Status::SUCCESS);
    assert_eq!(write(&mut a.io, 0), Status::SUCCESS, "the holder writes");
    assert_eq!(write(&mut b.io, 0), CONFLICT);
    let mut zeroes = b.io.rw(io::WRITE_ZEROES, 0, 1);
    zeroes.data_pointer = command(0, 0).data_pointer;
    assert_eq!(b.io.call(zeroes, &[]).status(), CONFLICT, "every write-group opcode");
    assert_eq!(b.io.call(reservation_command(io::FLUSH, 0), &[]).status(), CONFLICT);
    assert_eq!(read(&mut b.io, 0), Status::SUCCESS, "Write Exclusive lets others read");
    let (generation, rtype, registrants) = report(&mut b.io);
    assert_eq!((generation, rtype), (2, 1));
    assert_eq!(registrants, vec![(HOST_ID, 0xA, true), (HOST_B_ID, 0xB, false)]);
    // Exclusive Access: the other host's reads are refused too.
    assert_eq!(release(&mut a.io, 0, 1, 0xA), Status::SUCCESS);
    assert_eq!(write(&mut b.io, 0), Status::SUCCESS, "no reservation: anyone writes");
    assert_eq!(acquire(&mut a.io, 0, 2, 0xA, 0), Status::SUCCESS);
    assert_eq!(read(&mut b.io, 0), CONFLICT);
    let verify = b.io.rw(io::VERIFY, 0, 1);
    assert_eq!(b.io.call(verify, &[]).status(), CONFLICT, "Verify is a read");
    assert_eq!(read(&mut a.io, 0), Status::SUCCESS);
}

#[test]
fn release_and_clear_tell_the_other_host_through_log_80h_and_an_event() {
    let target = target();
    let (mut a, mut b) = registered_pair(&target);
    assert_eq!(notice_log(&mut b.admin), (0, 0, 0), "empty log");
    // B waits for an event.
    let mut aer = command(admin::ASYNC_EVENT_REQUEST, 0);
    aer.command_id = U16::new(0x6001);
    b.admin.link.send(zerocopy::IntoBytes::as_bytes(&aer));
    assert_eq!(acquire(&mut a.io, 0, 3, 0xA, 0), Status::SUCCESS);
    assert_eq!(write(&mut b.io, 1), Status::SUCCESS, "Registrants Only: registrants write");
    assert_eq!(release(&mut a.io, 0, 3, 0xA), Status::SUCCESS);
    // The admin queue hands out events on its periodic pass.
    b.admin.link.queue.handle_timeout(std::time::Instant::now());
    b.admin.link.run();
    let event = b.admin.link.responses.iter().find(|c| c.command_id.get() == 0x6001).expect("the event completes the AER");
    assert_eq!(event.result.get(), 0x80 << 16 | 0x06, "I/O command specific, reservation log page available");
    assert_eq!(notice_log(&mut b.admin), (1, 2, 1), "Reservation Released for NSID 1");
    assert_eq!(notice_log(&mut b.admin), (0, 0, 0), "read entries are gone");
    assert_eq!(notice_log(&mut a.admin).1, 0, "the host that released is not told");
    assert_eq!(release(&mut a.io, 1, 0, 0xA), Status::SUCCESS, "clear");
    assert_eq!(notice_log(&mut b.admin).1, 3, "Reservation Preempted");
    assert!(report(&mut a.io).2.is_empty(), "clear unregisters everyone");
}

#[test]
fn preempt_and_abort_answers_once_the_preempted_hosts_commands_are_done() {
    let target = target();
    let (mut a, mut b) = registered_pair(&target);
    assert_eq!(acquire(&mut a.io, 0, 1, 0xA, 0), Status::SUCCESS);
    // A has one write at the backend and one whose data is still being fetched.
    a.io.link.hold = true;
    let mut at_backend = a.io.rw(io::WRITE, 2, 1);
    at_backend.command_id = U16::new(0x7001);
    let capsule = a.io.capsule(at_backend, vec![0xA1; 512], false);
    a.io.link.send(&capsule);
    assert!(a.io.link.complete_fetch());
    let mut fetching = a.io.rw(io::WRITE, 3, 1);
    fetching.command_id = U16::new(0x7002);
    let capsule = a.io.capsule(fetching, vec![0xA2; 512], false);
    a.io.link.send(&capsule);
    // B preempts A and aborts its commands.
    let mut preempt = reservation_command(io::RESERVATION_ACQUIRE, 2 | 1 << 8);
    preempt.command_id = U16::new(0x7003);
    let capsule = b.io.capsule(preempt, keys(0xB, 0xA), false);
    b.io.link.send(&capsule);
    assert!(b.io.link.responses.is_empty(), "the preempt waits for A's commands");
    assert_eq!(write(&mut b.io, 5), Status::SUCCESS, "B holds the reservation already");
    assert!(a.io.link.complete_fetch());
    assert!(a.io.link.complete_backend());
    while a.io.link.complete_send() {}
    let status = |id: u16| a.io.link.responses.iter().find(|c| c.command_id.get() == id).map(Completion::status);
    assert_eq!(status(0x7001), Some(Status::SUCCESS), "the write at the backend finished");
    assert_eq!(status(0x7002), Some(Status::ABORTED_PREEMPT), "the write not yet at the backend was aborted");
    b.io.link.run();
    let answered = b.io.link.responses.iter().find(|c| c.command_id.get() == 0x7003).map(Completion::status);
    assert_eq!(answered, Some(Status::SUCCESS));
    a.io.link.hold = false;
    assert_eq!(write(&mut a.io, 4), CONFLICT, "A is fenced");
    assert_eq!(b.io.read_blocks(3, 1).1, vec![0; 512], "the aborted write never landed");
    assert_eq!(notice_log(&mut a.admin).1, 1, "Registration Preempted");
    let (_, rtype, registrants) = report(&mut b.io);
    assert_eq!((rtype, registrants), (1, vec![(HOST_B_ID, 0xB, true)]));
}

#[test]
fn bad_reservation_commands_get_their_status_and_change_nothing() {
    let target = target();
    let mut a = host(&target, HOST, HOST_ID);
    let mut b = host(&target, HOST_B, HOST_B_ID);
    assert_eq!(register(&mut a.io, 0, 0, 0xA), Status::SUCCESS);
    assert_eq!(acquire(&mut a.io, 0, 1, 0xA, 0), Status::SUCCESS);
    let before = report(&mut a.io);
    let invalid = Status::INVALID_FIELD.dnr();
    assert_eq!(register(&mut b.io, 0, 0, 0), invalid, "new key 0");
    assert_eq!(register(&mut b.io, 3, 0, 1), invalid, "RREGA 3");
    assert_eq!(register(&mut b.io, 1 << 30, 0, 1), invalid, "CPTPL 01b");
    assert_eq!(register(&mut b.io, 3 << 30, 0, 1), invalid, "PTPL without a state file");
    assert_eq!(register(&mut b.io, 1, 0xB, 0), CONFLICT, "unregister without a registration");
    assert_eq!(acquire(&mut a.io, 0, 0, 0xA, 0), invalid, "type 0");
    assert_eq!(acquire(&mut a.io, 0, 7, 0xA, 0), invalid, "type 7");
    assert_eq!(acquire(&mut a.io, 5, 1, 0xA, 0), invalid, "action 5");
    assert_eq!(acquire(&mut a.io, 8, 1, 0xA, 0), invalid, "IEKEY");
    assert_eq!(acquire(&mut b.io, 1, 1, 0xB, 0xA), CONFLICT, "preempt by a non-registrant");
    assert_eq!(acquire(&mut a.io, 0, 2, 0xA1, 0), CONFLICT, "wrong key");
    assert_eq!(release(&mut a.io, 0, 2, 0xA), invalid, "release of another type");
    let short = a.io.call_write(reservation_command(io::RESERVATION_REGISTER, 0), vec![0; 8]).status();
    assert_eq!(short, Status::SGL_INVALID_DATA.dnr(), "8 bytes for two keys");
    let long = a.io.call_write(reservation_command(io::RESERVATION_RELEASE, 1), vec![0xA; 16]).status();
    assert_eq!(long, Status::SGL_INVALID_DATA.dnr(), "16 bytes for one key");
    let in_capsule = a.io.call(reservation_command(io::RESERVATION_ACQUIRE, 0), &[]).status();
    assert_eq!(in_capsule, Status::SGL_INVALID_DATA.dnr(), "no data at all");
    let mut without_eds = reservation_command(io::RESERVATION_REPORT, 4096 / 4 - 1);
    assert_eq!(a.io.call_read(without_eds, 4096).0.status(), Status::HOST_ID_INCONSISTENT.dnr());
    without_eds.cdw11 = U32::new(1);
    without_eds.cdw10 = U32::new(1023);
    assert_eq!(a.io.call_read(without_eds, 2048).0.status(), Status::SGL_INVALID_DATA.dnr(), "NUMD and the buffer disagree");
    let mut other_namespace = reservation_command(io::RESERVATION_REGISTER, 0);
    other_namespace.namespace_id = U32::new(9);
    assert_eq!(a.io.call_write(other_namespace, keys(0, 1)).status(), Status::INVALID_NAMESPACE.dnr());
    assert_eq!(report(&mut a.io), before, "nothing changed");
    // A host without a Host Identifier cannot take part.
    let mut nobody = host(&target, "nqn.2014-08.org.nvmexpress:uuid:33333333-3333-4333-8333-333333333333", [0; 16]);
    assert_eq!(register(&mut nobody.io, 0, 0, 0xC), Status::COMMAND_SEQUENCE_ERROR.dnr());
    assert_eq!(report(&mut a.io), before, "nothing changed");
    assert_eq!(write(&mut nobody.io, 0), CONFLICT, "and it is no registrant");
}

#[test]
fn a_namespace_without_reservations_refuses_their_commands() {
    let mut namespace = Namespace::new(1, Arc::new(Backend::Memory(MemoryBackend::new(NAMESPACE_BYTES, 9))), [1; 16], [2; 16], Placement::Host);
    namespace.reservations_enabled = false;
    let target = target_with(vec![Arc::new(namespace)], Vec::new(), Limits::default());
    let mut a = host(&target, HOST, HOST_ID);
    assert_eq!(register(&mut a.io, 0, 0, 0xA), Status::INVALID_OPCODE.dnr());
    let (_, identity) = a.admin.identify(0, 1);
    assert_eq!(identity[31], 0, "RESCAP: none");
    let mut get = command(admin::GET_FEATURES, 0);
    get.namespace_id = U32::new(1);
    get.cdw10 = U32::new(0x82);
    assert_eq!(a.admin.call(get, &[]).status(), Status::INVALID_FIELD.dnr(), "no notification mask either");
    assert_eq!(write(&mut a.io, 0), Status::SUCCESS);
}

#[test]
fn persist_through_power_loss_keeps_the_state_in_its_file() {
    let directory = std::env::temp_dir().join(format!("p2ptgt-ptpl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("reservations.json");
    let target = target();
    target.set_reservation_store(Arc::new(ReservationFile::open(&path).unwrap()));
    let mut a = host(&target, HOST, HOST_ID);
    let (_, identity) = a.admin.identify(0, 1);
    assert_eq!(identity[31], 0xFF, "RESCAP: PTPL, the six types, IEKEY as 1.3 defines it");
    let (_, controller) = a.admin.identify(1, 0);
    assert_eq!(controller[520] & 1 << 5, 1 << 5, "ONCS: reservations");
    assert_eq!(register(&mut a.io, 0, 0, 0xA), Status::SUCCESS);
    assert!(!path.exists(), "no PTPL: nothing written");
    assert_eq!(register(&mut a.io, 3 << 30, 0, 0xA), Status::SUCCESS, "register again with PTPL set");
    assert_eq!(acquire(&mut a.io, 0, 4, 0xA, 0), Status::SUCCESS);
    let mut get = command(admin::GET_FEATURES, 0);
    get.namespace_id = U32::new(1);
    get.cdw10 = U32::new(0x83);
    assert_eq!(a.admin.call(get, &[]).result.get(), 1, "feature 83h reads PTPL");
    let reopened = ReservationFile::open(&path).unwrap();
    let kept = reopened.load(SUBSYSTEM, 1).expect("the state is in the file");
    assert_eq!((kept.registrants.len(), kept.holder.map(|h| h.rtype as u8), kept.persist), (1, Some(4), true));
    // Feature 83h off forgets it.
    let mut set = command(admin::SET_FEATURES, 0);
    set.namespace_id = U32::new(1);
    set.cdw10 = U32::new(0x83);
    assert_eq!(a.admin.call(set, &[]).status(), Status::SUCCESS);
    assert_eq!(ReservationFile::open(&path).unwrap().load(SUBSYSTEM, 1), None);
    std::fs::remove_dir_all(directory).unwrap();
}
