//! Live reconfiguration. The running target's configuration is kept in nvmetcli's model
//! ([`ServeConfig`]); every change goes through [`Runtime`], which changes the model
//! and the served objects together and tells connected hosts what they need to know:
//! a Namespace Attribute Changed notice when a namespace comes, goes or changes size,
//! a Discovery Log Page Change notice when a subsystem, a host list, or what a port
//! serves or refers to changes.
//!
//! Ports come and go too (the transport listens on them through [`PortListeners`]);
//! what stays fixed while the target runs: the port parameters (in-capsule data size,
//! queue size, MDTS), the limits, and the buffer pools.
//! [`rpc`] is the JSON-RPC face of these methods on the control socket.

pub mod client;
pub mod copy;
pub mod placement;
pub mod rpc;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tracing::{info, warn};

use crate::backend::{Backend, BackendError, Storage};
use crate::config::{self, NamespaceConfig, P2pMem, PortConfig, ServeConfig, SubsystemConfig};
use crate::core::{HostAccess, Namespace, Port, PortSubsystems, Subsystem, Target};
use crate::wire::ana::AnaState;
pub use placement::{Choice, PlacementPolicy, Refused};

/// Why a change was refused. Each names the object; [`ControlError::code`] is its
/// JSON-RPC error code.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Invalid(String),
    #[error("no subsystem {0}")]
    NoSubsystem(String),
    #[error("subsystem {0} already exists")]
    SubsystemExists(String),
    #[error("subsystem {nqn} has no namespace {nsid}")]
    NoNamespace { nqn: String, nsid: u32 },
    #[error("subsystem {nqn} already has namespace {nsid}")]
    NamespaceExists { nqn: String, nsid: u32 },
    #[error("subsystem {nqn} has no allowed host {host}")]
    NoHost { nqn: String, host: String },
    #[error("namespace {path}: {source}")]
    Backend { path: String, #[source] source: BackendError },
    #[error("{0} cannot change while the target runs; restart it with the new setting")]
    Fixed(String),
    #[error("no port {0}")]
    NoPort(u16),
    #[error("{0}")]
    PortExists(String),
    #[error("cannot listen on {address}: {message}")]
    Listen { address: std::net::SocketAddr, message: String },
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// Listening on a port and stopping, as the transport does it (the serve layer
/// hands one to [`Runtime::set_listeners`]).
pub trait PortListeners: Send + Sync {
    /// Starts listening on `address` for port `id`.
    fn start(&self, id: u16, address: std::net::SocketAddr) -> Result<(), String>;
    /// Stops listening on port `id` and closes the queues that came through it.
    fn stop(&self, id: u16);
}

/// The core's view of a configured port.
pub fn port_of(config: &PortConfig) -> Port {
    Port {
        subsystems: config.subsystems.clone(),
        referrals: config.served_referrals(),
        ..Port::new(config.id, config.address.ip().to_string(), config.address.port().to_string(), config.address.is_ipv6())
    }
}

impl ControlError {
    pub fn code(&self) -> i64 {
        match self {
            ControlError::Invalid(_) => rpc::INVALID_PARAMS,
            ControlError::NoSubsystem(_) | ControlError::NoNamespace { .. } | ControlError::NoHost { .. } => rpc::NOT_FOUND,
            ControlError::SubsystemExists(_) | ControlError::NamespaceExists { .. } => rpc::EXISTS,
            ControlError::Backend { .. } => rpc::BACKEND,
            ControlError::Fixed(_) => rpc::FIXED,
            ControlError::NoPort(_) => rpc::NOT_FOUND,
            ControlError::PortExists(_) => rpc::EXISTS,
            ControlError::Listen { .. } | ControlError::Refused(_) => rpc::BACKEND,
        }
    }
}

/// A namespace's backend, opened, with where its payload will go.
pub struct Opened {
    pub backend: Backend,
    pub choice: Choice,
}

/// Values the command line gives every subsystem that does not set its own.
#[derive(Clone, Debug, Default)]
pub struct SubsystemDefaults {
    pub firmware: Option<String>,
    pub ieee_oui: Option<u32>,
}

impl SubsystemDefaults {
    pub fn apply(&self, subsystem: &mut SubsystemConfig) {
        subsystem.firmware = subsystem.firmware.take().or_else(|| self.firmware.clone());
        subsystem.ieee_oui = subsystem.ieee_oui.or(self.ieee_oui);
    }
}

/// What a restore changed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Changes {
    pub subsystems_added: Vec<String>,
    pub subsystems_removed: Vec<String>,
    /// Served anew because their serial, model, firmware, OUI or CNTLID range changed.
    pub subsystems_replaced: Vec<String>,
    /// `ID ADDRESS`.
    pub ports_added: Vec<String>,
    pub ports_removed: Vec<String>,
    /// `ID subsystems` or `ID referrals` of a port that stays, for what changed there.
    pub ports_changed: Vec<String>,
    /// `NQN/NSID`.
    pub namespaces_added: Vec<String>,
    pub namespaces_removed: Vec<String>,
    pub namespaces_changed: Vec<String>,
    /// NQNs of subsystems whose allowed hosts changed.
    pub hosts_changed: Vec<String>,
    /// `PORT/GROUP STATE` of each ANA state that changed.
    pub ana_changed: Vec<String>,
    /// Host NQNs whose DH-HMAC-CHAP settings changed (added, changed or removed).
    pub host_keys_changed: Vec<String>,
}

