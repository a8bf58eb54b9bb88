//! Start-up: opens the namespaces, picks the p2pmem provider, sizes the pools, binds the
//! RDMA listener, and serves until SIGTERM or SIGINT, answering JSON-RPC on a Unix
//! control socket meanwhile (`control::rpc`: stats, and every live change), and
//! reloading the `--config` file on SIGHUP.

mod listeners;
pub mod metrics;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing::{info, warn};

use crate::backend::reservation_file::ReservationFile;
use crate::backend::Backend;
use crate::config::{P2pMem, ServeConfig};
use crate::control::{self, rpc, Choice, Opened, PlacementPolicy, Runtime, SubsystemDefaults};
use crate::core::{Limits, Placement, Region, Target};
use crate::error::SetupError;
use crate::memory::p2pmem::{P2pMemMapping, Provider};
use crate::memory::{Memory, Pools, RegionPool};
use crate::transport::rdma::DataPathMode;
use listeners::{Listeners, QueueSettings};

/// Knobs beyond the served objects.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub p2pmem: P2pMem,
    pub control: PathBuf,
    pub host_pool_bytes: usize,
    pub cmb_pool_bytes: Option<usize>,
    pub limits: Limits,
    /// Adaptive polling after activity, before a queue thread sleeps.
    pub poll_budget: std::time::Duration,
    /// Whether shallow queues may poll the SSD for completions (block devices with
    /// poll queues; needs `poll_budget`, see [`ServeOptions::polls_ssd`]).
    pub polled_io: bool,
    /// CPUs to pin queue threads to (queue i on `cpus[i % len]`); empty: not pinned.
    pub cpus: Vec<usize>,
    /// Instead of a sleeping thread per queue, one busy-polling poll group per CPU of
    /// `cpus` (which must not be empty) runs the queues.
    pub poll_groups: bool,
    /// Slots of each poll group's shared receive queue per device (0: none; each I/O
    /// queue then posts receives of its own).
    pub srq_entries: u32,
    /// Firmware and OUI for subsystems that set none, here and in later changes.
    pub defaults: SubsystemDefaults,
    /// The nvmetcli file SIGHUP reloads.
    pub config_file: Option<PathBuf>,
    /// `--listen`, which overrides the file's port at start-up and on reload alike.
    pub listen_flag: Option<std::net::SocketAddr>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// The file reservations with Persist Through Power Loss are kept in; without
    /// one, hosts cannot ask for it.
    pub reservation_file: Option<PathBuf>,
}

impl ServeOptions {
    /// Whether queues poll the SSD for completions: asked for, and only a thread that
    /// polls at all (a poll group, or a poll budget) is awake to find them.
    pub fn polls_ssd(&self) -> bool {
        self.polled_io && (self.poll_groups || !self.poll_budget.is_zero())
    }
}

