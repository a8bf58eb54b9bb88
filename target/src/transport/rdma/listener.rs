//! Accepts NVMe/RDMA connections: validates the CM private data, builds each queue's
//! verbs resources, registers the data pools once with each device a port reaches, and
//! runs each queue on its own thread.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tracing::{debug, error, info, warn};
use zerocopy::IntoBytes;

use super::cm::{CmEvent, CmEventKind, CmId, EventChannel, QueuePairSize};
use super::connection::{Connection, Control};
use super::poll_group::PollGroups;
use super::receives::{Receives, SharedReceives};
use super::registrations::Registrations;
use super::verbs::{AsyncEvent, CompletionChannel, CompletionQueue, Context, DeviceInfo, ProtectionDomain, RecvBuffers};
use crate::backend::Executor;
use crate::core::stats::IoStats;
use crate::core::{Queue, QueueConfig, Target};
use crate::memory::Pools;
use crate::wire::rdma_cm::{ConnectLimits, ConnectRequest, RawAccept, RawReject};
use crate::wire::RejectStatus;

pub use super::registrations::DataPathMode;

/// Per-device resources shared by all connections on it: each port on another device
/// gets its own protection domain and its own registrations of the pools.
struct Device {
    info: DeviceInfo,
    /// Polls readable when an ibverbs asynchronous event is waiting.
    async_fd: std::os::fd::RawFd,
    pd: Arc<ProtectionDomain>,
    /// Also held by each queue on the device, until its last work request is done.
    registrations: Arc<Registrations>,
}

/// A live queue, for stats and shutdown.
pub struct QueueEntry {
    pub queue_id: u16,
    pub peer: Option<SocketAddr>,
    /// The port the queue came through.
    pub port_id: u16,
    /// The RDMA device it runs on.
    device: Context,
    device_name: String,
    /// Filled in by the queue's thread once it has built the connection.
    shared: Arc<QueueShared>,
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Serialize)]
pub struct QueueReport {
    pub queue_id: u16,
    pub peer: Option<String>,
    pub port: u16,
    pub device: String,
    pub uses_cmb: bool,
    /// Its receives come from its poll group's shared receive queue on the device.
    pub shared_receive_queue: bool,
    #[serde(flatten)]
    pub stats: Arc<IoStats>,
}

/// Shared view of the listener for the control socket.
#[derive(Default)]
pub struct ListenerView {
    pub queues: Mutex<Vec<QueueEntry>>,
    /// The data path of each open device, by name.
    pub devices: Mutex<BTreeMap<String, DataPathMode>>,
}

impl ListenerView {
    pub fn queue_reports(&self) -> Vec<QueueReport> {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues
            .iter()
            .filter(|q| q.thread.as_ref().is_some_and(|t| !t.is_finished()))
            .map(|q| QueueReport {
                queue_id: q.queue_id,
                peer: q.peer.map(|p| p.to_string()),
                port: q.port_id,
                device: q.device_name.clone(),
                uses_cmb: q.shared.uses_cmb.load(Ordering::Relaxed),
                shared_receive_queue: q.shared.shared_receive_queue.load(Ordering::Relaxed),
                stats: q.shared.stats.clone(),
            })
            .collect()
    }

    /// The data path of every open device, by name.
    pub fn devices(&self) -> BTreeMap<String, DataPathMode> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The data path of the open devices (the least capable one's); `None` before any.
    pub fn mode(&self) -> Option<DataPathMode> {
        self.devices().into_values().min()
    }
}

/// One address listened on, as the target's port `port_id`.
struct ListeningPort {
    port_id: u16,
    address: SocketAddr,
    /// None while the address or device is gone; listening again is tried with backoff.
    id: Option<CmId>,
    relisten: Backoff,
}

impl ListeningPort {
    fn new(port_id: u16, address: SocketAddr, id: CmId) -> ListeningPort {
        ListeningPort { port_id, address, id: Some(id), relisten: Backoff::default() }
    }

    /// The device the address is on (None for a wildcard address, or while gone).
    fn device(&self) -> Option<Context> {
        self.id.as_ref()?.context()
    }