/// Host keys as the target holds them.
pub fn shared_host_keys(keys: &std::collections::BTreeMap<String, crate::core::auth::HostKeys>) -> std::collections::BTreeMap<String, Arc<crate::core::auth::HostKeys>> {
    keys.iter().map(|(nqn, keys)| (nqn.clone(), Arc::new(keys.clone()))).collect()
}

/// The running target's configuration and the one way to change it.
pub struct Runtime {
    target: Arc<Target>,
    model: Mutex<ServeConfig>,
    policy: PlacementPolicy,
    defaults: SubsystemDefaults,
    listeners: std::sync::OnceLock<Arc<dyn PortListeners>>,
}

impl Runtime {
    /// `config` must be what `target` serves (as start-up built it).
    pub fn new(target: Arc<Target>, config: ServeConfig, policy: PlacementPolicy, defaults: SubsystemDefaults) -> Runtime {
        Runtime { target, model: Mutex::new(config), policy, defaults, listeners: std::sync::OnceLock::new() }
    }

    /// How ports are listened on; without it, ports cannot be added or removed.
    pub fn set_listeners(&self, listeners: Arc<dyn PortListeners>) {
        let _ = self.listeners.set(listeners);
    }

    /// Listens on a new port serving `subsystems` (each named must exist); ID 0 takes
    /// the lowest free one. Returns the ID.
    pub fn add_port(&self, id: u16, address: std::net::SocketAddr, subsystems: PortSubsystems) -> Result<u16, ControlError> {
        let mut model = self.model();
        if let PortSubsystems::Linked(names) = &subsystems {
            if let Some(missing) = names.iter().find(|nqn| !model.subsystems.iter().any(|s| &s.nqn == *nqn)) {
                return Err(ControlError::NoSubsystem(missing.clone()));
            }
            if let Some(twice) = names.iter().enumerate().find_map(|(i, nqn)| names.get(..i)?.contains(nqn).then_some(nqn)) {
                return Err(ControlError::Invalid(format!("{twice} is named twice")));
            }
        }
        let port = PortConfig { subsystems, ..PortConfig::new(id, address) };
        self.start_port(&mut model.ports, port)
    }

    fn start_port(&self, ports: &mut Vec<PortConfig>, mut port: PortConfig) -> Result<u16, ControlError> {
        let (id, address) = (port.id, port.address);
        let id = if id == 0 { (1..=u16::MAX).find(|id| !ports.iter().any(|p| p.id == *id)).unwrap_or(u16::MAX) } else { id };
        if let Some(taken) = ports.iter().find(|p| p.id == id || p.address == address) {
            return Err(ControlError::PortExists(format!("port {} listens on {} already", taken.id, taken.address)));
        }
        let listeners = self.listeners.get().ok_or_else(|| ControlError::Fixed("the ports of this target".into()))?;
        listeners.start(id, address).map_err(|message| ControlError::Listen { address, message })?;
        port.id = id;
        let _ = self.target.add_port(port_of(&port));
        info!(port = id, %address, subsystems = ?port.subsystems, "port added");
        ports.push(port);
        Ok(id)
    }

    /// Stops listening on a port: the queues that came through it close (their hosts
    /// see the connection go, as with nvmet when a port goes).
    pub fn remove_port(&self, id: u16) -> Result<(), ControlError> {
        let mut model = self.model();
        self.stop_port(&mut model.ports, id)
    }

