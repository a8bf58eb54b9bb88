//! The controller core driven end to end over the loopback transport: one protocol
//! story per test.

mod common;

use std::time::{Duration, Instant};

use common::*;
use p2ptgt::core::Limits;
use p2ptgt::memory::Pools;
use p2ptgt::wire::command::{admin, io};
use p2ptgt::wire::fabrics::property;
use p2ptgt::wire::sgl::RawSglDescriptor;
use p2ptgt::wire::Status;
use zerocopy::little_endian::U32;

fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

#[test]
fn nvme_connect_sequence_then_write_and_read_back() {
    let target = target();
    let mut admin_queue = TestHost::admin(&target);
    let controller_id = admin_queue.bring_up(SUBSYSTEM, HOST);

    let (identify, page) = admin_queue.identify(1, 0);
    assert_eq!(identify.status(), Status::SUCCESS);
    assert_eq!(le16(&page, 78), controller_id, "Identify CNTLID matches the Connect result");
    assert_eq!(page[77], 5, "MDTS 128 KiB");
    assert_ne!(le16(&page, 320), 0, "KAS set");
    assert_eq!(&page[768..768 + SUBSYSTEM.len()], SUBSYSTEM.as_bytes());
    assert_eq!(admin_queue.link.invalidated.len(), 1, "data sent with invalidate of the host's key");

    let mut features = command(admin::SET_FEATURES, 0);
    features.cdw10 = U32::new(0x07);
    features.cdw11 = U32::new(3 | 3 << 16);
    let granted = admin_queue.call(features, &[]);
    assert_eq!(granted.status(), Status::SUCCESS);
    assert_eq!(granted.result.get(), 3 | 3 << 16);

    let (list, namespaces) = admin_queue.identify(2, 0);
    assert_eq!(list.status(), Status::SUCCESS);
    assert_eq!((le32(&namespaces, 0), le32(&namespaces, 4)), (1, 0));
    let (_, namespace) = admin_queue.identify(0, 1);
    assert_eq!(u64::from_le_bytes(namespace[0..8].try_into().unwrap()), (NAMESPACE_BYTES / 512) as u64);
    let (_, independent) = admin_queue.identify(8, 1);
    assert_eq!(independent[14] & 1, 1, "NSTAT ready");

    let pools = Pools::host_only(4 << 20).unwrap();
    let mut io_queue = TestHost::new(&target, &pools, 1, 128);
    let connect = io_queue.connect(SUBSYSTEM, HOST, 1, controller_id, 127, true);
    assert_eq!(connect.status(), Status::SUCCESS, "I/O connect with in-capsule data");

    let data = pattern(7, 64 * 1024);
    assert_eq!(io_queue.write_blocks(100, data.clone()).status(), Status::SUCCESS);
    let (read, back) = io_queue.read_blocks(100, 128);
    assert_eq!(read.status(), Status::SUCCESS);
    assert_eq!(back, data);

    // In-capsule write of one block.
    let mut small = io_queue.rw(io::WRITE, 7, 1);
    small.data_pointer = RawSglDescriptor::in_capsule(512);
    assert_eq!(io_queue.call(small, &pattern(9, 512)).status(), Status::SUCCESS);
    assert_eq!(io_queue.read_blocks(7, 1).1, pattern(9, 512));
    // Only the write's data went to the backend from the receive buffer (Connect data
    // was copied), and the buffer came back once the response was sent.
    assert_eq!(io_queue.link.lent_total, 1);
    assert_eq!(io_queue.link.lent_outstanding(), 0);
    assert!(target.payload.payload_bytes_host.get() >= 2 * 64 * 1024 + 1024);
    assert_eq!(target.payload.payload_bytes_cmb.get(), 0);
}

#[test]
fn commands_before_enable_are_sequence_errors() {
    let target = target();
    let mut admin_queue = TestHost::admin(&target);
    let (identify, _) = admin_queue.identify(1, 0);
    assert_eq!(identify.status(), Status::COMMAND_SEQUENCE_ERROR.dnr(), "before Connect");
    assert_eq!(admin_queue.connect(SUBSYSTEM, HOST, 0, 0xFFFF, 31, false).status(), Status::SUCCESS);
    let (identify, _) = admin_queue.identify(1, 0);
    assert_eq!(identify.status(), Status::COMMAND_SEQUENCE_ERROR.dnr(), "before CC.EN");
    let again = admin_queue.connect(SUBSYSTEM, HOST, 0, 0xFFFF, 31, false);
    assert_eq!(again.status(), Status::COMMAND_SEQUENCE_ERROR.dnr(), "second Connect on one queue");
}

