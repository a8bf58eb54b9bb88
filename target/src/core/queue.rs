//! One submission/completion queue pair and its requests, sans I/O.
//!
//! A request's life is an explicit state machine (after SPDK's request states). Each
//! state carries what the request needs next, and buffers move with the work, never
//! stay behind in a copy:
//!
//! ```text
//!            capsule ──► decode + execute
//!                          │
//!    ┌─────────────────────┼───────────────────────┬────────────────────┐
//!    ▼                     ▼                       ▼                    ▼
//! AwaitingBuffer ──► Fetching (NIC has lease) ─► Executing (backend ─► Responding (NIC has
//!  (in the pool's        │                    has the buffer)          the reply and its
//!   line; the lease      └─► CPU reads the lease (Connect,             buffer) ──► free
//!   comes as a grant)        DSM ranges), drops it       AwaitingEvent ─┘
//! ```
//!
//! The queue itself holds no buffer between calls: a lease is in an action not yet
//! taken (dropping it then is safe: no device has seen it), with the transport while an
//! RDMA transfer or response is out, or with the backend while an operation is. Each
//! returns it with the completion that reports the hardware done. Time comes in as an
//! argument; the queue never reads the clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, trace, warn};
use zerocopy::little_endian::U16;

use super::buffer::{BufferPool, DataBuffer, DmaSlice, Lease, Placement, SlotLoan};
use super::controller::Controller;
use super::stats::IoStats;
use super::range_lock::{Entered, Locked};
use super::reservation::{Admission, HostId};
use super::subsystem::Namespace;
use super::target::Target;
use super::{Action, DisconnectReason, ResponseData, Tag};
pub use super::context::QueueConfig;
use super::context::Context;
pub(crate) use super::outcome::{CopyProgress, FusedHalf, FusedWrite, Inbound, MediaJob, Outcome, Work};
use super::storage::BackendOp;
use crate::wire::command::{fuse, COMMAND_BYTES, FABRICS};
use crate::wire::{Completion, DataPointer, KeyedSgl, RawCommand, Status};

/// Where a request stands; each state holds what its next step needs.
#[derive(Debug)]
enum State {
    /// In the pool's line. In-capsule data the CPU needs is kept here meanwhile.
    AwaitingBuffer { work: Work, in_capsule: Option<Vec<u8>>, since: Instant },
    /// RDMA READ of host data in flight; the transport holds the lease.
    Fetching { work: Inbound },
    /// Its blocks are locked by a fused Compare and Write; or, for that command, its
    /// lock (`exclusive`) is not yet taken or commands are still inside the range.
    AwaitingRange { namespace: Arc<Namespace>, op: BackendOp, next: Next, exclusive: bool, lock: Option<Locked> },
    /// On the backend, which holds the buffer if there is one; `next` says what follows.
    Executing { namespace: Arc<Namespace>, next: Next, range: RangeHold },
    /// Asynchronous Event Request held until an event occurs.
    AwaitingEvent,
    /// A Preempt and Abort, until the preempted hosts' admitted commands are done.
    AwaitingFence { namespace: Arc<Namespace>, hosts: Vec<HostId> },
    /// The first command of a fused pair, until the next capsule brings its partner.
    AwaitingPartner { half: FusedHalf, in_capsule: Option<Vec<u8>> },
    /// The second command of a fused pair, with its in-capsule data if any. The first
    /// command's request carries the pair; this one is answered with it.
    FusedSecond { in_capsule: Option<Vec<u8>> },
    /// A fused command whose partner carries the work.
    AwaitingPartnerWork,
    /// Response handed to the transport, with any data and buffer it carries.
    Responding,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitingBuffer { .. } => "awaiting-buffer",
            State::Fetching { .. } => "fetching",
            State::AwaitingRange { .. } => "awaiting-range",
            State::Executing { .. } => "executing",
            State::AwaitingEvent => "awaiting-event",
            State::AwaitingFence { .. } => "awaiting-fence",
            State::AwaitingPartner { .. } => "awaiting-partner",
            State::FusedSecond { .. } | State::AwaitingPartnerWork => "fused",
            State::Responding => "responding",
        }
    }
}

/// What comes after a backend operation.
#[derive(Debug)]
enum Next {
    Respond,
    /// Push the read data to the host.
    Push,
    /// Compare the blocks read with `expected`; a fused write follows a match.
    Compare { expected: Vec<u8>, write: Option<FusedWrite> },
    /// The fused write is done: answer both commands.
    FusedWritten { second: Tag },
    /// A Copy source range is read: write it.
    CopyRead(CopyProgress),
    /// A Copy range is written: the next, or the answer.
    CopyWritten(CopyProgress),
}

/// What a backend operation holds of its namespace's range locks.
#[derive(Debug)]
enum RangeHold {
    None,
    Entered(#[allow(dead_code)] Entered),
    Locked(Locked),
}

/// What a request keeps from its capsule for its whole life.
#[derive(Clone, Copy, Debug)]
struct Header {
    command: RawCommand,
    data: DataPointer,
    /// When the capsule arrived: the start of the command's latency.
    arrived: Instant,
}

#[derive(Debug)]
struct Request {
    header: Header,
    state: State,
}

/// A received command capsule: the 64-byte command and the in-capsule data after it.
#[derive(Debug)]
pub struct Capsule<'a> {
    pub command: DmaSlice<'a>,
    pub data: DmaSlice<'a>,
    /// The receive slot holding `data`, when the transport can lend it until the
    /// response is sent (in-capsule write data then goes to the backend without a copy).
    pub loan: Option<SlotLoan>,
}

