//! p2ptgt: a userspace NVMe-over-Fabrics RDMA target whose data path can run through an
//! SSD's Controller Memory Buffer.
//!
//! # Layout
//!
//! - [`wire`]: pure encoding and decoding of NVMe, NVMe-oF and NVMe/RDMA structures.
//! - [`core`]: the transport-agnostic controller. It sees capsules and buffer handles,
//!   never queue pairs, and tells its transport what to do through [`core::Action`]s.
//! - [`backend`]: namespaces' storage (io_uring on files and block devices, RAM).
//! - [`memory`]: data buffer pools sized once at start-up, in host memory or in p2pmem.
//! - [`transport`]: drives the core: the RDMA transport and an in-process loopback.
//!
//! Calls go downward only: transport → core → wire; transports and the core use backends
//! and pools through their traits.
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
pub mod core;
pub mod error;
pub mod memory;
pub mod serve;
pub mod transport;
pub mod wire;
