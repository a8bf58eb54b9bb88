//! Wire formats: bytes in, typed values out. No I/O, no unsafe, no allocation when
//! parsing. Spec revisions cited: NVMe Base 2.0, NVM Command Set 1.0, NVMe over Fabrics
//! 1.1, NVMe/RDMA Transport 1.0.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod ana;
pub mod auth;
pub mod bytes;
pub mod command;
pub mod completion;
pub mod discovery;
pub mod fabrics;
pub mod feature;
pub mod identify;
pub mod log_page;
pub mod rdma_cm;
pub mod reservation;
pub mod sgl;
pub mod status;

pub use command::RawCommand;
pub use completion::Completion;
pub use sgl::{DataPointer, KeyedSgl};
pub use status::{RejectStatus, Status};
