//! One NVMe/RDMA queue on its own thread: turns receive completions into capsules for
//! the core, the core's actions into work requests and backend operations, and tears
//! the connection down once nothing is in flight. The thread owns everything here, so
//! the data path takes no lock.
#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};
use zerocopy::IntoBytes;

use super::cm::{CmEventKind, CmId, EventChannel};
use super::registrations::Registrations;
use super::receives::{Receives, RECV};
use super::verbs::{CompletionChannel, CompletionQueue, QueuePair, SendRequest, Transfer, WorkCompletion};
use crate::wire::Status;
use crate::backend::Executor;
use crate::core::buffer::Region;
use crate::core::{Action, Buffer, DataBuffer, Lease, Queue, ResponseData, SlotLoan, Tag};
use crate::transport::depth::DepthHistory;
use crate::transport::idle::IdleGaps;
use crate::transport::sends::SendsInFlight;
use crate::wire::KeyedSgl;

/// Kinds of work request, in bits 48..56 of the wr_id (RECV's is in `receives.rs`); the
/// low bits carry a tag or slot.
const READ: u64 = 2 << 48;
const WRITE: u64 = 3 << 48;
const SEND: u64 = 4 << 48;
const KIND_MASK: u64 = 0xFF << 48;

/// The request tag in the low bits of a READ, WRITE or SEND wr_id.
fn tag_of(wr_id: u64) -> Tag {
    (wr_id & 0xFFFF) as Tag
}

/// How long a closing connection waits for the NIC to flush its work requests.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Tokens of the descriptors a queue thread sleeps on.
const WATCH_COMPLETIONS: u64 = 1;
const WATCH_CM: u64 = 2;
const WATCH_CONTROL: u64 = 3;
/// Adaptive polling applies while at most this many commands are outstanding.
const SPIN_OUTSTANDING_MAX: usize = 2;
/// While the backend works on a shallow queue's command, polling goes on up to this
/// long: its completion is due, and sleeping through an SSD access that outlasts the
/// idle budget puts a wake-up into the latency of that command.
const BACKEND_POLL_MAX: Duration = Duration::from_millis(2);
/// Wake-up period for controller teardown checks when nothing else happens.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// How often a busy-polled connection reads its CM event channel (a host's disconnect).
const BUSY_EVENTS_INTERVAL: Duration = Duration::from_millis(10);

/// What one [`Connection::step`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Something completed or was handed in: step again at once.
    Progressed,
    /// Nothing happened.
    Idle,
    /// The connection is torn down and may be dropped.
    Finished,
}

/// Shared between a connection thread and the listener: a stop request and an eventfd
/// to wake the thread.
pub struct Control {
    stop: AtomicBool,
    /// The QP, on a shared receive queue, has flushed the last receive it took from it.
    last_receive: AtomicBool,
    wake: std::os::fd::OwnedFd,
}

impl Control {
    pub fn new() -> std::io::Result<Arc<Control>> {
        Ok(Arc::new(Control { stop: AtomicBool::new(false), last_receive: AtomicBool::new(false), wake: crate::transport::rdma::eventfd()? }))
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        crate::transport::rdma::signal(&self.wake);
    }

    /// Wakes the thread without asking it to stop (the pool granted it a buffer).
    pub fn wake(&self) {
        crate::transport::rdma::signal(&self.wake);
    }

    /// The device reported the QP's last receive from its shared receive queue done.
    pub fn last_receive_reached(&self) {
        self.last_receive.store(true, Ordering::Release);
        crate::transport::rdma::signal(&self.wake);
    }

    fn receives_flushed(&self) -> bool {
        self.last_receive.load(Ordering::Acquire)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.wake.as_raw_fd()
    }
}

