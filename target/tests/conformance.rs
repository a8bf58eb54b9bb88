//! What a host reads from the target matches the NVMe Base 2.0 and NVM Command Set 1.0
//! specifications field by field: Identify, features, logs, registers and the statuses
//! of commands that are wrong. The guest's differential test holds the same answers
//! against the kernel target; these pin them without a guest.

mod common;

use common::*;
use p2ptgt::core::{Limits, Port, QueueConfig};
use p2ptgt::memory::Pools;
use p2ptgt::wire::command::admin;
use p2ptgt::wire::fabrics::property;
use p2ptgt::wire::{RawCommand, Status};
use zerocopy::little_endian::U32;

fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn features(fid: u8, select: u32, cdw11: u32) -> RawCommand {
    let mut get = command(admin::GET_FEATURES, 0);
    get.cdw10 = U32::new(u32::from(fid) | select << 8);
    get.cdw11 = U32::new(cdw11);
    get
}

fn set_features(fid: u8, cdw11: u32) -> RawCommand {
    let mut set = command(admin::SET_FEATURES, 0);
    set.cdw10 = U32::new(u32::from(fid));
    set.cdw11 = U32::new(cdw11);
    set
}

#[test]
fn identify_controller_advertises_what_the_target_does() {
    let target = target();
    let mut host = TestHost::admin(&target);
    host.bring_up(SUBSYSTEM, HOST);
    let (completion, page) = host.identify(1, 0);
    assert_eq!(completion.status(), Status::SUCCESS);
    assert_eq!(le32(&page, 96), 1 | 1 << 6, "CTRATT: 128-bit host identifier and traffic based keep alive; not FDPS");
    assert_eq!(le32(&page, 92), 1 << 8 | 1 << 11, "OAES: namespace attribute and ANA change notices");
    assert_eq!(page[525], 0, "VWC: the RAM namespace has no volatile cache");
    let (_, namespace) = host.identify(0, 1);
    assert_eq!(namespace[30], 1, "NMIC: shared, as CMIC and CNS 08h say");
    let (_, independent) = host.identify(8, 1);
    assert_eq!(independent[1], 1, "CNS 08h NMIC");
}

#[test]
fn discovery_identify_offers_only_the_discovery_log() {
    let target = target();
    let mut host = TestHost::admin(&target);
    host.bring_up(discovery(), HOST);
    let (_, page) = host.identify(1, 0);
    assert_eq!(page[260], 0, "FRMW: no firmware slot log");
    assert_eq!(page[261], 1 << 2, "LPA: extended data only");
    assert_eq!(le32(&page, 92), 1 << 31, "OAES: discovery log page change notices only");
    let (completion, _) = host.get_log(0x03, 0, 512);
    assert_eq!(completion.status(), Status::INVALID_LOG_PAGE.dnr());
}

#[test]
fn a_short_data_buffer_is_refused_not_truncated() {
    let target = target();
    let mut host = TestHost::admin(&target);
    host.bring_up(SUBSYSTEM, HOST);
    let mut identify = command(admin::IDENTIFY, 0);
    identify.cdw10 = U32::new(1);
    let (completion, page) = host.call_read(identify, 512);
    assert_eq!(completion.status(), Status::SGL_INVALID_DATA.dnr());
    assert!(page.iter().all(|&b| b == 0), "nothing written");
    // A Get Log Page whose buffer is smaller than NUMD.
    let mut log = command(admin::GET_LOG_PAGE, 0);
    log.cdw10 = U32::new(127 << 16 | 0x02);
    let (completion, _) = host.call_read(log, 256);
    assert_eq!(completion.status(), Status::SGL_INVALID_DATA.dnr());
}

#[test]
fn smart_log_is_per_namespace_or_whole_controller() {
    let mut live = live_queues(1 << 20);
    assert_eq!(live.io.write_blocks(0, pattern(1, 4096)).status(), Status::SUCCESS);
    let mut smart = |namespace_id: u32| {
        let mut log = command(admin::GET_LOG_PAGE, 0);
        log.namespace_id = U32::new(namespace_id);
        log.cdw10 = U32::new(127 << 16 | 0x02);
        let (completion, page) = live.admin.call_read(log, 512);
        (completion.status(), u128::from_le_bytes(page[80..96].try_into().unwrap()))
    };
    assert_eq!(smart(0), (Status::SUCCESS, 1), "NSID 0: the whole controller");
    assert_eq!(smart(u32::MAX), (Status::SUCCESS, 1), "NSID FFFFFFFFh: the whole controller");
    assert_eq!(smart(1), (Status::SUCCESS, 1), "namespace 1");
    assert_eq!(smart(7).0, Status::INVALID_NAMESPACE.dnr(), "no namespace 7");
}

