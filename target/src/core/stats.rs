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

/// Payload bytes moved through each kind of buffer: target wide, and per namespace.
#[derive(Debug, Default, Serialize)]
pub struct PayloadStats {
    pub payload_bytes_host: Counter,
    pub payload_bytes_cmb: Counter,
}

impl PayloadStats {
    pub fn count(&self, region: Region, bytes: u64) {
        match region {
            Region::Host => self.payload_bytes_host.add(bytes),
            Region::Peer(_) => self.payload_bytes_cmb.add(bytes),
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
    /// Capsule arrival to response, for I/O queues.
    pub latency: LatencyHistogram,
}

/// Power-of-two microsecond buckets: bucket i counts latencies below 2^i µs, the last
/// one everything from 2^22 µs (about 4 s) on.
pub const LATENCY_BUCKETS: usize = 24;

/// A latency histogram on plain atomics: recording is one increment and one add.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [Counter; LATENCY_BUCKETS],
    sum_us: Counter,
}

impl LatencyHistogram {
    pub fn record(&self, latency: std::time::Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // 2^i µs is the first bound above `us`: i = bit length of `us`.
        let index = usize::try_from(u64::BITS.saturating_sub(us.leading_zeros())).unwrap_or(usize::MAX).min(LATENCY_BUCKETS.saturating_sub(1));
        if let Some(bucket) = self.buckets.get(index) {
            bucket.add(1);
        }
        self.sum_us.add(us);
    }

    /// (upper bound in µs, `None` for the last, open bucket; count) per bucket.
    pub fn buckets(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        self.buckets.iter().enumerate().map(|(index, count)| {
            let bound = (index.saturating_add(1) < LATENCY_BUCKETS).then(|| 1u64.checked_shl(index as u32).unwrap_or(u64::MAX));
            (bound, count.get())
        })
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us.get()
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(Counter::get).fold(0, u64::saturating_add)
    }
}

impl Serialize for LatencyHistogram {
    /// The non-empty buckets as {"below_us": N, "commands": M}.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let buckets: Vec<serde_json::Value> = self
            .buckets()
            .filter(|(_, count)| *count > 0)
            .map(|(bound, count)| serde_json::json!({"below_us": bound, "commands": count}))
            .collect();
        buckets.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latencies_land_below_the_next_power_of_two() {
        let histogram = LatencyHistogram::default();
        for us in [0, 1, 3, 4, 1000, 10_000_000] {
            histogram.record(Duration::from_micros(us));
        }
        let buckets: Vec<_> = histogram.buckets().filter(|(_, count)| *count > 0).collect();
        assert_eq!(buckets, vec![(Some(1), 1), (Some(2), 1), (Some(4), 1), (Some(8), 1), (Some(1024), 1), (None, 1)]);
        assert_eq!(histogram.count(), 6);
        assert_eq!(histogram.sum_us(), 10_001_008);
    }
}