pub struct Connection {
    // Drop order matters: the QP (inside the CM id) goes before its CQ and channel, and
    // before the buffers of work requests that never completed go back to the pools.
    pub id: CmId,
    /// Leases of posted RDMA READs, by tag, until their completion (or flush) comes.
    reads: ByTag<Lease>,
    /// What posted responses carry (pushed data, a receive slot to post again), by tag,
    /// until the SEND completes.
    responses: ByTag<ResponseData>,
    pub cq: CompletionQueue,
    pub channel: CompletionChannel,
    pub recv: Receives,
    pub queue: Queue,
    pub executor: Executor,
    pub events: EventChannel,
    pub qp: QueuePair,
    pub control: Arc<Control>,
    pub send_with_invalidate: bool,
    /// How long to keep polling after the last completion before sleeping.
    pub poll_budget: Duration,
    /// Mappings (the host pools, the receive slots' data) to register with the rings as
    /// fixed buffers once the queue is connected; `None` once done.
    pub fixed_buffers: Option<Vec<(u64, usize)>>,
    /// Only the last SEND of a post is signalled (see [`SendsInFlight`]).
    sends_in_flight: SendsInFlight,
    /// Receives posted on the queue's own receive queue (none with a shared one).
    recvs_in_flight: u32,
    /// Slots of the shared receive queue to post again (reused between steps).
    returned_slots: Vec<u32>,
    closing: Option<Instant>,
    /// Served by a busy-polling poll group rather than its own sleeping thread.
    busy_polled: bool,
    /// When the idle tick (timeouts, responses not taken) is next due.
    next_tick: Instant,
    /// When a busy-polled connection next reads its CM event channel.
    next_events: Instant,
    sends: Vec<SendRequest>,
    completions: Vec<WorkCompletion>,
    depth: DepthHistory,
    /// How long idle moments have lasted: whether spinning through them pays.
    idle_gaps: IdleGaps,
    /// The device's registrations of the pools, whose keys the work requests carry:
    /// dropped after the QP and the leases of requests that never completed.
    registrations: Arc<Registrations>,
}

impl Connection {
    #[allow(clippy::too_many_arguments)]
    pub fn new(id: CmId, cq: CompletionQueue, channel: CompletionChannel, recv: Receives, queue: Queue, executor: Executor, events: EventChannel, qp: QueuePair, control: Arc<Control>, send_with_invalidate: bool, registrations: Arc<Registrations>) -> Connection {
        Connection {
            id,
            reads: ByTag::default(),
            responses: ByTag::default(),
            cq,
            channel,
            recv,
            queue,
            executor,
            events,
            qp,
            control,
            send_with_invalidate,
            poll_budget: Duration::ZERO,
            fixed_buffers: None,
            sends_in_flight: SendsInFlight::default(),
            recvs_in_flight: 0,
            returned_slots: Vec::new(),
            closing: None,
            busy_polled: false,
            next_tick: Instant::now() + IDLE_TICK,
            next_events: Instant::now(),
            sends: Vec::new(),
            completions: Vec::with_capacity(32),
            depth: DepthHistory::new(SPIN_OUTSTANDING_MAX, Instant::now()),
            idle_gaps: IdleGaps::default(),
            registrations,
        }
    }

    /// Posts every receive slot of the queue's own receive queue (a shared one has
    /// them posted). Done before accepting, so the host's first capsule finds one.
    pub fn post_receives(&mut self) -> std::io::Result<()> {
        let count = match &self.recv {
            Receives::Own(buffers) => buffers.count,
            Receives::Shared(_) => return Ok(()),
        };
        for slot in 0..count {
            self.post_receive(slot)?;
        }
        Ok(())
    }

    fn post_receive(&mut self, slot: u32) -> std::io::Result<()> {
        match &self.recv {
            Receives::Own(buffers) => {
                buffers.post(&self.qp, RECV | u64::from(slot), slot)?;
                self.recvs_in_flight += 1;
            }
            Receives::Shared(shared) => shared.give_back(slot)?,
        }
        Ok(())
    }