    fn stop_port(&self, ports: &mut Vec<PortConfig>, id: u16) -> Result<(), ControlError> {
        let index = ports.iter().position(|p| p.id == id).ok_or(ControlError::NoPort(id))?;
        let listeners = self.listeners.get().ok_or_else(|| ControlError::Fixed("the ports of this target".into()))?;
        self.target.remove_port(id);
        listeners.stop(id);
        let removed = ports.remove(index);
        info!(port = id, address = %removed.address, "port removed; its queues are closed");
        Ok(())
    }

    /// Sets ANA group `group`'s state on port `port_id` (kept in the configuration that
    /// `save` writes); hosts connected through the port get an ANA Change notice.
    pub fn set_ana_state(&self, port_id: u16, group: u32, state: AnaState) -> Result<(), ControlError> {
        let mut model = self.model();
        if !model.ports.iter().any(|p| p.id == port_id) {
            return Err(ControlError::NoPort(port_id));
        }
        config::check_ana_group(group, "group").map_err(|e| ControlError::Invalid(e.to_string()))?;
        model.ana.insert((port_id, group), state);
        if self.target.set_ana_state(port_id, group, state) {
            info!(port = port_id, group, state = state.name(), "ANA state changed");
        }
        Ok(())
    }

    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    fn model(&self) -> MutexGuard<'_, ServeConfig> {
        self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The configuration as `nvmetcli save` writes it.
    pub fn save(&self) -> Value {
        let limits = &self.target.limits;
        config::to_nvmetcli(&self.model(), limits.in_capsule_data_bytes, limits.io_queue_entries_max, limits.max_transfer_shift)
    }

    /// Builds the served namespace for `namespace` of subsystem `nqn` over its opened
    /// backend, saying in one line where its payload goes (and why, for host memory).
    pub fn build_namespace(&self, nqn: &str, namespace: &NamespaceConfig, opened: Opened) -> Namespace {
        let Opened { backend, choice } = opened;
        let provider = choice.peer.and_then(|(index, _)| self.policy.peers.get(index)?.provider().map(|p| p.bdf.clone()));
        match (&choice.peer, &provider) {
            (Some((_, route)), Some(bdf)) => {
                info!(subsystem = %nqn, nsid = namespace.id, backend = %backend.describe(), "namespace: payload in the memory of {bdf}, {route}");
            }
            _ => {
                info!(subsystem = %nqn, nsid = namespace.id, backend = %backend.describe(), "namespace: payload in host memory");
                if !matches!(namespace.p2pmem.as_ref().unwrap_or(&self.policy.default_mode), P2pMem::Off) {
                    warn!(subsystem = %nqn, nsid = namespace.id, path = %namespace.path.display(), "this namespace's payload uses host memory buffers: {}", choice.reason);
                }
            }
        }
        let mut served = Namespace::new(namespace.id, Arc::new(backend), namespace.uuid_in(nqn), namespace.nguid_in(nqn), choice.placement());
        served.set_read_only(namespace.read_only);
        served.reservations_enabled = namespace.reservations;
        served.ana_group = namespace.ana_group;
        if let Some(state) = self.target.reservation_store().and_then(|store| store.load(nqn, namespace.id)) {
            info!(subsystem = %nqn, nsid = namespace.id, registrants = state.registrants.len(), reservation = ?state.holder.map(|h| h.rtype), "reservations restored (Persist Through Power Loss)");
            served.reservations.restore(state);
        }
        served
    }

    /// Opens a namespace's backend and chooses where its payload goes.
    fn open(&self, namespace: &NamespaceConfig) -> Result<Opened, ControlError> {
        let path: &PathBuf = &namespace.path;
        let backend = Backend::open(path, None).map_err(|source| ControlError::Backend { path: path.display().to_string(), source })?;
        let mode = namespace.p2pmem.as_ref().unwrap_or(&self.policy.default_mode);
        let choice = placement::choose(&backend, mode, &self.policy.peers)?;
        Ok(Opened { backend, choice })
    }

    /// Builds a served subsystem from its configuration; `backends` are its enabled
    /// namespaces' backends, in order.
    pub fn build_subsystem(&self, subsystem: &SubsystemConfig, backends: Vec<Opened>) -> Subsystem {
        let enabled = subsystem.namespaces.iter().filter(|n| n.enabled);
        let namespaces: Vec<Arc<Namespace>> = enabled.zip(backends).map(|(namespace, backend)| Arc::new(self.build_namespace(&subsystem.nqn, namespace, backend))).collect();
        if !subsystem.allow_any_host && subsystem.allowed_hosts.is_empty() {
            warn!(subsystem = %subsystem.nqn, "no host may connect to this subsystem (allow a host, or any host)");
        }
        let hosts = HostAccess { allow_any_host: subsystem.allow_any_host, allowed_hosts: subsystem.allowed_hosts.iter().cloned().collect() };
        let (serial, model, firmware, ieee_oui, (first, last)) = subsystem.identity();
        let mut served = Subsystem::new(subsystem.nqn.clone(), hosts, namespaces);
        served.serial = serial;
        served.model = model;
        served.firmware = firmware;
        served.ieee_oui = ieee_oui;
        served.controller_ids = first..=last;
        served
    }

