//! Copying blocks between namespaces, on one SSD or two, through a peer pool both SSDs
//! reach: each chunk is read from the source into the pool's device memory and written
//! from there to the destination (O_DIRECT both ways), so the data never lands in host
//! DRAM. The control socket's `copy` runs it; with `via: "off"` it goes through host
//! memory instead, for comparison. It takes no range locks: like `dd` between two block
//! devices, it is for ranges no host writes meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{placement, ControlError, Runtime};
use crate::backend::{Backend, BackendOp};
use crate::config::P2pMem;
use crate::core::{DataBuffer, Namespace};
use crate::memory::RegionPool;

/// Bytes one read-then-write step moves.
const CHUNK_BYTES: u64 = 1 << 20;
/// How long a copy waits for a free chunk of its pool before giving up.
const BUFFER_WAIT: Duration = Duration::from_secs(10);

/// Where a copy reads or writes: a namespace and its first block.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    pub nqn: String,
    pub nsid: u32,
    #[serde(default)]
    pub lba: u64,
}

/// A copy asked for on the control socket.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    pub from: Place,
    pub to: Place,
    pub blocks: u64,
    /// `auto` (a provider both devices reach), `off` (host memory) or a provider's BDF.
    #[serde(default = "auto")]
    pub via: String,
}

fn auto() -> String {
    "auto".into()
}

/// What a copy did.
#[derive(Debug, Serialize)]
pub struct CopyReport {
    pub bytes: u64,
    /// The provider whose memory carried the data, or `None` for host memory.
    pub provider: Option<String>,
    pub seconds: f64,
    pub mib_per_second: f64,
}

impl Runtime {
    /// Copies `request.blocks` blocks between two namespaces (see the module).
    pub fn copy(&self, request: &CopyRequest) -> Result<CopyReport, ControlError> {
        let source = self.served_namespace(&request.from)?;
        let destination = self.served_namespace(&request.to)?;
        let shift = source.backend.block_size_shift();
        if destination.backend.block_size_shift() != shift {
            return Err(ControlError::Invalid("the two namespaces' block sizes differ".into()));
        }
        if destination.is_read_only() {
            return Err(ControlError::Invalid(format!("namespace {} of {} is read-only", request.to.nsid, request.to.nqn)));
        }
        let bytes = request.blocks.checked_mul(1 << shift).ok_or_else(|| ControlError::Invalid("too many blocks".into()))?;
        for (place, namespace) in [(&request.from, &source), (&request.to, &destination)] {
            let end = place.lba.checked_add(request.blocks);
            if bytes == 0 || end.is_none_or(|end| end > namespace.size_blocks()) {
                return Err(ControlError::Invalid(format!("blocks {}+{} are not inside namespace {} of {}", place.lba, request.blocks, place.nsid, place.nqn)));
            }
        }
        let same = request.from.nqn == request.to.nqn && request.from.nsid == request.to.nsid;
        if same && request.from.lba < request.to.lba.saturating_add(request.blocks) && request.to.lba < request.from.lba.saturating_add(request.blocks) {
            return Err(ControlError::Invalid("the source and destination ranges overlap".into()));
        }
        let (source_backend, destination_backend) = (backend_of(&source)?, backend_of(&destination)?);
        let mode: P2pMem = request.via.parse().map_err(|e| ControlError::Invalid(format!("via: {e}")))?;
        let pool = self.copy_pool(source_backend, destination_backend, &mode)?;
        let provider = pool.provider().map(|p| p.bdf.clone());
        let started = Instant::now();
        let mut done = 0u64;
        while done < bytes {
            let len = (bytes - done).min(CHUNK_BYTES) as u32;
            let lease = pool.lease_within(len, BUFFER_WAIT).ok_or_else(|| ControlError::Invalid(format!("no free {len}-byte buffer in {:?} memory for {} s", pool.region, BUFFER_WAIT.as_secs())))?;
            let read = BackendOp::Read { offset_bytes: (request.from.lba << shift) + done, buffer: DataBuffer::Pool(lease) };
            source_backend.execute_blocking(&read).map_err(|source| backend_error(&request.from, source))?;
            let Some(buffer) = read.into_buffer() else { break };
            let write = BackendOp::Write { offset_bytes: (request.to.lba << shift) + done, buffer, durable: false };
            destination_backend.execute_blocking(&write).map_err(|source| backend_error(&request.to, source))?;
            // Read into the pool, then written out of it.
            for namespace in [&source, &destination] {
                self.target.count_payload(namespace, pool.region, u64::from(len));
            }
            done += u64::from(len);
        }
        if let Backend::File(file) = destination_backend {
            file.file.sync_data().map_err(|source| backend_error(&request.to, crate::backend::BackendError::Io { op: crate::backend::OpKind::Flush, source }))?;
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok(CopyReport { bytes, provider, seconds, mib_per_second: bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9) })
    }

    fn served_namespace(&self, place: &Place) -> Result<Arc<Namespace>, ControlError> {
        let subsystem = self.target.subsystem(&place.nqn).ok_or_else(|| ControlError::NoSubsystem(place.nqn.clone()))?;
        subsystem.namespace(place.nsid).ok_or_else(|| ControlError::NoNamespace { nqn: place.nqn.clone(), nsid: place.nsid })
    }

    /// The pool a copy between the two backends goes through: under `auto` the peer
    /// pool both reach by the best route, else host memory.
    fn copy_pool(&self, source: &Backend, destination: &Backend, mode: &P2pMem) -> Result<Arc<RegionPool>, ControlError> {
        if *mode != P2pMem::Off {
            let (from, to) = (placement::choose(source, mode, &self.policy.peers)?, placement::choose(destination, mode, &self.policy.peers)?);
            // Each side's best provider; the worse-routed side's choice, if the other
            // reaches it too (both read it in the probe, so it is one both can use).
            for candidate in [from.peer, to.peer].into_iter().flatten().map(|(index, _)| index) {
                let pools = std::slice::from_ref(&self.policy.peers[candidate]);
                let both = [source, destination].iter().all(|b| placement::choose(b, &P2pMem::Auto, pools).is_ok_and(|c| c.peer.is_some()));
                if both {
                    return Ok(pools[0].clone());
                }
            }
            if matches!(mode, P2pMem::Device(_)) {
                return Err(ControlError::Invalid(format!("no peer pool {mode} that both namespaces' devices reach")));
            }
        }
        self.policy.host.clone().ok_or_else(|| ControlError::Fixed("host buffers for copies".into()))
    }
}

/// The concrete backend behind a served namespace.
fn backend_of(namespace: &Namespace) -> Result<&Backend, ControlError> {
    namespace.backend.as_any().downcast_ref::<Backend>().ok_or_else(|| ControlError::Invalid("that namespace's storage cannot be copied".into()))
}

fn backend_error(place: &Place, source: crate::backend::BackendError) -> ControlError {
    ControlError::Backend { path: format!("namespace {} of {}", place.nsid, place.nqn), source }
}
