//! Every data buffer has one owner at a time, under any interleaving of capsules, NIC
//! and backend completions, flushes and closes, across queues that share one pool; and
//! a request waiting for a buffer is served in its turn whichever queue frees one.

mod common;

use std::time::Instant;

use common::*;
use p2ptgt::core::Limits;
use p2ptgt::memory::Pools;
use p2ptgt::wire::command::io;
use p2ptgt::wire::fabrics::property;
use p2ptgt::wire::sgl::RawSglDescriptor;
use p2ptgt::wire::{Completion, Status};
use proptest::prelude::*;
use zerocopy::little_endian::U16;
use zerocopy::IntoBytes;

const BLOCK: usize = 512;

/// A controller with `queues` I/O queues (ids 1..) over `pools`, all connected, then
/// holding their completions until a test releases them.
struct Bed {
    target: std::sync::Arc<p2ptgt::core::Target>,
    pools: Pools,
    admin: TestHost,
    queues: Vec<TestHost>,
    next_id: u16,
}

fn bed(queues: u16, pool_bytes: usize) -> Bed {
    let target = target();
    let pools = Pools::host_only(pool_bytes).unwrap();
    let mut admin = TestHost::new(&target, &pools, 0, 32);
    let controller_id = admin.bring_up(SUBSYSTEM, HOST);
    let queues = (1..=queues)
        .map(|queue_id| {
            let mut host = TestHost::new(&target, &pools, queue_id, 32);
            assert_eq!(host.connect(SUBSYSTEM, HOST, queue_id, controller_id, 31, true).status(), Status::SUCCESS);
            host.link.hold = true;
            host
        })
        .collect();
    Bed { target, pools, admin, queues, next_id: 1000 }
}

impl Bed {
    fn id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Delivers a write of `blocks` at `lba` to queue `q`: its data in the capsule, or
    /// behind a keyed SGL. Returns the command id.
    fn write(&mut self, q: usize, lba: u64, blocks: u32, in_capsule: bool) -> u16 {
        let id = self.id();
        let host = &mut self.queues[q];
        let mut cmd = host.rw(io::WRITE, lba, blocks);
        cmd.command_id = U16::new(id);
        let data = pattern(id as u8, blocks as usize * BLOCK);
        let capsule = host.capsule(cmd, data, in_capsule);
        host.link.deliver(&capsule);
        self.run_all();
        id
    }

    fn read(&mut self, q: usize, lba: u64, blocks: u32) -> u16 {
        let id = self.id();
        let host = &mut self.queues[q];
        let mut cmd = host.rw(io::READ, lba, blocks);
        cmd.command_id = U16::new(id);
        cmd.data_pointer = RawSglDescriptor::keyed(host.link.register(vec![0; blocks as usize * BLOCK], true));
        host.link.deliver(cmd.as_bytes());
        self.run_all();
        id
    }

    /// Every queue's transport takes its actions and grants, as each queue thread does
    /// when the pool wakes it.
    fn run_all(&mut self) {
        for host in &mut self.queues {
            host.link.run();
        }
    }

    /// Pool pages in use, and pool pages the loopbacks hold: equal when every page has
    /// exactly one owner (a page with two owners would count twice in the second).
    fn pages(&self) -> (u64, u64) {
        let in_use = self.pools.all().map(|(_, pool)| pool.stats().in_use_bytes).sum();
        let held = self.queues.iter().map(|host| host.link.held_lease_bytes()).sum::<u64>() + self.admin.link.held_lease_bytes();
        (in_use, held)
    }

    fn responses(&mut self, q: usize) -> Vec<Completion> {
        self.queues[q].link.responses.drain(..).collect()
    }
}

/// Closing a queue while an in-capsule write (data in a lent receive slot) is on the
/// backend, a keyed write's READ is out and a read's data is with the backend: nothing
/// goes back to the pool until its holder lets go, the lent slot never enters the pool,
/// and the pool is whole once the backend reports.
#[test]
fn close_with_lent_in_capsule_write_on_the_backend() {
    let mut bed = bed(1, 1 << 20);
    bed.write(0, 0, 8, true);
    bed.write(0, 64, 8, false);
    bed.read(0, 128, 8);
    let (fetches, backend, sends) = bed.queues[0].link.held();
    assert_eq!((fetches, backend, sends), (1, 2, 0));
    assert_eq!(bed.queues[0].link.lent_outstanding(), 1, "the in-capsule write holds its slot");
    let (in_use, held) = bed.pages();
    assert_eq!(in_use, held);
    assert_eq!(in_use, 2 * 4096, "the keyed write's and the read's leases; the slot is not pool memory");

    bed.queues[0].link.queue.handle_close();
    // The NIC has not flushed the READ yet, nor the backend finished: still held.
    assert_eq!(bed.pages(), (2 * 4096, 2 * 4096), "nothing returned while its holder has it");
    bed.queues[0].link.close();
    assert_eq!(bed.pages(), (4096, 4096), "the flushed READ's lease is back; the read's is with the backend");
    while bed.queues[0].link.complete_backend() {}
    assert_eq!(bed.pages(), (0, 0), "pool whole once the backend let go");
    drop(bed.queues.pop());
    assert_eq!(bed.pools.host.stats().in_use_bytes, 0);
}