    /// The connection's event loop on its own thread; returns when the connection is
    /// fully torn down.
    pub fn run(mut self) {
        debug!(queue = self.queue.queue_id(), peer = ?self.id.peer(), "queue thread started");
        let mut spin: Option<Spin> = None;
        // Start of the first judged spin of the current idle moment, kept through sleeps.
        let mut judged_since: Option<Instant> = None;
        loop {
            match self.step() {
                Step::Finished => break,
                Step::Progressed => {
                    spin = None;
                    if let Some(start) = judged_since.take() {
                        self.record_spin(start.elapsed());
                    }
                    continue;
                }
                Step::Idle => {}
            }
            // Adaptive polling: right after activity, keep polling the CQ and the
            // io_uring rings (shared memory; the polled ring, one non-blocking system
            // call) for a short budget before paying for arm + poll + wake-up. Polled
            // SSD operations are only found by polling, so they hold the thread awake.
            // Only in the latency-bound regime (at most a couple of commands in flight):
            // deeper queues amortise wake-ups over batches, and spinning would take the
            // CPU that the host and the NIC need. Each poll yields the CPU, so a worker
            // woken on this CPU (the NIC's, the host's) runs at once instead of waiting for
            // the spinner's time slice to end.
            let current = *spin.get_or_insert_with(|| self.start_spin());
            if current.judged {
                judged_since.get_or_insert(current.started);
            }
            let spinning = self.closing.is_none() && self.shallow() && current.started.elapsed() < current.budget;
            // A range lock is held for one read and one write at most: wait it out
            // awake, like a polled operation.
            if spinning || self.executor.needs_polling() || self.queue.awaits_ranges() {
                std::thread::yield_now();
                continue;
            }
            spin = None;
            if self.cq.arm().is_err() {
                self.start_close();
            }
            // Completions that raced with arming.
            if self.drain_completions() {
                continue;
            }
            let wait = self.deadline().saturating_duration_since(Instant::now()).min(IDLE_TICK);
            self.wait(wait);
        }
        self.closed();
    }

    /// Marks the connection as served by a busy-polling poll group: nothing sleeps in
    /// its completion channel or event channel, so those are polled by time.
    pub fn set_busy_polled(&mut self) {
        self.busy_polled = true;
    }

    /// One round of the queue's work without sleeping: completions from the NIC and the
    /// backend, timers, the core's actions, posts and submissions.
    pub fn step(&mut self) -> Step {
        let queue_id = self.queue.queue_id();
        let mut progressed = self.drain_completions();
        while let Some((tag, result, buffer)) = self.executor.poll_done() {
            let result = result.map_err(|error| {
                warn!(queue = queue_id, %error, "backend operation failed");
                Status::from(&error)
            });
            self.queue.handle_backend_done(Instant::now(), tag, result, buffer);
            progressed = true;
        }
        self.queue.poll_grants(Instant::now());
        self.queue.poll_ranges();
        let polled = self.executor.take_polled_count();
        if polled > 0 {
            self.queue.stats.polled_ios.add(polled);
        }
        self.handle_watches();
        let now = Instant::now();
        self.depth.note(now, self.queue.outstanding());
        if self.busy_polled && now >= self.next_events {
            // Nobody sleeps in the event channel: read it (non-blocking) now and then.
            self.cm_events();
            self.next_events = now + BUSY_EVENTS_INTERVAL;
        }
        if now >= self.deadline() {
            self.queue.handle_timeout(now);
            self.check_responses_taken(now);
            self.next_tick = now + IDLE_TICK;
        }
        // (Without polling, the listener gave the executor no polled ring.)
        self.executor.prefer_polled(self.busy_polled || self.shallow());
        self.perform_actions();
        if self.queue.is_associated() {
            self.register_fixed_buffers();
        }
        if let Err(error) = self.executor.flush() {
            warn!(queue = queue_id, %error, "backend submission failed");
            self.start_close();
        }
        if let Receives::Shared(shared) = &self.recv {
            shared.post_returned(&mut self.returned_slots);
        }
        if self.control.stopping() {
            self.start_close();
        }
        if self.finished() {
            if self.recv.is_shared() {
                // The last receives the QP took from the shared queue were flushed into
                // the CQ before the device said so: their slots go back to the others.
                self.drain_completions();
                if !self.control.receives_flushed() {
                    warn!(queue = queue_id, timeout = ?FLUSH_TIMEOUT, "the device did not report the queue pair's last shared receive done in time: slots it still holds are lost to its poll group");
                }
            }
            Step::Finished
        } else if progressed {
            Step::Progressed
        } else {
            Step::Idle
        }
    }

