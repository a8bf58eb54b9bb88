//! A test host over the loopback transport: builds capsules the way the Linux host does
//! and checks completions.
#![allow(dead_code)]

use std::sync::Arc;

use p2ptgt::backend::{Backend, MemoryBackend};
use p2ptgt::core::{HostAccess, Limits, Namespace, Placement, Port, QueueConfig, Subsystem, Target, DISCOVERY_NQN};
use p2ptgt::memory::Pools;
use p2ptgt::transport::loopback::Loopback;
use p2ptgt::wire::command::{admin, fabrics_type, io, FABRICS};
use p2ptgt::wire::fabrics::{property, ConnectData};
use p2ptgt::wire::sgl::RawSglDescriptor;
use p2ptgt::wire::{Completion, KeyedSgl, RawCommand, Status};
use zerocopy::little_endian::{U16, U32};
use zerocopy::IntoBytes;

pub const SUBSYSTEM: &str = "nqn.2026-11.io.p2ptgt:test";
pub const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-1111-4111-8111-111111111111";
pub const HOST_ID: [u8; 16] = [0x11; 16];
pub const NAMESPACE_BYTES: usize = 8 << 20;

pub fn memory_namespace(id: u32, bytes: usize) -> Arc<Namespace> {
    Arc::new(Namespace::new(id, Arc::new(Backend::Memory(MemoryBackend::new(bytes, 9))), [id as u8; 16], [0xA0 | id as u8; 16], Placement::Host))
}

pub fn target_with(namespaces: Vec<Arc<Namespace>>, allowed: Vec<String>, limits: Limits) -> Arc<Target> {
    let port = Port::new(1, "192.0.2.1", "4420", false);
    target_on(port, namespaces, allowed, limits)
}

/// A target listening on `port`, with one subsystem of `namespaces`.
pub fn target_on(port: Port, namespaces: Vec<Arc<Namespace>>, allowed: Vec<String>, limits: Limits) -> Arc<Target> {
    let hosts = HostAccess { allow_any_host: allowed.is_empty(), allowed_hosts: allowed.into_iter().collect() };
    let mut subsystem = Subsystem::new(SUBSYSTEM, hosts, namespaces);
    subsystem.serial = "p2ptgt-test".into();
    subsystem.firmware = "0.1".into();
    Arc::new(Target::new(vec![subsystem], port, limits))
}

pub fn target() -> Arc<Target> {
    target_with(vec![memory_namespace(1, NAMESPACE_BYTES)], Vec::new(), Limits::default())
}

pub fn command(opcode: u8, command_id: u16) -> RawCommand {
    // No data: a null keyed descriptor, as the Linux host sends.
    let none = RawSglDescriptor::keyed(KeyedSgl { address: 0, length_bytes: 0, key: 0, invalidate: false });
    RawCommand { opcode, flags: 0x40, command_id: U16::new(command_id), data_pointer: none, ..Default::default() }
}

pub struct TestHost {
    pub link: Loopback,
    pub target: Arc<Target>,
    next_id: u16,
}

impl TestHost {
    pub fn new(target: &Arc<Target>, pools: &Pools, queue_id: u16, entries: u32) -> TestHost {
        TestHost::with_config(target, pools, QueueConfig { queue_id, entries, local_address: None, port_id: 1 })
    }

    pub fn with_config(target: &Arc<Target>, pools: &Pools, config: QueueConfig) -> TestHost {
        TestHost { link: Loopback::new(target.clone(), pools, config), target: target.clone(), next_id: 1 }
    }

    pub fn admin(target: &Arc<Target>) -> TestHost {
        TestHost::new(target, &Pools::host_only(8 << 20).unwrap(), 0, 32)
    }

