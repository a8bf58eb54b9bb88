//! `hostile ADDR[:PORT] SUBSYSTEM HOSTNQN [storm N | churn N [BURST]]`: a host that
//! speaks the NVMe/RDMA wire directly and sends what the kernel host never would. Each
//! case checks the target's answer (a reject code, a status, or a clean close of that
//! one connection); the last line is "N passed, M failed".
//!
//! `churn N [BURST]`: N times, connect an admin queue and one I/O queue, send BURST
//! (default 16) 4 KiB writes with in-capsule data back to back, and close the I/O queue
//! while they execute: by a capsule shorter than 64 bytes, a SEND larger than the
//! target's receive buffer, or a plain disconnect, in turn. The writes go to the last
//! 4 MiB of namespace 1. Where the target offers no in-capsule data (CMB data path) the
//! writes carry keyed SGLs instead.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use initiator_tests::rdma::{call, command, connect, connect_queue, enable, fabrics, keyed, private_data, Client, ConnectOutcome, Received, WAIT};
use p2ptgt::wire::command::{admin, fabrics_type};
use p2ptgt::wire::fabrics::property;
use p2ptgt::wire::sgl::RawSglDescriptor;
use p2ptgt::wire::{Completion, Status};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, IntoBytes};


struct Run {
    address: SocketAddr,
    subsystem: String,
    host: String,
    passed: u32,
    failed: u32,
}


/// The first bytes of a Write command, for capsules cut short.
fn write_prefix(id: u16) -> Vec<u8> {
    let mut write = command(0x01, id);
    write.namespace_id = U32::new(1);
    write.data_pointer = RawSglDescriptor::in_capsule(4096);
    write.as_bytes().to_vec()
}



impl Run {
    fn check(&mut self, name: &str, ok: bool, detail: String) {
        if ok {
            self.passed += 1;
            println!("PASS {name}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {detail}");
        }
    }

    fn open(&self, queue_id: u16, send: u16, controller_id: u16) -> Option<Client> {
        match connect(self.address, &private_data(0, queue_id, send + 1, send, controller_id)) {
            ConnectOutcome::Established(client) => Some(client),
            other => {
                println!("  connect failed: {other:?}");
                None
            }
        }
    }

    /// Connect (SQSIZE 31) for `queue_id` of `controller_id`, Connect data fetched from
    /// the start of the data region.
    fn connect_queue(&self, client: &mut Client, queue_id: u16, controller_id: u16, subsystem: &str, keep_alive_ms: u32) -> Result<Completion, String> {
        connect_queue(client, &self.host, queue_id, controller_id, subsystem, keep_alive_ms)
    }

    /// Admin Connect under the dynamic controller model, no keep-alive.
    fn admin_connect(&self, client: &mut Client, subsystem: &str) -> Result<Completion, String> {
        self.connect_queue(client, 0, 0xFFFF, subsystem, 0)
    }

    fn expect_status(&mut self, name: &str, result: Result<Completion, String>, want: Status) {
        match result {
            Ok(completion) => {
                let got = completion.status();
                self.check(name, got == want, format!("got {got}, want {want}"));
            }
            Err(e) => self.check(name, false, e),
        }
    }

    fn rejects(&mut self) {
        let cases = [
            ("reject: record format 1", private_data(1, 0, 32, 31, 0), 2u16),
            ("reject: queue id beyond the limit", private_data(0, 999, 32, 31, 0), 3),
            ("reject: hsqsize 0", private_data(0, 0, 32, 0, 0), 4),
            ("reject: admin queue deeper than 32", private_data(0, 0, 64, 63, 0), 4),
            ("reject: I/O queue deeper than the limit", private_data(0, 1, 2048, 2047, 1), 4),
            ("reject: hrqsize 0", private_data(0, 0, 0, 31, 0), 5),
        ];
        for (name, data, want) in cases {
            match connect(self.address, &data) {
                ConnectOutcome::Rejected(private) => {
                    let sts = private.get(2..4).map(|b| u16::from_le_bytes([b[0], b[1]]));
                    self.check(name, sts == Some(want), format!("reject data {private:?}"));
                }
                other => self.check(name, false, format!("{other:?}")),
            }
        }
    }

