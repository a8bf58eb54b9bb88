//! An in-process "host" for tests and benches: remote memory is a `Vec` per key and the
//! backend runs through the real executor. In-capsule data lands in receive slots of
//! the loopback's own memory, outside the pools, and write data is lent from there as
//! the RDMA transport lends it.
//!
//! By default every action completes at once, in order. With [`Loopback::hold`] set,
//! RDMA READs, backend completions and responses wait until a test releases them one by
//! one ([`Loopback::complete_fetch`], [`Loopback::complete_backend`],
//! [`Loopback::complete_send`]) or closes the connection, which flushes them: the
//! interleavings the RDMA transport sees.
#![allow(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::wire::Status;
use crate::backend::uring::Done;
use crate::backend::Executor;
use crate::core::{Action, Buffer, BufferPool, Capsule, DataBuffer, DisconnectReason, Lease, QueueConfig, Queue, Region, ResponseData, SlotHome, SlotLoan, Tag, Target};
use crate::memory::{PoolHandle, Pools};
use crate::wire::{Completion, KeyedSgl};

/// Injected faults, for queue-full and error paths.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Fail the next N host-to-controller transfers.
    pub fail_fetches: u32,
}

/// Receive slots for in-capsule data, in memory of their own.
struct Slots {
    memory: Arc<memmap2::MmapMut>,
    slot_bytes: usize,
    free: Vec<u32>,
    count: u32,
}

/// The loopback takes its slots back by hand (`Slots::give_back`).
impl SlotHome for memmap2::MmapMut {}

impl Slots {
    fn new(count: u32, slot_bytes: usize) -> Slots {
        let memory = memmap2::MmapMut::map_anon((count as usize * slot_bytes).max(1)).expect("receive slot memory");
        Slots { memory: Arc::new(memory), slot_bytes, free: (0..count).rev().collect(), count }
    }

    /// A slot holding `data`, lent for the capsule; `None` if every slot is out or the
    /// data does not fit (the capsule then arrives without a loan).
    fn lend(&mut self, data: &[u8]) -> Option<SlotLoan> {
        if data.len() > self.slot_bytes {
            return None;
        }
        let slot = self.free.pop()?;
        let address = self.memory.as_ptr() as u64 + u64::from(slot) * self.slot_bytes as u64;
        // SAFETY: `slot` was free, so no loan covers its bytes; they are inside the
        // mapping (slot < count, data.len() <= slot_bytes).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), address as *mut u8, data.len()) };
        let buffer = Buffer { region: Region::Host, address, len_bytes: data.len() as u32 };
        let home: Arc<dyn SlotHome> = self.memory.clone();
        // SAFETY: the slot is ours and free; it goes back to `free` only when the loan
        // comes back by hand (`home` does nothing with it); `home` is its mapping.
        Some(unsafe { SlotLoan::new(buffer, slot, home) })
    }

    fn give_back(&mut self, loan: SlotLoan) {
        self.free.push(loan.slot());
    }

    fn out(&self) -> usize {
        self.count as usize - self.free.len()
    }
}

/// A response the loopback holds back.
struct HeldSend {
    tag: Tag,
    completion: Completion,
    invalidate_key: Option<u32>,
    data: Option<ResponseData>,
}

pub struct Loopback {
    pub queue: Queue,
    /// For the copies in and out of leases that the NIC would do.
    memory: PoolHandle,
    slots: Slots,
    executor: Executor,
    remote: HashMap<u32, Vec<u8>>,
    next_key: u32,
    pub responses: VecDeque<Completion>,
    pub invalidated: Vec<u32>,
    pub disconnected: Option<DisconnectReason>,
    pub faults: Faults,
    /// How many capsules' data the queue has borrowed so far.
    pub lent_total: u32,
    /// Hold RDMA READs, backend completions and responses until released.
    pub hold: bool,
    fetches: VecDeque<(Tag, KeyedSgl, Lease)>,
    backend_done: VecDeque<Done>,
    sends: VecDeque<HeldSend>,
    closed: bool,
}

