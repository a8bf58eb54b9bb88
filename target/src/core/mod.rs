//! The transport-agnostic controller: nvmet's core, admin, fabrics and I/O command
//! handling, without any knowledge of RDMA. A [`Queue`] takes capsules and completion
//! events through `handle_*` and tells its transport what to do through
//! [`Queue::poll_action`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod admin;
pub mod buffer;
pub mod controller;
pub mod discovery;
pub mod fabrics;
pub mod io;
pub mod queue;
pub mod stats;
pub mod subsystem;

use std::sync::Arc;

use crate::backend::BackendOp;
use crate::wire::{Completion, KeyedSgl};

pub use buffer::{Buffer, BufferPool, Placement, Region};
pub use controller::Controller;
pub use queue::{Capsule, CapsuleUse, Queue, QueueConfig};
pub use subsystem::{Limits, Namespace, Port, Subsystem, Target, DISCOVERY_NQN};

/// Identifies a request inside one queue from capsule arrival until its response has
/// been sent.
pub type Tag = u16;

/// What the core asks its transport to do.
#[derive(Debug)]
pub enum Action {
    /// Host to controller data: RDMA READ `remote` into `buffer`, then call
    /// [`Queue::handle_data_fetched`].
    FetchData { tag: Tag, remote: KeyedSgl, buffer: Buffer },
    /// Run `op` on `namespace`, then call [`Queue::handle_backend_done`].
    Submit { tag: Tag, namespace: Arc<Namespace>, op: BackendOp },
    /// Controller to host data: RDMA WRITE `buffer` to `remote`. Always followed by the
    /// request's `Respond`, which must not overtake it.
    PushData { tag: Tag, remote: KeyedSgl, buffer: Buffer },
    /// Send the response capsule, invalidating `invalidate_key` if set, then call
    /// [`Queue::handle_response_sent`].
    Respond { tag: Tag, completion: Completion, invalidate_key: Option<u32> },
    /// A fatal error for this queue: close the connection.
    Disconnect { reason: DisconnectReason },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    ShortCapsule { len: usize },
    TooManyCommands,
    TransferFailed,
    KeepAliveExpired,
    ControllerGone,
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::ShortCapsule { len } => write!(f, "capsule of {len} bytes is shorter than a 64-byte command"),
            DisconnectReason::TooManyCommands => write!(f, "host exceeded the queue depth"),
            DisconnectReason::TransferFailed => write!(f, "an RDMA data transfer failed"),
            DisconnectReason::KeepAliveExpired => write!(f, "keep-alive timeout expired"),
            DisconnectReason::ControllerGone => write!(f, "the controller was torn down or reset"),
        }
    }
}