    fn admin_queue_cases(&mut self) {
        let Some(mut client) = self.open(0, 31, 0) else { return self.check("admin queue connects", false, String::new()) };
        let mut identify = command(admin::IDENTIFY, 10);
        identify.cdw10 = U32::new(1);
        identify.data_pointer = keyed(&client, 4096, 4096, None);
        self.expect_status("identify before Connect", call(&mut client, &identify), Status::COMMAND_SEQUENCE_ERROR.dnr());
        self.expect_status("Connect to an unknown subsystem", self.admin_connect(&mut client, "nqn.unknown"), Status::CONNECT_INVALID_PARAMETER.dnr());
        let subsystem = self.subsystem.clone();
        self.expect_status("Connect to the subsystem", self.admin_connect(&mut client, &subsystem), Status::SUCCESS);
        self.expect_status("identify before CC.EN", call(&mut client, &identify), Status::COMMAND_SEQUENCE_ERROR.dnr());
        let enabled = enable(&mut client);
        self.check("enable", enabled.is_ok(), format!("{enabled:?}"));
        self.expect_status("identify works", call(&mut client, &identify), Status::SUCCESS);
        self.expect_status("unknown admin opcode", call(&mut client, &command(0xC1, 11)), Status::INVALID_OPCODE.dnr());
        let mut fused = identify;
        fused.flags = 0x41;
        self.expect_status("fused command", call(&mut client, &fused), Status::INVALID_FIELD.dnr());
        let mut prp = identify;
        prp.flags = 0x00;
        self.expect_status("PSDT 00b (PRPs)", call(&mut client, &prp), Status::INVALID_FIELD.dnr());
        let mut segment = identify;
        segment.data_pointer.identifier = 0x30;
        self.expect_status("SGL last-segment descriptor", call(&mut client, &segment), Status::SGL_INVALID_TYPE.dnr());
        let mut in_capsule = identify;
        in_capsule.data_pointer = RawSglDescriptor::in_capsule(16);
        self.expect_status("in-capsule data on the admin queue", call(&mut client, &in_capsule), Status::SGL_INVALID_DATA.dnr());
        let mut too_long = identify;
        too_long.data_pointer = keyed(&client, 4096, 8 << 20, None);
        self.expect_status("data length beyond MDTS", call(&mut client, &too_long), Status::INVALID_FIELD.dnr());
        let mut cap = fabrics(fabrics_type::PROPERTY_SET, 12);
        cap.cdw11 = U32::new(property::CAP);
        self.expect_status("Property Set of read-only CAP", call(&mut client, &cap), Status::INVALID_FIELD.dnr());
        let mut log = command(admin::GET_LOG_PAGE, 13);
        log.cdw10 = U32::new(3 << 16 | 0x02);
        log.cdw12 = U32::new(1 << 20);
        log.data_pointer = keyed(&client, 4096, 16, None);
        self.expect_status("Get Log Page offset past the log", call(&mut client, &log), Status::INVALID_FIELD.dnr());
        let mut unknown_fctype = fabrics(0x33, 14);
        unknown_fctype.cdw10 = U32::new(0);
        self.expect_status("unknown fctype", call(&mut client, &unknown_fctype), Status::INVALID_OPCODE.dnr());
        // AER flood: four are held, the fifth is refused.
        for id in 20..24u16 {
            let _ = client.send(command(admin::ASYNC_EVENT_REQUEST, id).as_bytes());
        }
        self.expect_status("fifth AER exceeds the limit", call(&mut client, &command(admin::ASYNC_EVENT_REQUEST, 24)), Status::ASYNC_EVENT_LIMIT.dnr());
        // A bogus rkey: the RDMA WRITE fails, the target closes this connection.
        let mut bogus = identify;
        bogus.command_id = U16::new(30);
        bogus.data_pointer = keyed(&client, 4096, 4096, Some(0xDEAD_BEEF));
        let _ = client.send(bogus.as_bytes());
        let outcome = client.receive(WAIT);
        let closed = matches!(outcome, Received::Disconnected) || matches!(client.receive(WAIT), Received::Disconnected);
        self.check("bogus rkey closes the connection", closed, format!("{outcome:?}"));
    }

