//! `fused ADDR[:PORT] SUBSYSTEM ROUNDS LBA`: two hosts (two host NQNs, each with its own
//! controller and I/O queue) race a fused Compare and Write on one block, ROUNDS times,
//! the way hypervisors take a lock on shared storage. The Linux host cannot send a fused
//! pair (its passthrough sends one command at a time), so this speaks the wire directly.
//!
//! The block always holds a record: the round, the host that won it, and a fill that
//! depends on both (a torn write shows as a fill that does not match). Each round both
//! hosts read the block, then both send Compare (the record read) fused with Write (the
//! next round's record, signed by themselves). Exactly one must win; the loser gets
//! Compare Failure for its Compare and Failed Fused Command for its Write. Both read the
//! winner's record afterwards. The last line is "N passed, M failed".

use std::net::SocketAddr;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use initiator_tests::rdma::{call, command, connect, connect_queue, enable, keyed, private_data, Client, ConnectOutcome, Received, WAIT};
use p2ptgt::wire::command::{admin, io};
use p2ptgt::wire::{Completion, Status};
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

/// Where each buffer sits in a client's data region.
const READ_AT: u64 = 8192;
const COMPARE_AT: u64 = 16384;
const WRITE_AT: u64 = 24576;

/// The block's contents for `round` as won by `owner`.
fn record(round: u64, owner: u64, block_bytes: usize) -> Vec<u8> {
    let mut block = vec![0u8; block_bytes];
    block[..8].copy_from_slice(&round.to_le_bytes());
    block[8..16].copy_from_slice(&owner.to_le_bytes());
    for (index, byte) in block.iter_mut().enumerate().skip(16) {
        *byte = (index as u64).wrapping_mul(round.wrapping_add(7)).wrapping_add(owner.wrapping_mul(131)) as u8;
    }
    block
}

/// The round and owner of a well-formed record, or None for a torn or foreign block.
fn parse(block: &[u8]) -> Option<(u64, u64)> {
    let round = u64::from_le_bytes(block.get(..8)?.try_into().ok()?);
    let owner = u64::from_le_bytes(block.get(8..16)?.try_into().ok()?);
    (record(round, owner, block.len()) == block).then_some((round, owner))
}

/// One host: an admin queue (kept open) and one I/O queue.
struct Host {
    _admin: Client,
    io: Client,
    lba: u64,
    block_bytes: usize,
    next_id: u16,
}

impl Host {
    fn open(address: SocketAddr, subsystem: &str, host_nqn: &str, lba: u64) -> Result<Host, String> {
        let establish = |queue_id: u16, controller_id: u16| match connect(address, &private_data(0, queue_id, 32, 31, controller_id)) {
            ConnectOutcome::Established(client) => Ok(client),
            other => Err(format!("queue {queue_id}: {other:?}")),
        };
        let mut admin = establish(0, 0)?;
        let connected = connect_queue(&mut admin, host_nqn, 0, 0xFFFF, subsystem, 0)?;
        if !connected.status().is_success() {
            return Err(format!("admin Connect: {}", connected.status()));
        }
        let controller_id = connected.result.get() as u16;
        enable(&mut admin)?;
        let mut identify = command(admin::IDENTIFY, 20);
        identify.namespace_id = U32::new(1);
        identify.data_pointer = keyed(&admin, 4096, 4096, None);
        let identified = call(&mut admin, &identify)?;
        if !identified.status().is_success() {
            return Err(format!("Identify Namespace: {}", identified.status()));
        }
        let page = &admin.data()[4096..8192];
        let block_bytes = 1usize << page[130];
        let mut io = establish(1, controller_id)?;
        let connected = connect_queue(&mut io, host_nqn, 1, controller_id, subsystem, 0)?;
        if !connected.status().is_success() {
            return Err(format!("I/O Connect: {}", connected.status()));
        }
        Ok(Host { _admin: admin, io, lba, block_bytes, next_id: 100 })
    }