#[test]
fn io_errors_are_statuses_and_the_queue_keeps_serving() {
    let LiveQueues { target: _, admin: _admin, io: mut io_queue, controller_id: _ } = live_queues(4 << 20);

    let last = (NAMESPACE_BYTES / 512) as u64;
    let (beyond, _) = io_queue.read_blocks(last, 1);
    assert_eq!(beyond.status(), Status::LBA_RANGE.dnr());
    let (wrap, _) = io_queue.read_blocks(u64::MAX, 2);
    assert_eq!(wrap.status(), Status::LBA_RANGE.dnr());
    let mut wrong_ns = io_queue.rw(io::READ, 0, 1);
    wrong_ns.namespace_id = U32::new(9);
    assert_eq!(io_queue.call_read(wrong_ns, 512).0.status(), Status::INVALID_NAMESPACE.dnr());
    let too_big = io_queue.rw(io::READ, 0, 512);
    assert_eq!(io_queue.call_read(too_big, 256 * 1024).0.status(), Status::INVALID_FIELD.dnr(), "beyond MDTS");
    let mismatch = io_queue.rw(io::READ, 0, 2);
    assert_eq!(io_queue.call_read(mismatch, 512).0.status(), Status::SGL_INVALID_DATA.dnr());
    let unknown = command(0x7E, 0);
    assert_eq!(io_queue.call(unknown, &[]).status(), Status::INVALID_OPCODE.dnr());
    let mut prp = io_queue.rw(io::READ, 0, 1);
    prp.flags = 0;
    assert_eq!(io_queue.call(prp, &[]).status(), Status::INVALID_FIELD.dnr());

    assert_eq!(io_queue.write_blocks(last - 1, pattern(1, 512)).status(), Status::SUCCESS, "last block still works");
    assert_eq!(io_queue.read_blocks(last - 1, 1).1, pattern(1, 512));
}

#[test]
fn flush_write_zeroes_and_deallocate_read_back_zeros() {
    let LiveQueues { target: _, admin: _admin, io: mut io_queue, controller_id: _ } = live_queues(4 << 20);
    io_queue.write_blocks(0, pattern(3, 8192));

    let zeroes = io_queue.rw(io::WRITE_ZEROES, 2, 2);
    assert_eq!(io_queue.call(zeroes, &[]).status(), Status::SUCCESS);
    let mut range = vec![0u8; 16];
    range[4..8].copy_from_slice(&3u32.to_le_bytes());
    range[8..16].copy_from_slice(&10u64.to_le_bytes());
    let mut dsm = command(io::DATASET_MANAGEMENT, 0);
    dsm.namespace_id = U32::new(1);
    dsm.cdw11 = U32::new(1 << 2);
    assert_eq!(io_queue.call_write(dsm, range).status(), Status::SUCCESS);
    let mut flush = command(io::FLUSH, 0);
    flush.namespace_id = U32::new(1);
    assert_eq!(io_queue.call(flush, &[]).status(), Status::SUCCESS);

    let (_, back) = io_queue.read_blocks(0, 16);
    let mut expected = pattern(3, 8192);
    expected.resize(8192, 0);
    expected[1024..2048].fill(0);
    expected[5120..6656].fill(0);
    expected.resize(16 * 512, 0);
    assert_eq!(back, expected);
}