    fn short_capsule(&mut self) {
        let Some(mut client) = self.open(0, 31, 0) else { return self.check("admin queue connects", false, String::new()) };
        let _ = client.send(&[0x06; 40]);
        let outcome = client.receive(WAIT);
        self.check("capsule shorter than 64 bytes closes the queue", outcome == Received::Disconnected, format!("{outcome:?}"));
    }

    fn io_queue_cases(&mut self) {
        // I/O queue Connect naming a controller that does not exist.
        let Some(mut io) = self.open(1, 31, 0x4242) else { return self.check("I/O queue connects", false, String::new()) };
        let subsystem = self.subsystem.clone();
        let refused = self.connect_queue(&mut io, 1, 0x4242, &subsystem, 0);
        self.expect_status("I/O Connect to a controller that does not exist", refused, Status::CONNECT_INVALID_PARAMETER.dnr());

        // I/O queue Connect before the admin queue enabled the controller.
        let Some(mut admin_queue) = self.open(0, 31, 0) else { return };
        let controller = match self.admin_connect(&mut admin_queue, &subsystem) {
            Ok(c) => c.result.get() as u16,
            Err(e) => return self.check("admin Connect", false, e),
        };
        let Some(mut early) = self.open(1, 31, controller) else { return };
        let too_early = self.connect_queue(&mut early, 1, controller, &subsystem, 0);
        self.expect_status("I/O Connect before CC.EN", too_early, Status::COMMAND_SEQUENCE_ERROR.dnr());
        drop(early);
        let _ = enable(&mut admin_queue);
        let Some(mut live) = self.open(1, 31, controller) else { return };
        let connected = self.connect_queue(&mut live, 1, controller, &subsystem, 0);
        self.expect_status("I/O Connect after CC.EN", connected, Status::SUCCESS);
        let mut read = command(0x02, 40);
        read.namespace_id = U32::new(1);
        read.cdw12 = U32::new(7);
        read.data_pointer = keyed(&live, 8192, 1024, None);
        self.expect_status("read whose SGL length does not match NLB", call(&mut live, &read), Status::SGL_INVALID_DATA.dnr());
        read.cdw10 = U32::new(u32::MAX);
        read.cdw11 = U32::new(u32::MAX);
        read.data_pointer = keyed(&live, 8192, 4096, None);
        self.expect_status("read beyond the last LBA", call(&mut live, &read), Status::LBA_RANGE.dnr());
        read.namespace_id = U32::new(77);
        self.expect_status("read of a namespace that does not exist", call(&mut live, &read), Status::INVALID_NAMESPACE.dnr());
        let mut write = command(0x01, 41);
        write.namespace_id = U32::new(1);
        write.data_pointer = RawSglDescriptor::in_capsule(4096);
        let mut capsule = write.as_bytes().to_vec();
        capsule.extend_from_slice(&[1; 100]);
        let _ = live.send(&capsule);
        let outcome = live.receive(WAIT);
        // With in-capsule data offered the target answers with an SGL status; in CMB mode
        // (none offered) the oversized SEND overflows the receive and the queue closes.
        let ok = match &outcome {
            Received::Completion(b) => Completion::read_from_bytes(b).map(|c| !c.status().is_success()).unwrap_or(false),
            Received::Disconnected => true,
            Received::Timeout => false,
        };
        self.check("in-capsule SGL longer than the capsule: error status or clean close", ok, format!("{outcome:?}"));
        if outcome == Received::Disconnected {
            // Connect a fresh I/O queue for the reset case below.
            let Some(mut again) = self.open(1, 31, controller) else { return };
            std::thread::sleep(Duration::from_millis(200));
            let reconnected = self.connect_queue(&mut again, 1, controller, &subsystem, 0);
            self.expect_status("I/O queue connects again after the close", reconnected, Status::SUCCESS);
            live = again;
        }
        // CC.EN toggled while the I/O queue lives: the target drops the I/O queue.
        let mut reset = fabrics(fabrics_type::PROPERTY_SET, 50);
        reset.cdw11 = U32::new(property::CC);
        reset.cdw12 = U32::new(4 << 20 | 6 << 16);
        let _ = call(&mut admin_queue, &reset);
        let outcome = live.receive(Duration::from_secs(4));
        self.check("controller reset closes its I/O queues", outcome == Received::Disconnected, format!("{outcome:?}"));
    }

