//! Where a namespace's payload goes. Each namespace on an NVMe SSD may use the memory of
//! any p2pmem provider its SSD can reach: its own CMB first, then one that shares a PCIe
//! switch with it (fewest links first), then one only the host bridge leads to. Whether
//! the kernel really allows the pair is asked of the kernel itself: one block is read
//! from the namespace into the provider's memory (O_DIRECT, as the data path will), and
//! a refusal there is a refusal at start-up instead of at the first I/O. A namespace
//! that reaches no provider uses host memory, and one log line says why.

use std::sync::Arc;

use crate::backend::{Backend, BackendOp, Storage};
use crate::config::P2pMem;
use crate::core::{DataBuffer, Placement};
use crate::memory::p2pmem::{Provider, Route};
use crate::memory::RegionPool;

/// What new namespaces may use: the peer pools the target mapped at start-up.
#[derive(Clone)]
pub struct PlacementPolicy {
    /// The target's peer pools, in index order.
    pub peers: Vec<Arc<RegionPool>>,
    /// The host payload pool, for copies through host memory.
    pub host: Option<Arc<RegionPool>>,
    /// `--p2pmem`, for namespaces that do not choose.
    pub default_mode: P2pMem,
}

impl std::fmt::Debug for PlacementPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let providers: Vec<_> = self.peers.iter().filter_map(|pool| pool.provider()).map(|p| p.bdf.as_str()).collect();
        f.debug_struct("PlacementPolicy").field("peers", &providers).field("default_mode", &self.default_mode).finish()
    }
}

/// Where one namespace's payload goes, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The provider (an index into the pools it was chosen from) and the route to it;
    /// `None`: host memory.
    pub peer: Option<(usize, Route)>,
    /// For host memory, why no provider serves it.
    pub reason: String,
}

impl Choice {
    fn host(reason: impl Into<String>) -> Choice {
        Choice { peer: None, reason: reason.into() }
    }

    /// The placement over pools whose peer pool `index` has index `index` too.
    pub fn placement(&self) -> Placement {
        match self.peer {
            Some((index, _)) => Placement::Peer(u8::try_from(index).unwrap_or(u8::MAX)),
            None => Placement::Host,
        }
    }
}

/// A provider named explicitly that cannot take the namespace's payload (at start-up:
/// the target does not start).
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot use the memory of {bdf} ({route}): {error}")]
pub struct Refused {
    pub path: String,
    pub bdf: String,
    pub route: Route,
    pub error: String,
}

/// Chooses among `pools` (peer pools, one per provider) for a namespace over `backend`
/// under `mode`. A provider named in `mode` that the kernel refuses is an error; under
/// `auto` the next one is tried.
pub fn choose(backend: &Backend, mode: &P2pMem, pools: &[Arc<RegionPool>]) -> Result<Choice, Refused> {
    let Some(device) = backend.pci_device() else {
        let what = if matches!(backend, Backend::Memory(_)) { "RAM" } else { "a file, not an NVMe block device" };
        return Ok(Choice::host(format!("it is backed by {what}: no device moves its data peer to peer")));
    };
    if let Backend::File(file) = backend {
        if !file.direct {
            // A buffered read into device memory succeeds, through the page cache.
            return Ok(Choice::host("it is opened without O_DIRECT, so its data passes through the page cache"));
        }
    }
    let providers = pools.iter().enumerate().filter_map(|(index, pool)| Some((index, pool, pool.provider()?)));
    let mut candidates: Vec<(usize, &Arc<RegionPool>, &Provider, Route)> = match mode {
        P2pMem::Off => return Ok(Choice::host("p2pmem is off for it")),
        P2pMem::Device(bdf) => providers.filter(|(_, _, p)| p.bdf == *bdf).map(|(i, pool, p)| (i, pool, p, p.route_from(device))).collect(),
        P2pMem::Auto => providers.map(|(i, pool, p)| (i, pool, p, p.route_from(device))).collect(),
    };
    if candidates.is_empty() {
        return Ok(Choice::host(match mode {
            P2pMem::Device(bdf) => format!("provider {bdf} is not mapped"),
            _ => "no p2pmem provider is mapped".into(),
        }));
    }
    candidates.sort_by_key(|&(index, _, _, route)| (route, index));
    let mut refusals = Vec::new();
    for (index, pool, provider, route) in candidates {
        match probe(backend, pool) {
            Ok(()) => return Ok(Choice { peer: Some((index, route)), reason: String::new() }),
            Err(error) if matches!(mode, P2pMem::Device(_)) => {
                return Err(Refused { path: backend.describe(), bdf: provider.bdf.clone(), route, error });
            }
            Err(error) => refusals.push(format!("{} {route}: {error}", provider.bdf)),
        }
    }
    Ok(Choice::host(format!("no provider could take its payload ({})", refusals.join("; "))))
}

/// Reads the namespace's first block into `pool`'s memory as the data path would; an
/// error says why it cannot.
fn probe(backend: &Backend, pool: &RegionPool) -> Result<(), String> {
    let block = 1u32 << backend.block_size_shift();
    // Queues may hold the whole pool for a moment (a namespace added under load).
    let Some(lease) = pool.lease_within(block, std::time::Duration::from_secs(1)) else {
        return Err("its pool had no free block to try with for 1 s".into());
    };
    let op = BackendOp::Read { offset_bytes: 0, buffer: DataBuffer::Pool(lease) };
    let result = backend.execute_blocking(&op);
    drop(op.into_buffer());
    let Err(error) = result else { return Ok(()) };
    let cause = std::error::Error::source(&error).map_or_else(|| error.to_string(), |source| source.to_string());
    // The block layer answers EREMOTEIO for pages its device's queue cannot take peer to
    // peer, and nvme-pci EINVAL for a provider too far away; anything else is the read.
    let refused = matches!(&error, crate::backend::BackendError::Io { source, .. } if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::EREMOTEIO)));
    Err(if refused { format!("the kernel refused peer DMA: {cause}") } else { format!("reading block 0 into it failed: {cause}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::memory::Pools;

    #[test]
    fn namespaces_no_device_can_reach_use_host_memory_and_say_why() {
        let pools = Pools::host_only(1 << 20).unwrap();
        let ram = Backend::Memory(MemoryBackend::new(1 << 20, 9));
        let choice = choose(&ram, &P2pMem::Auto, &pools.peers).unwrap();
        assert_eq!((choice.placement(), choice.reason.contains("RAM")), (Placement::Host, true), "{choice:?}");

        let dir = std::env::temp_dir().join(format!("p2ptgt-placement-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ns");
        std::fs::File::create(&path).unwrap().set_len(1 << 20).unwrap();
        let file = Backend::open(&path, None).unwrap();
        let choice = choose(&file, &P2pMem::Auto, &pools.peers).unwrap();
        assert_eq!(choice.placement(), Placement::Host);
        assert!(choice.reason.contains("a file") || choice.reason.contains("O_DIRECT"), "{choice:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