pub fn run(config: ServeConfig, options: ServeOptions) -> Result<(), SetupError> {
    let mut backends = config
        .subsystems
        .iter()
        .map(|subsystem| subsystem.namespaces.iter().filter(|n| n.enabled).map(open_namespace).collect::<Result<Vec<_>, _>>())
        .collect::<Result<Vec<_>, _>>()?;
    for (subsystem, backends) in config.subsystems.iter().zip(&backends) {
        for (namespace, backend) in subsystem.namespaces.iter().filter(|n| n.enabled).zip(backends) {
            if let Backend::File(file) = backend {
                if file.block_device && file.direct && !file.pollable && options.polls_ssd() {
                    info!(nsid = namespace.id, path = %namespace.path.display(), "the block device has no poll queues (NVMe: the nvme.poll_queues module parameter): its completions come by interrupt");
                }
            }
        }
    }
    let PayloadPlan { choices, peers, reason: p2p_reason } = place_payload(&config, &options, &backends)?;
    let mut limits = options.limits.clone();
    if let Some(bytes) = config.in_capsule_data_bytes {
        limits.in_capsule_data_bytes = bytes;
    }
    if let Some(entries) = config.queue_entries_max {
        limits.io_queue_entries_max = entries.clamp(2, 1024);
    }
    if !peers.is_empty() && limits.in_capsule_data_bytes > 0 {
        // In-capsule data would land in host receive buffers and break the promise that
        // payload never crosses host memory; hosts send writes by keyed SGL instead.
        info!("CMB data path: in-capsule data disabled on I/O queues (writes are fetched by RDMA READ into the CMB)");
        limits.in_capsule_data_bytes = 0;
    }
    fit_connections_to_descriptors(&mut limits);
    let pools = Pools::new(options.host_pool_bytes, peers).map_err(|source| SetupError::Allocate { what: "host buffer pool", source })?;
    fit_transfers_to_pools(&pools, &mut limits)?;
    let first = config.ports.first().cloned().ok_or_else(|| SetupError::config("ports", "no port to listen on"))?;
    let target = Arc::new(Target::new(Vec::new(), control::port_of(&first), limits));
    match &options.reservation_file {
        Some(path) => {
            let file = ReservationFile::open(path).map_err(|e| SetupError::config("reservations", e.to_string()))?;
            info!(path = %path.display(), "reservations with Persist Through Power Loss are kept in this file");
            target.set_reservation_store(Arc::new(file));
        }
        None => info!("no reservation state file (--reservations or --config): hosts cannot ask reservations to persist"),
    }
    // Namespaces added later may use the peer pools mapped now.
    let policy = PlacementPolicy { peers: pools.peers.clone(), host: Some(pools.host.clone()), default_mode: options.p2pmem.clone() };
    let runtime = Runtime::new(target.clone(), config.clone(), policy, options.defaults.clone());
    let mut choices = choices.into_iter();
    for (subsystem, backends) in config.subsystems.iter().zip(backends.iter_mut()) {
        let opened = std::mem::take(backends).into_iter().zip(choices.by_ref()).map(|(backend, choice)| Opened { backend, choice }).collect();
        let served = runtime.build_subsystem(subsystem, opened);
        target.add_subsystem(served).map_err(|taken| SetupError::config("subsystems", format!("{} appears twice", taken.0)))?;
    }
    // Before any port listens: no host with a key may connect unauthenticated.
    target.set_host_keys(control::shared_host_keys(&config.host_keys));
    if !config.host_keys.is_empty() {
        info!(hosts = config.host_keys.len(), "hosts with a DH-HMAC-CHAP key must authenticate");
    }
    let settings = QueueSettings { poll_budget: options.poll_budget, polled_io: options.polls_ssd(), cpus: options.cpus.clone(), poll_groups: options.poll_groups, srq_entries: options.srq_entries };
    let listeners = Listeners::start(first.id, first.address, target.clone(), pools.clone(), settings)
        .map_err(|source| SetupError::Rdma { verb: "rdma_bind_addr/rdma_listen on the listen address", source })?;
    let listeners = Arc::new(listeners);
    for port in config.ports.iter().filter(|port| port.id != first.id) {
        let added = target
            .add_port(control::port_of(port))
            .map_err(|taken| SetupError::config("ports", format!("portid {} appears twice", taken.id)))
            .and_then(|()| listeners.add(port.id, port.address).map_err(|error| SetupError::Rdma { verb: "rdma_bind_addr/rdma_listen on a port's address", source: std::io::Error::other(error) }));
        if let Err(error) = added {
            listeners.stop_all();
            return Err(error);
        }
    }
    runtime.set_listeners(listeners.clone());
    for (&(port, group), &state) in &config.ana {
        target.set_ana_state(port, group, state);
    }

    // Every port's device is open now (except behind a wildcard address).
    let mode = listeners.mode();
    let devices = listeners.devices();
    let buffers = match mode {
        _ if pools.peers.is_empty() => format!("host memory ({})", p2p_reason.unwrap_or_else(|| "no namespace's device can reach a p2pmem provider".into())),
        Some(DataPathMode::Host) if devices.values().all(|&mode| mode == DataPathMode::Host) => "host memory (the RDMA device refused to register the p2pmem)".into(),
        mode => {
            let peers: Vec<String> = pools.peers.iter().map(|pool| format!("{} ({})", pool.provider().map_or("?", |p| p.bdf.as_str()), size_text(pool.capacity_bytes() as usize))).collect();
            let registration = match mode {
                None => "registration decided at the first connection (listening on a wildcard address)".into(),
                Some(mode) if devices.len() <= 1 => format!("{mode:?} registration"),
                Some(_) => devices
                    .iter()
                    .map(|(name, mode)| match mode {
                        DataPathMode::Host => format!("host memory on {name} (it refused to register the p2pmem)"),
                        mode => format!("{mode:?} registration on {name}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            format!("p2pmem of {}, {registration}", peers.join(", "))
        }
    };
    let names: Vec<String> = target.subsystems().iter().map(|s| s.nqn.clone()).collect();
    let addresses: Vec<String> = config.ports.iter().map(|p| p.address.to_string()).collect();
    info!("p2ptgt serving {} on {} (NVMe/RDMA); data buffers: {buffers}", names.join(", "), addresses.join(", "));
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SetupError::Allocate { what: "tokio runtime", source })?;
    let socket = options.control.clone();
    let reload_from = options.config_file.clone();
    let listen_flag = options.listen_flag;
    let report = Arc::new(Report { runtime, pools: pools.clone(), listeners: listeners.clone() });
    if let Some(address) = options.metrics {
        metrics::serve(address, report.clone()).map_err(|source| SetupError::Metrics { address, source })?;
    }
    let result = executor.block_on(async move {
        let server = bind_control(&socket)?;
        let signal = |kind| tokio::signal::unix::signal(kind).map_err(|source| SetupError::Allocate { what: "signal handler", source });
        let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hangup = signal(tokio::signal::unix::SignalKind::hangup())?;
        notify_ready();
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = hangup.recv() => reload(&report.runtime, reload_from.as_deref(), listen_flag),
                accepted = server.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve_client(stream, report.clone()));
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&socket);
        Ok::<(), SetupError>(())
    });
    info!("stopping: closing every queue");
    listeners.stop_all();
    info!("stopped");
    result
}

/// Binds the control socket, readable and writable by its owner only.
fn bind_control(socket: &Path) -> Result<tokio::net::UnixListener, SetupError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |source| SetupError::Control { path: socket.to_owned(), source };
    let _ = std::fs::remove_file(socket);
    let server = tokio::net::UnixListener::bind(socket).map_err(fail)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(server)
}

