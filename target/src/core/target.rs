//! The target as the core sees it: its subsystems, the ports it listens on, limits fixed at
//! start-up, and the registry of live controllers (nvmet's core.c).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tracing::warn;

use super::auth::HostKeys;
use super::controller::{Controller, ControllerKind};
use super::port::{Port, PortSubsystems, Referral};
use super::stats::PayloadStats;
use super::buffer::Region;
use super::reservation::{HostId, ReservationStore};
use crate::wire::ana::AnaState;
use crate::wire::reservation::Notification;
use super::subsystem::{Namespace, Subsystem, CONTROLLER_ID_MAX, CONTROLLER_ID_MIN};
use crate::wire::Status;

/// Limits fixed at start-up.
#[derive(Clone, Debug)]
pub struct Limits {
    /// CAP.MQES + 1 for I/O queues.
    pub io_queue_entries_max: u32,
    pub admin_queue_entries_max: u32,
    /// I/O queues per controller.
    pub io_queues_max: u16,
    /// MDTS as a power of two of 4 KiB pages.
    pub max_transfer_shift: u8,
    /// In-capsule data per I/O command capsule; 0 disables it.
    pub in_capsule_data_bytes: u32,
    pub controllers_per_subsystem_max: usize,
    /// Controllers (I/O and discovery) one host NQN may have at once.
    pub controllers_per_host_max: usize,
    /// Queues one host NQN may have connected at once, over all its controllers.
    pub queues_per_host_max: usize,
    /// Connections (queues, connected or not yet) the transport accepts in total.
    pub connections_max: usize,
    /// Connections the transport accepts from one peer address.
    pub connections_per_peer_max: usize,
    /// How long an accepted connection may take to send a valid Connect.
    pub connect_timeout: Duration,
    /// How long a response may wait for the host to take it before its queue closes.
    pub response_timeout: Duration,
    /// Outstanding Asynchronous Event Requests per controller.
    pub async_events_max: u8,
}

impl Default for Limits {
    /// Defaults a 2-core test bed and a large server both live with: a Linux host opens
    /// one I/O queue per CPU per controller, and one machine may run several hosts.
    fn default() -> Self {
        Limits {
            io_queue_entries_max: 128,
            admin_queue_entries_max: 32,
            io_queues_max: 8,
            max_transfer_shift: 5,
            in_capsule_data_bytes: 4096,
            controllers_per_subsystem_max: 64,
            controllers_per_host_max: 32,
            queues_per_host_max: 512,
            connections_max: 1024,
            connections_per_peer_max: 256,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            async_events_max: 4,
        }
    }
}

impl Limits {
    pub fn max_transfer_bytes(&self) -> u32 {
        4096 << self.max_transfer_shift
    }
}

/// Everything a queue needs to look up: shared by all queues, immutable but for the
/// controller registry and the counters.
#[derive(Debug)]
pub struct Target {
    subsystems: RwLock<Vec<Arc<Subsystem>>>,
    /// Each port serves its own subsystems ([`Port::subsystems`]); a subsystem served
    /// through no port stays configured, unreachable, as nvmet keeps one.
    ports: RwLock<Vec<Port>>,
    pub limits: Limits,
    pub payload: PayloadStats,
    controllers: Mutex<Controllers>,
    /// Queues connected per host NQN.
    host_queues: Mutex<HashMap<String, usize>>,
    discovery_generation: AtomicU64,
    /// When the target started: SMART's power-on hours count from here.
    pub started: std::time::Instant,
    /// Where reservations with Persist Through Power Loss are kept; without one, hosts
    /// cannot ask for it.
    reservation_store: OnceLock<Arc<dyn ReservationStore>>,
    /// ANA group states by port and group; a group without an entry has its default
    /// state there. Every I/O command reads it, so a snapshot without a lock.
    ana_states: ArcSwap<BTreeMap<(u16, u32), AnaState>>,
    /// ANA Change Count: rises with every state change.
    ana_change_count: AtomicU64,
    /// DH-HMAC-CHAP settings by host NQN: such a host must authenticate.
    host_keys: RwLock<BTreeMap<String, Arc<HostKeys>>>,
}

#[derive(Debug, Default)]
struct Controllers {
    live: BTreeMap<u16, Arc<Controller>>,
    next_id: u16,
}


/// A subsystem with this NQN is served already.
#[derive(Debug, PartialEq, Eq)]
pub struct NqnTaken(pub String);

#[derive(Debug, Serialize)]
pub struct ControllerSummary {
    pub controller_id: u16,
    pub subsystem_nqn: String,
    pub host_nqn: String,
    /// DH-HMAC-CHAP: "none" (not required), "pending" or "authenticated".
    pub authentication: &'static str,
}