    /// Logs the end of a connection that [`Connection::step`] reported finished.
    pub fn closed(&self) {
        info!(queue = self.queue.queue_id(), peer = ?self.id.peer(), "queue closed");
    }

    /// When the queue's timers next need a look.
    fn deadline(&self) -> Instant {
        self.queue.poll_timeout().map_or(self.next_tick, |t| t.min(self.next_tick))
    }

    /// The latency-bound regime, where polling pays: at most a couple of commands out,
    /// now and through the last window (see [`DepthHistory`]).
    fn shallow(&self) -> bool {
        self.depth.shallow(self.queue.outstanding())
    }

    /// The spin for the idle moment starting now: the idle budget, or longer while a
    /// backend operation is in flight (its completion is due). With the SSD idle in the
    /// shallow regime, no spin while recent spins mostly ran out their budget (see
    /// [`IdleGaps`]); those spins are judged. Polling off (budget 0) stays off.
    fn start_spin(&mut self) -> Spin {
        let started = Instant::now();
        let (budget, judged) = if self.poll_budget.is_zero() {
            (Duration::ZERO, false)
        } else if self.executor.in_flight() > 0 {
            (self.poll_budget.max(BACKEND_POLL_MAX), false)
        } else if !self.shallow() {
            (self.poll_budget, false)
        } else if self.idle_gaps.spin_now() {
            (self.poll_budget, true)
        } else {
            (Duration::ZERO, false)
        };
        Spin { started, budget, judged }
    }

    fn record_spin(&mut self, gap: Duration) {
        let paid = self.idle_gaps.pays();
        self.idle_gaps.record_gap(gap, self.poll_budget);
        if paid != self.idle_gaps.pays() {
            debug!(queue = self.queue.queue_id(), spinning = !paid, "idle spinning switched (see IdleGaps)");
        }
    }

    /// Sleeps in the executor's ring until a completion event, a CM event, a stop
    /// request or a backend completion arrives, or `timeout` passes.
    fn wait(&mut self, timeout: Duration) {
        self.executor.watch(self.channel.fd(), WATCH_COMPLETIONS);
        self.executor.watch(self.events.fd(), WATCH_CM);
        self.executor.watch(self.control.fd(), WATCH_CONTROL);
        self.executor.wait(timeout.clamp(Duration::from_millis(1), IDLE_TICK));
        self.handle_watches();
    }

    fn handle_watches(&mut self) {
        for token in self.executor.take_ready_watches() {
            match token {
                WATCH_COMPLETIONS => self.cq.take_events(&self.channel),
                WATCH_CM => self.cm_events(),
                _ => crate::transport::rdma::drain_eventfd(self.control.fd()),
            }
        }
    }

    fn cm_events(&mut self) {
        while let Ok(Some(event)) = self.events.next_event() {
            match event.kind {
                CmEventKind::Disconnected | CmEventKind::TimewaitExit => {
                    debug!(queue = self.queue.queue_id(), kind = ?event.kind, "host disconnected");
                    self.start_close();
                }
                CmEventKind::DeviceRemoval
                | CmEventKind::AddressChange
                | CmEventKind::Rejected
                | CmEventKind::Unreachable
                | CmEventKind::ConnectError => {
                    warn!(queue = self.queue.queue_id(), kind = ?event.kind, status = event.status, "connection lost");
                    self.start_close();
                }
                CmEventKind::Established | CmEventKind::ConnectRequest | CmEventKind::Other(_) => {}
            }
        }
    }