    /// Opens the enabled namespaces of `subsystem`, all or none.
    fn open_namespaces(&self, subsystem: &SubsystemConfig) -> Result<Vec<Opened>, ControlError> {
        subsystem.namespaces.iter().filter(|n| n.enabled).map(|n| self.open(n)).collect()
    }

    pub fn add_subsystem(&self, mut subsystem: SubsystemConfig) -> Result<(), ControlError> {
        check_subsystem(&subsystem)?;
        self.defaults.apply(&mut subsystem);
        let mut model = self.model();
        if model.subsystems.iter().any(|s| s.nqn == subsystem.nqn) {
            return Err(ControlError::SubsystemExists(subsystem.nqn));
        }
        let backends = self.open_namespaces(&subsystem)?;
        let served = self.build_subsystem(&subsystem, backends);
        // Served on every port: linked first, so that one discovery notice tells of it.
        for port in &mut model.ports {
            port.subsystems.link(&subsystem.nqn);
            self.target.set_port_subsystems(port.id, port.subsystems.clone());
        }
        if let Err(taken) = self.target.add_subsystem(served) {
            for port in &mut model.ports {
                port.subsystems.unlink(&subsystem.nqn);
                self.target.set_port_subsystems(port.id, port.subsystems.clone());
            }
            return Err(ControlError::SubsystemExists(taken.0));
        }
        info!(subsystem = %subsystem.nqn, "subsystem added on every port");
        model.subsystems.push(subsystem);
        Ok(())
    }

    /// Stops serving a subsystem and drops its links to ports.
    pub fn remove_subsystem(&self, nqn: &str) -> Result<(), ControlError> {
        let mut model = self.model();
        let index = model.subsystems.iter().position(|s| s.nqn == nqn).ok_or_else(|| ControlError::NoSubsystem(nqn.to_owned()))?;
        self.target.remove_subsystem(nqn);
        for port in &mut model.ports {
            port.subsystems.unlink(nqn);
            self.target.set_port_subsystems(port.id, port.subsystems.clone());
        }
        model.subsystems.remove(index);
        info!(subsystem = %nqn, "subsystem removed; its controllers are torn down");
        Ok(())
    }

    /// Adds a namespace; NSID 0 takes the lowest free one. Returns the NSID.
    pub fn add_namespace(&self, nqn: &str, mut namespace: NamespaceConfig) -> Result<u32, ControlError> {
        let mut model = self.model();
        let subsystem = configured_subsystem(&mut model, nqn)?;
        if namespace.id == 0 {
            let taken: BTreeSet<u32> = subsystem.namespaces.iter().map(|n| n.id).collect();
            namespace.id = (1..=NSID_MAX).find(|id| !taken.contains(id)).ok_or_else(|| ControlError::Invalid("no free NSID".into()))?;
        }
        check_nsid(namespace.id)?;
        if subsystem.namespaces.iter().any(|n| n.id == namespace.id) {
            return Err(ControlError::NamespaceExists { nqn: nqn.to_owned(), nsid: namespace.id });
        }
        if namespace.enabled {
            self.serve_namespace(nqn, &namespace)?;
        }
        let nsid = namespace.id;
        subsystem.namespaces.push(namespace);
        subsystem.namespaces.sort_by_key(|n| n.id);
        Ok(nsid)
    }

    fn serve_namespace(&self, nqn: &str, namespace: &NamespaceConfig) -> Result<(), ControlError> {
        let served = self.target.subsystem(nqn).ok_or_else(|| ControlError::NoSubsystem(nqn.to_owned()))?;
        let backend = self.open(namespace)?;
        served
            .insert_namespace(self.build_namespace(nqn, namespace, backend))
            .map_err(|taken| ControlError::NamespaceExists { nqn: nqn.to_owned(), nsid: taken.0 })?;
        self.target.notify_namespace_changed(nqn, namespace.id);
        Ok(())
    }

