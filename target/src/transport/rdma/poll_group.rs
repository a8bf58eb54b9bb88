//! Poll groups: the data path for dedicated cores. One thread per listed CPU, pinned
//! there, serves every queue given to it by stepping each in turn, polling their
//! completion queues and io_uring rings (the SSD's polled ring included), and never
//! sleeps while it has a queue: no completion channel is armed, no wake-up is paid.
//! The CPU is spent whether or not I/O arrives, which is the trade SPDK's reactors
//! make on hardware with cores to spare.
//!
//! A queue still gets its own thread for setup (verbs resources, accept), as in the
//! sleeping layout. That thread first takes a seat in the least-loaded group, so its
//! I/O queue pair can be created on the group's shared receive queue for the device
//! (one per group and device, made at the first queue that needs it); it then hands the
//! connection to the group and waits for the group to report it finished, so whoever
//! stops or reaps queues joins a thread either way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing::{info, warn};

use super::connection::{Connection, Step};
use super::receives::SharedReceives;
use super::verbs::{Context, ProtectionDomain};

/// A connection on its way to a group, with the channel that reports it finished.
struct Adopted {
    connection: Connection,
    finished: SyncSender<()>,
}

/// One poll group's handle: where to send connections, how many it serves, and its
/// shared receive queues by device and in-capsule data size.
struct Group {
    cpu: usize,
    incoming: Sender<Adopted>,
    load: Arc<AtomicUsize>,
    receives: Mutex<HashMap<(Context, u32), Arc<SharedReceives>>>,
}

/// A queue's place in a group, taken before its verbs resources are made: it counts in
/// the group's load until dropped.
pub struct Seat {
    group: usize,
    load: Arc<AtomicUsize>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The poll groups of a listener, one per CPU. Dropping it lets each group's thread
/// end once its last queue has finished.
pub struct PollGroups {
    groups: Vec<Group>,
    threads: Vec<JoinHandle<()>>,
    /// Slots of each shared receive queue.
    srq_entries: u32,
}

impl PollGroups {
    /// Starts a group pinned to each CPU of `cpus`; each shared receive queue a group
    /// makes has `srq_entries` slots (0: I/O queues keep their own receive queues).
    pub fn start(cpus: &[usize], srq_entries: u32) -> std::io::Result<PollGroups> {
        let mut groups = Vec::with_capacity(cpus.len());
        let mut threads = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            let (sender, receiver) = mpsc::channel();
            let load = Arc::new(AtomicUsize::new(0));
            threads.push(std::thread::Builder::new().name(format!("p2ptgt-pg{cpu}")).spawn(move || serve(cpu, &receiver))?);
            groups.push(Group { cpu, incoming: sender, load, receives: Mutex::default() });
        }
        info!(?cpus, srq_entries, "poll groups started: one busy-polling thread per CPU serves the queues");
        Ok(PollGroups { groups, threads, srq_entries })
    }

    /// A seat in the group with the fewest queues; `None` without groups.
    pub fn seat(&self) -> Option<Seat> {
        let (index, group) = self.groups.iter().enumerate().min_by_key(|(_, group)| group.load.load(Ordering::Relaxed))?;
        group.load.fetch_add(1, Ordering::Relaxed);
        Some(Seat { group: index, load: group.load.clone() })
    }

    /// The shared receive queue of `seat`'s group on `pd`'s device for slots of
    /// `data_bytes` in-capsule data, made (and filled) at the first call; `None` when
    /// shared receive queues are off (`srq_entries` 0). `max_wr` is what the device
    /// allows an SRQ: 0 (no SRQ support), or a failure to make one, is an error, and the
    /// queue then keeps receives of its own.
    pub fn shared_receives(&self, seat: &Seat, pd: &Arc<ProtectionDomain>, data_bytes: u32, max_wr: u32) -> std::io::Result<Option<Arc<SharedReceives>>> {
        if self.srq_entries == 0 {
            return Ok(None);
        }
        let Some(group) = self.groups.get(seat.group) else { return Ok(None) };
        let mut receives = group.receives.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = receives.get(&(pd.context, data_bytes)) {
            return Ok(Some(shared.clone()));
        }
        let entries = self.srq_entries.min(max_wr);
        if entries == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "the device has no shared receive queues"));
        }
        let shared = Arc::new(SharedReceives::new(pd, entries, data_bytes)?);
        info!(cpu = group.cpu, entries, data_bytes, "poll group's shared receive queue made for a device");
        receives.insert((pd.context, data_bytes), shared.clone());
        Ok(Some(shared))
    }

    /// Lets go of every group's shared receive queue on `device` (gone, or going): the
    /// queues on it, stopped first, held the last references.
    pub fn forget_device(&self, device: Context) {
        for group in &self.groups {
            group.receives.lock().unwrap_or_else(|p| p.into_inner()).retain(|(context, _), _| *context != device);
        }
    }

    /// Runs `connection` on `seat`'s group and returns when it has finished. If the group
    /// does not take it (its thread is gone), runs it here.
    pub fn run(&self, seat: Seat, connection: Connection) {
        let Some(group) = self.groups.get(seat.group) else { return connection.run() };
        let (finished, done) = mpsc::sync_channel(1);
        match group.incoming.send(Adopted { connection, finished }) {
            // The group drops its end of `finished` with the connection, error or not.
            Ok(()) => {
                let _ = done.recv();
            }
            Err(mpsc::SendError(adopted)) => {
                warn!(cpu = group.cpu, "poll group gone: the queue runs on its own thread");
                adopted.connection.run();
            }
        }
        drop(seat);
    }
}

impl Drop for PollGroups {
    fn drop(&mut self) {
        // Closing the channels tells each group to end once its queues have.
        self.groups.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A poll group's thread: adopts connections from `incoming` and steps each of them
/// until it finishes; blocks only while it has none.
fn serve(cpu: usize, incoming: &Receiver<Adopted>) {
    if let Err(error) = super::pin_to_cpu(cpu) {
        warn!(cpu, %error, "could not pin the poll group's thread");
    }
    let mut queues: Vec<Adopted> = Vec::new();
    loop {
        // With no queue, wait for one; a closed, empty channel ends the group.
        if queues.is_empty() {
            match incoming.recv() {
                Ok(adopted) => queues.push(adopt(adopted)),
                Err(_) => return,
            }
        }
        queues.extend(incoming.try_iter().map(adopt));
        let mut index = 0;
        while index < queues.len() {
            if queues[index].connection.step() == Step::Finished {
                let Adopted { connection, finished } = queues.swap_remove(index);
                connection.closed();
                // Dropping the connection before the signal: its queue's thread ends
                // only once the verbs resources are gone.
                drop(connection);
                let _ = finished.send(());
                continue;
            }
            index += 1;
        }
    }
}

fn adopt(mut adopted: Adopted) -> Adopted {
    adopted.connection.set_busy_polled();
    adopted
}