#[test]
fn mandatory_features_read_back_what_was_set() {
    let target = target();
    let mut host = TestHost::admin(&target);
    host.bring_up(SUBSYSTEM, HOST);
    // Arbitration, Power Management, Temperature Threshold, Write Atomicity Normal.
    for (fid, value, cdw11) in [(0x01, 0x0302_0103, 0), (0x02, 0x20, 0), (0x04, 350, 0), (0x04, 1 << 20 | 260, 1 << 20), (0x0A, 1, 0)] {
        let default = host.call(features(fid, 1, cdw11), &[]);
        assert_eq!(default.status(), Status::SUCCESS, "feature {fid:#x} default");
        assert_eq!(host.call(set_features(fid, value), &[]).status(), Status::SUCCESS, "set {fid:#x}");
        let current = host.call(features(fid, 0, cdw11), &[]);
        assert_eq!(current.result.get(), value & if fid == 0x04 { 0xFFFF } else { u32::MAX }, "feature {fid:#x} current");
        let saved = host.call(features(fid, 2, cdw11), &[]);
        assert_eq!(saved.result.get(), default.result.get(), "feature {fid:#x}: nothing is saveable, saved reads the default");
        assert_eq!(host.call(features(fid, 3, cdw11), &[]).result.get(), 1 << 2, "feature {fid:#x}: changeable only");
    }
    assert_eq!(host.call(features(0x04, 0, 1 << 16), &[]).status(), Status::INVALID_FIELD.dnr(), "no temperature sensor 1");
    assert_eq!(host.call(set_features(0x02, 1), &[]).status(), Status::INVALID_FIELD.dnr(), "one power state only");
    assert_eq!(host.call(features(0x01, 4, 0), &[]).status(), Status::INVALID_FIELD.dnr(), "SEL 100b is reserved");
}

#[test]
fn features_the_controller_cannot_honour_are_refused() {
    let mut live = live_queues(1 << 20);
    // No namespace has a volatile write cache: feature 06h does not exist.
    assert_eq!(live.admin.call(set_features(0x06, 1), &[]).status(), Status::INVALID_FIELD.dnr());
    assert_eq!(live.admin.call(features(0x06, 0, 0), &[]).status(), Status::INVALID_FIELD.dnr());
    // Async Event Configuration bits beyond the critical warnings and OAES.
    assert_eq!(live.admin.call(set_features(0x0B, 1 << 9), &[]).status(), Status::INVALID_FIELD.dnr());
    // Number of Queues once an I/O queue exists.
    assert_eq!(live.admin.call(set_features(0x07, 3 | 3 << 16), &[]).status(), Status::COMMAND_SEQUENCE_ERROR.dnr());
}

#[test]
fn registers_of_a_two_point_zero_controller() {
    let target = target();
    let mut host = TestHost::admin(&target);
    host.bring_up(SUBSYSTEM, HOST);
    let cap = host.property_get(property::CAP, true);
    let cap = u64::from(cap.result.get()) | u64::from(cap.result_upper.get()) << 32;
    assert_eq!(cap >> 59 & 1, 1, "CAP.CRMS.CRWMS");
    assert_eq!(cap >> 37 & 0xFF, 1, "CAP.CSS: the NVM command set only");
    let crto = u64::from(host.property_get(property::CRTO, false).result.get());
    assert_eq!(crto & 0xFFFF, cap >> 24 & 0xFF, "CRTO.CRWMT equals CAP.TO");
}

#[test]
fn enabling_with_a_command_set_cap_does_not_offer_is_fatal() {
    let target = target();
    let mut host = TestHost::admin(&target);
    assert_eq!(host.connect(SUBSYSTEM, HOST, 0, 0xFFFF, 31, false).status(), Status::SUCCESS);
    // CC.CSS 110b (all I/O command sets) while CAP.CSS bit 6 is clear.
    let cc = 4 << 20 | 6 << 16 | 6 << 4;
    assert_eq!(host.property_set(property::CC, cc | 1).status(), Status::SUCCESS);
    let csts = host.property_get(property::CSTS, false).result.get();
    assert_eq!(csts & 0b11, 0b10, "CSTS.CFS set, RDY clear");
}