/// Responses out when the connection closes keep their pushed buffers until the flush.
#[test]
fn close_while_responding_keeps_pushed_data_until_the_flush() {
    let mut bed = bed(1, 1 << 20);
    bed.read(0, 0, 16);
    assert!(bed.queues[0].link.complete_backend());
    assert_eq!(bed.queues[0].link.held().2, 1, "the response (with its pushed data) is out");
    bed.queues[0].link.queue.handle_close();
    assert_eq!(bed.pages(), (8192, 8192));
    bed.queues[0].link.close();
    assert_eq!(bed.pages(), (0, 0));
}

/// Two queues, a pool of two buffers. Queue 0 keeps many writes in line; queue 1 has
/// one, and no release of its own to wake it. It is served in its turn: after at most
/// the requests that were ahead of it in line.
#[test]
fn a_shallow_queue_is_served_in_its_turn_beside_a_deep_one() {
    let mut bed = bed(2, 256 * 1024);
    let blocks = 256;
    for i in 0..6 {
        bed.write(0, i * 256, blocks, false);
    }
    let shallow = bed.write(1, 8000, blocks, false);
    assert_eq!(bed.queues[1].link.held(), (0, 0, 0), "queue 1 waits for a buffer");
    let mut deep_done = 0;
    let mut next_lba = 6 * 256;
    while bed.queues[1].link.responses.is_empty() {
        assert!(deep_done <= 6, "queue 1 still waits after {deep_done} of queue 0's writes completed");
        // Queue 0's NIC and backend finish one step at a time; it keeps its depth.
        let link = &mut bed.queues[0].link;
        let progressed = link.complete_fetch() || link.complete_backend() || link.complete_send();
        if !link.responses.is_empty() {
            deep_done += link.responses.drain(..).count();
            bed.write(0, next_lba, blocks, false);
            next_lba += 256;
        }
        bed.run_all();
        let link = &mut bed.queues[1].link;
        let shallow_progressed = link.complete_fetch() || link.complete_backend() || link.complete_send();
        assert!(progressed || shallow_progressed, "nothing can move");
        let (in_use, held) = bed.pages();
        assert_eq!(in_use, held);
    }
    let answered = bed.responses(1);
    assert_eq!(answered.len(), 1);
    assert_eq!((answered[0].command_id.get(), answered[0].status()), (shallow, Status::SUCCESS));
    assert!(bed.pools.host.stats().longest_wait_us > 0);
}

/// Four queues contending for two buffers: every request completes, and nothing is
/// left in any line or any pool.
#[test]
fn four_queues_share_two_buffers_and_all_complete() {
    let mut bed = bed(4, 256 * 1024);
    for round in 0..4u64 {
        for q in 0..4 {
            bed.write(q, (q as u64 * 4 + round) * 256, 256, false);
        }
    }
    let mut done = [0usize; 4];
    for _ in 0..10_000 {
        if done.iter().all(|&d| d == 4) {
            break;
        }
        for (q, done) in done.iter_mut().enumerate() {
            let link = &mut bed.queues[q].link;
            let _ = link.complete_fetch() || link.complete_backend() || link.complete_send();
            *done += link.responses.drain(..).filter(|c| c.status() == Status::SUCCESS).count();
            bed.run_all();
        }
    }
    assert_eq!(done, [4; 4]);
    for (name, pool) in bed.pools.all() {
        let stats = pool.stats();
        assert_eq!((stats.in_use_bytes, stats.waiting), (0, 0), "{name}");
    }
}

/// Control data has its own pool: with every payload buffer taken and requests in line,
/// admin commands and a new queue's Connect still complete at once.
#[test]
fn payload_pressure_never_blocks_admin_or_connect() {
    let mut bed = bed(1, 128 * 1024);
    bed.write(0, 0, 256, false);
    bed.write(0, 256, 256, false);
    assert_eq!(bed.pools.host.stats().waiting, 1);
    let (identify, _) = bed.admin.identify(1, 0);
    assert_eq!(identify.status(), Status::SUCCESS);
    let (log, _) = bed.admin.get_log(2, 0, 512);
    assert_eq!(log.status(), Status::SUCCESS);
    let mut newcomer = TestHost::new(&bed.target, &bed.pools, 0, 32);
    assert_eq!(newcomer.connect(SUBSYSTEM, HOST, 0, 0xFFFF, 31, false).status(), Status::SUCCESS);
}