impl Loopback {
    pub fn new(target: Arc<Target>, pools: &Pools, config: QueueConfig) -> Loopback {
        Loopback {
            queue: Queue::new(target, config, Box::new(pools.handle(false, Box::new(|| {})))),
            memory: pools.handle(false, Box::new(|| {})),
            slots: Slots::new(config.entries.saturating_mul(2).max(1), 8192),
            executor: Executor::new(256, false).expect("io_uring for the loopback transport"),
            remote: HashMap::new(),
            next_key: 0x100,
            responses: VecDeque::new(),
            invalidated: Vec::new(),
            disconnected: None,
            faults: Faults::default(),
            lent_total: 0,
            hold: false,
            fetches: VecDeque::new(),
            backend_done: VecDeque::new(),
            sends: VecDeque::new(),
            closed: false,
        }
    }

    /// Exposes host memory holding `data` under a fresh key.
    pub fn register(&mut self, data: Vec<u8>, invalidate: bool) -> KeyedSgl {
        self.next_key += 1;
        let keyed = KeyedSgl { address: 0x1000, length_bytes: data.len() as u32, key: self.next_key, invalidate };
        self.remote.insert(self.next_key, data);
        keyed
    }

    pub fn remote(&self, key: u32) -> &[u8] {
        &self.remote[&key]
    }

    /// Delivers a capsule and runs the queue until nothing is left to do.
    pub fn send(&mut self, capsule: &[u8]) {
        self.deliver(capsule);
        self.run();
    }

    /// Delivers a capsule; the caller runs the queue.
    pub fn deliver(&mut self, capsule: &[u8]) {
        if self.closed {
            return;
        }
        let split = capsule.len().min(crate::wire::command::COMMAND_BYTES);
        let data = capsule.get(split..).unwrap_or_default();
        let loan = if data.is_empty() { None } else { self.slots.lend(data) };
        let Capsule { command, data, .. } = Capsule::contiguous(capsule);
        let lent = loan.is_some();
        match self.queue.receive(Instant::now(), Capsule { command, data, loan }) {
            Some(loan) => self.slots.give_back(loan),
            None if lent => self.lent_total += 1,
            None => {}
        }
    }

    /// Receive slots lent to requests and not back yet.
    pub fn lent_outstanding(&self) -> usize {
        self.slots.out()
    }

    /// Events held back: READs, backend completions, responses.
    pub fn held(&self) -> (usize, usize, usize) {
        (self.fetches.len(), self.backend_done.len() + self.executor.in_flight(), self.sends.len())
    }

    /// Bytes (in whole pages) of pool leases this loopback holds for the "NIC" and the
    /// "SSD": READs in flight, pushed responses, backend completions not yet reported.
    pub fn held_lease_bytes(&self) -> u64 {
        let pages = |buffer: &DataBuffer| match buffer {
            DataBuffer::Pool(lease) => u64::from(lease.buffer().len_bytes).div_ceil(4096) * 4096,
            DataBuffer::Slot(_) => 0,
        };
        let fetches = self.fetches.iter().map(|(_, _, lease)| u64::from(lease.buffer().len_bytes).div_ceil(4096) * 4096);
        let sends = self.sends.iter().filter_map(|send| match &send.data {
            Some(ResponseData::Push { buffer, .. }) => Some(pages(buffer)),
            _ => None,
        });
        let done = self.backend_done.iter().filter_map(|(_, _, buffer)| buffer.as_ref().map(pages));
        fetches.chain(sends).chain(done).sum()
    }

    /// Processes actions (and, unless holding, completions) until idle.
    pub fn run(&mut self) {
        loop {
            self.queue.poll_grants(Instant::now());
            self.queue.poll_ranges();
            while let Some(action) = self.queue.poll_action() {
                self.perform(action);
            }
            self.executor.flush().expect("io_uring submit");
            while let Some(done) = self.executor.poll_done() {
                self.backend_done.push_back(done);
            }
            if self.hold {
                return;
            }
            let Some((tag, result, buffer)) = self.backend_done.pop_front() else {
                if self.executor.in_flight() == 0 {
                    return;
                }
                std::thread::yield_now();
                continue;
            };
            self.queue.handle_backend_done(Instant::now(), tag, result.map_err(|error| Status::from(&error)), buffer);
        }
    }