#[test]
fn discovery_reports_the_address_reached_not_a_wildcard() {
    let port = Port::new(1, "0.0.0.0", "4420", false);
    let target = target_on(port, vec![memory_namespace(1, NAMESPACE_BYTES)], Vec::new(), Limits::default());
    let pools = Pools::host_only(8 << 20).unwrap();
    let config = QueueConfig { queue_id: 0, entries: 32, local_address: Some("192.0.2.7".parse().unwrap()), port_id: 1 };
    let mut host = TestHost::with_config(&target, &pools, config);
    host.bring_up(discovery(), HOST);
    let (completion, log) = host.get_log(0x70, 0, 4096);
    assert_eq!(completion.status(), Status::SUCCESS);
    let traddr = &log[1024 + 512..1024 + 512 + 9];
    assert_eq!(traddr, b"192.0.2.7");
    assert_eq!(le16(&log, 1024 + 4), 1, "PORTID");
}

#[test]
fn controllers_take_ids_from_their_subsystems_range() {
    use p2ptgt::core::{Subsystem, Target};
    let hosts = p2ptgt::core::HostAccess { allow_any_host: true, ..Default::default() };
    let mut subsystem = Subsystem::new(SUBSYSTEM, hosts, [memory_namespace(1, NAMESPACE_BYTES)]);
    subsystem.serial = "s".into();
    subsystem.model = "m".into();
    subsystem.firmware = "f".into();
    subsystem.ieee_oui = 0x001b21;
    subsystem.controller_ids = 10..=11;
    let port = Port::new(1, "192.0.2.1", "4420", false);
    let target = std::sync::Arc::new(Target::new(vec![subsystem], port, Limits::default()));
    let mut hosts: Vec<TestHost> = (0..3).map(|_| TestHost::admin(&target)).collect();
    let ids: Vec<_> = hosts.iter_mut().map(|h| h.connect(SUBSYSTEM, HOST, 0, 0xFFFF, 31, false)).map(|c| (c.status(), c.result.get())).collect();
    assert_eq!(ids[0], (Status::SUCCESS, 10));
    assert_eq!(ids[1], (Status::SUCCESS, 11));
    assert_eq!(ids[2].0, Status::CONNECT_CONTROLLER_BUSY.dnr(), "the range is used up");
    let mut discovery_host = TestHost::admin(&target);
    assert_eq!(discovery_host.connect(discovery(), HOST, 0, 0xFFFF, 31, false).result.get(), 12, "discovery takes the default range");
    let cc = 4 << 20 | 6 << 16;
    hosts[0].property_set(property::CC, cc);
    hosts[0].property_set(property::CC, cc | 1);
    let (_, page) = hosts[0].identify(1, 0);
    assert_eq!(&page[73..76], &[0x21, 0x1b, 0x00], "IEEE OUI, least significant byte first");
    assert_eq!(&page[64..65], b"f");
}

#[test]
fn failed_commands_set_more_and_fill_the_error_log() {
    let mut live = live_queues(1 << 20);
    let blocks = (NAMESPACE_BYTES / 512) as u64;
    let (read, _) = live.io.read_blocks(blocks, 1);
    assert_eq!(read.status(), Status::LBA_RANGE.dnr());
    assert!(read.more(), "More: the error log has an entry");
    let (ok, _) = live.io.read_blocks(0, 1);
    assert!(!ok.more());
    let failed = live.admin.call(features(0x00, 0, 0), &[]);
    assert_eq!(failed.status(), Status::INVALID_FIELD.dnr());
    let (_, identify) = live.admin.identify(1, 0);
    assert_eq!(identify[262], 127, "ELPE: 128 entries");
    let (completion, log) = live.admin.get_log(0x01, 0, 2 * 64);
    assert_eq!(completion.status(), Status::SUCCESS);
    let entry = |n: usize| &log[n * 64..n * 64 + 64];
    assert_eq!(u64::from_le_bytes(entry(0)[0..8].try_into().unwrap()), 2, "newest first");
    assert_eq!(le16(entry(0), 8), 0, "admin queue");
    assert_eq!(le16(entry(0), 12) >> 1 & 0x7FF, 0x002, "Invalid Field");
    assert_eq!(u64::from_le_bytes(entry(1)[0..8].try_into().unwrap()), 1);
    assert_eq!(le16(entry(1), 8), 1, "I/O queue 1");
    assert_eq!(le16(entry(1), 10), read.command_id.get());
    assert_eq!(u64::from_le_bytes(entry(1)[16..24].try_into().unwrap()), blocks, "the LBA");
    let (_, smart) = live.admin.get_log(0x02, 0, 512);
    assert_eq!(u128::from_le_bytes(smart[176..192].try_into().unwrap()), 2, "SMART: error log entries");
}