    fn unserve_namespace(&self, nqn: &str, nsid: u32) {
        if let Some(served) = self.target.subsystem(nqn) {
            if served.remove_namespace(nsid).is_some() {
                self.target.notify_namespace_changed(nqn, nsid);
            }
        }
    }

    /// Removes a namespace. Commands already running on it finish; new ones naming it
    /// fail with Invalid Namespace; hosts are told to rescan.
    pub fn remove_namespace(&self, nqn: &str, nsid: u32) -> Result<(), ControlError> {
        let mut model = self.model();
        let subsystem = configured_subsystem(&mut model, nqn)?;
        let index = subsystem.namespaces.iter().position(|n| n.id == nsid).ok_or_else(|| ControlError::NoNamespace { nqn: nqn.to_owned(), nsid })?;
        self.unserve_namespace(nqn, nsid);
        subsystem.namespaces.remove(index);
        info!(subsystem = %nqn, nsid, "namespace removed");
        Ok(())
    }

    /// Serves or stops serving a configured namespace (nvmet's `enable`).
    pub fn enable_namespace(&self, nqn: &str, nsid: u32, enabled: bool) -> Result<(), ControlError> {
        let mut model = self.model();
        let namespace = configured_namespace(&mut model, nqn, nsid)?;
        if namespace.enabled == enabled {
            return Ok(());
        }
        if enabled {
            self.serve_namespace(nqn, namespace)?;
        } else {
            self.unserve_namespace(nqn, nsid);
        }
        namespace.enabled = enabled;
        info!(subsystem = %nqn, nsid, enabled, "namespace enabled or disabled");
        Ok(())
    }

    /// Write-protects a namespace, or lifts the protection; hosts are told, and the
    /// Linux host marks its block device read-only or writable.
    pub fn set_read_only(&self, nqn: &str, nsid: u32, read_only: bool) -> Result<(), ControlError> {
        let mut model = self.model();
        let namespace = configured_namespace(&mut model, nqn, nsid)?;
        namespace.read_only = read_only;
        self.apply_read_only(nqn, nsid, read_only);
        Ok(())
    }

    /// Sets a served namespace's protection; true (and hosts told) if it changed.
    fn apply_read_only(&self, nqn: &str, nsid: u32, read_only: bool) -> bool {
        let Some(namespace) = self.target.subsystem(nqn).and_then(|s| s.namespace(nsid)) else { return false };
        if namespace.is_read_only() == read_only {
            return false;
        }
        namespace.set_read_only(read_only);
        info!(subsystem = %nqn, nsid, read_only, "namespace write protection changed");
        self.target.notify_namespace_changed(nqn, nsid);
        true
    }

    /// Reads a namespace's size again from its file or device (after the admin grew or
    /// shrank it); hosts are told if it changed. Returns the old and the new size.
    pub fn resize_namespace(&self, nqn: &str, nsid: u32) -> Result<(u64, u64), ControlError> {
        let _model = self.model();
        let served = self.target.subsystem(nqn).ok_or_else(|| ControlError::NoSubsystem(nqn.to_owned()))?;
        let namespace = served.namespace(nsid).ok_or_else(|| ControlError::NoNamespace { nqn: nqn.to_owned(), nsid })?;
        let backend = Backend::of(namespace.backend.as_ref()).ok_or_else(|| ControlError::Invalid("this namespace's storage has no size to read".into()))?;
        let before = namespace.backend.size_bytes();
        let after = backend.refresh_size().map_err(|source| ControlError::Backend { path: backend.describe(), source })?;
        if after != before {
            info!(subsystem = %nqn, nsid, before, after, "namespace size changed");
            self.target.notify_namespace_changed(nqn, nsid);
        }
        Ok((before, after))
    }

    pub fn add_host(&self, nqn: &str, host: &str) -> Result<(), ControlError> {
        config::check_nqn(host).map_err(ControlError::Invalid)?;
        let mut model = self.model();
        let subsystem = configured_subsystem(&mut model, nqn)?;
        if !subsystem.allowed_hosts.iter().any(|h| h == host) {
            subsystem.allowed_hosts.push(host.to_owned());
            self.change_hosts(nqn, |hosts| {
                hosts.allowed_hosts.insert(host.to_owned());
            });
        }
        Ok(())
    }

