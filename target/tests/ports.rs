//! What each port serves, through the loopback transport: the discovery log of a port
//! lists the subsystems linked to it and its referrals; a Connect through a port that
//! does not serve the subsystem is refused as nvmet refuses it; a port serving every
//! subsystem (the command line's model) serves those added later too.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use p2ptgt::core::{HostAccess, Limits, Port, PortSubsystems, QueueConfig, Referral, Subsystem, Target};
use p2ptgt::memory::Pools;
use p2ptgt::wire::command::admin;
use p2ptgt::wire::discovery::{SecureChannel, TransportType};
use p2ptgt::wire::Status;
use zerocopy::little_endian::{U16, U32};

const FIRST: &str = "nqn.2026-11.io.p2ptgt:first";
const SECOND: &str = "nqn.2026-11.io.p2ptgt:second";
/// Connect Invalid Parameters location of SUBNQN: IATTR set (Connect data), IPO 256.
const AT_SUBSYSTEM_NQN: u32 = 1 << 16 | 256;
const DISCOVERY_CHANGED: u32 = 0x70_F0_02;

fn subsystem(nqn: &str) -> Subsystem {
    let hosts = HostAccess { allow_any_host: true, ..Default::default() };
    let mut subsystem = Subsystem::new(nqn, hosts, [memory_namespace(1, 1 << 20)]);
    subsystem.serial = "ports".into();
    subsystem
}

fn rdma_referral() -> Referral {
    Referral {
        port_id: 7,
        transport: TransportType::Rdma,
        ipv6: false,
        address: "192.0.2.50".into(),
        service_id: "4420".into(),
        secure_channel: SecureChannel::NotSpecified,
    }
}

fn tcp_referral() -> Referral {
    Referral {
        port_id: 0x0203,
        transport: TransportType::Tcp,
        ipv6: true,
        address: "2001:db8::50".into(),
        service_id: "8009".into(),
        secure_channel: SecureChannel::Required,
    }
}

/// Port 1 (4420) serves FIRST and refers to two discovery services; port 2 (4421)
/// serves SECOND.
fn linked_target() -> Arc<Target> {
    let one = Port { subsystems: PortSubsystems::Linked(vec![FIRST.into()]), referrals: vec![rdma_referral(), tcp_referral()], ..Port::new(1, "192.0.2.1", "4420", false) };
    let two = Port { subsystems: PortSubsystems::Linked(vec![SECOND.into()]), ..Port::new(2, "192.0.2.1", "4421", false) };
    let target = Arc::new(Target::new(vec![subsystem(FIRST), subsystem(SECOND)], one, Limits::default()));
    target.add_port(two).unwrap();
    target
}

/// Both subsystems on ports 1 and 2, each serving every subsystem.
fn command_line_target() -> Arc<Target> {
    let target = Arc::new(Target::new(vec![subsystem(FIRST), subsystem(SECOND)], Port::new(1, "192.0.2.1", "4420", false), Limits::default()));
    target.add_port(Port::new(2, "192.0.2.1", "4421", false)).unwrap();
    target
}

/// A queue through port `port_id`.
fn host_on(target: &Arc<Target>, port_id: u16, queue_id: u16) -> TestHost {
    let pools = Pools::host_only(1 << 20).unwrap();
    TestHost::with_config(target, &pools, QueueConfig { queue_id, entries: 32, local_address: None, port_id })
}

/// The discovery log as the host reads it through port `port_id`.
fn discovery_log(target: &Arc<Target>, port_id: u16) -> Vec<u8> {
    let mut host = host_on(target, port_id, 0);
    host.bring_up(discovery(), HOST);
    let (completion, log) = host.get_log(0x70, 0, 8192);
    assert_eq!(completion.status(), Status::SUCCESS);
    log
}

fn records(log: &[u8]) -> usize {
    u64::from_le_bytes(log[8..16].try_into().unwrap()) as usize
}

fn entry(log: &[u8], index: usize) -> &[u8] {
    &log[1024 * (index + 1)..1024 * (index + 2)]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end_matches(['\0', ' ']).to_string()
}

fn subsystem_nqn(entry: &[u8]) -> String {
    text(&entry[256..512])
}

