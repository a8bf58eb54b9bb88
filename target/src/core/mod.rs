//! The transport-agnostic controller: nvmet's core, admin, fabrics and I/O command
//! handling, without any knowledge of RDMA. A [`Queue`] takes capsules and completion
//! events through `handle_*` and tells its transport what to do through
//! [`Queue::poll_action`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod admin;
pub mod auth;
pub mod buffer;
pub mod context;
pub mod controller;
pub mod discovery;
pub mod fabrics;
pub mod io;
pub mod outcome;
pub mod port;
pub mod queue;
pub mod range_lock;
pub mod reservation;
mod reservation_cmd;
pub mod stats;
pub mod storage;
pub mod subsystem;
pub mod target;

use std::sync::Arc;

use storage::BackendOp;
use crate::wire::{Completion, KeyedSgl};

pub use buffer::{Buffer, BufferPool, DataBuffer, DmaSlice, Lease, LeaseHome, Placement, Region, SlotHome, SlotLoan};
pub use controller::Controller;
pub use queue::{Capsule, Queue, QueueConfig};
pub use subsystem::{HostAccess, Namespace, Subsystem, CONTROLLER_ID_MAX, CONTROLLER_ID_MIN, DISCOVERY_NQN};
pub use port::{Port, PortSubsystems, Referral};
pub use target::{Limits, Target};

/// Identifies a request inside one queue from capsule arrival until its response has
/// been sent.
pub type Tag = u16;

/// What the core asks its transport to do. Buffers travel inside the actions: the
/// transport holds each until the hardware is done with it, then hands it back through
/// the matching `handle_*` call or, with a response, lets it go itself.
#[derive(Debug)]
pub enum Action {
    /// Host to controller data: RDMA READ `remote` into `lease`, then give the lease
    /// back through [`Queue::handle_data_fetched`].
    FetchData { tag: Tag, remote: KeyedSgl, lease: Lease },
    /// Run `op` (which owns its buffer, if any) on `namespace`, then give the result and
    /// the buffer back through [`Queue::handle_backend_done`].
    Submit { tag: Tag, namespace: Arc<Namespace>, op: BackendOp },
    /// Send the response capsule, after `data`'s RDMA WRITE if any, invalidating
    /// `invalidate_key` if set; once the NIC reports it done (or flushed), let go of
    /// `data`'s buffer and call [`Queue::handle_response_sent`].
    Respond { tag: Tag, completion: Completion, invalidate_key: Option<u32>, data: Option<ResponseData> },
    /// A fatal error for this queue: close the connection.
    Disconnect { reason: DisconnectReason },
}

/// What a response carries besides the completion.
#[derive(Debug)]
pub enum ResponseData {
    /// RDMA WRITE `buffer` to `remote` before the response; the write must land first.
    Push { remote: KeyedSgl, buffer: DataBuffer },
    /// The receive slot an in-capsule write's data arrived in: post it again once the
    /// response is sent.
    ReturnSlot(SlotLoan),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    ShortCapsule { len: usize },
    TooManyCommands,
    TransferFailed,
    KeepAliveExpired,
    ControllerGone,
    /// No valid Connect within the connect timeout.
    NoConnect,
    /// The host did not take a response within the response timeout.
    ResponseNotTaken,
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::ShortCapsule { len } => write!(f, "capsule of {len} bytes is shorter than a 64-byte command"),
            DisconnectReason::TooManyCommands => write!(f, "host exceeded the queue depth"),
            DisconnectReason::TransferFailed => write!(f, "an RDMA data transfer failed"),
            DisconnectReason::KeepAliveExpired => write!(f, "keep-alive timeout expired"),
            DisconnectReason::ControllerGone => write!(f, "the controller was torn down or reset"),
            DisconnectReason::NoConnect => write!(f, "no valid Connect within the connect timeout"),
            DisconnectReason::ResponseNotTaken => write!(f, "the host did not take a response within the response timeout"),
        }
    }
}