    fn id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(100);
        self.next_id
    }

    fn block_command(&mut self, opcode: u8, at: u64) -> (u16, p2ptgt::wire::RawCommand) {
        let id = self.id();
        let mut cmd = command(opcode, id);
        cmd.namespace_id = U32::new(1);
        cmd.cdw10 = U32::new(self.lba as u32);
        cmd.cdw11 = U32::new((self.lba >> 32) as u32);
        cmd.data_pointer = keyed(&self.io, at, self.block_bytes as u32, None);
        (id, cmd)
    }

    fn read(&mut self) -> Result<Vec<u8>, String> {
        let (_, cmd) = self.block_command(io::READ, READ_AT);
        let completion = call(&mut self.io, &cmd)?;
        if !completion.status().is_success() {
            return Err(format!("read: {}", completion.status()));
        }
        Ok(self.io.data()[READ_AT as usize..READ_AT as usize + self.block_bytes].to_vec())
    }

    fn write(&mut self, block: &[u8]) -> Result<(), String> {
        self.io.data_mut()[WRITE_AT as usize..WRITE_AT as usize + block.len()].copy_from_slice(block);
        let (_, cmd) = self.block_command(io::WRITE, WRITE_AT);
        let status = call(&mut self.io, &cmd)?.status();
        if status.is_success() { Ok(()) } else { Err(format!("write: {status}")) }
    }

    /// The fused pair; returns the Compare's and the Write's statuses.
    fn compare_and_write(&mut self, expected: &[u8], new: &[u8]) -> Result<(Status, Status), String> {
        let data = self.io.data_mut();
        data[COMPARE_AT as usize..COMPARE_AT as usize + expected.len()].copy_from_slice(expected);
        data[WRITE_AT as usize..WRITE_AT as usize + new.len()].copy_from_slice(new);
        let (compare_id, mut compare) = self.block_command(io::COMPARE, COMPARE_AT);
        compare.flags |= 1;
        let (write_id, mut write) = self.block_command(io::WRITE, WRITE_AT);
        write.flags |= 2;
        self.io.send(compare.as_bytes()).map_err(|e| e.to_string())?;
        self.io.send(write.as_bytes()).map_err(|e| e.to_string())?;
        let (mut compare_status, mut write_status) = (None, None);
        while compare_status.is_none() || write_status.is_none() {
            let Received::Completion(bytes) = self.io.receive(WAIT) else { return Err("no completion for the fused pair".into()) };
            let completion = Completion::read_from_bytes(&bytes).map_err(|_| "bad completion")?;
            match completion.command_id.get() {
                id if id == compare_id => compare_status = Some(completion.status()),
                id if id == write_id => write_status = Some(completion.status()),
                id => return Err(format!("completion for unknown command {id}")),
            }
        }
        Ok((compare_status.unwrap_or(Status::INTERNAL_ERROR), write_status.unwrap_or(Status::INTERNAL_ERROR)))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: fused ADDR[:PORT] SUBSYSTEM ROUNDS LBA");
        std::process::exit(2);
    }
    let address: SocketAddr = args[1].parse().unwrap_or_else(|_| SocketAddr::new(args[1].parse().expect("an IP address"), 4420));
    let subsystem = args[2].clone();
    let rounds: u64 = args[3].parse().expect("ROUNDS");
    let lba: u64 = args[4].parse().expect("LBA");
    let barrier = Arc::new(Barrier::new(2));
    // Per round: which hosts won, and any check that failed.
    let winners = Arc::new(Mutex::new(vec![Vec::new(); rounds as usize]));
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    // Each host lives on its own thread (a verbs client stays on the thread that made it).
    let threads: Vec<_> = (1..=2u64)
        .map(|me| {
            let (barrier, winners, problems, subsystem) = (barrier.clone(), winners.clone(), problems.clone(), subsystem.clone());
            std::thread::spawn(move || {
                let report = |problem: String| problems.lock().unwrap().push(format!("host {me}: {problem}"));
                let nqn = format!("nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-0504030201f{me}");
                let opened = Host::open(address, &subsystem, &nqn, lba);
                if let Err(e) = &opened {
                    report(format!("connect: {e}"));
                }
                barrier.wait();
                let (Ok(mut host), true) = (opened, problems.lock().unwrap().is_empty()) else { return };
                let block_bytes = host.block_bytes;
                if me == 1 {
                    if let Err(e) = host.write(&record(0, 0, block_bytes)) {
                        report(e);
                    }
                }
                barrier.wait();
                for round in 0..rounds {
                    let seen = host.read();
                    barrier.wait(); // both have read before either writes
                    let seen = match seen.as_deref().map(parse) {
                        Ok(Some(record)) => record,
                        Ok(None) => {
                            report(format!("round {round}: torn or foreign block before the race"));
                            (round, 0)
                        }
                        Err(e) => {
                            report(format!("round {round}: {e}"));
                            (round, 0)
                        }
                    };
                    if seen.0 != round {
                        report(format!("round {round}: the block says round {}", seen.0));
                    }
                    let outcome = host.compare_and_write(&record(seen.0, seen.1, block_bytes), &record(round + 1, me, block_bytes));
                    match outcome {
                        Ok((Status::SUCCESS, Status::SUCCESS)) => winners.lock().unwrap()[round as usize].push(me),
                        Ok((compare, write)) if compare == Status::COMPARE_FAILURE.dnr() && write == Status::FUSED_FAILED => {}
                        Ok((compare, write)) => report(format!("round {round}: compare {compare}, write {write}")),
                        Err(e) => report(format!("round {round}: {e}")),
                    }
                    barrier.wait(); // the round is decided
                }
                let last = host.read().ok().as_deref().and_then(parse);
                if last.map(|(round, _)| round) != Some(rounds) {
                    report(format!("after the last round the block holds {last:?}"));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("host thread");
    }
    let elapsed = started.elapsed();
    let winners = winners.lock().unwrap();
    let problems = problems.lock().unwrap();
    let mut passed = 0;
    let mut failed = 0;
    let mut check = |name: &str, ok: bool, detail: String| {
        if ok {
            passed += 1;
            println!("PASS {name}");
        } else {
            failed += 1;
            println!("FAIL {name}: {detail}");
        }
    };
    let contested: Vec<usize> = winners.iter().enumerate().filter(|(_, w)| w.len() != 1).map(|(round, _)| round).collect();
    check("exactly one winner in every round", contested.is_empty(), format!("rounds without exactly one winner: {:?}", &contested[..contested.len().min(10)]));
    check("no torn block, no unexpected status", problems.is_empty(), problems.iter().take(10).cloned().collect::<Vec<_>>().join("; "));
    let wins = |host: u64| winners.iter().filter(|w| w.as_slice() == [host]).count();
    println!("rounds: {rounds} in {:.1} s; host 1 won {}, host 2 won {}", elapsed.as_secs_f64(), wins(1), wins(2));
    check("both hosts won some rounds", rounds < 20 || (wins(1) > 0 && wins(2) > 0), "one host won every round: the race never happened".into());
    println!("{passed} passed, {failed} failed");
    std::process::exit(i32::from(failed > 0));
}
