//! The RDMA listener and its ports: one listener thread listens on every port (so
//! that all ports share one registration of the pools per device); ports are added and
//! removed through its handle, at start-up and by `port.add` / `port.remove`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::info;

use crate::control::PortListeners;
use crate::core::Target;
use crate::memory::Pools;
use crate::transport::rdma::connection::Control;
use crate::transport::rdma::listener::{ListenerView, PortHandle, QueueReport};
use crate::transport::rdma::poll_group::PollGroups;
use crate::transport::rdma::{DataPathMode, Listener};

/// How the listener runs its queues.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    pub poll_budget: Duration,
    pub polled_io: bool,
    pub cpus: Vec<usize>,
    /// One busy-polling poll group per CPU of `cpus` runs the queues.
    pub poll_groups: bool,
    /// Slots of each poll group's shared receive queue per device.
    pub srq_entries: u32,
}

pub struct Listeners {
    handle: PortHandle,
    control: Arc<Control>,
    status: Arc<ListenerView>,
    thread: Mutex<Option<JoinHandle<()>>>,
    addresses: Mutex<BTreeMap<u16, SocketAddr>>,
}

impl Listeners {
    /// Binds port `id` on `address`, opens its device when the address names one (not
    /// a wildcard), and starts the listener thread.
    pub fn start(id: u16, address: SocketAddr, target: Arc<Target>, pools: Pools, settings: QueueSettings) -> std::io::Result<Listeners> {
        let mut listener = Listener::bind(id, address, target, pools)?;
        listener.poll_budget = settings.poll_budget;
        listener.polled_io = settings.polled_io;
        if settings.poll_groups {
            listener.poll_groups = Some(Arc::new(PollGroups::start(&settings.cpus, settings.srq_entries)?));
        }
        listener.cpus = settings.cpus;
        listener.open_listening_devices();
        let (handle, control, status) = (listener.port_handle(), listener.control.clone(), listener.status.clone());
        let thread = std::thread::Builder::new().name("p2ptgt-listener".into()).spawn(move || listener.run())?;
        let listeners = Listeners { handle, control, status, thread: Mutex::new(Some(thread)), addresses: Mutex::new(BTreeMap::from([(id, address)])) };
        Ok(listeners)
    }

    fn addresses_now(&self) -> MutexGuard<'_, BTreeMap<u16, SocketAddr>> {
        self.addresses.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Listens on another port.
    pub fn add(&self, id: u16, address: SocketAddr) -> Result<(), String> {
        self.handle.add(id, address)?;
        self.addresses_now().insert(id, address);
        Ok(())
    }

    /// Stops listening on port `id` and waits for the queues that came through it.
    pub fn remove(&self, id: u16) {
        self.handle.remove(id);
        if let Some(address) = self.addresses_now().remove(&id) {
            info!(port = id, %address, "stopped listening");
        }
    }

    /// Stops the listener and every queue.
    pub fn stop_all(&self) {
        self.control.request_stop();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }

    /// Every live queue of every port.
    pub fn queue_reports(&self) -> Vec<QueueReport> {
        self.status.queue_reports()
    }

    /// The data path of the open devices (the least capable one's).
    pub fn mode(&self) -> Option<DataPathMode> {
        self.status.mode()
    }

    /// The data path of each open device, by name.
    pub fn devices(&self) -> BTreeMap<String, DataPathMode> {
        self.status.devices()
    }

    /// `id address` of each port listened on.
    pub fn addresses(&self) -> Vec<(u16, SocketAddr)> {
        self.addresses_now().iter().map(|(id, address)| (*id, *address)).collect()
    }
}

impl PortListeners for Listeners {
    fn start(&self, id: u16, address: SocketAddr) -> Result<(), String> {
        self.add(id, address)
    }

    fn stop(&self, id: u16) {
        self.remove(id);
    }
}