    fn id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Sends one command and returns its completion.
    pub fn call(&mut self, mut cmd: RawCommand, in_capsule: &[u8]) -> Completion {
        let id = self.id();
        cmd.command_id = U16::new(id);
        let mut capsule = cmd.as_bytes().to_vec();
        capsule.extend_from_slice(in_capsule);
        self.link.send(&capsule);
        let position = self.link.responses.iter().position(|c| c.command_id.get() == id);
        match position.and_then(|p| self.link.responses.remove(p)) {
            Some(completion) => completion,
            None => panic!("no completion for command {id} (disconnected: {:?})", self.link.disconnected),
        }
    }

    /// The capsule of `cmd` carrying `data` in the capsule, or behind a keyed SGL to a
    /// buffer the link registers.
    pub fn capsule(&mut self, mut cmd: RawCommand, data: Vec<u8>, in_capsule: bool) -> Vec<u8> {
        if in_capsule {
            cmd.data_pointer = RawSglDescriptor::in_capsule(data.len() as u32);
            let mut capsule = cmd.as_bytes().to_vec();
            capsule.extend_from_slice(&data);
            capsule
        } else {
            cmd.data_pointer = RawSglDescriptor::keyed(self.link.register(data, false));
            cmd.as_bytes().to_vec()
        }
    }

    /// A command whose data the target writes to a host buffer of `len` bytes.
    pub fn call_read(&mut self, mut cmd: RawCommand, len: usize) -> (Completion, Vec<u8>) {
        let keyed = self.link.register(vec![0u8; len], true);
        cmd.data_pointer = RawSglDescriptor::keyed(keyed);
        let completion = self.call(cmd, &[]);
        (completion, self.link.remote(keyed.key).to_vec())
    }

    /// A command whose data the target fetches from a host buffer.
    pub fn call_write(&mut self, mut cmd: RawCommand, data: Vec<u8>) -> Completion {
        let keyed = self.link.register(data, false);
        cmd.data_pointer = RawSglDescriptor::keyed(keyed);
        self.call(cmd, &[])
    }

    pub fn connect(&mut self, subsystem: &str, host: &str, queue_id: u16, controller_id: u16, sqsize: u16, in_capsule: bool) -> Completion {
        self.connect_as(subsystem, host, HOST_ID, queue_id, controller_id, sqsize, in_capsule)
    }

