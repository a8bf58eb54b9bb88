//! In-band authentication with DH-HMAC-CHAP (NVMe Base 2.0, section 8.13), the way the
//! Linux target (nvmet) does it: the secrets and their transformation, the hash
//! functions, the responses and the RFC 7919 key exchange, and one controller's
//! transaction. No I/O; the messages' layouts live in `wire::auth`.

pub mod crypto;
mod dh;
mod ffdhe;
mod primitives;
mod secret;
pub mod transaction;

pub use crypto::{
    constant_time_eq, random_bytes, random_sequence, response, session_key, CryptoError, DhGroup, DhKeyPair, HashFunction, Role, Secret,
    SecretError,
};
pub use transaction::{Authenticator, HostKeys};