    /// A host that connects with a 2 s keep-alive timeout and then goes silent: the
    /// target must tear its controller down and close the connection.
    fn silent_host(&mut self) {
        let Some(mut client) = self.open(0, 31, 0) else { return self.check("admin queue connects", false, String::new()) };
        let subsystem = self.subsystem.clone();
        let connected = self.connect_queue(&mut client, 0, 0xFFFF, &subsystem, 2000);
        self.expect_status("Connect with KATO 2 s", connected, Status::SUCCESS);
        let _ = enable(&mut client);
        let started = std::time::Instant::now();
        let outcome = client.receive(Duration::from_secs(8));
        let waited = started.elapsed();
        let in_time = waited >= Duration::from_millis(1500) && waited <= Duration::from_secs(7);
        self.check(
            "silent host: keep-alive expiry closes the connection",
            outcome == Received::Disconnected && in_time,
            format!("{outcome:?} after {waited:?}"),
        );
    }

    /// Admin queue connected and enabled (one Property Set of CC with EN, to keep the
    /// churn quick); returns it and the controller ID.
    fn live_admin(&self) -> Result<(Client, u16), String> {
        let mut admin_queue = self.open(0, 31, 0).ok_or("admin queue CM connect failed")?;
        let subsystem = self.subsystem.clone();
        let connected = self.admin_connect(&mut admin_queue, &subsystem)?;
        if !connected.status().is_success() {
            return Err(format!("admin Connect: {}", connected.status()));
        }
        let mut set = fabrics(fabrics_type::PROPERTY_SET, 2);
        set.cdw11 = U32::new(property::CC);
        set.cdw12 = U32::new(4 << 20 | 6 << 16 | 1);
        let enabled = call(&mut admin_queue, &set)?;
        if !enabled.status().is_success() {
            return Err(format!("Property Set CC.EN: {}", enabled.status()));
        }
        Ok((admin_queue, connected.result.get() as u16))
    }

    /// What the churn needs to know about the target: its in-capsule data size on I/O
    /// queues (IOCCSZ), and namespace 1's LBA size and LBA count.
    fn churn_geometry(&self) -> Result<(u32, u32, u64), String> {
        let (mut admin_queue, _) = self.live_admin()?;
        let page = Self::identify(&mut admin_queue, 1, 0)?;
        let ioccsz = u32::from_le_bytes([page[1792], page[1793], page[1794], page[1795]]);
        let in_capsule = (ioccsz * 16).saturating_sub(64);
        let page = Self::identify(&mut admin_queue, 0, 1)?;
        let lbas = u64::from_le_bytes(page[0..8].try_into().unwrap_or_default());
        let format = usize::from(page[26] & 0x0F);
        let lba_bytes = 1u32 << page[128 + 4 * format + 2];
        Ok((in_capsule, lba_bytes, lbas))
    }

    /// Identify CNS `cns` of namespace `namespace_id`: the 4 KiB page.
    fn identify(admin_queue: &mut Client, cns: u32, namespace_id: u32) -> Result<Vec<u8>, String> {
        let mut identify = command(admin::IDENTIFY, 10);
        identify.cdw10 = U32::new(cns);
        identify.namespace_id = U32::new(namespace_id);
        identify.data_pointer = keyed(admin_queue, 4096, 4096, None);
        let got = call(admin_queue, &identify)?;
        if !got.status().is_success() {
            return Err(format!("Identify CNS {cns}: {}", got.status()));
        }
        Ok(admin_queue.data()[4096..8192].to_vec())
    }