    /// Connect with Host Identifier `host_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn connect_as(&mut self, subsystem: &str, host: &str, host_id: [u8; 16], queue_id: u16, controller_id: u16, sqsize: u16, in_capsule: bool) -> Completion {
        let mut cmd = command(FABRICS, 0);
        cmd.namespace_id = U32::new(u32::from(fabrics_type::CONNECT));
        cmd.cdw10 = U32::new(u32::from(queue_id) << 16);
        cmd.cdw11 = U32::new(u32::from(sqsize));
        cmd.cdw12 = U32::new(if queue_id == 0 { 5000 } else { 0 });
        let data = ConnectData::new(host_id, controller_id, subsystem, host).as_bytes().to_vec();
        if in_capsule {
            cmd.data_pointer = RawSglDescriptor::in_capsule(1024);
            self.call(cmd, &data)
        } else {
            self.call_write(cmd, data)
        }
    }

    pub fn property_get(&mut self, offset: u32, eight_bytes: bool) -> Completion {
        let mut cmd = command(FABRICS, 0);
        cmd.namespace_id = U32::new(u32::from(fabrics_type::PROPERTY_GET));
        cmd.cdw10 = U32::new(u32::from(eight_bytes));
        cmd.cdw11 = U32::new(offset);
        self.call(cmd, &[])
    }

    pub fn property_set(&mut self, offset: u32, value: u32) -> Completion {
        let mut cmd = command(FABRICS, 0);
        cmd.namespace_id = U32::new(u32::from(fabrics_type::PROPERTY_SET));
        cmd.cdw11 = U32::new(offset);
        cmd.cdw12 = U32::new(value);
        self.call(cmd, &[])
    }

    /// The Linux host's admin sequence (Connect, read CAP, CC with EN clear, then set,
    /// read CSTS): returns the CNTLID.
    pub fn bring_up(&mut self, subsystem: &str, host: &str) -> u16 {
        self.bring_up_as(subsystem, host, HOST_ID)
    }

    /// [`TestHost::bring_up`] with Host Identifier `host_id`.
    pub fn bring_up_as(&mut self, subsystem: &str, host: &str, host_id: [u8; 16]) -> u16 {
        let connect = self.connect_as(subsystem, host, host_id, 0, 0xFFFF, 31, false);
        assert_eq!(connect.status(), Status::SUCCESS);
        let cap = self.property_get(property::CAP, true);
        assert_eq!(cap.status(), Status::SUCCESS);
        // CC: IOCQES 4, IOSQES 6, EN 0, then EN 1.
        let cc = 4 << 20 | 6 << 16;
        assert_eq!(self.property_set(property::CC, cc).status(), Status::SUCCESS);
        assert_eq!(self.property_set(property::CC, cc | 1).status(), Status::SUCCESS);
        let csts = self.property_get(property::CSTS, false);
        assert_eq!(csts.result.get() & 1, 1, "CSTS.RDY");
        connect.result.get() as u16
    }

    pub fn identify(&mut self, cns: u8, namespace_id: u32) -> (Completion, Vec<u8>) {
        let mut cmd = command(admin::IDENTIFY, 0);
        cmd.namespace_id = U32::new(namespace_id);
        cmd.cdw10 = U32::new(u32::from(cns));
        self.call_read(cmd, 4096)
    }

    pub fn get_log(&mut self, log_id: u8, offset: u64, len: usize) -> (Completion, Vec<u8>) {
        let mut cmd = command(admin::GET_LOG_PAGE, 0);
        let dwords = (len / 4 - 1) as u32;
        cmd.namespace_id = U32::new(u32::MAX);
        cmd.cdw10 = U32::new((dwords & 0xFFFF) << 16 | u32::from(log_id));
        cmd.cdw11 = U32::new(dwords >> 16);
        cmd.cdw12 = U32::new(offset as u32);
        cmd.cdw13 = U32::new((offset >> 32) as u32);
        self.call_read(cmd, len)
    }

    pub fn rw(&mut self, opcode: u8, lba: u64, blocks: u32) -> RawCommand {
        let mut cmd = command(opcode, 0);
        cmd.namespace_id = U32::new(1);
        cmd.cdw10 = U32::new(lba as u32);
        cmd.cdw11 = U32::new((lba >> 32) as u32);
        cmd.cdw12 = U32::new(blocks - 1);
        cmd
    }

    pub fn write_blocks(&mut self, lba: u64, data: Vec<u8>) -> Completion {
        let blocks = (data.len() / 512) as u32;
        let cmd = self.rw(io::WRITE, lba, blocks);
        self.call_write(cmd, data)
    }

    pub fn read_blocks(&mut self, lba: u64, blocks: u32) -> (Completion, Vec<u8>) {
        let cmd = self.rw(io::READ, lba, blocks);
        self.call_read(cmd, blocks as usize * 512)
    }
}

/// A target with one RAM namespace, an enabled controller and I/O queue 1 (32 entries)
/// connected with in-capsule Connect data, over a host pool of `pool_bytes`.
pub struct LiveQueues {
    pub target: Arc<Target>,
    pub admin: TestHost,
    pub io: TestHost,
    pub controller_id: u16,
}

pub fn live_queues(pool_bytes: usize) -> LiveQueues {
    let target = target();
    let mut admin = TestHost::admin(&target);
    let controller_id = admin.bring_up(SUBSYSTEM, HOST);
    let pools = Pools::host_only(pool_bytes).unwrap();
    let mut io = TestHost::new(&target, &pools, 1, 32);
    assert_eq!(io.connect(SUBSYSTEM, HOST, 1, controller_id, 31, true).status(), Status::SUCCESS);
    LiveQueues { target, admin, io, controller_id }
}

pub fn discovery() -> &'static str {
    DISCOVERY_NQN
}

pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}