/// SIGHUP: the configuration file is read again and applied as `restore` would.
fn reload(runtime: &Runtime, path: Option<&Path>, listen: Option<std::net::SocketAddr>) {
    let Some(path) = path else {
        warn!("SIGHUP: no --config file to reload");
        return;
    };
    info!(path = %path.display(), "SIGHUP: reloading the configuration");
    let applied = crate::config::load_nvmetcli(path, listen).map_err(|e| e.to_string()).and_then(|wanted| runtime.restore(wanted).map_err(|e| e.to_string()));
    if let Err(error) = applied {
        warn!(path = %path.display(), %error, "SIGHUP: the configuration was not applied; the target serves what it served");
    }
}

/// Tells systemd (`Type=notify`) that the listener is up, if it started us.
fn notify_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(error) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            warn!(%error, "could not tell systemd the target is ready");
        }
    }
}

/// Lines longer than this are refused (a whole nvmetcli file fits many times over).
const REQUEST_BYTES_MAX: usize = 4 << 20;

/// One control connection: only root, or the user the target runs as, may change it.
async fn serve_client(stream: tokio::net::UnixStream, report: Arc<Report>) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let own = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(peer) if peer.uid() == 0 || peer.uid() == own => {}
        peer => {
            warn!(uid = ?peer.map(|p| p.uid()), "control connection refused: not root");
            return;
        }
    }
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut lines).take(REQUEST_BYTES_MAX as u64).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') && line.len() >= REQUEST_BYTES_MAX => {
                let _ = write.write_all(format!("{}\n", serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": rpc::INVALID_REQUEST, "message": "request longer than 4 MiB"}})).as_bytes()).await;
                return;
            }
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        // On a blocking thread: a copy or a restore may take a while, and the control
        // socket and the signals are served meanwhile.
        let (worker, request) = (report.clone(), line.trim_end().to_owned());
        let reply = tokio::task::spawn_blocking(move || rpc::handle(&worker.runtime, &request, || worker.json())).await.ok().flatten();
        if let Some(reply) = reply {
            if write.write_all(reply.as_bytes()).await.is_err() || write.write_all(b"\n").await.is_err() {
                return;
            }
        }
    }
}

