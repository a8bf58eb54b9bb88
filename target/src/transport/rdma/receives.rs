//! Where a queue's command capsules land: its own receive queue and slots, or a shared
//! receive queue that a poll group keeps per device, whose slots serve every I/O queue
//! the group runs there. With the shared one, receive memory grows with poll groups and
//! devices, not with connections. A host that sends while every slot is taken gets
//! receiver-not-ready (RNR) and retries (the Linux host retries without limit), so the
//! slots should cover the entries of the queues on them: a warning says when they
//! do not.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tracing::warn;

use super::verbs::{ProtectionDomain, RecvBuffers, SharedReceiveQueue};
use crate::core::Capsule;

/// The kind bits of a receive's wr_id; the low 32 bits carry the slot.
pub const RECV: u64 = 1 << 48;

/// A poll group's shared receive queue on one device, with its slots. A slot whose loan
/// ends goes back on its own (see [`RecvBuffers::take_returned`]) and is posted again
/// by the next step of any queue on it ([`SharedReceives::post_returned`]).
pub struct SharedReceives {
    // Field order: the SRQ (once no QP holds it) goes before its slots' registration.
    srq: Arc<SharedReceiveQueue>,
    buffers: RecvBuffers,
    /// Entries of the queues on it (see [`Member`]).
    promised: AtomicU32,
}

impl SharedReceives {
    /// An SRQ of `entries` slots with `data_bytes` of in-capsule data each, every slot
    /// posted.
    pub fn new(pd: &Arc<ProtectionDomain>, entries: u32, data_bytes: u32) -> io::Result<SharedReceives> {
        let srq = Arc::new(SharedReceiveQueue::new(pd, entries)?);
        let buffers = RecvBuffers::new(pd, entries, data_bytes, true)?;
        for slot in 0..entries {
            buffers.post_shared(&srq, RECV | u64::from(slot), slot)?;
        }
        Ok(SharedReceives { srq, buffers, promised: AtomicU32::new(0) })
    }

    /// A queue of `entries` commands joins; it leaves when the [`Member`] drops.
    pub fn join(self: &Arc<Self>, entries: u32) -> Member {
        let promised = self.promised.fetch_add(entries, Ordering::Relaxed).saturating_add(entries);
        if promised > self.buffers.count {
            warn!(
                slots = self.buffers.count,
                queue_entries = promised,
                "the queues on this shared receive queue may send more commands at once than it has slots: a host that finds none is told to retry (RNR); raise --srq-entries"
            );
        }
        Member { shared: self.clone(), entries }
    }

    pub fn srq(&self) -> &Arc<SharedReceiveQueue> {
        &self.srq
    }

    /// Posts again every slot whose loan has ended; `scratch` is reused between calls.
    pub fn post_returned(&self, scratch: &mut Vec<u32>) {
        scratch.clear();
        self.buffers.take_returned(scratch);
        for &slot in scratch.iter() {
            if let Err(error) = self.give_back(slot) {
                // Lost to the SRQ for good: the other slots go on serving.
                warn!(slot, %error, "posting a slot to the shared receive queue failed");
            }
        }
    }

    /// Posts slot `slot` again: its receive completed without a capsule (in error, or
    /// on a closing queue), so no loan of it exists.
    pub fn give_back(&self, slot: u32) -> io::Result<()> {
        self.buffers.post_shared(&self.srq, RECV | u64::from(slot), slot)
    }
}

/// A queue on a shared receive queue, counted in its `promised` entries until dropped.
pub struct Member {
    shared: Arc<SharedReceives>,
    entries: u32,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.shared.promised.fetch_sub(self.entries, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Member {
    type Target = SharedReceives;

    fn deref(&self) -> &SharedReceives {
        &self.shared
    }
}

/// A queue's receives.
pub enum Receives {
    /// Its own receive queue and slots, posted again by hand.
    Own(RecvBuffers),
    /// Its poll group's shared receive queue on its device.
    Shared(Member),
}

impl Receives {
    pub fn buffers(&self) -> &RecvBuffers {
        match self {
            Receives::Own(buffers) => buffers,
            Receives::Shared(shared) => &shared.buffers,
        }
    }

    /// What a completed receive of `byte_len` bytes delivered into slot `slot`.
    pub fn completed(&self, slot: u32, byte_len: u32) -> Capsule<'_> {
        self.buffers().completed(slot, byte_len)
    }

    pub fn local_key(&self) -> u32 {
        self.buffers().local_key()
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Receives::Shared(_))
    }
}
