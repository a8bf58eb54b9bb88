//! One submission/completion queue pair and its requests, sans I/O. Each request moves
//! through named states (SPDK's request states): it may wait for a buffer, fetch its
//! data from the host, execute on the backend, push its data to the host and respond.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};
use zerocopy::little_endian::U16;

use super::buffer::{Buffer, BufferPool, Placement};
use super::controller::Controller;
use super::stats::IoStats;
use super::subsystem::{Namespace, Target};
use super::{Action, DisconnectReason, Tag};
use crate::backend::{BackendError, BackendOp};
use crate::wire::command::FABRICS;
use crate::wire::{Completion, DataPointer, RawCommand, Status};

/// Fixed per connection by the RDMA CM exchange.
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    pub queue_id: u16,
    /// Commands the host may have outstanding (HSQSIZE + 1).
    pub entries: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestState {
    /// Waiting for the pool to free a data buffer.
    NeedBuffer,
    /// Buffer allocated; in-capsule data about to be copied from the receive buffer.
    Receiving,
    /// RDMA READ of host data in flight.
    Fetching,
    /// On the backend.
    Executing,
    /// Asynchronous Event Request held until an event occurs.
    AwaitingEvent,
    /// Response (after any pushed data) handed to the transport.
    Responding,
}

/// What a request does once its buffer and data are in place.
#[derive(Debug)]
pub(crate) enum Work {
    /// Connect data arrives, then the queue associates with a controller.
    Connect,
    /// Dataset Management ranges arrive, then they are deallocated.
    Deallocate { ranges: u32 },
    /// Payload from the host, then written to the namespace.
    Write { offset_bytes: u64, durable: bool },
    /// Payload read from the namespace, then pushed to the host.
    Read { offset_bytes: u64 },
    /// Bytes computed by the controller, pushed to the host.
    Send { data: Vec<u8> },
}

/// What executing a command decided.
#[derive(Debug)]
pub(crate) enum Outcome {
    Complete { status: Status, result: u64 },
    /// Needs a buffer of the data pointer's length and then `work`.
    Transfer { work: Work, namespace: Option<Arc<Namespace>> },
    /// A backend operation without data (Flush, Write Zeroes).
    Backend { namespace: Arc<Namespace>, op: BackendOp },
    HoldForEvent,
}

impl Outcome {
    pub(crate) fn status(status: Status) -> Outcome {
        Outcome::Complete { status, result: 0 }
    }
    pub(crate) fn success(result: u64) -> Outcome {
        Outcome::Complete { status: Status::SUCCESS, result }
    }
    pub(crate) fn send(data: Vec<u8>) -> Outcome {
        Outcome::Transfer { work: Work::Send { data }, namespace: None }
    }
}

#[derive(Debug)]
struct Request {
    command: RawCommand,
    state: RequestState,
    data: DataPointer,
    work: Option<Work>,
    namespace: Option<Arc<Namespace>>,
    buffer: Option<Buffer>,
    /// `buffer` is the transport's receive buffer, lent for this request: it goes back
    /// to the transport, not to the pool.
    lent: bool,
    /// In-capsule data kept while the request waits for a buffer.
    in_capsule: Option<Vec<u8>>,
}

impl Request {
    /// Takes the request's buffer if the pool owns it; a lent receive buffer goes back
    /// to the transport instead.
    fn take_pool_buffer(&mut self) -> Option<Buffer> {
        self.buffer.take().filter(|_| !self.lent)
    }
}

/// A received command capsule: the 64-byte command and the in-capsule data after it.
#[derive(Clone, Copy, Debug)]
pub struct Capsule<'a> {
    pub command: &'a [u8],
    pub data: &'a [u8],
    /// Where `data` lies in registered memory, when the transport can lend it until the
    /// response is sent (in-capsule write data then goes to the backend without a copy).
    pub lendable: Option<Buffer>,
}

impl<'a> Capsule<'a> {
    /// A capsule received into one contiguous buffer that cannot be lent.
    pub fn contiguous(bytes: &'a [u8]) -> Capsule<'a> {
        let split = bytes.len().min(64);
        Capsule { command: bytes.get(..split).unwrap_or(&[]), data: bytes.get(split..).unwrap_or(&[]), lendable: None }
    }
}

/// Whether the core kept a lent receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapsuleUse {
    /// The receive buffer may be reused at once.
    Done,
    /// The buffer holds data for request `tag`: reuse it after that request's response
    /// is sent (or the queue is closed).
    LentTo(Tag),
}