/// A namespace's registrants and reservation for `p2ptgt stats`: Host Identifiers and
/// the NQNs of their connected controllers, never the keys (a key lets its bearer
/// preempt).
fn reservation_json(target: &Target, state: &crate::core::reservation::ReservationState) -> serde_json::Value {
    let hex = |id: &[u8; 16]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let registrants: Vec<_> = state
        .registrants
        .iter()
        .map(|r| json!({ "host_id": hex(&r.host_id), "host_nqns": target.host_nqns(&r.host_id), "holds": state.holds(&r.host_id) }))
        .collect();
    json!({
        "type": state.holder.map(|h| h.rtype),
        "holder": state.holder.map(|h| hex(&h.host_id)),
        "generation": state.generation,
        "persist": state.persist,
        "registrants": registrants,
    })
}

struct Report {
    runtime: Runtime,
    pools: Pools,
    listeners: Arc<Listeners>,
}

impl Report {
    /// The p2pmem provider whose memory carries namespace `n`'s payload, if any.
    fn provider_of(&self, n: &crate::core::Namespace) -> Option<String> {
        let Placement::Peer(pool) = n.payload_placement else { return None };
        Some(self.pools.peers.get(usize::from(pool))?.provider()?.bdf.clone())
    }

    fn json(&self) -> serde_json::Value {
        let target = self.runtime.target();
        let mode = self.listeners.mode();
        let subsystems: Vec<_> = target
            .subsystems()
            .iter()
            .map(|s| {
                let namespaces: Vec<_> = s
                    .namespaces()
                    .values()
                    .map(|n| json!({
                        "nsid": n.id,
                        "backend": n.backend.describe(),
                        "payload": match n.payload_placement { Placement::Peer(_) => "cmb", _ => "host" },
                        "provider": self.provider_of(n),
                        "payload_bytes_host": n.payload.payload_bytes_host.get(),
                        "payload_bytes_p2p": n.payload.payload_bytes_cmb.get(),
                        "stats": &n.stats,
                        "reservation": reservation_json(target, &n.reservations.state()),
                    }))
                    .collect();
                json!({ "nqn": s.nqn, "namespaces": namespaces })
            })
            .collect();
        let queues = self.listeners.queue_reports();
        // Pool-wide, so that it still counts the waits of queues that have gone.
        let buffer_waits: u64 = self.pools.all().map(|(_, pool)| pool.stats().waits).sum();
        let polled_ios: u64 = queues.iter().map(|q| q.stats.polled_ios.get()).sum();
        json!({
            "listen": self.listeners.addresses().iter().map(|(id, address)| json!({"port": id, "address": address.to_string()})).collect::<Vec<_>>(),
            "registration": mode.map_or("unknown".to_string(), |m| format!("{m:?}").to_lowercase()),
            "devices": self.listeners.devices(),
            "payload_bytes_host": target.payload.payload_bytes_host.get(),
            "payload_bytes_cmb": target.payload.payload_bytes_cmb.get(),
            "control_pool": self.pools.control.stats(),
            "host_pool": self.pools.host.stats(),
            // The first peer pool (the only one on a machine with one CMB).
            "cmb_pool": self.pools.peers.first().map(|c| c.stats()),
            "peer_pools": self.pools.peers.iter().map(|pool| json!({"provider": pool.provider().map(|p| p.bdf.clone()), "stats": pool.stats()})).collect::<Vec<_>>(),
            "buffer_waits": buffer_waits,
            "polled_ios": polled_ios,
            "subsystems": subsystems,
            "controllers": target.controllers(),
            "queues": queues,
        })
    }
}