    /// Releases the oldest held RDMA READ. Returns false if none was held.
    pub fn complete_fetch(&mut self) -> bool {
        let Some((tag, remote, lease)) = self.fetches.pop_front() else { return false };
        self.fetch(tag, remote, lease);
        self.run();
        true
    }

    /// Releases the oldest held backend completion.
    pub fn complete_backend(&mut self) -> bool {
        let Some((tag, result, buffer)) = self.backend_done.pop_front() else { return false };
        self.queue.handle_backend_done(Instant::now(), tag, result.map_err(|error| Status::from(&error)), buffer);
        self.run();
        true
    }

    /// Releases the oldest held response.
    pub fn complete_send(&mut self) -> bool {
        let Some(send) = self.sends.pop_front() else { return false };
        self.deliver_response(send);
        self.run();
        true
    }

    /// The connection breaks: the queue closes, and held READs and responses are
    /// flushed (their buffers come back as the NIC's flush would give them back).
    /// Backend operations still complete when released.
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.queue.handle_close();
        }
        let now = Instant::now();
        while let Some((tag, _, lease)) = self.fetches.pop_front() {
            self.queue.handle_data_fetched(now, tag, lease, Err(()));
        }
        while let Some(send) = self.sends.pop_front() {
            self.release(send.data);
            self.queue.handle_response_sent(send.tag);
        }
        self.run();
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::FetchData { tag, remote, lease } => {
                if self.hold {
                    self.fetches.push_back((tag, remote, lease));
                } else {
                    self.fetch(tag, remote, lease);
                }
            }
            Action::Submit { tag, namespace, op } => self.executor.submit_to(tag, namespace.backend.as_ref(), op),
            Action::Respond { tag, completion, invalidate_key, data } => {
                let send = HeldSend { tag, completion, invalidate_key, data };
                if self.hold {
                    self.sends.push_back(send);
                } else {
                    self.deliver_response(send);
                }
            }
            Action::Disconnect { reason } => {
                self.disconnected = Some(reason);
                self.close();
            }
        }
    }

    fn fetch(&mut self, tag: Tag, remote: KeyedSgl, lease: Lease) {
        let now = Instant::now();
        if self.faults.fail_fetches > 0 {
            self.faults.fail_fetches -= 1;
            self.queue.handle_data_fetched(now, tag, lease, Err(()));
            return;
        }
        let Some(bytes) = self.window(remote).map(<[u8]>::to_vec) else {
            self.queue.handle_data_fetched(now, tag, lease, Err(()));
            return;
        };
        self.memory.write(&lease, &bytes);
        self.queue.handle_data_fetched(now, tag, lease, Ok(()));
    }

    fn deliver_response(&mut self, send: HeldSend) {
        if let Some(ResponseData::Push { remote, buffer }) = &send.data {
            let mut bytes = vec![0u8; remote.length_bytes as usize];
            match buffer {
                DataBuffer::Pool(lease) => self.memory.read(lease, &mut bytes),
                DataBuffer::Slot(_) => unreachable!("the core pushes only pool buffers"),
            }
            if let Some(target) = self.remote.get_mut(&remote.key) {
                let len = bytes.len().min(target.len());
                target[..len].copy_from_slice(&bytes[..len]);
            }
        }
        if let Some(key) = send.invalidate_key {
            self.invalidated.push(key);
        }
        self.responses.push_back(send.completion);
        self.release(send.data);
        self.queue.handle_response_sent(send.tag);
    }

    /// A response's buffer is free: a lease goes back to its pool, a slot to the slots.
    fn release(&mut self, data: Option<ResponseData>) {
        match data {
            Some(ResponseData::ReturnSlot(loan)) | Some(ResponseData::Push { buffer: DataBuffer::Slot(loan), .. }) => self.slots.give_back(loan),
            Some(ResponseData::Push { buffer: DataBuffer::Pool(lease), .. }) => drop(lease),
            None => {}
        }
    }

    fn window(&self, remote: KeyedSgl) -> Option<&[u8]> {
        self.remote.get(&remote.key)?.get(..remote.length_bytes as usize)
    }
}
