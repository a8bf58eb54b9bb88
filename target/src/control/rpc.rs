//! JSON-RPC 2.0 on the control socket, one message per line: each request is one line
//! of JSON, each response one line. Requests without an `id` are notifications and get
//! no response; batches are not served.
//!
//! Methods (parameters by name):
//!
//! | method | params | result |
//! |---|---|---|
//! | `stats` | | counters |
//! | `save` | | the configuration in `nvmetcli save` JSON |
//! | `restore` | `config`: nvmetcli JSON | what changed |
//! | `subsystem.add` | `nqn`, `serial`, `model`, `firmware`, `ieee_oui`, `cntlid_min`, `cntlid_max`, `allow_any_host`, `hosts`, `namespaces` | |
//! | `subsystem.remove` | `nqn` | |
//! | `subsystem.allow_any_host` | `nqn`, `allow` | |
//! | `host.add`, `host.remove` | `subsystem`, `host` | |
//! | `namespace.add` | `subsystem`, `nsid` (0 or absent: lowest free), `path`, `uuid`, `nguid`, `p2pmem`, `enabled`, `read_only`, `reservations` (default true), `ana_group` (default 1) | `{"nsid"}` |
//! | `namespace.remove`, `namespace.enable`, `namespace.disable` | `subsystem`, `nsid` | |
//! | `namespace.resize` | `subsystem`, `nsid` | `{"previous_bytes", "size_bytes"}` |
//! | `namespace.read_only` | `subsystem`, `nsid`, `read_only` | |
//! | `port.add` | `address` (`ADDR:PORT`), `id` (0 or absent: lowest free), `subsystems` (NQNs; absent: every subsystem, those added later too) | `{"id"}` |
//! | `port.remove` | `id` | |
//! | `port.ana_state` | `id`, `group` (1-128), `state` (`optimized`, `non-optimized`, `inaccessible`, `persistent-loss`, `change`) | |

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{ControlError, Runtime};
use crate::config::{self, NamespaceConfig, SubsystemConfig};
use crate::core::PortSubsystems;
use crate::wire::ana::AnaState;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
/// The object named does not exist.
pub const NOT_FOUND: i64 = -32001;
/// The object to add exists already.
pub const EXISTS: i64 = -32002;
/// The namespace's file or device cannot be opened or used.
pub const BACKEND: i64 = -32003;
/// The setting is fixed while the target runs.
pub const FIXED: i64 = -32004;

/// One request line in, one response line out (`None` for a notification).
/// `stats` answers the `stats` method, which reads the transport's counters.
pub fn handle(runtime: &Runtime, line: &str, stats: impl FnOnce() -> Value) -> Option<String> {
    let request: Value = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(error) => return Some(error_response(Value::Null, PARSE_ERROR, &format!("not JSON: {error}"))),
    };
    let id = request.get("id").cloned();
    let respond_id = id.clone().unwrap_or(Value::Null);
    let method = match (request.get("jsonrpc").and_then(Value::as_str), request.get("method").and_then(Value::as_str)) {
        (Some("2.0"), Some(method)) => method,
        _ => return Some(error_response(respond_id, INVALID_REQUEST, "a request is an object with \"jsonrpc\": \"2.0\" and a \"method\" string")),
    };
    let params = request.get("params").cloned().unwrap_or(Value::Null);
    let result = call(runtime, method, params, stats);
    // A notification is answered with nothing, whatever came of it.
    let id = id?;
    Some(match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
        Err((code, message)) => error_response(id, code, &message),
    })
}

