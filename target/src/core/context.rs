//! What a command handler sees of the queue it runs on.

use std::sync::Arc;

use super::controller::Controller;
use super::stats::IoStats;
use super::target::Target;

/// Fixed per connection by the RDMA CM exchange.
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    pub queue_id: u16,
    /// Commands the host may have outstanding (HSQSIZE + 1).
    pub entries: u32,
    /// The target address the host reached this queue at, if the transport knows it:
    /// discovery reports it when the target listens on a wildcard address.
    pub local_address: Option<std::net::IpAddr>,
    /// The port (as [`Target::port`](super::target::Target::port) names it) the host
    /// reached: discovery lists what is served there.
    pub port_id: u16,
}

/// A queue, as the command handlers see it: they read it and decide an
/// [`Outcome`](super::outcome::Outcome); the queue carries the outcome out.
pub(crate) struct Context<'a> {
    pub target: &'a Arc<Target>,
    pub config: QueueConfig,
    pub stats: &'a IoStats,
    /// The controller of a live association.
    pub controller: Option<&'a Arc<Controller>>,
    /// Whether a valid Connect associated the queue (it may have closed since).
    pub associated: bool,
    /// Asynchronous Event Requests the queue holds.
    pub held_events: usize,
}