impl<'a> Capsule<'a> {
    /// A capsule received into one contiguous buffer that cannot be lent.
    pub fn contiguous(bytes: &'a [u8]) -> Capsule<'a> {
        let split = bytes.len().min(COMMAND_BYTES);
        let (command, data) = (bytes.get(..split).unwrap_or(&[]), bytes.get(split..).unwrap_or(&[]));
        Capsule { command: DmaSlice::from_bytes(command), data: DmaSlice::from_bytes(data), loan: None }
    }
}

/// Where this queue stands in its association with a controller.
#[derive(Debug)]
enum Association {
    /// Until a valid Connect; past `deadline` (when armed) the connection closes.
    AwaitingConnect { deadline: Option<Instant> },
    Live { controller: Arc<Controller>, reset_generation: u32 },
    Closed,
}

pub struct Queue {
    pub(crate) target: Arc<Target>,
    pub(crate) config: QueueConfig,
    association: Association,
    /// Live requests by tag. A slot is empty between a request's transitions only
    /// inside one call.
    requests: Vec<Option<Request>>,
    free_tags: Vec<Tag>,
    held_events: Vec<Tag>,
    /// The latest `now` the transport passed in: the time a response is made, for the
    /// latency histogram, without reading a clock here.
    last_now: Instant,
    /// Requests waiting for a range lock, tried again on every pass.
    awaiting_range: Vec<Tag>,
    /// Preempt and Abort commands waiting for the preempted hosts' commands to end,
    /// checked on every pass.
    awaiting_fence: Vec<Tag>,
    /// By tag: the admission of an I/O command under its namespace's reservation,
    /// held until the command is answered.
    admissions: Vec<Option<Admission>>,
    /// A fused first command waiting for the next capsule.
    fused_first: Option<Tag>,
    /// The last capsule was a fused first command that failed: a second right after it
    /// fails with it.
    fused_first_failed: bool,
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
            association: Association::AwaitingConnect { deadline: None },
            requests: (0..slots).map(|_| None).collect(),
            free_tags: (0..slots as Tag).rev().collect(),
            held_events: Vec::new(),
            last_now: Instant::now(),
            awaiting_range: Vec::new(),
            awaiting_fence: Vec::new(),
            admissions: (0..slots).map(|_| None).collect(),
            fused_first: None,
            fused_first_failed: false,
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

    /// How long a response may wait for the host to take it.
    pub fn response_timeout(&self) -> std::time::Duration {
        self.target.limits.response_timeout
    }

    /// Starts the time an accepted connection has to send a valid Connect.
    pub fn arm_connect_deadline(&mut self, now: Instant) {
        if let Association::AwaitingConnect { deadline } = &mut self.association {
            *deadline = now.checked_add(self.target.limits.connect_timeout);
        }
    }