#[test]
fn host_not_allowed_gets_invalid_host_and_sees_nothing() {
    let target = target_with(vec![memory_namespace(1, 1 << 20)], vec![HOST.into()], Limits::default());
    let mut stranger = TestHost::admin(&target);
    let refused = stranger.connect(SUBSYSTEM, "nqn.2014-08.org.nvmexpress:uuid:stranger", 0, 0xFFFF, 31, false);
    assert_eq!(refused.status(), Status::CONNECT_INVALID_HOST.dnr());

    let mut discovery_queue = TestHost::admin(&target);
    discovery_queue.bring_up(discovery(), "nqn.2014-08.org.nvmexpress:uuid:stranger");
    let (_, header) = discovery_queue.get_log(0x70, 0, 20);
    assert_eq!(u64::from_le_bytes(header[8..16].try_into().unwrap()), 1, "only the discovery entry");

    let mut allowed = TestHost::admin(&target);
    allowed.bring_up(discovery(), HOST);
    let (status, header) = allowed.get_log(0x70, 0, 20);
    assert_eq!(status.status(), Status::SUCCESS);
    assert_eq!(u64::from_le_bytes(header[8..16].try_into().unwrap()), 2);
    let (_, entries) = allowed.get_log(0x70, 1024, 2048);
    assert_eq!(entries[2], 3, "first entry: current discovery subsystem");
    assert_eq!(entries[1024 + 2], 2, "second entry: NVM subsystem");
    assert_eq!(&entries[1024 + 256..1024 + 256 + SUBSYSTEM.len()], SUBSYSTEM.as_bytes());
    let (past, _) = allowed.get_log(0x70, 8192, 4);
    assert_eq!(past.status(), Status::INVALID_FIELD.dnr(), "offset past the log");
    let (_, page) = allowed.identify(1, 0);
    assert_eq!(page[111], 2, "discovery controller type");
    let (other, _) = allowed.identify(0, 1);
    assert_eq!(other.status(), Status::INVALID_FIELD.dnr());
}

#[test]
fn keep_alive_expiry_tears_the_controller_down() {
    let target = target();
    let mut admin_queue = TestHost::admin(&target);
    let controller_id = admin_queue.bring_up(SUBSYSTEM, HOST);
    assert!(target.controller(controller_id).is_some());
    let deadline = admin_queue.link.queue.poll_timeout().expect("KATO 5 s arms a timer");
    assert!(deadline <= Instant::now() + Duration::from_secs(5));

    // Traffic since the last check re-arms once (traffic based keep-alive).
    admin_queue.link.queue.handle_timeout(deadline);
    admin_queue.link.run();
    assert!(admin_queue.link.disconnected.is_none());
    let keep_alive = command(admin::KEEP_ALIVE, 0);
    assert_eq!(admin_queue.call(keep_alive, &[]).status(), Status::SUCCESS);

    admin_queue.link.queue.handle_timeout(Instant::now() + Duration::from_secs(30));
    admin_queue.link.run();
    admin_queue.link.queue.handle_timeout(Instant::now() + Duration::from_secs(60));
    admin_queue.link.run();
    assert!(admin_queue.link.disconnected.is_some(), "expired without traffic");
    assert!(target.controller(controller_id).is_none(), "controller removed");
}

#[test]
fn short_capsule_disconnects() {
    let target = target();
    let mut admin_queue = TestHost::admin(&target);
    admin_queue.link.send(&[0u8; 40]);
    assert!(admin_queue.link.disconnected.is_some());
}

#[test]
fn io_connect_checks_controller_host_and_queue() {
    let target = target();
    let mut admin_queue = TestHost::admin(&target);
    let controller_id = admin_queue.bring_up(SUBSYSTEM, HOST);
    let pools = Pools::host_only(1 << 20).unwrap();
    let mut other_host = TestHost::new(&target, &pools, 1, 32);
    let refused = other_host.connect(SUBSYSTEM, "nqn.other", 1, controller_id, 31, true);
    assert_eq!(refused.status(), Status::CONNECT_INVALID_PARAMETER.dnr());
    assert_eq!(refused.result.get(), 1 << 16 | 512, "IATTR data, offset of HOSTNQN");
    let mut bogus = TestHost::new(&target, &pools, 1, 32);
    assert_eq!(bogus.connect(SUBSYSTEM, HOST, 1, 0x7777, 31, true).status(), Status::CONNECT_INVALID_PARAMETER.dnr());
    let mut first = TestHost::new(&target, &pools, 1, 32);
    assert_eq!(first.connect(SUBSYSTEM, HOST, 1, controller_id, 31, true).status(), Status::SUCCESS);
    let mut twice = TestHost::new(&target, &pools, 1, 32);
    assert_eq!(twice.connect(SUBSYSTEM, HOST, 1, controller_id, 31, true).status(), Status::COMMAND_SEQUENCE_ERROR.dnr());
    let mut too_deep = TestHost::new(&target, &pools, 2, 32);
    assert_eq!(too_deep.connect(SUBSYSTEM, HOST, 2, controller_id, 200, true).status(), Status::CONNECT_INVALID_PARAMETER.dnr());
}