#[test]
fn discovery_on_each_port_lists_its_own_subsystems_then_its_referrals() {
    let target = linked_target();
    let log = discovery_log(&target, 1);
    assert_eq!(records(&log), 4, "itself, FIRST, two referrals");
    assert_eq!((entry(&log, 0)[2], subsystem_nqn(entry(&log, 0))), (3, discovery().to_string()));
    assert_eq!((entry(&log, 1)[2], subsystem_nqn(entry(&log, 1))), (2, FIRST.to_string()));

    let rdma = entry(&log, 2);
    assert_eq!(&rdma[0..4], &[1, 1, 1, 0], "TRTYPE RDMA, ADRFAM IPv4, SUBTYPE referral, TREQ not specified");
    assert_eq!(&rdma[4..10], &[7, 0, 0xFF, 0xFF, 32, 0], "the referral's PORTID, CNTLID FFFFh, ASQSZ 32");
    assert_eq!(text(&rdma[32..64]), "4420");
    assert_eq!(subsystem_nqn(rdma), discovery());
    assert_eq!(text(&rdma[512..768]), "192.0.2.50", "the referral's address, not the port's");
    assert_eq!(&rdma[768..771], &[1, 1, 1], "TSAS for RDMA");

    let tcp = entry(&log, 3);
    assert_eq!(&tcp[0..6], &[3, 2, 1, 1, 0x03, 0x02], "TRTYPE TCP, ADRFAM IPv6, referral, TREQ required, PORTID 0203h");
    assert_eq!((text(&tcp[32..64]), text(&tcp[512..768])), ("8009".to_string(), "2001:db8::50".to_string()));
    assert_eq!(subsystem_nqn(tcp), discovery());
    assert!(tcp[768..].iter().all(|&b| b == 0), "TSAS for TCP: no security");

    let log = discovery_log(&target, 2);
    assert_eq!(records(&log), 2, "itself and SECOND: no referrals on port 2");
    assert_eq!(subsystem_nqn(entry(&log, 1)), SECOND);
    assert_eq!(u16::from_le_bytes([entry(&log, 1)[4], entry(&log, 1)[5]]), 2);
}

#[test]
fn a_connect_through_a_port_that_does_not_serve_the_subsystem_is_refused_at_subnqn() {
    let target = linked_target();
    let mut refused = host_on(&target, 1, 0);
    let completion = refused.connect(SECOND, HOST, 0, 0xFFFF, 31, false);
    assert_eq!((completion.status(), completion.result.get()), (Status::CONNECT_INVALID_PARAMETER.dnr(), AT_SUBSYSTEM_NQN), "as for a subsystem that does not exist");
    let mut unknown = host_on(&target, 1, 0);
    let completion = unknown.connect("nqn.2026-11.io.p2ptgt:nowhere", HOST, 0, 0xFFFF, 31, false);
    assert_eq!((completion.status(), completion.result.get()), (Status::CONNECT_INVALID_PARAMETER.dnr(), AT_SUBSYSTEM_NQN));

    let mut admin = host_on(&target, 1, 0);
    let controller_id = admin.bring_up(FIRST, HOST);
    let mut elsewhere = host_on(&target, 2, 1);
    let completion = elsewhere.connect(FIRST, HOST, 1, controller_id, 31, false);
    assert_eq!((completion.status(), completion.result.get()), (Status::CONNECT_INVALID_PARAMETER.dnr(), AT_SUBSYSTEM_NQN), "an I/O queue through port 2");
    let mut io = host_on(&target, 1, 1);
    assert_eq!(io.connect(FIRST, HOST, 1, controller_id, 31, false).status(), Status::SUCCESS, "through port 1");
    assert_eq!(io.read_blocks(0, 1).0.status(), Status::SUCCESS);

    let mut on_two = host_on(&target, 2, 0);
    assert_eq!(on_two.connect(FIRST, HOST, 0, 0xFFFF, 31, false).status(), Status::CONNECT_INVALID_PARAMETER.dnr());
    let mut on_two = host_on(&target, 2, 0);
    assert_eq!(on_two.connect(SECOND, HOST, 0, 0xFFFF, 31, false).status(), Status::SUCCESS);
}

#[test]
fn a_port_on_which_nothing_listens_any_more_serves_nothing() {
    let target = linked_target();
    target.remove_port(2);
    let mut host = host_on(&target, 2, 0);
    assert_eq!(host.connect(SECOND, HOST, 0, 0xFFFF, 31, false).status(), Status::CONNECT_INVALID_PARAMETER.dnr());
}

