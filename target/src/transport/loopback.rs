//! An in-process "host" for tests and benches: remote memory is a `Vec` per key, the
//! backend runs through the real executor, and every action completes in order.
//! In-capsule data lands in a pool buffer the queue may borrow, as an RDMA receive slot.
#![allow(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::Executor;
use crate::core::{Action, Buffer, BufferPool, Capsule, CapsuleUse, DisconnectReason, Placement, Queue, QueueConfig, Tag, Target};
use crate::memory::{PoolHandle, Pools};
use crate::wire::{Completion, KeyedSgl};

/// Injected faults, for queue-full and error paths.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Fail the next N host-to-controller transfers.
    pub fail_fetches: u32,
}

pub struct Loopback {
    pub queue: Queue,
    memory: PoolHandle,
    executor: Executor,
    remote: HashMap<u32, Vec<u8>>,
    next_key: u32,
    pub responses: VecDeque<Completion>,
    pub invalidated: Vec<u32>,
    pub disconnected: Option<DisconnectReason>,
    pub faults: Faults,
    /// Receive buffers the queue borrowed, by tag, until their response is sent.
    lent: HashMap<Tag, Buffer>,
    /// How many capsules' data the queue has borrowed so far.
    pub lent_total: u32,
}

impl Loopback {
    pub fn new(target: Arc<Target>, pools: &Pools, config: QueueConfig) -> Loopback {
        Loopback {
            queue: Queue::new(target, config, Box::new(pools.handle(false))),
            memory: pools.handle(false),
            executor: Executor::new(256, false).expect("io_uring for the loopback transport"),
            remote: HashMap::new(),
            next_key: 0x100,
            responses: VecDeque::new(),
            invalidated: Vec::new(),
            disconnected: None,
            faults: Faults::default(),
            lent: HashMap::new(),
            lent_total: 0,
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
        let Capsule { command, data, .. } = Capsule::contiguous(capsule);
        let slot = if data.is_empty() { None } else { self.memory.allocate(data.len() as u32, Placement::Control) };
        if let Some(slot) = &slot {
            self.memory.write(slot, data);
        }
        let lendable = slot.map(|slot| Buffer { len_bytes: data.len() as u32, ..slot });
        match (self.queue.receive(Instant::now(), Capsule { command, data, lendable }), slot) {
            (CapsuleUse::LentTo(tag), Some(slot)) => {
                self.lent.insert(tag, slot);
                self.lent_total += 1;
            }
            (_, Some(slot)) => self.memory.release(slot),
            (_, None) => {}
        }
        self.run();
    }

    /// Receive buffers still lent to requests.
    pub fn lent_outstanding(&self) -> usize {
        self.lent.len()
    }

    /// Processes actions and backend completions until idle.
    pub fn run(&mut self) {
        loop {
            while let Some(action) = self.queue.poll_action() {
                self.perform(action);
            }
            self.executor.flush().expect("io_uring submit");
            if self.executor.in_flight() == 0 {
                return;
            }
            if let Some((tag, result)) = self.executor.poll_done() {
                self.queue.handle_backend_done(tag, result);
            } else {
                std::thread::yield_now();
            }
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::FetchData { tag, remote, buffer } => {
                if self.faults.fail_fetches > 0 {
                    self.faults.fail_fetches -= 1;
                    self.queue.handle_data_fetched(tag, Err(()));
                    return;
                }
                let Some(bytes) = self.window(remote) else {
                    self.queue.handle_data_fetched(tag, Err(()));
                    return;
                };
                let bytes = bytes.to_vec();
                self.memory.write(&buffer, &bytes);
                self.queue.handle_data_fetched(tag, Ok(()));
            }
            Action::Submit { tag, namespace, op } => {
                // SAFETY: the queue's pool keeps the buffer allocated until
                // handle_backend_done for this tag, which only `run` calls.
                unsafe { self.executor.submit(tag, &namespace.backend, op) };
            }
            Action::PushData { remote, buffer, .. } => {
                let mut bytes = vec![0u8; remote.length_bytes as usize];
                self.memory.read(&buffer, &mut bytes);
                if let Some(target) = self.remote.get_mut(&remote.key) {
                    let len = bytes.len().min(target.len());
                    target[..len].copy_from_slice(&bytes[..len]);
                }
            }
            Action::Respond { tag, completion, invalidate_key } => {
                if let Some(key) = invalidate_key {
                    self.invalidated.push(key);
                }
                self.responses.push_back(completion);
                self.queue.handle_response_sent(tag);
                if let Some(slot) = self.lent.remove(&tag) {
                    self.memory.release(slot);
                }
            }
            Action::Disconnect { reason } => {
                self.disconnected = Some(reason);
                self.queue.handle_close();
            }
        }
    }

    fn window(&self, remote: KeyedSgl) -> Option<&[u8]> {
        self.remote.get(&remote.key)?.get(..remote.length_bytes as usize)
    }
}