#[test]
fn exhausted_pool_makes_requests_wait_not_fail() {
    let target = target();
    let mut admin_queue = TestHost::admin(&target);
    let controller_id = admin_queue.bring_up(SUBSYSTEM, HOST);
    // Room for exactly one 128 KiB buffer.
    let pools = Pools::host_only(128 * 1024).unwrap();
    let mut io_queue = TestHost::new(&target, &pools, 1, 32);
    io_queue.connect(SUBSYSTEM, HOST, 1, controller_id, 31, true);
    let blocks = 256;
    let mut keys = Vec::new();
    for i in 0..4u16 {
        let mut cmd = io_queue.rw(io::WRITE, u64::from(i) * 256, blocks);
        let keyed = io_queue.link.register(pattern(i as u8, 128 * 1024), false);
        cmd.data_pointer = RawSglDescriptor::keyed(keyed);
        cmd.command_id = zerocopy::little_endian::U16::new(100 + i);
        keys.push(keyed);
        io_queue.link.queue.handle_capsule(Instant::now(), zerocopy::IntoBytes::as_bytes(&cmd));
    }
    io_queue.link.run();
    assert_eq!(io_queue.link.responses.len(), 4);
    assert!(io_queue.link.responses.iter().all(|c| c.status() == Status::SUCCESS));
    assert!(io_queue.link.queue.stats.buffer_waits.get() >= 1, "waits were counted");
    for i in 0..4u8 {
        assert_eq!(io_queue.read_blocks(u64::from(i) * 256, blocks).1, pattern(i, 128 * 1024));
    }
}

#[test]
fn failed_transfer_disconnects_the_queue() {
    let LiveQueues { target, admin: _admin, io: mut io_queue, controller_id } = live_queues(1 << 20);
    io_queue.link.faults.fail_fetches = 1;
    let cmd = io_queue.rw(io::WRITE, 0, 1);
    let keyed = io_queue.link.register(vec![1; 512], false);
    let mut cmd = cmd;
    cmd.data_pointer = RawSglDescriptor::keyed(keyed);
    io_queue.link.send(zerocopy::IntoBytes::as_bytes(&cmd));
    assert!(io_queue.link.disconnected.is_some());
    assert!(target.controller(controller_id).is_some(), "an I/O queue failure leaves the controller");
}

#[test]
fn reset_and_shutdown_registers() {
    let target = target();
    let mut admin_queue = TestHost::admin(&target);
    admin_queue.bring_up(SUBSYSTEM, HOST);
    let cap = admin_queue.property_get(property::CAP, true).result64();
    assert_eq!(cap & 0xFFFF, 127, "MQES");
    assert_eq!((cap >> 37) & 1, 1, "NVM command set");
    assert_eq!(admin_queue.property_get(property::VS, false).result.get(), 0x0002_0000);
    assert_eq!(admin_queue.property_set(property::CAP, 0).status(), Status::INVALID_FIELD.dnr(), "CAP is read only");
    let cc = admin_queue.property_get(property::CC, false).result.get();
    assert_eq!(admin_queue.property_set(property::CC, cc | 1 << 14).status(), Status::SUCCESS);
    let csts = admin_queue.property_get(property::CSTS, false).result.get();
    assert_eq!(csts & 0xC, 0x8, "shutdown complete");
    assert_eq!(csts & 1, 0, "not ready after shutdown");
}