    /// Refuses the host's new connects; its controllers already connected stay, as
    /// nvmet's do.
    pub fn remove_host(&self, nqn: &str, host: &str) -> Result<(), ControlError> {
        let mut model = self.model();
        let subsystem = configured_subsystem(&mut model, nqn)?;
        let index = subsystem.allowed_hosts.iter().position(|h| h == host).ok_or_else(|| ControlError::NoHost { nqn: nqn.to_owned(), host: host.to_owned() })?;
        subsystem.allowed_hosts.remove(index);
        self.change_hosts(nqn, |hosts| {
            hosts.allowed_hosts.remove(host);
        });
        Ok(())
    }

    pub fn allow_any_host(&self, nqn: &str, allow: bool) -> Result<(), ControlError> {
        let mut model = self.model();
        let subsystem = configured_subsystem(&mut model, nqn)?;
        subsystem.allow_any_host = allow;
        self.change_hosts(nqn, |hosts| hosts.allow_any_host = allow);
        Ok(())
    }

    fn change_hosts(&self, nqn: &str, change: impl FnOnce(&mut HostAccess)) {
        if let Some(served) = self.target.subsystem(nqn) {
            served.change_hosts(change);
            info!(subsystem = %nqn, hosts = ?served.hosts(), "allowed hosts changed");
            self.target.discovery_changed();
        }
    }