    /// The address or its device went away: listen again from the first backoff step.
    fn lost(&mut self) {
        self.id = None;
        self.relisten = Backoff::default();
    }

    /// Whether a connection that reached `local` came through this port.
    fn reached_by(&self, local: Option<SocketAddr>) -> bool {
        local.is_some_and(|local| local.port() == self.address.port() && (self.address.ip().is_unspecified() || self.address.ip() == local.ip()))
    }
}

/// A change to the ports listened on, from another thread (`PortHandle`).
enum PortCommand {
    Add { port_id: u16, address: SocketAddr, reply: std::sync::mpsc::Sender<Result<(), String>> },
    Remove { port_id: u16, reply: std::sync::mpsc::Sender<()> },
}

/// Adds and removes ports of a running listener.
#[derive(Clone)]
pub struct PortHandle {
    commands: Arc<Mutex<Vec<PortCommand>>>,
    control: Arc<Control>,
}

impl PortHandle {
    /// Listens on `address` as port `port_id`; waits for the listener to do it.
    pub fn add(&self, port_id: u16, address: SocketAddr) -> Result<(), String> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.send(PortCommand::Add { port_id, address, reply });
        answer.recv_timeout(PORT_COMMAND_WAIT).map_err(|_| "the listener did not answer".to_string())?
    }

    /// Stops listening on port `port_id` and closes the queues that came through it.
    pub fn remove(&self, port_id: u16) {
        let (reply, answer) = std::sync::mpsc::channel();
        self.send(PortCommand::Remove { port_id, reply });
        let _ = answer.recv_timeout(PORT_COMMAND_WAIT);
    }

    fn send(&self, command: PortCommand) {
        self.commands.lock().unwrap_or_else(|p| p.into_inner()).push(command);
        self.control.wake();
    }
}

/// How long a port change may take the listener (closing a port's queues included).
const PORT_COMMAND_WAIT: Duration = Duration::from_secs(30);

pub struct Listener {
    // Drop order: the listening ids before their event channel, and the devices' memory
    // registrations before the pools they cover.
    ports: Vec<ListeningPort>,
    commands: Arc<Mutex<Vec<PortCommand>>>,
    events: EventChannel,
    devices: HashMap<Context, Device>,
    target: Arc<Target>,
    pools: Pools,
    pub status: Arc<ListenerView>,
    pub control: Arc<Control>,
    /// Adaptive polling budget of each queue thread.
    pub poll_budget: Duration,
    /// Whether queue threads poll the SSD for completions (a polled ring each).
    pub polled_io: bool,
    /// CPUs queue threads are pinned to, queue i on `cpus[i % len]`; empty: not pinned.
    pub cpus: Vec<usize>,
    /// Busy-polling poll groups that run the queues instead of their own threads.
    pub poll_groups: Option<Arc<PollGroups>>,
}

impl Listener {
    /// Listens on `address` as port `port_id`; more ports come through [`PortHandle`].
    /// Ports on one device share its registrations: one protection domain and one
    /// memory region per pool and device.
    pub fn bind(port_id: u16, address: SocketAddr, target: Arc<Target>, pools: Pools) -> std::io::Result<Listener> {
        let events = EventChannel::new()?;
        let id = CmId::listen(&events, address, LISTEN_BACKLOG)?;
        Ok(Listener {
            ports: vec![ListeningPort::new(port_id, address, id)],
            commands: Arc::default(),
            events,
            devices: HashMap::new(),
            target,
            pools,
            status: Arc::default(),
            control: Control::new()?,
            poll_budget: Duration::ZERO,
            polled_io: false,
            cpus: Vec::new(),
            poll_groups: None,
        })
    }

    pub fn port_handle(&self) -> PortHandle {
        PortHandle { commands: self.commands.clone(), control: self.control.clone() }
    }