    fn churn(&mut self, cycles: u32, burst: u16) {
        let (in_capsule, lba_bytes, lbas) = match self.churn_geometry() {
            Ok(g) => g,
            Err(e) => return self.check("churn: identify the target", false, e),
        };
        const REGION_BYTES: u64 = 4 << 20;
        let blocks_per_write = (4096 / lba_bytes).max(1);
        let slots = REGION_BYTES / 4096;
        let first_lba = lbas.saturating_sub(REGION_BYTES / u64::from(lba_bytes));
        let burst = burst.clamp(1, 30);
        let in_capsule_writes = in_capsule >= 4096;
        println!(
            "  churn: {cycles} cycles, bursts of {burst} 4 KiB writes ({}), LBA {first_lba}.. of {lbas} ({lba_bytes}-byte LBAs), target in-capsule size {in_capsule}",
            if in_capsule_writes { "in-capsule data" } else { "keyed SGLs: the target offers no in-capsule data" },
        );
        let endings = ["short capsule", "oversized SEND", "disconnect"];
        let mut connected = 0u32;
        let mut closed_by_target = [0u32; 2];
        let mut tried = [0u32; 3];
        // Per ending: write completions seen before the close, and cycles in which the
        // close came with every write of the burst still outstanding.
        let mut early = [0u64; 2];
        let mut all_outstanding = [0u32; 2];
        let mut errors: Vec<String> = Vec::new();
        let started = Instant::now();
        // Time spent: admin queue up, I/O queue up, burst until closed, tear-down.
        let mut phases = [Duration::ZERO; 4];
        let subsystem = self.subsystem.clone();
        for cycle in 0..cycles {
            let ending = (cycle % 3) as usize;
            let t0 = Instant::now();
            let (admin_queue, controller) = match self.live_admin() {
                Ok(a) => a,
                Err(e) => {
                    errors.push(format!("cycle {cycle}: {e}"));
                    continue;
                }
            };
            phases[0] += t0.elapsed();
            let t1 = Instant::now();
            let Some(mut io) = self.open(1, 31, controller) else {
                errors.push(format!("cycle {cycle}: I/O queue CM connect failed"));
                continue;
            };
            match self.connect_queue(&mut io, 1, controller, &subsystem, 0) {
                Ok(c) if c.status().is_success() => {
                    connected += 1;
                    tried[ending] += 1;
                }
                other => {
                    errors.push(format!("cycle {cycle}: I/O Connect {other:?}"));
                    continue;
                }
            }
            phases[1] += t1.elapsed();
            let t2 = Instant::now();
            let pattern = [cycle as u8 ^ 0x5A; 4096];
            for k in 0..burst {
                let slot = (u64::from(cycle) * u64::from(burst) + u64::from(k)) % slots;
                let lba = first_lba + slot * u64::from(blocks_per_write);
                let mut write = command(0x01, 100 + k);
                write.namespace_id = U32::new(1);
                write.cdw10 = U32::new(lba as u32);
                write.cdw11 = U32::new((lba >> 32) as u32);
                write.cdw12 = U32::new(blocks_per_write - 1);
                let mut capsule;
                if in_capsule_writes {
                    write.data_pointer = RawSglDescriptor::in_capsule(4096);
                    capsule = write.as_bytes().to_vec();
                    capsule.extend_from_slice(&pattern);
                } else {
                    let offset = 16384 + usize::from(k) * 4096;
                    io.data_mut()[offset..offset + 4096].copy_from_slice(&pattern);
                    write.data_pointer = keyed(&io, offset as u64, 4096, None);
                    capsule = write.as_bytes().to_vec();
                }
                if let Err(e) = io.send(&capsule) {
                    errors.push(format!("cycle {cycle}: send: {e}"));
                }
            }
            match ending {
                0 => {
                    let _ = io.send(&write_prefix(200)[..40]);
                }
                1 => {
                    let mut write = command(0x01, 200);
                    write.namespace_id = U32::new(1);
                    write.cdw12 = U32::new(blocks_per_write - 1);
                    write.data_pointer = RawSglDescriptor::in_capsule(in_capsule.max(4096));
                    let mut capsule = write.as_bytes().to_vec();
                    capsule.resize(64 + in_capsule as usize + 512, 0xEE);
                    let _ = io.send(&capsule);
                }
                _ => {
                    // Closed as soon as the target's NIC has taken every capsule.
                    let _ = io.wait_sends(WAIT);
                    phases[2] += t2.elapsed();
                    let t3 = Instant::now();
                    drop(io);
                    drop(admin_queue);
                    phases[3] += t3.elapsed();
                    continue;
                }
            }
            let mut completions = 0u64;
            let deadline = Instant::now() + WAIT;
            let closed = loop {
                match io.receive(deadline.saturating_duration_since(Instant::now())) {
                    Received::Completion(_) => completions += 1,
                    Received::Disconnected => break true,
                    Received::Timeout => break false,
                }
            };
            if closed {
                closed_by_target[ending] += 1;
            } else {
                errors.push(format!("cycle {cycle}: the target did not close the I/O queue after the {}", endings[ending]));
            }
            early[ending] += completions;
            if completions == 0 {
                all_outstanding[ending] += 1;
            }
            phases[2] += t2.elapsed();
            let t3 = Instant::now();
            drop(io);
            drop(admin_queue);
            phases[3] += t3.elapsed();
        }
        let elapsed = started.elapsed();
        let per_cycle = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(cycles.max(1));
        println!(
            "  churn: {cycles} cycles in {:.1} s ({:.1} ms each: admin queue up {:.1}, I/O queue up {:.1}, burst and close {:.1}, tear-down {:.1})",
            elapsed.as_secs_f64(),
            per_cycle(elapsed),
            per_cycle(phases[0]),
            per_cycle(phases[1]),
            per_cycle(phases[2]),
            per_cycle(phases[3]),
        );
        for ending in 0..2 {
            println!(
                "  churn: {}: {} cycles, {} closed by the target, {} write completions came before the close, {} cycles closed with the whole burst outstanding",
                endings[ending], tried[ending], closed_by_target[ending], early[ending], all_outstanding[ending],
            );
        }
        println!("  churn: disconnect: {} cycles", tried[2]);
        for e in errors.iter().take(10) {
            println!("  churn: {e}");
        }
        self.check(&format!("churn: {cycles} admin + I/O queue connects"), connected == cycles, format!("{connected} of {cycles} connected"));
        let wanted = tried[0] + tried[1];
        let got = closed_by_target[0] + closed_by_target[1];
        self.check("churn: the target closes the I/O queue after each short capsule or oversized SEND", got == wanted, format!("{got} of {wanted}"));
    }