impl Target {
    /// Counts payload bytes of `namespace` that went through `region`, for the target
    /// and the namespace.
    pub fn count_payload(&self, namespace: &Namespace, region: Region, bytes: u64) {
        self.payload.count(region, bytes);
        namespace.payload.count(region, bytes);
    }

    /// A target listening on `port` (more may be added).
    pub fn new(subsystems: Vec<Subsystem>, port: Port, limits: Limits) -> Target {
        Target {
            subsystems: RwLock::new(subsystems.into_iter().map(Arc::new).collect()),
            ports: RwLock::new(vec![port]),
            limits,
            payload: PayloadStats::default(),
            controllers: Mutex::new(Controllers { next_id: CONTROLLER_ID_MIN, ..Default::default() }),
            host_queues: Mutex::new(HashMap::new()),
            discovery_generation: AtomicU64::new(1),
            started: std::time::Instant::now(),
            reservation_store: OnceLock::new(),
            ana_states: ArcSwap::from_pointee(BTreeMap::new()),
            ana_change_count: AtomicU64::new(0),
            host_keys: RwLock::new(BTreeMap::new()),
        }
    }

    /// Host `nqn`'s DH-HMAC-CHAP settings, if it has a key.
    pub fn host_keys(&self, nqn: &str) -> Option<Arc<HostKeys>> {
        self.host_keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(nqn).cloned()
    }

    /// Replaces every host's DH-HMAC-CHAP settings. Connected controllers keep their
    /// authentication; the new keys hold from the next Connect or re-authentication.
    pub fn set_host_keys(&self, keys: BTreeMap<String, Arc<HostKeys>>) {
        *self.host_keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
    }

    /// The state of ANA group `group` on port `port_id`.
    pub fn ana_state(&self, port_id: u16, group: u32) -> AnaState {
        self.ana_states.load().get(&(port_id, group)).copied().unwrap_or_else(|| AnaState::default_for(group))
    }