    /// Ports bound to a specific address know their device now: open each (PD and
    /// registrations) so start-up can report the data path. Returns the least capable
    /// open device's data path; None with only wildcard addresses.
    pub fn open_listening_devices(&mut self) -> Option<DataPathMode> {
        let contexts: Vec<Context> = self.ports.iter().filter_map(ListeningPort::device).collect();
        for context in contexts {
            if self.devices.contains_key(&context) {
                continue;
            }
            match self.open_device(context) {
                Ok(device) => {
                    self.devices.insert(context, device);
                }
                Err(error) => warn!(%error, "opening an RDMA device at start-up failed; retrying at its first connection"),
            }
        }
        self.status.mode()
    }

    /// Serves until `control.request_stop()`, then stops every queue and returns.
    pub fn run(mut self) {
        while !self.control.stopping() {
            let async_fds = self.devices.values().map(|device| device.async_fd);
            let mut fds: Vec<libc::pollfd> =
                [self.events.fd(), self.control.fd()].into_iter().chain(async_fds).map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
            #[allow(unsafe_code)]
            // SAFETY: a local pollfd array of fds.len() entries over descriptors we own.
            unsafe {
                libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 250)
            };
            self.device_events();
            loop {
                match self.events.next_event() {
                    Ok(Some(event)) => self.handle_event(event),
                    Ok(None) => break,
                    Err(error) => {
                        error!(%error, "RDMA CM event channel failed");
                        break;
                    }
                }
            }
            self.reap();
            self.port_commands();
            if self.ports.iter().any(|port| port.id.is_none()) {
                self.listen_again();
            }
        }
        self.shutdown();
    }

    /// Carries out port changes asked for through a [`PortHandle`].
    fn port_commands(&mut self) {
        let commands = std::mem::take(&mut *self.commands.lock().unwrap_or_else(|p| p.into_inner()));
        for command in commands {
            match command {
                PortCommand::Add { port_id, address, reply } => {
                    let listened = match CmId::listen(&self.events, address, LISTEN_BACKLOG) {
                        Ok(id) => {
                            self.ports.push(ListeningPort::new(port_id, address, id));
                            let mode = self.open_listening_devices();
                            info!(port = port_id, %address, ?mode, "listening");
                            Ok(())
                        }
                        Err(error) => Err(error.to_string()),
                    };
                    let _ = reply.send(listened);
                }
                PortCommand::Remove { port_id, reply } => {
                    self.ports.retain(|port| port.port_id != port_id);
                    self.stop_queues_where(|queue| queue.port_id == port_id);
                    let _ = reply.send(());
                }
            }
        }
    }

    fn handle_event(&mut self, event: CmEvent) {
        let listener = self.ports.iter().find(|port| port.id.as_ref().is_some_and(|id| id.is(event.id))).map(|port| (port.port_id, port.device()));
        match (event.kind, listener) {
            (CmEventKind::ConnectRequest, _) => self.accept(event),
            (CmEventKind::AddressChange | CmEventKind::DeviceRemoval, Some((port, device))) => {
                warn!(port, kind = ?event.kind, "a listening address or its RDMA device went away: closing the device's queues and listening again when it is back");
                match device {
                    Some(device) => self.lose_device(device),
                    None => self.lose_devices(),
                }
            }
            // A connection whose handshake failed before it moved to its own thread.
            (CmEventKind::Rejected | CmEventKind::Unreachable | CmEventKind::ConnectError, _) => {
                info!(kind = ?event.kind, status = event.status, "a connection failed during its handshake");
            }
            _ => {}
        }
    }

    /// ibverbs asynchronous events of the open devices: a QP or CQ in error closes its
    /// queue; a port going down or coming back is logged (its queues stay: a link flap
    /// shorter than the transport's retries must not cost the hosts a reconnect, and a
    /// queue whose QP fails closes on its QP error or its controller's keep-alive); a
    /// fatal device error is handled as its removal.
    fn device_events(&mut self) {
        let mut lost = Vec::new();
        let contexts: Vec<Context> = self.devices.keys().copied().collect();
        for context in contexts {
            let name = self.devices.get(&context).map(|device| device.info.name.clone()).unwrap_or_default();
            while let Some(event) = context.next_async_event() {
                let queues = self.status.queues.lock().unwrap_or_else(|p| p.into_inner());
                // Closes the queues whose QP or CQ (`address` of it, read by `field`) the
                // event names.
                let close = |field: fn(&QueueShared) -> &AtomicUsize, address: usize, event: &str| {
                    for queue in queues.iter().filter(|q| field(&q.shared).load(Ordering::Relaxed) == address) {
                        warn!(queue = queue.queue_id, peer = ?queue.peer, event, "asynchronous event: closing the queue");
                        queue.control.request_stop();
                    }
                };
                match event {
                    AsyncEvent::QpError { qp, kind } => close(|shared| &shared.qp, qp, kind),
                    AsyncEvent::QpLastReceive { qp } => {
                        for queue in queues.iter().filter(|q| q.shared.qp.load(Ordering::Relaxed) == qp) {
                            debug!(queue = queue.queue_id, peer = ?queue.peer, "the queue pair's last receive from the shared receive queue is done");
                            queue.control.last_receive_reached();
                        }
                    }
                    AsyncEvent::CqError { cq } => close(|shared| &shared.cq, cq, "CQ error"),
                    AsyncEvent::PortDown { port } => {
                        let on_device = queues.iter().filter(|q| q.device == context).count();
                        warn!(device = %name, port, queues = on_device, "asynchronous event: port down");
                    }
                    AsyncEvent::PortActive { port } => info!(device = %name, port, "asynchronous event: port active"),
                    AsyncEvent::DeviceFatal => {
                        error!(device = %name, "asynchronous event: fatal device error; handled as the device's removal");
                        lost.push(context);
                    }
                    AsyncEvent::Other(kind) => debug!(kind, "asynchronous event"),
                }
            }
        }
        for context in lost {
            self.lose_device(context);
        }
    }

    /// A device (or a listening address on it) is gone: stop its queues, which hold QPs
    /// and buffers registered with it, then let go of its PD and registrations and of
    /// the listening ids on it. Ports on other devices go on.
    fn lose_device(&mut self, context: Context) {
        self.stop_queues_where(|queue| queue.device == context);
        if let Some(groups) = &self.poll_groups {
            groups.forget_device(context);
        }
        if let Some(device) = self.devices.remove(&context) {
            self.status.devices.lock().unwrap_or_else(|p| p.into_inner()).remove(&device.info.name);
        }
        for port in self.ports.iter_mut().filter(|port| port.device() == Some(context)) {
            port.lost();
        }
    }

    /// As [`Listener::lose_device`] for every device (the lost listening address was a
    /// wildcard one).
    fn lose_devices(&mut self) {
        self.stop_queues();
        if let Some(groups) = &self.poll_groups {
            for context in self.devices.keys() {
                groups.forget_device(*context);
            }
        }
        self.devices.clear();
        self.status.devices.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.ports.iter_mut().for_each(ListeningPort::lost);
    }

    /// Tries to listen again on each lost port once its backoff allows; on success
    /// reopens the device.
    fn listen_again(&mut self) {
        let now = std::time::Instant::now();
        let mut listening = false;
        for port in self.ports.iter_mut().filter(|port| port.id.is_none()) {
            if !port.relisten.due(now) {
                continue;
            }
            match CmId::listen(&self.events, port.address, LISTEN_BACKLOG) {
                Ok(id) => {
                    port.id = Some(id);
                    listening = true;
                    info!(address = %port.address, "listening again");
                }
                Err(error) => {
                    let wait = port.relisten.failed(now);
                    debug!(address = %port.address, %error, ?wait, "cannot listen yet");
                }
            }
        }
        if listening {
            let mode = self.open_listening_devices();
            info!(?mode, "RDMA device open again");
        }
    }

    /// Live connections in total and from `peer`'s address.
    fn connections(&self, peer: Option<SocketAddr>) -> (usize, usize) {
        let queues = self.status.queues.lock().unwrap_or_else(|p| p.into_inner());
        let live = queues.iter().filter(|q| q.thread.as_ref().is_some_and(|t| !t.is_finished()));
        let (mut total, mut from_peer) = (0, 0);
        for queue in live {
            total += 1;
            from_peer += usize::from(peer.is_some() && queue.peer.map(|p| p.ip()) == peer.map(|p| p.ip()));
        }
        (total, from_peer)
    }

    fn limits(&self) -> ConnectLimits {
        let limits = &self.target.limits;
        ConnectLimits {
            admin_queue_entries_max: limits.admin_queue_entries_max,
            io_queue_entries_max: limits.io_queue_entries_max,
            queue_id_max: limits.io_queues_max,
        }
    }

    fn accept(&mut self, event: CmEvent) {
        #[allow(unsafe_code)]
        // SAFETY: the id comes from this ConnectRequest event and is adopted once.
        let id = unsafe { CmId::adopt(event.id) };
        let request = match ConnectRequest::parse(&event.private_data, &self.limits()) {
            Ok(request) => request,
            Err(status) => return reject(id, status),
        };
        let peer = id.peer();
        let (total, from_peer) = self.connections(peer);
        let limits = &self.target.limits;
        if total >= limits.connections_max {
            warn!(?peer, limit = limits.connections_max, "connection refused: the target has its maximum of connections");
            return reject(id, RejectStatus::NoResources);
        }
        if from_peer >= limits.connections_per_peer_max {
            warn!(?peer, limit = limits.connections_per_peer_max, "connection refused: this peer address has its maximum of connections");
            return reject(id, RejectStatus::NoResources);
        }
        // The port whose address the connection reached (the first, if none matches).
        let local = id.local();
        let port_id = self.ports.iter().find(|port| port.reached_by(local)).or(self.ports.first()).map_or(0, |port| port.port_id);
        match self.build(id, &event, request, port_id) {
            Ok(()) => {}
            Err((id, error)) => {
                error!(%error, queue = request.queue_id, "could not set up the queue");
                if let Some(id) = id {
                    reject(id, RejectStatus::NoResources);
                }
            }
        }
    }

    /// Opens the device if needed and starts the queue's thread, which builds the
    /// connection's verbs and io_uring resources, accepts, and runs it: the listener
    /// goes back to its events at once, so a connect storm does not slow honest accepts.
    fn build(&mut self, id: CmId, event: &CmEvent, request: ConnectRequest, port_id: u16) -> Result<(), (Option<CmId>, String)> {
        let Some(context) = id.context() else { return Err((Some(id), "connect request without a device".to_string())) };
        if !self.devices.contains_key(&context) {
            let device = match self.open_device(context) {
                Ok(device) => device,
                Err(error) => return Err((Some(id), error)),
            };
            self.devices.insert(context, device);
        }
        let Some(device) = self.devices.get(&context) else { return Err((Some(id), "device vanished".into())) };
        let control = match Control::new() {
            Ok(c) => c,
            Err(e) => return Err((Some(id), format!("eventfd: {e}"))),
        };
        let shared = Arc::new(QueueShared::default());
        let device_name = device.info.name.clone();
        let mut setup = Setup {
            context,
            info: device.info.clone(),
            pd: device.pd.clone(),
            registrations: device.registrations.clone(),
            request,
            initiator_depth: event.initiator_depth,
            target: self.target.clone(),
            pools: self.pools.clone(),
            poll_budget: self.poll_budget,
            polled_io: self.polled_io,
            port_id,
            control: control.clone(),
            shared: shared.clone(),
            receives: None,
        };
        let peer = id.peer();
        // A queue run by a poll group only sets up and waits on its thread: the group's is pinned.
        let groups = self.poll_groups.clone();
        let cpu = self.cpus.get(usize::from(request.queue_id) % self.cpus.len().max(1)).copied().filter(|_| groups.is_none());
        let thread = std::thread::Builder::new()
            .name(format!("p2ptgt-q{}", request.queue_id))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(error) = super::pin_to_cpu(cpu) {
                        warn!(cpu, %error, "could not pin the queue thread");
                    }
                }
                // A seat in a poll group first: an I/O queue's QP is made on the group's
                // shared receive queue for the device.
                let seat = groups.as_ref().and_then(|groups| groups.seat());
                if let (Some(groups), Some(seat)) = (&groups, &seat) {
                    setup.receives = setup.shared_receives(groups, seat);
                }
                match setup.connect(id) {
                    Ok(connection) => match (&groups, seat) {
                        (Some(groups), Some(seat)) => groups.run(seat, connection),
                        _ => connection.run(),
                    },
                    Err((id, error)) => {
                        error!(%error, queue = request.queue_id, "could not set up the queue");
                        if let Some(id) = id {
                            reject(id, RejectStatus::NoResources);
                        }
                    }
                }
                super::release_unused_stack();
            })
            .map_err(|e| (None, format!("spawning the queue thread: {e}")))?;
        let mut queues = self.status.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.push(QueueEntry { queue_id: request.queue_id, shared, peer, port_id, device: context, device_name, control, thread: Some(thread) });
        Ok(())
    }

    /// Protection domain and memory registrations for a device, in the order pinned,
    /// ODP, host-only.
    fn open_device(&self, context: Context) -> Result<Device, String> {
        let info = context.query().map_err(|e| format!("ibv_query_device_ex: {e}"))?;
        let pd = ProtectionDomain::new(context).map_err(|e| format!("ibv_alloc_pd: {e}"))?;
        let registrations = Arc::new(Registrations::register(&pd, &info, &self.pools)?);
        let mode = registrations.mode;
        self.status.devices.lock().unwrap_or_else(|p| p.into_inner()).insert(info.name.clone(), mode);
        info!(device = %info.name, odp_rc = info.odp_rc, send_with_invalidate = info.send_with_invalidate, ?mode, "RDMA device ready");
        Ok(Device { info, async_fd: context.async_events_fd(), pd, registrations })
    }

    fn reap(&mut self) {
        let mut queues = self.status.queues.lock().unwrap_or_else(|p| p.into_inner());
        let before = queues.len();
        queues.retain_mut(|q| {
            if q.thread.as_ref().is_some_and(|t| t.is_finished()) {
                if let Some(thread) = q.thread.take() {
                    let _ = thread.join();
                }
                return false;
            }
            true
        });
        if queues.len() < before {
            give_back_freed_memory();
        }
    }

    /// Stops every queue thread and waits for it (each waits for its NIC and backend).
    fn stop_queues(&mut self) {
        self.stop_queues_where(|_| true);
    }

    /// Stops the queues that `which` picks and waits for them.
    fn stop_queues_where(&mut self, which: impl Fn(&QueueEntry) -> bool) {
        let mut queues = {
            let mut all = self.status.queues.lock().unwrap_or_else(|p| p.into_inner());
            let (stopping, staying) = std::mem::take(&mut *all).into_iter().partition(|q: &QueueEntry| which(q));
            *all = staying;
            stopping
        };
        for queue in &queues {
            queue.control.request_stop();
        }
        for queue in &mut queues {
            if let Some(thread) = queue.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn shutdown(&mut self) {
        self.stop_queues();
        // Give disconnect events a moment to reach the hosts before the device goes.
        std::thread::sleep(Duration::from_millis(50));
    }
}

const LISTEN_BACKLOG: i32 = 128;
/// The receiver-not-ready wait of a queue pair on a shared receive queue: 10 µs, the
/// shortest (IB encoding).
const SHARED_RNR_TIMER: u8 = 1;

/// What a queue's thread reports back to the listener (stats, async event matching).
#[derive(Default)]
struct QueueShared {
    stats: Arc<IoStats>,
    uses_cmb: AtomicBool,
    shared_receive_queue: AtomicBool,
    /// Addresses of the queue's QP and CQ, to match asynchronous events (0 until built).
    qp: AtomicUsize,
    cq: AtomicUsize,
}

/// Everything a queue's thread needs to build its connection.
struct Setup {
    context: Context,
    info: DeviceInfo,
    pd: Arc<ProtectionDomain>,
    registrations: Arc<Registrations>,
    request: ConnectRequest,
    initiator_depth: u8,
    target: Arc<Target>,
    pools: Pools,
    poll_budget: Duration,
    polled_io: bool,
    port_id: u16,
    control: Arc<Control>,
    shared: Arc<QueueShared>,
    /// The poll group's shared receive queue, for an I/O queue run by a poll group.
    receives: Option<Arc<SharedReceives>>,
}

impl Setup {
    /// In-capsule data bytes the queue takes (none on an admin queue).
    fn in_capsule(&self) -> u32 {
        if self.request.queue_id == 0 {
            0
        } else {
            self.target.limits.in_capsule_data_bytes
        }
    }

    /// For an I/O queue, its poll group's shared receive queue on the device; `None`
    /// (own receives) for an admin queue, or when the device makes no SRQ.
    fn shared_receives(&self, groups: &PollGroups, seat: &super::poll_group::Seat) -> Option<Arc<SharedReceives>> {
        if self.request.queue_id == 0 {
            return None;
        }
        match groups.shared_receives(seat, &self.pd, self.in_capsule(), self.info.max_srq_wr) {
            Ok(shared) => shared,
            Err(error) => {
                warn!(queue = self.request.queue_id, device = %self.info.name, %error, "no shared receive queue: the queue posts receives of its own");
                None
            }
        }
    }

    /// Builds the queue's CQ, QP, receive buffers and rings, posts its receives,
    /// accepts, and moves the id to the queue's own event channel.
    fn connect(self, mut id: CmId) -> Result<Connection, (Option<CmId>, String)> {
        let Setup { context, info, pd, request, .. } = &self;
        let entries = request.host_send_queue_entries;
        let in_capsule = self.in_capsule();
        let send_entries = (entries * 3 + 8).min(info.max_qp_wr.max(16));
        // Write data received in a capsule stays in its receive slot until the response
        // is sent, and the host may send its next command as soon as it sees the response:
        // twice the entries keep a receive posted for it.
        let recv_entries = if in_capsule > 0 { (entries * 2).min(info.max_qp_wr.max(entries)) } else { entries };
        let cq_entries = (send_entries + recv_entries).min(info.max_cqe.max(32));
        let fail = |e: std::io::Error, what: &str| format!("{what}: {e}");
        let channel = match CompletionChannel::new(*context) {
            Ok(c) => c,
            Err(e) => return Err((Some(id), fail(e, "completion channel"))),
        };
        let cq = match CompletionQueue::new(*context, cq_entries, &channel) {
            Ok(c) => c,
            Err(e) => return Err((Some(id), fail(e, "completion queue"))),
        };
        let size = QueuePairSize { send_entries, recv_entries, inline_bytes: 64 };
        let qp = match id.create_queue_pair(pd, &cq, size, self.receives.as_ref().map(|shared| shared.srq())) {
            Ok(qp) => qp,
            Err(e) => return Err((Some(id), fail(e, "queue pair"))),
        };
        let recv = match &self.receives {
            Some(shared) => Receives::Shared(shared.join(entries)),
            None => match RecvBuffers::new(pd, recv_entries, in_capsule, false) {
                Ok(r) => Receives::Own(r),
                Err(e) => return Err((Some(id), fail(e, "receive buffers"))),
            },
        };
        let executor = match Executor::new(entries * 2, self.polled_io) {
            Ok(e) => e,
            Err(e) => return Err((Some(id), format!("io_uring: {e}"))),
        };
        let host = self.pools.host_memory();
        // Registered as io_uring fixed buffers once the queue's Connect is accepted: a
        // connection that never sends one does not get the host pool's pages pinned.
        // (The admin queue takes no in-capsule data: its data region is empty.)
        let fixed: Vec<(u64, usize)> = [(host.address(), host.len_bytes()), recv.buffers().data_region()].into_iter().filter(|&(_, len)| len > 0).collect();
        let events = match EventChannel::new() {
            Ok(e) => e,
            Err(e) => return Err((Some(id), fail(e, "event channel"))),
        };
        let initiator_depth = self.initiator_depth.min(info.max_qp_init_rd_atom).max(1);
        let config = QueueConfig { queue_id: request.queue_id, entries, local_address: id.local().map(|address| address.ip()), port_id: self.port_id };
        let wake = |control: &Arc<Control>| -> Box<dyn Fn() + Send + Sync> {
            let control = control.clone();
            Box::new(move || control.wake())
        };
        // Receives first, so the host's first capsule finds a buffer. The queue's pool
        // choice waits for the path MTU, known only after accept.
        let placeholder = Queue::new(self.target.clone(), config, Box::new(self.pools.handle(false, wake(&self.control))));
        let registrations = self.registrations.clone();
        let mut connection = Connection::new(id, cq, channel, recv, placeholder, executor, events, qp, self.control.clone(), info.send_with_invalidate, registrations);
        connection.poll_budget = self.poll_budget;
        connection.fixed_buffers = Some(fixed);
        if let Err(e) = connection.post_receives() {
            return Err((Some(connection.id), fail(e, "posting receives")));
        }
        let accept = RawAccept::new(entries.min(u32::from(u16::MAX)) as u16);
        if let Err(e) = connection.id.accept(accept.as_bytes(), initiator_depth) {
            return Err((None, fail(e, "rdma_accept")));
        }
        if connection.recv.is_shared() {
            // The connection manager leaves the longest wait (655 ms) for a host that
            // finds every shared slot taken; the group posts slots again within
            // microseconds, so the host should try again at once.
            if let Err(error) = connection.qp.set_min_rnr_timer(SHARED_RNR_TIMER) {
                warn!(queue = request.queue_id, %error, "could not shorten the receiver-not-ready wait: a host that finds the shared receive queue empty waits 655 ms");
            }
        }
        let uses_cmb = self.registrations.peers_usable() && queue_may_use_cmb(&connection, info.is_rxe(), request.queue_id);
        connection.queue = Queue::new(self.target.clone(), config, Box::new(self.pools.handle(uses_cmb, wake(&self.control))));
        connection.queue.stats = self.shared.stats.clone();
        connection.queue.arm_connect_deadline(std::time::Instant::now());
        if let Err(e) = connection.id.migrate(&connection.events) {
            return Err((None, fail(e, "rdma_migrate_id")));
        }
        self.shared.uses_cmb.store(uses_cmb, Ordering::Relaxed);
        self.shared.shared_receive_queue.store(connection.recv.is_shared(), Ordering::Relaxed);
        self.shared.qp.store(connection.qp.0 as usize, Ordering::Relaxed);
        self.shared.cq.store(connection.cq.raw() as usize, Ordering::Relaxed);
        info!(queue = request.queue_id, peer = ?connection.id.peer(), entries, initiator_depth, uses_cmb, shared_receive_queue = connection.recv.is_shared(), "queue accepted");
        Ok(connection)
    }
}

/// On rxe the ODP copy is only correct with 4096-byte packets: a smaller path MTU sends
/// this queue's payload through host memory.
fn queue_may_use_cmb(connection: &Connection, is_rxe: bool, queue_id: u16) -> bool {
    if queue_id == 0 || !is_rxe {
        return true;
    }
    match connection.qp.path_mtu_bytes() {
        Ok(4096) => true,
        Ok(mtu) => {
            warn!(queue = queue_id, path_mtu = mtu, "soft-RoCE path MTU below 4096: this queue uses host buffers (raise the netdev MTU to >= 4200 on both ends)");
            false
        }
        Err(error) => {
            warn!(queue = queue_id, %error, "cannot read the path MTU: this queue uses host buffers");
            false
        }
    }
}

/// Retry schedule for listening again: 1 s, doubling to 30 s.
#[derive(Default)]
struct Backoff {
    next: Option<std::time::Instant>,
    wait: Duration,
}

impl Backoff {
    fn due(&self, now: std::time::Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// Records a failed try; returns the wait before the next.
    fn failed(&mut self, now: std::time::Instant) -> Duration {
        self.wait = (self.wait * 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        self.next = Some(now + self.wait);
        self.wait
    }
}

/// Returns the heap memory that ended threads freed to the system: each queue thread
/// allocates in an arena of its own, and without this a burst of connections (500 that
/// never send Connect) would leave the process's RSS several MiB higher for good.
fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

fn reject(id: CmId, status: RejectStatus) {
    warn!(?status, "rejecting connect request");
    let data = RawReject::new(status);
    if let Err(error) = id.reject(data.as_bytes()) {
        warn!(%error, "rdma_reject failed");
    }
}
