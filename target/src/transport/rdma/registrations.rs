//! One RDMA device's registrations of the target's pools: the host mapping (control and
//! host payload pools) and each peer pool, under the device's protection domain. A
//! buffer names only its region; a queue looks its key up here, in the registrations
//! of the device it runs on, and holds them (an `Arc`) for as long as it has work
//! requests out, so a registration outlives every work request that uses its key.

use std::sync::Arc;

use serde::Serialize;
use tracing::{info, warn};

use super::verbs::{DeviceInfo, MemoryRegion, ProtectionDomain, Registration};
use crate::core::buffer::Region;
use crate::memory::{Pools, RegionPool};

/// How the data buffers reach the NIC, as `p2ptgt stats` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPathMode {
    /// Host memory buffers only.
    Host,
    /// CMB buffers, registered with on-demand paging.
    Odp,
    /// CMB buffers, registered with pinned pages.
    Pinned,
}

pub struct Registrations {
    host: MemoryRegion,
    /// One per peer pool, by index; empty when the device could not register them all
    /// (payload then uses host memory on this device).
    peers: Vec<MemoryRegion>,
    pub mode: DataPathMode,
    // Dropped last: the pools' memory stays mapped while a registration covers it.
    _pools: Pools,
}

impl Registrations {
    /// Registers the host mapping (required) and every peer pool (all or none), in the
    /// order pinned, on-demand paging.
    pub fn register(pd: &Arc<ProtectionDomain>, info: &DeviceInfo, pools: &Pools) -> Result<Registrations, String> {
        let host = pools.host_memory();
        #[allow(unsafe_code)]
        // SAFETY: the host mapping is kept alive by `_pools`, dropped after the region.
        let host_mr = unsafe { MemoryRegion::register(pd, host.address(), host.len_bytes(), Registration::Pinned) }
            .map_err(|e| format!("registering host buffers with {}: {e}", info.name))?;
        let (peers, mode) = register_peers(pd, info, &pools.peers);
        Ok(Registrations { host: host_mr, peers, mode, _pools: pools.clone() })
    }

    /// The local key that covers `region` on this device; `None` for a peer pool this
    /// device did not register.
    pub fn key(&self, region: Region) -> Option<u32> {
        match region {
            Region::Host => Some(self.host.local_key()),
            Region::Peer(pool) => self.peers.get(usize::from(pool)).map(MemoryRegion::local_key),
        }
    }

    /// Whether queues on this device may put payload in device memory.
    pub fn peers_usable(&self) -> bool {
        !self.peers.is_empty()
    }
}

/// Registers every peer pool; if one cannot be, none is used.
fn register_peers(pd: &Arc<ProtectionDomain>, info: &DeviceInfo, peers: &[Arc<RegionPool>]) -> (Vec<MemoryRegion>, DataPathMode) {
    if peers.is_empty() {
        return (Vec::new(), DataPathMode::Host);
    }
    let mut regions = Vec::new();
    let mut worst = DataPathMode::Pinned;
    for pool in peers {
        match register_cmb(pd, info, pool) {
            Some(mr) => {
                if mr.registration == Registration::Odp {
                    worst = DataPathMode::Odp;
                }
                regions.push(mr);
            }
            None => return (Vec::new(), DataPathMode::Host),
        }
    }
    (regions, worst)
}

fn register_cmb(pd: &Arc<ProtectionDomain>, info: &DeviceInfo, cmb: &RegionPool) -> Option<MemoryRegion> {
    let (address, len) = (cmb.memory.address(), cmb.memory.len_bytes());
    #[allow(unsafe_code)]
    // SAFETY: the p2pmem mapping is the pool's, kept alive by `Registrations::_pools`.
    let pinned_error = match unsafe { MemoryRegion::register(pd, address, len, Registration::Pinned) } {
        Ok(mr) => return Some(mr),
        Err(e) => e,
    };
    if !info.odp_rc {
        warn!(device = %info.name, error = %pinned_error, "cannot register the CMB (pinned registration refused, no RC on-demand paging): payload uses host memory on this device; remedy: a NIC with ODP or dma-buf MRs");
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: as above.
    match unsafe { MemoryRegion::register(pd, address, len, Registration::Odp) } {
        Ok(mr) => {
            info!(device = %info.name, pinned_error = %pinned_error, "CMB registered with on-demand paging");
            Some(mr)
        }
        Err(e) => {
            warn!(device = %info.name, pinned_error = %pinned_error, odp_error = %e, "cannot register the CMB: payload uses host memory on this device");
            None
        }
    }
}