    /// Polls the CQ dry. Returns whether anything completed.
    fn drain_completions(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut batch = std::mem::take(&mut self.completions);
            batch.clear();
            let n = self.cq.poll(&mut batch, 32);
            for completion in &batch {
                self.complete(*completion);
            }
            self.completions = batch;
            if n == 0 {
                return any;
            }
            any = true;
        }
    }

    fn complete(&mut self, completion: WorkCompletion) {
        let tag = tag_of(completion.wr_id);
        match completion.wr_id & KIND_MASK {
            RECV => {
                let slot = (completion.wr_id & 0xFFFF_FFFF) as u32;
                if !self.recv.is_shared() {
                    self.recvs_in_flight = self.recvs_in_flight.saturating_sub(1);
                }
                if !completion.ok() || self.closing.is_some() {
                    // No capsule: a shared slot goes straight back to the SRQ for the
                    // group's other queues; an own slot stays unposted while closing.
                    if self.recv.is_shared() {
                        self.repost(slot);
                    }
                    if !completion.ok() {
                        if self.closing.is_none() {
                            warn!(queue = self.queue.queue_id(), status = completion.status, "a receive failed");
                        }
                        self.start_close();
                    }
                    return;
                }
                let capsule = self.recv.completed(slot, completion.byte_len);
                // The slot's loan comes back now, or with the request's response.
                if let Some(loan) = self.queue.receive(Instant::now(), capsule) {
                    self.give_back(loan);
                }
            }
            READ => {
                let Some(lease) = self.reads.take(tag) else { return };
                if !completion.ok() && self.closing.is_none() {
                    warn!(queue = self.queue.queue_id(), status = completion.status, "RDMA READ of host data failed");
                }
                self.queue.handle_data_fetched(Instant::now(), tag, lease, if completion.ok() { Ok(()) } else { Err(()) });
                if !completion.ok() {
                    self.start_close();
                }
            }
            SEND => {
                if !completion.ok() {
                    if self.closing.is_none() {
                        warn!(queue = self.queue.queue_id(), status = completion.status, "response send failed");
                    }
                    self.start_close();
                }
                self.sends_completed_through(tag);
            }
            // Unsignalled RDMA WRITEs report only failures; the SEND after them follows.
            WRITE if !completion.ok() => self.start_close(),
            _ => {}
        }
    }

    /// The SEND for `tag` and those posted before it are done (or flushed): the NIC
    /// has let go of their buffers, which go back, and their requests end.
    fn sends_completed_through(&mut self, tag: Tag) {
        let mut sends = std::mem::take(&mut self.sends_in_flight);
        for done in sends.completed_through(tag) {
            self.release_response(done);
            self.queue.handle_response_sent(done);
        }
        self.sends_in_flight = sends;
    }

    /// What response `tag` carried is free: a lease goes back to its pool (by drop), a
    /// receive slot is posted again.
    fn release_response(&mut self, tag: Tag) {
        match self.responses.take(tag) {
            Some(ResponseData::ReturnSlot(loan)) | Some(ResponseData::Push { buffer: DataBuffer::Slot(loan), .. }) => self.give_back(loan),
            Some(ResponseData::Push { buffer: DataBuffer::Pool(lease), .. }) => drop(lease),
            None => {}
        }
    }

    /// A receive slot's loan has ended. An own slot is posted again (not while closing);
    /// a shared one went back to its SRQ's slots as the loan dropped and is posted with
    /// the others at the end of the step.
    fn give_back(&mut self, loan: SlotLoan) {
        let slot = loan.slot();
        drop(loan);
        if !self.recv.is_shared() && self.closing.is_none() {
            self.repost(slot);
        }
    }

    fn repost(&mut self, slot: u32) {
        if self.post_receive(slot).is_err() {
            self.start_close();
        }
    }

    fn perform_actions(&mut self) {
        while let Some(action) = self.queue.poll_action() {
            match action {
                Action::FetchData { tag, remote, lease } => {
                    let Some(local_key) = self.registrations.key(lease.buffer().region) else {
                        self.unregistered(lease.buffer().region);
                        continue;
                    };
                    // The lease stays in `reads` from here until the READ's completion.
                    self.sends.push(SendRequest::Read(transfer(READ, tag, remote, lease.buffer(), local_key)));
                    self.reads.put(tag, lease);
                }
                Action::Respond { tag, completion, invalidate_key, data } => {
                    if let Some(ResponseData::Push { remote, buffer }) = &data {
                        let local_key = match buffer {
                            DataBuffer::Slot(_) => Some(self.recv.local_key()),
                            DataBuffer::Pool(lease) => self.registrations.key(lease.buffer().region),
                        };
                        let Some(local_key) = local_key else {
                            self.unregistered(buffer.buffer().region);
                            continue;
                        };
                        self.sends.push(SendRequest::Write(transfer(WRITE, tag, *remote, buffer.buffer(), local_key)));
                    }
                    if let Some(data) = data {
                        self.responses.put(tag, data);
                    }
                    let mut bytes = [0u8; 16];
                    bytes.copy_from_slice(completion.as_bytes());
                    let invalidate_key = invalidate_key.filter(|_| self.send_with_invalidate);
                    self.sends.push(SendRequest::SendInline { wr_id: SEND | u64::from(tag), data: bytes, invalidate_key, signalled: false });
                }
                Action::Submit { tag, namespace, op } => self.executor.submit_to(tag, namespace.backend.as_ref(), op),
                Action::Disconnect { reason } => {
                    info!(queue = self.queue.queue_id(), %reason, "closing connection");
                    self.start_close();
                }
            }
        }
        self.post_sends();
    }

    fn post_sends(&mut self) {
        if self.sends.is_empty() {
            return;
        }
        if self.closing.is_some() {
            // Nothing more goes out. No device saw these buffers: they go back now.
            let now = Instant::now();
            for request in std::mem::take(&mut self.sends) {
                match request {
                    SendRequest::SendInline { wr_id, .. } => {
                        self.release_response(tag_of(wr_id));
                        self.queue.handle_response_sent(tag_of(wr_id));
                    }
                    SendRequest::Read(read) => {
                        if let Some(lease) = self.reads.take(tag_of(read.wr_id)) {
                            self.queue.handle_data_fetched(now, tag_of(read.wr_id), lease, Err(()));
                        }
                    }
                    SendRequest::Write(_) => {}
                }
            }
            return;
        }
        // One completion per post reports all its SENDs (and the WRITEs before them).
        if let Some(SendRequest::SendInline { signalled, .. }) = self.sends.iter_mut().rev().find(|r| matches!(r, SendRequest::SendInline { .. })) {
            *signalled = true;
        }
        // SAFETY: every local buffer is owned by this connection until the completion
        // that reports the NIC done with it: READ leases sit in `reads` until their READ
        // completes, pushed buffers in `responses` until the SEND after them completes
        // (or is flushed), and both outlive the QP (field order). Inline data is copied
        // at post time.
        let posted = unsafe { self.qp.post_send(&self.sends) };
        // Even when posting failed part-way, every request counts as out: the NIC may
        // hold some of them, and only their flush (or the QP's end) frees the buffers.
        let now = Instant::now();
        for request in &self.sends {
            if let SendRequest::SendInline { wr_id, .. } = request {
                self.sends_in_flight.posted(tag_of(*wr_id), now);
            }
        }
        if let Err(error) = posted {
            warn!(queue = self.queue.queue_id(), %error, "posting work requests failed");
            self.start_close();
        }
        self.sends.clear();
    }

    /// Registers the data mappings as the rings' fixed buffers (once): reads and writes
    /// in them then skip pinning their pages each time.
    fn register_fixed_buffers(&mut self) {
        let Some(regions) = self.fixed_buffers.take() else { return };
        // SAFETY: the regions are the host pools' mapping (kept by the pools for the
        // target's life) and this connection's receive slots (kept by `recv` and its
        // loans); the rings pin their pages for as long as the rings exist.
        match unsafe { self.executor.register_buffers(&regions) } {
            Ok(()) => info!(queue = self.queue.queue_id(), "data buffers registered as io_uring fixed buffers"),
            Err(error) => info!(queue = self.queue.queue_id(), %error, "io_uring did not take the data buffers as fixed buffers: reads and writes pin their pages each time"),
        }
    }

    /// A response the host has not taken within the response timeout (it posts no
    /// receives, so the SEND retries forever) closes the queue: its buffers must not stay
    /// out of the shared pools for good.
    fn check_responses_taken(&mut self, now: Instant) {
        let limit = self.queue.response_timeout();
        let stuck = self.sends_in_flight.oldest().is_some_and(|posted| now.saturating_duration_since(posted) > limit);
        if stuck && self.closing.is_none() {
            warn!(queue = self.queue.queue_id(), peer = ?self.id.peer(), timeout = ?limit, "the host took no response within the response timeout: closing its queue");
            self.start_close();
        }
    }

    /// A buffer in memory this queue's device has no registration of: a defect in pool
    /// selection, which must not reach the NIC. The queue closes; its host reconnects.
    fn unregistered(&mut self, region: Region) {
        error!(queue = self.queue.queue_id(), ?region, "a data buffer is in memory this RDMA device has not registered: closing the queue");
        self.start_close();
    }

    fn start_close(&mut self) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(Instant::now());
        self.queue.handle_close();
        // Flush everything posted; completions with errors come back for each.
        self.qp.set_error().ok();
        self.id.disconnect();
    }

    fn finished(&self) -> bool {
        let Some(since) = self.closing else { return false };
        // A QP on a shared receive queue may hold receives taken from it that have not
        // completed yet; the device says when the last one has (see `Control`).
        let receives_done = self.recvs_in_flight == 0 && (!self.recv.is_shared() || self.control.receives_flushed());
        let nic_idle = self.reads.is_empty() && self.sends_in_flight.is_empty() && receives_done;
        let nic_done = nic_idle || since.elapsed() > FLUSH_TIMEOUT;
        // Backend operations write into pool buffers: always wait for them.
        nic_done && self.executor.in_flight() == 0
    }
}