    fn storm(&mut self, cycles: u32) {
        let mut ok = 0;
        for _ in 0..cycles {
            if let Some(mut client) = self.open(0, 31, 0) {
                let subsystem = self.subsystem.clone();
                if matches!(self.admin_connect(&mut client, &subsystem), Ok(c) if c.status().is_success()) {
                    ok += 1;
                }
            }
        }
        self.check(&format!("{cycles} connect/disconnect cycles"), ok == cycles, format!("{ok} of {cycles} connected"));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: hostile ADDR[:PORT] SUBSYSTEM HOSTNQN [storm N | churn N [BURST]]");
        std::process::exit(2);
    }
    let address = args[1].parse().unwrap_or_else(|_| SocketAddr::new(args[1].parse().expect("an IP address"), 4420));
    let mut run = Run { address, subsystem: args[2].clone(), host: args[3].clone(), passed: 0, failed: 0 };
    if args.get(4).map(String::as_str) == Some("storm") {
        run.storm(args.get(5).and_then(|n| n.parse().ok()).unwrap_or(200));
    } else if args.get(4).map(String::as_str) == Some("churn") {
        run.churn(args.get(5).and_then(|n| n.parse().ok()).unwrap_or(1000), args.get(6).and_then(|n| n.parse().ok()).unwrap_or(16));
    } else {
        run.rejects();
        run.short_capsule();
        run.admin_queue_cases();
        run.io_queue_cases();
        run.silent_host();
    }
    println!("{} passed, {} failed", run.passed, run.failed);
    std::process::exit(i32::from(run.failed > 0));
}
