//! The client side of the control socket: one JSON-RPC call per connection, as the
//! `p2ptgt` subcommands make them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No target answers on the socket (not running, another path, or not ours to use).
    #[error("cannot reach the target on {path}: {source}")]
    Unreachable { path: String, #[source] source: std::io::Error },
    /// The target answered with an error.
    #[error("{message}")]
    Refused { code: i64, message: String },
    #[error("the target's answer is not JSON-RPC: {0}")]
    Garbled(String),
}

/// Calls `method` with `params` on the target listening on `socket`.
pub fn call(socket: &Path, method: &str, params: Value) -> Result<Value, CallError> {
    let unreachable = |source| CallError::Unreachable { path: socket.display().to_string(), source };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    stream.write_all(format!("{request}\n").as_bytes()).map_err(unreachable)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(unreachable)?;
    if line.is_empty() {
        return Err(unreachable(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "closed without an answer (only root may use the control socket)")));
    }
    let mut response: Value = serde_json::from_str(&line).map_err(|e| CallError::Garbled(e.to_string()))?;
    if let Some(error) = response.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = error.get("message").and_then(Value::as_str).unwrap_or("(no message)").to_owned();
        return Err(CallError::Refused { code, message });
    }
    response.get_mut("result").map(Value::take).ok_or_else(|| CallError::Garbled(line.trim_end().to_owned()))
}
