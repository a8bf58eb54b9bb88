//! The command path without RDMA: a capsule is parsed, the controller core runs it
//! against a RAM namespace over the loopback transport, and the response comes back.
//! Reported in ns per command for a 4 KiB read, a 4 KiB write (keyed, fetched) and an
//! admin Identify Controller.

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use p2ptgt::backend::{Backend, MemoryBackend};
use p2ptgt::core::{HostAccess, Limits, Namespace, Placement, Port, QueueConfig, Subsystem, Target};
use p2ptgt::memory::Pools;
use p2ptgt::transport::loopback::Loopback;
use p2ptgt::wire::command::{admin, fabrics_type, io, FABRICS};
use p2ptgt::wire::fabrics::{property, ConnectData};
use p2ptgt::wire::sgl::RawSglDescriptor;
use p2ptgt::wire::{KeyedSgl, RawCommand};
use zerocopy::little_endian::{U16, U32};
use zerocopy::IntoBytes;

const NQN: &str = "nqn.2026-11.io.p2ptgt:bench";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:bench";

fn command(opcode: u8) -> RawCommand {
    let none = RawSglDescriptor::keyed(KeyedSgl { address: 0, length_bytes: 0, key: 0, invalidate: false });
    RawCommand { opcode, flags: 0x40, data_pointer: none, ..Default::default() }
}

fn fabrics(kind: u8) -> RawCommand {
    let mut cmd = command(FABRICS);
    cmd.namespace_id = U32::new(u32::from(kind));
    cmd
}

struct Setup {
    admin: Loopback,
    io: Loopback,
}

fn setup() -> Setup {
    let namespace = Arc::new(Namespace::new(1, Arc::new(Backend::Memory(MemoryBackend::new(64 << 20, 9))), [1; 16], [2; 16], Placement::Host));
    let hosts = HostAccess { allow_any_host: true, ..Default::default() };
    let mut subsystem = Subsystem::new(NQN, hosts, [namespace]);
    subsystem.serial = "bench".into();
    subsystem.firmware = "0".into();
    let port = Port::new(1, "192.0.2.1", "4420", false);
    let target = Arc::new(Target::new(vec![subsystem], port, Limits::default()));
    let pools = Pools::host_only(16 << 20).expect("host pool");
    let mut admin = Loopback::new(target.clone(), &pools, QueueConfig { queue_id: 0, entries: 32, local_address: None, port_id: 1 });
    let mut connect = fabrics(fabrics_type::CONNECT);
    connect.cdw11 = U32::new(31);
    connect.cdw12 = U32::new(0);
    let data = admin.register(ConnectData::new([0; 16], 0xFFFF, NQN, HOST).as_bytes().to_vec(), false);
    connect.data_pointer = RawSglDescriptor::keyed(data);
    admin.send(connect.as_bytes());
    let controller_id = admin.responses.pop_front().expect("connect").result.get() as u16;
    for value in [4 << 20 | 6 << 16, 4 << 20 | 6 << 16 | 1] {
        let mut set = fabrics(fabrics_type::PROPERTY_SET);
        set.cdw11 = U32::new(property::CC);
        set.cdw12 = U32::new(value);
        admin.send(set.as_bytes());
    }
    admin.responses.clear();
    let mut io_queue = Loopback::new(target, &pools, QueueConfig { queue_id: 1, entries: 128, local_address: None, port_id: 1 });
    let mut connect = fabrics(fabrics_type::CONNECT);
    connect.cdw10 = U32::new(1 << 16);
    connect.cdw11 = U32::new(127);
    connect.data_pointer = RawSglDescriptor::in_capsule(1024);
    let mut capsule = connect.as_bytes().to_vec();
    capsule.extend_from_slice(ConnectData::new([0; 16], controller_id, NQN, HOST).as_bytes());
    io_queue.send(&capsule);
    assert_eq!(io_queue.responses.pop_front().map(|c| c.status().is_success()), Some(true));
    Setup { admin, io: io_queue }
}

fn command_path(c: &mut Criterion) {
    let Setup { mut admin, mut io } = setup();
    let read_buffer = io.register(vec![0; 4096], true);
    let write_buffer = io.register(vec![7; 4096], false);
    let identify_buffer = admin.register(vec![0; 4096], true);

    let mut group = c.benchmark_group("command_path");
    group.throughput(Throughput::Elements(1));
    let mut read = command(io::READ);
    read.namespace_id = U32::new(1);
    read.cdw12 = U32::new(7);
    read.data_pointer = RawSglDescriptor::keyed(read_buffer);
    group.bench_function("read_4k", |b| b.iter(|| run(&mut io, &mut read)));
    let mut write = command(io::WRITE);
    write.namespace_id = U32::new(1);
    write.cdw12 = U32::new(7);
    write.data_pointer = RawSglDescriptor::keyed(write_buffer);
    group.bench_function("write_4k", |b| b.iter(|| run(&mut io, &mut write)));
    let mut identify = command(admin::IDENTIFY);
    identify.cdw10 = U32::new(1);
    identify.data_pointer = RawSglDescriptor::keyed(identify_buffer);
    group.bench_function("identify_controller", |b| b.iter(|| run(&mut admin, &mut identify)));
    group.finish();
    let _ = Instant::now();
}

fn run(link: &mut Loopback, command: &mut RawCommand) {
    command.command_id = U16::new(command.command_id.get().wrapping_add(1));
    link.send(command.as_bytes());
    let completion = link.responses.pop_front().expect("a completion");
    assert!(completion.status().is_success());
}

criterion_group!(benches, command_path);
criterion_main!(benches);
