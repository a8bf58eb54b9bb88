//! Transports drive a [`crate::core::Queue`]: they deliver capsules and completion events
//! through its `handle_*` methods and carry out the [`crate::core::Action`]s it returns.
//!
//! The contract, per action:
//! - `FetchData`: copy the host's `remote` bytes into `buffer`, then `handle_data_fetched`.
//! - `Submit`: run the backend operation, then `handle_backend_done`.
//! - `PushData`: copy `buffer` to the host's `remote`; it must land before the response
//!   that always follows it.
//! - `Respond`: deliver the completion, then `handle_response_sent` once the transport
//!   no longer touches the request's buffer.
//! - `Disconnect`: close the connection, drain what is in flight, `handle_close`, and
//!   drop the queue only when neither the NIC nor the backend holds a buffer.

pub mod depth;
pub mod idle;
#[cfg(any(test, feature = "loopback"))]
pub mod loopback;
pub mod rdma;
pub mod sends;
