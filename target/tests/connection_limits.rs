//! What a peer may hold: a connection must send a valid Connect in time, and a host
//! NQN has a bounded number of controllers and queues.

mod common;

use std::time::{Duration, Instant};

use common::*;
use p2ptgt::core::{DisconnectReason, Limits};
use p2ptgt::memory::Pools;
use p2ptgt::wire::Status;

#[test]
fn a_connection_without_connect_closes_at_the_deadline() {
    let target = target();
    let pools = Pools::host_only(1 << 20).unwrap();
    let mut idle = TestHost::new(&target, &pools, 1, 32);
    let accepted = Instant::now();
    idle.link.queue.arm_connect_deadline(accepted);
    let deadline = idle.link.queue.poll_timeout().expect("the deadline is a timeout to wait for");
    assert_eq!(deadline, accepted + Limits::default().connect_timeout);
    idle.link.queue.handle_timeout(deadline - Duration::from_millis(1));
    idle.link.run();
    assert!(idle.link.disconnected.is_none(), "not before the deadline");
    idle.link.queue.handle_timeout(deadline);
    idle.link.run();
    assert_eq!(idle.link.disconnected, Some(DisconnectReason::NoConnect));
}

#[test]
fn a_connection_that_connects_in_time_keeps_no_deadline() {
    let target = target();
    let pools = Pools::host_only(1 << 20).unwrap();
    let mut admin = TestHost::new(&target, &pools, 0, 32);
    admin.link.queue.arm_connect_deadline(Instant::now());
    admin.bring_up(SUBSYSTEM, HOST);
    // Keep-alive (KATO 5 s) is what the queue waits for now, not the Connect deadline.
    admin.link.queue.handle_timeout(Instant::now() + Limits::default().connect_timeout);
    admin.link.run();
    assert!(admin.link.disconnected.is_none());
}

fn limited(limits: Limits) -> std::sync::Arc<p2ptgt::core::Target> {
    target_with(vec![memory_namespace(1, NAMESPACE_BYTES)], Vec::new(), limits)
}

#[test]
fn a_host_gets_its_maximum_of_queues_and_no_more() {
    let target = limited(Limits { queues_per_host_max: 3, ..Limits::default() });
    let pools = Pools::host_only(1 << 20).unwrap();
    let mut admin = TestHost::new(&target, &pools, 0, 32);
    let controller_id = admin.bring_up(SUBSYSTEM, HOST);
    let mut first = TestHost::new(&target, &pools, 1, 32);
    let mut second = TestHost::new(&target, &pools, 2, 32);
    let mut third = TestHost::new(&target, &pools, 3, 32);
    assert_eq!(first.connect(SUBSYSTEM, HOST, 1, controller_id, 31, true).status(), Status::SUCCESS);
    assert_eq!(second.connect(SUBSYSTEM, HOST, 2, controller_id, 31, true).status(), Status::SUCCESS);
    assert_eq!(third.connect(SUBSYSTEM, HOST, 3, controller_id, 31, true).status(), Status::CONNECT_CONTROLLER_BUSY.dnr());
    // Another host is not counted against this one.
    let other = "nqn.2014-08.org.nvmexpress:uuid:host-b";
    let mut other_admin = TestHost::new(&target, &pools, 0, 32);
    assert_eq!(other_admin.connect(SUBSYSTEM, other, 0, 0xFFFF, 31, false).status(), Status::SUCCESS);
    // A queue that goes gives its place back; the first ones keep working.
    first.link.queue.handle_close();
    let mut again = TestHost::new(&target, &pools, 3, 32);
    assert_eq!(again.connect(SUBSYSTEM, HOST, 3, controller_id, 31, true).status(), Status::SUCCESS);
    assert_eq!(second.read_blocks(0, 1).0.status(), Status::SUCCESS);
}

#[test]
fn a_host_gets_its_maximum_of_controllers_and_no_more() {
    let target = limited(Limits { controllers_per_host_max: 2, ..Limits::default() });
    let pools = Pools::host_only(1 << 20).unwrap();
    let mut admins: Vec<TestHost> = (0..3).map(|_| TestHost::new(&target, &pools, 0, 32)).collect();
    let statuses: Vec<Status> = admins.iter_mut().map(|a| a.connect(SUBSYSTEM, HOST, 0, 0xFFFF, 31, false).status()).collect();
    assert_eq!(statuses, [Status::SUCCESS, Status::SUCCESS, Status::CONNECT_CONTROLLER_BUSY.dnr()]);
    admins[0].link.queue.handle_close();
    let mut later = TestHost::new(&target, &pools, 0, 32);
    assert_eq!(later.connect(SUBSYSTEM, HOST, 0, 0xFFFF, 31, false).status(), Status::SUCCESS);
}