    /// Makes the running configuration `wanted` (an nvmetcli file), touching only what
    /// differs: hosts of subsystems and namespaces that stay the same stay connected.
    /// Everything is checked, and every new namespace opened, before anything changes.
    pub fn restore(&self, mut wanted: ServeConfig) -> Result<Changes, ControlError> {
        let mut model = self.model();
        // A port parameter may be left out, or name what the target was started with
        // or what it serves (a saved file says the latter).
        let limits = &self.target.limits;
        let differs = |wanted: Option<u32>, started: Option<u32>, served: u32| wanted.is_some_and(|w| Some(w) != started && w != served);
        let fixed = [
            ("the port's inline_data_size", differs(wanted.in_capsule_data_bytes, model.in_capsule_data_bytes, limits.in_capsule_data_bytes)),
            ("the port's max_queue_size", differs(wanted.queue_entries_max, model.queue_entries_max, limits.io_queue_entries_max)),
            ("the port's mdts", differs(wanted.max_transfer_shift.map(u32::from), model.max_transfer_shift.map(u32::from), u32::from(limits.max_transfer_shift))),
        ];
        if let Some((what, _)) = fixed.iter().find(|(_, differs)| *differs) {
            return Err(ControlError::Fixed((*what).into()));
        }
        if wanted.limits != model.limits {
            return Err(ControlError::Fixed("p2ptgt.limits".into()));
        }
        for subsystem in &mut wanted.subsystems {
            check_subsystem(subsystem)?;
            self.defaults.apply(subsystem);
        }
        // Open everything new first, so that a path that cannot be opened changes nothing.
        let mut opened = Vec::new();
        for subsystem in &wanted.subsystems {
            let current = model.subsystems.iter().find(|s| s.nqn == subsystem.nqn && s.identity() == subsystem.identity());
            for namespace in subsystem.namespaces.iter().filter(|n| n.enabled) {
                let same = current.and_then(|c| c.namespaces.iter().find(|n| n.id == namespace.id)).is_some_and(|c| same_namespace(&subsystem.nqn, c, namespace));
                if !same {
                    opened.push(((subsystem.nqn.clone(), namespace.id), self.open(namespace)?));
                }
            }
        }
        let mut take = |nqn: &str, nsid: u32| opened.iter().position(|(key, _)| key.0 == nqn && key.1 == nsid).map(|index| opened.swap_remove(index).1);
        let mut changes = Changes::default();
        // Ports first: a port that moved is stopped, then started at its new address.
        // What a port that stays serves changes after the subsystems, below.
        let gone: Vec<PortConfig> = model.ports.iter().filter(|p| !wanted.ports.iter().any(|w| w.same_listener(p))).cloned().collect();
        for port in gone {
            self.stop_port(&mut model.ports, port.id)?;
            changes.ports_removed.push(format!("{} {}", port.id, port.address));
        }
        for port in wanted.ports.iter().filter(|w| !model.ports.iter().any(|p| p.same_listener(w))).cloned().collect::<Vec<_>>() {
            changes.ports_added.push(format!("{} {}", port.id, port.address));
            self.start_port(&mut model.ports, port)?;
        }
        // ANA states: those set that the file leaves out go back to the defaults.
        let ana_before = std::mem::take(&mut model.ana);
        for (&(port, group), &state) in &wanted.ana {
            if self.target.set_ana_state(port, group, state) {
                changes.ana_changed.push(format!("{port}/{group} {}", state.name()));
            }
        }
        for &(port, group) in ana_before.keys().filter(|key| !wanted.ana.contains_key(key)) {
            let default = AnaState::default_for(group);
            if self.target.set_ana_state(port, group, default) {
                changes.ana_changed.push(format!("{port}/{group} {}", default.name()));
            }
        }
        model.ana = wanted.ana.clone();
        // Host keys: connected controllers keep their authentication; a new Connect or
        // re-authentication uses the new settings.
        let hosts = model.host_keys.keys().chain(wanted.host_keys.keys());
        let changed: Vec<String> = hosts.filter(|nqn| model.host_keys.get(*nqn) != wanted.host_keys.get(*nqn)).cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        if !changed.is_empty() {
            self.target.set_host_keys(shared_host_keys(&wanted.host_keys));
            model.host_keys = wanted.host_keys.clone();
            changes.host_keys_changed = changed;
        }
        for current in &model.subsystems {
            let replaced = wanted.subsystems.iter().find(|s| s.nqn == current.nqn).is_some_and(|s| s.identity() != current.identity());
            if replaced || !wanted.subsystems.iter().any(|s| s.nqn == current.nqn) {
                self.target.remove_subsystem(&current.nqn);
                if replaced {
                    warn!(subsystem = %current.nqn, "serial, model, firmware, OUI or CNTLID range changed: the subsystem is served anew and its hosts reconnect");
                    changes.subsystems_replaced.push(current.nqn.clone());
                } else {
                    changes.subsystems_removed.push(current.nqn.clone());
                }
            }
        }
        for subsystem in &wanted.subsystems {
            let Some(served) = self.target.subsystem(&subsystem.nqn) else {
                let backends = subsystem.namespaces.iter().filter(|n| n.enabled).filter_map(|n| take(&subsystem.nqn, n.id)).collect();
                let built = self.build_subsystem(subsystem, backends);
                self.target.add_subsystem(built).map_err(|taken| ControlError::SubsystemExists(taken.0))?;
                if !changes.subsystems_replaced.contains(&subsystem.nqn) {
                    changes.subsystems_added.push(subsystem.nqn.clone());
                }
                continue;
            };
            let Some(current) = model.subsystems.iter().find(|s| s.nqn == subsystem.nqn) else { continue };
            let hosts = HostAccess { allow_any_host: subsystem.allow_any_host, allowed_hosts: subsystem.allowed_hosts.iter().cloned().collect() };
            if served.hosts() != hosts {
                served.change_hosts(|access| *access = hosts);
                changes.hosts_changed.push(subsystem.nqn.clone());
                self.target.discovery_changed();
            }
            let key = |nsid: u32| format!("{}/{nsid}", subsystem.nqn);
            for old in current.namespaces.iter().filter(|n| n.enabled) {
                let new = subsystem.namespaces.iter().find(|n| n.id == old.id && n.enabled);
                match new {
                    None => {
                        self.unserve_namespace(&subsystem.nqn, old.id);
                        changes.namespaces_removed.push(key(old.id));
                    }
                    Some(new) if !same_namespace(&subsystem.nqn, old, new) => {
                        match take(&subsystem.nqn, new.id) {
                            Some(backend) => served.replace_namespace(self.build_namespace(&subsystem.nqn, new, backend)),
                            None => served.remove_namespace(old.id),
                        };
                        self.target.notify_namespace_changed(&subsystem.nqn, old.id);
                        changes.namespaces_changed.push(key(old.id));
                    }
                    Some(_) => {}
                }
            }
            for new in subsystem.namespaces.iter().filter(|n| n.enabled) {
                if self.apply_read_only(&subsystem.nqn, new.id, new.read_only) && !changes.namespaces_changed.contains(&key(new.id)) {
                    changes.namespaces_changed.push(key(new.id));
                }
                if !current.namespaces.iter().any(|n| n.id == new.id && n.enabled) {
                    if let Some(backend) = take(&subsystem.nqn, new.id) {
                        let _ = served.insert_namespace(self.build_namespace(&subsystem.nqn, new, backend));
                        self.target.notify_namespace_changed(&subsystem.nqn, new.id);
                        changes.namespaces_added.push(key(new.id));
                    }
                }
            }
        }
        model.subsystems = wanted.subsystems;
        self.restore_port_contents(&mut model.ports, &wanted.ports, &mut changes);
        info!(?changes, "configuration restored");
        Ok(changes)
    }

