//! The RDMA listeners, one per port, each on a thread of its own: started at start-up
//! and by `port.add`, stopped by `port.remove` (which closes the port's queues) and at
//! exit.

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
use crate::transport::rdma::listener::{ListenerView, QueueReport};
use crate::transport::rdma::{DataPathMode, Listener};

/// How every listener runs its queues.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    pub poll_budget: Duration,
    pub polled_io: bool,
    pub cpus: Vec<usize>,
}

struct Running {
    address: SocketAddr,
    control: Arc<Control>,
    status: Arc<ListenerView>,
    thread: JoinHandle<()>,
}

pub struct Listeners {
    target: Arc<Target>,
    pools: Pools,
    settings: QueueSettings,
    running: Mutex<BTreeMap<u16, Running>>,
}

impl Listeners {
    pub fn new(target: Arc<Target>, pools: Pools, settings: QueueSettings) -> Listeners {
        Listeners { target, pools, settings, running: Mutex::new(BTreeMap::new()) }
    }

    fn running(&self) -> MutexGuard<'_, BTreeMap<u16, Running>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Binds port `id` on `address` and starts its thread. Returns the data path its
    /// device gives, when the address names one (not on a wildcard address).
    pub fn start(&self, id: u16, address: SocketAddr) -> std::io::Result<Option<DataPathMode>> {
        let mut listener = Listener::bind(address, self.target.clone(), self.pools.clone())?;
        listener.poll_budget = self.settings.poll_budget;
        listener.polled_io = self.settings.polled_io;
        listener.cpus = self.settings.cpus.clone();
        listener.port_id = id;
        let mode = listener.open_listening_device();
        let (control, status) = (listener.control.clone(), listener.status.clone());
        let thread = std::thread::Builder::new().name(format!("p2ptgt-port{id}")).spawn(move || listener.run())?;
        self.running().insert(id, Running { address, control, status, thread });
        Ok(mode)
    }

    /// Stops port `id`'s listener and waits for its queues to close.
    pub fn stop(&self, id: u16) {
        let Some(running) = self.running().remove(&id) else { return };
        running.control.request_stop();
        let _ = running.thread.join();
        info!(port = id, address = %running.address, "stopped listening");
    }

    pub fn stop_all(&self) {
        let ids: Vec<u16> = self.running().keys().copied().collect();
        for id in ids {
            self.stop(id);
        }
    }

    /// Every live queue of every port.
    pub fn queue_reports(&self) -> Vec<QueueReport> {
        self.running().values().flat_map(|running| running.status.queue_reports()).collect()
    }

    /// The data path of the first port whose device is open.
    pub fn mode(&self) -> Option<DataPathMode> {
        self.running().values().find_map(|running| *running.status.mode.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `id address` of each port listened on.
    pub fn addresses(&self) -> Vec<(u16, SocketAddr)> {
        self.running().iter().map(|(id, running)| (*id, running.address)).collect()
    }
}

impl PortListeners for Listeners {
    fn start(&self, id: u16, address: SocketAddr) -> Result<(), String> {
        Listeners::start(self, id, address).map(drop).map_err(|error| error.to_string())
    }

    fn stop(&self, id: u16) {
        Listeners::stop(self, id);
    }
}