/// After CC.EN 1 → 0 → 1 the old I/O queue runs nothing more, and its close leaves
/// the queue id to the queue that replaced it.
#[test]
fn a_stale_queue_after_reset_runs_nothing_and_keeps_its_hands_off_the_new_one() {
    let target = target();
    let pools = Pools::host_only(1 << 20).unwrap();
    let mut admin = TestHost::new(&target, &pools, 0, 32);
    let controller_id = admin.bring_up(SUBSYSTEM, HOST);
    let mut stale = TestHost::new(&target, &pools, 1, 32);
    assert_eq!(stale.connect(SUBSYSTEM, HOST, 1, controller_id, 31, true).status(), Status::SUCCESS);
    let cc = 4 << 20 | 6 << 16;
    assert_eq!(admin.property_set(property::CC, cc).status(), Status::SUCCESS);
    assert_eq!(admin.property_set(property::CC, cc | 1).status(), Status::SUCCESS);
    let mut fresh = TestHost::new(&target, &pools, 1, 32);
    assert_eq!(fresh.connect(SUBSYSTEM, HOST, 1, controller_id, 31, true).status(), Status::SUCCESS);

    let (read, _) = stale.read_blocks(0, 1);
    assert_eq!(read.status(), Status::ABORTED_SQ_DELETION);
    assert!(stale.link.disconnected.is_some(), "the stale queue is closed");
    let mut third = TestHost::new(&target, &pools, 1, 32);
    assert_eq!(
        third.connect(SUBSYSTEM, HOST, 1, controller_id, 31, true).status(),
        Status::COMMAND_SEQUENCE_ERROR.dnr(),
        "queue 1 still belongs to the fresh queue"
    );
    assert_eq!(fresh.read_blocks(0, 1).0.status(), Status::SUCCESS);
}

/// One step of the property test.
#[derive(Clone, Debug)]
enum Step {
    Write { q: usize, blocks: u32, in_capsule: bool },
    Read { q: usize, blocks: u32 },
    ShortCapsule { q: usize },
    Fetch { q: usize },
    Backend { q: usize },
    Send { q: usize },
    Close { q: usize },
}

fn step(queues: usize) -> impl Strategy<Value = Step> {
    let q = 0..queues;
    prop_oneof![
        3 => (q.clone(), 1u32..=256, any::<bool>()).prop_map(|(q, blocks, in_capsule)| Step::Write { q, blocks, in_capsule }),
        2 => (q.clone(), 1u32..=256).prop_map(|(q, blocks)| Step::Read { q, blocks }),
        1 => q.clone().prop_map(|q| Step::ShortCapsule { q }),
        3 => q.clone().prop_map(|q| Step::Fetch { q }),
        3 => q.clone().prop_map(|q| Step::Backend { q }),
        3 => q.clone().prop_map(|q| Step::Send { q }),
        1 => q.prop_map(|q| Step::Close { q }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Step>)> {
    (2usize..=4).prop_flat_map(|queues| (Just(queues), prop::collection::vec(step(queues), 1..120)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random interleavings of capsules (in-capsule and keyed writes, reads, short
    /// capsules), READ, backend and SEND completions and closes, across 2-4 queues on a
    /// pool of 256 KiB: after every step each pool page has exactly one owner, and once
    /// every queue is closed and the backend has reported, every pool is whole.
    #[test]
    fn every_page_has_one_owner((queues, steps) in scenario()) {
        let mut bed = bed(queues as u16, 256 * 1024);
        let limits = Limits::default();
        prop_assume!(limits.in_capsule_data_bytes >= 4096);
        for step in steps {
            match step {
                Step::Write { q, blocks, in_capsule } => {
                    // In-capsule data up to the limit; longer writes go keyed.
                    let in_capsule = in_capsule && blocks as usize * BLOCK <= 4096;
                    bed.write(q, u64::from(blocks) * 7 % 16000, blocks, in_capsule);
                }
                Step::Read { q, blocks } => { bed.read(q, u64::from(blocks) * 5 % 16000, blocks); }
                Step::ShortCapsule { q } => {
                    bed.queues[q].link.deliver(&[0u8; 20]);
                    bed.run_all();
                }
                Step::Fetch { q } => { bed.queues[q].link.complete_fetch(); }
                Step::Backend { q } => { bed.queues[q].link.complete_backend(); }
                Step::Send { q } => { bed.queues[q].link.complete_send(); }
                Step::Close { q } => bed.queues[q].link.close(),
            }
            bed.run_all();
            let (in_use, held) = bed.pages();
            prop_assert_eq!(in_use, held, "a pool page without exactly one owner");
        }
        for host in &mut bed.queues {
            host.link.close();
            while host.link.complete_backend() {}
        }
        bed.run_all();
        for (name, pool) in bed.pools.all() {
            let stats = pool.stats();
            prop_assert_eq!((stats.in_use_bytes, stats.waiting), (0, 0), "{} not whole", name);
        }
        let _ = Instant::now();
    }
}
