//! Asymmetric Namespace Access through the loopback transport: one subsystem reached
//! through two ports, its ANA group's state set per port, what each controller reports
//! (Identify, log 0Ch), the path status I/O gets, and the ANA Change notice.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use p2ptgt::core::{Port, QueueConfig, Target};
use p2ptgt::memory::Pools;
use p2ptgt::wire::ana::AnaState;
use p2ptgt::wire::command::admin;
use p2ptgt::wire::Status;
use zerocopy::little_endian::{U16, U32};

/// The test target, listening on a second port (4421) too.
fn two_port_target() -> Arc<Target> {
    let target = target();
    target.add_port(Port::new(2, "192.0.2.1", "4421", false)).unwrap();
    target
}

struct Path {
    admin: TestHost,
    io: TestHost,
}

/// A controller connected through port `port_id`, with I/O queue 1.
fn path(target: &Arc<Target>, port_id: u16) -> Path {
    let pools = Pools::host_only(1 << 20).unwrap();
    let config = |queue_id, entries| QueueConfig { queue_id, entries, local_address: None, port_id };
    let mut admin = TestHost::with_config(target, &pools, config(0, 32));
    let controller_id = admin.bring_up(SUBSYSTEM, HOST);
    let mut io = TestHost::with_config(target, &pools, config(1, 32));
    assert_eq!(io.connect(SUBSYSTEM, HOST, 1, controller_id, 31, false).status(), Status::SUCCESS);
    Path { admin, io }
}

/// Log 0Ch: change count, then each group as (ID, state, NSIDs).
fn ana_log(admin: &mut TestHost) -> (u64, Vec<(u32, u8, Vec<u32>)>) {
    let (completion, log) = admin.get_log(0x0C, 0, 4096);
    assert_eq!(completion.status(), Status::SUCCESS);
    let word = |at: usize| u32::from_le_bytes(log[at..at + 4].try_into().unwrap());
    let mut groups = Vec::new();
    let mut at = 16;
    for _ in 0..u16::from_le_bytes([log[8], log[9]]) {
        let count = word(at + 4) as usize;
        groups.push((word(at), log[at + 16], (0..count).map(|i| word(at + 32 + 4 * i)).collect()));
        at += 32 + 4 * count;
    }
    (u64::from_le_bytes(log[0..8].try_into().unwrap()), groups)
}

fn post_event_request(admin: &mut TestHost) {
    let mut aer = command(admin::ASYNC_EVENT_REQUEST, 0);
    aer.command_id = U16::new(0x7000);
    admin.link.send(zerocopy::IntoBytes::as_bytes(&aer));
}

fn events(admin: &mut TestHost) -> Vec<u32> {
    admin.link.queue.handle_timeout(Instant::now());
    admin.link.run();
    admin.link.responses.drain(..).filter(|c| c.command_id.get() == 0x7000).map(|c| c.result.get()).collect()
}

fn enable_ana_notices(admin: &mut TestHost) {
    let mut set = command(admin::SET_FEATURES, 0);
    set.cdw10 = U32::new(0x0B);
    set.cdw11 = U32::new(1 << 11);
    assert_eq!(admin.call(set, &[]).status(), Status::SUCCESS);
}

#[test]
fn a_group_inaccessible_on_one_port_fails_io_there_with_the_path_status_only() {
    let target = two_port_target();
    let mut one = path(&target, 1);
    let mut two = path(&target, 2);
    let (_, identity) = one.admin.identify(0, 1);
    assert_eq!(&identity[92..96], &1u32.to_le_bytes(), "ANAGRPID 1");
    assert_eq!(ana_log(&mut one.admin), (0, vec![(1, 0x01, vec![1])]), "group 1 optimized, NSID 1 in it");
    enable_ana_notices(&mut one.admin);
    post_event_request(&mut one.admin);
    post_event_request(&mut two.admin);
    assert!(target.set_ana_state(1, 1, AnaState::Inaccessible));
    assert_eq!(one.io.read_blocks(0, 1).0.status(), Status::ANA_INACCESSIBLE, "path status, no DNR");
    assert!(!Status::ANA_INACCESSIBLE.is_dnr());
    assert_eq!(two.io.write_blocks(0, vec![7; 512]).status(), Status::SUCCESS, "the other port's path works");
    assert_eq!(events(&mut one.admin), vec![0x000C_0302], "ANA Change notice, log 0Ch");
    assert!(events(&mut two.admin).is_empty(), "nothing changed on port 2");
    assert_eq!(ana_log(&mut one.admin), (1, vec![(1, 0x03, vec![1])]));
    assert_eq!(ana_log(&mut two.admin), (1, vec![(1, 0x01, vec![1])]), "the change count is the subsystem's");
    for (state, status) in [(AnaState::PersistentLoss, Status::ANA_PERSISTENT_LOSS), (AnaState::Change, Status::ANA_TRANSITION)] {
        target.set_ana_state(1, 1, state);
        assert_eq!(one.io.read_blocks(0, 1).0.status(), status);
    }
    target.set_ana_state(1, 1, AnaState::NonOptimized);
    let (completion, data) = one.io.read_blocks(0, 1);
    assert_eq!((completion.status(), data), (Status::SUCCESS, vec![7; 512]), "non-optimized serves I/O");
    post_event_request(&mut one.admin);
    assert_eq!(events(&mut one.admin), vec![0x000C_0302], "the log was read: the next change is told");
    assert!(!target.set_ana_state(1, 1, AnaState::NonOptimized), "the same state again is no change");
}

#[test]
fn a_group_without_a_state_on_a_port_is_inaccessible_there_and_rgo_leaves_out_nsids() {
    let target = two_port_target();
    let mut one = path(&target, 1);
    target.set_ana_state(2, 5, AnaState::Optimized);
    let (count, groups) = ana_log(&mut one.admin);
    assert_eq!(count, 1);
    assert_eq!(groups, vec![(1, 0x01, vec![1]), (5, 0x03, vec![])], "group 5 has a state on port 2 only");
    let mut rgo = command(admin::GET_LOG_PAGE, 0);
    rgo.namespace_id = U32::new(u32::MAX);
    rgo.cdw10 = U32::new((4096 / 4 - 1) << 16 | 1 << 8 | 0x0C);
    let (completion, log) = one.admin.call_read(rgo, 4096);
    assert_eq!(completion.status(), Status::SUCCESS);
    assert_eq!(&log[20..24], &[0; 4], "Return Groups Only: no NSIDs");
    let (_, identity) = one.admin.identify(1, 0);
    assert_eq!(identity[76] & 0b1011, 0b1011, "CMIC: multi-port, multi-controller, ANA reporting");
}
