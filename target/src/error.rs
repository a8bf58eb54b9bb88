//! Setup-path errors: each names the config key, sysfs path or verb that failed. Data
//! path errors live with their modules.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("config {key}: {message}")]
    Config { key: String, message: String },
    #[error("reading config file {path}")]
    ReadConfig { path: PathBuf, #[source] source: io::Error },
    #[error(transparent)]
    MapP2pMem(#[from] crate::memory::p2pmem::MapError),
    #[error("namespace {path}")]
    Namespace { path: String, #[source] source: crate::backend::BackendError },
    #[error("allocating {what}")]
    Allocate { what: &'static str, #[source] source: io::Error },
    #[error("{verb}")]
    Rdma { verb: &'static str, #[source] source: io::Error },
    #[error("control socket {path}")]
    Control { path: PathBuf, #[source] source: io::Error },
    #[error("metrics listener on {address}")]
    Metrics { address: std::net::SocketAddr, #[source] source: io::Error },
}

impl SetupError {
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> SetupError {
        SetupError::Config { key: key.into(), message: message.into() }
    }
}
