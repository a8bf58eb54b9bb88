//! Subsystems, their namespaces and host access lists, as the core sees them (nvmet's
//! configfs objects, without configfs).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::buffer::Placement;
use super::range_lock::RangeLocks;
use super::stats::IoStats;
use super::storage::Storage;

/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

#[derive(Debug)]
pub struct Namespace {
    pub id: u32,
    pub backend: Arc<dyn Storage>,
    pub uuid: [u8; 16],
    pub nguid: [u8; 16],
    /// Where this namespace's Read/Write payload goes: `Payload` lets the pool put it
    /// in the CMB; `Control` pins it to host memory (the device cannot reach the CMB).
    pub payload_placement: Placement,
    pub stats: IoStats,
    /// Ranges fused Compare and Write holds against every other command.
    pub range_locks: Arc<RangeLocks>,
}

impl Namespace {
    pub fn size_blocks(&self) -> u64 {
        self.backend.size_bytes() >> self.backend.block_size_shift()
    }
}

#[derive(Debug)]
pub struct Subsystem {
    pub nqn: String,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// IEEE OUI reported in Identify Controller.
    pub ieee_oui: u32,
    /// The CNTLIDs this subsystem's controllers take (nvmet's cntlid_min..cntlid_max).
    pub controller_ids: std::ops::RangeInclusive<u16>,
    pub allow_any_host: bool,
    pub allowed_hosts: Vec<String>,
    pub namespaces: BTreeMap<u32, Arc<Namespace>>,
}

impl Subsystem {
    pub fn allows(&self, host_nqn: &str) -> bool {
        self.allow_any_host || self.allowed_hosts.iter().any(|h| h == host_nqn)
    }

    pub fn namespace(&self, id: u32) -> Option<&Arc<Namespace>> {
        self.namespaces.get(&id)
    }
}
