//! Counters the target exposes through `p2ptgt stats`. Plain atomics, updated on the
//! data path with relaxed ordering: they are reports, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::buffer::Region;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, value: u64) {
        self.0.fetch_add(value, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    pub fn set_max(&self, value: u64) {
        self.0.fetch_max(value, Relaxed);
    }
}

impl Serialize for Counter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.get())
    }
}

/// Payload bytes moved through each kind of buffer, target wide.
#[derive(Debug, Default, Serialize)]
pub struct PayloadStats {
    pub payload_bytes_host: Counter,
    pub payload_bytes_cmb: Counter,
}

impl PayloadStats {
    pub fn count(&self, region: Region, bytes: u64) {
        match region {
            Region::Host => self.payload_bytes_host.add(bytes),
            Region::Cmb => self.payload_bytes_cmb.add(bytes),
        }
    }
}

/// Command counts and bytes of one namespace or one queue.
#[derive(Debug, Default, Serialize)]
pub struct IoStats {
    pub read_commands: Counter,
    pub write_commands: Counter,
    pub other_commands: Counter,
    pub read_bytes: Counter,
    pub write_bytes: Counter,
    pub errors: Counter,
    /// Times a command waited for a free data buffer.
    pub buffer_waits: Counter,
    /// The longest a command of this queue waited for one, in microseconds.
    pub longest_buffer_wait_us: Counter,
    /// Backend reads and writes completed by polling the device, not by an interrupt.
    pub polled_ios: Counter,
}