    /// Sets ANA group `group`'s state on port `port_id`; on a change the change count
    /// rises and every I/O controller that came through the port gets an ANA Change
    /// notice. Returns whether the state changed.
    pub fn set_ana_state(&self, port_id: u16, group: u32, state: AnaState) -> bool {
        let mut before = None;
        self.ana_states.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            before = next.insert((port_id, group), state);
            next
        });
        let changed = before.unwrap_or_else(|| AnaState::default_for(group)) != state;
        if changed {
            self.ana_change_count.fetch_add(1, Ordering::Relaxed);
            for controller in self.registry().live.values() {
                if controller.port_id == port_id && !controller.is_discovery() {
                    controller.ana_changed();
                }
            }
        }
        changed
    }

    pub fn ana_change_count(&self) -> u64 {
        self.ana_change_count.load(Ordering::Relaxed)
    }

    /// The ANA groups a controller of `subsystem` reports: group 1, every group with a
    /// state on some port, and every group one of its namespaces is in.
    pub fn ana_groups(&self, subsystem: &Subsystem) -> std::collections::BTreeSet<u32> {
        let mut groups: std::collections::BTreeSet<u32> = self.ana_states.load().keys().map(|(_, group)| *group).collect();
        groups.insert(1);
        groups.extend(subsystem.namespaces().values().map(|n| n.ana_group));
        groups
    }

    /// Keeps reservations with Persist Through Power Loss in `store` (set once, before
    /// hosts connect).
    pub fn set_reservation_store(&self, store: Arc<dyn ReservationStore>) {
        let _ = self.reservation_store.set(store);
    }

    pub fn reservation_store(&self) -> Option<&dyn ReservationStore> {
        self.reservation_store.get().map(|store| store.as_ref())
    }

    /// The NQNs the connected controllers with Host Identifier `host` gave.
    pub fn host_nqns(&self, host: &HostId) -> Vec<String> {
        let mut nqns: Vec<String> = self.registry().live.values().filter(|c| &c.host_id == host).map(|c| c.host_nqn.clone()).collect();
        nqns.sort();
        nqns.dedup();
        nqns
    }

    /// Tells every controller of `host` on subsystem `nqn` about a reservation change
    /// of namespace `namespace_id`.
    pub fn notify_reservation(&self, nqn: &str, namespace_id: u32, host: &HostId, notice: Notification) {
        for controller in self.registry().live.values() {
            if controller.subsystem_nqn() == nqn && &controller.host_id == host {
                controller.reservation_notice(namespace_id, notice);
            }
        }
    }

    /// The subsystems as they are now, in the order they were added.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.subsystems.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        self.subsystems.read().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().find(|s| s.nqn == nqn).cloned()
    }

    /// Serves a new subsystem; refused when its NQN is taken.
    pub fn add_subsystem(&self, subsystem: Subsystem) -> Result<Arc<Subsystem>, NqnTaken> {
        let mut subsystems = self.subsystems.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if subsystems.iter().any(|s| s.nqn == subsystem.nqn) || subsystem.nqn == super::subsystem::DISCOVERY_NQN {
            return Err(NqnTaken(subsystem.nqn));
        }
        let subsystem = Arc::new(subsystem);
        subsystems.push(subsystem.clone());
        drop(subsystems);
        self.discovery_changed();
        Ok(subsystem)
    }

    /// Stops serving a subsystem: its controllers are torn down (their hosts see the
    /// connection go, and their reconnects find no such subsystem), and discovery
    /// controllers are told.
    pub fn remove_subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        let mut subsystems = self.subsystems.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = subsystems.iter().position(|s| s.nqn == nqn)?;
        let removed = subsystems.remove(index);
        drop(subsystems);
        for controller in self.registry().live.values() {
            if controller.subsystem_nqn() == nqn {
                controller.fail();
            }
        }
        self.discovery_changed();
        Some(removed)
    }

    pub fn ports(&self) -> Vec<Port> {
        self.ports.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn port(&self, id: u16) -> Option<Port> {
        self.ports.read().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().find(|p| p.id == id).cloned()
    }

    /// Lists a new port in the discovery log; refused if its ID is taken.
    pub fn add_port(&self, port: Port) -> Result<(), Port> {
        let mut ports = self.ports.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if ports.iter().any(|p| p.id == port.id) {
            return Err(port);
        }
        ports.push(port);
        drop(ports);
        self.discovery_changed();
        Ok(())
    }

    /// Takes a port out of the discovery log (its transport closes its queues).
    pub fn remove_port(&self, id: u16) -> Option<Port> {
        let mut ports = self.ports.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = ports.iter().position(|p| p.id == id)?;
        let removed = ports.remove(index);
        drop(ports);
        self.ana_states.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            next.retain(|(port, _), _| *port != id);
            next
        });
        self.discovery_changed();
        Some(removed)
    }

    /// Subsystem `nqn` if port `port_id` serves it. nvmet looks a Connect's subsystem up
    /// among the port's links only (`nvmet_find_get_subsys`): through any other port it
    /// does not exist.
    pub fn subsystem_on_port(&self, port_id: u16, nqn: &str) -> Option<Arc<Subsystem>> {
        let served = self.ports.read().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().any(|p| p.id == port_id && p.subsystems.serves(nqn));
        if served {
            self.subsystem(nqn)
        } else {
            None
        }
    }

    /// Sets the subsystems port `port_id` serves. When that changes what hosts can reach
    /// there, the port's discovery controllers are told and, as when nvmet drops a
    /// port's link (`nvmet_port_subsys_drop_link`), the controllers that came through the
    /// port to a subsystem it no longer serves are torn down. Returns whether the
    /// served subsystems changed.
    pub fn set_port_subsystems(&self, port_id: u16, subsystems: PortSubsystems) -> bool {
        let all = self.subsystems();
        let mut ports = self.ports.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(port) = ports.iter_mut().find(|p| p.id == port_id) else { return false };
        let names = |selected: Vec<Arc<Subsystem>>| selected.iter().map(|s| s.nqn.clone()).collect::<Vec<String>>();
        let before = names(port.subsystems.select(&all));
        port.subsystems = subsystems;
        let after = names(port.subsystems.select(&all));
        drop(ports);
        if before == after {
            return false;
        }
        for controller in self.registry().live.values() {
            if controller.port_id == port_id && !controller.is_discovery() && !after.iter().any(|nqn| nqn == controller.subsystem_nqn()) {
                controller.fail();
            }
        }
        self.port_discovery_changed(port_id);
        true
    }

    /// Sets the referrals port `port_id`'s discovery log lists; on a change its
    /// discovery controllers are told. Returns whether they changed.
    pub fn set_port_referrals(&self, port_id: u16, referrals: Vec<Referral>) -> bool {
        let mut ports = self.ports.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(port) = ports.iter_mut().find(|p| p.id == port_id) else { return false };
        if port.referrals == referrals {
            return false;
        }
        port.referrals = referrals;
        drop(ports);
        self.port_discovery_changed(port_id);
        true
    }

    pub fn discovery_generation(&self) -> u64 {
        self.discovery_generation.load(Ordering::Relaxed)
    }

    /// The discovery log changed (a subsystem came or went, or a host list changed):
    /// its generation counter rises and every discovery controller is told.
    pub fn discovery_changed(&self) {
        self.notify_discovery_controllers(None);
    }

    /// The discovery log of port `port_id` changed: the generation counter (one for
    /// the target, as nvmet's) rises and the discovery controllers that came through
    /// that port are told, as `nvmet_port_disc_changed` tells them.
    fn port_discovery_changed(&self, port_id: u16) {
        self.notify_discovery_controllers(Some(port_id));
    }

    fn notify_discovery_controllers(&self, port_id: Option<u16>) {
        self.discovery_generation.fetch_add(1, Ordering::Relaxed);
        for controller in self.registry().live.values() {
            if controller.is_discovery() && port_id.is_none_or(|id| id == controller.port_id) {
                controller.discovery_changed();
            }
        }
    }

    fn registry(&self) -> MutexGuard<'_, Controllers> {
        self.controllers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a controller with a fresh, unique CNTLID.
    pub fn create_controller(
        &self,
        kind: ControllerKind,
        port_id: u16,
        host_nqn: &str,
        host_id: [u8; 16],
        keep_alive_ms: u32,
        now: std::time::Instant,
    ) -> Result<Arc<Controller>, Status> {
        let mut registry = self.registry();
        let of_host = registry.live.values().filter(|c| c.host_nqn == host_nqn).count();
        if of_host >= self.limits.controllers_per_host_max {
            warn!(host = host_nqn, limit = self.limits.controllers_per_host_max, "connect refused: the host has its maximum of controllers");
            return Err(Status::CONNECT_CONTROLLER_BUSY.dnr());
        }
        if let ControllerKind::Io(subsystem) = &kind {
            let count = registry.live.values().filter(|c| c.subsystem_nqn() == subsystem.nqn).count();
            if count >= self.limits.controllers_per_subsystem_max {
                return Err(Status::CONNECT_CONTROLLER_BUSY.dnr());
            }
        }
        let (first, last) = match &kind {
            ControllerKind::Io(subsystem) => (*subsystem.controller_ids.start(), *subsystem.controller_ids.end()),
            ControllerKind::Discovery => (CONTROLLER_ID_MIN, CONTROLLER_ID_MAX),
        };
        // IDs are unique target-wide; each subsystem draws from its own range, starting
        // after the last ID handed out so a closed controller's ID is not reused at once.
        let start = usize::from(registry.next_id.clamp(first, last).saturating_sub(first));
        let span = usize::from(last.saturating_sub(first)).saturating_add(1);
        for id in (first..=last).chain(first..=last).skip(start).take(span) {
            if let std::collections::btree_map::Entry::Vacant(slot) = registry.live.entry(id) {
                let controller = Arc::new(Controller::new(id, kind, port_id, host_nqn, host_id, keep_alive_ms, now));
                slot.insert(controller.clone());
                registry.next_id = if id >= CONTROLLER_ID_MAX { CONTROLLER_ID_MIN } else { id.saturating_add(1) };
                return Ok(controller);
            }
        }
        Err(Status::CONNECT_CONTROLLER_BUSY.dnr())
    }

    pub fn controller(&self, id: u16) -> Option<Arc<Controller>> {
        self.registry().live.get(&id).cloned()
    }

    /// Counts a queue of `host_nqn` as connected; false (and a log line) once the host
    /// has its maximum.
    pub fn claim_host_queue(&self, host_nqn: &str) -> bool {
        let mut queues = self.host_queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = queues.entry(host_nqn.to_owned()).or_insert(0);
        if *count >= self.limits.queues_per_host_max {
            warn!(host = host_nqn, limit = self.limits.queues_per_host_max, "connect refused: the host has its maximum of queues");
            return false;
        }
        *count = count.saturating_add(1);
        true
    }

    /// A queue counted by `claim_host_queue` is gone.
    pub fn release_host_queue(&self, host_nqn: &str) {
        let mut queues = self.host_queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = queues.get_mut(host_nqn) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                queues.remove(host_nqn);
            }
        }
    }

    /// Forgets a controller whose admin queue is gone.
    pub fn remove_controller(&self, id: u16) {
        self.registry().live.remove(&id);
    }

    pub fn controllers(&self) -> Vec<ControllerSummary> {
        self.registry()
            .live
            .values()
            .map(|c| ControllerSummary {
                controller_id: c.id,
                subsystem_nqn: c.subsystem_nqn().to_owned(),
                host_nqn: c.host_nqn.clone(),
                authentication: match (c.requires_authentication(), c.is_authenticated()) {
                    (false, _) => "none",
                    (true, false) => "pending",
                    (true, true) => "authenticated",
                },
            })
            .collect()
    }

    /// Tells every controller of `subsystem` that a namespace changed: a Namespace
    /// Attribute Changed event for their AERs and an entry in their Changed Namespace
    /// List log.
    pub fn notify_namespace_changed(&self, subsystem_nqn: &str, namespace_id: u32) {
        for controller in self.registry().live.values() {
            if controller.subsystem_nqn() == subsystem_nqn {
                controller.namespace_changed(namespace_id);
            }
        }
    }
}