    /// Gives each port that stays the subsystems and referrals `wanted` says, once the
    /// subsystems are as wanted: a port's discovery controllers hear of a change, and
    /// the controllers of a subsystem it no longer serves that came through it go.
    fn restore_port_contents(&self, ports: &mut [PortConfig], wanted: &[PortConfig], changes: &mut Changes) {
        for port in ports.iter_mut() {
            let Some(wanted) = wanted.iter().find(|w| w.same_listener(port)) else { continue };
            if port.subsystems != wanted.subsystems {
                port.subsystems = wanted.subsystems.clone();
                if self.target.set_port_subsystems(port.id, port.subsystems.clone()) {
                    info!(port = port.id, subsystems = ?port.subsystems, "the port's subsystems changed");
                    changes.ports_changed.push(format!("{} subsystems", port.id));
                }
            }
            if port.referrals != wanted.referrals {
                port.referrals = wanted.referrals.clone();
                if self.target.set_port_referrals(port.id, port.served_referrals()) {
                    info!(port = port.id, referrals = port.referrals.len(), "the port's referrals changed");
                    changes.ports_changed.push(format!("{} referrals", port.id));
                }
            }
        }
    }
}

/// The configuration of subsystem `nqn`.
fn configured_subsystem<'a>(model: &'a mut ServeConfig, nqn: &str) -> Result<&'a mut SubsystemConfig, ControlError> {
    model.subsystems.iter_mut().find(|s| s.nqn == nqn).ok_or_else(|| ControlError::NoSubsystem(nqn.to_owned()))
}

/// The configuration of namespace `nsid` of subsystem `nqn`.
fn configured_namespace<'a>(model: &'a mut ServeConfig, nqn: &str, nsid: u32) -> Result<&'a mut NamespaceConfig, ControlError> {
    configured_subsystem(model, nqn)?.namespaces.iter_mut().find(|n| n.id == nsid).ok_or_else(|| ControlError::NoNamespace { nqn: nqn.to_owned(), nsid })
}

/// NSIDs 1 to FFFFFFFEh name namespaces (FFFFFFFFh is the broadcast value).
const NSID_MAX: u32 = 0xFFFF_FFFE;

fn check_nsid(nsid: u32) -> Result<(), ControlError> {
    if nsid == 0 || nsid > NSID_MAX {
        return Err(ControlError::Invalid(format!("NSID {nsid} is outside 1..=4294967294")));
    }
    Ok(())
}

fn check_subsystem(subsystem: &SubsystemConfig) -> Result<(), ControlError> {
    config::check_nqn(&subsystem.nqn).map_err(ControlError::Invalid)?;
    if subsystem.nqn == crate::core::DISCOVERY_NQN {
        return Err(ControlError::Invalid("the discovery NQN names the discovery subsystem".into()));
    }
    for host in &subsystem.allowed_hosts {
        config::check_nqn(host).map_err(ControlError::Invalid)?;
    }
    let mut seen = BTreeSet::new();
    for namespace in &subsystem.namespaces {
        check_nsid(namespace.id)?;
        if !seen.insert(namespace.id) {
            return Err(ControlError::NamespaceExists { nqn: subsystem.nqn.clone(), nsid: namespace.id });
        }
    }
    if let Some((first, last)) = subsystem.controller_ids {
        if first == 0 || first > last || last > crate::core::CONTROLLER_ID_MAX {
            return Err(ControlError::Invalid(format!("CNTLID range {first}..={last} is not within 1..=65519")));
        }
    }
    if subsystem.firmware.as_ref().is_some_and(|f| f.is_empty() || f.len() > 8 || !f.is_ascii()) {
        return Err(ControlError::Invalid("firmware must be 1 to 8 ASCII characters".into()));
    }
    if subsystem.ieee_oui.is_some_and(|oui| oui >= 1 << 24) {
        return Err(ControlError::Invalid("the IEEE OUI must fit in 24 bits".into()));
    }
    Ok(())
}

/// Whether two configurations of a namespace serve the same thing to hosts (write
/// protection aside: it changes in place).
fn same_namespace(nqn: &str, a: &NamespaceConfig, b: &NamespaceConfig) -> bool {
    a.path == b.path && a.uuid_in(nqn) == b.uuid_in(nqn) && a.nguid_in(nqn) == b.nguid_in(nqn) && a.p2pmem == b.p2pmem && a.enabled == b.enabled && a.reservations == b.reservations && a.ana_group == b.ana_group
}

