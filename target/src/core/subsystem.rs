//! Subsystems, their namespaces and host access lists, as the core sees them (nvmet's
//! configfs objects, without configfs). Namespaces and the host list change while
//! hosts are connected: every command reads one snapshot of the namespace map, so a
//! namespace removed under a command stays alive until that command is done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;

use super::buffer::Placement;
use super::range_lock::RangeLocks;
use super::reservation::Reservations;
use super::stats::{IoStats, PayloadStats};
use super::storage::Storage;

/// Controller IDs the dynamic model hands out (nvmet's default cntlid range).
pub const CONTROLLER_ID_MIN: u16 = 1;
pub const CONTROLLER_ID_MAX: u16 = 0xFFEF;

/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

#[derive(Debug)]
pub struct Namespace {
    pub id: u32,
    pub backend: Arc<dyn Storage>,
    pub uuid: [u8; 16],
    pub nguid: [u8; 16],
    /// Where this namespace's Read/Write payload goes: `Peer` puts it in the memory of
    /// a device its own device can reach; `Host` in host memory.
    pub payload_placement: Placement,
    pub stats: IoStats,
    /// Its payload bytes by the kind of memory they went through.
    pub payload: PayloadStats,
    /// Ranges fused Compare and Write holds against every other command.
    pub range_locks: Arc<RangeLocks>,
    /// Writes are refused with Namespace is Write Protected; reads go on.
    pub read_only: AtomicBool,
    /// Registrants and the reservation; a namespace that replaces another with its
    /// NSID takes them over.
    pub reservations: Arc<Reservations>,
    /// Reservation commands are served (otherwise they are Invalid Opcode and RESCAP
    /// is 0, as nvmet's `resv_enable` off).
    pub reservations_enabled: bool,
    /// Its ANA group: its state on each port is the group's there.
    pub ana_group: u32,
}

impl Namespace {
    pub fn new(id: u32, backend: Arc<dyn Storage>, uuid: [u8; 16], nguid: [u8; 16], payload_placement: Placement) -> Namespace {
        Namespace { id, backend, uuid, nguid, payload_placement, stats: IoStats::default(), payload: PayloadStats::default(), range_locks: Arc::default(), read_only: AtomicBool::new(false), reservations: Arc::default(), reservations_enabled: true, ana_group: 1 }
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }

    pub fn set_read_only(&self, read_only: bool) {
        self.read_only.store(read_only, Ordering::Relaxed);
    }

    pub fn size_blocks(&self) -> u64 {
        self.backend.size_bytes() >> self.backend.block_size_shift()
    }
}

/// Which hosts may connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAccess {
    pub allow_any_host: bool,
    pub allowed_hosts: BTreeSet<String>,
}

impl HostAccess {
    pub fn allows(&self, host_nqn: &str) -> bool {
        self.allow_any_host || self.allowed_hosts.contains(host_nqn)
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
    hosts: RwLock<HostAccess>,
    namespaces: ArcSwap<BTreeMap<u32, Arc<Namespace>>>,
}

/// Why a namespace could not be added.
#[derive(Debug, PartialEq, Eq)]
pub struct NamespaceIdTaken(pub u32);

impl Subsystem {
    /// A subsystem with nvmet's defaults: no serial, model "p2ptgt", the p2ptgt
    /// version as firmware, no OUI, the whole CNTLID range.
    pub fn new(nqn: impl Into<String>, hosts: HostAccess, namespaces: impl IntoIterator<Item = Arc<Namespace>>) -> Subsystem {
        let namespaces = namespaces.into_iter().map(|n| (n.id, n)).collect();
        Subsystem {
            nqn: nqn.into(),
            serial: String::new(),
            model: "p2ptgt".into(),
            firmware: env!("CARGO_PKG_VERSION").chars().take(8).collect(),
            ieee_oui: 0,
            controller_ids: CONTROLLER_ID_MIN..=CONTROLLER_ID_MAX,
            hosts: RwLock::new(hosts),
            namespaces: ArcSwap::from_pointee(namespaces),
        }
    }

    pub fn allows(&self, host_nqn: &str) -> bool {
        self.hosts.read().unwrap_or_else(|poisoned| poisoned.into_inner()).allows(host_nqn)
    }

    pub fn hosts(&self) -> HostAccess {
        self.hosts.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Changes who may connect; controllers already connected stay (as nvmet's do).
    pub fn change_hosts<T>(&self, change: impl FnOnce(&mut HostAccess) -> T) -> T {
        change(&mut self.hosts.write().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub fn namespace(&self, id: u32) -> Option<Arc<Namespace>> {
        self.namespaces.load().get(&id).cloned()
    }

    /// The namespaces as they are now, in NSID order (a snapshot that later changes
    /// do not touch; hold it briefly, it pins the map).
    pub fn namespaces(&self) -> arc_swap::Guard<Arc<BTreeMap<u32, Arc<Namespace>>>> {
        self.namespaces.load()
    }

    pub fn insert_namespace(&self, namespace: Namespace) -> Result<Arc<Namespace>, NamespaceIdTaken> {
        let id = namespace.id;
        let namespace = Arc::new(namespace);
        let mut taken = false;
        self.namespaces.rcu(|current| {
            taken = current.contains_key(&id);
            let mut next = BTreeMap::clone(current);
            if !taken {
                next.insert(id, namespace.clone());
            }
            next
        });
        if taken { Err(NamespaceIdTaken(id)) } else { Ok(namespace) }
    }

    /// Puts `namespace` in place of the one with its NSID, if any, in one step: a
    /// command sees the old one or the new one, never none.
    pub fn replace_namespace(&self, mut namespace: Namespace) -> Option<Arc<Namespace>> {
        let id = namespace.id;
        if let Some(old) = self.namespace(id) {
            namespace.reservations = old.reservations.clone();
        }
        let namespace = Arc::new(namespace);
        let mut replaced = None;
        self.namespaces.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            replaced = next.insert(id, namespace.clone());
            next
        });
        replaced
    }

    /// Takes a namespace out: new commands naming it fail with Invalid Namespace;
    /// commands already running hold it and finish.
    pub fn remove_namespace(&self, id: u32) -> Option<Arc<Namespace>> {
        let mut removed = None;
        self.namespaces.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            removed = next.remove(&id);
            next
        });
        removed
    }
}