/// Where this queue stands in its association with a controller.
#[derive(Debug)]
enum Association {
    AwaitingConnect,
    Live { controller: Arc<Controller>, reset_generation: u32 },
    Closed,
}

pub struct Queue {
    pub(crate) target: Arc<Target>,
    pub(crate) config: QueueConfig,
    association: Association,
    requests: Vec<Option<Request>>,
    free_tags: Vec<Tag>,
    waiting_for_buffer: VecDeque<Tag>,
    held_events: Vec<Tag>,
    actions: VecDeque<Action>,
    pool: Box<dyn BufferPool>,
    submission_queue_head: u16,
    disable_sq_flow_control: bool,
    pub stats: Arc<IoStats>,
}

impl Queue {
    pub fn new(target: Arc<Target>, config: QueueConfig, pool: Box<dyn BufferPool>) -> Queue {
        // A host may send its next command as soon as it sees a response, before the
        // transport reports the response sent: room for twice the queue's entries.
        let slots = (config.entries as usize).saturating_mul(2).min(usize::from(Tag::MAX));
        Queue {
            target,
            config,
            association: Association::AwaitingConnect,
            requests: (0..slots).map(|_| None).collect(),
            free_tags: (0..slots as Tag).rev().collect(),
            waiting_for_buffer: VecDeque::new(),
            held_events: Vec::new(),
            actions: VecDeque::new(),
            pool,
            submission_queue_head: 0,
            disable_sq_flow_control: false,
            stats: Arc::new(IoStats::default()),
        }
    }

    pub fn queue_id(&self) -> u16 {
        self.config.queue_id
    }

    pub fn controller(&self) -> Option<&Arc<Controller>> {
        match &self.association {
            Association::Live { controller, .. } => Some(controller),
            _ => None,
        }
    }

    /// In-capsule data this queue accepts after the 64-byte command.
    pub fn in_capsule_limit_bytes(&self) -> u32 {
        if self.config.queue_id == 0 { 0 } else { self.target.limits.in_capsule_data_bytes }
    }

    /// Requests not yet answered and sent.
    pub fn outstanding(&self) -> usize {
        self.requests.len().saturating_sub(self.free_tags.len())
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the transport must call [`Queue::handle_timeout`] at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.association {
            Association::Live { controller, .. } if self.config.queue_id == 0 => controller.keep_alive_deadline(),
            _ => None,
        }
    }