/// Values held per request tag while the NIC works for the request.
struct ByTag<T> {
    slots: Vec<Option<T>>,
    count: usize,
}

impl<T> Default for ByTag<T> {
    fn default() -> Self {
        ByTag { slots: Vec::new(), count: 0 }
    }
}

impl<T> ByTag<T> {
    fn put(&mut self, tag: Tag, value: T) {
        let index = usize::from(tag);
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        if let Some(slot) = self.slots.get_mut(index) {
            // A tag has one transfer out at a time; a stale value would be a transport
            // bug, and keeping it (leaked) is safer than dropping it.
            if let Some(old) = slot.replace(value) {
                std::mem::forget(old);
            } else {
                self.count += 1;
            }
        }
    }

    fn take(&mut self, tag: Tag) -> Option<T> {
        let value = self.slots.get_mut(usize::from(tag)).and_then(Option::take);
        self.count -= usize::from(value.is_some());
        value
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// One stretch of polling before a sleep.
#[derive(Clone, Copy)]
struct Spin {
    started: Instant,
    budget: Duration,
    /// Whether its outcome goes to `IdleGaps`: an idle-budget spin with the SSD idle.
    judged: bool,
}

/// The work request moving `remote`'s bytes to or from `buffer`, registered under
/// `local_key` on the queue's device, for request `tag`.
fn transfer(kind: u64, tag: Tag, remote: KeyedSgl, buffer: Buffer, local_key: u32) -> Transfer {
    Transfer {
        wr_id: kind | u64::from(tag),
        local: buffer.address,
        len: remote.length_bytes,
        local_key,
        remote: remote.address,
        remote_key: remote.key,
    }
}
