//! P2PDMA memory ("p2pmem") of a PCI device, typically an NVMe SSD's Controller Memory
//! Buffer, mapped from `/sys/bus/pci/devices/BDF/p2pmem/allocate`. The mapping is device
//! memory: a [`DmaRegion`] of volatile copies, which the data path never needs.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapOptions;

use super::dma::DmaRegion;


/// A published p2pmem provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub bdf: String,
    pub sysfs: PathBuf,
    pub size_bytes: u64,
    pub available_bytes: u64,
}

impl Provider {
    /// Reads a provider's sysfs attributes; `None` if it publishes no p2pmem.
    pub fn probe(sysfs: &Path) -> Option<Provider> {
        let read = |name: &str| fs::read_to_string(sysfs.join("p2pmem").join(name)).ok()?.trim().parse::<u64>().ok();
        if read("published")? != 1 {
            return None;
        }
        Some(Provider {
            bdf: sysfs.file_name()?.to_string_lossy().into_owned(),
            sysfs: sysfs.to_owned(),
            size_bytes: read("size")?,
            available_bytes: read("available")?,
        })
    }

    /// Whether this provider is the PCI function at sysfs path `device`.
    pub fn is(&self, device: &Path) -> bool {
        self.sysfs == device || fs::canonicalize(&self.sysfs).ok().as_deref() == Some(device)
    }

    /// Every published provider on the machine.
    pub fn all() -> Vec<Provider> {
        let Ok(entries) = fs::read_dir("/sys/bus/pci/devices") else { return Vec::new() };
        let mut providers: Vec<Provider> = entries.flatten().filter_map(|e| Provider::probe(&e.path())).collect();
        providers.sort_by(|a, b| a.bdf.cmp(&b.bdf));
        providers
    }
}

/// A mapping of `len` bytes of a provider's p2pmem. Unmapped (and so given back to the
/// device's pool) on drop; memory regions registered over it must be dropped first.
pub struct P2pMemMapping {
    pub region: DmaRegion,
    pub provider: Provider,
}

/// Mapping a provider's p2pmem failed.
#[derive(Debug, thiserror::Error)]
#[error("mapping p2pmem {path}")]
pub struct MapError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl P2pMemMapping {
    pub fn map(provider: &Provider, len_bytes: usize) -> Result<P2pMemMapping, MapError> {
        let path = provider.sysfs.join("p2pmem/allocate");
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|source| MapError { path: path.clone(), source })?;
        // The kernel allocates from the device's pool on mmap; only shared mappings at
        // offset 0 are allowed.
        let map = MmapOptions::new().len(len_bytes).map_raw(&file).map_err(|source| MapError { path, source })?;
        Ok(P2pMemMapping { region: DmaRegion::device(map), provider: provider.clone() })
    }
}
