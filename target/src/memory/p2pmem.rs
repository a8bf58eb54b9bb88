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

    /// How the PCI function at sysfs path `client` would reach this provider's memory.
    pub fn route_from(&self, client: &Path) -> Route {
        let provider = fs::canonicalize(&self.sysfs).unwrap_or_else(|_| self.sysfs.clone());
        let client = fs::canonicalize(client).unwrap_or_else(|_| client.to_owned());
        Route::between(&client, &provider)
    }

    /// Every published provider on the machine.
    pub fn all() -> Vec<Provider> {
        let Ok(entries) = fs::read_dir("/sys/bus/pci/devices") else { return Vec::new() };
        let mut providers: Vec<Provider> = entries.flatten().filter_map(|e| Provider::probe(&e.path())).collect();
        providers.sort_by(|a, b| a.bdf.cmp(&b.bdf));
        providers
    }
}

/// How one PCI device's DMA reaches another's memory, from their places in the PCI
/// hierarchy, judged as the kernel's `pci_p2pdma_distance` does: devices that share an
/// upstream bridge (a PCIe switch, or one root port) talk through it; any other pair
/// only through the host bridge, which the kernel allows on a few whitelisted chipsets.
/// Ordered best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// The provider is the device itself.
    Own,
    /// Through bridges both sit below: `hops` links from one up to the bridge and down
    /// to the other.
    Bridges { hops: usize },
    /// Through the host bridge.
    HostBridge,
}

impl Route {
    /// The route between the PCI functions at canonical sysfs paths `a` and `b`
    /// (`/sys/devices/pci0000:00/0000:00:04.0/0000:01:00.0/...`).
    pub fn between(a: &Path, b: &Path) -> Route {
        if a == b {
            return Route::Own;
        }
        let (a, b) = (pci_chain(a), pci_chain(b));
        let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        // The first entry is the root bus: sharing only that is sharing no bridge. One
        // above the other is a bridge and its endpoint, not two endpoints.
        if shared <= 1 || shared == a.len() || shared == b.len() {
            return Route::HostBridge;
        }
        Route::Bridges { hops: (a.len() - shared) + (b.len() - shared) }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Own => f.write_str("its own memory"),
            Route::Bridges { hops } => write!(f, "through a shared PCIe bridge ({hops} links)"),
            Route::HostBridge => f.write_str("through the host bridge"),
        }
    }
}

/// The PCI functions on the way from the root bus down to the device at `path`
/// (its components that read as a domain:bus:device.function address).
fn pci_chain(path: &Path) -> Vec<&std::ffi::OsStr> {
    let is_bdf = |name: &str| {
        let bytes = name.as_bytes();
        bytes.len() == 12 && bytes[4] == b':' && bytes[7] == b':' && bytes[10] == b'.' && name.chars().filter(|c| c.is_ascii_hexdigit()).count() == 9
    };
    let mut chain: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        let name = component.as_os_str();
        if name.to_str().is_some_and(|n| n.starts_with("pci")) {
            // The root bus: a new hierarchy starts (and a different one shares nothing).
            chain.clear();
            chain.push(name);
        } else if name.to_str().is_some_and(is_bdf) {
            chain.push(name);
        }
    }
    chain
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

#[cfg(test)]
mod tests {
    use super::Route;
    use std::path::Path;

    fn route(a: &str, b: &str) -> Route {
        Route::between(Path::new(a), Path::new(b))
    }

    #[test]
    fn routes_follow_the_pci_hierarchy() {
        let switch = "/sys/devices/pci0000:00/0000:00:04.0/0000:01:00.0";
        let (a, c) = (format!("{switch}/0000:02:00.0/0000:03:00.0"), format!("{switch}/0000:02:02.0/0000:05:00.0"));
        let outside = "/sys/devices/pci0000:00/0000:00:05.0/0000:06:00.0";
        let root_bus = "/sys/devices/pci0000:00/0000:00:04.0";
        assert_eq!(route(&c, &c), Route::Own);
        // Up two links to the switch's upstream port, down two to the other SSD.
        assert_eq!(route(&a, &c), Route::Bridges { hops: 4 });
        assert_eq!(route(&c, &a), Route::Bridges { hops: 4 });
        assert_eq!(route(outside, &c), Route::HostBridge);
        assert_eq!(route(root_bus, "/sys/devices/pci0000:00/0000:00:05.0"), Route::HostBridge);
        assert_eq!(route(&a, "/sys/devices/pci0000:01/0000:01:00.0/0000:02:00.0/0000:03:00.0"), Route::HostBridge);
        assert!(Route::Own < Route::Bridges { hops: 2 } && Route::Bridges { hops: 2 } < Route::Bridges { hops: 4 } && Route::Bridges { hops: 4 } < Route::HostBridge);
    }
}