    /// When the transport must call [`Queue::handle_timeout`] at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.association {
            Association::AwaitingConnect { deadline } => *deadline,
            Association::Live { controller, .. } if self.config.queue_id == 0 => controller.keep_alive_deadline(),
            _ => None,
        }
    }

    /// Keep-alive and controller teardown checks. Call at `poll_timeout` and
    /// periodically.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        if let Association::AwaitingConnect { deadline: Some(deadline) } = self.association {
            if now >= deadline {
                self.disconnect(DisconnectReason::NoConnect);
            }
            return;
        }
        let Association::Live { controller, .. } = &self.association else { return };
        let controller = controller.clone();
        if self.config.queue_id == 0 && controller.check_keep_alive(now) {
            warn!(controller = controller.id, host = %controller.host_nqn, "keep-alive timeout expired; tearing the controller down");
            self.disconnect(DisconnectReason::KeepAliveExpired);
            return;
        }
        if controller.is_dead() || self.stale() {
            self.disconnect(DisconnectReason::ControllerGone);
            return;
        }
        self.deliver_events();
    }

    /// An I/O queue connected before the controller's last reset or shutdown.
    fn stale(&self) -> bool {
        match &self.association {
            Association::Live { controller, reset_generation } => {
                self.config.queue_id != 0 && controller.reset_generation() != *reset_generation
            }
            _ => false,
        }
    }

    /// A command capsule arrived in one buffer: the 64-byte command and any in-capsule
    /// data after it.
    pub fn handle_capsule(&mut self, now: Instant, capsule: &[u8]) {
        let unused = self.receive(now, Capsule::contiguous(capsule));
        debug_assert!(unused.is_none(), "a contiguous capsule lends nothing");
    }

    /// A command capsule arrived. Returns the capsule's slot loan unless the request
    /// keeps it (then it comes back with the request's response).
    pub fn receive(&mut self, now: Instant, capsule: Capsule<'_>) -> Option<SlotLoan> {
        self.last_now = self.last_now.max(now);
        let Capsule { command, data: in_capsule, loan } = capsule;
        if matches!(self.association, Association::Closed) {
            return loan;
        }
        let mut bytes = [0u8; COMMAND_BYTES];
        let copied = command.copy_to(&mut bytes);
        let Some(command) = bytes.get(..copied).and_then(RawCommand::from_capsule) else {
            self.disconnect(DisconnectReason::ShortCapsule { len: command.len().saturating_add(in_capsule.len()) });
            return loan;
        };
        let Some(tag) = self.free_tags.pop() else {
            self.disconnect(DisconnectReason::TooManyCommands);
            return loan;
        };
        self.submission_queue_head = advance(self.submission_queue_head, self.config.entries);
        if let Some(controller) = self.controller() {
            controller.note_traffic();
        }
        // An I/O queue of a controller reset under it is gone for the host, which
        // connects a new one: nothing more runs on it, and it closes.
        let stale = self.stale();
        let (data, outcome) = match self.decode(&command) {
            Ok(data) if stale && command.opcode != FABRICS => (data, Outcome::status(Status::ABORTED_SQ_DELETION)),
            Ok(data) => (data, self.execute(now, tag, &command, data)),
            Err(status) => (DataPointer::None, Outcome::status(status)),
        };
        let unused = self.pair_or_begin(now, tag, Header { command, data, arrived: now }, outcome, in_capsule, loan);
        if stale {
            self.disconnect(DisconnectReason::ControllerGone);
        }
        self.deliver_events();
        unused
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

    /// What the command handlers see of this queue.
    fn context(&self) -> Context<'_> {
        Context {
            target: &self.target,
            config: self.config,
            stats: &self.stats,
            controller: self.controller(),
            associated: self.is_associated(),
            held_events: self.held_events.len(),
        }
    }

    /// Routes a command to the fabrics, admin or I/O handlers.
    fn execute(&mut self, now: Instant, tag: Tag, command: &RawCommand, data: DataPointer) -> Outcome {
        // Only I/O commands fuse (Compare and Write).
        if command.fuse() != fuse::NONE && (command.opcode == FABRICS || self.config.queue_id == 0) {
            return Outcome::status(Status::INVALID_FIELD.dnr());
        }
        if command.opcode == FABRICS {
            return super::fabrics::execute(&self.context(), command, data);
        }
        let Association::Live { controller, .. } = &self.association else {
            return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr());
        };
        let controller = controller.clone();
        if !controller.is_ready() {
            return Outcome::status(Status::COMMAND_SEQUENCE_ERROR.dnr());
        }
        // The admin queue serves nothing else until the host has authenticated (before
        // it enables the controller, the check above answers first, as with nvmet).
        if self.config.queue_id == 0 && !controller.is_authenticated() {
            return Outcome::status(Status::AUTHENTICATION_REQUIRED.dnr());
        }
        if self.config.queue_id == 0 && controller.is_discovery() {
            super::discovery::execute(&self.context(), now, &controller, command, data)
        } else if self.config.queue_id == 0 {
            super::admin::execute(&self.context(), now, &controller, command, data)
        } else {
            let (outcome, admission) = super::io::execute(&self.context(), &controller, command, data);
            if let Some(slot) = self.admissions.get_mut(usize::from(tag)) {
                *slot = admission;
            }
            outcome
        }
    }

    /// A fused first command waits for the next capsule, which must be its second;
    /// everything else begins.
    fn pair_or_begin(&mut self, now: Instant, tag: Tag, header: Header, outcome: Outcome, in_capsule: DmaSlice<'_>, loan: Option<SlotLoan>) -> Option<SlotLoan> {
        let after_failed_first = std::mem::replace(&mut self.fused_first_failed, header.command.fuse() == fuse::FIRST && !matches!(outcome, Outcome::FusedCompare(_)));
        if after_failed_first && header.command.fuse() == fuse::SECOND {
            // Its first was refused on arrival (NVMe Base 2.0, 3.4.2).
            self.respond(tag, header, Status::FUSED_FAILED, 0, None);
            return loan;
        }
        if let Some(first) = self.fused_first.take() {
            if let Outcome::FusedWrite(second) = outcome {
                self.pair(now, first, tag, header, second, in_capsule);
                return loan;
            }
            // Not its partner: the first is aborted, this command goes on alone. A
            // second that failed its own checks fails its first with it.
            let status = if header.command.fuse() == fuse::SECOND { Status::FUSED_FAILED } else { Status::FUSED_MISSING };
            self.answer(first, status);
        }
        match outcome {
            Outcome::FusedCompare(half) => match in_capsule_copy(header.data, in_capsule) {
                Ok(data) => {
                    self.put(tag, Request { header, state: State::AwaitingPartner { half, in_capsule: data } });
                    self.fused_first = Some(tag);
                }
                Err(status) => self.respond(tag, header, status, 0, None),
            },
            Outcome::FusedWrite(_) => self.respond(tag, header, Status::FUSED_MISSING, 0, None),
            outcome => return self.begin(now, tag, header, outcome, in_capsule, loan),
        }
        loan
    }

    /// The second command of a fused Compare and Write arrived right after its first.
    fn pair(&mut self, now: Instant, first: Tag, second: Tag, second_header: Header, second_half: FusedHalf, in_capsule: DmaSlice<'_>) {
        let (first_header, half, compare_data) = match self.take(first) {
            Some(Request { header, state: State::AwaitingPartner { half, in_capsule } }) => (header, half, in_capsule),
            other => {
                if let Some(request) = other {
                    self.put(first, request);
                }
                self.respond(second, second_header, Status::FUSED_MISSING, 0, None);
                return;
            }
        };
        if !half.pairs_with(&second_half) {
            // Both halves must name the same blocks.
            self.respond(first, first_header, Status::INVALID_FIELD.dnr(), 0, None);
            self.respond(second, second_header, Status::INVALID_FIELD.dnr(), 0, None);
            return;
        }
        let write_data = match in_capsule_copy(second_header.data, in_capsule) {
            Ok(data) => data,
            Err(status) => {
                self.respond(first, first_header, Status::FUSED_FAILED, 0, None);
                self.respond(second, second_header, status, 0, None);
                return;
            }
        };
        self.put(second, Request { header: second_header, state: State::FusedSecond { in_capsule: write_data } });
        let pair = FusedHalf { durable: second_half.durable, ..half };
        match compare_data {
            Some(expected) => self.fused_compare_data(now, first, first_header, pair, second, expected),
            None => self.allocate(now, first, first_header, Work::Inbound(Inbound::FusedCompare { pair, second }), None),
        }
    }

    /// The compare data of a fused pair is here; the write data comes next.
    fn fused_compare_data(&mut self, now: Instant, first: Tag, first_header: Header, pair: FusedHalf, second: Tag, expected: Vec<u8>) {
        let (second_header, in_capsule) = match self.take(second) {
            Some(Request { header, state: State::FusedSecond { in_capsule } }) => (header, in_capsule),
            other => {
                if let Some(request) = other {
                    self.put(second, request);
                }
                self.respond(first, first_header, Status::FUSED_MISSING, 0, None);
                return;
            }
        };
        match in_capsule {
            Some(write) => {
                self.put(second, Request { header: second_header, state: State::AwaitingPartnerWork });
                self.compare_and_write(now, first, first_header, pair, second, expected, write);
            }
            None => {
                self.put(first, Request { header: first_header, state: State::AwaitingPartnerWork });
                self.allocate(now, second, second_header, Work::Inbound(Inbound::FusedWrite { pair, first, expected }), None);
            }
        }
    }

    /// Both halves of a fused pair are in hand: a buffer for the blocks, then the lock.
    #[allow(clippy::too_many_arguments)]
    fn compare_and_write(&mut self, now: Instant, first: Tag, first_header: Header, pair: FusedHalf, second: Tag, expected: Vec<u8>, write: Vec<u8>) {
        let len_bytes = u32::try_from(expected.len()).unwrap_or(u32::MAX);
        let write = FusedWrite { second, data: write, durable: pair.durable };
        let job = MediaJob::Compare { offset_bytes: pair.offset_bytes, expected, write: Some(write) };
        self.allocate(now, first, first_header, Work::Media { namespace: pair.namespace, len_bytes, job }, None);
    }

    /// Answers request `tag` with `status` and no data, whatever it was waiting for.
    fn answer(&mut self, tag: Tag, status: Status) {
        if let Some(request) = self.take(tag) {
            self.respond(tag, request.header, status, 0, None);
        }
    }

    /// A new request (or one whose CPU step just ended) moves on according to
    /// `outcome`. Returns `loan` unless the request kept it.
    fn begin(&mut self, now: Instant, tag: Tag, header: Header, outcome: Outcome, in_capsule: DmaSlice<'_>, loan: Option<SlotLoan>) -> Option<SlotLoan> {
        match outcome {
            Outcome::Complete { status, result } => self.respond(tag, header, status, result, None),
            Outcome::HoldForEvent => {
                self.put(tag, Request { header, state: State::AwaitingEvent });
                self.held_events.push(tag);
            }
            Outcome::Backend { namespace, op } => self.submit(tag, header, namespace, op, Next::Respond),
            Outcome::Transfer(work) => return self.begin_transfer(now, tag, header, work, in_capsule, loan),
            // Paired in `pair_or_begin`; a fused command that comes back after its CPU
            // step has lost its partner.
            Outcome::FusedCompare(_) | Outcome::FusedWrite(_) => self.respond(tag, header, Status::FUSED_MISSING, 0, None),
            Outcome::AwaitFence { namespace, hosts } => {
                self.put(tag, Request { header, state: State::AwaitingFence { namespace, hosts } });
                self.awaiting_fence.push(tag);
            }
            Outcome::Connected { controller, reset_generation, disable_sq_flow_control } => {
                // The admin queue's response asks a host with a key to authenticate
                // (AUTHREQ.ATR); I/O queues never do, as with nvmet.
                let authenticate = self.config.queue_id == 0 && controller.requires_authentication();
                let result = u64::from(controller.id) | if authenticate { u64::from(crate::wire::auth::AUTHREQ_ATR) } else { 0 };
                self.associate(controller, reset_generation, disable_sq_flow_control);
                self.respond(tag, header, Status::SUCCESS, result, None);
            }
        }
        loan
    }

    /// A request that moves data: in-capsule data, or a buffer to fetch into or push from.
    fn begin_transfer(&mut self, now: Instant, tag: Tag, header: Header, work: Work, in_capsule: DmaSlice<'_>, loan: Option<SlotLoan>) -> Option<SlotLoan> {
        if let Work::Media { .. } = work {
            // Its buffer is the target's own, sized by the work.
            self.allocate(now, tag, header, work, None);
            return loan;
        }
        let length = header.data.length_bytes();
        if length == 0 {
            // No data pointer for a command that needs one.
            self.respond(tag, header, Status::SGL_INVALID_DATA.dnr(), 0, None);
            return loan;
        }
        let DataPointer::InCapsule { offset_bytes, length_bytes } = header.data else {
            self.allocate(now, tag, header, work, None);
            return loan;
        };
        let Some(bytes) = in_capsule.get(offset_bytes as usize, length_bytes as usize) else {
            // The capsule was shorter than its SGL claims.
            self.respond(tag, header, Status::SGL_INVALID_DATA.dnr(), 0, None);
            return loan;
        };
        match (work, loan) {
            // Write data the transport can lend goes to the backend from its receive slot.
            (Work::Inbound(Inbound::Write { namespace, offset_bytes: at, durable }), Some(loan)) => {
                match loan.narrow(offset_bytes, length_bytes) {
                    Ok(loan) => {
                        self.target.count_payload(&namespace, loan.buffer().region, u64::from(length_bytes));
                        let op = BackendOp::Write { offset_bytes: at, buffer: DataBuffer::Slot(loan), durable };
                        self.submit(tag, header, namespace, op, Next::Respond);
                        None
                    }
                    Err(loan) => {
                        self.respond(tag, header, Status::SGL_INVALID_DATA.dnr(), 0, None);
                        Some(loan)
                    }
                }
            }
            // Everything else is copied: the slot is reposted when this call returns.
            (work, loan) => {
                self.allocate(now, tag, header, work, Some(&bytes.to_vec()));
                loan
            }
        }
    }

    /// Takes a buffer for the request, or puts it in the pool's line.
    fn allocate(&mut self, now: Instant, tag: Tag, header: Header, work: Work, in_capsule: Option<&[u8]>) {
        let (placement, len_bytes) = match &work {
            Work::Inbound(Inbound::Write { namespace, .. } | Inbound::Compare { namespace, .. }) | Work::Read { namespace, .. } => {
                (namespace.payload_placement, header.data.length_bytes())
            }
            Work::Inbound(Inbound::FusedCompare { pair, .. } | Inbound::FusedWrite { pair, .. }) => (pair.namespace.payload_placement, header.data.length_bytes()),
            Work::Media { namespace, len_bytes, .. } => (namespace.payload_placement, *len_bytes),
            // A reply takes what it holds, not what the host offered room for.
            Work::Send { data } => (Placement::Control, header.data.length_bytes().min(u32::try_from(data.len()).unwrap_or(u32::MAX))),
            Work::Inbound(_) => (Placement::Control, header.data.length_bytes()),
        };
        if len_bytes == 0 {
            // An empty reply: nothing to push.
            self.respond(tag, header, Status::SUCCESS, 0, None);
            return;
        }
        if u64::from(len_bytes) > self.pool.capacity_bytes(placement) {
            warn!(queue = self.config.queue_id, len_bytes, "transfer larger than its whole pool");
            // A fused half's partner is answered with it.
            let partner = match &work {
                Work::Inbound(Inbound::FusedCompare { second, .. }) => Some(*second),
                Work::Inbound(Inbound::FusedWrite { first, .. }) => Some(*first),
                Work::Media { job: MediaJob::Compare { write: Some(write), .. }, .. } => Some(write.second),
                _ => None,
            };
            self.respond(tag, header, Status::INVALID_FIELD.dnr(), 0, None);
            if let Some(partner) = partner {
                self.answer(partner, Status::FUSED_FAILED);
            }
            return;
        }
        match self.pool.allocate(len_bytes, placement, tag) {
            Some(lease) => self.with_buffer(now, tag, header, work, lease, in_capsule),
            None => {
                self.stats.buffer_waits.add(1);
                if let Work::Inbound(Inbound::Write { namespace, .. }) | Work::Read { namespace, .. } = &work {
                    namespace.stats.buffer_waits.add(1);
                }
                let in_capsule = in_capsule.map(<[u8]>::to_vec);
                self.put(tag, Request { header, state: State::AwaitingBuffer { work, in_capsule, since: now } });
            }
        }
    }

    /// Leases the pool granted to requests in its line: they move on. Call on every
    /// pass of the transport's loop (and when the pool's wake-up arrives).
    pub fn poll_grants(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        while let Some((tag, lease)) = self.pool.take_grant() {
            let Some(request) = self.take(tag) else { continue };
            let Request { header, state: State::AwaitingBuffer { work, in_capsule, since } } = request else {
                // Not waiting (cannot happen: a waiter leaves the line only by a grant or
                // by closing). The lease goes back.
                self.put(tag, request);
                continue;
            };
            let waited = now.saturating_duration_since(since);
            self.stats.longest_buffer_wait_us.set_max(waited.as_micros() as u64);
            self.with_buffer(now, tag, header, work, lease, in_capsule.as_deref());
        }
    }

    /// The request has its buffer: fetch into it, fill it, or hand it to the backend.
    fn with_buffer(&mut self, now: Instant, tag: Tag, header: Header, work: Work, lease: Lease, in_capsule: Option<&[u8]>) {
        match (work, header.data) {
            (Work::Media { namespace, job, .. }, _) => self.media(tag, header, namespace, job, lease),
            (Work::Send { data }, DataPointer::Keyed(remote)) => {
                self.pool.write(&lease, &data);
                let remote = KeyedSgl { length_bytes: lease.buffer().len_bytes, ..remote };
                let reply = ResponseData::Push { remote, buffer: DataBuffer::Pool(lease) };
                self.respond(tag, header, Status::SUCCESS, 0, Some(reply));
            }
            (Work::Read { namespace, offset_bytes }, DataPointer::Keyed(_)) => {
                self.submit(tag, header, namespace, BackendOp::Read { offset_bytes, buffer: DataBuffer::Pool(lease) }, Next::Push);
            }
            (Work::Inbound(work), DataPointer::Keyed(remote)) => {
                self.put(tag, Request { header, state: State::Fetching { work } });
                self.actions.push_back(Action::FetchData { tag, remote, lease });
            }
            (Work::Inbound(work), DataPointer::InCapsule { .. }) => {
                let Some(bytes) = in_capsule else {
                    self.respond(tag, header, Status::SGL_INVALID_DATA.dnr(), 0, None);
                    return;
                };
                self.pool.write(&lease, bytes);
                self.data_arrived(now, tag, header, work, lease);
            }
            // Data to the host needs a keyed SGL (reads in capsules are refused earlier).
            _ => self.respond(tag, header, Status::INVALID_FIELD.dnr(), 0, None),
        }
    }

    /// The RDMA READ of a request's data finished; the transport gives the lease back.
    pub fn handle_data_fetched(&mut self, now: Instant, tag: Tag, lease: Lease, result: Result<(), ()>) {
        self.last_now = self.last_now.max(now);
        let Some(request) = self.take(tag) else { return };
        let Request { header, state: State::Fetching { work } } = request else {
            self.put(tag, request);
            return;
        };
        if result.is_err() {
            // Nothing to answer on a broken connection; the tag goes with the queue.
            drop(lease);
            self.free(tag);
            if !matches!(self.association, Association::Closed) {
                self.disconnect(DisconnectReason::TransferFailed);
            }
            return;
        }
        self.data_arrived(now, tag, header, work, lease);
    }

    /// Host data is in the request's lease.
    fn data_arrived(&mut self, now: Instant, tag: Tag, header: Header, work: Inbound, lease: Lease) {
        let outcome = match work {
            Inbound::Write { namespace, offset_bytes, durable } => {
                let buffer = lease.buffer();
                self.target.count_payload(&namespace, buffer.region, u64::from(buffer.len_bytes));
                self.submit(tag, header, namespace, BackendOp::Write { offset_bytes, buffer: DataBuffer::Pool(lease), durable }, Next::Respond);
                return;
            }
            Inbound::Compare { namespace, offset_bytes } => {
                let expected = self.copy_out(lease);
                let len_bytes = u32::try_from(expected.len()).unwrap_or(u32::MAX);
                let job = MediaJob::Compare { offset_bytes, expected, write: None };
                self.allocate(now, tag, header, Work::Media { namespace, len_bytes, job }, None);
                return;
            }
            Inbound::FusedCompare { pair, second } => {
                let expected = self.copy_out(lease);
                self.fused_compare_data(now, tag, header, pair, second, expected);
                return;
            }
            Inbound::FusedWrite { pair, first, expected } => {
                let write = self.copy_out(lease);
                self.put(tag, Request { header, state: State::AwaitingPartnerWork });
                match self.take(first) {
                    Some(Request { header: first_header, .. }) => self.compare_and_write(now, first, first_header, pair, tag, expected, write),
                    // The first went with a closing queue.
                    None => self.free(tag),
                }
                return;
            }
            Inbound::Copy { namespace, ranges, destination_lba, durable } => {
                let bytes = self.copy_out(lease);
                let max_transfer_bytes = self.target.limits.max_transfer_bytes();
                match super::io::copy_ranges(&namespace, ranges, destination_lba, max_transfer_bytes, &bytes) {
                    Ok((remaining, destination_bytes)) => {
                        self.copy_next(now, tag, header, namespace, CopyProgress { remaining, destination_bytes, durable });
                    }
                    Err(status) => self.respond(tag, header, status, 0, None),
                }
                return;
            }
            Inbound::Connect => {
                let bytes = self.copy_out(lease);
                super::fabrics::connect(&self.context(), now, &header.command, &bytes)
            }
            Inbound::AuthenticationSend => {
                let bytes = self.copy_out(lease);
                super::fabrics::authentication_send(&self.context(), &bytes)
            }
            Inbound::Deallocate { namespace, ranges } => {
                let bytes = self.copy_out(lease);
                super::io::deallocate(&namespace, ranges, &bytes)
            }
            Inbound::Reservation { namespace } => {
                let bytes = self.copy_out(lease);
                super::reservation_cmd::execute(&self.context(), &namespace, &header.command, &bytes)
            }
        };
        // Control data is read: the request goes on as if it had just been decoded.
        let unused = self.begin(now, tag, header, outcome, DmaSlice::from_bytes(&[]), None);
        debug_assert!(unused.is_none());
    }

    /// The lease's bytes, for the CPU; the lease goes back to the pool.
    fn copy_out(&self, lease: Lease) -> Vec<u8> {
        let mut bytes = vec![0u8; lease.buffer().len_bytes as usize];
        self.pool.read(&lease, &mut bytes);
        bytes
    }

    /// The backend finished a request's operation and gives its buffer back.
    /// `result` is the bytes moved, or the NVMe status of the failure (which the
    /// transport has logged).
    pub fn handle_backend_done(&mut self, now: Instant, tag: Tag, result: Result<u32, Status>, buffer: Option<DataBuffer>) {
        self.last_now = self.last_now.max(now);
        let Some(request) = self.take(tag) else { return };
        let Request { header, state: State::Executing { namespace, next, range } } = request else {
            self.put(tag, request);
            return;
        };
        if matches!(self.association, Association::Closed) {
            // Nobody to answer; the buffer goes back now that the backend is done.
            self.free(tag);
            return;
        }
        let status = match result {
            Ok(_) => Status::SUCCESS,
            Err(status) => {
                namespace.stats.errors.add(1);
                status
            }
        };
        match next {
            Next::Respond | Next::Push => {
                let reply = match (buffer, header.data) {
                    (Some(buffer), DataPointer::Keyed(remote)) if matches!(next, Next::Push) && status.is_success() => {
                        self.target.count_payload(&namespace, buffer.buffer().region, u64::from(buffer.buffer().len_bytes));
                        Some(ResponseData::Push { remote, buffer })
                    }
                    // The receive slot of an in-capsule write goes back with the response.
                    (Some(DataBuffer::Slot(loan)), _) => Some(ResponseData::ReturnSlot(loan)),
                    // A pool lease with nothing to push is dropped here: back to the pool.
                    _ => None,
                };
                self.respond(tag, header, status, 0, reply);
            }
            Next::Compare { expected, write } => self.compared(tag, header, namespace, status, buffer, expected, write, range),
            Next::FusedWritten { second } => {
                self.respond(tag, header, status, 0, None);
                self.answer(second, status);
            }
            Next::CopyRead(progress) => match buffer {
                Some(buffer) if status.is_success() => {
                    let op = BackendOp::Write { offset_bytes: progress.destination_bytes, buffer, durable: progress.durable };
                    drop(range);
                    self.submit(tag, header, namespace, op, Next::CopyWritten(progress));
                }
                _ => self.respond(tag, header, if status.is_success() { Status::INTERNAL_ERROR } else { status }, 0, None),
            },
            Next::CopyWritten(mut progress) => {
                let written = buffer.map_or(0, |buffer| u64::from(buffer.buffer().len_bytes));
                drop(range);
                if status.is_success() {
                    progress.destination_bytes = progress.destination_bytes.saturating_add(written);
                    self.copy_next(now, tag, header, namespace, progress);
                } else {
                    self.respond(tag, header, status, 0, None);
                }
            }
        }
    }

    /// The blocks of a Compare are read: answer, or for a fused Compare and Write on a
    /// match, write the new data under the same lock.
    #[allow(clippy::too_many_arguments)]
    fn compared(&mut self, tag: Tag, header: Header, namespace: Arc<Namespace>, status: Status, buffer: Option<DataBuffer>, expected: Vec<u8>, write: Option<FusedWrite>, range: RangeHold) {
        let fail = |queue: &mut Queue, status: Status, write: Option<FusedWrite>| {
            queue.respond(tag, header, status, 0, None);
            if let Some(write) = write {
                queue.answer(write.second, Status::FUSED_FAILED);
            }
        };
        let Some(DataBuffer::Pool(lease)) = buffer else {
            return fail(self, if status.is_success() { Status::INTERNAL_ERROR } else { status }, write);
        };
        if !status.is_success() {
            return fail(self, status, write);
        }
        // The CPU compares: the blocks and the host's data cross host memory here.
        let mut blocks = vec![0u8; expected.len()];
        self.pool.read(&lease, &mut blocks);
        self.target.count_payload(&namespace, super::buffer::Region::Host, blocks.len() as u64);
        if blocks != expected {
            return fail(self, Status::COMPARE_FAILURE.dnr(), write);
        }
        let Some(write) = write else {
            return self.respond(tag, header, Status::SUCCESS, 0, None);
        };
        self.pool.write(&lease, &write.data);
        let offset_bytes = header.command.starting_lba() << namespace.backend.block_size_shift();
        let op = BackendOp::Write { offset_bytes, buffer: DataBuffer::Pool(lease), durable: write.durable };
        let next = Next::FusedWritten { second: write.second };
        match range {
            RangeHold::Locked(lock) => self.dispatch(tag, header, namespace, op, next, RangeHold::Locked(lock)),
            // (A fused read always runs under its lock; should it not, the write takes one.)
            _ => self.submit_exclusive(tag, header, namespace, op, next, None),
        }
    }

    /// The next source range of a Copy, or its answer when none is left.
    fn copy_next(&mut self, now: Instant, tag: Tag, header: Header, namespace: Arc<Namespace>, mut progress: CopyProgress) {
        match progress.remaining.pop_front() {
            Some((source_bytes, len_bytes)) => {
                let len_bytes = u32::try_from(len_bytes).unwrap_or(u32::MAX);
                let job = MediaJob::Copy { source_bytes, progress };
                self.allocate(now, tag, header, Work::Media { namespace, len_bytes, job }, None);
            }
            None => self.respond(tag, header, Status::SUCCESS, 0, None),
        }
    }

    /// A request's own buffer for work on its blocks is here.
    fn media(&mut self, tag: Tag, header: Header, namespace: Arc<Namespace>, job: MediaJob, lease: Lease) {
        let buffer = DataBuffer::Pool(lease);
        match job {
            MediaJob::Verify { offset_bytes } => self.submit(tag, header, namespace, BackendOp::Read { offset_bytes, buffer }, Next::Respond),
            MediaJob::Compare { offset_bytes, expected, write: None } => {
                self.submit(tag, header, namespace, BackendOp::Read { offset_bytes, buffer }, Next::Compare { expected, write: None });
            }
            MediaJob::Compare { offset_bytes, expected, write: Some(write) } => {
                let next = Next::Compare { expected, write: Some(write) };
                self.submit_exclusive(tag, header, namespace, BackendOp::Read { offset_bytes, buffer }, next, None);
            }
            MediaJob::Copy { source_bytes, progress } => {
                self.submit(tag, header, namespace, BackendOp::Read { offset_bytes: source_bytes, buffer }, Next::CopyRead(progress));
            }
        }
    }

    /// The transport sent the response (and any data before it) and let go of its
    /// buffer: the tag is free.
    pub fn handle_response_sent(&mut self, tag: Tag) {
        if matches!(self.requests.get(usize::from(tag)), Some(Some(Request { state: State::Responding, .. }))) {
            self.free(tag);
        }
    }

    /// The connection is gone. Requests whose buffer the transport or the backend holds
    /// (Fetching, Executing) stay until those hand it back through `handle_*`; every
    /// other request ends now, and buffers in actions not yet taken go back to the pool
    /// (no device has seen them).
    pub fn handle_close(&mut self) {
        if let Association::Live { controller, reset_generation } = std::mem::replace(&mut self.association, Association::Closed) {
            if self.config.queue_id == 0 {
                controller.fail();
                self.target.remove_controller(controller.id);
                debug!(controller = controller.id, "controller removed with its admin queue");
            } else {
                controller.detach_io_queue(self.config.queue_id, reset_generation);
            }
            self.target.release_host_queue(&controller.host_nqn);
        }
        self.pool.cancel_waits();
        self.actions.clear();
        self.held_events.clear();
        self.awaiting_range.clear();
        self.awaiting_fence.clear();
        self.fused_first = None;
        self.fused_first_failed = false;
        for tag in 0..self.requests.len() as Tag {
            let ends_now = match self.requests.get(usize::from(tag)) {
                Some(Some(request)) => !matches!(request.state, State::Fetching { .. } | State::Executing { .. }),
                _ => false,
            };
            if ends_now {
                self.free(tag);
            }
        }
    }

    fn associate(&mut self, controller: Arc<Controller>, reset_generation: u32, disable_sq_flow_control: bool) {
        self.association = Association::Live { controller, reset_generation };
        self.disable_sq_flow_control = disable_sq_flow_control;
    }

    /// Whether a valid Connect associated this queue with a controller (it may have
    /// closed since).
    pub fn is_associated(&self) -> bool {
        !matches!(self.association, Association::AwaitingConnect { .. })
    }

    /// Hands `op` (and its buffer) to the backend once its blocks are not locked;
    /// `next` says what follows.
    fn submit(&mut self, tag: Tag, header: Header, namespace: Arc<Namespace>, op: BackendOp, next: Next) {
        if self.admissions.get(usize::from(tag)).and_then(Option::as_ref).is_some_and(Admission::revoked) {
            // Its host was preempted: the operation never reaches the backend.
            let reply = match op.into_buffer() {
                Some(DataBuffer::Slot(loan)) => Some(ResponseData::ReturnSlot(loan)),
                _ => None,
            };
            return self.respond(tag, header, Status::ABORTED_PREEMPT, 0, reply);
        }
        let hold = match op.byte_range() {
            None => RangeHold::None,
            Some((offset_bytes, len_bytes)) => match namespace.range_locks.enter(offset_bytes, len_bytes) {
                Some(entered) => RangeHold::Entered(entered),
                None => return self.await_range(tag, header, namespace, op, next, false, None),
            },
        };
        self.dispatch(tag, header, namespace, op, next, hold);
    }

    /// Hands `op` to the backend with its blocks locked and no other command inside
    /// them (fused Compare and Write).
    fn submit_exclusive(&mut self, tag: Tag, header: Header, namespace: Arc<Namespace>, op: BackendOp, next: Next, lock: Option<Locked>) {
        let (offset_bytes, len_bytes) = op.byte_range().unwrap_or_default();
        match lock.or_else(|| namespace.range_locks.lock(offset_bytes, len_bytes)) {
            Some(lock) if lock.drained() => self.dispatch(tag, header, namespace, op, next, RangeHold::Locked(lock)),
            lock => self.await_range(tag, header, namespace, op, next, true, lock),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn await_range(&mut self, tag: Tag, header: Header, namespace: Arc<Namespace>, op: BackendOp, next: Next, exclusive: bool, lock: Option<Locked>) {
        self.put(tag, Request { header, state: State::AwaitingRange { namespace, op, next, exclusive, lock } });
        self.awaiting_range.push(tag);
    }

    fn dispatch(&mut self, tag: Tag, header: Header, namespace: Arc<Namespace>, op: BackendOp, next: Next, range: RangeHold) {
        self.put(tag, Request { header, state: State::Executing { namespace: namespace.clone(), next, range } });
        self.actions.push_back(Action::Submit { tag, namespace, op });
    }

    /// Requests waiting on range locks try again, and Preempt and Abort commands
    /// answer once their fence holds. Locks are held for a read and a write at most,
    /// fences for the preempted commands' backend operations, so the transport keeps
    /// calling (without sleeping) while [`Queue::awaits_ranges`].
    pub fn poll_ranges(&mut self) {
        for tag in std::mem::take(&mut self.awaiting_fence) {
            let Some(request) = self.take(tag) else { continue };
            match request {
                Request { header, state: State::AwaitingFence { namespace, hosts } } if namespace.reservations.drained(&hosts) => {
                    self.respond(tag, header, Status::SUCCESS, 0, None);
                }
                request => {
                    self.put(tag, request);
                    self.awaiting_fence.push(tag);
                }
            }
        }
        for tag in std::mem::take(&mut self.awaiting_range) {
            let Some(request) = self.take(tag) else { continue };
            let Request { header, state: State::AwaitingRange { namespace, op, next, exclusive, lock } } = request else {
                self.put(tag, request);
                continue;
            };
            if exclusive {
                self.submit_exclusive(tag, header, namespace, op, next, lock);
            } else {
                self.submit(tag, header, namespace, op, next);
            }
        }
    }

    /// Whether requests wait on range locks (see [`Queue::poll_ranges`]).
    pub fn awaits_ranges(&self) -> bool {
        !self.awaiting_range.is_empty() || !self.awaiting_fence.is_empty()
    }

    /// Hands the response (with its data or buffer) to the transport.
    fn respond(&mut self, tag: Tag, header: Header, status: Status, result: u64, data: Option<ResponseData>) {
        self.end_admission(tag);
        let Header { command, data: pointer, arrived } = header;
        if self.config.queue_id != 0 {
            self.stats.latency.record(self.last_now.saturating_duration_since(arrived));
        }
        let invalidate_key = match pointer {
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
            if let Some(controller) = self.controller() {
                // Commands that name blocks log their starting LBA (Dwords 10-11).
                let lba = if self.config.queue_id != 0 { command.starting_lba() } else { 0 };
                controller.log_error(self.config.queue_id, command.command_id.get(), status, command.namespace_id.get(), lba);
                completion = completion.with_more();
            }
        }
        self.put(tag, Request { header, state: State::Responding });
        self.actions.push_back(Action::Respond { tag, completion, invalidate_key, data });
    }

    fn deliver_events(&mut self) {
        let Some(controller) = self.controller().cloned() else { return };
        while let Some(&tag) = self.held_events.last() {
            let Some(event) = controller.take_event() else { break };
            self.held_events.pop();
            info!(controller = controller.id, host = %controller.host_nqn, event = %format_args!("{event:#08x}"), "asynchronous event completed");
            if let Some(request) = self.take(tag) {
                self.respond(tag, request.header, Status::SUCCESS, u64::from(event), None);
            }
        }
    }

    /// Takes request `tag` out of its slot for a transition; `put` puts it back.
    fn take(&mut self, tag: Tag) -> Option<Request> {
        self.requests.get_mut(usize::from(tag)).and_then(Option::take)
    }

    fn put(&mut self, tag: Tag, request: Request) {
        trace!(queue = self.config.queue_id, tag, command_id = request.header.command.command_id.get(), state = request.state.name(), "request");
        if let Some(slot) = self.requests.get_mut(usize::from(tag)) {
            *slot = Some(request);
        }
    }

    /// Ends request `tag`, live or taken out for a transition. Each request ends once:
    /// a later event for its tag finds an empty slot and does nothing.
    fn free(&mut self, tag: Tag) {
        if let Some(slot) = self.requests.get_mut(usize::from(tag)) {
            *slot = None;
            self.free_tags.push(tag);
        }
        self.end_admission(tag);
    }

    /// Request `tag` no longer counts under its namespace's reservation.
    fn end_admission(&mut self, tag: Tag) {
        if let Some(admission) = self.admissions.get_mut(usize::from(tag)) {
            *admission = None;
        }
    }

    fn disconnect(&mut self, reason: DisconnectReason) {
        warn!(queue = self.config.queue_id, %reason, "disconnecting queue");
        self.actions.push_back(Action::Disconnect { reason });
    }
}

fn advance(head: u16, entries: u32) -> u16 {
    u32::from(head).saturating_add(1).checked_rem(entries).unwrap_or(0) as u16
}

/// A copy of the in-capsule data a data pointer names, `None` for a keyed pointer.
fn in_capsule_copy(data: DataPointer, in_capsule: DmaSlice<'_>) -> Result<Option<Vec<u8>>, Status> {
    let DataPointer::InCapsule { offset_bytes, length_bytes } = data else { return Ok(None) };
    in_capsule.get(offset_bytes as usize, length_bytes as usize).map(|bytes| Some(bytes.to_vec())).ok_or(Status::SGL_INVALID_DATA.dnr())
}