fn error_response(id: Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

type Failure = (i64, String);

fn refused(error: ControlError) -> Failure {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    (error.code(), message)
}

fn params<T: serde::de::DeserializeOwned>(method: &str, params: Value) -> Result<T, Failure> {
    let params = if params.is_null() { json!({}) } else { params };
    serde_json::from_value(params).map_err(|error| (INVALID_PARAMS, format!("{method}: {error}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubsystemParams {
    nqn: String,
    serial: Option<String>,
    model: Option<String>,
    firmware: Option<String>,
    ieee_oui: Option<u32>,
    cntlid_min: Option<u16>,
    cntlid_max: Option<u16>,
    #[serde(default)]
    allow_any_host: bool,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    namespaces: Vec<NamespaceParams>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceParams {
    #[serde(default)]
    nsid: u32,
    path: PathBuf,
    uuid: Option<String>,
    nguid: Option<String>,
    p2pmem: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    read_only: bool,
    #[serde(default = "yes")]
    reservations: bool,
    #[serde(default = "group_one")]
    ana_group: u32,
}

fn group_one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl NamespaceParams {
    fn into_config(self) -> Result<NamespaceConfig, Failure> {
        let invalid = |e: crate::error::SetupError| (INVALID_PARAMS, e.to_string());
        let uuid = self.uuid.as_deref().map(|u| config::parse_hex16(u, "uuid")).transpose().map_err(invalid)?;
        let nguid = self.nguid.as_deref().map(|u| config::parse_hex16(u, "nguid")).transpose().map_err(invalid)?;
        let p2pmem = self.p2pmem.as_deref().map(str::parse).transpose().map_err(|e: String| (INVALID_PARAMS, format!("p2pmem: {e}")))?;
        config::check_ana_group(self.ana_group, "ana_group").map_err(invalid)?;
        Ok(NamespaceConfig { id: self.nsid, path: self.path, uuid, nguid, p2pmem, enabled: self.enabled, read_only: self.read_only, reservations: self.reservations, ana_group: self.ana_group })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Nqn {
    nqn: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowAny {
    nqn: String,
    allow: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Host {
    subsystem: String,
    host: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceId {
    subsystem: String,
    nsid: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadOnly {
    subsystem: String,
    nsid: u32,
    read_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnaStateParams {
    id: u16,
    group: u32,
    state: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortAdd {
    address: String,
    #[serde(default)]
    id: u16,
    subsystems: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortId {
    id: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Restore {
    config: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Nothing {}

fn call(runtime: &Runtime, method: &str, raw: Value, stats: impl FnOnce() -> Value) -> Result<Value, Failure> {
    let done = |result: Result<(), ControlError>| result.map(|()| Value::Null).map_err(refused);
    match method {
        "stats" => params::<Nothing>(method, raw).map(|_| stats()),
        "save" => params::<Nothing>(method, raw).map(|_| runtime.save()),
        "copy" => {
            let request: super::copy::CopyRequest = params(method, raw)?;
            runtime.copy(&request).map(|report| json!(report)).map_err(refused)
        }
        "restore" => {
            let Restore { config } = params(method, raw)?;
            let wanted = config::parse_nvmetcli(&config, None).map_err(|e| (INVALID_PARAMS, e.to_string()))?;
            runtime.restore(wanted).map(|changes| json!(changes)).map_err(refused)
        }
        "subsystem.add" => {
            let p: SubsystemParams = params(method, raw)?;
            let controller_ids = match (p.cntlid_min, p.cntlid_max) {
                (None, None) => None,
                (first, last) => Some((first.unwrap_or(crate::core::CONTROLLER_ID_MIN), last.unwrap_or(crate::core::CONTROLLER_ID_MAX))),
            };
            let mut subsystem = SubsystemConfig::new(p.nqn);
            subsystem.serial = p.serial;
            subsystem.model = p.model;
            subsystem.firmware = p.firmware;
            subsystem.ieee_oui = p.ieee_oui;
            subsystem.controller_ids = controller_ids;
            subsystem.allow_any_host = p.allow_any_host;
            subsystem.allowed_hosts = p.hosts;
            for (index, namespace) in p.namespaces.into_iter().enumerate() {
                let mut namespace = namespace.into_config()?;
                if namespace.id == 0 {
                    namespace.id = u32::try_from(index).unwrap_or(u32::MAX).saturating_add(1);
                }
                subsystem.namespaces.push(namespace);
            }
            done(runtime.add_subsystem(subsystem))
        }
        "subsystem.remove" => {
            let Nqn { nqn } = params(method, raw)?;
            done(runtime.remove_subsystem(&nqn))
        }
        "subsystem.allow_any_host" => {
            let AllowAny { nqn, allow } = params(method, raw)?;
            done(runtime.allow_any_host(&nqn, allow))
        }
        "host.add" => {
            let Host { subsystem, host } = params(method, raw)?;
            done(runtime.add_host(&subsystem, &host))
        }
        "host.remove" => {
            let Host { subsystem, host } = params(method, raw)?;
            done(runtime.remove_host(&subsystem, &host))
        }
        "namespace.add" => {
            // The subsystem, then the namespace's own parameters beside it.
            let mut raw = raw;
            let subsystem = match raw.as_object_mut().and_then(|params| params.remove("subsystem")) {
                Some(Value::String(subsystem)) => subsystem,
                _ => return Err((INVALID_PARAMS, format!("{method}: a \"subsystem\" string is required"))),
            };
            let namespace = params::<NamespaceParams>(method, raw)?.into_config()?;
            runtime.add_namespace(&subsystem, namespace).map(|nsid| json!({"nsid": nsid})).map_err(refused)
        }
        "namespace.remove" => {
            let NamespaceId { subsystem, nsid } = params(method, raw)?;
            done(runtime.remove_namespace(&subsystem, nsid))
        }
        "namespace.enable" | "namespace.disable" => {
            let NamespaceId { subsystem, nsid } = params(method, raw)?;
            done(runtime.enable_namespace(&subsystem, nsid, method == "namespace.enable"))
        }
        "namespace.resize" => {
            let NamespaceId { subsystem, nsid } = params(method, raw)?;
            runtime.resize_namespace(&subsystem, nsid).map(|(before, after)| json!({"previous_bytes": before, "size_bytes": after})).map_err(refused)
        }
        "namespace.read_only" => {
            let ReadOnly { subsystem, nsid, read_only } = params(method, raw)?;
            done(runtime.set_read_only(&subsystem, nsid, read_only))
        }
        "port.add" => {
            let PortAdd { address, id, subsystems } = params(method, raw)?;
            let address = config::parse_listen(&address).map_err(|e| (INVALID_PARAMS, e.to_string()))?;
            let subsystems = subsystems.map_or(PortSubsystems::All, PortSubsystems::Linked);
            runtime.add_port(id, address, subsystems).map(|id| json!({"id": id})).map_err(refused)
        }
        "port.remove" => {
            let PortId { id } = params(method, raw)?;
            done(runtime.remove_port(id))
        }
        "port.ana_state" => {
            let AnaStateParams { id, group, state } = params(method, raw)?;
            let state = AnaState::from_name(&state).ok_or_else(|| (INVALID_PARAMS, format!("{method}: {state:?} is not an ANA state (optimized, non-optimized, inaccessible, persistent-loss, change)")))?;
            done(runtime.set_ana_state(id, group, state))
        }
        other => Err((METHOD_NOT_FOUND, format!("no method {other:?}"))),
    }
}
