//! p2ptgt: a userspace NVMe-over-Fabrics RDMA target whose data path can run through an
//! SSD's Controller Memory Buffer.
//!
//! # Layout
//!
//! The layers, each using only those below it (`target/tests/layers.rs` fails on an
//! import that points up, or on two files that import each other):
//!
//! ```text
//!   serve                    start-up, control socket, metrics, signals
//!   transport    control     RDMA (and the loopback tests use): drives queues;
//!                            live changes to what is served (JSON-RPC, save/restore)
//!   config, error            what to serve, from flags or nvmetcli JSON
//!   backend      memory      storage (io_uring, RAM); buffer pools (host, p2pmem)
//!   core                     the controller, sans-IO; defines Storage and BufferPool
//!   wire                     NVMe, NVMe-oF, NVMe/RDMA layouts: pure
//! ```
//!
//! - [`wire`]: pure encoding and decoding of NVMe, NVMe-oF and NVMe/RDMA structures.
//! - [`core`]: the transport-agnostic controller. It sees capsules and buffer handles,
//!   never queue pairs, and tells its transport what to do through [`core::Action`]s.
//!   What it needs from storage and from buffer pools it defines as traits
//!   ([`core::storage::Storage`], [`core::BufferPool`]).
//! - [`backend`]: namespaces' storage (io_uring on files and block devices, RAM).
//! - [`memory`]: data buffer pools sized once at start-up, in host memory or in p2pmem.
//! - [`transport`]: drives the core: the RDMA transport and an in-process loopback.
//! - [`control`]: the running configuration and every change to it while hosts are
//!   connected, with the events that tell them.
//!
//! A request's path: the RDMA receive (`transport::rdma::connection`) hands a capsule
//! to `core::queue::Queue::receive`, which decodes it and asks the handler of its kind
//! (`core::fabrics`, `core::admin`, `core::discovery`, `core::io`) for an
//! `Outcome`; the queue then takes a buffer from its pool, has the transport fetch
//! the host's data, the backend (`backend::uring::Executor`) run the operation, and the
//! transport push the data and send the response, each as a `core::Action`.
//!
//! # Where a failure goes
//!
//! 1. A command's failure is a completion status ([`wire::Status`]).
//! 2. A connect refused before a queue exists is an NVMe/RDMA CM reject
//!    ([`wire::RejectStatus`]).
//! 3. A fatal transport error (a capsule shorter than 64 bytes, a failed RDMA transfer)
//!    is [`core::Action::Disconnect`] of that one queue.
//! 4. A setup error exits the process with a message naming the config key or sysfs path.
#![deny(unsafe_code)]

pub mod backend;
pub mod config;
pub mod control;
pub mod core;
pub mod error;
pub mod memory;
pub mod serve;
pub mod transport;
pub mod wire;