#[test]
fn async_event_configuration_takes_only_what_identify_offers() {
    let target = target();
    let mut admin_queue = TestHost::admin(&target);
    admin_queue.bring_up(SUBSYSTEM, HOST);
    let (_, identify) = admin_queue.identify(1, 0);
    assert_eq!(le32(&identify, 92), 1 << 8 | 1 << 11, "OAES: namespace attribute and ANA change notices");
    let mut aec = command(admin::SET_FEATURES, 0);
    aec.cdw10 = U32::new(0x0B);
    aec.cdw11 = U32::new(1 << 9);
    assert_eq!(admin_queue.call(aec, &[]).status(), Status::INVALID_FIELD.dnr(), "firmware activation notices are not offered");
    aec.cdw11 = U32::new(0xFF);
    assert_eq!(admin_queue.call(aec, &[]).status(), Status::SUCCESS, "critical warnings may be enabled");
    let mut get = command(admin::GET_FEATURES, 0);
    get.cdw10 = U32::new(0x0B);
    assert_eq!(admin_queue.call(get, &[]).result.get(), 0xFF);
    let mut aer = command(admin::ASYNC_EVENT_REQUEST, 0);
    aer.command_id = zerocopy::little_endian::U16::new(0x5000);
    admin_queue.link.send(zerocopy::IntoBytes::as_bytes(&aer));
    assert!(admin_queue.link.responses.is_empty(), "held");
    // A change is still logged (log 04h), but raises no event the host did not enable.
    target.notify_namespace_changed(SUBSYSTEM, 1);
    admin_queue.link.queue.handle_timeout(Instant::now());
    admin_queue.link.run();
    assert!(admin_queue.link.responses.is_empty(), "still held");
    let (_, log) = admin_queue.get_log(0x04, 0, 4096);
    assert_eq!(le32(&log, 0), 1);
    let (_, log) = admin_queue.get_log(0x04, 0, 4096);
    assert_eq!(le32(&log, 0), 0, "cleared by reading");
}

#[test]
fn a_namespace_notice_is_masked_until_the_host_reads_the_changed_namespace_log() {
    let target = target();
    let mut admin_queue = TestHost::admin(&target);
    admin_queue.bring_up(SUBSYSTEM, HOST);
    let mut aec = command(admin::SET_FEATURES, 0);
    aec.cdw10 = U32::new(0x0B);
    aec.cdw11 = U32::new(1 << 8);
    assert_eq!(admin_queue.call(aec, &[]).status(), Status::SUCCESS);
    let post_aer = |host: &mut TestHost, id: u16| {
        let mut aer = command(admin::ASYNC_EVENT_REQUEST, 0);
        aer.command_id = zerocopy::little_endian::U16::new(id);
        host.link.send(zerocopy::IntoBytes::as_bytes(&aer));
    };
    let events = |host: &mut TestHost| {
        host.link.queue.handle_timeout(Instant::now());
        host.link.run();
        host.link.responses.drain(..).map(|c| (c.command_id.get(), c.result.get())).collect::<Vec<_>>()
    };
    post_aer(&mut admin_queue, 0x5000);
    post_aer(&mut admin_queue, 0x5001);
    target.notify_namespace_changed(SUBSYSTEM, 1);
    assert_eq!(events(&mut admin_queue), vec![(0x5001, 0x04_00_02)], "notice, namespace attribute changed, log 04h");
    target.notify_namespace_changed(SUBSYSTEM, 2);
    assert_eq!(events(&mut admin_queue), vec![], "masked until log 04h is read");
    let mut retain = command(admin::GET_LOG_PAGE, 0);
    retain.namespace_id = U32::new(u32::MAX);
    retain.cdw10 = U32::new(1 << 15 | (4096 / 4 - 1) << 16 | 0x04);
    let (_, log) = admin_queue.call_read(retain, 4096);
    assert_eq!((le32(&log, 0), le32(&log, 4)), (1, 2));
    target.notify_namespace_changed(SUBSYSTEM, 3);
    assert_eq!(events(&mut admin_queue), vec![], "reading with Retain Asynchronous Event keeps the mask");
    let (_, log) = admin_queue.get_log(0x04, 0, 4096);
    assert_eq!((le32(&log, 0), le32(&log, 4), le32(&log, 8), le32(&log, 12)), (1, 2, 3, 0));
    target.notify_namespace_changed(SUBSYSTEM, 4);
    assert_eq!(events(&mut admin_queue), vec![(0x5000, 0x04_00_02)], "read: the next change raises a notice again");
    let (_, log) = admin_queue.get_log(0x04, 0, 4096);
    assert_eq!((le32(&log, 0), le32(&log, 4)), (4, 0));
}