/// A discovery controller through `port_id` with discovery notices on and an
/// Asynchronous Event Request outstanding.
fn listening_discovery(target: &Arc<Target>, port_id: u16) -> TestHost {
    let mut host = host_on(target, port_id, 0);
    host.bring_up(discovery(), HOST);
    let mut aec = command(admin::SET_FEATURES, 0);
    aec.cdw10 = U32::new(0x0B);
    aec.cdw11 = U32::new(1 << 31);
    assert_eq!(host.call(aec, &[]).status(), Status::SUCCESS);
    host.get_log(0x70, 0, 4096);
    let mut aer = command(admin::ASYNC_EVENT_REQUEST, 0);
    aer.command_id = U16::new(0x7000);
    host.link.send(zerocopy::IntoBytes::as_bytes(&aer));
    host
}

fn events(host: &mut TestHost) -> Vec<u32> {
    host.link.queue.handle_timeout(Instant::now());
    host.link.run();
    host.link.responses.drain(..).filter(|c| c.command_id.get() == 0x7000).map(|c| c.result.get()).collect()
}

#[test]
fn unlinking_tears_down_the_port_s_controllers_of_that_subsystem_and_tells_its_discovery() {
    let target = linked_target();
    let mut watching_one = listening_discovery(&target, 1);
    let mut watching_two = listening_discovery(&target, 2);
    let mut admin = host_on(&target, 1, 0);
    admin.bring_up(FIRST, HOST);
    let generation = target.discovery_generation();

    assert!(target.set_port_subsystems(1, PortSubsystems::Linked(vec![SECOND.into()])));
    assert!(target.discovery_generation() > generation);
    assert_eq!(events(&mut watching_one), vec![DISCOVERY_CHANGED]);
    assert!(events(&mut watching_two).is_empty(), "port 2's log did not change");
    admin.link.queue.handle_timeout(Instant::now());
    admin.link.run();
    assert!(admin.link.disconnected.is_some(), "FIRST's controller through port 1 is torn down, as nvmet drops a link");
    assert_eq!(subsystem_nqn(entry(&discovery_log(&target, 1), 1)), SECOND);

    assert!(!target.set_port_subsystems(1, PortSubsystems::Linked(vec![SECOND.into(), "nqn.2026-11.io.p2ptgt:later".into()])), "a link to a name not served changes nothing yet");
    assert!(target.set_port_referrals(1, vec![rdma_referral()]), "one referral fewer");
    assert_eq!(records(&discovery_log(&target, 1)), 3, "itself, SECOND, one referral");
    assert!(!target.set_port_referrals(1, vec![rdma_referral()]), "the same referrals again are no change");
}

#[test]
fn referral_changes_tell_the_port_s_discovery_controllers() {
    let target = linked_target();
    let mut watching = listening_discovery(&target, 2);
    assert!(target.set_port_referrals(2, vec![tcp_referral()]));
    assert_eq!(events(&mut watching), vec![DISCOVERY_CHANGED]);
    let log = discovery_log(&target, 2);
    assert_eq!(records(&log), 3);
    assert_eq!(entry(&log, 2)[2], 1, "a referral");
}

#[test]
fn a_command_line_target_serves_every_subsystem_on_every_port() {
    let target = command_line_target();
    for port_id in [1, 2] {
        let log = discovery_log(&target, port_id);
        let listed: Vec<String> = (1..records(&log)).map(|i| subsystem_nqn(entry(&log, i))).collect();
        assert_eq!(listed, [FIRST, SECOND], "port {port_id}");
        for nqn in [FIRST, SECOND] {
            let mut admin = host_on(&target, port_id, 0);
            let controller_id = admin.bring_up(nqn, HOST);
            let mut io = host_on(&target, port_id, 1);
            assert_eq!(io.connect(nqn, HOST, 1, controller_id, 31, false).status(), Status::SUCCESS, "{nqn} on port {port_id}");
        }
    }
    const LATER: &str = "nqn.2026-11.io.p2ptgt:later";
    target.add_subsystem(subsystem(LATER)).unwrap();
    let log = discovery_log(&target, 2);
    assert_eq!(subsystem_nqn(entry(&log, 3)), LATER, "a subsystem added later is served on every port too");
    let mut admin = host_on(&target, 2, 0);
    admin.bring_up(LATER, HOST);
}