fn open_namespace(namespace: &crate::config::NamespaceConfig) -> Result<Backend, SetupError> {
    Backend::open(&namespace.path, None).map_err(|source| SetupError::Namespace { path: namespace.path.display().to_string(), source })
}

/// Where the namespaces' payload goes, decided at start-up.
struct PayloadPlan {
    /// Each enabled namespace's choice, in configuration order.
    choices: Vec<Choice>,
    /// The memory of the providers chosen, in peer pool order.
    peers: Vec<Arc<Memory>>,
    /// Why no provider was even tried, if none was.
    reason: Option<String>,
}

/// Plans where payload goes: every provider a namespace may use is mapped and tried;
/// those no namespace chose are unmapped again.
fn place_payload(config: &ServeConfig, options: &ServeOptions, backends: &[Vec<Backend>]) -> Result<PayloadPlan, SetupError> {
    let (candidates, reason) = map_providers(config, options)?;
    let mut choices = Vec::new();
    for (subsystem, backends) in config.subsystems.iter().zip(backends) {
        for (namespace, backend) in subsystem.namespaces.iter().filter(|n| n.enabled).zip(backends) {
            let mode = namespace.p2pmem.as_ref().unwrap_or(&options.p2pmem);
            choices.push(control::placement::choose(backend, mode, &candidates).map_err(|refused| SetupError::config("p2pmem", refused.to_string()))?);
        }
    }
    let mut used: Vec<usize> = choices.iter().filter_map(|c| Some(c.peer?.0)).collect();
    used.sort_unstable();
    used.dedup();
    // Indices into the candidates become indices into the peer pools.
    for choice in &mut choices {
        choice.peer = choice.peer.and_then(|(index, route)| Some((used.iter().position(|&u| u == index)?, route)));
    }
    let peers = used.iter().filter_map(|&index| Some(candidates.get(index)?.memory.clone())).collect();
    Ok(PayloadPlan { choices, peers, reason })
}

/// Maps every p2pmem provider some namespace may use, as a pool each (indexed as
/// [`control::placement::choose`] reports them), or says why there is none. A provider
/// named explicitly must be there and mappable; under `auto` every published one is a
/// candidate.
fn map_providers(config: &ServeConfig, options: &ServeOptions) -> Result<(Vec<Arc<RegionPool>>, Option<String>), SetupError> {
    let namespaces = config.subsystems.iter().flat_map(|s| s.namespaces.iter().filter(|n| n.enabled));
    let modes: Vec<&P2pMem> = namespaces.map(|n| n.p2pmem.as_ref().unwrap_or(&options.p2pmem)).collect();
    let mut wanted: Vec<Provider> = Vec::new();
    for bdf in modes.iter().filter_map(|m| match m {
        P2pMem::Device(bdf) => Some(bdf),
        _ => None,
    }) {
        let sysfs = PathBuf::from("/sys/bus/pci/devices").join(bdf);
        let provider = Provider::probe(&sysfs).ok_or_else(|| SetupError::config("p2pmem", format!("{} publishes no p2pmem", sysfs.display())))?;
        if !wanted.contains(&provider) {
            wanted.push(provider);
        }
    }
    let explicit = wanted.len();
    if modes.iter().any(|m| **m == P2pMem::Auto) {
        let published = Provider::all();
        if published.is_empty() && explicit == 0 {
            warn!("no p2pmem provider published on this machine: payload uses host memory buffers (an NVMe SSD with a CMB and a kernel with CONFIG_PCI_P2PDMA publish one)");
            return Ok((Vec::new(), Some("no p2pmem provider found".into())));
        }
        for provider in published {
            if !wanted.iter().any(|w| w.bdf == provider.bdf) {
                wanted.push(provider);
            }
        }
    } else if explicit == 0 {
        return Ok((Vec::new(), Some("--p2pmem off".into())));
    }
    let mut pools = Vec::new();
    for (index, provider) in wanted.iter().enumerate() {
        match map_cmb(provider, options.cmb_pool_bytes) {
            Ok(memory) => pools.push(RegionPool::whole(Region::Peer(u8::try_from(pools.len()).unwrap_or(u8::MAX)), memory)),
            Err(error) if index < explicit => return Err(error),
            Err(error) => warn!(provider = %provider.bdf, %error, "cannot map this provider's p2pmem: no namespace uses it"),
        }
    }
    Ok((pools, None))
}