    /// Keep-alive and controller teardown checks. Call at `poll_timeout` and
    /// periodically.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Association::Live { controller, reset_generation } = &self.association else { return };
        let controller = controller.clone();
        if self.config.queue_id == 0 && controller.check_keep_alive(now) {
            warn!(controller = controller.id, host = %controller.host_nqn, "keep-alive timeout expired; tearing the controller down");
            self.disconnect(DisconnectReason::KeepAliveExpired);
            return;
        }
        let stale = self.config.queue_id != 0 && controller.reset_generation() != *reset_generation;
        if controller.is_dead() || stale {
            self.disconnect(DisconnectReason::ControllerGone);
            return;
        }
        self.deliver_events();
    }

    /// A command capsule arrived in one buffer: the 64-byte command and any in-capsule
    /// data after it.
    pub fn handle_capsule(&mut self, now: Instant, capsule: &[u8]) {
        self.receive(now, Capsule::contiguous(capsule));
    }

    /// A command capsule arrived. Says whether the core keeps the capsule's data buffer.
    pub fn receive(&mut self, now: Instant, capsule: Capsule<'_>) -> CapsuleUse {
        if matches!(self.association, Association::Closed) {
            return CapsuleUse::Done;
        }
        let Some(command) = RawCommand::from_capsule(capsule.command) else {
            self.disconnect(DisconnectReason::ShortCapsule { len: capsule.command.len().saturating_add(capsule.data.len()) });
            return CapsuleUse::Done;
        };
        let Some(tag) = self.free_tags.pop() else {
            self.disconnect(DisconnectReason::TooManyCommands);
            return CapsuleUse::Done;
        };
        self.submission_queue_head = advance(self.submission_queue_head, self.config.entries);
        if let Some(controller) = self.controller() {
            controller.note_traffic();
        }
        let request = Request {
            command,
            state: RequestState::Executing,
            data: DataPointer::None,
            work: None,
            namespace: None,
            buffer: None,
            lent: false,
            in_capsule: None,
        };
        if let Some(slot) = self.requests.get_mut(usize::from(tag)) {
            *slot = Some(request);
        }
        let outcome = match self.decode(&command) {
            Ok(data) => {
                self.request(tag).data = data;
                self.execute(now, &command, data)
            }
            Err(status) => Outcome::status(status),
        };
        self.apply(tag, outcome, capsule);
        self.deliver_events();
        match self.requests.get(usize::from(tag)).and_then(|r| r.as_ref()) {
            Some(request) if request.lent => CapsuleUse::LentTo(tag),
            _ => CapsuleUse::Done,
        }
    }

    /// Checks common to all commands and decodes the data pointer.
    fn decode(&self, command: &RawCommand) -> Result<DataPointer, Status> {
        command.check_flags()?;
        let data = command.data(self.in_capsule_limit_bytes())?;
        if data.length_bytes() > self.target.limits.max_transfer_bytes().max(crate::wire::fabrics::CONNECT_DATA_BYTES as u32) {
            return Err(Status::INVALID_FIELD.dnr());
        }
        Ok(data)
    }

    /// Routes a command to the fabrics, admin or I/O handlers.
    fn execute(&mut self, now: Instant, command: &RawCommand, data: DataPointer) -> Outcome {
        if command.opcode == FABRICS {
            return super::fabrics::execute(self, command, data);
        }
        let Association::Live { controller, .. } = &self.association else {
            return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr());
        };
        let controller = controller.clone();
        if !controller.is_ready() {
            return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr());
        }
        if self.config.queue_id == 0 {
            super::admin::execute(self, now, &controller, command, data)
        } else {
            super::io::execute(self, &controller, command, data)
        }
    }

    /// Moves a request on according to what execution decided.
    fn apply(&mut self, tag: Tag, outcome: Outcome, capsule: Capsule<'_>) {
        match outcome {
            Outcome::Complete { status, result } => self.respond(tag, status, result),
            Outcome::HoldForEvent => {
                self.request(tag).state = RequestState::AwaitingEvent;
                self.held_events.push(tag);
            }
            Outcome::Backend { namespace, op } => {
                self.request(tag).state = RequestState::Executing;
                self.actions.push_back(Action::Submit { tag, namespace, op });
            }
            Outcome::Transfer { work, namespace } => {
                let request = self.request(tag);
                request.work = Some(work);
                request.namespace = namespace;
                let DataPointer::InCapsule { offset_bytes, length_bytes } = request.data else {
                    self.start_transfer(tag);
                    return;
                };
                let start = offset_bytes as usize;
                let Some(bytes) = capsule.data.get(start..).and_then(|rest| rest.get(..length_bytes as usize)) else {
                    // The capsule was shorter than its SGL claims.
                    self.respond(tag, Status::SGL_INVALID_DATA.dnr(), 0);
                    return;
                };
                // Write data the transport can lend goes to the backend from where it was
                // received; everything else the CPU reads is copied into a pool buffer.
                let lent = capsule.lendable.filter(|_| matches!(request.work, Some(Work::Write { .. })) && length_bytes > 0);
                if let Some(received) = lent {
                    let buffer = Buffer { address: received.address.wrapping_add(u64::from(offset_bytes)), len_bytes: length_bytes, ..received };
                    request.buffer = Some(buffer);
                    request.lent = true;
                    self.in_capsule_arrived(tag, buffer, bytes.len());
                    return;
                }
                // The receive buffer is reposted when this call returns: copy the data
                // into the request's buffer now, or keep a copy while it waits for one.
                self.start_transfer(tag);
                match self.requests.get_mut(usize::from(tag)).and_then(|r| r.as_mut()) {
                    Some(request) if request.state == RequestState::NeedBuffer => request.in_capsule = Some(bytes.to_vec()),
                    Some(request) if request.state == RequestState::Receiving => {
                        let Some(buffer) = request.buffer else { return };
                        self.pool.write(&buffer, bytes);
                        self.in_capsule_arrived(tag, buffer, bytes.len());
                    }
                    _ => {}
                }
            }
        }
    }

    /// Allocates the request's buffer, or parks it until one is released.
    fn start_transfer(&mut self, tag: Tag) {
        let request = self.request(tag);
        let length = request.data.length_bytes();
        let placement = match (&request.work, &request.namespace) {
            (Some(Work::Read { .. } | Work::Write { .. }), Some(namespace)) => namespace.payload_placement,
            _ => Placement::Control,
        };
        if length == 0 {
            // No data pointer for a command that needs one.
            self.respond(tag, Status::SGL_INVALID_DATA.dnr(), 0);
            return;
        }
        let Some(buffer) = self.pool.allocate(length, placement) else {
            let request = self.request(tag);
            let first_wait = request.state != RequestState::NeedBuffer;
            request.state = RequestState::NeedBuffer;
            if first_wait {
                if let Some(namespace) = &request.namespace {
                    namespace.stats.buffer_waits.add(1);
                }
                self.stats.buffer_waits.add(1);
            }
            self.waiting_for_buffer.push_back(tag);
            return;
        };
        self.request(tag).buffer = Some(buffer);
        self.transfer(tag, buffer);
    }

    fn transfer(&mut self, tag: Tag, buffer: Buffer) {
        let request = self.request(tag);
        let data = request.data;
        match request.work.take() {
            Some(Work::Send { data: bytes }) => {
                let DataPointer::Keyed(remote) = data else {
                    self.respond(tag, Status::INVALID_FIELD.dnr(), 0);
                    return;
                };
                let mut bytes = bytes;
                bytes.resize(buffer.len_bytes.min(remote.length_bytes) as usize, 0);
                self.pool.write(&buffer, &bytes);
                let remote = crate::wire::KeyedSgl { length_bytes: bytes.len() as u32, ..remote };
                self.push_and_respond(tag, remote, buffer);
            }
            Some(Work::Read { offset_bytes }) => {
                let request = self.request(tag);
                request.work = Some(Work::Read { offset_bytes });
                request.state = RequestState::Executing;
                let namespace = request.namespace.clone();
                if let Some(namespace) = namespace {
                    self.actions.push_back(Action::Submit { tag, namespace, op: BackendOp::Read { offset_bytes, buffer } });
                }
            }
            Some(work) => {
                let request = self.request(tag);
                request.work = Some(work);
                match (data, request.in_capsule.take()) {
                    (DataPointer::Keyed(remote), _) => {
                        request.state = RequestState::Fetching;
                        self.actions.push_back(Action::FetchData { tag, remote, buffer });
                    }
                    (DataPointer::InCapsule { .. }, Some(bytes)) => {
                        self.pool.write(&buffer, &bytes);
                        self.in_capsule_arrived(tag, buffer, bytes.len());
                    }
                    // In-capsule data still in the receive buffer: `apply` copies it.
                    (DataPointer::InCapsule { .. }, None) => request.state = RequestState::Receiving,
                    _ => self.respond(tag, Status::SGL_INVALID_DATA.dnr(), 0),
                }
            }
            None => self.respond(tag, Status::INTERNAL_ERROR, 0),
        }
    }

    /// In-capsule data was copied into the request's buffer.
    fn in_capsule_arrived(&mut self, tag: Tag, buffer: Buffer, len: usize) {
        if matches!(self.request(tag).work, Some(Work::Write { .. })) {
            self.target.payload.count(buffer.region, len as u64);
        }
        self.data_arrived(tag);
    }

    /// The RDMA READ of a request's data finished.
    pub fn handle_data_fetched(&mut self, tag: Tag, result: Result<(), ()>) {
        let Some(request) = self.requests.get(usize::from(tag)).and_then(|r| r.as_ref()) else { return };
        if request.state != RequestState::Fetching {
            return;
        }
        if result.is_err() {
            self.disconnect(DisconnectReason::TransferFailed);
            return;
        }
        // Payload counters cover Read/Write data only; Connect data, DSM ranges and
        // admin pages are control data.
        if let (Some(buffer), Some(Work::Write { .. })) = (request.buffer, &request.work) {
            self.target.payload.count(buffer.region, u64::from(buffer.len_bytes));
        }
        self.data_arrived(tag);
    }

    /// Host data is in the request's buffer.
    fn data_arrived(&mut self, tag: Tag) {
        let request = self.request(tag);
        let (Some(work), Some(buffer)) = (request.work.take(), request.buffer) else {
            self.respond(tag, Status::INTERNAL_ERROR, 0);
            return;
        };
        let namespace = request.namespace.clone();
        match (work, namespace) {
            (Work::Connect, _) => {
                let mut bytes = vec![0u8; buffer.len_bytes as usize];
                self.pool.read(&buffer, &mut bytes);
                let command = self.request(tag).command;
                let outcome = super::fabrics::connect(self, Instant::now(), &command, &bytes);
                self.release_buffer(tag);
                self.apply(tag, outcome, Capsule::contiguous(&[]));
            }
            (Work::Deallocate { ranges }, Some(namespace)) => {
                let mut bytes = vec![0u8; buffer.len_bytes as usize];
                self.pool.read(&buffer, &mut bytes);
                self.release_buffer(tag);
                let outcome = super::io::deallocate(&namespace, ranges, &bytes);
                self.apply(tag, outcome, Capsule::contiguous(&[]));
            }
            (Work::Write { offset_bytes, durable }, Some(namespace)) => {
                self.request(tag).state = RequestState::Executing;
                self.actions.push_back(Action::Submit { tag, namespace, op: BackendOp::Write { offset_bytes, buffer, durable } });
            }
            _ => self.respond(tag, Status::INTERNAL_ERROR, 0),
        }
    }

    /// The backend finished a request's operation.
    pub fn handle_backend_done(&mut self, tag: Tag, result: Result<u32, BackendError>) {
        let Some(request) = self.requests.get_mut(usize::from(tag)).and_then(|r| r.as_mut()) else { return };
        if request.state != RequestState::Executing {
            return;
        }
        if matches!(self.association, Association::Closed) {
            // Nobody to answer; the buffer can go back now that the backend is done.
            self.free(tag);
            return;
        }
        let status = match &result {
            Ok(_) => Status::SUCCESS,
            Err(error) => {
                warn!(queue = self.config.queue_id, %error, "backend operation failed");
                if let Some(namespace) = &request.namespace {
                    namespace.stats.errors.add(1);
                }
                Status::from(error)
            }
        };
        match (request.work.take(), request.buffer) {
            (Some(Work::Read { .. }), Some(buffer)) if status.is_success() => {
                let DataPointer::Keyed(remote) = request.data else {
                    self.respond(tag, Status::INTERNAL_ERROR, 0);
                    return;
                };
                self.target.payload.count(buffer.region, u64::from(buffer.len_bytes));
                self.push_and_respond(tag, remote, buffer);
            }
            _ => self.respond(tag, status, 0),
        }
    }

    /// The transport sent the response (and any data before it): the tag is free.
    pub fn handle_response_sent(&mut self, tag: Tag) {
        let Some(request) = self.requests.get(usize::from(tag)).and_then(|r| r.as_ref()) else { return };
        if request.state != RequestState::Responding {
            return;
        }
        self.free(tag);
    }

    /// The connection is gone. Requests the backend still holds keep their buffers until
    /// `handle_backend_done`; the transport must drain them before dropping the queue.
    pub fn handle_close(&mut self) {
        if let Association::Live { controller, .. } = std::mem::replace(&mut self.association, Association::Closed) {
            if self.config.queue_id == 0 {
                controller.fail();
                self.target.remove_controller(controller.id);
                debug!(controller = controller.id, "controller removed with its admin queue");
            } else {
                controller.detach_io_queue(self.config.queue_id);
            }
        }
        self.association = Association::Closed;
        self.actions.clear();
        self.waiting_for_buffer.clear();
        self.held_events.clear();
        for tag in 0..self.requests.len() as Tag {
            let state = self.requests.get(usize::from(tag)).and_then(|r| r.as_ref()).map(|r| r.state);
            if matches!(state, Some(s) if s != RequestState::Executing) {
                self.free(tag);
            }
        }
    }

    pub(crate) fn associate(&mut self, controller: Arc<Controller>, disable_sq_flow_control: bool) {
        let reset_generation = controller.reset_generation();
        self.association = Association::Live { controller, reset_generation };
        self.disable_sq_flow_control = disable_sq_flow_control;
    }

    pub(crate) fn is_associated(&self) -> bool {
        !matches!(self.association, Association::AwaitingConnect)
    }

    fn push_and_respond(&mut self, tag: Tag, remote: crate::wire::KeyedSgl, buffer: Buffer) {
        self.actions.push_back(Action::PushData { tag, remote, buffer });
        self.respond(tag, Status::SUCCESS, 0);
    }

    pub(crate) fn respond(&mut self, tag: Tag, status: Status, result: u64) {
        let request = self.request(tag);
        request.state = RequestState::Responding;
        let command = request.command;
        let invalidate_key = match request.data {
            DataPointer::Keyed(remote) if remote.invalidate => Some(remote.key),
            _ => None,
        };
        let mut completion = Completion::new(command.command_id.get(), status).with_result(result);
        completion.submission_queue_id = U16::new(self.config.queue_id);
        completion.submission_queue_head =
            U16::new(if self.disable_sq_flow_control { 0xFFFF } else { self.submission_queue_head });
        if !status.is_success() {
            self.stats.errors.add(1);
            debug!(queue = self.config.queue_id, opcode = command.opcode, %status, "command failed");
        }
        self.actions.push_back(Action::Respond { tag, completion, invalidate_key });
    }

    fn deliver_events(&mut self) {
        let Some(controller) = self.controller().cloned() else { return };
        while let Some(&tag) = self.held_events.last() {
            let Some(event) = controller.take_event() else { break };
            self.held_events.pop();
            self.respond(tag, Status::SUCCESS, u64::from(event));
        }
    }

    pub(crate) fn held_event_count(&self) -> usize {
        self.held_events.len()
    }

    fn release_buffer(&mut self, tag: Tag) {
        let buffer = self.request(tag).take_pool_buffer();
        self.return_to_pool(buffer);
    }

    fn free(&mut self, tag: Tag) {
        let Some(mut request) = self.requests.get_mut(usize::from(tag)).and_then(Option::take) else { return };
        self.free_tags.push(tag);
        self.return_to_pool(request.take_pool_buffer());
    }

    fn return_to_pool(&mut self, buffer: Option<Buffer>) {
        if let Some(buffer) = buffer {
            self.pool.release(buffer);
            self.wake_buffer_waiters();
        }
    }

    fn wake_buffer_waiters(&mut self) {
        if matches!(self.association, Association::Closed) {
            return;
        }
        let waiting = self.waiting_for_buffer.len();
        for _ in 0..waiting {
            let Some(tag) = self.waiting_for_buffer.pop_front() else { break };
            self.start_transfer(tag);
            if self.request(tag).state == RequestState::NeedBuffer {
                // Still no room: it went to the back; keep FIFO order by stopping here.
                if let Some(last) = self.waiting_for_buffer.pop_back() {
                    self.waiting_for_buffer.push_front(last);
                }
                break;
            }
        }
    }

    fn disconnect(&mut self, reason: DisconnectReason) {
        warn!(queue = self.config.queue_id, %reason, "disconnecting queue");
        self.actions.push_back(Action::Disconnect { reason });
    }

    /// The live request behind `tag`. Tags handed to this module's functions always
    /// name live requests; that is our invariant, not a wire value.
    fn request(&mut self, tag: Tag) -> &mut Request {
        match self.requests.get_mut(usize::from(tag)).and_then(|r| r.as_mut()) {
            Some(request) => request,
            None => unreachable!("tag {tag} names no live request"),
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The transport drops a queue only once the NIC and the backend let go of every
        // buffer; give them back to the shared pool.
        for slot in &mut self.requests {
            if let Some(buffer) = slot.take().and_then(|r| r.buffer) {
                self.pool.release(buffer);
            }
        }
    }
}

fn advance(head: u16, entries: u32) -> u16 {
    u32::from(head).saturating_add(1).checked_rem(entries).unwrap_or(0) as u16
}
