//! Poll groups: the data path for dedicated cores. One thread per listed CPU, pinned
//! there, serves every queue given to it by stepping each in turn, polling their
//! completion queues and io_uring rings (the SSD's polled ring included), and never
//! sleeps while it has a queue: no completion channel is armed, no wake-up is paid.
//! The CPU is spent whether or not I/O arrives, which is the trade SPDK's reactors
//! make on hardware with cores to spare.
//!
//! A queue still gets its own thread for setup (verbs resources, accept), as in the
//! sleeping layout; that thread then hands the connection to the least-loaded group
//! and waits for the group to report it finished, so whoever stops or reaps queues
//! joins a thread either way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::{info, warn};

use super::connection::{Connection, Step};

/// A connection on its way to a group, with the channel that reports it finished.
struct Adopted {
    connection: Connection,
    finished: SyncSender<()>,
}

/// One poll group's handle: where to send connections, how many it serves.
struct Group {
    cpu: usize,
    incoming: Sender<Adopted>,
    load: Arc<AtomicUsize>,
}

/// The poll groups of a listener, one per CPU. Dropping it lets each group's thread
/// end once its last queue has finished.
pub struct PollGroups {
    groups: Vec<Group>,
    threads: Vec<JoinHandle<()>>,
}

impl PollGroups {
    /// Starts a group pinned to each CPU of `cpus`.
    pub fn start(cpus: &[usize]) -> std::io::Result<PollGroups> {
        let mut groups = Vec::with_capacity(cpus.len());
        let mut threads = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            let (sender, receiver) = mpsc::channel();
            let load = Arc::new(AtomicUsize::new(0));
            let served = load.clone();
            threads.push(std::thread::Builder::new().name(format!("p2ptgt-pg{cpu}")).spawn(move || serve(cpu, &receiver, &served))?);
            groups.push(Group { cpu, incoming: sender, load });
        }
        info!(?cpus, "poll groups started: one busy-polling thread per CPU serves the queues");
        Ok(PollGroups { groups, threads })
    }

    /// Runs `connection` on the group with the fewest queues and returns when it has
    /// finished. If no group takes it (a group's thread is gone), runs it here.
    pub fn run(&self, connection: Connection) {
        let Some(group) = self.groups.iter().min_by_key(|group| group.load.load(Ordering::Relaxed)) else {
            return connection.run();
        };
        let (finished, done) = mpsc::sync_channel(1);
        group.load.fetch_add(1, Ordering::Relaxed);
        match group.incoming.send(Adopted { connection, finished }) {
            // The group drops its end of `finished` with the connection, error or not.
            Ok(()) => {
                let _ = done.recv();
            }
            Err(mpsc::SendError(adopted)) => {
                group.load.fetch_sub(1, Ordering::Relaxed);
                warn!(cpu = group.cpu, "poll group gone: the queue runs on its own thread");
                adopted.connection.run();
            }
        }
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
fn serve(cpu: usize, incoming: &Receiver<Adopted>, load: &AtomicUsize) {
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
                load.fetch_sub(1, Ordering::Relaxed);
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