fn map_cmb(provider: &Provider, wanted: Option<usize>) -> Result<Memory, SetupError> {
    let available = provider.available_bytes as usize;
    let bytes = wanted.unwrap_or(available).min(available) & !0xFFF;
    if bytes == 0 {
        return Err(SetupError::config("--p2pmem", format!("{} has no p2pmem available", provider.bdf)));
    }
    Ok(Memory::P2p(P2pMemMapping::map(provider, bytes)?))
}

/// File descriptors one connection holds: its CM event channel, completion channel,
/// eventfd and io_uring rings (two with polled I/O), with room to spare.
const DESCRIPTORS_PER_CONNECTION: u64 = 8;
/// Descriptors kept for everything else (the listener, the control socket, namespaces).
const DESCRIPTORS_RESERVED: u64 = 128;

/// Raises the open-file limit to its hard limit and lowers the connection limit to what
/// it allows, saying so in one line.
fn fit_connections_to_descriptors(limits: &mut Limits) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the local struct.
    #[allow(unsafe_code)]
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if read && limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the local struct.
        #[allow(unsafe_code)]
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let descriptors = if read { limit.rlim_cur } else { 1024 };
    let room = descriptors.saturating_sub(DESCRIPTORS_RESERVED) / DESCRIPTORS_PER_CONNECTION;
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    if limits.connections_max > room {
        warn!(descriptors, connections_max = room, asked = limits.connections_max, "the open-file limit allows fewer connections than asked: limit lowered");
        limits.connections_max = room;
    }
    info!(
        descriptors,
        connections_max = limits.connections_max,
        per_peer = limits.connections_per_peer_max,
        queues_per_host = limits.queues_per_host_max,
        controllers_per_host = limits.controllers_per_host_max,
        connect_timeout = ?limits.connect_timeout,
        "connection limits"
    );
}

/// Every payload pool must hold one maximum transfer for each I/O queue a controller
/// may have, or a few queues at full size could wait on each other for good. A pool
/// too small for that lowers MDTS until it fits, and says so; one that cannot hold a
/// single 4 KiB transfer per queue is refused.
fn fit_transfers_to_pools(pools: &Pools, limits: &mut Limits) -> Result<(), SetupError> {
    let queues = u64::from(limits.io_queues_max.max(1));
    let smallest = std::iter::once(&pools.host).chain(&pools.peers).map(|pool| pool.capacity_bytes()).min().unwrap_or(0);
    let wanted = limits.max_transfer_bytes();
    while u64::from(limits.max_transfer_bytes()) * queues > smallest {
        if limits.max_transfer_shift == 0 {
            return Err(SetupError::config(
                "--host-pool-mb/--cmb-pool-mb",
                format!("a payload pool of {} cannot hold one 4 KiB transfer for each of {queues} I/O queues", size_text(smallest as usize)),
            ));
        }
        limits.max_transfer_shift -= 1;
    }
    if limits.max_transfer_bytes() != wanted {
        warn!(
            pool = %size_text(smallest as usize),
            io_queues = queues,
            mdts = %size_text(limits.max_transfer_bytes() as usize),
            "payload pool smaller than one maximum transfer per I/O queue: MDTS lowered to fit"
        );
    }
    let control = pools.control.capacity_bytes();
    if control < u64::from(limits.max_transfer_bytes()) {
        return Err(SetupError::config("limits", format!("the control pool ({}) is smaller than one maximum transfer", size_text(control as usize))));
    }
    Ok(())
}


/// A size in whole MiB when it is one, else in KiB (a 1.75 MiB pool is not "1 MiB").
fn size_text(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) { format!("{} MiB", bytes >> 20) } else { format!("{} KiB", bytes >> 10) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_exactly() {
        assert_eq!(super::size_text(64 << 20), "64 MiB");
        assert_eq!(super::size_text(1792 << 10), "1792 KiB");
    }
}
